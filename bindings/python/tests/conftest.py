import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session", autouse=True)
def _no_session_cache_from_the_environment():
    """Tests run the host's defaults (no optimised-graph cache, acestep_runtime.session_cache) even when
    the developer's shell sets $ACESTEP_SESSION_CACHE; CLI subprocesses inherit this."""
    import os

    old = os.environ.get("ACESTEP_SESSION_CACHE")
    os.environ["ACESTEP_SESSION_CACHE"] = "off"
    yield
    if old is None:
        os.environ.pop("ACESTEP_SESSION_CACHE", None)
    else:
        os.environ["ACESTEP_SESSION_CACHE"] = old

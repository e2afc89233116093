import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session", autouse=True)
def _session_cache_in_tmp(tmp_path_factory):
    """The tests' optimised-graph cache (acestep_runtime.session_cache) lives in a temporary directory,
    never in the user's cache; CLI subprocesses inherit it through the environment."""
    import os

    old = os.environ.get("ACESTEP_SESSION_CACHE")
    os.environ["ACESTEP_SESSION_CACHE"] = str(tmp_path_factory.mktemp("session-cache"))
    yield
    if old is None:
        os.environ.pop("ACESTEP_SESSION_CACHE", None)
    else:
        os.environ["ACESTEP_SESSION_CACHE"] = old

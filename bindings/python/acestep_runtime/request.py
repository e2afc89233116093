"""Reading request files. The request schema itself — aliases, defaults, types, ranges, notes about
ignored values — is the core's (``ace_request_normalize``), the same for every host; a request is a
plain dict here.
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_DURATION_S = 30.0


class RequestError(ValueError):
    """A request file could not be read."""


def load_request_file(path: str | Path) -> dict:
    """A request from a JSON file: a request object, a fixture case ``{"id", "request": {...}}`` or
    a sidecar written by this runtime (its ``request`` reproduces the track)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RequestError(f"request file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"request file {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("request"), dict):
        data = data["request"]
    if not isinstance(data, dict):
        raise RequestError(f"request file {path} must hold a JSON object, got {type(data).__name__}")
    return data

"""Prompt templates from the core: DiT caption/lyric prompts and the four LM prompts.

``build_prompts(request)`` takes a request dict (see ``docs/dll_api.md``: caption, lyrics, bpm,
duration, keyscale, timesignature, language, negative_prompt, has_codes, lm_metadata,
phase2_end, ...) and returns a dict of strings. Unknown keys and bad values raise ``AceError``.
"""

from __future__ import annotations

import json
from typing import Any

from ._native import call_string, cstr, lib

__all__ = ["build_prompts"]


def build_prompts(request: dict[str, Any] | str) -> dict[str, Any]:
    """Returns ``{"dit_caption", "dit_lyrics", "phase1_needed", "lm_phase1", "lm_phase1_uncond",
    "cot", "lm_phase2", "lm_phase2_uncond"}`` for a request (dict or JSON string)."""
    if isinstance(request, dict):
        text = json.dumps(request, ensure_ascii=False)
    elif isinstance(request, str):
        text = request
    else:
        raise TypeError(f"request must be a dict or a JSON string, got {type(request).__name__}")
    return json.loads(call_string(lib.ace_build_prompts, cstr(text, "request")))

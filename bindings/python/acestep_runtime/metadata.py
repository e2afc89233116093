"""LM output parsing and CoT formatting from the core (spec §5.3).

- ``parse_lm_output(text)`` → ``{"metadata": {...}, "codes": [...]}`` (official parse rules,
  codes clamped to [0, 63999]);
- ``format_cot(metadata)`` → ``"<think>\\n{yaml}\\n</think>"`` with the YAML byte-identical to
  PyYAML's ``yaml.dump(..., allow_unicode=True, sort_keys=True).strip()``.
"""

from __future__ import annotations

import json
from typing import Any

from ._native import call_string, lib

__all__ = ["format_cot", "parse_lm_output"]


def _utf8(name: str, text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    if "\0" in text:
        raise ValueError(f"{name} contains a NUL character")
    return text.encode("utf-8")


def parse_lm_output(text: str) -> dict[str, Any]:
    """Metadata fields and audio codes of LM output text."""
    return json.loads(call_string(lib.ace_parse_lm_output, _utf8("text", text)))


def format_cot(metadata: dict[str, Any] | str) -> str:
    """The phase-2 CoT block for a metadata dict (or its JSON)."""
    text = metadata if isinstance(metadata, str) else json.dumps(metadata, ensure_ascii=False)
    return call_string(lib.ace_format_cot, _utf8("metadata", text))

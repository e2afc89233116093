"""LM output parsing and CoT formatting from the core (spec §5.3).

- ``parse_lm_output(text)`` → ``{"metadata": {...}, "codes": [...]}`` (official parse rules,
  codes clamped to [0, 63999]);
- ``format_cot(metadata)`` → ``"<think>\\n{yaml}\\n</think>"`` with the YAML byte-identical to
  PyYAML's ``yaml.dump(..., allow_unicode=True, sort_keys=True).strip()``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ._native import call_string, cstr, ffi, lib

__all__ = ["finalize_metadata", "format_cot", "parse_lm_output"]


def parse_lm_output(text: str) -> dict[str, Any]:
    """Metadata fields and audio codes of LM output text."""
    return json.loads(call_string(lib.ace_parse_lm_output, cstr(text, "text")))


def format_cot(metadata: dict[str, Any] | str) -> str:
    """The phase-2 CoT block for a metadata dict (or its JSON)."""
    text = metadata if isinstance(metadata, str) else json.dumps(metadata, ensure_ascii=False)
    return call_string(lib.ace_format_cot, cstr(text, "metadata"))


def finalize_metadata(tokenizer, token_ids) -> dict[str, Any]:
    """Decodes generated LM token ids with ``tokenizer`` (an ``acestep_runtime.tokenizer.Tokenizer``,
    special tokens kept) and parses them like :func:`parse_lm_output`."""
    ids = np.ascontiguousarray(np.asarray(token_ids))
    if ids.ndim != 1:
        raise ValueError(f"token_ids must be 1-D, got shape {ids.shape}")
    if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() > 0xFFFFFFFF):
        raise ValueError("token_ids must be integers in [0, 2**32)")
    ids = ids.astype(np.uint32)
    ptr = ffi.cast("const uint32_t *", ffi.from_buffer(ids)) if ids.size else ffi.NULL
    return json.loads(call_string(lib.ace_finalize_metadata, tokenizer.ptr, ptr, ids.size))

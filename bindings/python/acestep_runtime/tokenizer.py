"""The core's tokenizer (HF ``tokenizer.json`` via the Rust ``tokenizers`` crate)."""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from ._native import NativeHandle, call_string, check, cstr, ffi, lib


class Tokenizer(NativeHandle):
    """A loaded tokenizer. Use as a context manager or call :meth:`close`; also freed on GC."""

    _free_name = "ace_tokenizer_free"

    def __init__(self, path: str | os.PathLike | None = None, *, json_text: str | None = None):
        if (path is None) == (json_text is None):
            raise TypeError("give exactly one of path or json_text")
        out = ffi.new("AceTokenizer **")
        if path is not None:
            raw_path = os.fsencode(os.fspath(path))
            if b"\0" in raw_path:
                raise ValueError("path contains a NUL character")
            check(lib.ace_tokenizer_create_from_file(raw_path, out))
        else:
            check(lib.ace_tokenizer_create_from_json(cstr(json_text, "json_text"), out))
        self._own(out[0])

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        return cls(path)

    @property
    def vocab_size(self) -> int:
        out = ffi.new("size_t *")
        check(lib.ace_tokenizer_vocab_size(self.ptr, out))
        return int(out[0])

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text`` (added tokens in the text are always recognised)."""
        raw = cstr(text, "text")
        n = ffi.new("size_t *")
        # Every token covers at least one byte of text; the post-processor may add a few more.
        cap = len(raw) + 8
        buf = ffi.new("uint32_t[]", cap)
        status = lib.ace_tokenizer_encode(self.ptr, raw, bool(add_special_tokens), buf, cap, n)
        if status == lib.ACE_STATUS_LENGTH_MISMATCH:
            cap = int(n[0])
            buf = ffi.new("uint32_t[]", cap)
            status = lib.ace_tokenizer_encode(self.ptr, raw, bool(add_special_tokens), buf, cap, n)
        check(status)
        return list(ffi.unpack(buf, int(n[0])))

    def decode(self, ids: Iterable[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        """The exact text of ``ids`` (a U+0000 from the byte token 0x00 included, as in HF tokenizers)."""
        arr = _ids_array(ids, "ids")
        ptr = ffi.cast("const uint32_t *", arr.ctypes.data)
        n = ffi.new("size_t *")
        # Most tokens are a few bytes; retry once with the exact length when the guess is short.
        cap = 16 * arr.size + 64
        buf = ffi.new("uint8_t[]", cap)
        status = lib.ace_tokenizer_decode_utf8(self.ptr, ptr, arr.size, bool(skip_special_tokens), buf, cap, n)
        if status == lib.ACE_STATUS_LENGTH_MISMATCH:
            cap = int(n[0])
            buf = ffi.new("uint8_t[]", cap)
            status = lib.ace_tokenizer_decode_utf8(self.ptr, ptr, arr.size, bool(skip_special_tokens), buf, cap, n)
        check(status)
        return bytes(ffi.buffer(buf, int(n[0]))).decode("utf-8")

    def token_to_id(self, token: str) -> int | None:
        """Id of a token text (vocabulary entry in byte-level form, or added token); None if absent."""
        out = ffi.new("uint32_t *")
        status = lib.ace_tokenizer_token_to_id(self.ptr, cstr(token, "token"), out)
        if status == 1:  # ACE_STATUS_INVALID_ARGUMENT: no such token
            return None
        check(status)
        return int(out[0])

    def id_to_token(self, token_id: int) -> str:
        return call_string(lib.ace_tokenizer_id_to_token, self.ptr, _u32(token_id, "token_id"))


def _u32(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < 2**32:
        raise ValueError(f"{name} = {value} is not a valid token id (0 <= id < 2**32)")
    return value


def _ids_array(ids, name: str) -> np.ndarray:
    """A contiguous uint32 copy of a 1-D id sequence, checked for range."""
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"{name} must have an integer dtype, got {ids.dtype}")
        vals = ids
    else:
        vals = list(ids)
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must contain integers, got {type(v).__name__}")
        vals = np.asarray(vals, dtype=np.int64) if vals else np.zeros(0, dtype=np.int64)
    if vals.size and (vals.min() < 0 or vals.max() >= 2**32):
        raise ValueError(f"{name} contains a value outside 0..2**32-1")
    return np.ascontiguousarray(vals, dtype=np.uint32)


__all__ = ["Tokenizer"]

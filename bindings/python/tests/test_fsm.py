"""The FSM through the C ABI: a full phase-1 and phase-2 walk checked against the spec's format
(§5.3/§5.4), the copy-and-mask entry point, and bad input (status + message, no crash)."""

from __future__ import annotations

import numpy as np
import pytest

pytest_plugins = ["conftest_lm"]

from acestep_runtime import AceError  # noqa: E402
from acestep_runtime.fsm import LmFsm  # noqa: E402
from acestep_runtime.tokenizer import Tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok(lm_tokenizer_dir):
    with Tokenizer(lm_tokenizer_dir / "tokenizer.json") as t:
        yield t


def greedy_run(tok, fsm, rng, max_steps=400):
    """Samples argmax of random logits after masking until EOS; returns the generated ids."""
    out = []
    for _ in range(max_steps):
        logits = rng.standard_normal(tok.vocab_size).astype(np.float32)
        fsm.mask_logits(logits)
        t = int(np.argmax(logits))
        out.append(t)
        fsm.accept(t)
        if fsm.completed:
            break
    return out


def test_phase1_output_has_the_cot_format(tok, rng):
    eos = tok.token_to_id("<|im_end|>")
    for i in range(5):
        with LmFsm(tok, {"stop_at_reasoning": True, "skip_caption": True}) as fsm:
            ids = greedy_run(tok, fsm, rng)
            assert ids[-1] == eos and fsm.state_name == "COMPLETED"
            text = tok.decode(ids[:-1])
            lines = text.split("\n")
            assert lines[0] == "<think>" and lines[-1] == ""
            fields = dict(line.split(": ", 1) for line in lines[1:-1])
            assert list(fields) == ["bpm", "duration", "keyscale", "language", "timesignature"]
            assert 30 <= int(fields["bpm"]) <= 300
            assert 10 <= int(fields["duration"]) <= 600
            note, mode = fields["keyscale"].split(" ")
            assert note[0] in "ABCDEFG" and note[1:] in ("", "#", "b", "♯", "♭") and mode in ("major", "minor")
            assert fields["language"] in {"en", "zh", "ja", "ko", "yue", "unknown", "ar", "az", "bg", "bn", "ca", "cs",
                                          "da", "de", "el", "es", "fa", "fi", "fr", "he", "hi", "hr", "ht", "hu", "id",
                                          "is", "it", "la", "lt", "ms", "ne", "nl", "no", "pa", "pl", "pt", "ro", "ru",
                                          "sa", "sk", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi"}
            assert fields["timesignature"] in {"2", "3", "4", "6"}
            with pytest.raises(AceError) as e:
                fsm.accept(198)
            assert e.value.name == "invalid_state"


def test_phase2_codes_count_and_copy_mask(tok, rng):
    prompt = tok.encode("<|im_start|>assistant\n<think>\nbpm: 90\n</think>\n\n")
    with LmFsm(tok, {"phase": "codes", "target_duration": 3.0}) as fsm:
        fsm.reset(prompt)
        assert fsm.state_name == "CODES_GENERATION"
        raw = rng.standard_normal(tok.vocab_size).astype(np.float32)
        masked = fsm.masked(raw)
        ok = np.isfinite(masked)
        first = tok.token_to_id("<|audio_code_0|>")
        assert ok.sum() == 64000 and ok[first:first + 64000].all()
        assert np.array_equal(masked[ok], raw[ok])
        ids = greedy_run(tok, fsm, rng)
        assert len(ids) == 16 and ids[-1] == tok.token_to_id("<|im_end|>")  # 15 codes, then EOS
        assert all(first <= t < first + 64000 for t in ids[:-1])
        st = fsm.state()
        assert st["codes_count"] == 15 and st["target_codes"] == 15 and st["completed"]
        fsm.reset(prompt)
        assert fsm.state()["codes_count"] == 0 and fsm.state_name == "CODES_GENERATION"


def test_bad_input(tok):
    from acestep_runtime._native import ffi, lib

    with LmFsm(tok) as fsm:
        with pytest.raises(ValueError):
            fsm.mask_logits(np.zeros(10, dtype=np.float32))
        with pytest.raises(TypeError):
            fsm.mask_logits(np.zeros(tok.vocab_size, dtype=np.float64))
        # Through the C ABI directly: wrong length is a status with a message.
        buf = np.zeros(100, dtype=np.float32)
        status = lib.ace_fsm_mask_logits(fsm.ptr, ffi.cast("float *", buf.ctypes.data), 100)
        assert status == lib.ACE_STATUS_LENGTH_MISMATCH
        bad = np.zeros(tok.vocab_size, dtype=np.float32)
        bad[3] = np.nan
        with pytest.raises(AceError) as e:
            fsm.mask_logits(bad)
        assert "NaN" in e.value.message
        with pytest.raises(AceError) as e:
            fsm.accept(tok.vocab_size)
        assert e.value.name == "invalid_argument" and str(tok.vocab_size) in e.value.message
        with pytest.raises(AceError) as e:
            fsm.reset([1, 2, 10**6])
        assert e.value.name == "invalid_argument"
        assert lib.ace_fsm_accept(ffi.NULL, 1) == lib.ACE_STATUS_NULL_POINTER
        same = np.zeros(tok.vocab_size, dtype=np.float32)
        p = ffi.cast("float *", same.ctypes.data)
        assert lib.ace_apply_lm_constraints(fsm.ptr, p, tok.vocab_size, p) == lib.ACE_STATUS_INVALID_ARGUMENT
    for cfg, name in [({"unknown_key": 1}, "invalid_json"), ("{not json", "invalid_json"),
                      ({"phase": "lyrics"}, "invalid_json"), ({"target_duration": 0}, "invalid_argument"),
                      ({"max_duration": 3}, "invalid_argument"), ({"genres_file": "/no/such/file"}, "io")]:
        with pytest.raises(AceError) as e:
            LmFsm(tok, cfg)
        assert e.value.name == name, cfg


"""Frame math, VAE tile plan, peak guard and track ids against references written from the spec
(§3.1, §1.9, §6) and Python's standard library (json, hashlib)."""

import hashlib
import json
import math
import struct

import numpy as np
import pytest

from acestep_runtime import frames
from acestep_runtime._native import AceError, ffi, lib, last_error


# ----------------------------------------------------------------------------------------------
# duration → frames


def spec_frames(duration):
    return int(round(duration, 1) * 48000) // 1920


@pytest.mark.parametrize("duration", [10, 30, 240, 600, 10.04, 12.37, 10.25, 10.75, 59.95, 599.99])
def test_frames_from_duration_matches_spec_formula(duration):
    assert frames.frames_from_duration(duration) == spec_frames(duration)


def test_frames_spec_table():
    assert frames.frames_from_duration(10) == 250
    assert frames.frames_from_duration(240) == 6000
    assert frames.frames_from_duration(600) == 15000


def test_frames_many_durations(rng):
    durations = np.concatenate([rng.uniform(10, 600, 3000), np.round(np.arange(10, 600, 0.05), 2)])
    for d in durations:
        d = float(d)
        assert frames.frames_from_duration(d) == spec_frames(d), d


@pytest.mark.parametrize("duration", [9.9, 600.1, float("nan"), -5.0, 0.0, float("inf"), 9.999999])
def test_out_of_range_durations(duration):
    with pytest.raises(AceError) as info:
        frames.frames_from_duration(duration)
    assert info.value.name == "invalid_argument"
    message = str(info.value)
    assert "[10, 600]" in message
    shown = "NaN" if math.isnan(duration) else ("inf" if duration == math.inf else repr(duration).rstrip("0").rstrip("."))
    assert shown in message, message


def test_dit_frames_and_samples():
    for t in [1, 50, 127, 128, 129, 250, 15000]:
        assert frames.dit_frames(t) == max(128, t)
        assert frames.samples_from_frames(t) == 1920 * t
    for bad in [0, 15001]:
        with pytest.raises(AceError, match=r"\[1, 15000\]"):
            frames.dit_frames(bad)
        with pytest.raises(AceError, match=r"\[1, 15000\]"):
            frames.samples_from_frames(bad)
    assert frames.samples_from_frames(frames.frames_from_duration(240)) == 11_520_000


# ----------------------------------------------------------------------------------------------
# VAE tile plan


def spec_tile_plan(T, chunk=512, overlap=64):
    """Spec §6 written out: (win_start, win_end, crop_left_samples, crop_right_samples)."""
    if T <= chunk:
        return [(0, T, 0, 0)]
    stride = chunk - 2 * overlap
    plan = []
    for i in range(math.ceil(T / stride)):
        core_start, core_end = i * stride, min((i + 1) * stride, T)
        win_start, win_end = max(0, core_start - overlap), min(T, core_end + overlap)
        plan.append((win_start, win_end, round((core_start - win_start) * 1920),
                     round((win_end - core_end) * 1920)))
    return plan


def stitch(T, plan):
    """Decode a fake latent whose frame f becomes 1920 samples equal to f, then crop and concat."""
    parts = []
    for w in plan:
        decoded = np.repeat(np.arange(w.start, w.end), 1920)
        parts.append(decoded[w.crop_left: decoded.size - w.crop_right])
    return np.concatenate(parts)


@pytest.mark.parametrize("T", [250, 512, 513, 6000, 15000, 1, 384, 385, 1000])
def test_tile_plan_matches_spec_and_stitches(T):
    plan = frames.vae_tile_plan(T)
    assert [(w.start, w.end, w.crop_left, w.crop_right) for w in plan] == spec_tile_plan(T)
    assert sum((w.end - w.start) * 1920 - w.crop_left - w.crop_right for w in plan) == 1920 * T
    np.testing.assert_array_equal(stitch(T, plan), np.repeat(np.arange(T), 1920))
    for w in plan:
        assert w.crop_left == (w.core_start - w.start) * 1920 and w.crop_right == (w.end - w.core_end) * 1920


def test_tile_plan_counts():
    assert len(frames.vae_tile_plan(250)) == 1  # 10 s: direct
    assert len(frames.vae_tile_plan(6000)) == 16  # 240 s: 16 windows (spec §6)


@pytest.mark.parametrize("T,chunk,overlap", [(3000, 1024, 64), (700, 100, 10), (700, 100, 49), (50, 10, 0)])
def test_tile_plan_other_configs(T, chunk, overlap):
    plan = frames.vae_tile_plan(T, chunk, overlap)
    assert [(w.start, w.end, w.crop_left, w.crop_right) for w in plan] == spec_tile_plan(T, chunk, overlap)
    np.testing.assert_array_equal(stitch(T, plan), np.repeat(np.arange(T), 1920))


@pytest.mark.parametrize("T,chunk,overlap,needle", [
    (1000, 128, 64, "2·overlap < chunk"), (1000, 100, 60, "2·overlap < chunk"),
    (1000, 0, 0, "chunk"), (0, 512, 64, "frames 0"), (15001, 512, 64, "frames 15001"),
])
def test_tile_plan_bad_config(T, chunk, overlap, needle):
    with pytest.raises(AceError, match=needle):
        frames.vae_tile_plan(T, chunk, overlap)


def test_tile_plan_abi_capacity_and_nulls():
    count = ffi.new("size_t *")
    windows = ffi.new("AceTileWindow[]", 4)
    s = lib.ace_vae_tile_plan(6000, 512, 64, windows, 4, count)
    assert s == lib.ACE_STATUS_LENGTH_MISMATCH and "capacity 4" in last_error()[2]
    assert lib.ace_vae_tile_plan(6000, 512, 64, ffi.NULL, 16, count) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_vae_tile_plan(6000, 512, 64, windows, 4, ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_vae_tile_count(6000, 512, 64, ffi.NULL) == lib.ACE_STATUS_NULL_POINTER


# ----------------------------------------------------------------------------------------------
# peak guard


def reference_peak_guard(audio):
    """Official: peak = |x|.amax(dim=[1, 2]); if any(peak > 1): x / peak.clamp(min=1)."""
    peak = np.abs(audio).max(axis=(1, 2), keepdims=True)
    if (peak > 1.0).any():
        return audio / np.maximum(peak, np.float32(1.0)), peak.ravel()
    return audio.copy(), peak.ravel()


@pytest.mark.parametrize("scales", [(0.5, 0.9), (0.5, 3.0), (2.0, 4.0), (1.0, 1.0), (1.0000001, 0.2), (-5.0,)])
def test_peak_guard_cases(rng, scales):
    audio = np.stack([rng.uniform(-1, 1, (2, 4800)) for _ in scales]).astype(np.float32)
    for i, s in enumerate(scales):
        audio[i] /= np.abs(audio[i]).max()
        audio[i] *= np.float32(abs(s))
        if s < 0:  # the peak sits on a negative sample
            j = np.argmax(np.abs(audio[i]))
            audio[i].flat[j] = -abs(s)
    expected, expected_peaks = reference_peak_guard(audio)
    peaks = frames.peak_guard(audio)
    np.testing.assert_array_equal(peaks, expected_peaks)
    np.testing.assert_array_equal(audio, expected)
    for i, s in enumerate(scales):
        if abs(s) <= 1.0:
            assert np.abs(audio[i]).max() == np.float32(abs(s))  # untouched
        else:
            assert np.abs(audio[i]).max() == 1.0


def test_peak_guard_quiet_batch_is_bitwise_unchanged(rng):
    audio = rng.uniform(-0.99, 0.99, (3, 2, 1000)).astype(np.float32)
    before = audio.copy()
    frames.peak_guard(audio)
    assert audio.tobytes() == before.tobytes()


def test_peak_guard_rejects_nan_and_keeps_audio():
    audio = np.full((2, 2, 10), 3.0, dtype=np.float32)
    audio[1, 1, 4] = np.nan
    before = audio.copy()
    with pytest.raises(AceError) as info:
        frames.peak_guard(audio)
    assert info.value.name == "invalid_argument" and "item 1" in str(info.value)
    np.testing.assert_array_equal(audio, before)


def test_peak_guard_input_checks():
    with pytest.raises(TypeError, match="float32"):
        frames.peak_guard(np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="batch, channels, samples"):
        frames.peak_guard(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        frames.peak_guard(np.zeros((1, 2, 8), dtype=np.float32)[:, :, ::2])
    a = np.zeros(8, dtype=np.float32)
    p = ffi.cast("float *", a.ctypes.data)
    assert lib.ace_peak_guard(p, 8, 1, 2, 5, ffi.NULL, 0) == lib.ACE_STATUS_LENGTH_MISMATCH
    assert lib.ace_peak_guard(p, 8, 1, 2, 0, ffi.NULL, 0) == lib.ACE_STATUS_LENGTH_MISMATCH
    assert lib.ace_peak_guard(ffi.NULL, 8, 1, 2, 4, ffi.NULL, 0) == lib.ACE_STATUS_NULL_POINTER
    peaks = np.zeros(2, dtype=np.float32)
    s = lib.ace_peak_guard(p, 8, 1, 2, 4, ffi.cast("float *", peaks.ctypes.data), 2)
    assert s == lib.ACE_STATUS_LENGTH_MISMATCH and "peaks_out" in last_error()[2]
    assert lib.ace_peak_guard(p, 8, 1, 2, 4, ffi.NULL, 0) == lib.ACE_STATUS_OK


# ----------------------------------------------------------------------------------------------
# track id


def stdlib_canonical(params):
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stdlib_track_id(params):
    return hashlib.sha256(stdlib_canonical(params).encode("utf-8")).hexdigest()


PARAMS = [
    {},
    {"caption": "lofi hip hop, mellow piano", "lyrics": "[verse]\nla la\tla \"quoted\" \\ back",
     "duration": 240.0, "seed": 42, "bpm": 90, "shift": 3.0, "guidance_scale": 7.0,
     "timesteps": [1.0, 0.954545, 0.9, 0.0], "thinking": True, "lm_model": None},
    {"ключ": "значение", "日本語": "歌詞 🎵", "é": 1, "e": 2, "Z": 3, "a": {"b": {"c": [{"y": 1, "x": 2}]}}},
    {"ctrl": "\x00\x01\x1f\x7f\u2028", "big": 18446744073709551615, "neg": -9223372036854775808},
    {"floats": [0.1, 1e16, 1e15, 1e-5, 1e-4, 1.5e-7, -0.0, 123456789.123, 5e-324, 1.7976931348623157e308]},
]


@pytest.mark.parametrize("params", PARAMS)
def test_track_id_equals_stdlib_sha256(params):
    assert frames.canonical_json(params) == stdlib_canonical(params)
    assert frames.track_id(params) == stdlib_track_id(params)


def test_track_id_independent_of_key_order_and_whitespace():
    a = {"seed": 1, "caption": "x", "nested": {"b": 2, "a": [1, 2]}}
    b = {"nested": {"a": [1, 2], "b": 2}, "caption": "x", "seed": 1}
    text = '{\n  "nested" : { "a" : [ 1 , 2 ] , "b" : 2 } ,\n "seed":1, "caption" : "x"}'
    assert frames.track_id(a) == frames.track_id(b) == frames.track_id(text) == stdlib_track_id(a)
    assert frames.track_id({**a, "seed": 2}) != frames.track_id(a)


def test_track_id_float_rendering_matches_python_repr(rng):
    bits = rng.integers(0, 2**64, 4000, dtype=np.uint64)
    values = [struct.unpack("<d", struct.pack("<Q", int(b)))[0] for b in bits]
    values = [v for v in values if math.isfinite(v)]
    values += [float(x) for x in rng.uniform(-1e3, 1e3, 500)] + [float(x) for x in np.round(rng.uniform(10, 600, 500), 2)]
    values += [10.0 ** e for e in range(-30, 31)] + [0.5 ** e for e in range(0, 60)]
    # exact ties between two shortest candidates: Python picks the even digit
    values += [1857851371893559.25, 1857851371893559.75] + [x / 4 for x in range(-4000, 4000)]
    # powers of two: the lower neighbour of the nearest decimal may not read back
    values += [2.0 ** e for e in range(-1074, 1024)]
    params = {"v": values}
    assert frames.canonical_json(params) == stdlib_canonical(params)


@pytest.mark.parametrize("text", ['{"a": -0}', '{"a": [-0, -0.0, 1e-0, 1E2, -12, 0]}', '{"s": "-0 \\" -0"}',
                                  '{"a": 12345678901234567890, "b": -9223372036854775808}'])
def test_track_id_json_text_is_read_like_python(text):
    """Integer literals stay integers (-0 is 0), as json.loads reads them."""
    assert frames.canonical_json(text) == stdlib_canonical(json.loads(text))
    assert frames.track_id(text) == stdlib_track_id(json.loads(text))


def test_track_id_errors():
    for text, needle in [("[1, 2]", "an array"), ('"x"', "a string"), ("{", "track id"),
                         ('{"a": NaN}', "track id"), ('{"a": 1e999}', "track id"),
                         ('{"a": 18446744073709551616}', "64-bit"), ('{"a": -9223372036854775809}', "64-bit")]:
        with pytest.raises(AceError) as info:
            frames.track_id(text)
        assert info.value.name == "invalid_json" and needle in str(info.value), text
    with pytest.raises(ValueError):
        frames.track_id({"a": float("nan")})  # rejected in Python before the call
    with pytest.raises(TypeError):
        frames.track_id(42)
    out = ffi.new("char **")
    assert lib.ace_track_id(ffi.NULL, out) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_track_id(b"{}", ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_track_id(b'{"a": "\xff"}', out) == lib.ACE_STATUS_INVALID_UTF8
    assert frames.track_id("{}") == hashlib.sha256(b"{}").hexdigest()
    assert last_error() == (0, "ok", "")

"""The scheduling context through the raw C ABI: configuration, step inputs, and the bad-input
matrix (every failure returns a status and a message naming the problem; the process survives)."""

import json
import math

import numpy as np
import pytest

from acestep_runtime import _native
from acestep_runtime import solver as V
from acestep_runtime._native import AceError, ffi, lib


def create(config):
    out = ffi.new("AceContext **")
    text = config if isinstance(config, (str, bytes)) else json.dumps(config)
    if isinstance(text, str):
        text = text.encode("utf-8")
    status = lib.ace_create_context(text, out)
    return status, out[0]


def last_message():
    return _native.last_error()[2]


@pytest.fixture
def ctx():
    status, handle = create({"model": "turbo", "shift": 3.0, "method": "sde", "seeds": [1]})
    assert status == lib.ACE_STATUS_OK
    yield handle
    lib.ace_free_context(handle)


@pytest.mark.parametrize(
    "config, status, fragment",
    [
        ("{", "INVALID_JSON", "context config"),
        ("[1, 2]", "INVALID_JSON", "context config"),
        ("", "INVALID_JSON", "context config"),
        ({"shift": 3.0}, "INVALID_JSON", "model"),
        ({"model": "turbo", "shfit": 3.0}, "INVALID_JSON", "shfit"),
        ({"model": "turbo2"}, "INVALID_JSON", "turbo2"),
        ({"model": "turbo", "method": "euler"}, "INVALID_JSON", "euler"),
        ({"model": "turbo", "shift": "3"}, "INVALID_JSON", "shift"),
        ({"model": "turbo", "shift": 0}, "INVALID_ARGUMENT", "shift must be a finite number > 0, got 0"),
        ({"model": "base", "steps": 10, "shift": -2.0}, "INVALID_ARGUMENT", "got -2"),
        ({"model": "base", "steps": 0}, "INVALID_ARGUMENT", "steps must be at least 1"),
        ({"model": "base", "steps": -3}, "INVALID_JSON", "-3"),
        ({"model": "sft"}, "INVALID_ARGUMENT", "steps is required"),
        ({"model": "base", "steps": 8, "timesteps": [0.5]}, "INVALID_ARGUMENT", "only supported for the turbo"),
        ({"model": "turbo", "timesteps": [0.5, 1.2]}, "INVALID_ARGUMENT", "timesteps[1] = 1.2"),
        ({"model": "turbo", "timesteps": [0.5, "x"]}, "INVALID_JSON", "timesteps"),
        ({"model": "turbo", "seeds": []}, "INVALID_ARGUMENT", "seeds is empty"),
        ({"model": "turbo", "noise": {"mode": "torch_tpu"}}, "INVALID_JSON", "torch_tpu"),
        ({"model": "turbo", "bf16_timesteps": 1}, "INVALID_JSON", "bf16_timesteps"),
    ],
)
def test_bad_configs(config, status, fragment):
    got, handle = create(config)
    assert got == getattr(lib, f"ACE_STATUS_{status}"), last_message()
    assert handle == ffi.NULL
    assert fragment in last_message()


def test_null_and_utf8_arguments():
    out = ffi.new("AceContext **")
    assert lib.ace_create_context(ffi.NULL, out) == lib.ACE_STATUS_NULL_POINTER
    assert "config_json is null" in last_message()
    assert lib.ace_create_context(b'{"model": "turbo"}', ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    assert "out is null" in last_message()
    assert lib.ace_create_context(b'{"model": "\xff"}', out) == lib.ACE_STATUS_INVALID_UTF8
    lib.ace_free_context(ffi.NULL)  # no-op
    n = ffi.new("size_t *")
    assert lib.ace_context_num_steps(ffi.NULL, n) == lib.ACE_STATUS_NULL_POINTER
    assert "ctx is null" in last_message()
    s = ffi.new("char **")
    assert lib.ace_prepare_step_inputs(ffi.NULL, 0, s) == lib.ACE_STATUS_NULL_POINTER


def test_getters_and_step_inputs(ctx):
    n = ffi.new("size_t *")
    assert lib.ace_context_num_steps(ctx, n) == 0 and n[0] == 8
    buf = ffi.new("float[8]")
    assert lib.ace_context_timesteps(ctx, buf, 8) == 0
    assert buf[1] == np.float32(3 * 0.875 / (1 + 2 * 0.875))
    assert lib.ace_context_timesteps(ctx, buf, 7) == lib.ACE_STATUS_LENGTH_MISMATCH
    assert "out has 7 elements" in last_message()
    s = ffi.new("char **")
    assert lib.ace_prepare_step_inputs(ctx, 0, s) == 0
    info = json.loads(_native.take_string(s[0]))
    assert info["t"] == 1.0 and info["is_last"] is False and info["update"] == "sde"
    assert info["noise_seeds"] == [2] and info["timestep_input"] == 1.0
    assert info["t_next"] == float(np.float32(3 * 0.875 / (1 + 2 * 0.875)))
    assert lib.ace_prepare_step_inputs(ctx, 7, s) == 0
    info = json.loads(_native.take_string(s[0]))
    assert info["is_last"] and info["update"] == "x0" and info["t_next"] == 0.0
    assert info["dt"] == pytest.approx(0.3)
    for bad in (8, 1000, 2**63):
        assert lib.ace_prepare_step_inputs(ctx, bad, s) == lib.ACE_STATUS_INVALID_ARGUMENT
        assert f"step_index {bad} is out of range" in last_message()
    assert lib.ace_prepare_step_inputs(ctx, 0, ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    f = ffi.new("float *")
    assert lib.ace_context_timestep_input(ctx, 8, f) == lib.ACE_STATUS_INVALID_ARGUMENT


def _buf(values):
    arr = np.ascontiguousarray(values, dtype=np.float32)
    return arr, ffi.cast("float *", arr.ctypes.data)


def test_scheduler_step_bad_input_matrix(ctx):
    x, xp = _buf(np.ones((1, 4, 3)))
    v, vp = _buf(np.full((1, 4, 3), 0.5))
    out, op = _buf(np.zeros((1, 4, 3)))
    shape = ffi.new("size_t[]", [1, 4, 3])
    ok = lib.ace_scheduler_step(ctx, 0, xp, vp, shape, 3, op, 12)
    assert ok == lib.ACE_STATUS_OK, last_message()

    def expect(status, fragment, *args):
        before = out.copy()
        got = lib.ace_scheduler_step(*args)
        assert got == getattr(lib, f"ACE_STATUS_{status}"), last_message()
        assert fragment in last_message()
        return before

    expect("NULL_POINTER", "ctx is null", ffi.NULL, 0, xp, vp, shape, 3, op, 12)
    expect("NULL_POINTER", "xt is null", ctx, 0, ffi.NULL, vp, shape, 3, op, 12)
    expect("NULL_POINTER", "vt is null", ctx, 0, xp, ffi.NULL, shape, 3, op, 12)
    expect("NULL_POINTER", "out_xt is null", ctx, 0, xp, vp, shape, 3, ffi.NULL, 12)
    expect("NULL_POINTER", "shape is null", ctx, 0, xp, vp, ffi.NULL, 3, op, 12)
    expect("INVALID_ARGUMENT", "ndim must be 3", ctx, 0, xp, vp, shape, 2, op, 12)
    expect("LENGTH_MISMATCH", "xt has 11 elements but its shape needs 12", ctx, 0, xp, vp, shape, 3, op, 11)
    expect("LENGTH_MISMATCH", "xt has 0 elements", ctx, 0, xp, vp, shape, 3, op, 0)
    zero_shape = ffi.new("size_t[]", [1, 0, 3])
    expect("LENGTH_MISMATCH", "dimension 1 is zero", ctx, 0, xp, vp, zero_shape, 3, op, 0)
    huge = ffi.new("size_t[]", [2**62, 4, 3])
    expect("LENGTH_MISMATCH", "overflows", ctx, 0, xp, vp, huge, 3, op, 12)
    expect("INVALID_ARGUMENT", "step_index 8 is out of range", ctx, 8, xp, vp, shape, 3, op, 12)
    expect("INVALID_ARGUMENT", "xt and out_xt overlap", ctx, 0, xp, vp, shape, 3, xp, 12)
    expect("INVALID_ARGUMENT", "vt and out_xt overlap", ctx, 0, xp, vp, shape, 3, vp, 12)
    two = ffi.new("size_t[]", [2, 2, 3])
    expect("INVALID_ARGUMENT", "1 seeds but the latents have batch size 2", ctx, 0, xp, vp, two, 3, op, 12)
    for bad in (math.nan, math.inf, -math.inf):
        v[0, 2, 1] = bad
        expect("INVALID_ARGUMENT", "vt contains a non-finite value", ctx, 0, xp, vp, shape, 3, op, 12)
        expect("INVALID_ARGUMENT", "vt contains a non-finite value", ctx, 7, xp, vp, shape, 3, op, 12)
        v[0, 2, 1] = 0.5
        x[0, 0, 0] = bad
        expect("INVALID_ARGUMENT", "xt contains a non-finite value", ctx, 7, xp, vp, shape, 3, op, 12)
        x[0, 0, 0] = 1.0
    # the context still works after all that
    assert lib.ace_scheduler_step(ctx, 0, xp, vp, shape, 3, op, 12) == lib.ACE_STATUS_OK


def test_inplace_and_with_noise_variants(ctx):
    x, xp = _buf(np.ones((1, 4, 3)))
    v, vp = _buf(np.full((1, 4, 3), 0.5))
    eps, ep = _buf(np.full((1, 4, 3), 2.0))
    out, op = _buf(np.zeros((1, 4, 3)))
    shape = ffi.new("size_t[]", [1, 4, 3])
    assert lib.ace_scheduler_step_with_noise(ctx, 0, xp, vp, ep, shape, 3, op, 12) == 0
    tn = float(np.float32(3 * 0.875 / (1 + 2 * 0.875)))
    np.testing.assert_array_equal(out, np.float32(tn) * 2 + np.float32(1 - tn) * (1 - np.float32(0.5)))
    assert lib.ace_scheduler_step_with_noise(ctx, 0, xp, vp, ffi.NULL, shape, 3, op, 12) == lib.ACE_STATUS_NULL_POINTER
    assert "eps is null" in last_message()
    assert lib.ace_scheduler_step_with_noise(ctx, 0, xp, vp, ep, shape, 3, ep, 12) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert "eps and out_xt overlap" in last_message()
    eps[0, 0, 0] = math.nan
    assert lib.ace_scheduler_step_with_noise(ctx, 0, xp, vp, ep, shape, 3, op, 12) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert "eps contains a non-finite value" in last_message()
    # in place: x is unchanged on error, updated on success
    v[0, 0, 0] = math.inf
    before = x.copy()
    assert lib.ace_scheduler_step_inplace(ctx, 7, xp, vp, shape, 3, 12) == lib.ACE_STATUS_INVALID_ARGUMENT
    np.testing.assert_array_equal(x, before)
    v[0, 0, 0] = 0.5
    assert lib.ace_scheduler_step_inplace(ctx, 7, xp, vp, shape, 3, 12) == 0
    np.testing.assert_array_equal(x, before - np.float32(0.5) * np.float32(0.3))
    assert lib.ace_scheduler_step_inplace(ctx, 7, xp, xp, shape, 3, 12) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert "overlap" in last_message()


def test_sde_without_seeds_is_an_invalid_state():
    status, handle = create({"model": "turbo", "method": "sde"})
    assert status == 0
    try:
        x, xp = _buf(np.ones((1, 2, 2)))
        out, op = _buf(np.zeros((1, 2, 2)))
        shape = ffi.new("size_t[]", [1, 2, 2])
        v, vp = _buf(np.ones((1, 2, 2)))
        assert lib.ace_scheduler_step(handle, 0, xp, vp, shape, 3, op, 4) == lib.ACE_STATUS_INVALID_STATE
        assert "seeds" in last_message()
        # the final step needs no noise
        assert lib.ace_scheduler_step(handle, 7, xp, vp, shape, 3, op, 4) == lib.ACE_STATUS_OK
    finally:
        lib.ace_free_context(handle)


def test_info_reports_adjustments():
    with V.Context({"model": "turbo", "shift": 1.5, "steps": 50, "seeds": [3, -1]}) as ctx:
        info = ctx.info
        assert info["shift_requested"] == 1.5 and info["shift_used"] == 1.0
        assert info["num_steps"] == 8 and len(info["timesteps"]) == 8
        notes = " ".join(info["notes"])
        assert "steps=50 is ignored" in notes and "using 1" in notes and "random" in notes
        assert info["seeds"][0] == 3 and 0 <= info["seeds"][1] < 2**32
    with V.Context('{"model": "sft", "steps": 4, "shift": 2.0}') as ctx:
        info = ctx.info
        assert info["model"] == "sft" and info["num_steps"] == 4 and info["notes"] == []


def test_python_context_lifecycle_and_argument_checks():
    ctx = V.Context({"model": "turbo"})
    with pytest.raises(TypeError, match="step must be an int"):
        ctx.step_inputs(1.0)
    with pytest.raises(ValueError, match=">= 0"):
        ctx.step_inputs(-1)
    with pytest.raises(AceError, match="out of range") as e:
        ctx.step_inputs(8)
    assert e.value.name == "invalid_argument"
    x = np.zeros((1, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"\[B, T, C\]"):
        ctx.step(0, x[0], x[0])
    with pytest.raises(ValueError, match="vt has shape"):
        ctx.step(0, x, np.zeros((1, 3, 3), np.float32))
    with pytest.raises(TypeError, match="float array"):
        ctx.step(0, x, np.zeros((1, 3, 2), np.int32))
    with pytest.raises(TypeError, match="writable, C-contiguous float32"):
        ctx.step_inplace(0, x.astype(np.float64), x)
    ctx.close()
    ctx.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        ctx.num_steps
    with pytest.raises(TypeError, match="dict or a JSON string"):
        V.Context(42)
    with pytest.raises(AceError, match="shfit"):
        V.Context({"model": "turbo", "shfit": 3})

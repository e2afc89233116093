"""Guidance (CFG, APG, CFG-Zero*, interval rules) against numpy references written from the spec
(spec §4.3; v1_and_pitfalls A; official apg_guidance.py semantics: norms over the time axis)."""

import json

import numpy as np
import pytest

from acestep_runtime import guidance
from acestep_runtime._native import AceError, ffi, lib, last_error


# ----------------------------------------------------------------------------------------------
# numpy references, float64, written from the spec text


class NumpyApg:
    """APG of spec §4.3 on [B, T, C], norms over T (axis 1), projection in float64."""

    def __init__(self, momentum=-0.75, norm_threshold=2.5, eta=0.0):
        self.momentum, self.norm_threshold, self.eta = momentum, norm_threshold, eta
        self.running = None

    def __call__(self, cond, uncond, g):
        c = cond.astype(np.float64)
        d = c - uncond.astype(np.float64)
        # running = d + m·running; the first call stores d
        self.running = d if self.running is None else d + self.momentum * self.running
        d = self.running
        if self.norm_threshold > 0:
            norm = np.sqrt((d * d).sum(axis=1, keepdims=True))
            with np.errstate(divide="ignore"):
                d = d * np.minimum(1.0, self.norm_threshold / norm)
        c_norm = np.sqrt((c * c).sum(axis=1, keepdims=True))
        v_hat = c / np.maximum(c_norm, 1e-12)
        d_par = (d * v_hat).sum(axis=1, keepdims=True) * v_hat
        d_orth = d - d_par
        return c + (g - 1.0) * (d_orth + self.eta * d_par)


def numpy_cfg_zero_star(cond, uncond, g, step, zero_steps=1, use_zero_init=True):
    if use_zero_init and step <= zero_steps:
        return np.zeros_like(cond, dtype=np.float64)
    b = cond.shape[0]
    c = cond.reshape(b, -1).astype(np.float64)
    u = uncond.reshape(b, -1).astype(np.float64)
    alpha = (c * u).sum(axis=1, keepdims=True) / ((u * u).sum(axis=1, keepdims=True) + 1e-8)
    return (u * alpha + g * (c - u * alpha)).reshape(cond.shape)


def pair(rng, shape, scale=1.0, offset=0.0):
    cond = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
    uncond = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
    return cond, uncond


# ----------------------------------------------------------------------------------------------
# CFG


def test_cfg_matches_numpy(rng):
    cond, uncond = pair(rng, (2, 300, 64))
    out = guidance.cfg(cond, uncond, 7.0)
    ref = uncond.astype(np.float64) + 7.0 * (cond.astype(np.float64) - uncond.astype(np.float64))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-5)
    # float32 in torch's operation order is bit-exact
    np.testing.assert_array_equal(out, uncond + np.float32(7.0) * (cond - uncond))


def test_cfg_scale_one_returns_cond(rng):
    cond, uncond = pair(rng, (1, 50, 8))
    np.testing.assert_allclose(guidance.cfg(cond, uncond, 1.0), cond, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# APG


@pytest.mark.parametrize("shape", [(2, 120, 64), (1, 37, 5), (3, 16, 1)])
def test_apg_matches_numpy_over_consecutive_calls(rng, shape):
    ref = NumpyApg()
    with guidance.Apg() as apg:
        for call in range(5):
            cond, uncond = pair(rng, shape)
            out = apg.apply(cond, uncond, 7.0)
            expected = ref(cond, uncond, 7.0)
            np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5, err_msg=f"call {call}")
        assert apg.calls == 5


def test_apg_momentum_state_matters(rng):
    """A stateless APG (fresh buffer each call) gives a different answer from call 2 on."""
    shape = (1, 64, 16)
    calls = [pair(rng, shape) for _ in range(3)]
    with guidance.Apg() as apg:
        outs = [apg.apply(c, u, 5.0).copy() for c, u in calls]
    fresh = [NumpyApg()(c, u, 5.0) for c, u in calls]
    np.testing.assert_allclose(outs[0], fresh[0], rtol=2e-5, atol=2e-5)
    assert not np.allclose(outs[1], fresh[1], rtol=1e-3, atol=1e-3)
    assert not np.allclose(outs[2], fresh[2], rtol=1e-3, atol=1e-3)


def test_apg_clip_engages(rng):
    # difference norm over T=200 of N(0, 2) noise is ~40 >> 2.5, for every (b, c)
    cond, uncond = pair(rng, (2, 200, 8), scale=2.0)
    d = cond.astype(np.float64) - uncond
    assert (np.linalg.norm(d, axis=1) > 2.5).all()
    with guidance.Apg() as apg:
        out = apg.apply(cond, uncond, 2.0)
    np.testing.assert_allclose(out, NumpyApg()(cond, uncond, 2.0), rtol=2e-5, atol=2e-5)
    unclipped = NumpyApg(norm_threshold=0.0)(cond, uncond, 2.0)
    assert not np.allclose(out, unclipped, rtol=1e-2, atol=1e-2)
    # with g = 2 and eta = 0, out − cond is the orthogonal part of the clipped difference:
    # its norm over T is at most 2.5 and it is orthogonal to cond.
    delta = out.astype(np.float64) - cond
    assert (np.linalg.norm(delta, axis=1) <= 2.5 + 1e-4).all()
    cos = (delta * cond).sum(axis=1) / (np.linalg.norm(delta, axis=1) * np.linalg.norm(cond, axis=1))
    assert np.abs(cos).max() < 1e-5


def test_apg_clip_not_engaged(rng):
    cond, uncond = pair(rng, (2, 200, 8), scale=1.0)
    uncond = (cond + 0.01 * rng.standard_normal(cond.shape)).astype(np.float32)
    d = cond.astype(np.float64) - uncond
    assert (np.linalg.norm(d, axis=1) < 2.5).all()
    with guidance.Apg() as apg:
        out = apg.apply(cond, uncond, 4.0)
    np.testing.assert_allclose(out, NumpyApg()(cond, uncond, 4.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, NumpyApg(norm_threshold=0.0)(cond, uncond, 4.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eta", [0.5, 1.0, -0.3])
def test_apg_eta(rng, eta):
    ref = NumpyApg(eta=eta)
    with guidance.Apg(eta=eta) as apg:
        for _ in range(3):
            cond, uncond = pair(rng, (2, 90, 16), offset=0.3)
            np.testing.assert_allclose(apg.apply(cond, uncond, 6.0), ref(cond, uncond, 6.0), rtol=2e-5, atol=2e-5)


def test_apg_eta_one_no_clip_no_momentum_is_cfg_written_around_cond(rng):
    """eta = 1, no clip, momentum 0: d_orth + d_par = d, so out = cond + (g − 1)(cond − uncond)."""
    cond, uncond = pair(rng, (1, 40, 4))
    with guidance.Apg(momentum=0.0, norm_threshold=0.0, eta=1.0) as apg:
        out = apg.apply(cond, uncond, 3.0)
    ref = cond.astype(np.float64) + 2.0 * (cond.astype(np.float64) - uncond)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_apg_custom_momentum_and_threshold(rng):
    ref = NumpyApg(momentum=0.5, norm_threshold=1.0)
    with guidance.Apg(momentum=0.5, norm_threshold=1.0) as apg:
        for _ in range(3):
            cond, uncond = pair(rng, (2, 30, 4))
            np.testing.assert_allclose(apg.apply(cond, uncond, 3.0), ref(cond, uncond, 3.0), rtol=2e-5, atol=2e-5)


def test_apg_reset(rng):
    calls = [pair(rng, (1, 50, 8)) for _ in range(3)]
    with guidance.Apg() as apg:
        for c, u in calls:
            apg.apply(c, u, 5.0)
        apg.reset()
        assert apg.calls == 0
        after_reset = apg.apply(*calls[2], 5.0)
        # a different shape is fine after a reset
        apg.reset()
        apg.apply(*pair(rng, (2, 10, 3)), 5.0)
    with guidance.Apg() as fresh:
        np.testing.assert_array_equal(after_reset, fresh.apply(*calls[2], 5.0))


def test_apg_zero_norms_are_finite():
    """‖d‖ = 0 → threshold/0 = inf → factor 1; ‖cond‖ = 0 → normalize gives 0 → d_par = 0."""
    zeros = np.zeros((1, 10, 3), dtype=np.float32)
    with guidance.Apg() as apg:
        assert (apg.apply(zeros, zeros, 7.0) == 0).all()
    uncond = np.full((1, 10, 3), -0.1, dtype=np.float32)  # ‖d‖ = 0.316 < 2.5
    with guidance.Apg() as apg:
        out = apg.apply(zeros, uncond, 7.0)
    np.testing.assert_allclose(out, NumpyApg()(zeros, uncond, 7.0), atol=1e-6)
    np.testing.assert_allclose(out, 0.6, atol=1e-6)


def test_apg_against_torch_official_semantics(rng):
    """Second reference: the official apg_forward written with torch ops (F.normalize, dims=[1])."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    running = None
    with guidance.Apg() as apg:
        for _ in range(3):
            cond, uncond = pair(rng, (2, 100, 64))
            c, u = torch.from_numpy(cond), torch.from_numpy(uncond)
            diff = c - u
            running = diff + (-0.75) * (running if running is not None else 0)
            d = running
            d = d * torch.minimum(torch.ones_like(d), 2.5 / d.norm(p=2, dim=[1], keepdim=True))
            v1 = F.normalize(c.double(), dim=[1])
            par = (d.double() * v1).sum(dim=[1], keepdim=True) * v1
            orth = d.double() - par
            expected = c + (7.0 - 1) * (orth.float() + 0.0 * par.float())
            np.testing.assert_allclose(apg.apply(cond, uncond, 7.0), expected.numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# CFG-Zero*


@pytest.mark.parametrize("step,zero_steps,use_zero_init", [(0, 1, True), (1, 1, True), (2, 1, True),
                                                           (0, 1, False), (3, 0, True), (0, 0, True)])
def test_cfg_zero_star_matches_numpy(rng, step, zero_steps, use_zero_init):
    cond, uncond = pair(rng, (3, 80, 16), offset=0.2)
    out = guidance.cfg_zero_star(cond, uncond, 5.0, step, zero_steps, use_zero_init)
    ref = numpy_cfg_zero_star(cond, uncond, 5.0, step, zero_steps, use_zero_init)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    if use_zero_init and step <= zero_steps:
        assert (out == 0).all()
    else:
        assert np.abs(out).max() > 0


def test_cfg_zero_star_alpha_is_per_batch_item(rng):
    cond, uncond = pair(rng, (2, 40, 8), offset=0.5)
    both = guidance.cfg_zero_star(cond, uncond, 4.0, step=5)
    for b in range(2):
        alone = guidance.cfg_zero_star(cond[b:b + 1].copy(), uncond[b:b + 1].copy(), 4.0, step=5)
        np.testing.assert_array_equal(both[b:b + 1], alone)


# ----------------------------------------------------------------------------------------------
# interval rules


def test_cfg_interval_inclusive_bounds():
    assert guidance.cfg_interval_active(0.0) and guidance.cfg_interval_active(1.0)
    assert guidance.cfg_interval_active(0.3, 0.3, 0.7) and guidance.cfg_interval_active(0.7, 0.3, 0.7)
    below = float(np.nextafter(np.float32(0.3), np.float32(0)))
    above = float(np.nextafter(np.float32(0.7), np.float32(1)))
    assert not guidance.cfg_interval_active(below, 0.3, 0.7)
    assert not guidance.cfg_interval_active(above, 0.3, 0.7)
    assert not guidance.cfg_interval_active(0.5, 0.6, 0.4)  # empty interval: never


def test_cfg_interval_compares_in_float32_like_torch():
    torch = pytest.importorskip("torch")
    t = float(np.nextafter(np.float32(0.3), np.float32(0)))
    start = (t + 0.3) / 2 + 1e-10  # above t in float64, but rounds to t in float32
    assert t < start
    expected = bool(torch.tensor(t, dtype=torch.float32) >= start)
    assert guidance.cfg_interval_active(t, start, 1.0) == expected == True  # noqa: E712


@pytest.mark.parametrize("gi", [0.5, 0.0, 0.3, 0.75, 1.0])
def test_v1_guidance_interval(gi):
    for n in range(1, 130):
        start = int(n * ((1 - gi) / 2))
        end = int(n * (gi / 2 + 0.5))
        assert guidance.v1_guidance_interval(n, gi) == (start, end), n
        active = [guidance.v1_step_active(i, n, gi) for i in range(n)]
        assert active == [start <= i < end for i in range(n)]


def test_v1_default_interval_is_quarter_to_three_quarters():
    assert guidance.v1_guidance_interval(60) == (15, 45)
    assert guidance.v1_step_active(15, 60) and guidance.v1_step_active(44, 60)
    assert not guidance.v1_step_active(14, 60) and not guidance.v1_step_active(45, 60)


def test_interval_errors():
    with pytest.raises(AceError, match="num_steps"):
        guidance.v1_guidance_interval(0)
    with pytest.raises(AceError, match="guidance_interval"):
        guidance.v1_guidance_interval(10, 1.5)
    with pytest.raises(AceError, match="step 10"):
        guidance.v1_step_active(10, 10)
    with pytest.raises(AceError, match="finite"):
        guidance.cfg_interval_active(float("nan"))


# ----------------------------------------------------------------------------------------------
# bad input through the C ABI and through the wrappers


def fptr(a):
    return ffi.cast("float *", a.ctypes.data)


def status_and_message(status):
    code, name, message = last_error()
    assert code == status
    return name, message


def test_abi_null_pointers():
    a = np.ones(8, dtype=np.float32)
    out = np.empty_like(a)
    s = lib.ace_guidance_cfg(ffi.NULL, fptr(a), fptr(out), 8, 2.0)
    assert s == lib.ACE_STATUS_NULL_POINTER and "cond is null" in status_and_message(s)[1]
    s = lib.ace_guidance_cfg(fptr(a), fptr(a), ffi.NULL, 8, 2.0)
    assert s == lib.ACE_STATUS_NULL_POINTER and "out is null" in status_and_message(s)[1]
    s = lib.ace_apg_apply(ffi.NULL, fptr(a), fptr(a), fptr(out), 8, 1, 8, 1, 2.0)
    assert s == lib.ACE_STATUS_NULL_POINTER and "apg is null" in status_and_message(s)[1]
    s = lib.ace_apg_create(ffi.NULL, ffi.new("AceApg **"))
    assert s == lib.ACE_STATUS_NULL_POINTER
    s = lib.ace_apg_create(b"{}", ffi.NULL)
    assert s == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_guidance_v1_interval(10, 0.5, ffi.NULL, ffi.new("uint32_t *")) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_apg_reset(ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    lib.ace_apg_free(ffi.NULL)  # documented no-op


def test_abi_zero_and_mismatched_lengths():
    a = np.ones(12, dtype=np.float32)
    out = np.empty_like(a)
    s = lib.ace_guidance_cfg(fptr(a), fptr(a), fptr(out), 0, 2.0)
    assert s == lib.ACE_STATUS_LENGTH_MISMATCH
    s = lib.ace_guidance_cfg_zero_star(fptr(a), fptr(a), fptr(out), 12, 5, 2.0, 3, 1, True)
    assert s == lib.ACE_STATUS_LENGTH_MISMATCH and "multiple of batch 5" in status_and_message(s)[1]
    apg = guidance.Apg()
    s = lib.ace_apg_apply(apg.ptr, fptr(a), fptr(a), fptr(out), 12, 2, 3, 4, 2.0)
    assert s == lib.ACE_STATUS_LENGTH_MISMATCH and "24" in status_and_message(s)[1]
    s = lib.ace_apg_apply(apg.ptr, fptr(a), fptr(a), fptr(out), 12, 0, 3, 4, 2.0)
    assert s == lib.ACE_STATUS_LENGTH_MISMATCH and "batch is 0" in status_and_message(s)[1]
    assert apg.calls == 0
    apg.close()


def test_abi_non_finite_inputs():
    a = np.ones(16, dtype=np.float32)
    bad = a.copy()
    bad[7] = np.inf
    out = np.empty_like(a)
    s = lib.ace_guidance_cfg(fptr(a), fptr(bad), fptr(out), 16, 2.0)
    assert s == lib.ACE_STATUS_INVALID_ARGUMENT
    _, msg = status_and_message(s)
    assert "uncond" in msg and "index 7" in msg
    s = lib.ace_guidance_cfg(fptr(a), fptr(a), fptr(out), 16, float("nan"))
    assert s == lib.ACE_STATUS_INVALID_ARGUMENT and "guidance_scale" in status_and_message(s)[1]
    bad[7] = np.nan
    s = lib.ace_guidance_cfg_zero_star(fptr(bad), fptr(a), fptr(out), 16, 2, 2.0, 5, 1, True)
    assert s == lib.ACE_STATUS_INVALID_ARGUMENT and "cond" in status_and_message(s)[1]
    huge = np.full(16, 3e38, dtype=np.float32)
    s = lib.ace_guidance_cfg(fptr(huge), fptr(-huge), fptr(out), 16, 2.0)
    assert s == lib.ACE_STATUS_INVALID_ARGUMENT and "overflows" in status_and_message(s)[1]
    tiny = np.full(16, 1e-30, dtype=np.float32)
    s = lib.ace_guidance_cfg_zero_star(fptr(huge), fptr(tiny), fptr(out), 16, 2, 2.0, 5, 1, True)
    assert s == lib.ACE_STATUS_INVALID_ARGUMENT and "overflows" in status_and_message(s)[1]


def test_apg_non_finite_input_keeps_momentum_state(rng):
    c1, u1 = pair(rng, (1, 20, 4))
    c2, u2 = pair(rng, (1, 20, 4))
    ref = NumpyApg()
    with guidance.Apg() as apg:
        np.testing.assert_allclose(apg.apply(c1, u1, 3.0), ref(c1, u1, 3.0), rtol=2e-5, atol=2e-5)
        bad = c2.copy()
        bad[0, 3, 1] = np.nan
        with pytest.raises(AceError) as info:
            apg.apply(bad, u2, 3.0)
        assert info.value.name == "invalid_argument" and "cond" in str(info.value)
        assert apg.calls == 1
        # the failed call did not advance the momentum buffer
        np.testing.assert_allclose(apg.apply(c2, u2, 3.0), ref(c2, u2, 3.0), rtol=2e-5, atol=2e-5)


def test_apg_config_errors():
    for text, needle in [(b"{", "APG config"), (b'{"etaa": 1}', "etaa"), (b'{"eta": "x"}', "eta"),
                         (b"[]", "APG config"), (b'{"momentum": 1e999}', "")]:
        out = ffi.new("AceApg **")
        s = lib.ace_apg_create(text, out)
        assert s in (lib.ACE_STATUS_INVALID_JSON, lib.ACE_STATUS_INVALID_ARGUMENT), text
        assert needle in status_and_message(s)[1]
    with pytest.raises(AceError, match="unknown field"):
        guidance.Apg(config_json=json.dumps({"momentum": -0.75, "norm_treshold": 2.5}))
    with pytest.raises(AceError):
        guidance.Apg(config_json=b"\xff".decode("latin-1") + "{")


def test_apg_shape_change_is_invalid_state(rng):
    with guidance.Apg() as apg:
        apg.apply(*pair(rng, (2, 30, 8)), 3.0)
        with pytest.raises(AceError) as info:
            apg.apply(*pair(rng, (1, 30, 8)), 3.0)
        assert info.value.name == "invalid_state"
        assert "[2, 30, 8]" in str(info.value) and "[1, 30, 8]" in str(info.value)
        assert apg.calls == 1


def test_overlapping_out_is_rejected():
    a = np.ones(16, dtype=np.float32)
    s = lib.ace_guidance_cfg(fptr(a), fptr(a), ffi.cast("float *", a.ctypes.data + 8), 8, 2.0)
    assert s == lib.ACE_STATUS_INVALID_ARGUMENT and "overlap" in status_and_message(s)[1]
    with pytest.raises(ValueError, match="share memory"):
        guidance.cfg(a, a.copy(), 2.0, out=a)


def test_wrapper_checks_before_calling():
    a = np.ones((1, 4, 2), dtype=np.float32)
    with pytest.raises(TypeError, match="float32"):
        guidance.cfg(a.astype(np.float64), a, 2.0)
    with pytest.raises(TypeError, match="numpy"):
        guidance.cfg([1.0], a, 2.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        guidance.cfg(np.ones((4, 4), dtype=np.float32)[:, ::2], np.ones((4, 2), dtype=np.float32), 2.0)
    with pytest.raises(ValueError, match="shape"):
        guidance.cfg(a, np.ones((1, 4, 3), dtype=np.float32), 2.0)
    with pytest.raises(ValueError, match="3 dimensions"):
        guidance.Apg().apply(a[0], a[0], 2.0)
    apg = guidance.Apg()
    apg.close()
    apg.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        apg.apply(a, a, 2.0)


def test_process_survives_and_next_call_works(rng):
    """After a run of failing calls, a good call succeeds and clears the last error."""
    test_abi_null_pointers()
    test_abi_non_finite_inputs()
    cond, uncond = pair(rng, (1, 10, 4))
    guidance.cfg(cond, uncond, 2.0)
    assert last_error() == (0, "ok", "")

"""Solver steps and full loops against numpy written here from the spec's formulas (float32
arithmetic in the reference's operation order), plus torch for the seeded SDE noise."""

import math

import numpy as np
import pytest
import torch

from acestep_runtime import schedule as S
from acestep_runtime import solver as V

f32 = np.float32


def latents(rng, shape=(2, 50, 8)):
    return rng.standard_normal(shape).astype(f32), rng.standard_normal(shape).astype(f32)


def ref_ode(x, v, t, t_next):
    return x - v * f32(t - t_next)


def ref_x0(x, v, t):
    return x - v * f32(t)


def ref_sde(x, v, eps, t, t_next):
    x0 = ref_x0(x, v, t)
    return f32(t_next) * eps + f32(1.0 - t_next) * x0


def ref_omega(scale):
    return 0.9 + 0.2 / (1 + math.exp(-0.1 * scale))


def ref_omega_shift(base, dx, w):
    m = f32(dx.astype(np.float64).mean())
    return base + ((dx - m) * f32(w) + m)


def test_ode_x0_sde_match_numpy_bit_for_bit(rng):
    x, v = latents(rng)
    eps = rng.standard_normal(x.shape).astype(f32)
    t, tn = float(f32(0.9545454545454546)), float(f32(0.9))
    np.testing.assert_array_equal(V.ode_step(x, v, t, tn), ref_ode(x, v, t, tn))
    np.testing.assert_array_equal(V.x0_step(x, v, t), ref_x0(x, v, t))
    np.testing.assert_array_equal(V.sde_step(x, v, eps, t, tn), ref_sde(x, v, eps, t, tn))
    # plain formulas, float64, as a second independent check
    x64, v64 = x.astype(np.float64), v.astype(np.float64)
    np.testing.assert_allclose(V.ode_step(x, v, t, tn), x64 - v64 * (t - tn), atol=1e-6)
    np.testing.assert_allclose(
        V.sde_step(x, v, eps, t, tn), tn * eps + (1 - tn) * (x64 - v64 * t), atol=1e-6
    )


def test_omega_value():
    assert V.omega(10.0) == pytest.approx(ref_omega(10.0), abs=1e-15)
    assert V.omega(10.0) == pytest.approx(1.0462, abs=1e-4)
    assert V.omega(0.0) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("scale", [10.0, 0.0, -25.0])
def test_euler_omega_matches_numpy(rng, scale):
    x, v = latents(rng, (2, 300, 8))
    v = v + f32(0.3)  # a non-zero mean so the shift matters
    s, sn = 0.8576923, 0.6021505
    dt = f32(sn) - f32(s)
    want = ref_omega_shift(x, v * dt, ref_omega(scale))
    np.testing.assert_allclose(V.euler_omega_step(x, v, s, sn, scale), want, rtol=0, atol=2e-7)
    if scale != 0.0:  # ω ≠ 1 really changes the result
        assert np.abs(V.euler_omega_step(x, v, s, sn, scale) - (x + v * dt)).max() > 1e-4


def ref_heun_run(x, sig, field, w, via_denoised):
    """v1 Heun over the σ grid. via_denoised=True forms each derivative as (x − (x − v·σ))/σ in
    float32, as the v1 scheduler code does; False uses d = v (the spec's plain form)."""
    def deriv(z, v, s):
        return (z - (z - v * f32(s))) / f32(s) if via_denoised else v

    preds = []
    for i in range(len(sig) - 1):
        s, sn = sig[i], sig[i + 1]
        dt = f32(sn) - f32(s)
        d1 = deriv(x, field(x, s), s)
        pred = ref_omega_shift(x, d1 * dt, w)
        preds.append(pred)
        if sn == 0:
            return pred, preds
        d2 = deriv(pred, field(pred, sn), sn)
        x = ref_omega_shift(x, (f32(0.5) * (d1 + d2)) * dt, w)
    return x, preds


def test_heun_two_stages_match_numpy(rng):
    sig = S.v1_sigmas(4, 3.0).astype(np.float64)
    x, _ = latents(rng, (1, 40, 8))
    a = f32(-0.7)
    field = lambda z, s: a * z + f32(s) * f32(0.5)  # a fake velocity field
    w = ref_omega(10.0)
    ours = x.copy()
    preds = []
    with V.Heun(10.0) as h:
        for i in range(len(sig) - 1):
            s, sn = sig[i], sig[i + 1]
            assert h.next_stage == 1
            pred = h.step(ours, field(ours, s), s, sn)
            preds.append(pred)
            if sn == 0:  # the final interval is first-stage only (2N - 1 model calls)
                ours = pred
                h.reset()
                break
            assert h.next_stage == 2
            ours = h.step(pred, field(pred, sn), s, sn)
    exact_ref, exact_preds = ref_heun_run(x, sig, field, w, via_denoised=True)
    for p, q in zip(preds, exact_preds):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours, exact_ref, rtol=0, atol=1e-6)
    plain_ref, _ = ref_heun_run(x, sig, field, w, via_denoised=False)
    np.testing.assert_allclose(ours, plain_ref, rtol=1e-5, atol=2e-5)
    assert np.abs(plain_ref - x).max() > 0.1  # the loop really moved x


def test_heun_rejects_a_second_stage_for_another_interval(rng):
    x, v = latents(rng, (1, 4, 2))
    h = V.Heun()
    h.step(x, v, 1.0, 0.5)
    with pytest.raises(V_error(), match="pending interval"):
        h.step(x, v, 1.0, 0.25)
    assert h.next_stage == 2  # unchanged by the failed call
    h.close()
    with pytest.raises(ValueError, match="closed"):
        h.step(x, v, 1.0, 0.5)


def V_error():
    from acestep_runtime import AceError

    return AceError


def test_pingpong_matches_numpy(rng):
    x, v = latents(rng)
    eps = rng.standard_normal(x.shape).astype(f32)
    s, sn = 0.6021505, 0.3
    want = f32(1 - sn) * (x - v * f32(s)) + f32(sn) * eps
    np.testing.assert_allclose(V.pingpong_step(x, v, eps, s, sn), want, atol=1e-6)


def fake_velocity(x, t):
    # a linear field v = A x + b(t), stands in for the DiT
    return f32(0.3) * x + f32(t) * f32(0.25) - f32(0.1)


@pytest.mark.parametrize("shift", [1.0, 2.0, 3.0])
def test_full_turbo_ode_loop_vs_numpy(rng, shift):
    noise = rng.standard_normal((2, 64, 8)).astype(f32)
    sched = ref_turbo_f32(shift)
    # numpy reference of spec §4.1 / §4.5
    x = noise.copy()
    for i, t in enumerate(sched):
        v = fake_velocity(x, t)
        if i == len(sched) - 1:
            x = x - v * f32(t)
        else:
            x = x - v * f32(float(t) - float(sched[i + 1]))
    with V.Context({"model": "turbo", "shift": shift}) as ctx:
        assert ctx.num_steps == 8
        y = noise.copy()
        for i in range(ctx.num_steps):
            t = ctx.timestep_input(i)
            assert t == sched[i]
            y = ctx.step(i, y, fake_velocity(y, t))
    np.testing.assert_array_equal(y, x)


def ref_turbo_f32(s):
    t = 1 - np.arange(8) / 8
    return (s * t / (1 + (s - 1) * t)).astype(f32)


def test_inplace_step_equals_out_of_place(rng):
    x, v = latents(rng)
    with V.Context({"model": "turbo"}) as ctx:
        want = ctx.step(3, x, v)
        y = x.copy()
        ctx.step_inplace(3, y, v)
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("model", ["base", "sft"])
def test_base_ode_loop_vs_numpy(rng, model):
    steps, shift = 12, 3.0
    noise = rng.standard_normal((1, 30, 8)).astype(f32)
    t = np.linspace(1, 0, steps + 1)
    t = (shift * t / (1 + (shift - 1) * t)).astype(f32)
    x = noise.copy()
    for i in range(steps):  # Euler over consecutive pairs, the last pair ends at 0
        x = x - fake_velocity(x, t[i]) * f32(float(t[i]) - float(t[i + 1]))
    with V.Context({"model": model, "steps": steps, "shift": shift}) as ctx:
        y = noise.copy()
        for i in range(ctx.num_steps):
            y = ctx.step(i, y, fake_velocity(y, ctx.timestep_input(i)))
    np.testing.assert_allclose(y, x, atol=1e-6)


def torch_randn(seed, shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()


def test_turbo_sde_loop_with_seeded_noise_vs_numpy_and_torch(rng):
    seeds = [42, 7]
    shape = (2, 40, 8)
    noise = np.concatenate([torch_randn(s, (1,) + shape[1:]) for s in seeds])
    sched = ref_turbo_f32(3.0)
    x = noise.copy()
    for i, t in enumerate(sched):
        v = fake_velocity(x, t)
        if i == len(sched) - 1:
            x = x - v * f32(t)
        else:
            # policy: item b's eps at step i = torch.randn([1, T, C]) seeded with s_b + i + 1
            eps = np.concatenate([torch_randn(s + i + 1, (1,) + shape[1:]) for s in seeds])
            tn = float(sched[i + 1])
            x = f32(tn) * eps + f32(1 - tn) * (x - v * f32(t))
    with V.Context({"model": "turbo", "shift": 3.0, "method": "sde", "seeds": seeds}) as ctx:
        y = noise.copy()
        for i in range(ctx.num_steps):
            info = ctx.step_inputs(i)
            if not info["is_last"]:
                assert info["update"] == "sde" and info["noise_seeds"] == [s + i + 1 for s in seeds]
            y = ctx.step(i, y, fake_velocity(y, ctx.timestep_input(i)))
    np.testing.assert_array_equal(y, x)


def test_sde_with_caller_noise_and_base_renoise_quirk(rng):
    steps, shift = 6, 3.0
    x, v = latents(rng, (1, 20, 4))
    eps = rng.standard_normal(x.shape).astype(f32)
    with V.Context({"model": "base", "steps": steps, "shift": shift, "method": "sde"}) as ctx:
        for i in range(steps - 1):
            info = ctx.step_inputs(i)
            r = 1 - (i + 1) / steps  # ignores the shift (spec §4.3)
            assert info["renoise_t"] == pytest.approx(r, abs=1e-15)
            want = f32(r) * eps + f32(1 - r) * (x - v * f32(info["t"]))
            np.testing.assert_array_equal(ctx.step(i, x, v, eps=eps), want)
        # without seeds the seeded path is an error that says what to do
        with pytest.raises(V_error(), match="seeds"):
            ctx.step(0, x, v)
        # the last step is x0 whatever the method
        t_last = ctx.timesteps[-1]
        np.testing.assert_array_equal(ctx.step(steps - 1, x, v, eps=eps), x - v * t_last)


# spec §4.2: per-step dt in bf16
SPEC_BF16_DT = {
    3: [0.046875, 0.0546875, 0.06640625, 0.08203125, 0.10546875, 0.14453125, 0.19921875],
    2: [0.06640625, 0.078125, 0.0859375, 0.1015625, 0.12109375, 0.146484375, 0.177734375],
    1: [0.125] * 7,
}
SPEC_BF16_T = {
    3: [1.0, .953125, .8984375, .83203125, .75, .64453125, .5, .30078125],
    2: [1.0, .93359375, .85546875, .76953125, .66796875, .546875, .400390625, .22265625],
    1: [1.0, .875, .75, .625, .5, .375, .25, .125],
}


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_bf16_context_uses_the_spec_timesteps_and_dts(shift, rng):
    with V.Context({"model": "turbo", "shift": shift, "bf16_timesteps": True}) as ctx:
        np.testing.assert_array_equal(ctx.timesteps, np.array(SPEC_BF16_T[shift], f32))
        dts = [ctx.step_inputs(i)["dt"] for i in range(7)]
        assert dts == SPEC_BF16_DT[shift]
        x, v = latents(rng, (1, 10, 4))
        np.testing.assert_array_equal(ctx.step(2, x, v), x - v * f32(SPEC_BF16_DT[shift][2]))
        np.testing.assert_array_equal(ctx.step(7, x, v), x - v * f32(SPEC_BF16_T[shift][7]))
        assert ctx.timestep_input(1) == SPEC_BF16_T[shift][1]


def test_custom_timesteps_context():
    with V.Context({"model": "turbo", "timesteps": [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0]}) as ctx:
        np.testing.assert_allclose(ctx.timesteps, [0.954545, 0.769231, 0.625, 0.5, 0.4, 0.3, 0.222222, 0.125], atol=1e-6)
        assert any("snapped" in n for n in ctx.info["notes"])


def test_seeded_sde_and_pingpong_draw_torch_noise_per_item(rng):
    x, v = latents(rng, (3, 16, 4))
    seeds = [11, 12, 2**40 + 5]
    eps = np.concatenate([torch_randn(s, (1, 16, 4)) for s in seeds])
    t, tn = 0.9, 0.8333333
    np.testing.assert_array_equal(V.sde_step_seeded(x, v, seeds, t, tn), ref_sde(x, v, eps, t, tn))
    np.testing.assert_array_equal(V.sde_step_seeded(x, v, seeds, t, tn), V.sde_step(x, v, eps, t, tn))
    np.testing.assert_array_equal(
        V.pingpong_step_seeded(x, v, seeds, t, tn, noise={"mode": "torch_cpu"}), V.pingpong_step(x, v, eps, t, tn)
    )
    with pytest.raises(ValueError, match="cannot split"):
        V.sde_step_seeded(x, v, [1, 2], t, tn)
    with pytest.raises(V_error(), match="torch_gpu"):
        V.sde_step_seeded(x, v, seeds, t, tn, noise={"mode": "torch_gpu"})


def test_raw_solver_abi_bad_inputs():
    from acestep_runtime import _native
    from acestep_runtime._native import ffi, lib

    x = ffi.new("float[4]", [1, 2, 3, 4])
    v = ffi.new("float[4]", [0.5] * 4)
    e = ffi.new("float[4]", [0.1] * 4)
    o = ffi.new("float[4]")
    msg = lambda: _native.last_error()[2]
    assert lib.ace_solver_ode_step(x, v, 4, 1.0, 0.5, o) == lib.ACE_STATUS_OK
    assert lib.ace_solver_ode_step(ffi.NULL, v, 4, 1.0, 0.5, o) == lib.ACE_STATUS_NULL_POINTER and "xt is null" in msg()
    assert lib.ace_solver_ode_step(x, ffi.NULL, 4, 1.0, 0.5, o) == lib.ACE_STATUS_NULL_POINTER and "vt is null" in msg()
    assert lib.ace_solver_ode_step(x, v, 4, 1.0, 0.5, ffi.NULL) == lib.ACE_STATUS_NULL_POINTER and "out is null" in msg()
    assert lib.ace_solver_ode_step(x, v, 0, 1.0, 0.5, o) == lib.ACE_STATUS_LENGTH_MISMATCH and "len is 0" in msg()
    assert lib.ace_solver_ode_step(x, v, 4, math.nan, 0.5, o) == lib.ACE_STATUS_INVALID_ARGUMENT and "t is not finite" in msg()
    assert lib.ace_solver_ode_step(x, v, 4, 1.0, math.inf, o) == lib.ACE_STATUS_INVALID_ARGUMENT and "t_next" in msg()
    assert lib.ace_solver_ode_step(x, v, 4, 1.0, 0.5, x) == lib.ACE_STATUS_INVALID_ARGUMENT and "overlap" in msg()
    assert lib.ace_solver_x0(x, v, 4, 1.0, v) == lib.ACE_STATUS_INVALID_ARGUMENT and "vt and out overlap" in msg()
    v[2] = math.nan
    assert lib.ace_solver_x0(x, v, 4, 1.0, o) == lib.ACE_STATUS_INVALID_ARGUMENT and "vt contains a non-finite value (NaN) at index 2" in msg()
    v[2] = 0.5
    assert lib.ace_solver_sde_step(x, v, ffi.NULL, 4, 1.0, 0.5, o) == lib.ACE_STATUS_NULL_POINTER and "eps is null" in msg()
    assert lib.ace_solver_sde_step(x, v, e, 4, 1.0, 0.5, e) == lib.ACE_STATUS_INVALID_ARGUMENT and "eps and out overlap" in msg()
    e[0] = math.inf
    assert lib.ace_solver_pingpong_step(x, v, e, 4, 1.0, 0.5, o) == lib.ACE_STATUS_INVALID_ARGUMENT and "eps contains" in msg()
    assert lib.ace_solver_euler_omega_step(x, v, 4, 1.0, 0.5, math.nan, o) == lib.ACE_STATUS_INVALID_ARGUMENT and "omega_scale" in msg()
    d = ffi.new("double *")
    assert lib.ace_solver_omega(math.inf, d) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert lib.ace_solver_omega(1.0, ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    seeds = ffi.new("uint64_t[]", [1, 2])
    assert lib.ace_solver_sde_step_seeded(x, v, 4, ffi.NULL, 2, ffi.NULL, 1.0, 0.5, o) == lib.ACE_STATUS_NULL_POINTER and "seeds is null" in msg()
    assert lib.ace_solver_sde_step_seeded(x, v, 4, seeds, 0, ffi.NULL, 1.0, 0.5, o) == lib.ACE_STATUS_LENGTH_MISMATCH and "num_seeds is 0" in msg()
    assert lib.ace_solver_sde_step_seeded(x, v, 3, seeds, 2, ffi.NULL, 1.0, 0.5, o) == lib.ACE_STATUS_LENGTH_MISMATCH and "2 equal batch items" in msg()
    assert lib.ace_solver_pingpong_step_seeded(x, v, 4, seeds, 2, b"{", 1.0, 0.5, o) == lib.ACE_STATUS_INVALID_JSON
    assert lib.ace_solver_pingpong_step_seeded(x, v, 4, seeds, 2, ffi.NULL, 1.0, 0.5, o) == lib.ACE_STATUS_OK
    h = ffi.new("AceHeun **")
    assert lib.ace_heun_create(math.nan, h) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert lib.ace_heun_create(10.0, ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_heun_create(10.0, h) == lib.ACE_STATUS_OK
    stage = ffi.new("int *")
    assert lib.ace_heun_step(ffi.NULL, x, v, 4, 1.0, 0.5, o, stage) == lib.ACE_STATUS_NULL_POINTER and "heun is null" in msg()
    assert lib.ace_heun_step(h[0], x, v, 4, 0.0, 0.5, o, stage) == lib.ACE_STATUS_INVALID_ARGUMENT and "sigma is 0" in msg()
    assert lib.ace_heun_step(h[0], x, v, 4, 1.0, 0.5, o, stage) == lib.ACE_STATUS_OK and stage[0] == 1
    assert lib.ace_heun_step(h[0], x, v, 3, 1.0, 0.5, o, stage) == lib.ACE_STATUS_LENGTH_MISMATCH and "first stage had 4" in msg()
    assert lib.ace_heun_step(h[0], x, v, 4, 1.0, 0.0, o, stage) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert lib.ace_heun_step(h[0], o, v, 4, 1.0, 0.5, x, stage) == lib.ACE_STATUS_OK and stage[0] == 2
    lib.ace_heun_free(h[0])
    lib.ace_heun_free(ffi.NULL)

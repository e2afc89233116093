"""Schedules against the spec's tables (ace_step_v15.md §4.1–4.3) and against references written
here from the spec's formulas and rules (numpy / torch), never against the core's own output."""

import math

import numpy as np
import pytest
import torch

from acestep_runtime import schedule as S
from acestep_runtime._native import AceError, ffi, lib

# spec §4.1 table, 5 decimals
SPEC_TURBO = {
    1: [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125],
    2: [1.0, 0.93333, 0.85714, 0.76923, 0.66667, 0.54545, 0.4, 0.22222],
    3: [1.0, 0.95455, 0.9, 0.83333, 0.75, 0.64286, 0.5, 0.3],
}
# spec §4.1 VALID_TIMESTEPS, descending (the union of the three lists)
SPEC_VALID = [1.0, 0.954545, 0.933333, 0.9, 0.875, 0.857142, 0.833333, 0.769230, 0.75, 0.666666, 0.642857,
              0.625, 0.545454, 0.5, 0.4, 0.375, 0.3, 0.25, 0.222222, 0.125]


def shift_formula(t, s):
    t = np.asarray(t, dtype=np.float64)
    return s * t / (1 + (s - 1) * t)


def ref_turbo(s):
    return shift_formula(1 - np.arange(8) / 8, s)


def ref_valid_timesteps():
    vals = sorted({round(float(v), 15) for s in (1, 2, 3) for v in ref_turbo(s)}, reverse=True)
    return [float(v) for v in vals]


def ref_nearest_in_order(candidates, x):
    best, best_d = candidates[0], abs(candidates[0] - x)
    for c in candidates[1:]:
        if abs(c - x) < best_d:
            best, best_d = c, abs(c - x)
    return best


def ref_custom(ts, fallback_shift):
    ts = list(ts)
    while ts and ts[-1] == 0:
        ts.pop()
    if not ts:
        s = ref_nearest_in_order([1.0, 2.0, 3.0], fallback_shift)
        return ref_turbo(s)
    valid = [float(v) for v in ref_turbo_union_exact()]
    return np.array([ref_nearest_in_order(valid, t) for t in ts[:20]])


def ref_turbo_union_exact():
    # the 20 values, computed from the formula in f64, descending (dedup by exact value after rounding noise)
    out = []
    for s in (1, 2, 3):
        for v in ref_turbo(s):
            if not any(abs(v - u) < 1e-12 for u in out):
                out.append(float(v))
    return sorted(out, reverse=True)


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_turbo_tables_match_spec_and_formula(shift):
    got = S.turbo_schedule(shift)
    assert got.dtype == np.float32 and got.shape == (8,)
    np.testing.assert_allclose(got, SPEC_TURBO[shift], atol=5e-6, rtol=0)
    np.testing.assert_array_equal(got, ref_turbo(shift).astype(np.float32))


def test_valid_timesteps_reference_is_the_spec_list():
    # guards the test's own reference
    np.testing.assert_allclose(ref_turbo_union_exact(), SPEC_VALID, atol=1e-6)
    assert len(ref_turbo_union_exact()) == 20


@pytest.mark.parametrize(
    "requested, expected",
    [(1.0, 1.0), (1.5, 1.0), (1.51, 2.0), (2.0, 2.0), (2.5, 2.0), (2.51, 3.0), (0.01, 1.0), (7.0, 3.0)],
)
def test_turbo_shift_resolution_ties_to_the_earlier(requested, expected):
    assert S.turbo_shift(requested) == expected
    np.testing.assert_array_equal(S.turbo_schedule(requested), ref_turbo(expected).astype(np.float32))


def test_custom_spec_example():
    got = S.custom_schedule([0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0])
    np.testing.assert_allclose(got, [0.954545, 0.769231, 0.625, 0.5, 0.4, 0.3, 0.222222, 0.125], atol=1e-6)


@pytest.mark.parametrize(
    "value, expected",
    [(0.45, 0.5), (0.3875, 0.4), (0.5852272727272727, 0.625), (0.2361111111111111, 0.25)],
)
def test_custom_exact_ties_go_to_the_first_entry(value, expected):
    lo = max(v for v in ref_turbo_union_exact() if v < expected)
    assert abs(expected - value) == abs(value - lo), "not an exact f64 tie"
    np.testing.assert_allclose(S.custom_schedule([value]), [expected], rtol=1e-7)


def test_custom_rules_trailing_zeros_fallback_truncation_no_sort_no_dedup():
    np.testing.assert_array_equal(S.custom_schedule([0, 0, 0], 2.0), ref_turbo(2).astype(np.float32))
    np.testing.assert_array_equal(S.custom_schedule([], 1.5), ref_turbo(1).astype(np.float32))
    # an inner zero stays (snapped to 0.125); order and duplicates are kept
    np.testing.assert_allclose(S.custom_schedule([0.3, 0.9, 0.0, 0.9, 0.0, 0.0]), [0.3, 0.9, 0.125, 0.9], rtol=1e-7)
    long = np.linspace(1, 0.05, 27)
    got = S.custom_schedule(long)
    assert got.shape == (20,)
    np.testing.assert_array_equal(got, ref_custom(long, 3.0).astype(np.float32))


def test_custom_random_lists_match_the_reference_rules(rng):
    for _ in range(200):
        n = int(rng.integers(0, 30))
        ts = rng.random(n)
        ts[rng.random(n) < 0.1] = 0.0
        if n and rng.random() < 0.3:
            ts[-int(rng.integers(1, n + 1)):] = 0.0
        np.testing.assert_array_equal(S.custom_schedule(ts, 3.0), ref_custom(ts, 3.0).astype(np.float32))


@pytest.mark.parametrize("steps, shift", [(1, 1.0), (2, 3.0), (8, 3.0), (30, 1.0), (32, 2.5), (60, 3.0), (50, 0.7)])
def test_base_schedule_vs_numpy_and_torch(steps, shift):
    got = S.base_schedule(steps, shift)
    t = np.linspace(1.0, 0.0, steps + 1)
    if shift != 1.0:
        t = shift_formula(t, shift)
    np.testing.assert_allclose(got, t[:-1].astype(np.float32), rtol=0, atol=1e-7)
    # the fp32 reference computes the same in float32 torch ops: at most an ulp apart
    tt = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)
    if shift != 1.0:
        tt = shift * tt / (1 + (shift - 1) * tt)
    np.testing.assert_allclose(got, tt[:-1].numpy(), rtol=3e-7, atol=0)


def test_base_with_8_steps_and_shift_3_is_the_turbo_table():
    np.testing.assert_allclose(S.base_schedule(8, 3.0), SPEC_TURBO[3], atol=5e-6)


def ref_v1_sigmas(steps, shift, sigma_max=1.0, sigma_min=None):
    if sigma_min is None:
        one = np.float32(1.0) / np.float32(1000.0)
        s = np.float32(shift)
        sigma_min = float(s * one / (np.float32(1) + (s - np.float32(1)) * one))
    ts = np.linspace(sigma_max * 1000, sigma_min * 1000, steps)
    sig = ts / 1000
    sig = shift * sig / (1 + (shift - 1) * sig)
    return np.concatenate([sig.astype(np.float32), np.zeros(1, np.float32)])


@pytest.mark.parametrize("steps, shift", [(1, 3.0), (27, 3.0), (60, 3.0), (10, 1.0)])
def test_v1_sigmas_vs_numpy(steps, shift):
    got = S.v1_sigmas(steps, shift)
    assert got.shape == (steps + 1,) and got[-1] == 0
    np.testing.assert_allclose(got, ref_v1_sigmas(steps, shift), rtol=2e-7, atol=0)
    got = S.v1_sigmas(steps, shift, 0.9, 0.1)
    np.testing.assert_allclose(got, ref_v1_sigmas(steps, shift, 0.9, 0.1), rtol=2e-7, atol=0)


# spec §4.2 tables
SPEC_BF16 = {
    1: ([1.0, .875, .75, .625, .5, .375, .25, .125], [1000, 876, 752, 624, 500, 376, 250, 125]),
    2: ([1.0, .93359375, .85546875, .76953125, .66796875, .546875, .400390625, .22265625],
        [1000, 932, 856, 768, 668, 548, 400, 223]),
    3: ([1.0, .953125, .8984375, .83203125, .75, .64453125, .5, .30078125],
        [1000, 952, 900, 832, 752, 644, 500, 300]),
}


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_bf16_schedule_matches_the_spec_table(shift):
    t, x1000 = SPEC_BF16[shift]
    sched = S.turbo_schedule(shift)
    np.testing.assert_array_equal(S.bf16_timesteps(sched), np.array(t, np.float32))
    np.testing.assert_array_equal(S.bf16_timesteps_x1000(sched), np.array(x1000, np.float32))
    # and torch's own bf16 path: tensor in bf16, then t * 1000 in bf16
    tb = torch.tensor(ref_turbo(shift).tolist(), dtype=torch.bfloat16)
    np.testing.assert_array_equal(S.bf16_timesteps(sched), tb.float().numpy())
    np.testing.assert_array_equal(S.bf16_timesteps_x1000(sched), (tb * 1000).float().numpy())


def test_bf16_round_matches_torch_casting(rng):
    x = np.concatenate([
        rng.standard_normal(20000).astype(np.float32) * np.float32(10) ** rng.integers(-6, 6, 20000).astype(np.float32),
        # exact ties (lower 16 bits = 0x8000) of both parities
        ((np.arange(0x3F00, 0x4400, 3, dtype=np.uint32) << 16) | 0x8000).view(np.float32),
        np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-40, 1.0 + 2**-8, 1.0 + 3 * 2**-8], np.float32),
    ]).astype(np.float32)
    ours = S.bf16_round(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))
    assert np.isnan(S.bf16_round(np.array([np.nan], np.float32))[0])


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: S.turbo_schedule(0.0), "shift"),
        (lambda: S.turbo_schedule(-1.0), "shift"),
        (lambda: S.turbo_schedule(float("nan")), "shift"),
        (lambda: S.base_schedule(0, 1.0), "steps"),
        (lambda: S.base_schedule(10, float("inf")), "shift"),
        (lambda: S.v1_sigmas(0), "steps"),
    ],
)
def test_python_side_argument_errors(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()


def test_core_errors_name_the_problem():
    with pytest.raises(AceError, match=r"timesteps\[1\].*not a finite") as e:
        S.custom_schedule([0.5, float("nan")])
    assert e.value.name == "invalid_argument"
    with pytest.raises(AceError, match=r"timesteps\[0\] = 1.5 is outside \[0, 1\]"):
        S.custom_schedule([1.5])
    with pytest.raises(AceError, match=r"outside"):
        S.custom_schedule([-0.2, 0.5])
    with pytest.raises(AceError, match="sigma_min"):
        S.v1_sigmas(5, 3.0, 0.2, 0.5)


def test_raw_abi_bad_inputs():
    out = ffi.new("float[8]")
    n = ffi.new("size_t *")
    assert lib.ace_schedule_turbo(0.0, out, 8, n) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert lib.ace_schedule_turbo(3.0, out, 7, n) == lib.ACE_STATUS_LENGTH_MISMATCH
    assert lib.ace_schedule_turbo(3.0, ffi.NULL, 8, n) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_schedule_turbo(3.0, out, 8, ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_schedule_base(0, 1.0, out, 8, n) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert lib.ace_schedule_base(9, 1.0, out, 8, n) == lib.ACE_STATUS_LENGTH_MISMATCH
    assert lib.ace_schedule_custom(ffi.NULL, 3, 3.0, out, 8, n) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_schedule_custom(ffi.NULL, 0, 3.0, out, 8, n) == lib.ACE_STATUS_OK and n[0] == 8
    ts = ffi.new("double[]", [math.nan])
    assert lib.ace_schedule_custom(ts, 1, 3.0, out, 8, n) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert lib.ace_schedule_v1_sigmas(8, 3.0, 1.0, 0.0, out, 8, n) == lib.ACE_STATUS_LENGTH_MISMATCH
    d = ffi.new("double *")
    assert lib.ace_schedule_turbo_shift(math.inf, d) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert lib.ace_schedule_turbo_shift(2.0, ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_bf16_round(out, out, 8) == lib.ACE_STATUS_INVALID_ARGUMENT  # overlap
    assert lib.ace_bf16_round(out, ffi.new("float[8]"), 0) == lib.ACE_STATUS_LENGTH_MISMATCH

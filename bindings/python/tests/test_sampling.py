"""The core's LM sampler vs numpy references written here from spec §5.5 and docs/lm_prompts.md."""

import json

import numpy as np
import pytest

from acestep_runtime import AceError
from acestep_runtime._native import ffi, lib
from acestep_runtime.sampling import Sampler

MASK64 = (1 << 64) - 1


def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def uniform(seed, step):
    """The documented draw: u = (mix64(mix64(seed) ^ step) >> 11) * 2**-53."""
    return (mix64(mix64(seed) ^ step) >> 11) * 2.0**-53


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def allowed_set(logits, temperature, top_k, top_p):
    """vLLM order: temperature → top-k (ties at the k-th kept) → top-p (ascending cumsum ≤ 1−p masked)."""
    l = logits.astype(np.float64) / temperature
    if 0 < top_k < len(l):
        kth = np.sort(l)[::-1][top_k - 1]
        l = np.where(l >= kth, l, -np.inf)
    p = softmax(l)
    order = np.argsort(p, kind="stable")
    cum = np.cumsum(p[order])
    masked = cum <= 1 - top_p
    masked[-1] = False
    keep = set(order[~masked].tolist())
    return {i for i in keep if p[i] > 0}


def test_greedy_is_argmax_with_and_without_cfg():
    rng = np.random.default_rng(0)
    for cfg in (1.0, 2.0, 3.5):
        with Sampler(1, temperature=0.0, cfg_scale=cfg, vocab_size=1000) as s:
            for step in range(20):
                c = rng.standard_normal(1000).astype(np.float32)
                u = rng.standard_normal(1000).astype(np.float32)
                combined = u + np.float32(cfg) * (c - u) if cfg != 1.0 else c
                assert s.sample(c, u if cfg != 1.0 else None, step) == int(np.argmax(combined))


def test_cfg_math_matches_numpy_fp32():
    rng = np.random.default_rng(1)
    c = (rng.standard_normal(217204) * 8).astype(np.float32)
    u = (rng.standard_normal(217204) * 8).astype(np.float32)
    with Sampler(0, cfg_scale=2.0) as s:
        np.testing.assert_array_equal(s.cfg(c, u), u + np.float32(2.0) * (c - u))
    with Sampler(0, cfg_scale=1.0) as s:
        np.testing.assert_array_equal(s.cfg(c, None), c)


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (0, 0.5), (0, 0.9), (7, 0.8), (1, 1.0), (0, 1e-6)])
def test_support_matches_numpy_reference(top_k, top_p):
    rng = np.random.default_rng(top_k * 100 + int(top_p * 1000))
    logits = (rng.standard_normal(50) * 2).astype(np.float32)
    allowed = allowed_set(logits, 0.85, top_k, top_p)
    top = int(np.argmax(logits))
    assert top in allowed
    seen = set()
    with Sampler(3, temperature=0.85, top_k=top_k, top_p=top_p, cfg_scale=1.0, vocab_size=50) as s:
        for step in range(3000):
            seen.add(s.sample(logits, None, step))
    assert seen <= allowed, f"drawn outside the support: {seen - allowed}"
    assert top in seen
    assert seen == allowed  # every allowed token eventually drawn (small supports here)


def test_empirical_distribution_matches_softmax():
    logits = np.array([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0, 1.5], dtype=np.float32)
    temperature = 0.7
    p = softmax(logits.astype(np.float64) / temperature)
    n = 40000
    counts = np.zeros(8)
    with Sampler(11, temperature=temperature, top_p=1.0, cfg_scale=1.0, vocab_size=8) as s:
        for step in range(n):
            counts[s.sample(logits, None, step)] += 1
    freq = counts / n
    tol = 5 * np.sqrt(p * (1 - p) / n) + 1e-3
    assert np.all(np.abs(freq - p) < tol), (freq, p)


def test_draw_follows_the_documented_rng():
    """Full-vocabulary sampling walks the CDF in index order with u from (seed, step)."""
    rng = np.random.default_rng(2)
    logits = rng.standard_normal(300).astype(np.float32)
    seed = 987654321
    w = np.exp((logits.astype(np.float64) - logits.max()) / 0.9)
    cdf = np.cumsum(w)
    with Sampler(seed, temperature=0.9, top_p=1.0, cfg_scale=1.0, vocab_size=300) as s:
        agree = sum(s.sample(logits, None, step) == int(np.searchsorted(cdf, uniform(seed, step) * cdf[-1], "right"))
                    for step in range(500))
    assert agree >= 499  # f32 vs f64 weights may flip a draw that lands on a boundary


def test_reproducible_per_seed_and_step_and_steps_differ():
    rng = np.random.default_rng(3)
    c = rng.standard_normal(217204).astype(np.float32)
    u = rng.standard_normal(217204).astype(np.float32)
    with Sampler(42, temperature=1.0, top_p=0.95) as a, Sampler(42, temperature=1.0, top_p=0.95) as b:
        seq_a = [a.sample(c, u, step) for step in range(30)]
        # b is called out of order: a draw depends only on (seed, step)
        seq_b = [b.sample(c, u, step) for step in reversed(range(30))][::-1]
    assert seq_a == seq_b
    assert len(set(seq_a)) > 20
    with Sampler(43, temperature=1.0, top_p=0.95) as other:
        assert [other.sample(c, u, step) for step in range(30)] != seq_a


def test_masked_tokens_are_never_drawn():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal(100).astype(np.float32)
    allowed = rng.choice(100, 10, replace=False)
    masked = np.full(100, -np.inf, dtype=np.float32)
    masked[allowed] = logits[allowed]
    with Sampler(5, temperature=1.0, top_p=1.0, vocab_size=100) as s:
        drawn = {s.sample_logits(masked, step) for step in range(2000)}
    assert drawn <= set(allowed.tolist()) and len(drawn) == 10


# ---- bad input through the C ABI ----

def status_of(fn, *args):
    return fn(*args)


def create(config):
    out = ffi.new("AceSampler **")
    status = lib.ace_sampler_create(config.encode() if config is not None else ffi.NULL, out)
    return status, out[0]


@pytest.mark.parametrize("config,status_name,needle", [
    ("{bad", "invalid_json", "sampler config"),
    ('{"seed": 1, "temprature": 0.5}', "invalid_json", "temprature"),
    ('{"temperature": 0.5}', "invalid_json", "seed"),
    ('{"seed": 1, "temperature": -0.1}', "invalid_argument", "temperature"),
    ('{"seed": 1, "top_p": 0}', "invalid_argument", "top_p"),
    ('{"seed": 1, "top_p": 1.5}', "invalid_argument", "top_p"),
    ('{"seed": 1, "cfg_scale": 0.5}', "invalid_argument", "cfg_scale"),
    ('{"seed": 1, "vocab_size": 0}', "invalid_argument", "vocab_size"),
    ('{"seed": -1}', "invalid_json", "seed"),
    ('{"seed": 1, "top_k": "5"}', "invalid_json", "top_k"),
    ('{"seed": 1, "temperature": 1e-45}', "invalid_argument", "temperature"),
])
def test_bad_configs(config, status_name, needle):
    with pytest.raises(AceError) as err:
        Sampler.from_json(config)
    assert err.value.name == status_name
    assert needle in err.value.message


def test_null_pointers_and_lengths_through_the_abi():
    from acestep_runtime._native import last_error
    status, _ = create(None)
    assert status == lib.ACE_STATUS_NULL_POINTER and "config_json" in last_error()[2]
    assert lib.ace_sampler_create(b'{"seed": 1}', ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    status, s = create('{"seed": 1, "vocab_size": 16}')
    assert status == 0
    try:
        buf = np.zeros(16, dtype=np.float32)
        p = ffi.cast("const float *", ffi.from_buffer(buf))
        tok = ffi.new("uint32_t *")
        assert lib.ace_sampler_sample(ffi.NULL, p, p, 16, 0, tok) == lib.ACE_STATUS_NULL_POINTER
        assert lib.ace_sampler_sample(s, ffi.NULL, p, 16, 0, tok) == lib.ACE_STATUS_NULL_POINTER
        assert lib.ace_sampler_sample(s, p, ffi.NULL, 16, 0, tok) == lib.ACE_STATUS_NULL_POINTER
        assert "uncond" in last_error()[2]
        assert lib.ace_sampler_sample(s, p, p, 16, 0, ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
        assert lib.ace_sampler_sample(s, p, p, 15, 0, tok) == lib.ACE_STATUS_LENGTH_MISMATCH
        assert "vocab" in last_error()[2]
        assert lib.ace_sampler_sample(s, p, p, 16, 0, tok) == 0
    finally:
        lib.ace_sampler_free(s)
    lib.ace_sampler_free(ffi.NULL)  # no-op


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_rejected(bad):
    c = np.zeros(16, dtype=np.float32)
    u = np.zeros(16, dtype=np.float32)
    u[7] = bad
    with Sampler(1, vocab_size=16) as s:
        with pytest.raises(AceError) as err:
            s.sample(c, u, 0)
    assert err.value.name == "invalid_argument"
    assert "uncond" in err.value.message and "7" in err.value.message


def test_sample_logits_rejects_nan_and_all_masked():
    with Sampler(1, vocab_size=4) as s:
        with pytest.raises(AceError) as err:
            s.sample_logits(np.array([0, np.nan, 0, 0], dtype=np.float32), 0)
        assert err.value.name == "invalid_argument"
        with pytest.raises(AceError) as err:
            s.sample_logits(np.full(4, -np.inf, dtype=np.float32), 0)
        assert err.value.name == "invalid_state"


def test_python_wrapper_checks_before_calling():
    with Sampler(1, vocab_size=8) as s:
        with pytest.raises(TypeError):
            s.sample(np.zeros(8, dtype=np.float64), None, 0)
        with pytest.raises(ValueError):
            s.sample(np.zeros(9, dtype=np.float32), None, 0)
        with pytest.raises(ValueError):
            s.sample(np.zeros(16, dtype=np.float32)[::2], None, 0)
    with pytest.raises(ValueError):
        s.sample(np.zeros(8, dtype=np.float32), np.zeros(8, dtype=np.float32), 0)


# ---- the combined step with the FSM (ace_lm_step) ----

pytest_plugins = ["conftest_lm"]


def test_lm_step_equals_cfg_mask_sample_accept(lm_tokenizer_dir):
    """ace_lm_step = ace_sampler_cfg → FSM mask → ace_sampler_sample_logits → FSM accept."""
    from acestep_runtime.fsm import LmFsm
    from acestep_runtime.tokenizer import Tokenizer

    tok = Tokenizer.from_file(lm_tokenizer_dir / "tokenizer.json")
    vocab = tok.vocab_size
    config = {"phase": "codes", "target_duration": 2.0}
    think_end = tok.token_to_id("</think>")
    rng = np.random.default_rng(9)
    with Sampler(77, vocab_size=vocab) as fused, Sampler(77, vocab_size=vocab) as split, \
            LmFsm(tok, config) as fsm_a, LmFsm(tok, config) as fsm_b:
        fsm_a.reset([think_end])
        fsm_b.reset([think_end])
        tokens = []
        for step in range(11):
            c = rng.standard_normal(vocab).astype(np.float32)
            u = rng.standard_normal(vocab).astype(np.float32)
            t_fused = fused.step_with_fsm(fsm_a, c, u, step)
            masked = fsm_b.masked(split.cfg(c, u))
            t_split = split.sample_logits(masked, step)
            fsm_b.accept(t_split)
            assert t_fused == t_split
            tokens.append(t_fused)
            if fsm_a.completed:
                break
        assert fsm_a.completed and fsm_b.completed
    code0 = tok.token_to_id("<|audio_code_0|>")
    # target 2 s → exactly 10 codes, then EOS
    assert all(code0 <= t < code0 + 64000 for t in tokens[:10])
    assert tokens[10] == tok.token_to_id("<|im_end|>")


def test_cfg_overflow_is_rejected():
    c = np.zeros(4, dtype=np.float32)
    u = np.zeros(4, dtype=np.float32)
    c[2], u[2] = 3e38, -3e38
    with Sampler(1, vocab_size=4, cfg_scale=2.0) as s:
        with pytest.raises(AceError) as err:
            s.sample(c, u, 0)
    assert err.value.name == "invalid_argument" and "index 2" in err.value.message

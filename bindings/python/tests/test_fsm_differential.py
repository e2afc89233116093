"""Differential test: the core's FSM against the official `MetadataConstrainedLogitsProcessor`
(PyPI `ace-step15-fork==20260212`, byte-identical to official commit e5b6651), driven with the same
tokenizer and the same random logits, comparing the allowed-token sets (and kept values) at every
step of ≥ 200 runs.

The one intended divergence (spec §10.10, docs/lm_fsm.md): in CODES_GENERATION the official PyPI code
also allows <|audio_code_N|> for N ≥ 64000; ours allows only 0..63999. The comparison removes exactly
those ids from the official set in that state and nowhere else. Runs end at EOS (after which the two
differ by design: ours is COMPLETED, the official one keeps counting codes).
"""

from __future__ import annotations

import json
from pathlib import Path
import random

import numpy as np
import pytest

pytest_plugins = ["conftest_lm"]

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("loguru")
clp = pytest.importorskip("acestep.constrained_logits_processor", reason="pip install --no-deps ace-step15-fork==20260212")

from acestep_runtime.fsm import LmFsm  # noqa: E402
from acestep_runtime.tokenizer import Tokenizer  # noqa: E402

GENRES_FILE = str(__import__("pathlib").Path(clp.__file__).with_name("genres_vocab.txt"))
N_RUNS_PHASE1_FREE = 70
N_RUNS_PHASE1_USER = 60
N_RUNS_BATCHED = 10
N_RUNS_PHASE2_TARGET = 35
N_RUNS_PHASE2_FREE = 25
N_RUNS_PHASE2_FULL = 15
MAX_STEPS = 700


@pytest.fixture(scope="module")
def official(lm_tokenizer_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(lm_tokenizer_dir))
    proc = clp.MetadataConstrainedLogitsProcessor(tokenizer=hf, enabled=True, debug=False, skip_genres=True)
    # The processor fills 217k-entry tensors every step; torch's thread pool only adds overhead here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield hf, proc
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ours(lm_tokenizer_dir):
    tok = Tokenizer(lm_tokenizer_dir / "tokenizer.json")
    yield tok
    tok.close()


class Driver:
    """Builds biased random logits so that runs visit the interesting transitions."""

    def __init__(self, hf, seed: int):
        self.rng = np.random.default_rng(seed)
        self.rnd = random.Random(seed)
        self.hf = hf
        enc = lambda s: hf.encode(s, add_special_tokens=False)  # noqa: E731
        self.newline_tokens = [enc("\n")[0], enc(".\n")[-1], enc(",\n")[-1]]
        self.indent_tokens = [enc("  ")[0], enc(" ")[0], enc("\t")[0]]
        self.field_names = ["duration", "keyscale", "language", "timesignature", "bpm", "mood", "Caption"]
        self.eos = hf.eos_token_id
        self.plan: list[int] = []
        self.caption_len = 0
        self.suppress_newlines: np.ndarray | None = None

    def logits(self, state: str, vocab: int, caption_ending: bool, codes_count: int) -> np.ndarray:
        l = self.rng.random(vocab, dtype=np.float32) * np.float32(4.0)
        boost = np.float32(12.0)
        if self.suppress_newlines is not None and state == "CAPTION_VALUE":
            l[self.suppress_newlines] -= boost
        if self.plan:
            l[self.plan.pop(0)] += boost
        elif state == "CAPTION_VALUE" and caption_ending:
            l[self.hf.encode(":", add_special_tokens=False)[0]] += boost
        elif state == "CAPTION_VALUE":
            self.caption_len += 1
            if self.caption_len >= self.caption_target:
                self.caption_len = 0
                self.caption_target = self.rnd.choice([1, 3, 8, 20])
                l[self.rnd.choice(self.newline_tokens)] += boost
                # The token after the newline: an indent (caption continues) or a field name.
                if self.rnd.random() < 0.35:
                    self.plan = [self.rnd.choice(self.indent_tokens)]
                else:
                    name = self.rnd.choice(self.field_names)
                    self.plan = self.hf.encode(name + ":", add_special_tokens=False)
        elif state == "CODES_GENERATION" and codes_count >= self.codes_target:
            l[self.eos] += boost
        return l


def run_one(hf, proc, tok, cfg: dict, official_setup: dict, prompt: list[int], driver: Driver,
            code_ids_beyond: np.ndarray) -> tuple[int, set]:
    """One generation with both FSMs; asserts equal allowed sets each step. Returns (steps, states seen)."""
    proc.reset()
    proc.set_max_duration(official_setup.get("max_duration", 600))
    proc.set_target_duration(official_setup.get("target_duration"))
    proc.set_user_metadata(official_setup.get("user_metadata"))
    proc.set_stop_at_reasoning(official_setup.get("stop_at_reasoning", False))
    proc.set_skip_genres(True)
    proc.set_skip_caption(official_setup.get("skip_caption", False))
    proc.set_skip_language(official_setup.get("skip_language", False))
    proc.set_generation_phase(official_setup.get("phase", "cot"))

    fsm = LmFsm(tok, cfg)
    fsm.reset(prompt)
    ids = list(prompt)
    seen = set()
    vocab = tok.vocab_size
    for step in range(MAX_STEPS):
        st = fsm.state()
        state_before = proc.state.name
        after_newline = proc.caption_after_newline  # read before the call, which clears it
        seen.add(state_before)
        raw = driver.logits(state_before, vocab, proc.caption_ending, proc.codes_count)
        off = proc(torch.tensor([ids], dtype=torch.long), torch.from_numpy(raw.copy()).unsqueeze(0))[0].numpy()
        mine = fsm.masked(raw)
        off_ok = np.isfinite(off)
        # The official processor enters CODES_GENERATION inside this call when the prompt has </think>.
        if proc.state.name == "CODES_GENERATION":
            off_ok[code_ids_beyond] = False  # the documented divergence (spec §10.10)
        my_ok = np.isfinite(mine)
        if not np.array_equal(off_ok, my_ok):
            only_off = np.flatnonzero(off_ok & ~my_ok)[:10].tolist()
            only_mine = np.flatnonzero(my_ok & ~off_ok)[:10].tolist()
            pytest.fail(
                f"step {step}, official state {state_before} / ours {st['state']}: allowed sets differ "
                f"(official only: {only_off} {[hf.decode([t]) for t in only_off]}, ours only: {only_mine} "
                f"{[hf.decode([t]) for t in only_mine]}); text so far: {hf.decode(ids[len(prompt):])!r}; cfg {cfg}"
            )
        assert np.array_equal(mine[my_ok], raw[my_ok]), "allowed logits must keep their values"
        assert st["state"] == state_before or state_before == "THINK_TAG" and st["state"] == "CODES_GENERATION", (
            f"step {step}: official {state_before} vs ours {st['state']}"
        )
        if not my_ok.any():
            break
        token = int(np.argmax(np.where(my_ok, mine, -np.inf)))
        ids.append(token)
        proc.update_state(token)
        fsm.accept(token)
        if state_before == "CAPTION_VALUE" and proc.state.name != "CAPTION_VALUE":
            seen.add(f"CAPTION_VALUE->{proc.state.name}")
        if state_before == "CAPTION_VALUE" and proc.caption_ending:
            seen.add("caption_ending")
        if after_newline and proc.state.name == "CAPTION_VALUE" and not proc.caption_ending:
            seen.add("caption_continued_after_newline")
        if token in (driver.eos, hf.pad_token_id):
            assert fsm.completed
            break
    return step, seen


def random_user_metadata(rnd: random.Random, examples: list[dict]) -> dict:
    ex = rnd.choice(examples)
    md = {}
    for key in ("bpm", "duration", "keyscale", "language", "timesignature"):
        v = ex.get(key)
        if v not in (None, "") and rnd.random() < 0.6:
            if key == "duration":
                v = int(v)
            md[key] = str(v)
    if rnd.random() < 0.25 and ex.get("caption"):
        md["caption"] = ex["caption"].split(". ")[0]
    return md


def test_fsm_matches_official_processor(official, ours, example_requests):
    hf, proc = official
    tok = ours
    rnd = random.Random(2026)
    examples = example_requests
    beyond = np.array([tok.token_to_id(f"<|audio_code_{n}|>") for n in range(64000, 65535)], dtype=np.int64)
    assert beyond.size == 1535 and beyond.min() > 151668
    think_end_prompt = hf.encode(
        "<|im_start|>user\n# Caption\nx\n<|im_end|>\n<|im_start|>assistant\n<think>\nbpm: 90\n</think>\n\n",
        add_special_tokens=False,
    )
    open_prompt = hf.encode("<|im_start|>user\n# Caption\nx\n<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)

    # Every base-vocabulary token whose text contains "\n" (byte-level "Ċ").
    newline_ids = np.array(sorted(i for t, i in hf.get_vocab().items() if "Ċ" in t and i < 151643), dtype=np.int64)
    runs = []
    for i in range(N_RUNS_PHASE1_FREE):
        s = {"phase": "cot", "stop_at_reasoning": True, "skip_caption": rnd.random() < 0.15,
             "skip_language": rnd.random() < 0.2}
        if i % 5 == 0:
            s["max_duration"] = 240  # the GPU-tier limit path (set_max_duration)
        runs.append(("p1", s, open_prompt))
    for i in range(N_RUNS_PHASE1_USER):
        s = {"phase": "cot", "stop_at_reasoning": True, "skip_caption": rnd.random() < 0.2,
             "skip_language": rnd.random() < 0.2, "user_metadata": random_user_metadata(rnd, examples)}
        runs.append(("p1u", s, open_prompt))
    for i in range(N_RUNS_BATCHED):
        # Ours gets the batched flag (plus settings it must override); the official processor gets
        # what its batched setup (`_setup_constrained_processor(is_batch=True)`) applies.
        ours_cfg = {"phase": "cot", "batched": True, "stop_at_reasoning": True,
                    "user_metadata": random_user_metadata(rnd, examples)}
        official_cfg = {"phase": "cot", "skip_caption": True, "skip_language": True}
        runs.append(("p1batch", (ours_cfg, official_cfg), open_prompt))
    for i in range(N_RUNS_PHASE2_TARGET):
        s = {"phase": "codes", "target_duration": rnd.choice([1.0, 2.5, 4.2, 7.0, 10.0])}
        runs.append(("p2t", s, think_end_prompt))
    for i in range(N_RUNS_PHASE2_FREE):
        runs.append(("p2", {"phase": "codes"}, think_end_prompt))
    for i in range(N_RUNS_PHASE2_FULL):
        # Codes phase whose prompt has no </think>: the metadata FSM runs, then </think>, then codes.
        s = {"phase": "codes", "target_duration": rnd.choice([None, 2.0])}
        runs.append(("p2full", s, open_prompt))
    assert len(runs) >= 200

    total_steps = 0
    seen_all: set[str] = set()
    jumps = 0
    import time

    t0 = time.perf_counter()
    for i, (kind, setup, prompt) in enumerate(runs):
        if isinstance(setup, tuple):
            cfg, setup = dict(setup[0]), setup[1]
        else:
            cfg = {k: v for k, v in setup.items() if v is not None}
        cfg["skip_genres"] = True
        # The official processor always loads its packaged genres vocabulary (used if the caption
        # look-ahead jumps to "genres:"); give ours the same file.
        cfg["genres_file"] = GENRES_FILE
        driver = Driver(hf, seed=1000 + i)
        driver.caption_target = driver.rnd.choice([1, 3, 6, 12])
        if i == 5:
            # One run writes a caption without newlines until the 512-token cap forces one.
            driver.caption_target = 10_000
            driver.suppress_newlines = newline_ids
        driver.codes_target = driver.rnd.choice([0, 3, 15])
        if i % 40 == 7:
            # A few runs jump from the caption to "genres:" (the slow, vocabulary-wide genres rule).
            driver.field_names = ["genres"]
        steps, seen = run_one(hf, proc, tok, cfg, setup, prompt, driver, beyond)
        if i == 5:
            assert steps > 512, "the caption-cap run must reach 512 caption tokens"
        total_steps += steps + 1
        seen_all |= seen
        print(f"run {i} {kind}: {steps + 1} steps, t={time.perf_counter() - t0:.1f}s")
    # The runs must have visited every state the default configuration uses.
    for s in ["THINK_TAG", "NEWLINE_AFTER_THINK", "BPM_NAME", "BPM_VALUE", "CAPTION_NAME", "CAPTION_VALUE",
              "DURATION_NAME", "DURATION_VALUE", "KEYSCALE_NAME", "KEYSCALE_VALUE", "LANGUAGE_NAME",
              "LANGUAGE_VALUE", "TIMESIG_NAME", "TIMESIG_VALUE", "THINK_END_TAG", "CODES_GENERATION"]:
        assert s in seen_all, f"no run reached {s}"
    # ... and the caption look-ahead paths: indented continuation, free run, jumps by field name
    # (including "genres:" and an unknown name, which falls back to the normal next field).
    for s in ["caption_continued_after_newline", "caption_ending", "CAPTION_VALUE->DURATION_VALUE",
              "CAPTION_VALUE->KEYSCALE_VALUE", "CAPTION_VALUE->LANGUAGE_VALUE", "CAPTION_VALUE->TIMESIG_VALUE",
              "CAPTION_VALUE->GENRES_VALUE", "CAPTION_VALUE->DURATION_NAME"]:
        assert s in seen_all, f"no run took the path {s}"
    assert total_steps > 3000
    print(f"{len(runs)} runs, {total_steps} steps compared")


# ---- the generation driver's LM phases (issue 15) ----

class Recorder:
    """A host loop that records each LM call's inputs and submitted logits."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.calls = []
        run_values = pipe.sessions.run_values

        def recording(name, feeds, output_names):
            out = run_values(name, feeds, output_names)
            if name.startswith("lm_"):
                ids = feeds["input_ids"]
                ids = ids.numpy() if hasattr(ids, "numpy") else np.array(ids)
                self.calls.append((name, ids.copy(), out[0].numpy().copy()))
            return out

        pipe.sessions.run_values = recording

    def close(self):
        del self.pipe.sessions.run_values


def configure(proc, phase_setup: dict):
    """Sets the official processor up as the driver documents its phase (genres stay skipped in
    these phases, so its packaged genres vocabulary plays no part)."""
    proc.reset()
    proc.set_max_duration(600)
    proc.set_target_duration(phase_setup.get("target_duration"))
    proc.set_user_metadata(phase_setup.get("user_metadata"))
    proc.set_stop_at_reasoning(phase_setup.get("stop_at_reasoning", False))
    proc.set_skip_genres(phase_setup.get("skip_genres", True))
    proc.set_skip_caption(phase_setup.get("skip_caption", False))
    proc.set_skip_language(phase_setup.get("skip_language", False))
    proc.set_generation_phase(phase_setup["phase"])
    return proc


def replay_phase(hf, proc, calls, prompt_ids, seed, first_draw, cfg_scale, fsm_config, tok):
    """Replays one phase: official allowed set vs ours (LmFsm with the driver's documented
    config), and the core's sampler + FSM must draw exactly the driver's tokens."""
    import torch

    from acestep_runtime.fsm import LmFsm
    from acestep_runtime.sampling import Sampler

    beyond = np.arange(151669 + 64000, 151669 + 65535)
    sampler = Sampler(seed, temperature=0.85, top_p=0.9, top_k=0, cfg_scale=cfg_scale)
    fsm = LmFsm(tok, fsm_config)
    fsm.reset(prompt_ids)
    mirror = LmFsm(tok, fsm_config)  # stepped by step_with_fsm
    mirror.reset(prompt_ids)
    ids = list(prompt_ids)
    tokens = []
    for k, (_, _, logits) in enumerate(calls):
        cond = logits[0]
        uncond = logits[1] if logits.shape[0] == 2 else None
        combined = sampler.cfg(cond, uncond)
        off = proc(torch.tensor([ids]), torch.from_numpy(combined.copy()).unsqueeze(0))[0].numpy()
        off_ok = np.isfinite(off)
        if proc.state.name == "CODES_GENERATION":
            off_ok[beyond] = False  # docs/lm_fsm.md divergence 1
        mine_ok = np.isfinite(fsm.masked(combined))
        assert np.array_equal(off_ok, mine_ok), f"draw {k}: allowed sets differ (state {proc.state.name})"
        token = sampler.step_with_fsm(mirror, cond, uncond, first_draw + k)
        assert off_ok[token], f"draw {k}: token {token} is not allowed by the official processor"
        tokens.append(token)
        ids.append(token)
        proc.update_state(token)
        fsm.accept(token)
    return tokens


def test_driver_lm_phases_match_the_official_processor(official, ours, lm_tokenizer_dir):
    """The generation driver on the tiny package (random-weight LM, same tokenizer file as the
    harness's): along the sequences it actually generated, the official processor's allowed sets
    on the CFG-combined logits the host saw equal our FSM's, every drawn token is allowed, and the
    core's public sampler + FSM (`ace_lm_step`) redraw exactly the driver's tokens."""
    from acestep_runtime.pipeline import Pipeline
    from tools.parity.fixtures import tiny_package_dir

    hf, proc = official
    tok = ours
    package_tok = tiny_package_dir() / "tokenizer" / "lm" / "tokenizer.json"
    assert package_tok.read_bytes() == (lm_tokenizer_dir / "tokenizer.json").read_bytes()
    pipe = Pipeline.open(tiny_package_dir(), device="cpu", threads=1)
    rec = Recorder(pipe)
    try:
        # The official defaults (thinking on a package with an LM, CoT caption on, CFG 2, T 0.85, top-p
        # 0.9); with random weights the caption may run long, so the text phase is capped.
        req = {"caption": "a bright synth pop song", "lyrics": "[chorus]\nla", "duration": 10, "seed": 5,
               "lm_max_text_tokens": 80}
        result = pipe.generate(req)
    finally:
        rec.close()
        pipe.close()
    lm = result.lm
    assert lm["settings"]["thinking"] is True
    assert lm["settings"]["lm_temperature"] == 0.85 and lm["settings"]["lm_cfg_scale"] == 2.0
    assert lm["settings"]["lm_top_p"] == 0.9 and lm["settings"]["lm_top_k"] == 0
    assert lm["phases"][0]["text"].startswith("<think>\nbpm: ") and lm["phases"][0]["tokens"] <= 80
    caption = lm["metadata"].get("caption")
    if caption:
        assert f"# Caption\n{caption}\n" in result.prompts["dit_caption"]
    assert lm["code_count"] == 50 and all(0 <= c <= 63999 for c in lm["audio_codes"])
    calls = rec.calls
    n1 = lm["phases"][0]["tokens"]
    phase1, phase2 = calls[:n1], calls[n1:]
    assert phase1[0][0] == "lm_prefill" and phase2[0][0] == "lm_prefill" and len(phase2) == lm["code_count"] + 1
    # Each decode call feeds the token drawn from the previous call's logits, to both rows.
    for calls_of_phase in (phase1, phase2):
        for (_, _, _), (_, ids, _) in zip(calls_of_phase, calls_of_phase[1:]):
            assert ids.shape == (2, 1) and ids[0, 0] == ids[1, 0]
    # Row 0 of the prefill is the cond prompt, left-padded: drop the pad ids in front.
    pad = 151643
    row0 = phase1[0][1][0].tolist()
    while row0 and row0[0] == pad:
        row0.pop(0)
    seed = result.seeds[0]
    tokens1 = replay_phase(
        hf, configure(proc, {"phase": "cot", "stop_at_reasoning": True,
                                    "user_metadata": {"duration": 10}}),
        phase1, row0, seed, 0, 2.0,
        {"phase": "cot", "stop_at_reasoning": True, "user_metadata": {"duration": 10}}, tok)
    decoded1 = [int(c[1][0, 0]) for c in phase1[1:]]
    assert tokens1[:-1] == decoded1 and len(tokens1) == n1
    assert (tokens1[-1] == 151645) == (lm["phases"][0]["stopped_by"] == "eos")
    row0 = phase2[0][1][0].tolist()
    while row0 and row0[0] == pad:
        row0.pop(0)
    assert 151668 in row0  # </think> in the phase-2 prompt: the FSM starts in CODES_GENERATION
    tokens2 = replay_phase(hf, configure(proc, {"phase": "codes", "target_duration": 10}),
                           phase2, row0, seed, n1, 2.0, {"phase": "codes", "target_duration": 10}, tok)
    assert [t - 151669 for t in tokens2[:-1]] == lm["audio_codes"] and tokens2[-1] == 151645



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

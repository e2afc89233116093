"""Fixtures shared by the tokenizer and FSM tests: generated Qwen3 tokenizers (cached under
fixtures/generated/, never committed) and a corpus of realistic strings."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ROOT / "fixtures" / "generated"
EXAMPLES = Path(__file__).resolve().parents[3] / "fixtures" / "official_examples"


def generated_tokenizer_dir(name: str, audio_codes: bool, append_eos: bool = False) -> Path:
    """Builds the tokenizer once (cached); rebuilt when the generator script is newer."""
    from tools import make_qwen_tokenizer as mk

    out = GENERATED / name
    path = out / "tokenizer.json"
    src = Path(mk.__file__)
    if not path.exists() or path.stat().st_mtime < src.stat().st_mtime:
        mk.build_tokenizer(out, audio_codes=audio_codes, append_eos=append_eos)
    return out


@pytest.fixture(scope="session")
def lm_tokenizer_dir() -> Path:
    """The 217,204-token LM tokenizer (Qwen3 + audio codes)."""
    return generated_tokenizer_dir("qwen3_lm_tokenizer", audio_codes=True)


@pytest.fixture(scope="session")
def text_tokenizer_dir() -> Path:
    """The Qwen3 text tokenizer without audio codes, appending <|endoftext|> (text encoder)."""
    return generated_tokenizer_dir("qwen3_text_tokenizer", audio_codes=False, append_eos=True)


def example_texts() -> list[str]:
    """Captions, lyrics and lyric lines of the official examples (many languages)."""
    texts: list[str] = []
    for sub in ("text2music", "simple_mode"):
        d = EXAMPLES / sub
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.json")):
            data = json.loads(f.read_text(encoding="utf-8"))
            for key in ("caption", "lyrics", "description"):
                v = data.get(key)
                if isinstance(v, str) and v:
                    texts.append(v)
                    texts.extend(line for line in v.split("\n") if line.strip())
    return texts


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|audio_code_0|>",
            "<|audio_code_63999|>", "<|audio_code_65534|>", "<tool_call>", "<|fim_prefix|>"]
ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,:;'!?-_`\"()[]{}#♯♭\t\n\r") + [
    "  ", "\n\n", " \n", "é", "ß", "ø", "ı", "İ", "ω", "ж", "日", "本", "語", "한", "국", "ا", "ل", "ह", "ि",
    "🎵", "🎸", "\u0301", "e\u0301", "\u00a0", "\u3000", "’", "…", "'s", "'ll", "'T",
]


def make_strings(n: int, seed: int, with_specials: bool) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        k = rnd.randint(0, 24)
        pieces = [rnd.choice(ALPHABET) for _ in range(k)]
        if with_specials and rnd.random() < 0.5:
            for _ in range(rnd.randint(1, 3)):
                pieces.insert(rnd.randint(0, len(pieces)), rnd.choice(SPECIALS))
        out.append("".join(pieces))
    return out


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """≥ 1000 strings: official examples, fixed edge cases, random mixes (some with special tokens)."""
    fixed = ["", "\n", " ", "  ", "hello world", "bpm: 120", "keyscale: G♯ minor", "language: yue",
             "<think>\nbpm: 83\ncaption: x\n</think>\n\n", "<|im_start|>system\n# Instruction\n<|im_end|>\n",
             "<|audio_code_5|><|audio_code_63999|>", "don't I'll we're", "1234567890", "A\r\nB\rC"]
    texts = fixed + example_texts()
    texts += make_strings(1200, seed=7, with_specials=True)
    return texts


@pytest.fixture(scope="session")
def example_requests() -> list[dict]:
    """The official text2music example requests (bpm, duration, keyscale, ...), or a small built-in
    set when the examples directory is absent."""
    d = EXAMPLES / "text2music"
    out = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(d.glob("*.json"))] if d.is_dir() else []
    return out or [
        {"caption": "A calm piano ballad. Soft strings join later", "bpm": 72, "duration": 95,
         "keyscale": "E♭ major", "language": "en", "timesignature": "4"},
        {"caption": "Energetic J-rock with driving drums", "bpm": 168, "duration": 200,
         "keyscale": "F# minor", "language": "ja", "timesignature": "3"},
    ]


@pytest.fixture(scope="session")
def generated_strings():
    """`make_strings(n, seed, with_specials)`: reproducible random strings."""
    return make_strings

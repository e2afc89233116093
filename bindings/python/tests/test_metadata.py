"""LM-output parsing in the core vs a parser written here from the spec's rules (§5.3)."""

import random
import re

import pytest

from acestep_runtime.metadata import format_cot, parse_lm_output

KNOWN = {"bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature"}


def reference_parse(text: str) -> dict:
    """Spec §5.3, written independently: reasoning text, field lines, continuation, values, codes."""
    codes = [min(max(int(m), 0), 63999) for m in re.findall(r"<\|audio_code_([0-9]+)\|>", text)]
    m = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    reasoning = m.group(1).strip() if m else ""
    if not reasoning:
        reasoning = text.split("<|audio_code_")[0].strip()
    meta = {}
    fields = []  # (key, [value lines])
    for line in reasoning.split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            key, first = line.split(":", 1)
            fields.append((key.strip().lower(), [first] if first.strip() else []))
        elif line.startswith((" ", "\t")) and fields:
            fields[-1][1].append(line)
    for key, lines in fields:
        if not key or not lines or key not in KNOWN:
            continue
        value = "\n".join(lines)
        if key in ("bpm", "duration"):
            try:
                meta[key] = int(value.strip())
            except ValueError:
                meta[key] = value.strip()
        elif key == "caption":
            meta[key] = " ".join(l.strip() for l in value.split("\n") if l.strip())
        else:
            meta[key] = value.strip()
    return {"metadata": meta, "codes": codes}


PHASE1 = (
    "<think>\nbpm: 83\ncaption: An upbeat and anthemic pop-rock track driven by bright, slightly overdriven\n"
    "  guitars and a soaring vocal.\nduration: 88\nkeyscale: G major\nlanguage: fr\ntimesignature: 4\n"
)
PHASE2 = "<think>\nbpm: 120\nduration: 30\n</think>\n\n" + "".join(f"<|audio_code_{n}|>" for n in (0, 5, 63999, 64000, 99999999999999999999)) + "<|im_end|>"

CASES = [
    PHASE1,
    PHASE2,
    "<think>\n</think>\nbpm: 90\n<|audio_code_7|>",          # empty think → text before codes
    "bpm: ninety\nduration:  12 \nKeyScale : C major\n",     # non-int, spacing, key case
    "<think>\ncaption:\n  first line\n\n  second line\n\tthird\nlanguage: ja\n</think>",
    "<think>\n:orphan\n  continuation\nunknown: x\ngenres: folk, rock\n</think>",
    "<think>\nbpm: 1_000\nduration: +45\ntimesignature: 3/4\n</think>",
    "no metadata at all",
    "",
    "<think>\nbpm: 100\nbpm: 110\n</think>",                  # last wins
    "<think>\ncaption: a: b: c\n   <tag skipped>\n   more\n</think>",
]


@pytest.mark.parametrize("text", CASES)
def test_parse_matches_reference(text):
    assert parse_lm_output(text) == reference_parse(text)


def random_outputs(n, seed=5):
    rng = random.Random(seed)
    pieces = ["bpm: 120", "bpm:  7x", "caption: soft piano", "  and strings", "\tmore", "duration: 61",
              "keyscale: E♭ minor", "language: zh", "timesignature: 6", "genres: jazz", "Caption: Upper",
              "<think>", "</think>", "", " ", "noise without colon", "  orphan indent", "k: v: w",
              "<|audio_code_12|>", "<|audio_code_70000|>", "caption: 中文 描述", "  🎸 line"]
    for _ in range(n):
        yield "\n".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))


@pytest.mark.parametrize("text", list(random_outputs(300)))
def test_random_outputs_match_reference(text):
    assert parse_lm_output(text) == reference_parse(text)


def test_round_trip_cot_then_parse():
    meta = {"bpm": 83, "caption": "An upbeat and anthemic pop-rock track driven by bright, slightly "
            "overdriven guitars, pounding drums and a big chorus that lifts into the night sky",
            "duration": 88, "keyscale": "G major", "language": "fr", "timesignature": "4"}
    cot = format_cot(meta)
    assert "\n  " in cot  # folded
    parsed = parse_lm_output(cot + "\n\n<|audio_code_1|>")
    assert parsed["metadata"] == meta
    assert parsed["codes"] == [1]


pytest_plugins = ["conftest_lm"]


def test_finalize_metadata_decodes_then_parses(lm_tokenizer_dir):
    from acestep_runtime.metadata import finalize_metadata
    from acestep_runtime.tokenizer import Tokenizer

    tok = Tokenizer.from_file(lm_tokenizer_dir / "tokenizer.json")
    text = PHASE1 + "</think>\n\n<|audio_code_3|><|audio_code_63999|><|im_end|>"
    ids = tok.encode(text)
    assert finalize_metadata(tok, ids) == reference_parse(text)
    assert finalize_metadata(tok, []) == {"metadata": {}, "codes": []}
    with pytest.raises(Exception) as err:
        finalize_metadata(tok, [tok.vocab_size + 5])
    assert "id" in str(err.value).lower() or "range" in str(err.value).lower()

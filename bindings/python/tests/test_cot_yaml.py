"""The CoT YAML from the core must be byte-identical to PyYAML (the official formatter's engine)."""

import glob
import json
import random
from pathlib import Path

import pytest
import yaml

from acestep_runtime import AceError
from acestep_runtime.metadata import format_cot

EXAMPLES = Path(__file__).resolve().parents[3] / "fixtures" / "official_examples"
if not EXAMPLES.is_dir():
    EXAMPLES = Path(__file__).resolve().parents[3] / "fixtures" / "official_examples"

COT_KEYS = ["bpm", "caption", "duration", "keyscale", "language", "timesignature"]


def reference_cot(metadata: dict) -> str:
    """The official `_format_metadata_as_cot`, written from spec §5.3."""
    items = {}
    for key in COT_KEYS:
        if key in metadata and metadata[key] is not None:
            value = metadata[key]
            if key == "timesignature" and isinstance(value, str) and value.endswith("/4"):
                value = value.split("/")[0]
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            items[key] = value
    text = yaml.dump(items, allow_unicode=True, sort_keys=True).strip() if items else ""
    return f"<think>\n{text}\n</think>"


WORDS = (
    "an upbeat anthemic pop-rock track driven by bright slightly overdriven guitars with a punchy "
    "kick, airy pads and a soaring female vocal; the chorus lifts into a euphoric singalong while "
    "synth arpeggios shimmer over sub-bass"
).split()
ODD = [
    "yes", "no", "null", "~", "true", "Off", "1.5", "1e5", "1.5e+3", "0x1F", "0o17", "0b101", "017",
    "-3", "+7", "12:30", "1:30:00.5", ".inf", "-.Inf", ".nan", "2001-12-14", "2001-12-14 21:59:43.10 -5",
    "2001-12-14t21:59:43.10-05:00", "<<", "=", "---", "...", "- item", "? key", ": x", "a: b", "a #b",
    "a#b", "#tag", "&anchor", "*alias", "!tag", "|block", ">fold", "'q'", '"dq"', "%pct", "@at", "`bt`",
    "[x]", "{y}", "a, b", "50%", "it's", 'say "hi"', "back\\slash", "tab\there", "line\nbreak",
    "trailing ", " leading", "  two", "x\u00a0nbsp", "zero\u200bwidth", "bom\ufeff", "\u0085nel",
    "ctrl\x07bell", "del\x7f", "c1\x9b", "中文歌曲，温柔的钢琴", "日本語の歌詞とギター", "한국어 발라드",
    "emoji 🎸🎹🔥", "mixed 中文 and English 🎵", "Ünïcödé café", "ψυχή", "עברית", "1234", "0042", "١٢٣",
    "sep\u2028line", "para\u2029graph", "", " ", "x" * 90, "y" * 85 + " z", "a  b", "end:", "k:v",
]


def generated_captions(n: int, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    out = list(ODD)
    while len(out) < n:
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 60))]
        for _ in range(rng.randint(0, 4)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(ODD))
        sep = rng.choice([" ", " ", " ", "  ", ", ", " - "])
        text = sep.join(words)
        r = rng.random()
        if r < 0.1:
            text = " " + text
        elif r < 0.2:
            text = text + " "
        elif r < 0.25:
            text = text.replace(" ", "\n", 2)
        out.append(text)
    return out


@pytest.mark.parametrize("caption", generated_captions(400))
def test_caption_matches_pyyaml(caption):
    meta = {"bpm": 120, "caption": caption, "duration": 95, "keyscale": "F# minor", "language": "en",
            "timesignature": "4"}
    assert format_cot(meta) == reference_cot(meta)


def official_requests():
    for path in sorted(glob.glob(str(EXAMPLES / "text2music" / "*.json"))):
        yield json.loads(Path(path).read_text(encoding="utf-8"))


def test_official_captions_match_pyyaml():
    requests = list(official_requests())
    assert len(requests) == 20
    for req in requests:
        meta = {k: req[k] for k in COT_KEYS if k in req}
        got = format_cot(meta)
        assert got == reference_cot(meta)
        # long captions fold: every official caption is > 500 characters
        assert got.count("\n  ") >= 5


@pytest.mark.parametrize("meta", [
    {"bpm": "120", "timesignature": "3/4"},
    {"timesignature": "6/4", "keyscale": "E♭ minor"},
    {"duration": "0042", "language": "yue"},
    {"bpm": None, "caption": "calm piano", "genres": "folk"},
    {},
    {"caption": "２０２０ fullwidth"},
    {"keyscale": "N/A", "bpm": "N/A"},
])
def test_field_conversions_match_the_official_formatter(meta):
    assert format_cot(meta) == reference_cot(meta)


@pytest.mark.parametrize("bad,needle", [
    ({"tempo": 120}, "tempo"),
    ({"duration": 12.5}, "duration"),
    ({"bpm": True}, "bpm"),
    ({"caption": ["a"]}, "caption"),
])
def test_bad_metadata_is_rejected_naming_the_field(bad, needle):
    with pytest.raises(AceError) as err:
        format_cot(bad)
    assert needle in err.value.message


def test_invalid_json_is_reported():
    with pytest.raises(AceError) as err:
        format_cot("{not json")
    assert err.value.name == "invalid_json"


FUZZ_ALPHABET = list("ab yz019 .,:;'\"#-?!&*|>%@`[]{}~=<\\\t\n\r_+eE") + [
    "中", "文", "🎸", "\u00a0", "\u0085", "\u2028", "\ufeff", "\x07", "\x7f", "é", "  ", ": ", " #", "yes", "null",
    "1.5", "0x", "---", "..."]


def test_character_level_fuzz_matches_pyyaml():
    rng = random.Random(99)
    mismatches = []
    for _ in range(3000):
        n = rng.choice([1, 2, 3, 5, 10, 40, 90, 200])
        text = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(n))
        meta = {"caption": text, "keyscale": rng.choice(FUZZ_ALPHABET) * rng.randint(1, 3)}
        if format_cot(meta) != reference_cot(meta):
            mismatches.append(text)
    assert not mismatches, mismatches[:3]

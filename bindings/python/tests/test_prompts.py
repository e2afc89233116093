"""Prompt strings from the core vs the spec's templates (§1.3, §1.4, §5.2), written out here."""

import glob
import json
from pathlib import Path

import pytest
import yaml

from acestep_runtime import AceError
from acestep_runtime.prompts import build_prompts

EXAMPLES = Path(__file__).resolve().parents[3] / "fixtures" / "official_examples"
LM_INSTR = "Generate audio semantic tokens based on the given conditions:"
T2M_INSTR = "Fill the audio semantic mask based on the given conditions:"
SYSTEM = f"<|im_start|>system\n# Instruction\n{LM_INSTR}\n\n<|im_end|>\n"


def spec_caption_prompt(instruction, caption, bpm, ts, ks, duration):
    metas = (f"- bpm: {bpm if bpm is not None else 'N/A'}\n"
             f"- timesignature: {ts if ts is not None else 'N/A'}\n"
             f"- keyscale: {ks if ks is not None else 'N/A'}\n"
             f"- duration: {str(int(duration)) + ' seconds' if duration is not None else '30 seconds'}\n")
    return f"# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n# Metas\n{metas}<|endoftext|>\n"


def spec_lyric_prompt(language, lyrics):
    return f"# Languages\n{language}\n\n# Lyric\n{lyrics}<|endoftext|>"


def spec_cot(meta):
    items = {}
    for k in ["bpm", "caption", "duration", "keyscale", "language", "timesignature"]:
        v = meta.get(k)
        if v is None:
            continue
        if k == "timesignature" and isinstance(v, str) and v.endswith("/4"):
            v = v.split("/")[0]
        if isinstance(v, str) and v.isdigit():
            v = int(v)
        items[k] = v
    return "<think>\n" + (yaml.dump(items, allow_unicode=True, sort_keys=True).strip() if items else "") + "\n</think>"


def spec_lm(user, cot=None, close=True):
    if cot is None:
        return SYSTEM + f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    reasoning = cot.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n").strip("\n")
    text = SYSTEM + f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n<think>\n{reasoning}\n</think>\n\n"
    return text + ("<|im_end|>\n" if close else "")


def text2music_requests():
    for path in sorted(glob.glob(str(EXAMPLES / "text2music" / "*.json"))):
        yield path, json.loads(Path(path).read_text(encoding="utf-8"))


def simple_mode_requests():
    for path in sorted(glob.glob(str(EXAMPLES / "simple_mode" / "*.json"))):
        ex = json.loads(Path(path).read_text(encoding="utf-8"))
        yield path, {"caption": ex["description"], "instrumental": ex["instrumental"],
                     "language": ex["vocal_language"]}


ALL = list(text2music_requests()) + list(simple_mode_requests())


def test_all_forty_examples_are_covered():
    assert len(ALL) == 40


@pytest.mark.parametrize("has_codes", [False, True])
@pytest.mark.parametrize("path,req", ALL, ids=[Path(p).parent.name + "/" + Path(p).stem for p, _ in ALL])
def test_prompts_match_spec_templates(path, req, has_codes):
    got = build_prompts({**req, "has_codes": has_codes})
    caption = req.get("caption", "")
    lyrics = "[Instrumental]" if req.get("instrumental") else req.get("lyrics", "")
    dit_lyrics = lyrics if lyrics.strip() else "[Instrumental]"
    instr = LM_INSTR if has_codes else T2M_INSTR
    assert got["dit_caption"] == spec_caption_prompt(instr, caption, req.get("bpm"), req.get("timesignature"),
                                                     req.get("keyscale"), req.get("duration"))
    assert got["dit_lyrics"] == spec_lyric_prompt(req.get("language", "unknown"), dit_lyrics)
    user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
    assert got["lm_phase1"] == spec_lm(user)
    assert got["lm_phase1_uncond"] == spec_lm(f"# Lyric\n{lyrics}\n")  # default negative = none
    has_all = all(req.get(k) is not None for k in ("bpm", "keyscale", "timesignature", "duration"))
    assert got["phase1_needed"] == (not has_all)
    user_meta = {k: req.get(k) for k in ("bpm", "duration", "keyscale", "timesignature")}
    assert got["cot"] == spec_cot(user_meta)
    assert got["lm_phase2"] == spec_lm(user, got["cot"])
    assert got["lm_phase2_uncond"] == spec_lm(user, "<think>\n</think>")
    assert got["lm_phase2_uncond"].endswith("<think>\n\n</think>\n\n<|im_end|>\n")


def test_phase2_open_variant_leaves_the_turn_open():
    got = build_prompts({"caption": "calm piano", "bpm": 90, "phase2_end": "open"})
    assert got["lm_phase2"].endswith("<|im_start|>assistant\n<think>\nbpm: 90\n</think>\n\n")
    assert got["lm_phase2_uncond"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


@pytest.mark.parametrize("neg,meaningful", [("NO USER INPUT", False), ("  NO USER INPUT ", False), ("", False),
                                            ("   ", False), ("harsh noise", True)])
def test_negative_prompt_rules(neg, meaningful):
    got = build_prompts({"caption": "calm piano", "lyrics": "la la", "negative_prompt": neg})
    if meaningful:
        assert got["lm_phase1_uncond"] == spec_lm(f"# Caption\n{neg}\n\n# Lyric\nla la\n")
        assert got["lm_phase2_uncond"] == spec_lm(f"# Caption\n{neg}\n\n# Lyric\nla la\n", "<think>\n</think>")
    else:
        assert got["lm_phase1_uncond"] == spec_lm("# Lyric\nla la\n")
        assert got["lm_phase2_uncond"] == spec_lm("# Caption\ncalm piano\n\n# Lyric\nla la\n", "<think>\n</think>")


def test_lm_metadata_fills_the_dit_prompt_and_the_cot():
    lm = {"bpm": 128, "caption": "LM rewritten caption", "duration": 47, "keyscale": "A minor",
          "language": "ja", "timesignature": "3"}
    got = build_prompts({"caption": "user caption", "lyrics": "x", "keyscale": "C major",
                         "lm_metadata": lm, "has_codes": True})
    # user keyscale wins; LM fills bpm, timesignature, duration; LM caption and language are used
    assert got["dit_caption"] == spec_caption_prompt(LM_INSTR, "LM rewritten caption", 128, "3", "C major", 47)
    assert got["dit_lyrics"] == spec_lyric_prompt("ja", "x")
    assert got["cot"] == spec_cot(lm)
    assert got["lm_phase2"] == spec_lm("# Caption\nuser caption\n\n# Lyric\nx\n", spec_cot(lm))
    off = build_prompts({"caption": "user caption", "lyrics": "x", "lm_metadata": lm, "use_cot_caption": False,
                         "use_cot_language": False, "language": "en"})
    assert "# Caption\nuser caption\n" in off["dit_caption"]
    assert off["dit_lyrics"].startswith("# Languages\nen\n")


def test_fractional_duration_is_truncated():
    got = build_prompts({"duration": 59.9})
    assert "- duration: 59 seconds\n" in got["dit_caption"]


@pytest.mark.parametrize("bad,field", [
    ({"bpm": 301}, "bpm"), ({"bpm": 29}, "bpm"), ({"bpm": "fast"}, "bpm"),
    ({"duration": 9.5}, "duration"), ({"duration": 601}, "duration"),
    ({"language": "xx"}, "language"), ({"language": "EN"}, "language"),
    ({"timesignature": "5"}, "timesignature"), ({"timesignature": "4/8"}, "timesignature"),
    ({"keyscale": "H major"}, "keyscale"), ({"keyscale": "C Major"}, "keyscale"),
    ({"captions": "typo"}, "captions"), ({"lm_metadata": {"tempo": 1}}, "tempo"),
    ({"phase2_end": "closed"}, "closed"), ({"has_codes": "yes"}, "has_codes"),
])
def test_bad_requests_name_the_field(bad, field):
    with pytest.raises(AceError) as err:
        build_prompts(bad)
    assert field in err.value.message
    assert err.value.name in ("invalid_argument", "invalid_json")


def test_invalid_json_and_type_errors():
    with pytest.raises(AceError) as err:
        build_prompts("{")
    assert err.value.name == "invalid_json"
    with pytest.raises(TypeError):
        build_prompts(42)

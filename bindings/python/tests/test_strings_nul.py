"""Strings cross the C ABI NUL-terminated: a str with an embedded NUL must be refused by the
binding, not silently cut (issue 12: ``track_id('{}\\x00garbage') == track_id({})``). And the byte
token 0x00 must decode, exactly as Hugging Face tokenizers decodes it."""

from pathlib import Path

import pytest

from acestep_runtime import frames, metadata, prompts
from acestep_runtime.sampling import Sampler
from acestep_runtime.solver import Context
from acestep_runtime.tokenizer import Tokenizer

TINY = Path(__file__).resolve().parents[3] / "fixtures" / "reliability" / "tiny_tokenizer.json"


@pytest.mark.parametrize(
    "call",
    [
        lambda: frames.track_id('{}\x00garbage'),
        lambda: frames.canonical_json('{"a": 1}\x00{"b": 2}'),
        lambda: prompts.build_prompts('{"caption": "x"}\x00junk'),
        lambda: metadata.parse_lm_output("<think>\x00"),
        lambda: metadata.format_cot('{"bpm": 1}\x00'),
        lambda: Context('{"model": "turbo"}\x00{"model": "base"}'),
        lambda: Sampler.from_json('{"seed": 1}\x00'),
        lambda: Tokenizer(json_text=TINY.read_text() + "\x00"),
        lambda: Tokenizer(TINY).encode("a\x00b"),
        lambda: Tokenizer(TINY).token_to_id("<think>\x00"),
        lambda: Tokenizer(str(TINY) + "\x00.json"),
    ],
)
def test_embedded_nul_is_refused(call):
    with pytest.raises(ValueError, match="NUL"):
        call()


def test_json_dicts_with_nul_in_values_still_work():
    # json.dumps escapes U+0000 as \u0000, so dict arguments never carry a raw NUL.
    a = frames.track_id({"caption": "a\x00b"})
    b = frames.track_id({"caption": "a\x00c"})
    assert a != b and len(a) == 64


def test_decode_matches_hf_tokenizers_for_every_id_including_the_nul_byte():
    hf = pytest.importorskip("tokenizers").Tokenizer.from_file(str(TINY))
    tok = Tokenizer(TINY)
    assert tok.decode([188]) == hf.decode([188]) == "\x00"
    for i in range(tok.vocab_size):
        assert tok.decode([i]) == hf.decode([i], skip_special_tokens=False), i
    ids = tok.encode("héllo \x01 wörld <think>")
    assert ids == hf.encode("héllo \x01 wörld <think>", add_special_tokens=False).ids
    assert tok.decode(ids) == "héllo \x01 wörld <think>"
    # A long sequence (more bytes than the first buffer guess) decodes too.
    long_ids = tok.encode("<|audio_code_15|>" * 50)
    assert tok.decode(long_ids) == "<|audio_code_15|>" * 50

"""Tokenizer tests: the generated Qwen3 tokenizer against tiktoken on the same ranks, and the core's
tokenizer (Rust `tokenizers` behind the C ABI) against the Python `tokenizers` package."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["conftest_lm"]


# ---------------------------------------------------------------- the generator (tools/make_qwen_tokenizer)


def test_generated_tokenizer_matches_tiktoken(lm_tokenizer_dir, corpus, generated_strings):
    tiktoken = pytest.importorskip("tiktoken")
    tokenizers = pytest.importorskip("tokenizers")
    from tools import make_qwen_tokenizer as mk

    ranks = mk.load_ranks()
    ref = tiktoken.Encoding("qwen_ref", pat_str=mk.QWEN_PATTERN, mergeable_ranks=ranks, special_tokens={})
    tok = tokenizers.Tokenizer.from_file(str(lm_tokenizer_dir / "tokenizer.json"))
    import unicodedata

    plain = [s for s in corpus + generated_strings(1500, seed=11, with_specials=False) if "<|" not in s and "think>" not in s and "<tool" not in s]
    assert len(plain) >= 1000
    bad = []
    for s in plain:
        # tiktoken has no normalizer; the Qwen tokenizer NFC-normalizes first.
        want = ref.encode(unicodedata.normalize("NFC", s))
        got = tok.encode(s, add_special_tokens=False).ids
        if got != want:
            bad.append((s, got, want))
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]}"


def test_generated_tokenizer_layout(lm_tokenizer_dir, text_tokenizer_dir):
    tokenizers = pytest.importorskip("tokenizers")
    lm = tokenizers.Tokenizer.from_file(str(lm_tokenizer_dir / "tokenizer.json"))
    assert lm.get_vocab_size() == 217204
    data = json.loads((lm_tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert len(data["model"]["vocab"]) == 151643
    assert len(data["model"]["merges"]) == 151387  # spec §10.11
    # Ids quoted by the spec (§5.1) and the official processor's docstrings.
    assert lm.encode("\n", add_special_tokens=False).ids == [198]
    assert lm.encode("keyscale: G major", add_special_tokens=False).ids == [10563, 2246, 25, 479, 3598]
    for text, tid in [("<|endoftext|>", 151643), ("<|im_start|>", 151644), ("<|im_end|>", 151645),
                      ("<think>", 151667), ("</think>", 151668), ("<|audio_code_0|>", 151669),
                      ("<|audio_code_65534|>", 217203)]:
        assert lm.token_to_id(text) == tid
        assert lm.encode(text, add_special_tokens=False).ids == [tid]
    # Without audio codes: 151669 tokens, and the embedding variant appends <|endoftext|>.
    te = tokenizers.Tokenizer.from_file(str(text_tokenizer_dir / "tokenizer.json"))
    assert te.get_vocab_size() == 151669
    assert te.token_to_id("<|audio_code_0|>") is None
    ids = te.encode("x<|endoftext|>\n", add_special_tokens=True).ids
    assert ids[-3:] == [151643, 198, 151643]
    assert te.encode("x", add_special_tokens=False).ids == lm.encode("x", add_special_tokens=False).ids
    assert lm.encode("x", add_special_tokens=True).ids == lm.encode("x", add_special_tokens=False).ids


def test_generated_tokenizer_loads_in_transformers(lm_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(lm_tokenizer_dir))
    assert len(tok) == 217204
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643
    assert tok.encode("<think>\nbpm: 120\n", add_special_tokens=False) == [151667, 198, 65, 5187, 25, 220, 16, 17, 15, 198]
    msgs = [{"role": "system", "content": "# Instruction\nX:\n\n"}, {"role": "user", "content": "# Caption\nc\n\n# Lyric\nl\n"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\n# Instruction\nX:\n\n<|im_end|>\n<|im_start|>user\n# Caption\nc\n\n# Lyric\nl\n"
                    "<|im_end|>\n<|im_start|>assistant\n")
    msgs2 = msgs + [{"role": "assistant", "content": "<think>\nbpm: 1\n</think>"}]
    text2 = tok.apply_chat_template(msgs2, tokenize=False, add_generation_prompt=False)
    assert text2.endswith("<|im_start|>assistant\n<think>\nbpm: 1\n</think>\n\n<|im_end|>\n")


# ---------------------------------------------------------------- the core's tokenizer (C ABI)


@pytest.fixture(scope="module")
def core_pair(lm_tokenizer_dir):
    tokenizers = pytest.importorskip("tokenizers")
    from acestep_runtime.tokenizer import Tokenizer

    path = lm_tokenizer_dir / "tokenizer.json"
    with Tokenizer(path) as ours:
        yield ours, tokenizers.Tokenizer.from_file(str(path))


def test_core_encode_decode_match_python_tokenizers(core_pair, corpus):
    ours, ref = core_pair
    assert len(corpus) >= 1000
    assert ours.vocab_size == ref.get_vocab_size() == 217204
    for s in corpus:
        for special in (False, True):
            want = ref.encode(s, add_special_tokens=special).ids
            got = ours.encode(s, add_special_tokens=special)
            assert got == want, (s, special)
        for skip in (False, True):
            assert ours.decode(want, skip_special_tokens=skip) == ref.decode(want, skip_special_tokens=skip), s


def test_core_embedding_tokenizer_appends_eos(text_tokenizer_dir, corpus):
    tokenizers = pytest.importorskip("tokenizers")
    from acestep_runtime.tokenizer import Tokenizer

    path = text_tokenizer_dir / "tokenizer.json"
    ref = tokenizers.Tokenizer.from_file(str(path))
    with Tokenizer(path) as ours:
        prompt = "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\nx\n\n# Metas\n- bpm: N/A\n<|endoftext|>\n"
        ids = ours.encode(prompt, add_special_tokens=True)
        assert ids[-3:] == [151643, 198, 151643]  # spec §1.3
        for s in corpus[:300]:
            if "audio_code" not in s:
                assert ours.encode(s, add_special_tokens=True) == ref.encode(s, add_special_tokens=True).ids


def test_core_token_id_lookups(core_pair, rng):
    ours, ref = core_pair
    for tid in list(rng.integers(0, 217204, size=500)) + [0, 198, 151643, 151668, 151669, 217203]:
        tid = int(tid)
        assert ours.id_to_token(tid) == ref.id_to_token(tid)
        assert ours.token_to_id(ours.id_to_token(tid)) == tid
    assert ours.token_to_id("<|no such token|>") is None


def test_core_tokenizer_bad_input(tmp_path, core_pair):
    from acestep_runtime import AceError
    from acestep_runtime._native import ffi, lib
    from acestep_runtime.tokenizer import Tokenizer

    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(AceError) as e:
        Tokenizer(missing)
    assert e.value.name == "io" and str(missing) in e.value.message
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0", "model": {"type": "BPE"', encoding="utf-8")
    with pytest.raises(AceError) as e:
        Tokenizer(bad)
    assert e.value.name == "tokenizer" and str(bad) in e.value.message
    with pytest.raises(AceError) as e:
        Tokenizer(json_text="[]")
    assert e.value.name == "tokenizer"

    ours, _ = core_pair
    with pytest.raises(AceError) as e:
        ours.decode([5, 217204])
    assert e.value.name == "invalid_argument" and "217204" in e.value.message
    with pytest.raises(AceError):
        ours.id_to_token(10**9)
    # Too small an output buffer reports the needed length.
    n = ffi.new("size_t *")
    buf = ffi.new("uint32_t[]", 2)
    status = lib.ace_tokenizer_encode(ours.ptr, "hello world, again".encode(), False, buf, 2, n)
    assert status == lib.ACE_STATUS_LENGTH_MISMATCH and n[0] == len(ours.encode("hello world, again"))
    # Null pointers are reported, not dereferenced.
    assert lib.ace_tokenizer_encode(ffi.NULL, b"x", False, buf, 2, n) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_tokenizer_create_from_file(ffi.NULL, ffi.new("AceTokenizer **")) == lib.ACE_STATUS_NULL_POINTER
    with pytest.raises(TypeError):
        ours.encode(b"bytes")
    with pytest.raises(ValueError):
        ours.decode([-1])

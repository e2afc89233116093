"""The ACE-Step 5 Hz LM (a Qwen3 causal LM, spec §2.4, §5.1) in the exporter.

* `write_tiny_lm` writes a small random-weight checkpoint in the official `acestep-5Hz-lm-*` layout
  (`config.json` of a `Qwen3ForCausalLM`, bf16 `model.safetensors` with the official key names, the
  tokenizer files), so tests exercise the same loader as a real checkpoint.
* `load_lm_checkpoint` loads such a directory strictly into a `transformers` `Qwen3ForCausalLM` (fp32):
  every missing, unexpected or mis-shaped key is an error naming it.
* `export_lm_graphs` writes `lm_prefill.onnx` and `lm_decode.onnx`: an explicit-KV Qwen3 forward that
  shares the HF module's weights (HF's cache classes are not part of the graphs).
* `lm_host_config` returns the values a host needs to run the two graphs.

The graphs' I/O is documented in `docs/io_contract_lm.md`.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import torch
from torch import nn

# Spec §5.1 / §2.4.
VOCAB_SIZE = 217204
AUDIO_CODE_BASE = 151669  # id of <|audio_code_0|>
N_VALID_AUDIO_CODES = 64000  # codes 0..63999 are valid; 64000..65534 exist in the vocab but are never used
EOS_TOKEN_ID = 151645  # <|im_end|>
PAD_TOKEN_ID = 151643  # <|endoftext|>, the Qwen3 tokenizer's pad token
IM_START_TOKEN_ID = 151644

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# Tokenizer files copied by `write_tiny_lm` when present in the source dir (tokenizer.json is required).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)

PREFILL_FILE = "lm_prefill.onnx"
DECODE_FILE = "lm_decode.onnx"
SHARED_WEIGHTS_FILE = "lm_weights.onnx.data"
# Above this many parameter bytes the graphs keep their weights in an external data file.
EXTERNAL_DATA_THRESHOLD_BYTES = 1 << 30

# Config keys the loader needs; the shapes are always read from the config, never assumed.
_REQUIRED_CONFIG_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
)


class LmCheckpointError(ValueError):
    """A 5 Hz LM checkpoint directory does not match what the loader expects."""


# --------------------------------------------------------------------------------------------------
# Tiny checkpoint writer
# --------------------------------------------------------------------------------------------------


def tiny_lm_config() -> dict:
    """The `config.json` of the tiny LM: the official LM's format and fixed values (vocab, rope theta,
    eps, tied head, token ids), narrow widths."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": PAD_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "pad_token_id": PAD_TOKEN_ID,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "layer_types": ["full_attention", "full_attention"],
        "max_position_embeddings": 4096,
        "max_window_layers": 2,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB_SIZE,
    }


# Spec §5.1: the official LMs' widths (the rest of the config is `tiny_lm_config`'s, which are the
# official shared values). Used to write full-size random-weight checkpoints for measurements.
LM_SIZES = {
    "0.6B": {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128},
    "1.7B": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128},
}


def lm_config(size: str = "tiny") -> dict:
    """`config.json` of the tiny LM (`"tiny"`) or of an official size (`"0.6B"`, `"1.7B"`, spec §5.1)."""
    cfg = tiny_lm_config()
    if size == "tiny":
        return cfg
    if size not in LM_SIZES:
        raise ValueError(f"LM size {size!r}: expected 'tiny' or one of {', '.join(LM_SIZES)}")
    cfg.update(LM_SIZES[size])
    n = cfg["num_hidden_layers"]
    cfg["layer_types"], cfg["max_window_layers"] = ["full_attention"] * n, n
    return cfg


def _layer_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Official per-layer key suffixes (spec §2.3/§2.4: 11 per layer) and their shapes."""
    h, inter, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    shapes = {
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (nq * hd, h),
        "self_attn.k_proj.weight": (nkv * hd, h),
        "self_attn.v_proj.weight": (nkv * hd, h),
        "self_attn.o_proj.weight": (h, nq * hd),
        "self_attn.q_norm.weight": (hd,),
        "self_attn.k_norm.weight": (hd,),
        "mlp.gate_proj.weight": (inter, h),
        "mlp.up_proj.weight": (inter, h),
        "mlp.down_proj.weight": (h, inter),
    }
    if cfg.get("attention_bias", False):
        shapes.update(
            {
                "self_attn.q_proj.bias": (nq * hd,),
                "self_attn.k_proj.bias": (nkv * hd,),
                "self_attn.v_proj.bias": (nkv * hd,),
                "self_attn.o_proj.bias": (h,),
            }
        )
    return shapes


def expected_lm_keys(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every key of an official LM checkpoint (with the `model.` prefix) and its shape."""
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    keys: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for i in range(cfg["num_hidden_layers"]):
        for suffix, shape in _layer_shapes(cfg).items():
            keys[f"model.layers.{i}.{suffix}"] = shape
    if not cfg.get("tie_word_embeddings", True):
        keys["lm_head.weight"] = (v, h)
    return keys


def write_tiny_lm(ckpt_dir: Path, seed: int, tokenizer_dir: Path | None, *, size: str = "tiny") -> None:
    """Writes a random-weight 5 Hz LM in the official `acestep-5Hz-lm-0.6B/` layout.

    `config.json` (Qwen3ForCausalLM, vocab 217204, tied head; `size` "tiny": hidden 64, 2 layers, 4/2
    heads, head_dim 16; "0.6B" / "1.7B": the official widths of spec §5.1), `model.safetensors` (bf16,
    official key names, no `lm_head.weight`), and the tokenizer files found in `tokenizer_dir` (the
    217204-token tokenizer of `tools/make_qwen_tokenizer.py --audio-codes`; `None` writes no tokenizer).
    Same seed → same bytes. Written tensor by tensor: the peak memory is one 16k-row chunk.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cfg = lm_config(size)
    gen = torch.Generator().manual_seed(int(seed))
    keys = expected_lm_keys(cfg)
    # safetensors written by hand, tensor by tensor and in row chunks: the header first (the offsets
    # follow from the shapes), then each tensor's bf16 bytes as it is drawn, so a full-size LM never
    # sits in memory (the 1.7B embedding alone is 1.8 GB of fp32).
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, shape in keys.items():
        n_bytes = math.prod(shape) * 2
        header[key] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n_bytes]}
        offset += n_bytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(ckpt_dir / WEIGHTS_FILE, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for key, shape in keys.items():
            if key.endswith("norm.weight") or key.endswith("layernorm.weight"):
                # RMSNorm gains near 1, so activations keep a sane scale through the layers.
                mean, std = 1.0, 0.1
            elif key.endswith(".bias"):
                mean, std = 0.0, 0.02
            else:
                # Small embeddings and residual-branch outputs (o_proj, down_proj) at twice the usual
                # 1/sqrt(fan_in): the layers then outweigh the input embedding in the residual stream, so
                # the tied head does not just echo the last token and greedy decoding varies.
                fan_in = shape[1]
                mean = 0.0
                if key.endswith("embed_tokens.weight") or key == "lm_head.weight":
                    std = 0.15
                elif key.endswith(("o_proj.weight", "down_proj.weight")):
                    std = 2.0 / math.sqrt(fan_in)
                else:
                    std = 1.0 / math.sqrt(fan_in)
            for lo in range(0, shape[0], 16384):
                rows = (min(shape[0], lo + 16384) - lo, *shape[1:])
                t = (mean + std * torch.randn(rows, generator=gen)).to(torch.bfloat16)
                f.write(t.view(torch.int16).numpy().data)
    (ckpt_dir / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    (ckpt_dir / "generation_config.json").write_text(
        json.dumps({"bos_token_id": PAD_TOKEN_ID, "eos_token_id": EOS_TOKEN_ID, "pad_token_id": PAD_TOKEN_ID}, indent=2)
        + "\n"
    )
    if tokenizer_dir is not None:
        _copy_tokenizer(Path(tokenizer_dir), ckpt_dir)


def _copy_tokenizer(src: Path, dst: Path) -> None:
    if not (src / "tokenizer.json").is_file():
        raise FileNotFoundError(f"LM tokenizer: {src / 'tokenizer.json'} does not exist")
    check_lm_tokenizer(src / "tokenizer.json")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def check_lm_tokenizer(tokenizer_json: Path) -> None:
    """Raises unless the tokenizer is the LM's: 217204 tokens with the special / audio-code ids of §5.1."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    n = tok.get_vocab_size(with_added_tokens=True)
    if n != VOCAB_SIZE:
        raise LmCheckpointError(f"LM tokenizer {tokenizer_json}: vocab size {n}, expected {VOCAB_SIZE}")
    for text, want in (
        ("<|endoftext|>", PAD_TOKEN_ID),
        ("<|im_start|>", IM_START_TOKEN_ID),
        ("<|im_end|>", EOS_TOKEN_ID),
        ("<|audio_code_0|>", AUDIO_CODE_BASE),
        ("<|audio_code_63999|>", AUDIO_CODE_BASE + N_VALID_AUDIO_CODES - 1),
    ):
        got = tok.token_to_id(text)
        if got != want:
            raise LmCheckpointError(f"LM tokenizer {tokenizer_json}: {text} has id {got}, expected {want}")


# --------------------------------------------------------------------------------------------------
# Strict loader
# --------------------------------------------------------------------------------------------------


def read_lm_config(ckpt_dir: Path) -> dict:
    path = Path(ckpt_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"LM checkpoint: {path} does not exist")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LmCheckpointError(f"LM checkpoint: {path} is not valid JSON: {e}") from e
    if cfg.get("model_type") != "qwen3":
        raise LmCheckpointError(f"LM checkpoint {path}: model_type {cfg.get('model_type')!r}, expected 'qwen3'")
    for key in _REQUIRED_CONFIG_KEYS:
        if key not in cfg:
            raise LmCheckpointError(f"LM checkpoint {path}: config key {key!r} is missing")
    if cfg.get("rope_scaling") not in (None, {}):
        raise LmCheckpointError(f"LM checkpoint {path}: rope_scaling {cfg['rope_scaling']!r} is not supported")
    if cfg.get("use_sliding_window", False):
        raise LmCheckpointError(f"LM checkpoint {path}: use_sliding_window=true is not supported")
    layer_types = cfg.get("layer_types")
    if layer_types is not None and len(layer_types) != cfg["num_hidden_layers"]:
        raise LmCheckpointError(
            f"LM checkpoint {path}: layer_types has {len(layer_types)} entries, num_hidden_layers is {cfg['num_hidden_layers']}"
        )
    for i, kind in enumerate(layer_types or []):
        if kind != "full_attention":
            raise LmCheckpointError(f"LM checkpoint {path}: layer_types[{i}] is {kind!r}; only 'full_attention' is supported")
    if cfg["num_attention_heads"] % cfg["num_key_value_heads"] != 0:
        raise LmCheckpointError(
            f"LM checkpoint {path}: num_attention_heads {cfg['num_attention_heads']} is not a multiple of "
            f"num_key_value_heads {cfg['num_key_value_heads']}"
        )
    cfg.setdefault("tie_word_embeddings", True)  # spec §2.4: tied by default
    return cfg


def _read_safetensors(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors`, or of the shards listed in `model.safetensors.index.json`."""
    from safetensors.torch import load_file

    single, index = ckpt_dir / WEIGHTS_FILE, ckpt_dir / WEIGHTS_INDEX_FILE
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise LmCheckpointError(f"LM checkpoint: {index} has no 'weight_map'")
        files = [ckpt_dir / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"LM checkpoint: shard {f} (listed in {index}) does not exist")
    else:
        raise FileNotFoundError(f"LM checkpoint: {single} does not exist (nor {index})")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        for k, t in load_file(str(f)).items():
            if k in out:
                raise LmCheckpointError(f"LM checkpoint: key {k!r} appears in more than one shard ({f})")
            out[k] = t
    return out


def _canonical_key(key: str) -> str:
    """Spec §2.4: some checkpoints omit the `model.` prefix of the decoder keys."""
    if key.startswith("model.") or key == "lm_head.weight":
        return key
    return "model." + key


def load_lm_state_dict(ckpt_dir: Path, cfg: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors as fp32, keyed by official names, checked strictly against `cfg`."""
    raw = _read_safetensors(Path(ckpt_dir))
    state: dict[str, torch.Tensor] = {}
    for key, t in raw.items():
        ck = _canonical_key(key)
        if ck in state:
            raise LmCheckpointError(f"LM checkpoint {ckpt_dir}: key {key!r} is present with and without 'model.'")
        if t.dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise LmCheckpointError(f"LM checkpoint {ckpt_dir}: key {key!r} has dtype {t.dtype}, expected a float")
        state[ck] = t
    expected = expected_lm_keys(cfg)
    if cfg["tie_word_embeddings"] and "lm_head.weight" in state:
        # A tied checkpoint may still carry the head; accept it only if it IS the embedding.
        head = state.pop("lm_head.weight")
        emb = state.get("model.embed_tokens.weight")
        if emb is None or head.shape != emb.shape or not torch.equal(head.float(), emb.float()):
            raise LmCheckpointError(
                f"LM checkpoint {ckpt_dir}: unexpected key 'lm_head.weight' differs from "
                "'model.embed_tokens.weight' while tie_word_embeddings is true"
            )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise LmCheckpointError(
            f"LM checkpoint {ckpt_dir}: missing key {missing[0]!r}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if unexpected:
        raise LmCheckpointError(
            f"LM checkpoint {ckpt_dir}: unexpected key {unexpected[0]!r}"
            + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )
    for k, shape in expected.items():
        if tuple(state[k].shape) != shape:
            raise LmCheckpointError(
                f"LM checkpoint {ckpt_dir}: key {k!r} has shape {list(state[k].shape)}, expected {list(shape)} from config"
            )
    return {k: state[k].to(torch.float32) for k in expected}


def load_lm_checkpoint(ckpt_dir: Path):
    """Loads an `acestep-5Hz-lm-*` directory strictly into an fp32 `transformers` `Qwen3ForCausalLM` (eval)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    ckpt_dir = Path(ckpt_dir)
    cfg = read_lm_config(ckpt_dir)
    state = load_lm_state_dict(ckpt_dir, cfg)
    config = Qwen3Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype", "dtype")})
    # Build on the meta device and adopt the loaded tensors: no random init, no second copy of the weights.
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = Qwen3RotaryEmbedding(config=config, device=torch.device("cpu"))
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:
            raise LmCheckpointError(f"LM checkpoint {ckpt_dir}: tensor {name!r} was not loaded")
    model.config._attn_implementation = "eager"
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Explicit-KV forward used for export
# --------------------------------------------------------------------------------------------------


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Qwen3KvForward(nn.Module):
    """Qwen3 causal-LM forward with explicit past/present K/V tensors, sharing the HF model's weights.

    K is stored after k_norm and RoPE, V as projected; both [B, kv_heads, T, head_dim], fp32.
    Attention uses a finite minimum instead of -inf for masked keys, so padded query rows (which attend
    to nothing) stay finite and never poison the cache with NaN.
    """

    def __init__(self, hf_model):
        super().__init__()
        cfg = hf_model.config
        self.embed_tokens = hf_model.model.embed_tokens
        self.layers = hf_model.model.layers
        self.norm = hf_model.model.norm
        self.lm_head = hf_model.lm_head
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.scaling = self.head_dim**-0.5
        inv_freq = hf_model.model.rotary_emb.inv_freq.detach().to(torch.float32).clone()
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _rope(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids.to(torch.float32)[:, :, None] * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, None], emb.sin()[:, None]  # [B, 1, S, head_dim]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: list[torch.Tensor] | None,
        last_only: bool,
    ):
        b, s = input_ids.shape
        x = self.embed_tokens(input_ids)
        cos, sin = self._rope(position_ids)
        # allowed[b, 1, 1, q, k]: key k is a real token and not in the future of query q.
        key_valid = attention_mask.to(torch.bool)[:, None, None, None, :]
        if past is None:
            idx = torch.arange(s, device=input_ids.device)
            allowed = key_valid & (idx[None, :] <= idx[:, None])
        else:
            allowed = key_valid  # one new query: every key up to it is in its past
        neg = torch.finfo(torch.float32).min
        rep = self.num_heads // self.num_kv_heads
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            # Grouped-query attention without materialising repeated K/V: query head h = g * rep + r
            # reads kv head g (the HF `repeat_kv` order). Queries live as [B, kv, rep, S, hd].
            q = attn.q_norm(attn.q_proj(h).view(b, s, self.num_heads, self.head_dim))
            q = q.view(b, s, self.num_kv_heads, rep, self.head_dim).permute(0, 2, 3, 1, 4)
            k = attn.k_norm(attn.k_proj(h).view(b, s, self.num_kv_heads, self.head_dim)).transpose(1, 2)
            v = attn.v_proj(h).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos[:, None] + _rotate_half(q) * sin[:, None]
            k = k * cos + _rotate_half(k) * sin
            if past is not None:
                k = torch.cat((past[2 * i], k), dim=2)
                v = torch.cat((past[2 * i + 1], v), dim=2)
            presents += [k, v]
            scores = torch.matmul(q, k[:, :, None].transpose(3, 4)) * self.scaling  # [B, kv, rep, S, T]
            scores = torch.where(allowed, scores, neg)
            probs = torch.softmax(scores, dim=-1)
            o = torch.matmul(probs, v[:, :, None])  # [B, kv, rep, S, hd]
            o = o.permute(0, 3, 1, 2, 4).reshape(b, s, self.num_heads * self.head_dim)
            x = x + attn.o_proj(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        if last_only:
            x = x[:, -1]
        logits = self.lm_head(self.norm(x))
        return logits, presents


class _Prefill(nn.Module):
    def __init__(self, core: Qwen3KvForward):
        super().__init__()
        self.core = core

    def forward(self, input_ids, attention_mask, position_ids):
        logits, presents = self.core(input_ids, attention_mask, position_ids, None, last_only=True)
        return (logits, *presents)


class _Decode(nn.Module):
    def __init__(self, core: Qwen3KvForward):
        super().__init__()
        self.core = core

    def forward(self, input_ids, attention_mask, position_ids, past: list[torch.Tensor]):
        logits, presents = self.core(input_ids, attention_mask, position_ids, past, last_only=True)
        return (logits, *presents)


def kv_names(prefix: str, num_layers: int) -> list[str]:
    """`{prefix}_key_0, {prefix}_value_0, {prefix}_key_1, ...` — the graphs' K/V order."""
    out = []
    for i in range(num_layers):
        out += [f"{prefix}_key_{i}", f"{prefix}_value_{i}"]
    return out


def _export(module: nn.Module, args: tuple, path: Path, *, input_names, output_names, dynamic_shapes, opset, external, dim_names):
    prog = torch.onnx.export(
        module,
        args,
        dynamo=True,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_shapes=dynamic_shapes,
        optimize=True,
        verbose=False,
    )
    prog.save(str(path), external_data=external)
    _name_dims(path, dim_names)


def _name_dims(path: Path, dim_names: dict[tuple[str, int], str]) -> None:
    """Gives the graph's symbolic dims readable names: {(input name, axis): name}. torch.export calls
    them `s53`, `past + 1`, ...; every occurrence of such a symbol in the graph's I/O is renamed."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = {v.name: v for v in model.graph.input}
    rename: dict[str, str] = {}
    for (name, axis), new in dim_names.items():
        old = inputs[name].type.tensor_type.shape.dim[axis].dim_param
        if not old:
            raise RuntimeError(f"{path}: input {name} axis {axis} is not symbolic after export")
        rename[old] = new
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in rename:
                d.dim_param = rename[d.dim_param]
    onnx.save(model, str(path))


def share_external_data(graphs: list[Path], shared_name: str, align: int = 4096) -> None:
    """Rewrites graphs saved with external data so they all read ONE data file, storing each distinct
    tensor once (prefill and decode hold the same weights: without this the LM is on disk twice).

    Tensors are matched by content (sha256), since the exporter gives folded weights generated names.
    Each graph's old data files are removed afterwards. Streams tensor by tensor: no whole-model copy.
    """
    import hashlib

    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    out_dir = graphs[0].parent
    shared = out_dir / shared_name
    tmp = shared.with_name(shared.name + ".tmp")
    where: dict[str, tuple[int, int]] = {}
    old_files: set[Path] = set()
    models = []
    with open(tmp, "wb") as dst:
        for path in graphs:
            if path.parent != out_dir:
                raise ValueError(f"share_external_data: {path} is not in {out_dir}")
            model = onnx.load(str(path), load_external_data=False)
            for t in model.graph.initializer:
                if t.data_location != onnx.TensorProto.EXTERNAL:
                    continue
                info = ExternalDataInfo(t)
                src = out_dir / info.location
                old_files.add(src)
                with open(src, "rb") as f:
                    f.seek(info.offset or 0)
                    blob = f.read(info.length) if info.length else f.read()
                digest = hashlib.sha256(blob).hexdigest()
                if digest not in where:
                    pad = (-dst.tell()) % align
                    dst.write(b"\0" * pad)
                    where[digest] = (dst.tell(), len(blob))
                    dst.write(blob)
                offset, length = where[digest]
                del t.external_data[:]
                for key, value in (("location", shared_name), ("offset", str(offset)), ("length", str(length))):
                    entry = t.external_data.add()
                    entry.key, entry.value = key, value
            models.append((path, model))
    tmp.replace(shared)
    for path, model in models:
        onnx.save(model, str(path))
    for f in old_files - {shared}:
        f.unlink(missing_ok=True)


def export_lm_graphs(model, out_dir: Path, *, opset: int = 18, external_data: bool | None = None) -> dict[str, str]:
    """Exports `lm_prefill.onnx` and `lm_decode.onnx` (fp32, torch dynamo exporter, opset `opset`).

    `external_data`: keep the weights in one data file shared by both graphs (`lm_weights.onnx.data`);
    `None` → only when the weights exceed `EXTERNAL_DATA_THRESHOLD_BYTES`.
    Returns {"lm_prefill": file, "lm_decode": file}, file names relative to `out_dir`.
    """
    from torch.export import Dim

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    n_layers, n_kv, hd = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
    core = Qwen3KvForward(model).eval()
    n_bytes = sum(p.numel() * 4 for p in model.parameters())
    external = n_bytes > EXTERNAL_DATA_THRESHOLD_BYTES if external_data is None else bool(external_data)

    batch, seq, past_len = Dim("batch", min=1), Dim.DYNAMIC, Dim("past", min=1)
    b, s, p = 2, 5, 7  # example sizes; none is 0 or 1, so no dim gets specialised
    ids = torch.zeros(b, s, dtype=torch.long)
    mask = torch.ones(b, s, dtype=torch.long)
    pos = torch.arange(s, dtype=torch.long)[None].expand(b, s).contiguous()
    with torch.no_grad():
        _export(
            _Prefill(core),
            (ids, mask, pos),
            out_dir / PREFILL_FILE,
            input_names=["input_ids", "attention_mask", "position_ids"],
            output_names=["logits", *kv_names("present", n_layers)],
            dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch, 1: seq}),
            opset=opset,
            external=external,
            dim_names={("input_ids", 0): "batch", ("input_ids", 1): "seq"},
        )
        past = [torch.zeros(b, n_kv, p, hd) for _ in range(2 * n_layers)]
        _export(
            _Decode(core),
            (torch.zeros(b, 1, dtype=torch.long), torch.ones(b, p + 1, dtype=torch.long), torch.full((b, 1), p), past),
            out_dir / DECODE_FILE,
            input_names=["input_ids", "attention_mask", "position_ids", *kv_names("past", n_layers)],
            output_names=["logits", *kv_names("present", n_layers)],
            dynamic_shapes=({0: batch}, {0: batch, 1: past_len + 1}, {0: batch}, [{0: batch, 2: past_len}] * (2 * n_layers)),
            opset=opset,
            external=external,
            dim_names={("input_ids", 0): "batch", ("past_key_0", 2): "past", ("attention_mask", 1): "total"},
        )
    if external:
        share_external_data([out_dir / PREFILL_FILE, out_dir / DECODE_FILE], SHARED_WEIGHTS_FILE)
    return {"lm_prefill": PREFILL_FILE, "lm_decode": DECODE_FILE}


def lm_host_config(model_or_config) -> dict:
    """Values a host needs to drive the LM graphs (see docs/io_contract_lm.md), from the loaded model or
    from the checkpoint's config dict (`read_lm_config`)."""
    cfg = model_or_config if isinstance(model_or_config, dict) else model_or_config.config.to_dict()
    return {
        "num_layers": int(cfg["num_hidden_layers"]),
        "num_kv_heads": int(cfg["num_key_value_heads"]),
        "head_dim": int(cfg["head_dim"]),
        "hidden_size": int(cfg["hidden_size"]),
        "vocab_size": int(cfg["vocab_size"]),
        "max_position_embeddings": int(cfg["max_position_embeddings"]),
        "eos_token_id": EOS_TOKEN_ID,
        "pad_token_id": PAD_TOKEN_ID,
        "audio_code_base": AUDIO_CODE_BASE,
        "num_audio_codes": N_VALID_AUDIO_CODES,
        "padding_side": "left",
        "prefill_logits": "last",
        "kv_dtype": "float32",
    }

"""`AceStepModel` (the official top level: decoder, encoder, tokenizer, detokenizer, null_condition_emb)
and the strict loader for an official `acestep-v15-*` checkpoint directory (spec §1.1, §1.9, §2.1)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .condition import ConditionEncoder
from .config import AceStepConfig
from .dit import DiTDecoder
from .fsq import AudioDetokenizer, AudioTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SILENCE_FILE = "silence_latent.pt"


class AceStepModel(nn.Module):
    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.config = config
        self.decoder = DiTDecoder(config)
        self.encoder = ConditionEncoder(config)
        self.tokenizer = AudioTokenizer(config)
        self.detokenizer = AudioDetokenizer(config)
        self.null_condition_emb = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        # [1, N, 64] float32 (already transposed from the file's [1, 64, N]); not part of the state dict
        self.register_buffer("silence_latent", torch.zeros(1, 0, config.audio_acoustic_hidden_dim),
                             persistent=False)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.state_dict().items()}


def build_model(config: AceStepConfig, device: str | torch.device = "cpu") -> AceStepModel:
    with torch.device(device):
        return AceStepModel(config)


def expected_state_shapes(config: AceStepConfig) -> dict[str, tuple[int, ...]]:
    """Official key -> shape for this config, without allocating weights."""
    return build_model(config, "meta").expected_shapes()


def _fmt(keys, limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_shapes(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise ValueError naming every missing / unexpected / mis-shaped key."""
    missing = expected.keys() - got.keys()
    unexpected = got.keys() - expected.keys()
    wrong = {k for k in expected.keys() & got.keys() if tuple(expected[k]) != tuple(got[k])}
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing key(s): {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected key(s): {_fmt(unexpected)}")
        if wrong:
            parts.append("shape mismatch: " + "; ".join(
                f"{k}: expected {list(expected[k])}, got {list(got[k])}" for k in sorted(wrong)[:20]))
        raise ValueError(f"{source}: " + " | ".join(parts))


def strip_model_prefix(keys) -> dict[str, str]:
    """Map stored key -> official key; a `model.` prefix is stripped only when every key carries it."""
    keys = list(keys)
    if keys and all(k.startswith("model.") for k in keys):
        return {k: k[len("model."):] for k in keys}
    return {k: k for k in keys}


def read_safetensors_fp32(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for k in f.keys():
            out[k] = f.get_tensor(k).to(torch.float32)
    return out


def read_silence_latent(path: Path, channels: int) -> torch.Tensor:
    """`silence_latent.pt` [1, C, N] float -> [1, N, C] float32."""
    try:
        t = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raise with the path
        raise ValueError(f"{path}: cannot read silence latent: {e}") from e
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor, got {type(t).__name__}")
    if t.dim() != 3 or t.shape[0] != 1 or t.shape[1] != channels or t.shape[2] < 1:
        raise ValueError(f"{path}: silence_latent shape {list(t.shape)}, expected [1, {channels}, N]")
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{path}: silence_latent contains NaN/Inf")
    return t.transpose(1, 2).contiguous()


def load_acestep_checkpoint(ckpt_dir: Path) -> AceStepModel:
    """Strict loader: config.json + model.safetensors (bf16/fp16/fp32 -> fp32) + silence_latent.pt.

    Every missing, unexpected or mis-shaped key is an error naming the key; a missing file is an error naming
    its path. Returns an eval-mode fp32 `AceStepModel` on CPU.
    """
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"ACE-Step checkpoint directory not found: {d}")
    paths = {name: d / name for name in (CONFIG_FILE, WEIGHTS_FILE, SILENCE_FILE)}
    for p in paths.values():
        if not p.is_file():
            raise FileNotFoundError(f"ACE-Step checkpoint file missing: {p}")
    cfg = AceStepConfig.from_json(paths[CONFIG_FILE])
    raw = read_safetensors_fp32(paths[WEIGHTS_FILE])
    names = strip_model_prefix(raw.keys())
    sd = {names[k]: v for k, v in raw.items()}
    model = build_model(cfg, "meta")
    check_state_shapes(model.expected_shapes(), {k: tuple(v.shape) for k, v in sd.items()}, str(paths[WEIGHTS_FILE]))
    bad = [k for k, v in sd.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{paths[WEIGHTS_FILE]}: non-finite values in {_fmt(bad)}")
    model.load_state_dict(sd, strict=True, assign=True)
    model.silence_latent = read_silence_latent(paths[SILENCE_FILE], cfg.audio_acoustic_hidden_dim)
    return model.eval()

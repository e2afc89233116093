"""ACE-Step v1.5 DiT `config.json` (spec §1.2) as a dataclass.

Keys the modules need are required; extra keys of the published config are tolerated (kept in
`extra`) because the official file carries many training-only and HF bookkeeping entries.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

SLIDING = "sliding_attention"
FULL = "full_attention"


@dataclasses.dataclass
class AceStepConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    sliding_window: int
    layer_types: list[str]
    in_channels: int
    audio_acoustic_hidden_dim: int
    patch_size: int
    text_hidden_dim: int
    timbre_hidden_dim: int
    timbre_fix_frame: int
    num_lyric_encoder_hidden_layers: int
    num_timbre_encoder_hidden_layers: int
    num_attention_pooler_hidden_layers: int
    pool_window_size: int
    fsq_dim: int
    fsq_input_levels: list[int]
    fsq_input_num_quantizers: int
    # optional keys (defaults = the published 2B values / HF defaults)
    use_sliding_window: bool = True
    is_turbo: bool = False
    hidden_act: str = "silu"
    attention_bias: bool = False
    max_position_embeddings: int = 32768
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    # ---- derived -------------------------------------------------------------------------
    def encoder_depth(self, own_count: int) -> int:
        """Official encoders iterate `layers[:num_hidden_layers]` (spec §10.2)."""
        return min(own_count, self.num_hidden_layers)

    # ---- io --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "AceStepConfig":
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        required = [n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{source}: missing required key(s) {missing}")
        kw = {k: d[k] for k in fields if k in d}
        extra = {k: v for k, v in d.items() if k not in fields}
        cfg = cls(**kw, extra=extra)
        cfg.validate(source)
        return cfg

    @classmethod
    def from_json(cls, path: Path) -> "AceStepConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ACE-Step config not found: {path}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON: {e}") from e
        if not isinstance(d, dict):
            raise ValueError(f"{path}: top level must be an object")
        return cls.from_dict(d, str(path))

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                d[f.name] = getattr(self, f.name)
        return d

    def validate(self, source: str = "config") -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"{source}: {msg}")

        if self.num_attention_heads % self.num_key_value_heads:
            bad(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            bad(f"head_dim={self.head_dim} must be even for RoPE")
        if len(self.layer_types) < self.num_hidden_layers:
            bad(f"layer_types has {len(self.layer_types)} entries, num_hidden_layers={self.num_hidden_layers}")
        for i, t in enumerate(self.layer_types):
            if t not in (SLIDING, FULL):
                bad(f"layer_types[{i}]={t!r} is neither {SLIDING!r} nor {FULL!r}")
        for name in ("num_lyric_encoder_hidden_layers", "num_timbre_encoder_hidden_layers",
                     "num_attention_pooler_hidden_layers"):
            if getattr(self, name) > len(self.layer_types):
                bad(f"{name}={getattr(self, name)} exceeds len(layer_types)={len(self.layer_types)}")
        if self.in_channels != 3 * self.audio_acoustic_hidden_dim:
            bad(f"in_channels={self.in_channels} != 3*audio_acoustic_hidden_dim={3 * self.audio_acoustic_hidden_dim}")
        if self.fsq_input_num_quantizers != 1:
            bad(f"fsq_input_num_quantizers={self.fsq_input_num_quantizers}: only 1 is supported")
        if any(int(l) < 2 for l in self.fsq_input_levels):
            bad(f"fsq_input_levels={self.fsq_input_levels}: every level must be >= 2")
        if self.hidden_act != "silu":
            bad(f"hidden_act={self.hidden_act!r}: only 'silu' is supported")
        if self.attention_bias:
            bad("attention_bias=true is not supported (the official checkpoints have none)")
        if self.patch_size < 1 or self.pool_window_size < 1 or self.sliding_window < 0:
            bad("patch_size, pool_window_size must be >= 1 and sliding_window >= 0")

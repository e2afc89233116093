"""Configuration of the v1 transformer (`ace_step_transformer/config.json`, spec §1) and the constants of
the official pipeline that no config file carries (spec §2, §5–§9)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..common import CheckpointError, read_json

TRANSFORMER_DIR = "ace_step_transformer"
DCAE_DIR = "music_dcae_f8c8"
VOCODER_DIR = "music_vocoder"
TEXT_ENCODER_DIR = "umt5-base"
# Not part of the HF checkpoint: the official code ships the lyric BPE file in the repository
# (`acestep/models/lyrics_utils/vocab.json`). The exporter reads it from here (or --lyric-tokenizer).
LYRIC_TOKENIZER_DIR = "lyric_tokenizer"
LYRIC_TOKENIZER_FILE = "vocab.json"

CONFIG_FILE = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"

# Conformer sizes are hard-coded in the official class (spec §3.2 / §12.12); config.json never holds them.
# The exporter accepts an optional `lyric_encoder_config` object (tiny test checkpoints only) overriding them.
OFFICIAL_LYRIC_ENCODER = {"output_size": 1024, "attention_heads": 16, "linear_units": 4096, "num_blocks": 6}

# ERG (spec §5, §7): official layer indices and the q scale.
ERG_TAU = 0.01
ERG_TEXT_LAYERS = (8, 9)            # of 12 UMT5 blocks
ERG_LYRIC_LAYERS = (4, 5)           # of 6 conformer blocks
ERG_DIT_LAYERS = (15, 16, 17, 18, 19)  # of 24 transformer blocks
OFFICIAL_DEPTHS = {"text": 12, "lyric": 6, "dit": 24}

# DCAE latent scaling and mel range (spec §9).
DCAE_SCALE = 0.1786
DCAE_SHIFT = -1.9091
MEL_MIN = -11.0
MEL_MAX = 3.0

# Pipeline constants (spec §2, §6, §8).
VOCODER_SAMPLE_RATE = 44100
OUTPUT_SAMPLE_RATE = 48000
HOP_LENGTH = 512
MEL_FRAMES_PER_LATENT = 8
TEXT_MAX_LENGTH = 256
SCHEDULER_SHIFT = 3.0
NUM_TRAIN_TIMESTEPS = 1000

_REQUIRED = ("in_channels", "num_layers", "attention_head_dim", "num_attention_heads", "mlp_ratio",
             "out_channels", "rope_theta", "speaker_embedding_dim", "text_embedding_dim", "ssl_latent_dims",
             "patch_size", "max_height", "lyric_encoder_vocab_size", "lyric_hidden_size")
# Keys the official config holds that do not change the inference graph.
_IGNORED = ("inner_dim", "max_position", "max_width", "ssl_encoder_depths", "ssl_names", "architectures")


def erg_layers(official: tuple[int, ...], n_official: int, n: int) -> list[int]:
    """The official ERG layer indices, or for a model of other depth (tiny test checkpoints) the indices
    floor(i · n / n_official), deduplicated, so ERG still acts on the same relative depth."""
    if n == n_official:
        return list(official)
    return sorted({min(n - 1, i * n // n_official) for i in official})


@dataclass(frozen=True)
class V1Config:
    in_channels: int
    num_layers: int
    attention_head_dim: int
    num_attention_heads: int
    mlp_ratio: float
    out_channels: int
    rope_theta: float
    speaker_embedding_dim: int
    text_embedding_dim: int
    ssl_latent_dims: tuple[int, ...]
    patch_size: tuple[int, int]
    max_height: int
    lyric_encoder_vocab_size: int
    lyric_hidden_size: int
    lyric_encoder: dict = field(default_factory=lambda: dict(OFFICIAL_LYRIC_ENCODER))
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def inner_dim(self) -> int:
        # the code recomputes heads × head_dim; the config's inner_dim key is ignored (spec §1)
        return self.num_attention_heads * self.attention_head_dim

    @property
    def ff_hidden(self) -> int:
        return int(self.inner_dim * self.mlp_ratio)

    @property
    def patch_channels(self) -> int:
        # PatchEmbed's first conv widens 8 -> 2048 = in_channels · 256 (spec §3.3)
        return self.in_channels * 256

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "V1Config":
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise CheckpointError(f"{source}: transformer config lacks keys {missing}")
        known = set(_REQUIRED) | set(_IGNORED) | {"lyric_encoder_config"}
        unknown = sorted(k for k in d if k not in known and not k.startswith("_"))
        if unknown:
            raise CheckpointError(f"{source}: unknown transformer config keys {unknown}")
        lyric = dict(OFFICIAL_LYRIC_ENCODER)
        extra = d.get("lyric_encoder_config") or {}
        bad = sorted(set(extra) - set(lyric))
        if bad:
            raise CheckpointError(f"{source}: unknown lyric_encoder_config keys {bad}")
        lyric.update({k: int(v) for k, v in extra.items()})
        patch = tuple(int(p) for p in d["patch_size"])
        cfg = cls(in_channels=int(d["in_channels"]), num_layers=int(d["num_layers"]),
                  attention_head_dim=int(d["attention_head_dim"]), num_attention_heads=int(d["num_attention_heads"]),
                  mlp_ratio=float(d["mlp_ratio"]), out_channels=int(d["out_channels"]),
                  rope_theta=float(d["rope_theta"]), speaker_embedding_dim=int(d["speaker_embedding_dim"]),
                  text_embedding_dim=int(d["text_embedding_dim"]),
                  ssl_latent_dims=tuple(int(x) for x in d["ssl_latent_dims"]), patch_size=patch,
                  max_height=int(d["max_height"]), lyric_encoder_vocab_size=int(d["lyric_encoder_vocab_size"]),
                  lyric_hidden_size=int(d["lyric_hidden_size"]), lyric_encoder=lyric, raw=dict(d))
        if len(patch) != 2 or patch[0] != cfg.max_height or patch[1] != 1:
            raise CheckpointError(f"{source}: patch_size {list(patch)} must be [max_height={cfg.max_height}, 1] "
                                  "(one token per latent frame, spec §3.3)")
        if cfg.lyric_encoder["output_size"] != cfg.lyric_hidden_size:
            raise CheckpointError(f"{source}: conformer width {cfg.lyric_encoder['output_size']} != "
                                  f"lyric_hidden_size {cfg.lyric_hidden_size}")
        if cfg.lyric_hidden_size % cfg.lyric_encoder["attention_heads"]:
            raise CheckpointError(f"{source}: lyric_hidden_size not divisible by the conformer heads")
        if cfg.out_channels != cfg.in_channels:
            raise CheckpointError(f"{source}: out_channels {cfg.out_channels} != in_channels {cfg.in_channels}")
        return cfg

    @classmethod
    def from_dir(cls, ckpt_dir: Path) -> "V1Config":
        path = Path(ckpt_dir) / CONFIG_FILE
        return cls.from_dict(read_json(path, "v1 transformer config"), str(path))

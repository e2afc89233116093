"""A frozen, hand-written generation loop over the per-step ABI: what `Pipeline.generate` did before the
generation driver (issue 8), on ONNX Runtime, numpy and the core's low-level wrappers only.

    from tools.parity.per_step_host import run
    out = run("fixtures/generated/tiny-package", {"caption": "calm piano", "duration": 12, "seed": 42})
    with Package("fixtures/generated/tiny-package") as pkg:   # sessions and tokenizer reused
        outs = [run(pkg, request) for request in requests]
    out["audio"]      # [B, 2, 1920·T] float32, peak-guarded
    out["track_ids"]  # one per item

It serves two purposes:

* the reference the driver-based host is checked against (`tools/parity/tests/test_host_goldens.py`
  replays the goldens recorded from the old host with it), and
* the documented example of driving a generation with the per-function ABI alone (the stages below
  name the core function each one calls).

It imports nothing from `acestep_runtime.{pipeline,request,package,outputs,sessions,cli}` (being
rewritten) and reads `manifest.json` itself. The request keys, defaults and aliases are the ones the
old `GenerationRequest` had; a value the core rejects raises the core's error. CPU only; ORT's results
depend on its thread count, so compare runs made with the same `Package(..., threads=N)`.

Stages (spec §3.1): request → frames (`ace_frames_*`) → LM hints (`audio_detokenizer`, padded with the
first silence frames) → prompts (`ace_build_prompts`) → tokens (`ace_tokenizer_encode`, HF-style
truncation) → `text_encoder`, `lyric_embedding`, `condition_encoder` → noise per item (`ace_noise_fill`)
→ `dit_cross_kv` once
→ schedule and steps (`ace_create_context`, `ace_context_timestep_input`, `ace_scheduler_step_inplace`)
with the guided [cond | uncond] batch for base/sft (`ace_guidance_cfg_interval_active`, `ace_apg_apply`
or `ace_guidance_cfg`) → tiled `vae_decoder` (`ace_vae_tile_plan`) → `ace_peak_guard` → per-item
parameters and `ace_track_id`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from acestep_runtime import frames as core_frames
from acestep_runtime import noise as core_noise
from acestep_runtime.guidance import Apg, cfg, cfg_interval_active
from acestep_runtime.prompts import build_prompts
from acestep_runtime.solver import Context
from acestep_runtime.tokenizer import Tokenizer

LATENT_CHANNELS = 64
TIMBRE_FRAMES = 750  # timbre reference: the first 750 silence frames
MAX_CODE = 63999
DEFAULT_DURATION_S = 30.0
DEFAULT_BASE_STEPS = 30
_CODE_TOKEN = re.compile(r"<\|audio_code_(\d+)\|>")

# The request keys of the old host, in its order (the per-item parameters keep this order), with defaults.
REQUEST_DEFAULTS = {
    "caption": "", "lyrics": "", "instrumental": False, "vocal_language": "unknown",
    "bpm": None, "keyscale": None, "timesignature": None, "duration": None,
    "seeds": [], "batch_size": 1, "shift": None, "timesteps": None, "infer_method": "ode",
    "inference_steps": None, "guidance_scale": 7.0, "guidance_type": "apg",
    "cfg_interval_start": 0.0, "cfg_interval_end": 1.0, "audio_codes": None, "noise_mode": "torch_cpu",
}


# -- request ---------------------------------------------------------------------------------------

def normalize_request(request: dict) -> dict:
    """Defaults and the official example files' aliases (`language`, `seed`; `think` is dropped).
    Values are kept as given (an int duration stays an int: the track id sees it)."""
    data = copy.deepcopy(dict(request))
    for alias, key, wrap in (("language", "vocal_language", False), ("seed", "seeds", True)):
        if alias in data:
            if key in data:
                raise ValueError(f"give either {alias!r} or {key!r}, not both")
            value = data.pop(alias)
            data[key] = [value] if wrap else value
    data.pop("think", None)
    unknown = sorted(set(data) - set(REQUEST_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown request key(s): {', '.join(unknown)}")
    out = {key: copy.deepcopy(data.get(key, default)) for key, default in REQUEST_DEFAULTS.items()}
    if isinstance(out["timesignature"], int) and not isinstance(out["timesignature"], bool):
        out["timesignature"] = str(out["timesignature"])
    if len(out["seeds"]) > out["batch_size"]:
        raise ValueError(f"{len(out['seeds'])} seeds given for batch_size {out['batch_size']}")
    return out


def parse_audio_codes(codes) -> np.ndarray:
    """LM codes from a list of ints or a `<|audio_code_N|>` string, clamped to [0, 63999] (spec §5.3)."""
    values = [int(m) for m in _CODE_TOKEN.findall(codes)] if isinstance(codes, str) else list(codes)
    if not values:
        raise ValueError("audio_codes holds no codes")
    return np.clip(np.asarray(values, dtype=np.int64), 0, MAX_CODE)


# -- package ---------------------------------------------------------------------------------------

class Package:
    """The parts of a model package this loop needs, read from `manifest.json`, with one ORT session
    per component and the text tokenizer, created on first use and reused by every `run`."""

    def __init__(self, root, *, threads: int | None = None):
        self.root = Path(root)
        raw = (self.root / "manifest.json").read_bytes()
        self.manifest = json.loads(raw)
        if self.manifest.get("format_version") != 1:
            raise ValueError(f"{self.root}: manifest format_version {self.manifest.get('format_version')!r} is not 1")
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        self.config = self.manifest.get("config", {})
        self.threads = threads
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._tokenizer: Tokenizer | None = None

    def close(self) -> None:
        if self._tokenizer is not None:
            self._tokenizer.close()
            self._tokenizer = None
        self._sessions.clear()

    def __enter__(self) -> "Package":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def kind(self) -> str:
        """"turbo", "base" or "sft": `is_turbo` of the DiT config, else the variant name."""
        if self.config.get("acestep", {}).get("is_turbo"):
            return "turbo"
        variant = str(self.manifest.get("model_variant", "")).lower()
        return "sft" if "sft" in variant else ("turbo" if "turbo" in variant else "base")

    def array(self, name: str) -> np.ndarray:
        return np.load(self.root / self.manifest["files"][name]["file"], mmap_mode="r")

    @property
    def text_tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.from_file(self.root / self.manifest["tokenizers"]["text"]["dir"] / "tokenizer.json")
        return self._tokenizer

    def run(self, component: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if component not in self._sessions:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.threads is not None:
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
            path = self.root / self.manifest["components"][component]["file"]
            self._sessions[component] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return self._sessions[component].run(None, feeds)


# -- the loop ----------------------------------------------------------------------------------------

def _tokenize(tokenizer: Tokenizer, text: str, max_length: int) -> np.ndarray:
    """HF `truncation=True, max_length`: the content is cut so that the appended special tokens fit."""
    ids = tokenizer.encode(text, add_special_tokens=True)
    if len(ids) > max_length:
        content = tokenizer.encode(text, add_special_tokens=False)
        if ids[: len(content)] != content:
            raise ValueError("the text tokenizer's post-processor does not append to the end; cannot truncate")
        tail = ids[len(content):]
        ids = content[: max_length - len(tail)] + tail
    return np.asarray(ids, dtype=np.int64)


def _silence(silence: np.ndarray, frames: int) -> np.ndarray:
    if frames > silence.shape[1]:
        raise ValueError(f"{frames} latent frames exceed the silence latent's {silence.shape[1]}")
    return np.asarray(silence[0, :frames], dtype=np.float32)


def run(package, request: dict) -> dict:
    """One generation on `package` (a `Package`, reused across calls, or a package directory). Returns
    latents [B, T, 64], audio [B, 2, 1920·T] (peak-guarded), seeds, frames, schedule, peaks (before the
    guard), params and track_ids (per item), and the DiT prompts."""
    if not isinstance(package, Package):
        with Package(package) as pkg:
            return run(pkg, request)
    pkg = package
    req = normalize_request(request)
    batch = req["batch_size"]
    silence = pkg.array("silence_latent")  # [1, 15000, 64]

    # 1. Frames: 5 per LM code (25 Hz latents, 5 Hz codes), else from the duration; at least 128.
    codes = parse_audio_codes(req["audio_codes"]) if req["audio_codes"] is not None else None
    if codes is not None:
        target = 5 * len(codes)
    else:
        target = core_frames.frames_from_duration(DEFAULT_DURATION_S if req["duration"] is None else float(req["duration"]))
    frames = core_frames.dit_frames(target)

    # 2. LM hints: detokenized codes, cropped, or padded with the FIRST silence frames (official handler).
    hints = None
    if codes is not None:
        (hints,) = pkg.run("audio_detokenizer", {"audio_codes": codes[None, :]})
        hints = hints[:, :frames]
        if hints.shape[1] < frames:
            hints = np.concatenate([hints, _silence(silence, frames - hints.shape[1])[None]], axis=1)
        hints = np.ascontiguousarray(hints, dtype=np.float32)

    # 3. Prompts and tokens. One request → B identical prompts: no padding, all-ones masks.
    prompt_request = {
        "caption": req["caption"], "lyrics": req["lyrics"], "instrumental": req["instrumental"],
        "bpm": req["bpm"], "keyscale": req["keyscale"], "timesignature": req["timesignature"],
        "duration": req["duration"], "language": req["vocal_language"], "has_codes": hints is not None,
    }
    prompts = build_prompts({k: v for k, v in prompt_request.items() if v is not None})
    text_cfg = pkg.config.get("text_encoder", {})
    caption_ids = _tokenize(pkg.text_tokenizer, prompts["dit_caption"], int(text_cfg.get("caption_max_length", 256)))
    lyric_ids = _tokenize(pkg.text_tokenizer, prompts["dit_lyrics"], int(text_cfg.get("lyric_max_length", 2048)))
    caption_batch = np.repeat(caption_ids[None, :], batch, axis=0)
    lyric_batch = np.repeat(lyric_ids[None, :], batch, axis=0)

    # 4. Encoders: text, lyrics, then the condition encoder (timbre from silence; context from the
    #    silence latent, or from the LM hints on the cover path).
    (text_hidden,) = pkg.run("text_encoder", {"input_ids": caption_batch, "attention_mask": np.ones_like(caption_batch)})
    (lyric_hidden,) = pkg.run("lyric_embedding", {"input_ids": lyric_batch})
    timbre = np.repeat(_silence(silence, TIMBRE_FRAMES)[None], batch, axis=0)
    src = np.repeat(_silence(silence, frames)[None] if hints is None else hints, batch, axis=0)
    enc, _enc_mask, context = pkg.run("condition_encoder", {
        "text_hidden_states": text_hidden,
        "text_attention_mask": np.ones_like(caption_batch),
        "lyric_hidden_states": lyric_hidden,
        "lyric_attention_mask": np.ones_like(lyric_batch),
        "refer_audio_packed": np.ascontiguousarray(timbre),
        "refer_audio_order_mask": np.arange(batch, dtype=np.int64),
        "src_latents": np.ascontiguousarray(src),
        "chunk_masks": np.ones((batch, frames, LATENT_CHANNELS), dtype=np.float32),
    })

    # 5. Noise: one freshly seeded generator per item, [1, T, 64] each (spec §4.4); seed -1 → random.
    seeds = list(req["seeds"]) + [-1] * (batch - len(req["seeds"]))
    items, used_seeds = [], []
    for seed in seeds:
        values, used = core_noise.randn((1, frames, LATENT_CHANNELS), seed, mode=req["noise_mode"])
        items.append(values)
        used_seeds.append(used)
    x = np.ascontiguousarray(np.concatenate(items, axis=0))

    # 6. Schedule and solver state in a core context.
    kind = pkg.kind
    config = {"model": kind, "method": req["infer_method"], "seeds": used_seeds, "noise": {"mode": req["noise_mode"]}}
    if req["shift"] is not None:
        config["shift"] = float(req["shift"])
    if req["timesteps"] is not None:
        config["timesteps"] = [float(t) for t in req["timesteps"]]
    if kind != "turbo":
        config["steps"] = req["inference_steps"] or DEFAULT_BASE_STEPS

    # 7. Guidance (base/sft with scale > 1; turbo never guides): the DiT runs on [cond | uncond], the
    #    uncond half with null_condition_emb broadcast over the encoder sequence (spec §4.3).
    guided = kind != "turbo" and req["guidance_scale"] > 1.0
    if guided:
        null = np.broadcast_to(pkg.array("null_condition_emb"), enc.shape)
        context = np.concatenate([context, context])
        enc = np.concatenate([enc, null]).astype(np.float32, copy=False)
    apg = Apg() if guided and req["guidance_type"] == "apg" else None
    # The encoder side of every DiT layer's cross-attention, once: the steps only read it.
    (cross_kv,) = pkg.run("dit_cross_kv", {"encoder_hidden_states": np.ascontiguousarray(enc)})

    # 8. The DiT loop: velocity at the context's model timestep, then the core's step, in place.
    try:
        with Context(config) as ctx:
            schedule = [float(t) for t in ctx.timesteps]
            for i in range(ctx.num_steps):
                t = ctx.timestep_input(i)
                x_in = np.concatenate([x, x]) if guided else x
                times = np.full(x_in.shape[0], t, dtype=np.float32)
                (v,) = pkg.run("dit_decoder", {"hidden_states": x_in, "timestep": times, "timestep_r": times,
                                               "context_latents": context, "cross_kv": cross_kv})
                if guided:
                    v_cond, v_uncond = np.ascontiguousarray(v[:batch]), np.ascontiguousarray(v[batch:])
                    if not cfg_interval_active(schedule[i], req["cfg_interval_start"], req["cfg_interval_end"]):
                        v = v_cond
                    elif apg is not None:
                        v = apg.apply(v_cond, v_uncond, req["guidance_scale"])
                    else:
                        v = cfg(v_cond, v_uncond, req["guidance_scale"])
                ctx.step_inplace(i, x, v)
    finally:
        if apg is not None:
            apg.close()

    # 9. Tiled VAE decode: each window is decoded with its overlap, which is cropped away (spec §6).
    z = np.ascontiguousarray(x.transpose(0, 2, 1))
    pieces = []
    for w in core_frames.vae_tile_plan(frames):
        (audio,) = pkg.run("vae_decoder", {"latents": np.ascontiguousarray(z[:, :, w.start:w.end])})
        pieces.append(audio[:, :, w.crop_left:audio.shape[-1] - w.crop_right])
    audio = np.ascontiguousarray(np.concatenate(pieces, axis=-1), dtype=np.float32)
    peaks = [float(p) for p in core_frames.peak_guard(audio)]  # in place

    # 10. Per-item parameters and track ids: the request without seeds and batch size, plus the
    #     item's seed, the frames and the manifest's sha256 (batch item i = the single run of its seed).
    params = []
    for seed in used_seeds:
        p = {k: copy.deepcopy(v) for k, v in req.items() if k not in ("seeds", "batch_size")}
        p.update(seed=seed, frames=frames, model_manifest_sha256=pkg.manifest_sha256)
        params.append(p)
    return {
        "latents": x, "audio": audio, "seeds": used_seeds, "frames": frames, "schedule": schedule,
        "peaks": peaks, "params": params, "track_ids": [core_frames.track_id(p) for p in params],
        "prompts": {"dit_caption": prompts["dit_caption"], "dit_lyrics": prompts["dit_lyrics"]},
    }

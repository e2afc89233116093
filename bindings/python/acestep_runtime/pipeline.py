"""text2music with the DiT (spec §3.1, the path without the LM), on ONNX Runtime + the core.

Stages: prompts (core) → tokenize (core) → text encoder + lyric embeddings → condition encoder
(timbre from the silence latent) → seeded noise (core) → DiT loop with the core's solver steps
(CFG/APG for base/sft packages) → tiled VAE decode (core's tile plan) → peak guard (core).
LM audio codes in the request take the cover path: detokenized hints become the context.

No torch, transformers or diffusers are imported here, ever.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import frames as core_frames
from . import noise as core_noise
from .guidance import Apg, cfg, cfg_interval_active
from .package import ModelPackage, PackageError
from .prompts import build_prompts
from .request import DEFAULT_DURATION_S, GenerationRequest, RequestError
from .sessions import Sessions
from .solver import Context
from .tokenizer import Tokenizer

log = logging.getLogger("acestep_runtime")

LATENT_CHANNELS = 64
TIMBRE_FRAMES = 750
MAX_CODE = 63999
_CODE_TOKEN = re.compile(r"<\|audio_code_(\d+)\|>")

# progress(stage, done, total): stage is "encode", "diffusion" or "decode"
ProgressFn = Callable[[str, int, int], None]


class Cancelled(Exception):
    """Generation was cancelled between two steps; nothing was written."""


@dataclass
class GenerationResult:
    audio: np.ndarray  # [B, 2, 1920·T] float32, peak-guarded
    latents: np.ndarray  # [B, T, 64] final x0
    seeds: list[int]  # the seed actually used per item
    frames: int  # T, latent frames at 25 Hz
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    ort_seconds: float = 0.0  # time inside onnxruntime during this call
    prompts: dict = field(default_factory=dict)
    schedule: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)  # per item, before the peak guard


def parse_audio_codes(codes) -> np.ndarray:
    """LM codes from a list of ints or a `<|audio_code_N|>` string, clamped to [0, 63999] (spec §5.3)."""
    if isinstance(codes, str):
        values = [int(m) for m in _CODE_TOKEN.findall(codes)]
        if not values:
            raise RequestError("audio_codes string contains no <|audio_code_N|> tokens")
    else:
        values = list(codes)
        if not values:
            raise RequestError("audio_codes is empty")
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise RequestError("audio_codes must contain integers only")
    return np.clip(np.asarray(values, dtype=np.int64), 0, MAX_CODE)


def truncate_ids(with_special: list[int], content: list[int], max_length: int) -> list[int]:
    """HF truncation (``truncation=True, max_length``): content is cut so that the special tokens the
    post-processor appends still fit."""
    if len(with_special) <= max_length:
        return with_special
    if with_special[: len(content)] != content:
        raise PackageError("text tokenizer post-processor does not append to the end; cannot truncate")
    tail = with_special[len(content):]
    return content[: max_length - len(tail)] + tail


class Pipeline:
    """Sessions and tokenizer of one model package, reused across generations."""

    def __init__(self, package: ModelPackage, sessions: Sessions):
        self.package = package
        self.sessions = sessions
        self.kind = package.model_kind()
        self.text_tokenizer = Tokenizer.from_file(package.tokenizer_path("text"))
        text_cfg = package.config.get("text_encoder", {})
        self.caption_max_length = int(text_cfg.get("caption_max_length", 256))
        self.lyric_max_length = int(text_cfg.get("lyric_max_length", 2048))
        self.silence = package.array("silence_latent")  # [1, 15000, 64]

    @classmethod
    def open(cls, path, *, device: str = "auto", threads: int | None = None, verify: bool = False) -> "Pipeline":
        package = ModelPackage.open(path, verify=verify)
        for needed in ("text_encoder", "lyric_embedding", "condition_encoder", "dit_decoder", "vae_decoder"):
            package.component(needed)
        return cls(package, Sessions(package, device=device, threads=threads))

    def close(self) -> None:
        self.text_tokenizer.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- stages ----------------------------------------------------------------------------------

    def _tokenize(self, text: str, max_length: int) -> np.ndarray:
        ids = self.text_tokenizer.encode(text, add_special_tokens=True)
        if len(ids) > max_length:
            content = self.text_tokenizer.encode(text, add_special_tokens=False)
            ids = truncate_ids(ids, content, max_length)
        return np.asarray(ids, dtype=np.int64)

    def _silence_frames(self, frames: int) -> np.ndarray:
        if frames > self.silence.shape[1]:
            raise RequestError(f"{frames} latent frames exceed the silence latent's {self.silence.shape[1]}")
        return np.asarray(self.silence[0, :frames], dtype=np.float32)

    def _encode(self, request: GenerationRequest, batch: int, frames: int, hints: np.ndarray | None):
        prompt_request = {
            "caption": request.caption,
            "lyrics": request.lyrics,
            "instrumental": request.instrumental,
            "bpm": request.bpm,
            "keyscale": request.keyscale,
            "timesignature": request.timesignature,
            "duration": request.duration,
            "language": request.vocal_language,
            "has_codes": hints is not None,
        }
        prompts = build_prompts({k: v for k, v in prompt_request.items() if v is not None})
        caption_ids = self._tokenize(prompts["dit_caption"], self.caption_max_length)
        lyric_ids = self._tokenize(prompts["dit_lyrics"], self.lyric_max_length)
        # One request → B identical prompts: no padding needed, masks are all ones.
        caption_batch = np.repeat(caption_ids[None, :], batch, axis=0)
        lyric_batch = np.repeat(lyric_ids[None, :], batch, axis=0)
        (text_hidden,) = self.sessions.run(
            "text_encoder", {"input_ids": caption_batch, "attention_mask": np.ones_like(caption_batch)}
        )
        (lyric_hidden,) = self.sessions.run("lyric_embedding", {"input_ids": lyric_batch})
        timbre = np.repeat(self._silence_frames(TIMBRE_FRAMES)[None], batch, axis=0)
        if hints is None:
            src = np.repeat(self._silence_frames(frames)[None], batch, axis=0)
        else:
            src = np.repeat(hints, batch, axis=0)
        enc, enc_mask, context = self.sessions.run(
            "condition_encoder",
            {
                "text_hidden_states": text_hidden,
                "text_attention_mask": np.ones_like(caption_batch),
                "lyric_hidden_states": lyric_hidden,
                "lyric_attention_mask": np.ones_like(lyric_batch),
                "refer_audio_packed": np.ascontiguousarray(timbre),
                "refer_audio_order_mask": np.arange(batch, dtype=np.int64),
                "src_latents": np.ascontiguousarray(src),
                "chunk_masks": np.ones((batch, frames, LATENT_CHANNELS), dtype=np.float32),
            },
        )
        return prompts, enc, context

    def _hints(self, codes: np.ndarray, frames: int) -> np.ndarray:
        """Detokenized LM hints [1, frames, 64], padded with silence or cropped (spec §3.1 step 3)."""
        (hints,) = self.sessions.run("audio_detokenizer", {"audio_codes": codes[None, :]})
        hints = hints[:, :frames]
        if hints.shape[1] < frames:
            # The official handler pads with the *first* frames of the silence latent.
            pad = self._silence_frames(frames - hints.shape[1])[None]
            hints = np.concatenate([hints, pad], axis=1)
        return np.ascontiguousarray(hints, dtype=np.float32)

    def _guided_inputs(self, context: np.ndarray, enc: np.ndarray):
        """Context and encoder states of the [cond | uncond] batch a guided DiT step runs on; the
        uncond half broadcasts ``null_condition_emb`` over the encoder sequence (spec §4.3). They do
        not change between steps, so they are built once per generation."""
        null = np.broadcast_to(self.package.array("null_condition_emb"), enc.shape)
        return np.concatenate([context, context]), np.concatenate([enc, null]).astype(np.float32, copy=False)

    def _velocity(self, x, t, context, enc, guided, guidance, request, step_t):
        """DiT velocity at step time t. When guided, ``context`` and ``enc`` are the doubled
        [cond | uncond] inputs of :meth:`_guided_inputs`."""
        if guided:
            x = np.concatenate([x, x])
        batch = x.shape[0]
        times = np.full(batch, t, dtype=np.float32)
        (v,) = self.sessions.run(
            "dit_decoder",
            {"hidden_states": x, "timestep": times, "timestep_r": times,
             "context_latents": context, "encoder_hidden_states": enc},
        )
        if not guided:
            return v
        half = batch // 2
        v_cond, v_uncond = v[:half], v[half:]
        if not cfg_interval_active(step_t, request.cfg_interval_start, request.cfg_interval_end):
            return np.ascontiguousarray(v_cond)
        if guidance is not None:
            return guidance.apply(np.ascontiguousarray(v_cond), np.ascontiguousarray(v_uncond), request.guidance_scale)
        return cfg(np.ascontiguousarray(v_cond), np.ascontiguousarray(v_uncond), request.guidance_scale)

    def _decode(self, latents: np.ndarray, check_cancel, progress) -> np.ndarray:
        """Tiled VAE decode of [B, T, 64] latents → [B, 2, 1920·T] (spec §6)."""
        frames = latents.shape[1]
        plan = core_frames.vae_tile_plan(frames)
        z = np.ascontiguousarray(latents.transpose(0, 2, 1))
        pieces = []
        for i, w in enumerate(plan):
            check_cancel()
            (audio,) = self.sessions.run("vae_decoder", {"latents": np.ascontiguousarray(z[:, :, w.start:w.end])})
            end = audio.shape[-1] - w.crop_right
            pieces.append(audio[:, :, w.crop_left:end])
            if progress:
                progress("decode", i + 1, len(plan))
        return np.ascontiguousarray(np.concatenate(pieces, axis=-1), dtype=np.float32)

    # -- the whole path ------------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest | dict,
        *,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        if isinstance(request, dict):
            request = GenerationRequest.from_dict(request)
        request.validate()

        def check_cancel():
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation cancelled")

        ort_before = self.sessions.stats.total
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        batch = request.batch_size

        codes = parse_audio_codes(request.audio_codes) if request.audio_codes is not None else None
        if codes is not None:
            # The DiT length follows the code count, not a requested duration (spec §3.1, §8.22).
            target_frames = 5 * len(codes)
        else:
            duration = DEFAULT_DURATION_S if request.duration is None else float(request.duration)
            target_frames = core_frames.frames_from_duration(duration)
        frames = core_frames.dit_frames(target_frames)
        hints = self._hints(codes, frames) if codes is not None else None

        check_cancel()
        if progress:
            progress("encode", 0, 1)
        prompts, enc, context = self._encode(request, batch, frames, hints)
        timings["encode"] = time.perf_counter() - t0
        if progress:
            progress("encode", 1, 1)

        # Noise: one generator per item, [1, T, 64] each (spec §4.4).
        t1 = time.perf_counter()
        items, used_seeds = [], []
        for seed in request.seeds_for_batch():
            values, used = core_noise.randn((1, frames, LATENT_CHANNELS), seed, mode=request.noise_mode)
            items.append(values)
            used_seeds.append(used)
        x = np.ascontiguousarray(np.concatenate(items, axis=0))

        config = {"model": self.kind, "method": request.infer_method, "seeds": used_seeds,
                  "noise": {"mode": request.noise_mode}}
        if request.shift is not None:
            config["shift"] = float(request.shift)
        if request.timesteps is not None:
            config["timesteps"] = [float(t) for t in request.timesteps]
        if self.kind != "turbo":
            config["steps"] = request.inference_steps or 30
        # Turbo ignores guidance, as the official turbo model does; base/sft guide when scale > 1.
        guided = self.kind != "turbo" and request.guidance_scale > 1.0
        apg = Apg() if guided and request.guidance_type == "apg" else None
        if guided:
            context, enc = self._guided_inputs(context, enc)
        try:
            with Context(config) as ctx:
                schedule = [float(v) for v in ctx.timesteps]
                steps = ctx.num_steps
                for i in range(steps):
                    check_cancel()
                    t = ctx.timestep_input(i)
                    v = self._velocity(x, t, context, enc, guided, apg, request, schedule[i])
                    ctx.step_inplace(i, x, v)
                    if progress:
                        progress("diffusion", i + 1, steps)
        finally:
            if apg is not None:
                apg.close()
        latents = x
        timings["diffusion"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        audio = self._decode(latents, check_cancel, progress)
        peaks = core_frames.peak_guard(audio)
        timings["decode"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        return GenerationResult(
            audio=audio,
            latents=latents,
            seeds=used_seeds,
            frames=frames,
            sample_rate=int(self.package.config.get("vae", {}).get("sample_rate", 48000)),
            timings=timings,
            ort_seconds=self.sessions.stats.total - ort_before,
            prompts={"dit_caption": prompts["dit_caption"], "dit_lyrics": prompts["dit_lyrics"]},
            schedule=schedule,
            peaks=[float(p) for p in peaks],
        )

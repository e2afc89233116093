"""Independent PyTorch reference of the turbo text2music DiT path (no LM), spec §0.1, §1.3–1.9, §3, §4.1, §4.4, §6.

Neural parts come from torch-side modules only:
- text encoder: `transformers.Qwen3Model` loaded from `Qwen3-Embedding-0.6B/` (`last_hidden_state`); lyric
  embeddings are its `embed_tokens` lookup (spec §1.4);
- condition encoder, DiT decoder, FSQ `project_out` and detokenizer: the exporter's torch modules
  (`tools.onnx_export.acestep.load_acestep_checkpoint`), the same modules the ONNX graphs are traced from;
- VAE: `diffusers.AutoencoderOobleck.from_pretrained(vae/)` (weight norm as stored, not folded).

Everything else is written here from the spec and shares no code with the host or the core: prompt
templates, tokenization (the `tokenizers` package on the checkpoint's `tokenizer.json`, HF truncation),
frame count, schedule, seeded noise, ODE/SDE loop, FSQ index decoding, tiled VAE decode and peak guard.
All float32 on CPU under `torch.no_grad()`.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from pathlib import Path

import numpy as np
import torch

# --- constants from the spec -------------------------------------------------------------------------

SAMPLE_RATE = 48000
HOP = 1920  # VAE hop, spec §1.8
LATENT_DIM = 64
MIN_FRAMES = 128  # spec §3.1 "Minimum length", §8.22
TIMBRE_FRAMES = 750  # spec §1.5, §1.9
CODE_FRAMES = 5  # 1 LM code = 5 latent frames, spec §1.7
FSQ_LEVELS = [8, 8, 8, 5, 5, 5]
CAPTION_MAX_LENGTH = 256
LYRIC_MAX_LENGTH = 2048
VAE_CHUNK = 512
VAE_OVERLAP = 64

TEXT2MUSIC_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
COVER_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
INSTRUMENTAL_LYRICS = "[Instrumental]"
TURBO_SHIFTS = (1.0, 2.0, 3.0)
TURBO_STEPS = 8
MAX_CUSTOM_STEPS = 20

DIT_DIR = "acestep-v15-turbo"
TEXT_DIR = "Qwen3-Embedding-0.6B"
VAE_DIR = "vae"

REQUEST_KEYS = {
    "caption", "lyrics", "instrumental", "vocal_language", "bpm", "keyscale", "timesignature", "duration",
    "shift", "timesteps", "infer_method", "audio_codes",
}


# --- prompts (spec §1.3, §1.4) -----------------------------------------------------------------------

def _meta_value(value) -> str:
    """The official metadata dict keeps a value when it is truthy (after strip for strings), else "N/A"."""
    if value is None:
        return "N/A"
    if isinstance(value, str):
        return value if value.strip() and value != "N/A" else "N/A"
    return str(value) if value else "N/A"


def metas_block(*, bpm=None, timesignature=None, keyscale=None, duration=None) -> str:
    """Four lines in fixed order; duration truncated with int(); no duration → "30 seconds"."""
    dur = f"{int(duration)} seconds" if duration is not None else "30 seconds"
    return (f"- bpm: {_meta_value(bpm)}\n"
            f"- timesignature: {_meta_value(timesignature)}\n"
            f"- keyscale: {_meta_value(keyscale)}\n"
            f"- duration: {dur}\n")


def caption_prompt(caption: str, metas: str, *, cover: bool) -> str:
    instruction = COVER_INSTRUCTION if cover else TEXT2MUSIC_INSTRUCTION
    if not instruction.endswith(":"):
        instruction += ":"
    return "# Instruction\n" + instruction + "\n\n# Caption\n" + caption + "\n\n# Metas\n" + metas + "<|endoftext|>\n"


def lyric_prompt(lyrics: str, language: str) -> str:
    return "# Languages\n" + language + "\n\n# Lyric\n" + lyrics + "<|endoftext|>"


def build_prompts(request: dict) -> tuple[str, str]:
    """(caption prompt, lyric prompt) for a request dict (keys as in `REQUEST_KEYS`)."""
    cover = bool(request.get("audio_codes"))
    metas = metas_block(bpm=request.get("bpm"), timesignature=request.get("timesignature"),
                        keyscale=request.get("keyscale"), duration=request.get("duration"))
    lyrics = request.get("lyrics") or ""
    if request.get("instrumental") or not lyrics.strip():
        lyrics = INSTRUMENTAL_LYRICS
    language = request.get("vocal_language") or "unknown"
    return caption_prompt(request.get("caption") or "", metas, cover=cover), lyric_prompt(lyrics, language)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str, max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.no_padding()
    # `tokenizers` truncation reserves room for the post-processor's tokens, as HF `truncation=True` does
    tok.enable_truncation(max_length=max_length)
    return tok


def tokenize(tokenizer_json: Path, text: str, max_length: int) -> list[int]:
    """HF-style encode: special tokens parsed in the text, post-processor EOS appended, truncated to max_length."""
    return list(_tokenizer(str(tokenizer_json), max_length).encode(text, add_special_tokens=True).ids)


# --- frames, schedule (spec §3.1, §4.1) --------------------------------------------------------------

def frames_for_duration(duration: float) -> int:
    """T = int(round(duration, 1) * 48000) // 1920, with the official 0.1 s floor (float arithmetic kept)."""
    d = max(0.1, round(float(duration), 1))
    return int(d * SAMPLE_RATE) // HOP


def shifted(t: float, s: float) -> float:
    return s * t / (1.0 + (s - 1.0) * t)


def nearest_shift(shift: float) -> float:
    """Nearest of [1, 2, 3]; ties go to the earlier value."""
    best = TURBO_SHIFTS[0]
    for s in TURBO_SHIFTS[1:]:
        if abs(shift - s) < abs(shift - best):
            best = s
    return best


def turbo_schedule(shift: float) -> list[float]:
    s = nearest_shift(shift)
    return [shifted(1.0 - i / TURBO_STEPS, s) for i in range(TURBO_STEPS)]


def valid_timesteps() -> list[float]:
    """Union of the three turbo lists, descending, 20 values."""
    values: list[float] = []
    for s in TURBO_SHIFTS:
        for i in range(TURBO_STEPS):
            t = shifted(1.0 - i / TURBO_STEPS, s)
            if not any(abs(t - v) < 1e-12 for v in values):
                values.append(t)
    return sorted(values, reverse=True)


def resolve_schedule(shift: float = 3.0, timesteps=None) -> list[float]:
    """Spec §4.1: custom timesteps (5 rules) override the shift schedule."""
    if timesteps is None:
        return turbo_schedule(shift)
    ts = [float(t) for t in timesteps]
    while ts and ts[-1] == 0.0:  # 1. drop trailing exact zeros
        ts.pop()
    if not ts:  # 2. nothing left
        return turbo_schedule(shift)
    ts = ts[:MAX_CUSTOM_STEPS]  # 3. at most 20
    valid = valid_timesteps()
    out = []
    for t in ts:  # 4. snap, ties to the first in list order
        best = valid[0]
        for v in valid[1:]:
            if abs(t - v) < abs(t - best):
                best = v
        out.append(best)
    return out  # 5. no sort, no de-duplication


# --- noise (spec §4.4) -------------------------------------------------------------------------------

def initial_noise(seeds: list[int], frames: int) -> torch.Tensor:
    return torch.cat([torch.randn([1, frames, LATENT_DIM], generator=torch.Generator().manual_seed(int(s)),
                                  dtype=torch.float32) for s in seeds], dim=0)


def sde_noise(seeds: list[int], step: int, frames: int) -> torch.Tensor:
    """The core's documented SDE policy: ε of step i for item b from manual_seed(seed_b + i + 1)."""
    return torch.cat([torch.randn([1, frames, LATENT_DIM], generator=torch.Generator().manual_seed(int(s) + step + 1),
                                  dtype=torch.float32) for s in seeds], dim=0)


# --- FSQ index decode (spec §1.7) --------------------------------------------------------------------

def fsq_values(codes) -> torch.Tensor:
    """codes [T5] ints in [0, 64000) → values [T5, 6] in [-1, 1]: l_d = (n // basis_d) mod L_d, z = 2l/(L-1) - 1."""
    out = np.zeros((len(codes), len(FSQ_LEVELS)), dtype=np.float64)
    for i, n in enumerate(codes):
        n = int(n)
        basis = 1
        for d, level in enumerate(FSQ_LEVELS):
            l = (n // basis) % level
            out[i, d] = l * 2.0 / (level - 1) - 1.0
            basis *= level
    return torch.from_numpy(out).to(torch.float32)


# --- VAE tiled decode and peak guard (spec §6) ---------------------------------------------------------

def tiled_decode(decode, latents: torch.Tensor, chunk: int = VAE_CHUNK, overlap: int = VAE_OVERLAP) -> torch.Tensor:
    """latents [B, 64, T] → audio [B, 2, hop·T]. Direct when T ≤ chunk, else cores of stride chunk − 2·overlap
    each decoded with up to `overlap` frames of context per side, the context samples dropped."""
    t = latents.shape[-1]
    if t <= chunk:
        return decode(latents)
    stride = chunk - 2 * overlap
    pieces = []
    for i in range(math.ceil(t / stride)):
        core_start, core_end = i * stride, min((i + 1) * stride, t)
        win_start, win_end = max(0, core_start - overlap), min(t, core_end + overlap)
        audio = decode(latents[:, :, win_start:win_end])
        factor = audio.shape[-1] / (win_end - win_start)
        cut_start = int(round((core_start - win_start) * factor))
        cut_end = int(round((win_end - core_end) * factor))
        pieces.append(audio[:, :, cut_start:audio.shape[-1] - cut_end])
    return torch.cat(pieces, dim=-1)


def peak_guard(audio: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """If any item peaks above 1, each item is divided by max(its peak, 1). Returns (audio, peaks before)."""
    peaks = audio.abs().amax(dim=(1, 2))
    if bool((peaks > 1.0).any()):
        audio = audio / torch.clamp(peaks, min=1.0)[:, None, None]
    return audio, [float(p) for p in peaks]


# --- models ------------------------------------------------------------------------------------------

def _check_loading(path: Path, info: dict) -> None:
    """from_pretrained only warns about missing keys (and leaves random weights): make it an error."""
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise ValueError(f"{path}: checkpoint keys do not match the model: {bad}")


def load_models(checkpoints_dir, dit_dir: str = DIT_DIR):
    """(acestep model, Qwen3Model, AutoencoderOobleck), all fp32 eval on CPU; cached per directory."""
    # One cache key per directory however it is named (str or Path, default spelled out or not): a
    # second key would load a second copy, which at full size (~12.7 GB fp32) does not fit in 24 GiB.
    return _load_models(str(Path(checkpoints_dir).resolve()), dit_dir)


@functools.lru_cache(maxsize=2)
def _load_models(checkpoints_dir: str, dit_dir: str):
    from diffusers import AutoencoderOobleck
    from transformers import Qwen3Model

    from tools.onnx_export.acestep import load_acestep_checkpoint

    root = Path(checkpoints_dir)
    acestep = load_acestep_checkpoint(root / dit_dir).float().eval()
    text, info = Qwen3Model.from_pretrained(root / TEXT_DIR, dtype=torch.float32, output_loading_info=True)
    _check_loading(root / TEXT_DIR, info)
    vae, info = AutoencoderOobleck.from_pretrained(root / VAE_DIR, torch_dtype=torch.float32, output_loading_info=True)
    _check_loading(root / VAE_DIR, info)
    return acestep, text.float().eval(), vae.float().eval()


def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    return vae.decode(latents).sample


# --- the pipeline ------------------------------------------------------------------------------------

class _StageClock:
    """clock(stage) is a context manager adding the wall time of its block to timings[stage] and its
    process CPU time to timings[stage + "_cpu"] (lists for "dit_steps"); a no-op without a timings dict."""

    def __init__(self, timings: dict | None):
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if self.timings is None:
            yield
            return
        start, cpu_start = time.perf_counter(), time.process_time()
        yield
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if stage == "dit_steps":
            self.timings.setdefault(stage, []).append(elapsed)
            self.timings.setdefault(stage + "_cpu", []).append(cpu)
        else:
            self.timings[stage] = self.timings.get(stage, 0.0) + elapsed
            self.timings[stage + "_cpu"] = self.timings.get(stage + "_cpu", 0.0) + cpu


def _check_request(request: dict) -> None:
    unknown = set(request) - REQUEST_KEYS
    if unknown:
        raise ValueError(f"unknown request key(s) for the reference: {sorted(unknown)}")
    method = request.get("infer_method", "ode")
    if method not in ("ode", "sde"):
        raise ValueError(f"infer_method must be 'ode' or 'sde', got {method!r}")
    if not request.get("audio_codes") and request.get("duration") is None:
        raise ValueError("the DiT-only path needs a duration (or audio_codes)")


@torch.no_grad()
def run_reference(checkpoints_dir: Path, request: dict, *, seeds: list[int], dit_dir: str = DIT_DIR,
                  timings: dict | None = None) -> dict:
    """Run the turbo text2music DiT path for one request and len(seeds) batch items (one seed per item).

    Returns numpy arrays: latents [B,T,64] (final x0), audio [B,2,1920·T] (tiled decode + peak guard),
    and the intermediates (prompts, ids, text/lyric hidden states, encoder states, context, noise, hints).
    T is the DiT length, max(128, requested frames); the audio is not cropped back (as the official code).
    `timings`, when given, receives wall seconds per stage (scripts/bench.py): text (text encoder + lyric
    embedding), condition (condition encoder), dit_steps (one entry per step), vae (tiled decode); and the
    process CPU seconds of each under `<stage>_cpu`.
    """
    clock = _StageClock(timings)
    _check_request(request)
    if not seeds:
        raise ValueError("seeds must hold one seed per batch item")
    root = Path(checkpoints_dir)
    acestep, text_encoder, vae = load_models(str(root), dit_dir)
    silence = acestep.silence_latent.to(torch.float32)  # [1, N, 64]
    batch = len(seeds)

    codes = [int(c) for c in request["audio_codes"]] if request.get("audio_codes") else None
    requested = CODE_FRAMES * len(codes) if codes is not None else frames_for_duration(request["duration"])
    frames = max(MIN_FRAMES, requested)

    # prompts and tokens
    cap_text, lyr_text = build_prompts(request)
    tok_json = root / TEXT_DIR / "tokenizer.json"
    caption_ids = tokenize(tok_json, cap_text, CAPTION_MAX_LENGTH)
    lyric_ids = tokenize(tok_json, lyr_text, LYRIC_MAX_LENGTH)
    cap = torch.tensor([caption_ids] * batch, dtype=torch.int64)
    lyr = torch.tensor([lyric_ids] * batch, dtype=torch.int64)

    # text encoder: input_ids only, as the official handler (identical items → no padding)
    with clock("text"):
        text_hidden = text_encoder(input_ids=cap).last_hidden_state.float()
        lyric_hidden = text_encoder.embed_tokens(lyr).float()

    # context: silence (text2music) or detokenized LM hints padded with silence[:pad] / cropped (cover)
    hints = None
    if codes is not None:
        quantized = acestep.tokenizer.quantizer.project_out(fsq_values(codes)[None])  # [1, T5, fsq_dim]
        hints = acestep.detokenizer(quantized)  # [1, 5·T5, 64]
        if hints.shape[1] < frames:
            hints = torch.cat([hints, silence[:, :frames - hints.shape[1]]], dim=1)
        hints = hints[:, :frames]
        src = hints.expand(batch, -1, -1)
    else:
        src = silence[:, :frames].expand(batch, -1, -1)
    chunk_masks = torch.ones(batch, frames, LATENT_DIM)
    context = torch.cat([src, chunk_masks], dim=-1).contiguous()  # [B, T, 128]

    # condition encoder: timbre = silence[:, :750], one clip per item, order arange(B)
    timbre = silence[:, :TIMBRE_FRAMES].expand(batch, -1, -1).contiguous()
    with clock("condition"):
        enc, enc_mask = acestep.encoder(text_hidden, torch.ones_like(cap), lyric_hidden, torch.ones_like(lyr),
                                        timbre, torch.arange(batch, dtype=torch.int64))

    # noise and solver loop
    shift = request.get("shift")
    schedule = resolve_schedule(3.0 if shift is None else float(shift), request.get("timesteps"))
    noise = initial_noise(seeds, frames)
    method = request.get("infer_method", "ode")
    x = noise.clone()
    x0 = None
    for i, t in enumerate(schedule):
        tt = torch.full((batch,), t, dtype=torch.float32)
        with clock("dit_steps"):
            v = acestep.decoder(x, tt, tt, context, enc)
        if i == len(schedule) - 1:
            x0 = x - v * t
            break
        t_next = schedule[i + 1]
        if method == "ode":
            x = x - v * (t - t_next)
        else:
            x0_hat = x - v * t
            x = t_next * sde_noise(seeds, i, frames) + (1.0 - t_next) * x0_hat

    # VAE: decode x0ᵀ, tiled; peak guard
    with clock("vae"):
        audio = tiled_decode(lambda z: vae_decode(vae, z), x0.transpose(1, 2).contiguous()).float()
    audio, peaks = peak_guard(audio)

    return {
        "latents": x0.numpy().astype(np.float32),
        "audio": audio.numpy().astype(np.float32),
        "frames": frames,
        "requested_frames": requested,
        "schedule": schedule,
        "seeds": list(seeds),
        "caption_prompt": cap_text,
        "lyric_prompt": lyr_text,
        "caption_ids": caption_ids,
        "lyric_ids": lyric_ids,
        "text_hidden_states": text_hidden.numpy(),
        "lyric_hidden_states": lyric_hidden.numpy(),
        "encoder_hidden_states": enc.numpy(),
        "encoder_attention_mask": enc_mask.numpy(),
        "context_latents": context.numpy(),
        "refer_audio_packed": timbre.numpy(),
        "noise": noise.numpy(),
        "hints": None if hints is None else hints.numpy(),
        "peaks": peaks,
    }


def main(argv=None) -> int:
    """python -m tools.parity.torch_reference --checkpoints DIR --request REQ.json --seeds 1 2 --out ref.npz"""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m tools.parity.torch_reference",
                                 description="Run the PyTorch reference on one request and save every tensor.")
    ap.add_argument("--checkpoints", required=True, type=Path, help="official-layout checkpoint directory")
    ap.add_argument("--request", required=True, type=Path,
                    help="request JSON (a fixture case {'request': {...}} is unwrapped; seed/seeds/batch_size are dropped)")
    ap.add_argument("--seeds", required=True, type=int, nargs="+", help="one seed per batch item")
    ap.add_argument("--out", required=True, type=Path, help=".npz file for the arrays (+ a .json beside it)")
    args = ap.parse_args(argv)
    data = json.loads(args.request.read_text(encoding="utf-8"))
    data = data.get("request", data)
    if "language" in data and "vocal_language" not in data:
        data["vocal_language"] = data.pop("language")
    request = {k: v for k, v in data.items() if k in REQUEST_KEYS}
    result = run_reference(args.checkpoints, request, seeds=args.seeds)
    arrays = {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
    np.savez(args.out, **arrays)
    meta = {k: v for k, v in result.items() if k not in arrays}
    args.out.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"latents {arrays['latents'].shape}, audio {arrays['audio'].shape} → {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

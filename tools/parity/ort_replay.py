"""Stage-by-stage replay of a reference run through the ONNX package's graphs (debugging aid).

`stage_diffs(package_dir, ref)` feeds each exported graph the reference's own inputs for that stage
(token ids, hidden states, noise, schedule, x0) and returns max |ORT − reference| per stage. No host and no
core code is involved, so when the host-vs-reference parity test fails this tells whether the package
(export) or the host/core logic is at fault: small stage diffs here + a large host diff = host/core.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .torch_reference import HOP, VAE_CHUNK, VAE_OVERLAP


def _sessions(package_dir: Path):
    import onnxruntime as ort

    manifest = json.loads((Path(package_dir) / "manifest.json").read_text(encoding="utf-8"))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            path = Path(package_dir) / manifest["components"][name]["file"]
            cache[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return cache[name]

    return get


def _tiled(run_vae, z: np.ndarray) -> np.ndarray:
    t = z.shape[-1]
    if t <= VAE_CHUNK:
        return run_vae(z)
    stride = VAE_CHUNK - 2 * VAE_OVERLAP
    out = []
    for start in range(0, t, stride):
        end = min(start + stride, t)
        ws, we = max(0, start - VAE_OVERLAP), min(t, end + VAE_OVERLAP)
        a = run_vae(np.ascontiguousarray(z[:, :, ws:we]))
        out.append(a[:, :, (start - ws) * HOP:a.shape[-1] - (we - end) * HOP])
    return np.concatenate(out, axis=-1)


def stage_diffs(package_dir: Path, ref: dict) -> dict[str, float]:
    """max_abs per stage: text_encoder, lyric_embedding, condition_encoder (enc, context), dit (x0 of the
    whole ODE loop from the reference's noise), vae (tiled decode of the reference x0, before the peak guard)."""
    get = _sessions(package_dir)
    batch = ref["latents"].shape[0]
    cap = np.asarray([ref["caption_ids"]] * batch, dtype=np.int64)
    lyr = np.asarray([ref["lyric_ids"]] * batch, dtype=np.int64)
    out: dict[str, float] = {}

    (text,) = get("text_encoder").run(None, {"input_ids": cap, "attention_mask": np.ones_like(cap)})
    out["text_encoder"] = float(np.abs(text - ref["text_hidden_states"]).max())
    (lyric,) = get("lyric_embedding").run(None, {"input_ids": lyr})
    out["lyric_embedding"] = float(np.abs(lyric - ref["lyric_hidden_states"]).max())

    ctx_in = ref["context_latents"]
    manifest = json.loads((Path(package_dir) / "manifest.json").read_text(encoding="utf-8"))
    silence = np.load(Path(package_dir) / manifest["files"]["silence_latent"]["file"])
    timbre = ref["refer_audio_packed"]
    out["silence_latent"] = float(np.abs(silence[0, :timbre.shape[1]] - timbre[0]).max())
    enc, _, context = get("condition_encoder").run(None, {
        "text_hidden_states": ref["text_hidden_states"], "text_attention_mask": np.ones_like(cap),
        "lyric_hidden_states": ref["lyric_hidden_states"], "lyric_attention_mask": np.ones_like(lyr),
        "refer_audio_packed": timbre, "refer_audio_order_mask": np.arange(batch, dtype=np.int64),
        "src_latents": np.ascontiguousarray(ctx_in[..., :64]), "chunk_masks": np.ascontiguousarray(ctx_in[..., 64:]),
    })
    out["encoder_hidden_states"] = float(np.abs(enc - ref["encoder_hidden_states"]).max())
    out["context_latents"] = float(np.abs(context - ctx_in).max())

    x = ref["noise"].astype(np.float32).copy()
    sched = ref["schedule"]
    dit = get("dit_decoder")
    # cross-attention K/V of the reference encoder states, once for every step (as the driver does)
    (cross_kv,) = get("dit_cross_kv").run(None, {"encoder_hidden_states": ref["encoder_hidden_states"]})
    for i, t in enumerate(sched):
        tt = np.full(batch, t, dtype=np.float32)
        (v,) = dit.run(None, {"hidden_states": x, "timestep": tt, "timestep_r": tt,
                              "context_latents": ref["context_latents"], "cross_kv": cross_kv})
        if i == len(sched) - 1:
            x = x - v * np.float32(t)
        else:
            x = x - v * np.float32(t - sched[i + 1])  # ODE only
    out["dit_x0"] = float(np.abs(x - ref["latents"]).max())

    vae = get("vae_decoder")
    audio = _tiled(lambda z: vae.run(None, {"latents": z})[0],
                   np.ascontiguousarray(ref["latents"].transpose(0, 2, 1)))
    peaks = np.abs(audio).max(axis=(1, 2))
    if (peaks > 1).any():
        audio = audio / np.maximum(peaks, 1.0)[:, None, None]
    out["vae_audio"] = float(np.abs(audio - ref["audio"]).max())
    return out

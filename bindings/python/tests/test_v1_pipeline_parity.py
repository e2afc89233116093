"""The ACE-Step v1 generation through the host and the core's driver vs a reference written from the spec
(`ace_step_v1.md` §2, §5–§9) with the exporter's torch modules (the spec-faithful modules the graphs are
exported from, run in torch, not ONNX Runtime) and the scheduler and guidance math written here in
torch/numpy: σ grid, torch noise per item, ERG conditions, APG with momentum on guided calls only,
Euler-ω, Heun, PingPong, DCAE, vocoder rows.

Not independent on purpose: the lyric ids (the plan's; the lyric tokenizer has its own tests) and the
44.1 → 48 kHz step (the core's resampler is applied to the reference's 44.1 kHz audio; its quality is
measured in docs/resampling.md).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from acestep_runtime.audio_resample import resample  # noqa: E402
from acestep_runtime.pipeline import Pipeline  # noqa: E402

# fp32 graphs on ONNX Runtime vs the fp32 torch modules, 8 steps of guidance 15 on the tiny package:
# measured max |Δ| latents 9.8e-6 (Euler), 5.0e-6 (Heun), 1.2e-5 (PingPong) at max |x| 6.4, 5.9, 4.9;
# audio (48 kHz) 3.3e-7, 2.7e-7, 6.9e-7.
LATENT_TOL = 5e-6  # relative to max(1, max |x|)
AUDIO_TOL = 5e-6


@pytest.fixture(scope="module")
def v1_package():
    from tools.onnx_export.v1.fixtures import tiny_v1_package_dir

    return tiny_v1_package_dir()


@pytest.fixture(scope="module")
def reference(v1_package):
    from tools.onnx_export.v1.config import DCAE_DIR, TEXT_ENCODER_DIR, TRANSFORMER_DIR, VOCODER_DIR
    from tools.onnx_export.v1.dcae import load_dcae
    from tools.onnx_export.v1.export import graph_modules
    from tools.onnx_export.v1.fixtures import CHECKPOINTS_NAME
    from tools.onnx_export.v1.text_encoder import load_umt5
    from tools.onnx_export.v1.transformer import load_transformer
    from tools.onnx_export.v1.vocoder import load_vocoder

    ckpt = v1_package.parent / CHECKPOINTS_NAME
    models = {"text_encoder": load_umt5(ckpt / TEXT_ENCODER_DIR), "transformer": load_transformer(ckpt / TRANSFORMER_DIR),
              "dcae": load_dcae(ckpt / DCAE_DIR), "vocoder": load_vocoder(ckpt / VOCODER_DIR)}
    return models, graph_modules(models)


@pytest.fixture(scope="module")
def pipe(v1_package):
    with Pipeline.open(v1_package, device="cpu", threads=2) as p:
        yield p


# ---- spec §6: σ grid, ω --------------------------------------------------------------------------

def sigma_grid(n: int, shift: float = 3.0) -> np.ndarray:
    def sh(s):
        return shift * s / (1 + (shift - 1) * s)

    # constructor: σ_train in float32, sigma_min = shift(0.001) as float32
    train = np.linspace(1, 1000, 1000, dtype=np.float32)[::-1].copy() / np.float32(1000)
    train = (np.float32(shift) * train / (1 + (np.float32(shift) - 1) * train)).astype(np.float32)
    sigma_max, sigma_min = float(train[0]), float(train[-1])
    # set_timesteps: float64 linspace over 1000·σ, shifted again, cast to float32, 0 appended
    s = np.linspace(sigma_max * 1000, sigma_min * 1000, n) / 1000
    s = sh(s).astype(np.float32)
    return np.concatenate([s, np.zeros(1, np.float32)])


def omega(scale: float) -> float:
    return 0.9 + 0.2 / (1 + np.exp(-0.1 * scale))


def omega_update(x, dx, w):
    m = dx.mean()
    return x + (dx - m) * w + m


# ---- spec §7: APG --------------------------------------------------------------------------------

class Apg:
    def __init__(self, momentum=-0.75, threshold=2.5):
        self.momentum, self.threshold, self.running = momentum, threshold, 0.0

    def __call__(self, cond, uncond, g):
        diff = cond - uncond
        self.running = diff + self.momentum * self.running
        diff = self.running
        norm = diff.norm(p=2, dim=[-1, -2], keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), self.threshold / norm)
        v0, v1 = diff.double(), torch.nn.functional.normalize(cond.double(), dim=[-1, -2])
        parallel = (v0 * v1).sum(dim=[-1, -2], keepdim=True) * v1
        orthogonal = (v0 - parallel).to(cond.dtype)
        return cond + (g - 1) * orthogonal


def interval(n: int, gi: float):
    return int(n * (1 - gi) / 2), int(n * (gi / 2 + 0.5))


# ---- the reference run ---------------------------------------------------------------------------

def erg_scale(n, layers, tau=0.01):
    s = torch.ones(n)
    s[layers] = tau
    return s


@torch.no_grad()
def reference_run(models_graphs, manifest, req, text_ids, lyric_ids):
    from tools.onnx_export.v1.config import ERG_DIT_LAYERS, ERG_LYRIC_LAYERS, ERG_TEXT_LAYERS, OFFICIAL_DEPTHS, erg_layers

    models, g = models_graphs
    te, enc, dec = g["text_encoder"], g["condition_encoder"], g["dit_decoder"]
    n_text = models["text_encoder"].config.num_layers
    cfg = models["transformer"].config
    n_lyr, n_dit = cfg.lyric_encoder["num_blocks"], cfg.num_layers
    T = int(req["duration"] * 44100 / 512 / 8)
    ids = torch.tensor([text_ids])
    mask = torch.ones_like(ids)
    lyr = torch.tensor([lyric_ids])
    lmask = torch.ones_like(lyr)
    speaker = torch.zeros(1, cfg.speaker_embedding_dim)
    text = te(ids, mask, torch.ones(n_text))
    text_erg = te(ids, mask, erg_scale(n_text, erg_layers(ERG_TEXT_LAYERS, OFFICIAL_DEPTHS["text"], n_text)))
    e_cond, m_enc = enc(text, mask, speaker, lyr, lmask, torch.ones(n_lyr))
    e_unc, _ = enc(text_erg, mask, speaker, lyr, lmask,
                   erg_scale(n_lyr, erg_layers(ERG_LYRIC_LAYERS, OFFICIAL_DEPTHS["lyric"], n_lyr)))
    dit_erg = erg_scale(n_dit, erg_layers(ERG_DIT_LAYERS, OFFICIAL_DEPTHS["dit"], n_dit))
    fmask = torch.ones(1, T, dtype=torch.int64)

    def model(x, sigma, uncond=False):
        t = torch.tensor([np.float32(sigma) * np.float32(1000)])
        if uncond:
            return dec(x, fmask, e_unc, m_enc, t, dit_erg)
        return dec(x, fmask, e_cond, m_enc, t, torch.ones(n_dit))

    gen = torch.Generator().manual_seed(req["seed"])
    x = torch.randn(1, 8, 16, T, generator=gen)
    n, gs = req["inference_steps"], req.get("guidance_scale", 15.0)
    start, end = interval(n, 0.5)
    sig = sigma_grid(n)
    apg = Apg()
    w = omega(10.0)
    scheduler = req.get("scheduler_type", "euler")
    i = 0  # the official loop index, over every model call

    def velocity(x, sigma):
        nonlocal i
        v = model(x, sigma)
        if start <= i < end:
            v = apg(v, model(x, sigma, uncond=True), gs)
        i += 1
        return v

    for k in range(n):
        s, sn = float(sig[k]), float(sig[k + 1])
        v = velocity(x, s)
        if scheduler == "euler":
            x = omega_update(x, (sn - s) * v, w)
        elif scheduler == "heun":
            if sn == 0:
                x = omega_update(x, (sn - s) * v, w)
            else:
                pred = omega_update(x, (sn - s) * v, w)
                v2 = velocity(pred, sn)
                x = omega_update(x, (sn - s) * (v + v2) / 2, w)
        else:  # pingpong: noise continues item 0's generator
            x0 = x - s * v
            x = (1 - sn) * x0 + sn * torch.randn(x.shape, generator=gen) if sn > 0 else x0
    mel = g["dcae_decoder"](x)
    audio44 = g["vocoder"](mel.reshape(2, mel.shape[2], mel.shape[3]))
    return x.numpy(), audio44.numpy()


@pytest.mark.parametrize("extra", [{}, {"scheduler_type": "heun"}, {"scheduler_type": "pingpong"}])
def test_driver_matches_the_spec_reference(pipe, reference, v1_package, extra):
    import json

    from tokenizers import Tokenizer

    req = {"caption": "lofi hip hop, mellow", "lyrics": "[verse]\nhello world", "duration": 1.0,
           "inference_steps": 8, "seed": 7, **extra}
    manifest = json.loads((v1_package / "manifest.json").read_text())
    plan = pipe.plan(req)
    # the prompt's ids from the HF tokenizer directly (spec §5: the tokenizer appends </s>)
    tok = Tokenizer.from_file(str(v1_package / "tokenizer" / "text" / "tokenizer.json"))
    text_ids = tok.encode(req["caption"]).ids
    assert plan["tokens"]["caption"] == text_ids and text_ids[-1] == 1
    got = pipe.generate(req)
    x_ref, audio44 = reference_run(reference, manifest, req, text_ids, plan["tokens"]["lyrics"])
    latents = got.latents.reshape(x_ref.shape)
    scale = np.abs(x_ref).max()
    err = np.abs(latents - x_ref).max()
    print(f"{extra or 'euler'}: latents max |Δ| {err:.2e} (max |x| {scale:.2f})")
    assert err <= LATENT_TOL * max(1.0, scale)
    ref48 = resample(np.ascontiguousarray(audio44, dtype=np.float32), 44100, 48000)
    peak = np.abs(ref48).max()
    ref48 = ref48 / max(1.0, peak)  # the peak guard
    err_audio = np.abs(got.audio[0] - ref48).max()
    print(f"{extra or 'euler'}: audio max |Δ| {err_audio:.2e}")
    assert got.audio.shape == (1, 2, ref48.shape[1])
    assert err_audio <= AUDIO_TOL

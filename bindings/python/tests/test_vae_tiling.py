"""The driver decodes the VAE in windows overlapping by 16 latent frames where the official code uses 64,
and that is exact: decoding through the core's tile plan and keeping the cropped cores gives the audio of
one untiled decode, because the decoder's receptive radius is under 10 frames (computed from the layer
shapes in `tiling.rs`'s tests), so fewer frames are decoded twice for the same audio (docs/performance.md
"VAE decode"). The tiny decoder keeps the official kernels, dilations and strides, so its receptive field
is the full-size one's. (tools/parity/tests/test_host_goldens.py also compares the driver's tiled song bit
for bit with the frozen per-step host, which decodes in the official plan.)"""

from __future__ import annotations

import numpy as np
import pytest

from acestep_runtime.frames import vae_tile_plan
from tools.parity.fixtures import tiny_package_dir

EXACT_OVERLAP = 16


@pytest.fixture(scope="module")
def decoder():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(tiny_package_dir() / "vae_decoder.onnx"), opts, providers=["CPUExecutionProvider"])


def tiled(decoder, latents, chunk, overlap):
    parts = []
    for w in vae_tile_plan(latents.shape[2], chunk, overlap):
        (audio,) = decoder.run(None, {"latents": np.ascontiguousarray(latents[:, :, w.start:w.end])})
        parts.append(audio[:, :, w.crop_left: audio.shape[2] - w.crop_right])
    return np.concatenate(parts, axis=2)


def test_overlap_16_matches_untiled_decode(decoder):
    latents = np.random.default_rng(3).standard_normal((1, 64, 150), dtype=np.float32)
    (whole,) = decoder.run(None, {"latents": latents})
    assert np.abs(whole).max() > 1e-2
    # chunk 48 → stride 16: six windows, each boundary sample as close to a window edge as the plan allows
    got = tiled(decoder, latents, 48, EXACT_OVERLAP)
    assert len(vae_tile_plan(150, 48, EXACT_OVERLAP)) > 4
    assert got.shape == whole.shape
    assert np.abs(got - whole).max() <= 1e-5
    # an overlap well inside the receptive field leaves visible seams: the comparison can fail
    assert np.abs(tiled(decoder, latents, 48, 4) - whole).max() > 1e-4


def test_a_smaller_vae_decode_chunk_gives_the_same_song():
    """The request's `vae_decode_chunk` (the official ACESTEP_VAE_DECODE_CHUNK_SIZE; default 512, the
    driver's overlap 16 at any chunk) trades memory for frames decoded twice, not audio: 24 s (600 frames) in windows of
    128 frames (7 of them, overlap 16) is the default plan's audio (2 windows) up to float rounding, with
    the same track id; a chunk under 128 is refused naming the key."""
    from acestep_runtime._native import AceError
    from acestep_runtime.pipeline import Pipeline

    request = {"caption": "a calm piano piece", "instrumental": True, "duration": 24, "seed": 3, "thinking": False,
               "timesteps": [0.97, 0.5]}
    with Pipeline.open(tiny_package_dir(), device="cpu", threads=1, session_cache=None) as pipe:
        base = pipe.generate(request)
        small = pipe.generate({**request, "vae_decode_chunk": 128})
        plan = pipe.plan({**request, "vae_decode_chunk": 128})
        assert pipe.plan(request)["vae_tile_plan"] == {"chunk": 512, "overlap": EXACT_OVERLAP}
        with pytest.raises(AceError, match=r"request\.vae_decode_chunk: must be an integer in 128\.\."):
            pipe.plan({**request, "vae_decode_chunk": 127})
    assert plan["vae_tile_plan"] == {"chunk": 128, "overlap": 16} and plan["vae_tiles"] == len(vae_tile_plan(600, 128, 16)) == 7
    assert small.latents.tobytes() == base.latents.tobytes()
    assert np.abs(base.audio).max() > 1e-2
    assert np.abs(small.audio - base.audio).max() <= 1e-5
    assert small.track_ids == base.track_ids
    assert small.sidecars[0]["request"]["vae_decode_chunk"] == 128
    assert base.sidecars[0]["request"]["vae_decode_chunk"] is None  # not given: the official 512
    assert not any("vae_decode_chunk" in n for n in small.notes)


def test_a_vae_decode_chunk_that_changes_nothing_says_so():
    """10 s is 250 latent frames: one window at 512 and at 256, so asking for 256 does nothing, and the
    plan's notes say it; 128 splits the song and is not noted."""
    from acestep_runtime.pipeline import Pipeline

    request = {"caption": "x", "duration": 10, "seed": 1, "thinking": False}
    with Pipeline.open(tiny_package_dir(), device="cpu", threads=1, session_cache=None) as pipe:
        same = pipe.plan({**request, "vae_decode_chunk": 256})
        split = pipe.plan({**request, "vae_decode_chunk": 128})
    assert same["vae_tiles"] == 1 and any(n.startswith("vae_decode_chunk 256 changes nothing here") for n in same["notes"])
    assert split["vae_tiles"] > 1 and not any("vae_decode_chunk" in n for n in split["notes"])

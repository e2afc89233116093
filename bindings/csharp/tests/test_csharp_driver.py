"""The C# driver host (AceStep.Runtime.Pipeline, AceStepGenerate.exe) against the Python host
(``acestep_runtime.pipeline.Pipeline.generate``) on the tiny packages, driven two ways: in this
process through pythonnet (mono), and as a mono process (``Tests.exe generate``, every case in one
process). Same final latents and float32 audio (bit for bit), same seeds, track ids and file names,
WAV bytes equal to the Python host's encoder (libsndfile), same sidecar fields from the core. Also:
the CLI, WAV encoders, the JSON writer, struct layouts against a C compiler, errors carrying the
core's message, a cancelled run writing nothing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from csharp_hosts import CASES, PACKAGE, ROOT, mono, ok, ort_library, require_package, to_numpy

SUFFIX = {"wav16": ".wav", "wav24": ".24bit.wav", "wav32f": ".f32.wav"}

def is_v1(result) -> bool:
    return result.sidecars[0]["model"].get("family") == "ace-step-v1"


def samples_of(result) -> int:
    """Samples per channel the spec gives for the run's latent frames: 1.5 decodes 1920 per frame at
    48 kHz; v1 4096 per frame at 44.1 kHz, resampled to 48 kHz (ace_step_v1.md §2)."""
    if is_v1(result):
        return -(-result.frames * 4096 * 48000 // 44100)
    return 1920 * result.frames


def core_fields(sidecar: dict) -> dict:
    return {k: v for k, v in sidecar.items() if k != "host"}


def check_tracks(paths: list[Path], result, fmt: str) -> None:
    """Files named by the core's track ids, WAV bytes = the Python host's encoder on the Python
    host's audio (and read back by libsndfile as 48 kHz stereo of the run's length), sidecars = the
    Python host's core fields plus the C# host's own."""
    import onnxruntime
    import soundfile as sf
    from acestep_runtime import audio_io

    assert [p.name for p in paths] == [tid[:16] + SUFFIX[fmt] for tid in result.track_ids]
    for b, path in enumerate(paths):
        data = path.read_bytes()
        assert data == audio_io.encode(result.audio[b], fmt), f"{path.name}: WAV bytes differ from the Python host's"
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (48000, 2, samples_of(result))
        assert info.subtype == {"wav16": "PCM_16", "wav24": "PCM_24", "wav32f": "FLOAT"}[fmt]
        text = Path(str(path) + ".json").read_text(encoding="utf-8")
        sidecar = json.loads(text)
        # Laid out as the Python host writes it (json.dumps, indent 2, shortest float repr).
        assert text == json.dumps(sidecar, ensure_ascii=False, indent=2) + "\n"
        assert core_fields(sidecar) == core_fields(result.sidecars[b])
        assert sidecar["track_id"] == result.track_ids[b]
        host = sidecar["host"]
        assert host["file"] == path.name and host["format"] == fmt
        assert host["audio_sha256"] == hashlib.sha256(data).hexdigest()
        assert host["runtime"]["onnxruntime"] == onnxruntime.__version__
        # The C# host lists this run's components; the Python host every session its pipeline loaded so far.
        providers = host["runtime"]["providers"]
        decoder = "vocoder" if is_v1(result) else "vae_decoder"
        assert {"dit_decoder", decoder} <= set(providers) <= set(result.sidecars[b]["host"]["runtime"]["providers"])
        assert set(providers.values()) == {"CPUExecutionProvider"}
        # Both hosts register the core's fused kernels on CPU sessions: the bytes above are equal only then.
        assert host["runtime"]["fused_ops"] == result.sidecars[b]["host"]["runtime"]["fused_ops"] == "ai.acestep"
        assert {"load", "encode", "diffusion", "decode", "total"} <= set(host["timings_s"])
        assert 0 < host["ort_seconds"] <= host["timings_s"]["total"]
    leftovers = [p.name for p in paths[0].parent.iterdir() if p.name.startswith(".") or p.suffix == ".partial"]
    assert not leftovers, f"temporary files left: {leftovers}"


def check_identity(case: str, latents: np.ndarray, audio: np.ndarray, seeds, track_ids, expect) -> None:
    assert latents.shape == expect.latents.shape and audio.shape == expect.audio.shape
    # Bit for bit (the issue allows max_abs 1e-6; the hosts run the same graphs on the same inputs).
    assert latents.tobytes() == expect.latents.tobytes(), f"latents max_abs {np.abs(latents - expect.latents).max()}"
    assert audio.tobytes() == expect.audio.tobytes(), f"audio max_abs {np.abs(audio - expect.audio).max()}"
    assert list(seeds) == expect.seeds and list(track_ids) == expect.track_ids
    batch, channels, samples = expect.audio.shape
    assert channels == 2 and samples == samples_of(expect)
    # The cases cover what they say.
    if case == "tiled_24s":
        from acestep_runtime.frames import vae_tile_plan

        assert expect.frames == 600 and len(vae_tile_plan(expect.frames)) == 2
    if case == "sde_batch2":
        assert batch == 2 and expect.seeds == [7, 8] and len(set(expect.track_ids)) == 2
    if case == "guided_base":
        sidecar = expect.sidecars[0]
        assert sidecar["model"]["kind"] == "base" and sidecar["params"]["guidance"]["type"] == "apg"
        assert sidecar["params"]["guidance"]["scale"] == 5.0


@pytest.mark.parametrize("case", list(CASES))
def test_in_process_host_matches_the_python_host(tmp_path, python_host, clr_host, case):
    """AceStep.Runtime.Pipeline.Generate called from this process (pythonnet), then Save."""
    package, request = CASES[case]
    expect = python_host.result(package, request)
    result, latents, audio = clr_host.generate(package, request)
    check_identity(case, latents, audio, result.Seeds, result.TrackIds, expect)
    paths = [Path(p) for p in result.Save(f"{tmp_path}/", "wav32f", False)]
    check_tracks(paths, expect, "wav32f")


def test_in_process_host_unfused_matches_the_python_hosts_unfused(python_host, clr_host):
    """fusedOps: false in both hosts runs the graphs' function bodies: equal bytes, which differ from
    the fused (default) run's audio by float rounding, so the switch takes effect in each host."""
    from acestep_runtime.pipeline import Pipeline
    from AceStep.Runtime import Pipeline as ClrPipeline

    package, request = CASES["turbo_ode"]
    with Pipeline.open(require_package(package), device="cpu", threads=1, session_cache=None, fused_ops=False) as pipe:
        expect = pipe.generate(request)
    assert expect.sidecars[0]["host"]["runtime"]["fused_ops"] is None
    assert expect.audio.tobytes() != python_host.result(package, request).audio.tobytes()
    pipe = ClrPipeline.Open(str(require_package(package)), "cpu", 1, ort_library(), False, False, False)
    try:
        result = pipe.Generate(json.dumps(request, ensure_ascii=False))
        audio = to_numpy(result.Audio, result.AudioShape)
        assert json.loads(result.Sidecars[0])["host"]["runtime"]["fused_ops"] is None
    finally:
        pipe.Dispose()
    assert audio.tobytes() == expect.audio.tobytes()


@pytest.fixture(scope="module")
def process_runs(tmp_path_factory):
    """Every case through one ``mono Tests.exe generate`` process (one pipeline per package)."""
    root = tmp_path_factory.mktemp("cs")
    args = []
    for i, (package, request) in enumerate(CASES.values()):
        req = root / f"request{i}.json"
        req.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
        args += [require_package(package), req]
    proc = ok(mono("Tests.exe", "generate", "wav32f", root / "out", *args, timeout=600))
    paths: dict = {}
    for line in proc.stdout.splitlines():
        i, path = line.split(" ", 1)
        paths.setdefault(int(i), []).append(Path(path))
    return root / "out", paths


@pytest.mark.parametrize("case", list(CASES))
def test_process_host_matches_the_python_host(python_host, process_runs, case):
    package, request = CASES[case]
    expect = python_host.result(package, request)
    out, paths = process_runs
    i = list(CASES).index(case)
    latents = np.fromfile(out / str(i) / "latents.f32", dtype="<f4")
    audio = np.fromfile(out / str(i) / "audio.f32", dtype="<f4")
    assert latents.size == expect.latents.size and audio.size == expect.audio.size
    sidecars = [json.loads(Path(f"{p}.json").read_text(encoding="utf-8")) for p in paths[i]]
    check_identity(case, latents.reshape(expect.latents.shape), audio.reshape(expect.audio.shape),
                   [s["seed"] for s in sidecars], [s["track_id"] for s in sidecars], expect)
    check_tracks(paths[i], expect, "wav32f")


# -- the CLI ------------------------------------------------------------------------------------------


def cli(*args, timeout=300):
    require_package(PACKAGE)
    return mono("AceStepGenerate.exe", "--model", PACKAGE, "--device", "cpu", "--threads", 1, "--quiet", *args, timeout=timeout)


def test_cli_request_file_flags_and_no_silent_overwrite(tmp_path, python_host):
    request = CASES["turbo_ode"][1]
    expect = python_host.result(PACKAGE, request)
    req = tmp_path / "case.json"
    # A fixture case wraps the request; the CLI unwraps it as the Python CLI does.
    req.write_text(json.dumps({"id": "x", "request": request}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    proc = ok(cli("--request", req, "--out", f"{out}/", "--format", "wav16"))
    paths = sorted(out.glob("*.wav"))
    assert str(paths[0]) in proc.stdout
    check_tracks(paths, expect, "wav16")
    before, inode = paths[0].read_bytes(), paths[0].stat().st_ino
    again = cli("--request", req, "--out", f"{out}/", "--format", "wav16")
    assert again.returncode == 1 and "exists; pass --overwrite" in again.stderr, again.stderr
    assert paths[0].read_bytes() == before and paths[0].stat().st_ino == inode
    # The same request as flags, replacing the files: the same tracks (and a new file: written, renamed).
    ok(cli("--no-think", "--caption", request["caption"], "--lyrics", request["lyrics"], "--duration", "10", "--seed", "42", "--bpm", "90",
           "--keyscale", "F# minor", "--timesignature", "4", "--out", f"{out}/", "--format", "wav16", "--overwrite"))
    assert paths[0].read_bytes() == before and paths[0].stat().st_ino != inode
    check_tracks(paths, expect, "wav16")
    assert len(list(out.iterdir())) == 2


def test_cli_fast_start_matches_the_python_hosts_fast_start(tmp_path, python_host):
    """--fast-start (weights not pre-packed) gives the Python host's --fast-start bytes. Pre-packing
    moves the tiny package's audio by ~2e-7, so equal bytes also show the option took effect."""
    from acestep_runtime.pipeline import Pipeline

    request = CASES["turbo_ode"][1]
    with Pipeline.open(require_package(PACKAGE), device="cpu", threads=1, session_cache=None, prepack=False) as pipe:
        expect = pipe.generate(request)
    assert expect.audio.tobytes() != python_host.result(PACKAGE, request).audio.tobytes()
    req = tmp_path / "case.json"
    req.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    ok(cli("--request", req, "--out", f"{out}/", "--format", "wav32f", "--fast-start"))
    check_tracks(sorted(out.glob("*.wav")), expect, "wav32f")


def test_cli_cancelled_writes_nothing(tmp_path):
    proc = cli("--caption", "x", "--duration", "10", "--seed", "1", "--out", f"{tmp_path / 'o'}/", "--timeout", "0.001")
    assert proc.returncode == 130 and "cancelled: no output written" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("request_", [{"caption": "x", "durration": 10}, {"caption": "x", "duration": 5, "seed": 1}])
def test_cli_errors_carry_the_core_message(tmp_path, request_):
    from acestep_runtime._native import AceError
    from acestep_runtime.generation import Generation
    from acestep_runtime.package import ModelPackage

    with ModelPackage.open(PACKAGE) as package:
        with pytest.raises(AceError) as python_error:
            Generation(package, request_)
    req = tmp_path / "bad.json"
    req.write_text(json.dumps(request_), encoding="utf-8")
    proc = cli("--request", req, "--out", f"{tmp_path / 'o'}/")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: {python_error.value}"
    assert not (tmp_path / "o").exists()


def test_cli_usage_errors():
    proc = mono("AceStepGenerate.exe", "--caption", "x")
    assert proc.returncode == 2 and "--model is required" in proc.stderr
    proc = mono("AceStepGenerate.exe", "--model", PACKAGE, "--caption", "x", "--frobnicate", "1")
    assert proc.returncode == 2 and "unknown argument: --frobnicate" in proc.stderr


# -- encoders and layouts -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav16", "wav24", "wav32f"])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_bytes_equal_the_python_hosts_encoder(tmp_path, fmt, channels):
    from acestep_runtime import audio_io

    rng = np.random.default_rng(channels)
    audio = np.concatenate([rng.uniform(-1, 1, (channels, 3000)), rng.uniform(-1e-4, 1e-4, (channels, 3000)),
                            rng.normal(0, 1e-6, (channels, 500)), rng.uniform(-3, 3, (channels, 200))], axis=1).astype(np.float32)
    audio[:, :8] = [1.0, -1.0, 0.99999994, -0.99999994, 0.5 / 32767, -0.5 / 32767, 1.5 / 8388607, 0.0]
    raw, wav = tmp_path / "a.f32", tmp_path / "a.wav"
    raw.write_bytes(audio.tobytes())
    ok(mono("Tests.exe", "wav", fmt, channels, raw, wav))
    assert wav.read_bytes() == audio_io.encode(audio, fmt)


def test_json_writer_lays_out_like_pythons_json_dumps(tmp_path):
    import struct

    rng = np.random.default_rng(5)
    floats = [0.1, 1.0, 30.0, -0.0, 0.0, 1e-05, 0.0001, 1.5e16, 1e15, 123456789012345.6, 5e-324, 1.7976931348623157e308,
              2.0 ** -30, 1 / 3, -2.5e-7, 48000.0, 2.0 ** -1022, 2.2250738585072009e-308, 2.0 ** 1023, 1e22, 1e23, 0.3,
              9007199254740993.0, 2.0 ** 60]
    floats += [struct.unpack("<f", struct.pack("<f", x))[0] for x in rng.normal(0, 1, 200)]  # float32 values
    floats += [float(x) for x in rng.normal(0, 1, 200) * 10.0 ** rng.integers(-20, 20, 200)]
    value = {"floats": floats, "ints": [0, -1, 2 ** 53, 48000], "text": "é \u2713 日本 \U0001f3b5 \b\f\n\t\x01 \"q\" \\",
             "nested": {"empty_list": [], "empty_object": {}, "flags": [True, False, None]}}
    src, out = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    ok(mono("Tests.exe", "json", src, out))
    assert out.read_text(encoding="utf-8") == json.dumps(value, ensure_ascii=False, indent=2)


def test_struct_layouts_equal_the_c_compilers(tmp_path):
    import shutil

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on this machine")
    fields = {
        "AceTensor": ["name", "dtype", "shape", "rank", "data", "byte_len", "host_key"],
        "AceGraphOutput": ["name", "keep_as"],
        "AceGraphCall": ["component", "inputs", "num_inputs", "outputs", "num_outputs", "release", "num_release",
                         "stage", "stage_done", "stage_total"],
        "AceTileWindow": ["start", "end", "core_start", "core_end", "crop_left", "crop_right"],
    }
    lines = []
    for struct, names in fields.items():
        offsets = " ".join(f'printf(" %zu", offsetof({struct}, {n}));' for n in names)
        lines.append(f'printf("{struct} %zu", sizeof({struct})); {offsets} printf("\\n");')
    src = tmp_path / "layout.c"
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "acestep_runtime.h"\nint main(void) {\n'
                   + "\n".join(lines) + "\nreturn 0;\n}\n")
    subprocess.run([cc, "-I", str(ROOT / "include"), "-o", str(tmp_path / "layout"), str(src)], check=True)
    c = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True, check=True).stdout.split("\n")
    cs = ok(mono("Tests.exe", "layout")).stdout.split("\n")
    for c_line, cs_line in zip(c, cs):
        if not c_line:
            continue
        name, size, *offsets = c_line.split()
        cs_name, cs_size, *cs_fields = cs_line.split()
        assert (cs_name, cs_size) == (name, size)
        assert [f.split("=")[1] for f in cs_fields] == offsets, f"{name}: C offsets {offsets}, C# {cs_fields}"

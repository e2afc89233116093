"""Shared by the C# host tests (bindings/csharp/test.sh builds bin/ first; conftest.py registers the
fixtures):

- ``python_host``: the Python host, one pipeline per package for the whole session, its results
  cached (many tests compare against the same run);
- ``clr_host``: the C# host (AceStep.Runtime.dll) loaded into this Python process through pythonnet
  on mono, on the same core library the Python host uses, one C# pipeline per package.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = ROOT / "bindings" / "csharp" / "bin"
PACKAGE = Path(os.environ.get("ACESTEP_TEST_PACKAGE", ROOT / "fixtures" / "generated" / "tiny-package")).resolve()
BASE_PACKAGE = (ROOT / "fixtures" / "generated" / "tiny-package-base").resolve()
V1_PACKAGE = (ROOT / "fixtures" / "generated" / "tiny-v1-package").resolve()

# The Python host's test cases (package, request), shared by the driver host's and the per-step
# example's tests: the Python host runs each once per session. The tiny package has a 5 Hz LM, which
# a request runs by default: the DiT-path cases turn it off explicitly ("thinking": False).
CASES = {
    # turbo ODE, one item, 10 s (one VAE window), metadata given
    "turbo_ode": (PACKAGE, {"thinking": False, "caption": "lofi hip hop, mellow piano", "lyrics": "[Verse]\nla la la", "duration": 10,
                            "seed": 42, "bpm": 90, "keyscale": "F# minor", "timesignature": "4"}),
    # SDE (core-seeded renoising) on a batch of 2, shift 2
    "sde_batch2": (PACKAGE, {"thinking": False, "caption": "ambient drone", "instrumental": True, "duration": 10, "seeds": [7, 8],
                             "batch_size": 2, "infer_method": "sde", "shift": 2.0}),
    # LM audio codes through the FSQ detokenizer (host-kept hints)
    "lm_codes": (PACKAGE, {"caption": "lo-fi hip hop beat", "lyrics": "[Verse]\nslow night", "vocal_language": "en",
                           "duration": 10, "audio_codes": [(i * 7919) % 64000 for i in range(20)], "seed": 11}),
    # 24 s = 600 frames: two VAE windows (tiled decode); custom timesteps; non-ASCII prompts
    "tiled_24s": (PACKAGE, {"thinking": False, "caption": "chanson, accordéon", "lyrics": "[Chorus]\nça va — 日本語", "vocal_language": "fr",
                            "duration": 24, "seed": 3, "timesteps": [0.97, 0.76, 0.3, 0.0]}),
    # the 5 Hz LM through the driver: CoT metadata, then 50 codes (LM prefill/decode with the KV cache
    # kept by the host), then the DiT on them — the C# host runs it with no LM code of its own
    "lm_think": (PACKAGE, {"caption": "synth pop", "lyrics": "[Chorus]\nneon", "duration": 10, "seed": 13,
                           "thinking": True, "use_cot_caption": False}),
    # base model with classifier-free guidance (APG): conditional and unconditional DiT passes
    "guided_base": (BASE_PACKAGE, {"caption": "jazz trio, brushed drums", "instrumental": True, "duration": 10,
                                   "seed": 4, "inference_steps": 6, "guidance_scale": 5.0, "guidance_type": "apg"}),
    # ACE-Step v1 (the second model family): ERG text/condition encodes, APG-guided DiT decodes, DCAE,
    # vocoder rows and the core's 44.1 → 48 kHz step — with no v1 code in the host
    "v1_guided": (V1_PACKAGE, {"caption": "lofi hip hop, mellow", "lyrics": "[verse]\nhello world", "duration": 1.5,
                               "seed": 9, "inference_steps": 6}),
}


def ort_library() -> str:
    """ACESTEP_ORT_LIB, else the libonnxruntime.so of the onnxruntime wheel the Python host uses."""
    import glob

    import onnxruntime

    if os.environ.get("ACESTEP_ORT_LIB"):
        return os.environ["ACESTEP_ORT_LIB"]
    found = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))
    if not found:
        pytest.fail(f"no libonnxruntime.so in {os.path.dirname(onnxruntime.__file__)}/capi")
    return found[0]


def require_package(package: Path) -> Path:
    if package == V1_PACKAGE and not (package / "manifest.json").is_file():
        # Built on first use by the v1 exporter (torch, dev setup), as the Python v1 tests do.
        from tools.onnx_export.v1.fixtures import tiny_v1_package_dir

        tiny_v1_package_dir()
    if not (package / "manifest.json").is_file():
        pytest.fail(f"tiny model package missing at {package}: scripts/setup.sh --dev builds it "
                    "(scripts/make_tiny_package.sh; tools.parity.fixtures.tiny_package_dir(variant='base') for the base one)")
    return package


def mono(*args, env=None, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    exe = BIN / args[0]
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: build it with bindings/csharp/build.sh")
    if env is None:
        env = {**os.environ, "ACESTEP_ORT_LIB": ort_library()}
    return subprocess.run(["mono", str(exe), *map(str, args[1:])], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


class PythonHost:
    def __init__(self):
        self.pipelines: dict = {}
        self.results: dict = {}

    def pipeline(self, package: Path):
        from acestep_runtime.pipeline import Pipeline

        if str(package) not in self.pipelines:
            self.pipelines[str(package)] = Pipeline.open(require_package(package), device="cpu", threads=1)
        return self.pipelines[str(package)]

    def result(self, package: Path, request: dict):
        """Pipeline.generate(request), run once per (package, request)."""
        key = (str(package), json.dumps(request, sort_keys=True))
        if key not in self.results:
            self.results[key] = self.pipeline(package).generate(dict(request))
        return self.results[key]

    def close(self):
        for pipe in self.pipelines.values():
            pipe.close()
        self.pipelines.clear()


@pytest.fixture(scope="session")
def python_host():
    host = PythonHost()
    yield host
    host.close()


class ClrHost:
    """AceStep.Runtime.Pipeline called from this process through pythonnet (mono)."""

    def __init__(self):
        try:
            import pythonnet
        except ImportError:
            pytest.fail("pythonnet is not installed: scripts/setup.sh --dev installs it (requirements/dev.txt)")
        dll = BIN / "AceStep.Runtime.dll"
        if not dll.is_file():
            pytest.fail(f"{dll} is missing: build it with bindings/csharp/build.sh")
        with warnings.catch_warnings():
            # clr_loader warns about every mono before 6.12; Debian 12 ships 6.8, which works here.
            warnings.simplefilter("ignore", UserWarning)
            pythonnet.load("mono")
        import clr

        clr.AddReference(str(dll))
        from acestep_runtime import _native
        from AceStep.Runtime import AceLibrary, Pipeline

        # The core library the Python host already loaded: both hosts run on one copy of the core.
        AceLibrary.Load(str(_native._lib_path))
        self.loaded_from = AceLibrary.LoadedFrom
        self._open = Pipeline.Open
        self.pipelines: dict = {}

    def pipeline(self, package: Path):
        if str(package) not in self.pipelines:
            self.pipelines[str(package)] = self._open(str(require_package(package)), "cpu", 1, ort_library())
        return self.pipelines[str(package)]

    def generate(self, package: Path, request: dict):
        """(C# GenerationResult, latents, audio) for ``request``; the arrays copied into numpy."""
        result = self.pipeline(package).Generate(json.dumps(request, ensure_ascii=False))
        return result, to_numpy(result.Latents, result.LatentShape), to_numpy(result.Audio, result.AudioShape)

    def close(self):
        for pipe in self.pipelines.values():
            pipe.Dispose()
        self.pipelines.clear()


def to_numpy(values, shape) -> np.ndarray:
    """A .NET float[] as a float32 array of ``shape`` (one Marshal.Copy, not an element-wise walk)."""
    from System import Int64, IntPtr
    from System.Runtime.InteropServices import Marshal

    out = np.empty([int(d) for d in shape], dtype=np.float32)
    assert out.size == values.Length, f"shape {list(out.shape)} does not hold {values.Length} values"
    Marshal.Copy(values, 0, IntPtr(Int64(out.ctypes.data)), values.Length)
    return out


@pytest.fixture(scope="session")
def clr_host():
    host = ClrHost()
    yield host
    host.close()
    # pythonnet's and clr_loader's exit handlers shut the runtime down in full: Python.NET runs
    # Python's GC over and over on every live object (~10 s here once torch is loaded), then mono
    # runs its finalizers. The test process is ending and the pipelines are disposed: skip both.
    import atexit

    import clr_loader.mono
    import pythonnet

    atexit.unregister(pythonnet.unload)
    atexit.unregister(clr_loader.mono._release)

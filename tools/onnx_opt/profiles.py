"""Precision profiles of a model package, made from an exported fp32 package (docs/precision_profiles.md).

    fp32  the exporter's output, unchanged.
    int8  the weight MatMuls of the text encoder, the condition encoder and the DiT get int8 weights
          (per output channel) and run as int8 GEMMs; every other graph stays fp32 (VAE included).
          With `int8_vae` (`--int8-vae`, opt-in) the VAE decoder's convolutions become static int8
          QLinearConv too, their activation scales calibrated on the fp32 package's own latents.
    fp16  every graph of the DiT path and the VAE in float16, graph inputs and outputs kept float32
          (a Cast at each boundary), so the core and the hosts feed and read float32 as for fp32.
          Meant for the CUDA execution provider: the CPU provider runs it, but casts the operators it
          has no float16 kernel for back to float32, so it is slower than fp32 on the CPU.

A profile package is a complete package: graphs converted here, every other file copied, and a manifest
with `precision` = the profile and a `profile` section saying what was converted, what was left in fp32
and why (no silent fallback), and the measured deviation from the fp32 source on fixed requests
(tools/onnx_opt/deviation.py). A deviation outside the profile's thresholds is an error.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from tools.onnx_export.package import (MANIFEST_FILE, PackageError, check_output_dir, describe_onnx, sha256_file,
                                       staged_package_dir, write_json_atomic)

from . import deviation as dev

PROFILES = ("fp32", "fp16", "int8")

# Graphs whose weight GEMMs the int8 profile quantizes (the compute of a generation besides the VAE).
INT8_COMPONENTS = ("text_encoder", "condition_encoder", "dit_decoder")
# Graphs the fp16 profile leaves alone: the LM graphs carry a KV cache whose dtype the LM host loop owns.
FP16_SKIP = {"lm_prefill": "LM graphs: KV-cache dtype is the LM host loop's; not converted by this profile yet",
             "lm_decode": "LM graphs: KV-cache dtype is the LM host loop's; not converted by this profile yet"}

# int8 methods: "dynamic" = onnxruntime.quantization.quantize_dynamic (MatMulInteger, per-channel int8
# weights, activations quantized per tensor at run time); "nbits" = MatMulNBits, 8-bit symmetric weights in
# blocks along K, accuracy level 4 (activations quantized to int8 per block: VNNI GEMM on AVX-512).
INT8_METHODS = ("dynamic", "nbits")
DEFAULT_INT8_METHOD = "dynamic"
NBITS_BLOCK_SIZE = 128

# --int8-vae: the decoder's activation ranges are calibrated on windows of this many latent frames cut
# from the fp32 package's generations of the fixed requests (ORT's calibrator keeps every intermediate
# tensor of every window: at full size ~1 GB per window of 32 frames, hence few and short windows).
VAE_CALIBRATION_FRAMES = 32
VAE_CALIBRATION_WINDOWS = 4

# Worst-case deviation from fp32 a profile must stay within, on the fixed requests of deviation.py.
# The targets for the full-size random-weight package; tests use the same ones on tiny.
THRESHOLDS = {
    "int8": {"latent_cosine_min": 0.99, "stft_cosine_min": 0.97},
    "fp16": {"latent_cosine_min": 0.999, "stft_cosine_min": 0.995},
}

# Ops that carry weights int8 could apply to; the int8 report lists these when they keep fp32 weights.
_INT8_CANDIDATES = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Gather", "Einsum"}
# A float initializer at least this large that a graph still uses in fp32 is listed as "left in fp32".
_LISTED_WEIGHT_ELEMENTS = 4096


class ProfileError(PackageError):
    """A profile cannot be made, or it deviates from fp32 more than its thresholds allow."""


def check_profile(name: str) -> str:
    if name not in PROFILES:
        raise ProfileError(f"unknown precision profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return name


# --- graph conversion ------------------------------------------------------------------------------------

def _has_external_data(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def _save(model, dst: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(dst))


def _int8_dynamic(src: Path, dst: Path, external: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                     use_external_data_format=external, extra_options={"MatMulConstBOnly": True})
    if external:  # quantize_dynamic names its external data file <graph>.onnx.data, as the exporter does
        expected = dst.with_name(dst.name + ".data")
        if not expected.is_file():
            raise ProfileError(f"quantize_dynamic did not write {expected.name} beside {dst.name}")


def _int8_nbits(src: Path, dst: Path, external: bool) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src))
    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=NBITS_BLOCK_SIZE, is_symmetric=True,
                                     accuracy_level=4, op_types_to_quantize=("MatMul",))
    quantizer.process()
    _save(quantizer.model.model, dst, external)


def _vae_calibration_windows(outputs) -> list:
    """Latent windows [1, 64, VAE_CALIBRATION_FRAMES] spread evenly over the generations `outputs`
    ((latents [B, T, 64], audio) per request): what the decoder sees in use, not random numbers."""
    import numpy as np

    songs = [np.ascontiguousarray(latents[b].T[None]) for latents, _ in outputs for b in range(latents.shape[0])]
    per_song = -(-VAE_CALIBRATION_WINDOWS // len(songs))
    windows = []
    for song in songs:
        frames = song.shape[2]
        if frames < VAE_CALIBRATION_FRAMES:
            raise ProfileError(f"VAE calibration needs songs of at least {VAE_CALIBRATION_FRAMES} latent frames")
        for start in np.linspace(0, frames - VAE_CALIBRATION_FRAMES, per_song).astype(int):
            windows.append(np.ascontiguousarray(song[:, :, start:start + VAE_CALIBRATION_FRAMES]))
    return windows[:VAE_CALIBRATION_WINDOWS]


def _int8_vae_static(src: Path, dst: Path, windows: list, external: bool) -> None:
    """Static int8 VAE decoder: every Conv → QLinearConv (per-channel int8 weights, uint8 activations with
    MinMax ranges from `windows`). The Snake nodes stay float between a DequantizeLinear and a
    QuantizeLinear (the core's fused kernel still runs them); the ConvTransposes stay fp32 (ORT has no
    quantized ConvTranspose) and are listed as such."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Windows(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"latents": w} for w in windows])

        def get_next(self):
            return next(self._it, None)

    quantize_static(src, dst, Windows(), quant_format=QuantFormat.QOperator, op_types_to_quantize=["Conv"],
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    calibrate_method=CalibrationMethod.MinMax, use_external_data_format=external)


def _fp16(src: Path, dst: Path, external: bool) -> list[str]:
    import onnx
    import onnx.inliner
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    if len(model.functions):
        # The VAE's ai.acestep.Snake functions: the fp16 graphs are for the CUDA provider, which runs
        # the function bodies anyway; inlined, the converter types every node of them.
        model = onnx.inliner.inline_local_functions(model)
    # Shape inference cannot serialise a > 2 GB model; the converter then types from the graph alone.
    model16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=external)
    _save(model16, dst, external)
    # op types the converter keeps in fp32 (behind Casts) that this graph has
    return sorted({n.op_type for n in model16.graph.node} & set(DEFAULT_OP_BLOCK_LIST))


def _left_fp32(path: Path, profile: str) -> list[dict]:
    """Nodes of the converted graph that still use a large fp32 weight, and (int8) the fp32 MatMuls
    whose two operands are activations (attention), each with the reason."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for node in model.graph.node if node.op_type == "Constant" for o in node.output}
    floats = {}  # float weights: ≥ 2-D (a 1-D float tensor is a bias, a norm gain or a quantization scale)
    for t in model.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2:
            n = 1
            for d in t.dims:
                n *= d
            floats[t.name] = n
    left = []
    for node in model.graph.node:
        big = [i for i in node.input if floats.get(i, 0) >= _LISTED_WEIGHT_ELEMENTS]
        if profile == "int8" and node.op_type not in _INT8_CANDIDATES:
            big = []  # an elementwise op's parameter (e.g. an AdaLN table added) is no GEMM weight
        if big:
            reason = {"MatMul": "the quantizer left this constant-weight MatMul in fp32",
                      "Gemm": "Gemm is not quantized by this profile (MatMul only)",
                      "Gather": "embedding lookup: the table stays fp32",
                      "ConvTranspose": "ONNX Runtime has no quantized ConvTranspose (QLinearConvTranspose)",
                      }.get(node.op_type, f"{node.op_type} is not converted by this profile")
            left.append({"node": node.name, "op": node.op_type, "weights": big, "reason": reason})
        elif profile == "int8" and node.op_type in ("MatMul", "Gemm"):
            if any(i in consts for i in node.input):
                reason = (f"constant operand under {_LISTED_WEIGHT_ELEMENTS} elements (e.g. rotary frequencies): "
                          "not a weight GEMM")
            else:
                reason = "both operands are activations (attention scores / values): no weight to quantize"
            left.append({"node": node.name, "op": node.op_type, "reason": reason})
    return left


def _op_counts(path: Path, ops: tuple[str, ...]) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts = {op: 0 for op in ops}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return counts


# --- the package -----------------------------------------------------------------------------------------

def _package_files(manifest: dict) -> list[str]:
    rels = []
    for comp in manifest["components"].values():
        rels.append(comp["file"])
        rels.extend(e["file"] for e in comp["external_data"])
    rels.extend(e["file"] for e in manifest["files"].values())
    for tok in manifest["tokenizers"].values():
        rels.extend(e["file"] for e in tok["files"])
    return rels


def _copy(src_pkg: Path, dst_pkg: Path, rel: str) -> None:
    dst = dst_pkg / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_pkg / rel, dst)


def apply_profile(src: Path, out: Path, profile: str, *, int8_method: str = DEFAULT_INT8_METHOD,
                  int8_vae: bool = False, measure: bool = True, check_thresholds: bool = True,
                  threads: int | None = None, force: bool = False, requests=dev.REQUESTS,
                  log: Callable[[str], None] = print, _convert_hook=None) -> Path:
    """Write the `profile` package of the fp32 package `src` to `out`; return `out`.

    `measure` runs the fixed requests through the Python host on both packages (needs the built core)
    and records the deviation; with `check_thresholds` a deviation outside THRESHOLDS[profile] is a
    ProfileError and nothing is written. `int8_vae` (int8 only) also makes the VAE decoder's convolutions
    static int8, calibrated on the fp32 package's generations of `requests` (so it needs the core even
    without `measure`). `_convert_hook(component, path)` (tests) may alter a converted graph before it is
    described, e.g. to break it on purpose.
    """
    check_profile(profile)
    if profile == "fp32":
        raise ProfileError("profile fp32 is the exporter's own output: there is nothing to convert")
    if int8_vae and profile != "int8":
        raise ProfileError(f"int8_vae (--int8-vae) belongs to the int8 profile, not {profile}")
    if int8_method not in INT8_METHODS:
        raise ProfileError(f"unknown int8 method {int8_method!r}; choose one of: {', '.join(INT8_METHODS)}")
    src = Path(src).absolute()
    out = Path(out).absolute()
    manifest_path = src / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ProfileError(f"{src} is not a model package: it has no {MANIFEST_FILE}")
    source = json.loads(manifest_path.read_text(encoding="utf-8"))
    if source.get("precision") != "fp32":
        raise ProfileError(f"profiles are made from an fp32 package; {src} has precision {source.get('precision')!r}")
    if out == src:
        raise ProfileError("the profile package must go to another directory than its fp32 source")
    check_output_dir(out, force)

    if profile == "int8":
        convert = {name: comp for name, comp in source["components"].items() if name in INT8_COMPONENTS}
        kept = {name: "no weight GEMMs worth int8 here, or not measured to gain: kept fp32"
                for name in source["components"] if name not in convert}
        if int8_vae:
            if "vae_decoder" not in source["components"]:
                raise ProfileError(f"--int8-vae: {src} has no vae_decoder")
            convert["vae_decoder"] = source["components"]["vae_decoder"]
            kept.pop("vae_decoder")
        for name in ("vae_decoder", "vae_encoder"):
            if name in kept:
                kept[name] = "convolutions; int8 is not applied to the VAE (kept fp32, see docs/precision_profiles.md)"
        if "lyric_embedding" in kept:
            kept["lyric_embedding"] = "a single embedding Gather: no GEMM"
        for name in ("lm_prefill", "lm_decode"):
            if name in kept:
                kept[name] = "LM graphs are outside this profile's scope (int8 LM: see tools/onnx_export/lm.py)"
    else:
        convert = {name: comp for name, comp in source["components"].items() if name not in FP16_SKIP}
        kept = {name: FP16_SKIP[name] for name in source["components"] if name in FP16_SKIP}

    ref_outputs = None
    if int8_vae:  # the fp32 generations calibrate the VAE, then serve as the deviation's reference
        log(f"{profile}: generating {len(requests)} fixed requests with {src} to calibrate the VAE decoder")
        ref_outputs = dev.run_requests(src, requests, threads=threads)

    with staged_package_dir(out) as staging:
        converted_files = {c["file"] for c in convert.values()}
        converted_files |= {e["file"] for c in convert.values() for e in c["external_data"]}
        for rel in _package_files(source):
            if rel not in converted_files:
                _copy(src, staging, rel)

        report: dict[str, dict] = {}
        for name, comp in convert.items():
            rel = comp["file"]
            src_path, dst_path = src / rel, staging / rel
            external = bool(comp["external_data"])
            start = time.perf_counter()
            log(f"{profile}: {name} ({rel}{', external data' if external else ''})")
            if profile == "int8" and name == "vae_decoder":
                windows = _vae_calibration_windows(ref_outputs)
                _int8_vae_static(src_path, dst_path, windows, external)
                entry = {"precision": "int8", "method": "onnxruntime.quantization.quantize_static, QOperator: Conv → "
                                                        "QLinearConv, per-channel int8 weights, uint8 activations "
                                                        "(MinMax)",
                         "calibration": f"{len(windows)} windows of {VAE_CALIBRATION_FRAMES} latent frames from the "
                                        f"fp32 package's generations of the fixed requests",
                         "converted_ops": _op_counts(dst_path, ("QLinearConv",))}
            elif profile == "int8":
                (_int8_dynamic if int8_method == "dynamic" else _int8_nbits)(src_path, dst_path, external)
                ops = ("MatMulInteger", "DynamicQuantizeLinear") if int8_method == "dynamic" else ("MatMulNBits",)
                entry = {"precision": "int8", "converted_ops": _op_counts(dst_path, ops)}
            else:
                block_list = _fp16(src_path, dst_path, external)
                entry = {"precision": "fp16", "io": "float32 (Cast at the graph boundary)",
                         "fp32_op_types": block_list}
            if _convert_hook is not None:
                _convert_hook(name, dst_path)
            entry["left_fp32"] = _left_fp32(dst_path, profile)
            entry["seconds"] = round(time.perf_counter() - start, 2)
            report[name] = entry
            small = [i for i in entry["left_fp32"] if "weights" not in i]
            for item in entry["left_fp32"]:
                if "weights" in item:
                    log(f"  {name}: left fp32: {item['op']} {item['node']} ({', '.join(item['weights'])}): "
                        f"{item['reason']}")
            if small:
                log(f"  {name}: left fp32: {len(small)} MatMul(s) without a weight (attention, rotary "
                    f"frequencies), listed in the manifest")

        manifest = copy.deepcopy(source)
        for name, comp in convert.items():
            manifest["components"][name] = describe_onnx(staging, comp["file"])
        manifest["precision"] = profile
        method = {"int8": {"dynamic": "onnxruntime.quantization.quantize_dynamic: MatMul with constant weights → "
                                      "MatMulInteger, int8 weights per output channel, uint8 activations "
                                      "quantized per tensor at run time",
                           "nbits": f"onnxruntime MatMulNBitsQuantizer: 8-bit symmetric weights, blocks of "
                                    f"{NBITS_BLOCK_SIZE} along K, accuracy level 4 (int8 compute)"}[int8_method],
                  "fp16": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"}[profile]
        import onnxruntime

        manifest["profile"] = {
            "name": profile,
            "method": method,
            "int8_method": int8_method if profile == "int8" else None,
            "int8_vae": int8_vae,
            "onnxruntime": onnxruntime.__version__,
            "source": {"precision": "fp32", "manifest_sha256": sha256_file(manifest_path)},
            "components": {**report, **{name: {"precision": "fp32", "reason": why} for name, why in kept.items()}},
            "thresholds": THRESHOLDS[profile],
            "deviation": None,
        }
        write_json_atomic(staging / MANIFEST_FILE, manifest)

        if measure:
            log(f"{profile}: measuring the deviation from {src} on {len(requests)} fixed requests")
            deviation = dev.measure(src, staging, requests, threads=threads, ref_outputs=ref_outputs)
            failures = dev.check(deviation, THRESHOLDS[profile])
            deviation["passed"] = not failures
            manifest["profile"]["deviation"] = deviation
            w = deviation["worst"]
            log(f"{profile}: worst over the requests: latent cosine {w['latent_cosine']:.6f}, latent max_abs "
                f"{w['latent_max_abs']:.4g}, audio SNR {w['audio_snr_db']:.2f} dB, STFT cosine {w['stft_cosine']:.6f}")
            if failures and check_thresholds:
                raise ProfileError(f"the {profile} package deviates from fp32 more than allowed: "
                                   + "; ".join(failures))
        else:
            manifest["profile"]["deviation"] = {"measured": False,
                                                "reason": "made with measure=False (--no-measure)"}
        write_json_atomic(staging / MANIFEST_FILE, manifest)
    return out

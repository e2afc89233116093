"""Shared helpers for every exporter: checkpoint loading, strict state-dict matching, ONNX export.

Checkpoint rules (spec §2): official weights are safetensors, usually bf16; everything is loaded as fp32.
Loading is strict: a missing, unexpected or mis-shaped key is an error that names every such key.

ONNX rules (pinned, see docs/onnx_export.md): torch's dynamo exporter (`torch.onnx.export(dynamo=True)`,
torch 2.9.1 + onnxscript) at opset 18, fp32 graphs, dynamic axes declared per graph, weights moved to
an external-data sidecar (`<graph>.onnx.data`) when they are large.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

DEFAULT_OPSET = 18
# Graphs whose weights reach this many bytes store them in `<file>.data` (protobuf cannot hold > 2 GiB).
DEFAULT_EXTERNAL_DATA_MIN_BYTES = 512 * 1024 * 1024


class CheckpointError(RuntimeError):
    """A checkpoint directory, file or state dict does not match what the exporter expects."""


class MissingCheckpointFileError(CheckpointError, FileNotFoundError):
    """A required checkpoint file or directory does not exist."""


class StateDictMismatchError(CheckpointError):
    """Keys or shapes of a checkpoint differ from the model built from its config."""

    def __init__(self, source: str, missing: Sequence[str], unexpected: Sequence[str],
                 mis_shaped: Sequence[tuple[str, tuple, tuple]]):
        self.source = source
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mis_shaped = list(mis_shaped)
        parts = [f"state dict of {source} does not match the model built from its config:"]
        if self.missing:
            parts.append(f"  missing keys ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            parts.append(f"  unexpected keys ({len(self.unexpected)}): " + ", ".join(self.unexpected))
        for key, got, want in self.mis_shaped:
            parts.append(f"  wrong shape for {key}: checkpoint {list(got)}, model expects {list(want)}")
        super().__init__("\n".join(parts))


def require_file(path: Path, what: str) -> Path:
    """Return `path` if it is an existing file, else raise an error naming it and what it should hold."""
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointFileError(f"missing {what}: {path} does not exist or is not a file")
    return path


def require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise MissingCheckpointFileError(f"missing {what}: {path} does not exist or is not a directory")
    return path


def read_json(path: Path, what: str) -> dict:
    """Read a JSON object from `path`; a missing file or bad JSON is an error naming the path."""
    require_file(path, what)
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object, got {type(value).__name__}")
    return value


def load_safetensors_fp32(path: Path, what: str = "safetensors checkpoint") -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file on CPU; floating tensors (bf16/fp16/fp32) become fp32.

    Tensors are read and widened one at a time, so the peak is the fp32 dict plus one tensor (not the
    whole bf16 file on top).
    """
    from safetensors import safe_open

    require_file(path, what)
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            for key in fh.keys():
                tensor = fh.get_tensor(key)
                out[key] = tensor.float() if tensor.is_floating_point() else tensor
    except Exception as exc:  # safetensors raises several error types for corrupt files
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from exc
    return out


def strip_key_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Drop `prefix` from every key when ALL keys carry it (some exports prefix everything, spec §2.3).

    A checkpoint where only some keys carry the prefix is left as is, so strict matching reports it.
    """
    keys = list(state_dict)
    if keys and all(k.startswith(prefix) for k in keys):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def check_state_dict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise StateDictMismatchError naming every missing, unexpected and mis-shaped key."""
    expected = module.state_dict()  # persistent parameters and buffers only
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    mis_shaped = sorted(
        (k, tuple(state_dict[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mis_shaped:
        raise StateDictMismatchError(source, missing, unexpected, mis_shaped)


def load_state_dict_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Check keys and shapes (clear error), then copy the weights into `module` (fp32)."""
    check_state_dict(module, state_dict, source)
    module.load_state_dict(dict(state_dict), strict=True)


def _dim(d):
    from onnxscript import ir

    return d if isinstance(d, int) else ir.SymbolicDim(str(d))


def export_onnx(
    module: torch.nn.Module,
    args: tuple,
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Mapping[str, Mapping[int, "torch.export.Dim"]],
    output_shapes: Mapping[str, Sequence[int | str]],
    opset: int = DEFAULT_OPSET,
    external_data_min_bytes: int = DEFAULT_EXTERNAL_DATA_MIN_BYTES,
) -> Path:
    """Export `module(*args)` to `path` with the dynamo exporter; return the path.

    `dynamic_shapes` maps each input name to {axis: torch.export.Dim}; `output_shapes` gives every output's
    symbolic shape (ints are fixed sizes, strings are named dims). They are written into the graph because
    the exporter's own shape inference sometimes pins a dynamic output axis (seen: batch 1 on a softplus
    branch), and hosts read shapes from the file. Weights at or above `external_data_min_bytes` go to
    `<path>.data` next to the graph. The module runs in fp32 and eval mode.
    """
    path = Path(path)
    if opset != DEFAULT_OPSET:
        warnings.warn(f"opset {opset} requested; the exporter is tested at opset {DEFAULT_OPSET} only")
    module = module.eval().float()
    if list(dynamic_shapes) != list(input_names):
        raise ValueError(f"dynamic_shapes keys {list(dynamic_shapes)} must equal input_names {list(input_names)}")
    if sorted(output_shapes) != sorted(output_names):
        raise ValueError(f"output_shapes keys {sorted(output_shapes)} must equal output_names {sorted(output_names)}")
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    weight_bytes += sum(b.numel() * b.element_size() for b in module.buffers())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            tuple(args),
            f=None,
            dynamo=True,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dict(dynamic_shapes),
            optimize=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError(f"torch.onnx.export returned no program for {path.name}")
    from onnxscript import ir

    graph = program.model.graph
    for value in graph.outputs:
        if value.name not in output_shapes:
            raise RuntimeError(f"exported graph {path.name} has unexpected output {value.name!r}")
        value.shape = ir.Shape([_dim(d) for d in output_shapes[value.name]])
    path.parent.mkdir(parents=True, exist_ok=True)
    data_path = Path(str(path) + ".data")
    for stale in (path, data_path):
        if stale.exists():
            stale.unlink()
    program.save(str(path), external_data=weight_bytes >= external_data_min_bytes)
    return path


def iter_files(root: Path) -> Iterable[Path]:
    """Every regular file under `root`, sorted, as paths relative to root."""
    root = Path(root)
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            yield (Path(dirpath) / name).relative_to(root)

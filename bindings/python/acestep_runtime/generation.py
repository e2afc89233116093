"""The core's generation driver (``ace_generation_*``) for numpy: the core says which graph to run
next with which inputs; the host runs it and hands the outputs back. See docs/dll_api.md,
"Driving a generation".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ._native import NativeHandle, call_string, check, encode_str, ffi, lib, request_json
from .package import ModelPackage

_DTYPES = {lib.ACE_DTYPE_FLOAT32: np.dtype(np.float32), lib.ACE_DTYPE_INT64: np.dtype(np.int64)}
_CODES = {v: k for k, v in _DTYPES.items()}


@dataclass
class CallInput:
    name: str
    # The core's data (a read-only view, valid until the next submit), or None when the host holds it.
    array: np.ndarray | None
    # The key of the host-kept value to feed, when ``array`` is None.
    host_key: str | None


@dataclass
class CallOutput:
    name: str
    keep_as: str | None  # None: submit it; else keep the value under this key


@dataclass
class GraphCall:
    component: str
    inputs: list[CallInput]
    outputs: list[CallOutput]
    release: list[str]
    stage: str
    stage_done: int
    stage_total: int


def _text(ptr) -> str:
    return ffi.string(ptr).decode("utf-8")


class Generation(NativeHandle):
    """One generation of one request on one package (``ace_generation_create``)."""

    _free_name = "ace_generation_free"

    def __init__(self, package: ModelPackage, request: dict):
        out = ffi.new("AceGeneration **")
        text = request_json(request)
        check(lib.ace_generation_create(package.ptr, encode_str(text, "request"), out))
        self._own(out[0])
        self._package = package  # the core keeps the package alive too; this keeps the wrapper's info
        self.info = json.loads(call_string(lib.ace_generation_info_json, self.ptr))

    def refresh_info(self) -> dict:
        """Re-reads the plan: with the LM, frames, prompts and track ids are known only once its
        phases have run."""
        self.info = json.loads(call_string(lib.ace_generation_info_json, self.ptr))
        return self.info

    def next(self) -> GraphCall | None:
        """The next graph run, or None when the audio is ready."""
        slot = ffi.new("const AceGraphCall **")
        check(lib.ace_generation_next(self.ptr, slot))
        call = slot[0]
        if call == ffi.NULL:
            return None
        inputs = []
        for i in range(call.num_inputs):
            t = call.inputs[i]
            shape = tuple(t.shape[d] for d in range(t.rank))
            if t.host_key != ffi.NULL:
                inputs.append(CallInput(_text(t.name), None, _text(t.host_key)))
                continue
            dtype = _DTYPES[t.dtype]
            array = np.frombuffer(ffi.buffer(t.data, t.byte_len), dtype=dtype).reshape(shape) if t.byte_len else np.empty(shape, dtype)
            inputs.append(CallInput(_text(t.name), array, None))
        outputs = [
            CallOutput(_text(call.outputs[i].name), None if call.outputs[i].keep_as == ffi.NULL else _text(call.outputs[i].keep_as))
            for i in range(call.num_outputs)
        ]
        return GraphCall(
            component=_text(call.component),
            inputs=inputs,
            outputs=outputs,
            release=[_text(call.release[i]) for i in range(call.num_release)],
            stage=_text(call.stage),
            stage_done=int(call.stage_done),
            stage_total=int(call.stage_total),
        )

    def submit(self, outputs: dict[str, np.ndarray]) -> None:
        """Hands back the outputs of the pending call that are not kept by the host."""
        tensors = ffi.new("AceTensor[]", max(len(outputs), 1))
        keep = []  # keeps the arrays and C strings alive for the call
        for i, (name, array) in enumerate(outputs.items()):
            array = np.ascontiguousarray(array)
            code = _CODES.get(array.dtype)
            if code is None:
                raise TypeError(f"output {name!r} has dtype {array.dtype}; the core takes float32 or int64")
            cname = ffi.new("char[]", encode_str(name, "output name"))
            shape = ffi.new("int64_t[]", list(array.shape) or [0])
            keep += [array, cname, shape]
            t = tensors[i]
            t.name, t.dtype, t.shape, t.rank = cname, code, shape, array.ndim
            t.data, t.byte_len = ffi.from_buffer(array), array.nbytes
        check(lib.ace_generation_submit(self.ptr, tensors, len(outputs)))

    def _result(self, fn) -> np.ndarray:
        data = ffi.new("const float **")
        shape = ffi.new("size_t[3]")
        check(fn(self.ptr, data, shape))
        dims = tuple(shape[i] for i in range(3))
        count = dims[0] * dims[1] * dims[2]
        return np.frombuffer(ffi.buffer(data[0], 4 * count), dtype=np.float32).reshape(dims).copy()

    def audio(self) -> np.ndarray:
        """[B, channels, samples] float32, peak-guarded (a copy)."""
        return self._result(lib.ace_generation_result_audio)

    def latents(self) -> np.ndarray:
        """[B, T, 64] float32 final latents (a copy)."""
        return self._result(lib.ace_generation_result_latents)

    def sidecar(self, item: int, host: dict | None = None) -> dict:
        """The sidecar of batch item ``item``, with the host's own fields under ``"host"``."""
        text = json.dumps(host or {}, ensure_ascii=False)
        return json.loads(call_string(lib.ace_generation_sidecar_json, self.ptr, item, encode_str(text, "host")))

"""ONNX Runtime sessions for a model package: created once, reused across generations.

Device choice: ``"cpu"``, ``"cuda"`` (fails if the installed onnxruntime has no CUDA provider) or
``"auto"`` (CUDA when available, else CPU — the fallback is logged, never silent). Every run is timed
so a caller can separate ONNX Runtime time from host overhead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .package import ModelPackage, PackageError

log = logging.getLogger("acestep_runtime")

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RunStats:
    """Accumulated ONNX Runtime time per component: wall seconds, and process CPU seconds (every ORT
    thread; unlike wall time, robust to other load on the machine)."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float, cpu_seconds: float = 0.0) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu_seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def resolve_providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda":
        if not has_cuda:
            raise RuntimeError(
                "device 'cuda' requested, but the installed onnxruntime has no CUDAExecutionProvider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        if has_cuda:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.info("device auto: no CUDAExecutionProvider in this onnxruntime, running on CPU")
    return ["CPUExecutionProvider"]


class Sessions:
    """Lazily created ORT sessions, one per package component."""

    def __init__(self, package: ModelPackage, *, device: str = "auto", threads: int | None = None):
        import onnxruntime as ort

        self._ort = ort
        self.package = package
        self.providers = resolve_providers(device)
        self.threads = threads
        self.stats = RunStats()
        self._sessions: dict[str, object] = {}
        self._input_names: dict[str, frozenset[str]] = {}

    def _options(self):
        opts = self._ort.SessionOptions()
        opts.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads is not None:
            if self.threads < 1:
                raise ValueError(f"threads must be >= 1, got {self.threads}")
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        return opts

    def session(self, name: str):
        if name not in self._sessions:
            path = self.package.component_path(name)
            try:
                sess = self._ort.InferenceSession(str(path), self._options(), providers=self.providers)
            except Exception as exc:  # ORT raises its own exception types
                raise PackageError(f"cannot load {path} into onnxruntime: {exc}") from None
            active = sess.get_providers()
            if self.providers[0] not in active:
                log.warning("%s: %s unavailable, running on %s", name, self.providers[0], active[0])
            self._sessions[name] = sess
            self._input_names[name] = frozenset(i.name for i in sess.get_inputs())
        return self._sessions[name]

    def run(self, name: str, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> list[np.ndarray]:
        """Runs a component; feed names must match the graph's inputs exactly. Returns the outputs
        named in ``output_names`` (all, in graph order, when None)."""
        return self._timed(name, feeds, lambda sess: sess.run(output_names, feeds))

    def run_values(self, name: str, feeds: dict, output_names: list[str]) -> list:
        """Like :meth:`run`, on ``onnxruntime.OrtValue``\\s: a feed may be a numpy array (wrapped
        without a copy) or an OrtValue an earlier run returned; the outputs stay OrtValues, so a
        value the host keeps (an LM KV cache) goes from one run to the next without numpy."""
        wrap = self._ort.OrtValue.ortvalue_from_numpy
        values = {k: v if isinstance(v, self._ort.OrtValue) else wrap(np.ascontiguousarray(v)) for k, v in feeds.items()}
        return self._timed(name, feeds, lambda sess: sess.run_with_ort_values(output_names, values))

    def _timed(self, name: str, feeds: dict, run):
        """Checks the feed names against the graph's inputs, then runs ``run(session)`` timed into
        :attr:`stats`."""
        sess = self.session(name)
        expected = self._input_names[name]
        if feeds.keys() != expected:
            raise PackageError(
                f"{name}: host feeds {sorted(feeds)} but the graph takes {sorted(expected)} "
                "(package exported by an incompatible exporter version?)"
            )
        start, cpu_start = time.perf_counter(), time.process_time()
        outputs = run(sess)
        self.stats.add(name, time.perf_counter() - start, time.process_time() - cpu_start)
        return outputs

    def runtime_info(self, components=None) -> dict:
        """Versions and the execution provider of each of ``components`` (default: every session
        loaded so far), for sidecars."""
        from . import _native

        return {
            "acestep_runtime_core": _native.version(),
            "core_abi": _native.abi_version(),
            "onnxruntime": self._ort.__version__,
            "providers": {name: self.session(name).get_providers()[0] for name in (components or self._sessions)},
        }

    def warm(self, names) -> None:
        for name in names:
            self.session(name)

"""ONNX Runtime sessions for a model package: created once, reused across generations.

Device choice: ``"cpu"``, ``"cuda"`` (fails if the installed onnxruntime has no CUDA provider) or
``"auto"`` (CUDA when available, else CPU — the fallback is logged, never silent). Every run is timed
so a caller can separate ONNX Runtime time from host overhead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ort_ops, session_cache
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
    """ORT sessions, one per package component, created on first use or ahead of it in background
    threads (:meth:`preload`), and kept.

    ``cache``: a directory where optimised graphs are kept between processes (:mod:`.session_cache`);
    the default ``"auto"`` is ``$ACESTEP_SESSION_CACHE`` when set, else no cache; ``None`` is no cache.
    Only CPU sessions are cached. ``prepack``: False leaves the weights memory-mapped from the package
    instead of copying them into ORT's pre-packed GEMM layout: sessions start in about a second
    whatever the package size, and GEMMs pack their weights on the fly (docs/performance.md has the
    measured trade-off). ``load_workers``: how many sessions :meth:`preload` creates at once.
    ``fused_ops``: register the core library's ONNX Runtime kernels (:mod:`.ort_ops`) on CPU sessions,
    so the VAE's Snake activations run as one pass each instead of five; False runs the graphs' plain
    function bodies (the same song within ~1e-6).

    Every run ends by returning the CPU memory arena's free space to the system
    (``memory.enable_memory_arena_shrinkage``): otherwise each session keeps the peak of its largest
    run, and a long song holds the DiT's activations through the whole VAE decode (the 600 s fp32
    run was killed for it). Re-allocating per run costs nothing measurable next to the run itself.
    """

    def __init__(self, package: ModelPackage, *, device: str = "auto", threads: int | None = None,
                 cache: str | os.PathLike | None = "auto", prepack: bool = True, load_workers: int = 2,
                 fused_ops: bool = True):
        import onnxruntime as ort

        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if load_workers < 1:
            raise ValueError(f"load_workers must be >= 1, got {load_workers}")
        self._ort = ort
        self.package = package
        self.providers = resolve_providers(device)
        self.threads = threads
        self.prepack = prepack
        # The kernels are CPU code: a CUDA session runs the function bodies on the GPU instead.
        self.fused_ops = fused_ops and self.providers == ["CPUExecutionProvider"]
        self.stats = RunStats()
        self.load_seconds: dict[str, float] = {}  # wall seconds to create each session
        self.cache_hits: dict[str, bool] = {}  # per component: loaded from the cache (True) or not
        root = session_cache.default_dir() if cache == "auto" else (Path(cache) if cache is not None else None)
        # Optimised graphs are saved per device; only the CPU's are known to load back identically.
        self.cache = session_cache.SessionCache(root) if root is not None and self.providers == ["CPUExecutionProvider"] else None
        self.load_workers = load_workers
        self._sessions: dict[str, object] = {}
        self._input_names: dict[str, frozenset[str]] = {}
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def _options(self, level=None):
        opts = self._ort.SessionOptions()
        opts.graph_optimization_level = level if level is not None else self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        if not self.prepack:
            opts.add_session_config_entry("session.disable_prepacking", "1")
        if self.fused_ops and not ort_ops.register(opts):
            self.fused_ops = False  # this onnxruntime refused them; said once, not per session
        return opts

    def _registration_guard(self):
        return ort_ops.first_session_alone() if self.fused_ops else contextlib.nullcontext()

    def _cache_key(self, name: str) -> dict:
        return session_cache.SessionCache.key(
            package_root=self.package.root,
            manifest_sha256=self.package.manifest_sha256,
            component=name,
            files=self.package.component_files(name),
            ort_version=self._ort.__version__,
            options={"level": "ORT_ENABLE_ALL", "providers": self.providers, "prepack": self.prepack,
                     "fused_ops": self.fused_ops},
        )

    def _create(self, name: str):
        """Creates the session of ``name``: from the cache when it holds the component's optimised
        graph, else from the package (saving the optimised graph into the cache on the way)."""
        path = self.package.component_path(name)
        start = time.perf_counter()
        key = self._cache_key(name) if self.cache is not None else None
        sess, hit = None, False
        if key is not None:
            cached = self.cache.lookup(key)
            if cached is not None:
                try:
                    opts = self._options(self._ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
                    with self._registration_guard():
                        sess, hit = self._ort.InferenceSession(str(cached), opts, providers=self.providers), True
                except Exception as exc:  # a damaged entry: rebuild it from the package
                    log.warning("%s: session cache entry %s unusable (%s); rebuilding it", name, cached.parent, exc)
                    self.cache.discard(key)
        if sess is None:
            opts = self._options()
            tmp = None
            if key is not None:
                try:
                    tmp = self.cache.prepare(key)
                    self.cache.saving_options(opts, tmp)
                except OSError as exc:
                    log.warning("session cache %s not writable (%s); not caching", self.cache.root, exc)
                    tmp, opts = None, self._options()
            try:
                with self._registration_guard():
                    sess = self._ort.InferenceSession(str(path), opts, providers=self.providers)
            except Exception as exc:  # ORT raises its own exception types
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
                raise PackageError(f"cannot load {path} into onnxruntime: {exc}") from None
            if tmp is not None:
                try:
                    entry = self.cache.commit(key, tmp)
                    if entry is not None:
                        size = sum(f.stat().st_size for f in entry.iterdir())
                        log.info("%s: optimised graph saved to the session cache %s (%.2f GB)", name, entry, size / 1e9)
                except OSError as exc:
                    shutil.rmtree(tmp, ignore_errors=True)
                    log.warning("session cache: could not write the entry of %s (%s)", name, exc)
        active = sess.get_providers()
        if self.providers[0] not in active:
            log.warning("%s: %s unavailable, running on %s", name, self.providers[0], active[0])
        with self._lock:
            self._sessions[name] = sess
            self._input_names[name] = frozenset(i.name for i in sess.get_inputs())
            self.load_seconds[name] = time.perf_counter() - start
            self.cache_hits[name] = hit
        return sess

    def preload(self, names) -> None:
        """Starts creating the sessions of ``names`` in background threads, in the given order
        (``load_workers`` at a time; ORT releases the GIL while it loads). :meth:`session` waits for a
        session still loading; a load that failed raises there."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.load_workers, thread_name_prefix="ort-load")
            for name in names:
                if name not in self._sessions and name not in self._pending:
                    self._pending[name] = self._pool.submit(self._create, name)

    def session(self, name: str):
        with self._lock:
            sess = self._sessions.get(name)
            pending = self._pending.get(name)
        if sess is not None:
            return sess
        if pending is not None:
            try:
                return pending.result()
            finally:
                with self._lock:
                    self._pending.pop(name, None)
        return self._create(name)

    def close(self) -> None:
        """Waits for background loads (their sessions are dropped with this object)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def run(self, name: str, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> list[np.ndarray]:
        """Runs a component; feed names must match the graph's inputs exactly. Returns the outputs
        named in ``output_names`` (all, in graph order, when None)."""
        return self._timed(name, feeds, lambda sess: sess.run(output_names, feeds, self.run_options))

    def run_values(self, name: str, feeds: dict, output_names: list[str]) -> list:
        """Like :meth:`run`, on ``onnxruntime.OrtValue``\\s: a feed may be a numpy array (wrapped
        without a copy) or an OrtValue an earlier run returned; the outputs stay OrtValues, so a
        value the host keeps (an LM KV cache) goes from one run to the next without numpy."""
        wrap = self._ort.OrtValue.ortvalue_from_numpy
        values = {k: v if isinstance(v, self._ort.OrtValue) else wrap(np.ascontiguousarray(v)) for k, v in feeds.items()}
        return self._timed(name, feeds, lambda sess: sess.run_with_ort_values(output_names, values, self.run_options))

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
            "fused_ops": ort_ops.DOMAIN if self.fused_ops else None,
            "providers": {name: self.session(name).get_providers()[0] for name in (components or list(self._sessions))},
        }

    def warm(self, names) -> None:
        """Creates the sessions of ``names`` now (in parallel, see :meth:`preload`)."""
        names = list(names)
        self.preload(names)
        for name in names:
            self.session(name)

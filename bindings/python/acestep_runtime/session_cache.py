"""On-disk cache of ONNX Runtime's optimised graphs, so that opening a package the second time skips
graph optimisation and weight pre-packing (docs/performance.md, "Session start").

The first session of a component is created as usual, with ORT told to also save the graph it
optimised (``optimized_model_filepath``), its weights in an external data file and the pre-packed
GEMM weights beside them (``session.save_external_prepacked_constant_initializers``). Later sessions
load that saved graph with optimisation off: ORT memory-maps the data file, so the weights are
neither copied nor re-packed.

An entry is keyed by everything that shapes the saved graph: the package (manifest sha256, and size
and mtime of the component's files, so a file replaced in place is a miss), the onnxruntime version,
the graph optimisation level and session configuration, and the CPU (an ``ORT_ENABLE_ALL`` graph
holds kernels and layouts chosen for this CPU's instruction set). A changed key is a miss, and the
entries the same package left for that component are removed, so stale copies do not pile up.
Entries are written to a temporary directory and renamed into place, so a reader never sees half an
entry and two processes filling the same entry do not clash.

Off unless asked for: ``Pipeline.open(..., session_cache=DIR)``, ``generate --session-cache DIR`` or
``$ACESTEP_SESSION_CACHE=DIR``. Worth it for the small and convolutional graphs (VAE, text encoder:
about 3-4x less CPU to start); for the full-size fp32 DiT an entry is 1.9x the graph on disk and did
not start faster on a 24 GiB machine (docs/performance.md). CPU sessions only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import uuid
from pathlib import Path

log = logging.getLogger("acestep_runtime")

FORMAT = 1  # bump when the layout of an entry or what goes into the key changes
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
INFO_FILE = "entry.json"  # written last: an entry without it is incomplete
ENV = "ACESTEP_SESSION_CACHE"


def default_dir() -> Path | None:
    """The cache directory named by ``$ACESTEP_SESSION_CACHE``; None when it is unset or says ``off``
    (or ``0``, ``none``, empty). Off by default: an entry of a full-size graph takes 1.6-1.9x the
    graph's size on disk (docs/performance.md)."""
    env = os.environ.get(ENV)
    if env is None or env.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    return Path(env).expanduser()


def cpu_fingerprint() -> str:
    """What an optimised CPU graph depends on: the architecture and, on Linux, the CPU's feature
    flags (AVX-512, VNNI, ... decide the layouts and kernels ORT picks)."""
    parts = [platform.system(), platform.machine()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    parts.append(" ".join(sorted(line.split(":", 1)[1].split())))
                    break
    except OSError:
        parts.append(platform.processor())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class SessionCache:
    """One cache directory. ``lookup`` finds a complete entry; ``prepare`` returns where a new one is
    written while its session is created; ``commit`` publishes it."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def key(*, package_root: Path, manifest_sha256: str, component: str, files: list[Path],
            ort_version: str, options: dict) -> dict:
        """Everything an entry depends on, as a JSON-able dict (its hash names the entry)."""
        stats = []
        for path in files:
            st = path.stat()
            stats.append([path.name, st.st_size, st.st_mtime_ns])
        return {
            "format": FORMAT,
            "package": str(Path(package_root).resolve()),
            "manifest_sha256": manifest_sha256,
            "component": component,
            "files": stats,
            "onnxruntime": ort_version,
            "options": options,
            "cpu": cpu_fingerprint(),
        }

    @staticmethod
    def _name(key: dict) -> str:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return f"{key['component']}-{digest}"

    def lookup(self, key: dict) -> Path | None:
        """The saved graph of a complete entry for ``key``, or None."""
        entry = self.root / self._name(key)
        if (entry / INFO_FILE).is_file() and (entry / MODEL_FILE).is_file():
            return entry / MODEL_FILE
        return None

    def prepare(self, key: dict) -> Path:
        """A fresh temporary directory in the cache for a new entry; the session being created saves
        its optimised graph into ``<dir>/model.onnx``."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{self._name(key)}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        return tmp

    def commit(self, key: dict, tmp: Path) -> Path | None:
        """Publishes the entry written into ``tmp``; removes older entries of the same package and
        component. Returns the entry, or None when nothing usable was written."""
        if not (tmp / MODEL_FILE).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        (tmp / INFO_FILE).write_text(json.dumps(key, indent=1, sort_keys=True), encoding="utf-8")
        entry = self.root / self._name(key)
        try:
            os.rename(tmp, entry)
        except OSError:  # another process published the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return entry if (entry / INFO_FILE).is_file() else None
        self._evict_stale(key, keep=entry.name)
        return entry

    def discard(self, key: dict) -> None:
        """Removes ``key``'s entry (e.g. one ORT could not load)."""
        shutil.rmtree(self.root / self._name(key), ignore_errors=True)

    def _evict_stale(self, key: dict, keep: str) -> None:
        prefix = f"{key['component']}-"
        for entry in self.root.iterdir():
            if entry.name == keep or not entry.name.startswith(prefix):
                continue
            try:
                old = json.loads((entry / INFO_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not ours to judge: an entry being written, or foreign files
            if old.get("package") == key["package"] and old.get("component") == key["component"]:
                log.info("session cache: removing stale entry %s", entry)
                shutil.rmtree(entry, ignore_errors=True)

    def saving_options(self, opts, tmp: Path) -> None:
        """Tells ORT to save the graph it optimises, with its weights and pre-packed weights in an
        external data file (ORT memory-maps that file when the entry is loaded)."""
        opts.optimized_model_filepath = str(tmp / MODEL_FILE)
        # ORT warns that an ORT_ENABLE_ALL graph is specific to this machine: the key has the CPU.
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
        opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        opts.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")

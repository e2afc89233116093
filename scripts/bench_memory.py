"""The benchmarks' memory figures: the process's resident set now and its high-water mark, which can be
restarted so that a peak measures one stage (Linux /proc; elsewhere the lifetime peak)."""

from __future__ import annotations

import resource


def _status_mb(field: str) -> float | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in MB; None where there is no such file."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Restarts the RSS high-water mark at the current RSS (Linux ≥ 4.0: /proc/self/clear_refs);
    False where that is impossible (the peak then stays the process's lifetime peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The RSS high-water mark since the last reset_peak_rss (or the process start), in MB."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return rss if rss is not None else float("nan")

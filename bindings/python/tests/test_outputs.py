"""Writing results: all-or-nothing publication of audio + sidecar pairs, on bad disks and interrupts."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from acestep_runtime import outputs
from acestep_runtime.pipeline import Cancelled, Pipeline
from tools.parity.fixtures import tiny_package_dir


@pytest.fixture(scope="module")
def result():
    with Pipeline.open(tiny_package_dir(), device="cpu") as pipe:
        return pipe.generate({"thinking": False, "caption": "x", "duration": 10, "seeds": [1, 2], "batch_size": 2})


def test_pairs_are_published_together_with_the_audio_hash(result, tmp_path):
    paths = result.save(tmp_path / "song.wav")
    assert [p.name for p in paths] == ["song_0.wav", "song_1.wav"]
    for p in paths:
        sidecar = json.loads(outputs.sidecar_path(p).read_text())
        import hashlib

        assert sidecar["host"]["audio_sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".*.partial"))


def test_cancel_before_publication_leaves_nothing(result, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        result.save(tmp_path, "flac", cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_stale_partials_of_killed_runs_are_cleaned(result, tmp_path):
    target = tmp_path / "song.flac"
    stale = tmp_path / ".song.flac.abc123.partial"
    fresh = tmp_path / ".song.flac.def456.partial"  # a live writer's: must stay
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    single = type(result)(**{**result.__dict__, "audio": result.audio[:1], "sidecars": result.sidecars[:1],
                             "track_ids": result.track_ids[:1], "seeds": result.seeds[:1],
                             "file_names": {f: n[:1] for f, n in result.file_names.items()}})
    single.save(target)
    assert not stale.exists() and fresh.exists() and target.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_read_only_directory_is_a_clear_error_and_leaves_nothing(result, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        with pytest.raises(OSError) as err:
            result.save(ro / "x.flac")
        assert err.value.errno == 30  # EROFS
        assert list(ro.iterdir()) == []
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_leaves_no_file_at_all(result, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    # Room for the first track's audio but not for everything: the failure comes mid-way.
    first = len(outputs.audio_io.encode(result.audio[0], "wav32f"))
    size_kb = (first + 8192) // 1024 + 8
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(disk)], check=True)
    try:
        with pytest.raises(OSError) as err:
            result.save(disk / "x.wav", "wav32f")
        assert err.value.errno == 28  # ENOSPC
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_concurrent_writers_leave_a_consistent_pair(tmp_path):
    """Two processes write different songs to the same names (overwrite), many times over: the audio
    file left on disk matches its sidecar's hash, and no temporary file is left. (The interleaving
    the directory lock prevents is rare, so this is a smoke test of the path, not a proof.)"""
    import hashlib
    import sys

    repo = Path(__file__).resolve().parents[3]
    code = f"""
import sys
sys.path[:0] = [{str(repo / 'bindings' / 'python')!r}, {str(repo)!r}]
from acestep_runtime.pipeline import Pipeline
seed = int(sys.argv[1])
with Pipeline.open({str(tiny_package_dir())!r}, device="cpu") as pipe:
    result = pipe.generate({{"thinking": False, "caption": "x", "duration": 10, "seed": seed}})
for _ in range(15):
    result.save({str(tmp_path / 'same.wav')!r}, "wav32f", overwrite=True)
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, str(seed)]) for seed in (1, 2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    audio = (tmp_path / "same.wav").read_bytes()
    sidecar = json.loads((tmp_path / "same.wav.json").read_text())
    assert sidecar["host"]["audio_sha256"] == hashlib.sha256(audio).hexdigest()
    assert not list(tmp_path.glob(".*.partial"))

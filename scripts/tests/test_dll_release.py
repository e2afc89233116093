"""scripts/dll_release.py: the release folder, its archives and the wheel.

The end-to-end tests run `scripts/dll_release.sh` twice (reusing the release build that setup.sh made)
and check the result with tools independent of the script: sha256 of every file, tarfile/zipfile
readers, `nm` for the exported symbols, a C compiler for the example, torch for the example's noise,
and a fresh virtual environment for the wheel.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "dll_release.py"
HEADER = ROOT / "include" / "acestep_runtime.h"


def load_script():
    spec = importlib.util.spec_from_file_location("dll_release", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_release(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "dll_release.sh"), *args],
                          capture_output=True, text=True, env=env)


def crate_version() -> str:
    return tomllib.loads((ROOT / "runtime_rust_dll" / "Cargo.toml").read_text())["package"]["version"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Archive writer and argument errors (no build)


def make_tree(root: Path, mtime: int) -> Path:
    folder = root / "pkg-1.0"
    (folder / "lib").mkdir(parents=True)
    (folder / "docs" / "deep").mkdir(parents=True)
    (folder / "lib" / "libx.so").write_bytes(bytes(range(256)) * 40)
    (folder / "b.txt").write_text("b\n")
    (folder / "a.txt").write_text("a\n" * 1000)
    (folder / "docs" / "deep" / "z.md").write_text("z")
    for i, path in enumerate(sorted(folder.rglob("*"))):
        path.chmod(0o700 if path.is_dir() else 0o600 + (i % 2) * 0o100)
        os.utime(path, (mtime + i, mtime + i))
    return folder


def test_archives_are_byte_identical_and_normalised(tmp_path):
    rel = load_script()
    epoch = 1_700_000_000
    first = make_tree(tmp_path / "one", 1_000_000)
    second = make_tree(tmp_path / "two", 1_600_000_000)  # other mtimes and creation order of the same content
    for folder in (first, second):
        rel.normalize_modes(folder)
        rel.write_tar_gz(folder, folder.parent / "x.tar.gz", epoch)
        rel.write_zip(folder, folder.parent / "x.zip", epoch)
    for name in ("x.tar.gz", "x.zip"):
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes(), name

    expected = sorted(p.relative_to(first.parent).as_posix() for p in [first, *first.rglob("*")])
    with tarfile.open(first.parent / "x.tar.gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == expected
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (epoch, 0, 0, "", "")
            want = 0o755 if m.isdir() or m.name.endswith(".so") else 0o644
            assert m.mode == want, m.name
            if m.isfile():
                assert tar.extractfile(m).read() == (first.parent / m.name).read_bytes()
    with zipfile.ZipFile(first.parent / "x.zip") as zf:
        infos = zf.infolist()
        assert [i.filename.rstrip("/") for i in infos] == expected
        for i in infos:
            assert i.date_time == (2023, 11, 14, 22, 13, 20)  # 1_700_000_000 in UTC
            want = 0o755 if i.is_dir() or i.filename.endswith(".so") else 0o644
            assert (i.external_attr >> 16) & 0o777 == want, i.filename
            if not i.is_dir():
                assert zf.read(i) == (first.parent / i.filename).read_bytes()
    with open(first.parent / "x.tar.gz", "rb") as f:
        head = f.read(10)
    assert int.from_bytes(head[4:8], "little") == epoch and not head[3] & 0x08  # gzip: our mtime, no name


def test_unknown_target_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    proc = run_release("--target", "sparc64-nonsense-os", "--out", str(out))
    assert proc.returncode == 1
    assert "--target 'sparc64-nonsense-os' is not a target triple rustc knows" in proc.stderr
    assert not out.exists()


def test_cross_target_without_its_standard_library_is_a_clear_error(tmp_path):
    if not shutil.which("rustup"):
        pytest.skip("needs rustup to list installed targets")
    installed = subprocess.run(["rustup", "target", "list", "--installed"], capture_output=True, text=True).stdout.split()
    missing = next(t for t in ("riscv64gc-unknown-linux-gnu", "powerpc64le-unknown-linux-gnu", "s390x-unknown-linux-gnu")
                   if t not in installed)
    out = tmp_path / "out"
    proc = run_release("--target", missing, "--out", str(out))
    assert proc.returncode == 1
    assert f"rustup target add {missing}" in proc.stderr
    assert not out.exists()


def test_missing_toolchain_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PATH=str(tmp_path / "empty"), PYTHON=sys.executable)
    proc = subprocess.run(["/bin/bash", str(ROOT / "scripts" / "dll_release.sh"), "--out", str(out)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "`rustc` is not installed or not on PATH" in proc.stderr
    assert not out.exists()


def test_unwritable_out_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_release("--out", str(blocker / "out"))  # a directory under a regular file
    assert proc.returncode == 1
    assert f"--out {blocker / 'out'} is not writable" in proc.stderr
    proc = run_release("--out", str(blocker))
    assert proc.returncode == 1 and f"--out {blocker} exists and is not a directory" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_a_failing_step_leaves_nothing_under_out(tmp_path, monkeypatch, capsys):
    rel = load_script()
    out = tmp_path / "out"
    out.mkdir()
    (out / "older-file").write_text("kept")

    def broken_build(target):
        raise rel.ReleaseError("simulated cargo failure")

    monkeypatch.setattr(rel, "build_core", broken_build)
    assert rel.main(["--out", str(out), "--skip-python"]) == 1
    assert "simulated cargo failure" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["older-file"]
    monkeypatch.setattr(rel, "build_core", broken_build)
    assert rel.main(["--out", str(tmp_path / "new")]) == 1
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------
# End to end: two real runs


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    base = tmp_path_factory.mktemp("release")
    runs = []
    for name in ("a", "b"):
        proc = run_release("--out", str(base / name))
        assert proc.returncode == 0, proc.stderr
        runs.append(base / name)
    return runs


@pytest.fixture(scope="module")
def folder(releases):
    (only,) = [p for p in releases[0].iterdir() if p.is_dir()]
    return only


def test_release_layout_and_metadata(folder):
    version = crate_version()
    assert folder.name == f"acestep-runtime-{version}-linux-x86_64"
    info = json.loads((folder / "release.json").read_text())
    abi = int(re.search(r"#define ACE_ABI_VERSION (\d+)", HEADER.read_text()).group(1))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    assert (info["version"], info["abi_version"], info["git_commit"], info["rustc"]) == (version, abi, commit, rustc)
    assert info["target"] == "x86_64-unknown-linux-gnu"
    assert info["build"]["profile_release"]["panic"] == "unwind"
    assert (folder / "include" / "acestep_runtime.h").read_bytes() == HEADER.read_bytes()
    assert (folder / "docs" / "dll_api.md").read_bytes() == (ROOT / "docs" / "dll_api.md").read_bytes()
    assert "MIT License" in (folder / "LICENSE").read_text()
    readme = (folder / "README.txt").read_text()
    assert "lib/libacestep_runtime.so" in readme and info["python_wheel"].split("/")[-1] in readme
    assert (folder / "examples" / "c" / "noise_demo.c").is_file()
    assert (folder / "bindings" / "csharp").is_dir() == (ROOT / "bindings" / "csharp").is_dir() == info["csharp"]


def test_sha256sums_cover_every_file(folder):
    listed = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(listed) == files
    for name, digest in listed.items():
        assert sha256(folder / name) == digest, name
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=folder).returncode == 0


def test_two_runs_give_identical_archives(releases, folder):
    for suffix in (".tar.gz", ".zip"):
        a, b = (run / f"{folder.name}{suffix}" for run in releases)
        assert a.read_bytes() == b.read_bytes(), suffix
    with tarfile.open(releases[0] / f"{folder.name}.tar.gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                assert tar.extractfile(m).read() == (folder.parent / m.name).read_bytes(), m.name
    with zipfile.ZipFile(releases[0] / f"{folder.name}.zip") as zf:
        names = {i.filename for i in zf.infolist() if not i.is_dir()}
    assert names == {p.relative_to(folder.parent).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert not [p for p in releases[0].iterdir() if p.name.startswith(".")]  # no staging left


def test_library_exports_exactly_the_header_functions(folder):
    lib = folder / "lib" / "libacestep_runtime.so"
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    declared = set(re.findall(r"^\w[\w\s\*]*?\b(ace_\w+)\(", HEADER.read_text(), re.M))
    # Besides the header's functions, only ONNX Runtime's custom-op entry point (docs/dll_api.md).
    assert declared and exported == declared | {"RegisterCustomOps"}


def test_c_example_builds_with_werror_against_the_release_and_matches_torch(folder, tmp_path):
    exe = tmp_path / "noise_demo"
    cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", str(folder / "include"),
                         str(folder / "examples" / "c" / "noise_demo.c"), "-L", str(folder / "lib"),
                         "-lacestep_runtime", "-o", str(exe)], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    proc = subprocess.run([str(exe)], capture_output=True, text=True, env=dict(os.environ, LD_LIBRARY_PATH=str(folder / "lib")))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"acestep_runtime {crate_version()} (ABI v1)"
    assert lines[2].startswith("expected error 3: ")
    seed, values = lines[1].split(":")
    assert seed == "seed 42"
    torch = pytest.importorskip("torch")
    expected = torch.randn(2, 3, generator=torch.Generator().manual_seed(42)).flatten().numpy()
    assert np.array_equal(np.array(values.split(), dtype=np.float32), expected)  # %.9g round-trips float32


def test_wheel_is_platform_tagged_and_carries_the_core_and_the_whole_package(folder):
    (wheel,) = (folder / "bindings" / "python").glob("*.whl")
    assert wheel.name == f"acestep_runtime-{crate_version()}-cp310-abi3-linux_x86_64.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("acestep_runtime/_native/acestep_runtime.h") == HEADER.read_bytes()
        shipped_core = zf.read("acestep_runtime/_native/acestep_runtime.abi3.so")
        record = zf.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
        for line in record.splitlines():
            name, digest, _ = line.rsplit(",", 2)
            if digest:  # RECORD lists itself without a hash
                algo, value = digest.split("=", 1)
                raw = hashlib.new(algo, zf.read(name)).digest()
                assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == value, name
    # the same cargo artifact as lib/
    assert shipped_core == (folder / "lib" / "libacestep_runtime.so").read_bytes()
    assert "acestep_runtime/_native/libacestep_runtime.so" not in names  # a dev copy never ships
    source = ROOT / "bindings" / "python" / "acestep_runtime"
    modules = {f"acestep_runtime/{p.relative_to(source).as_posix()}" for p in source.rglob("*.py")}
    assert modules <= names  # every module of the package directory, whatever the lead adds


def test_wheel_in_a_fresh_venv_generates_the_same_track_as_the_source_tree(folder, tmp_path):
    """The venv sees the interpreter's third-party packages (numpy, onnxruntime, ...) but
    acestep_runtime only from the wheel: checked by where it is imported from."""
    sys.path.insert(0, str(ROOT))
    from tools.parity.fixtures import tiny_package_dir

    package = tiny_package_dir()
    (wheel,) = (folder / "bindings" / "python").glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ACESTEP_RUNTIME_LIB", "ACESTEP_RUNTIME_HEADER")}
    where = subprocess.run(
        [py, "-I", "-c", "import acestep_runtime._native as n; print(n.__file__); print(n.library_path()); print(n.version())"],
        cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    module_file, library, version = where.stdout.splitlines()
    assert module_file.startswith(str(venv)) and library.startswith(str(venv)), where.stdout
    assert library.endswith("_native/acestep_runtime.abi3.so") and version == crate_version()

    args = ["generate", "--model", str(package), "--caption", "release check", "--duration", "10",
            "--seed", "7", "--format", "wav32f", "--no-progress", "--device", "cpu"]
    gen_venv = subprocess.run([str(venv / "bin" / "acestep-runtime"), *args, "--out", str(work / "venv") + "/"],
                              cwd=work, env=env, capture_output=True, text=True)
    assert gen_venv.returncode == 0, gen_venv.stderr
    gen_src = subprocess.run([sys.executable, "-m", "acestep_runtime", *args, "--out", str(work / "src") + "/"],
                             cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT / "bindings" / "python")),
                             capture_output=True, text=True)
    assert gen_src.returncode == 0, gen_src.stderr
    (a,) = (work / "venv").glob("*.wav")
    (b,) = (work / "src").glob("*.wav")
    assert a.name == b.name and a.read_bytes() == b.read_bytes()


def test_csharp_binding_is_copied_with_its_built_assembly_but_no_other_build_output(tmp_path, monkeypatch):
    """bindings/csharp as build.sh leaves it (sources, bin/ with the assembly, docs and test programs);
    outside a git checkout, so the file walk stands in for `git ls-files`."""
    rel = load_script()
    csharp = tmp_path / "bindings" / "csharp"
    for name in ["src/AceStep.Runtime/Core.cs", "build.sh", "bin/AceStep.Runtime.dll", "bin/AceStep.Runtime.xml",
                 "bin/Tests.exe", "bin/libacestep_runtime.so", "obj/cache.bin"]:
        (csharp / name).parent.mkdir(parents=True, exist_ok=True)
        (csharp / name).write_text(name)
    monkeypatch.setattr(rel, "ROOT", tmp_path)
    monkeypatch.setattr(rel, "CSHARP_DIR", csharp)
    copied = rel.copy_csharp(tmp_path / "out")
    assert sorted(copied) == ["assembly/AceStep.Runtime.dll", "assembly/AceStep.Runtime.xml", "build.sh",
                              "src/AceStep.Runtime/Core.cs"]
    assert (tmp_path / "out" / "assembly" / "AceStep.Runtime.dll").read_text() == "bin/AceStep.Runtime.dll"

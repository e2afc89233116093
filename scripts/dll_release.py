"""Builds a release of the acestep_runtime core: a folder and its reproducible .zip / .tar.gz.

    python3 scripts/dll_release.py [--target TRIPLE] [--out DIR] [--skip-python] [--skip-csharp]

writes, under --out (default: dist/),

    acestep-runtime-<version>-<platform>/
        lib/                 the shared library (+ the import library on Windows)
        include/             acestep_runtime.h
        bindings/python/     the wheel (the core compiled into the package)
        bindings/csharp/     the C# binding's sources (and any built assembly), when the checkout has one
        examples/            examples/ffi/* of the checkout (c/, csharp/, python/ as they exist)
        docs/dll_api.md, LICENSE, README.txt, release.json, SHA256SUMS
    acestep-runtime-<version>-<platform>.tar.gz
    acestep-runtime-<version>-<platform>.zip

The archives are reproducible: entries sorted, every mtime SOURCE_DATE_EPOCH (default: the commit
time of HEAD), owners 0, modes 0755 for directories and libraries and 0644 for everything else, no
gzip name or time. The same commit built on the same machine and path gives the same bytes (the
library itself embeds source paths in its panic messages, so another checkout path gives another
library).

Everything is built in a hidden directory under --out and moved into place only when complete: a
failure leaves nothing behind. scripts/dll_release.sh and scripts/dll_release.ps1 only run this file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib  # Python 3.11+
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRATE_DIR = ROOT / "runtime_rust_dll"
MANIFEST = CRATE_DIR / "Cargo.toml"
HEADER = ROOT / "include" / "acestep_runtime.h"
PYTHON_DIR = ROOT / "bindings" / "python"
CSHARP_DIR = ROOT / "bindings" / "csharp"
EXAMPLES_DIR = ROOT / "examples" / "ffi"
ZIP_EPOCH_MIN = 315532800  # 1980-01-01, the earliest time a zip entry can carry


class ReleaseError(Exception):
    """A release step failed; the message says which and why."""


def run(cmd: list[str], what: str, env: dict | None = None, cwd: Path | None = None) -> str:
    """Runs a command and returns its stdout; a failure raises ReleaseError with the tail of its output."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    except FileNotFoundError:
        raise ReleaseError(f"{what}: `{cmd[0]}` is not installed or not on PATH") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise ReleaseError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# What is being built


def cargo_manifest() -> dict:
    return tomllib.loads(MANIFEST.read_text(encoding="utf-8"))


def crate_version() -> str:
    return cargo_manifest()["package"]["version"]


def release_profile() -> dict:
    """The `[profile.release]` settings of Cargo.toml (recorded in release.json)."""
    return cargo_manifest().get("profile", {}).get("release", {})


def abi_version() -> int:
    return int(re.search(r"#define\s+ACE_ABI_VERSION\s+(\d+)", HEADER.read_text(encoding="utf-8")).group(1))


@dataclass(frozen=True)
class Target:
    triple: str
    host: bool

    @property
    def os(self) -> str:
        if "windows" in self.triple:
            return "windows"
        if "apple" in self.triple or "darwin" in self.triple:
            return "macos"
        if "linux" in self.triple:
            return "linux"
        return self.triple.split("-")[2] if self.triple.count("-") >= 2 else self.triple

    @property
    def platform(self) -> str:
        return f"{self.os}-{self.triple.split('-')[0]}"

    def library_files(self) -> dict[str, str]:
        """cargo's output name → name in lib/."""
        if self.os == "windows":
            if "-gnu" in self.triple:  # MinGW: import library libX.dll.a
                return {"acestep_runtime.dll": "acestep_runtime.dll", "libacestep_runtime.dll.a": "libacestep_runtime.dll.a"}
            return {"acestep_runtime.dll": "acestep_runtime.dll", "acestep_runtime.dll.lib": "acestep_runtime.lib"}
        if self.os == "macos":
            return {"libacestep_runtime.dylib": "libacestep_runtime.dylib"}
        return {"libacestep_runtime.so": "libacestep_runtime.so"}


def rustc_info() -> dict[str, str]:
    out = run(["rustc", "-vV"], "reading the Rust toolchain (rustc -vV)")
    info = dict(line.split(": ", 1) for line in out.splitlines()[1:] if ": " in line)
    info["version"] = out.splitlines()[0].strip()
    return info


def resolve_target(requested: str | None, host: str) -> Target:
    """Checks --target before anything is built: a real triple, with its standard library installed."""
    if requested is None or requested == host:
        return Target(host, host=True)
    known = run(["rustc", "--print", "target-list"], "listing Rust targets").split()
    if requested not in known:
        raise ReleaseError(f"--target {requested!r} is not a target triple rustc knows (see `rustc --print target-list`)")
    if shutil.which("rustup"):
        installed = run(["rustup", "target", "list", "--installed"], "listing installed Rust targets").split()
        if requested not in installed:
            raise ReleaseError(
                f"--target {requested}: its Rust standard library is not installed in this toolchain "
                f"(run `rustup target add {requested}`; a cross linker may be needed too)"
            )
    return Target(requested, host=False)


def git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH if set, else the commit time of HEAD (same commit → same archive bytes)."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        if not env.isdigit():
            raise ReleaseError(f"SOURCE_DATE_EPOCH must be a non-negative integer, got {env!r}")
        return int(env)
    committed = git("log", "-1", "--format=%ct")
    return int(committed) if committed else ZIP_EPOCH_MIN


def shipped_files(directory: Path) -> list[Path]:
    """The files of `directory` that belong to the source (git-tracked; all files outside a git
    checkout), so build outputs lying around never end up in a release."""
    listed = git("ls-files", "-z", "--", str(directory.relative_to(ROOT)))
    if listed is not None:
        return sorted(ROOT / p for p in listed.split("\0") if p and (ROOT / p).is_file())
    return sorted(p for p in directory.rglob("*") if p.is_file() and not {"bin", "obj"} & set(p.parts))


# ---------------------------------------------------------------------------------------------
# Build steps


def build_core(target: Target) -> list[tuple[Path, str]]:
    """Builds the cdylib; returns (built file, name in lib/) pairs.

    The command is the one setuptools-rust runs for the wheel (and scripts/build_core.sh runs), so
    cargo builds the library once and the wheel and lib/ carry the same file. `cargo build` would
    build the rlib too and, with different flags, make each of the two commands rebuild the crate.
    """
    cmd = ["cargo", "rustc", "--lib", "--release", "--locked", "--manifest-path", str(MANIFEST),
           "--crate-type", "cdylib"]
    out_dir = CRATE_DIR / "target" / "release"
    if not target.host:
        # Only for a real cross target: naming the host triple would move the build to
        # target/<triple>/ and rebuild everything already cached in target/release/.
        cmd += ["--target", target.triple]
        out_dir = CRATE_DIR / "target" / target.triple / "release"
    print(f"[release] {' '.join(cmd)}", flush=True)
    run(cmd, f"building the core for {target.triple}")
    files = []
    for built, shipped in target.library_files().items():
        path = out_dir / built
        if not path.is_file():
            raise ReleaseError(f"cargo reported success but {path} does not exist")
        files.append((path, shipped))
    return files


def build_wheel(target: Target, dest: Path, epoch: int) -> Path:
    """pip wheel bindings/python: setuptools-rust compiles the core into the package."""
    if not target.host:
        raise ReleaseError(
            f"the Python wheel is built for the host only, not {target.triple}; pass --skip-python"
        )
    # A stale build/ tree would carry files from an older checkout into the wheel.
    shutil.rmtree(PYTHON_DIR / "build", ignore_errors=True)
    # The environment is passed through unchanged: setting SOURCE_DATE_EPOCH here would make cargo
    # rebuild onig_sys and everything above it (its build script watches that variable), and then
    # rebuild again for the next plain `cargo rustc`. The wheel's time stamps are fixed afterwards.
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
           "-w", str(dest), str(PYTHON_DIR)]
    print(f"[release] {' '.join(cmd)}", flush=True)
    run(cmd, "building the Python wheel")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ReleaseError(f"pip wheel left {len(wheels)} wheels in {dest}, expected one")
    normalize_wheel(wheels[0], epoch)
    return wheels[0]


def normalize_wheel(wheel: Path, epoch: int) -> None:
    """Rewrites the wheel with every entry stamped `epoch` and normalised modes, keeping names, order
    and contents (so its RECORD, which hashes contents, stays valid)."""
    stamp = time.gmtime(max(epoch, ZIP_EPOCH_MIN))[:6]
    fixed = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(fixed, "w") as dst:
        for item in src.infolist():
            info = zipfile.ZipInfo(item.filename, stamp)
            info.external_attr = (0o100000 | mode_for(Path(item.filename))) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            dst.writestr(info, src.read(item), compresslevel=9)
    os.replace(fixed, wheel)


def copy_csharp(dest: Path) -> list[str]:
    """The C# binding's sources, and the assembly (with its XML docs) if bindings/csharp/build.sh or
    dotnet built one under bin/."""
    copied = []
    for path in shipped_files(CSHARP_DIR):
        rel = path.relative_to(CSHARP_DIR)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / rel)
        copied.append(str(rel))
    for assembly in sorted(p for p in CSHARP_DIR.glob("**/bin/**/AceStep.Runtime.*") if p.suffix in {".dll", ".xml"}):
        target = dest / "assembly" / assembly.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(assembly, target)
        copied.append(f"assembly/{assembly.name}")
    return copied


README = """acestep-runtime {version} for {platform} ({triple}), C ABI v{abi}

ACE-Step 1.5 music generation outside PyTorch: this is the ORT-free core library (`ace_*` C API).
  C/C++:  #include "acestep_runtime.h" (include/) and link lib/{library}; start from examples/c/noise_demo.c.
  Python: pip install bindings/python/{wheel}   (then: acestep-runtime --help)
  C#:     {csharp}
The API reference is docs/dll_api.md; release.json says how this was built; verify with `sha256sum -c SHA256SUMS`.
"""


def write_folder(folder: Path, target: Target, libs, wheel: Path | None, with_csharp: bool, epoch: int) -> dict:
    version = crate_version()
    (folder / "lib").mkdir(parents=True)
    for built, shipped in libs:
        shutil.copyfile(built, folder / "lib" / shipped)
    (folder / "include").mkdir()
    shutil.copyfile(HEADER, folder / "include" / HEADER.name)
    (folder / "docs").mkdir()
    shutil.copyfile(ROOT / "docs" / "dll_api.md", folder / "docs" / "dll_api.md")
    shutil.copyfile(ROOT / "LICENSE", folder / "LICENSE")

    for path in shipped_files(EXAMPLES_DIR) if EXAMPLES_DIR.is_dir() else []:
        rel = path.relative_to(EXAMPLES_DIR)
        (folder / "examples" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / "examples" / rel)

    wheel_name = None
    if wheel is not None:
        (folder / "bindings" / "python").mkdir(parents=True)
        shutil.copyfile(wheel, folder / "bindings" / "python" / wheel.name)
        wheel_name = wheel.name
    csharp_files = copy_csharp(folder / "bindings" / "csharp") if with_csharp else []

    rust = rustc_info()
    commit = git("rev-parse", "HEAD")
    info = {
        "name": "acestep-runtime",
        "version": version,
        "abi_version": abi_version(),
        "git_commit": commit,
        # Uncommitted changes to tracked files: the release is then not exactly `git_commit`.
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
        "source_date_epoch": epoch,
        "target": target.triple,
        "platform": target.platform,
        "rustc": rust["version"],
        "rustc_host": rust.get("host"),
        "build": {
            "command": "cargo rustc --lib --release --locked --crate-type cdylib"
            + ("" if target.host else f" --target {target.triple}"),
            "profile_release": release_profile(),
            "rustflags": os.environ.get("RUSTFLAGS", ""),
        },
        "library": [f"lib/{shipped}" for _, shipped in libs],
        "python_wheel": f"bindings/python/{wheel_name}" if wheel_name else None,
        "csharp": bool(csharp_files),
    }
    (folder / "release.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (folder / "README.txt").write_text(
        README.format(
            version=version, platform=target.platform, triple=target.triple, abi=info["abi_version"],
            library=libs[0][1], wheel=wheel_name or "(not built: --skip-python)",
            csharp="bindings/csharp/ (see its README)" if csharp_files else "not included in this release",
        ),
        encoding="utf-8",
    )
    normalize_modes(folder)
    sums = [f"{sha256(p)}  {p.relative_to(folder).as_posix()}\n" for p in walk(folder) if p.is_file()]
    (folder / "SHA256SUMS").write_text("".join(sums), encoding="utf-8")
    normalize_modes(folder)
    return info


# ---------------------------------------------------------------------------------------------
# Reproducible archives


def walk(folder: Path) -> list[Path]:
    """Every directory and file under `folder`, sorted by their POSIX relative path."""
    return sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())


def mode_for(path: Path) -> int:
    if path.is_dir() or path.suffix in {".so", ".dylib", ".dll", ".pyd"}:
        return 0o755
    return 0o644


def normalize_modes(folder: Path) -> None:
    folder.chmod(0o755)
    for path in walk(folder):
        path.chmod(mode_for(path))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_tar_gz(folder: Path, dest: Path, epoch: int) -> None:
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=epoch, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in [folder, *walk(folder)]:
                info = tarfile.TarInfo(path.relative_to(folder.parent).as_posix())
                info.mtime, info.mode = epoch, mode_for(path)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if path.is_dir():
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = path.stat().st_size
                    with open(path, "rb") as f:
                        tar.addfile(info, f)


def write_zip(folder: Path, dest: Path, epoch: int) -> None:
    stamp = time.gmtime(max(epoch, ZIP_EPOCH_MIN))[:6]
    with zipfile.ZipFile(dest, "w") as zf:
        for path in [folder, *walk(folder)]:
            name = path.relative_to(folder.parent).as_posix()
            if path.is_dir():
                info = zipfile.ZipInfo(name + "/", stamp)
                info.external_attr = ((0o040000 | 0o755) << 16) | 0x10  # directory flag for DOS readers
                data = b""
            else:
                info = zipfile.ZipInfo(name, stamp)
                info.external_attr = (0o100000 | mode_for(path)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                data = path.read_bytes()
            info.create_system = 3  # Unix, whatever the host, so the modes above are honoured
            zf.writestr(info, data, compresslevel=9)


# ---------------------------------------------------------------------------------------------


def prepare_out(out: Path) -> tuple[Path, bool]:
    """Creates --out if needed and a staging directory inside it; returns (staging, created_out)."""
    if out.exists() and not out.is_dir():
        raise ReleaseError(f"--out {out} exists and is not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".acestep-release-", dir=out))
    except OSError as e:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise ReleaseError(f"--out {out} is not writable: {e.strerror or e}") from None
    return staging, created


def release(args: argparse.Namespace) -> dict:
    rust = rustc_info()
    target = resolve_target(args.target, rust["host"])
    if not (ROOT / "LICENSE").is_file():
        raise ReleaseError(f"{ROOT / 'LICENSE'} is missing")
    with_csharp = not args.skip_csharp and CSHARP_DIR.is_dir()
    if not args.skip_csharp and not CSHARP_DIR.is_dir():
        print("[release] no bindings/csharp in this checkout: releasing without the C# binding", flush=True)

    out = Path(args.out).resolve()
    staging, created_out = prepare_out(out)
    name = f"acestep-runtime-{crate_version()}-{target.platform}"
    try:
        epoch = source_date_epoch()
        libs = build_core(target)
        wheel = None if args.skip_python else build_wheel(target, staging / "wheel", epoch)
        folder = staging / name
        info = write_folder(folder, target, libs, wheel, with_csharp, epoch)
        write_tar_gz(folder, staging / f"{name}.tar.gz", epoch)
        write_zip(folder, staging / f"{name}.zip", epoch)
        # Replace an earlier release of the same name only now that this one is complete.
        for item in (name, f"{name}.tar.gz", f"{name}.zip"):
            old = out / item
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
            os.replace(staging / item, old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_out and not any(out.iterdir()):
            out.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)

    print(f"[release] {out / name}/")
    for archive in (f"{name}.tar.gz", f"{name}.zip"):
        path = out / archive
        print(f"[release] {path}  {path.stat().st_size} bytes  sha256 {sha256(path)}")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", help="Rust target triple (default: the host); cross targets need their toolchain")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output directory (default: dist/)")
    parser.add_argument("--skip-python", action="store_true", help="do not build the Python wheel")
    parser.add_argument("--skip-csharp", action="store_true", help="leave the C# binding out")
    args = parser.parse_args(argv)
    try:
        release(args)
    except ReleaseError as e:
        print(f"dll_release: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

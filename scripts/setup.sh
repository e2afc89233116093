#!/usr/bin/env bash
# Installs what a new machine lacks and builds the core. Safe to run again: each step skips work
# that is already done.
#   scripts/setup.sh          runtime only (what `acestep-runtime generate` needs; no torch)
#   scripts/setup.sh --dev    plus torch, transformers, diffusers, onnx: the exporter and the tests
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dev=0
[ "${1:-}" = "--dev" ] && dev=1

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
[ -e /usr/include/sndfile.h ] || [ -e /usr/lib/x86_64-linux-gnu/libsndfile.so.1 ] || need_apt+=(libsndfile1)
# The C test host and part of the bad-input matrix run under valgrind (scripts/test.sh).
if [ $dev = 1 ] && ! command -v valgrind >/dev/null; then need_apt+=(valgrind); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ $dev = 1 ] && ! command -v mcs >/dev/null; then
  # mono's C# compiler and runtime: the C# host's build and tests (bindings/csharp/test.sh)
  echo "[setup] apt-get install mono-devel"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mono-devel >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "[setup] installing Rust (rustup)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# The core's release build is the longest step of a first run (minutes on 2 cores) and needs nothing
# from pip: it runs in the background while pip installs. Its output goes to a log, shown on failure.
echo "[setup] building the core library (in the background; log: runtime_rust_dll/target/build_core.log)"
mkdir -p "$root/runtime_rust_dll/target"
build_log="$root/runtime_rust_dll/target/build_core.log"
# Its own process group (setsid), so that a failed pip step or Ctrl-C stops cargo too.
setsid "$root/scripts/build_core.sh" >"$build_log" 2>&1 &
build_pid=$!
trap 'kill -- -$build_pid 2>/dev/null || true' EXIT

py="${PYTHON:-python3}"
req="$root/requirements/runtime.txt"
[ $dev = 1 ] && req="$root/requirements/dev.txt"
echo "[setup] pip install -r ${req#$root/}"
"$py" -m pip install -q --disable-pip-version-check -r "$req"
if [ $dev = 1 ]; then
  # The official constrained-decoding processor, for the differential test only. Its other declared
  # dependencies are not needed (and not wanted): install it alone.
  "$py" -m pip install -q --disable-pip-version-check --no-deps "ace-step15-fork==20260212"
fi

if ! wait $build_pid; then
  echo "[setup] building the core library failed:" >&2
  tail -n 40 "$build_log" >&2
  exit 1
fi
trap - EXIT
echo "[setup] core library built"
"$py" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$root/bindings/python"
if [ $dev = 1 ]; then
  # The tiny random-weight model package that `acestep-runtime generate` uses without --model
  # (rebuilt only when the exporter sources change).
  echo "[setup] tiny model package"
  "$root/scripts/make_tiny_package.sh"
fi
echo "[setup] done"

#!/usr/bin/env bash
# Sets up (dev profile) and runs every test: Rust unit and integration tests, pytest, then the C# host.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh" --dev
echo "[test] cargo test"
cargo test --manifest-path "$root/runtime_rust_dll/Cargo.toml" 2>&1 | grep -vE '^\s*(Compiling|Downloaded|Downloading)'
echo "[test] C host (tests/c/run.sh)"
"$root/runtime_rust_dll/tests/c/run.sh"
echo "[test] pytest"
cd "$root"
python3 -m pytest -q
echo "[test] C# host"
bash "$root/bindings/csharp/test.sh"

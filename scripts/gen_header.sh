#!/usr/bin/env bash
# Regenerates include/acestep_runtime.h from the Rust sources (cbindgen, via the header test).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ACE_UPDATE_HEADER=1 cargo test --quiet --manifest-path "$root/runtime_rust_dll/Cargo.toml" --test header
echo "wrote $root/include/acestep_runtime.h"

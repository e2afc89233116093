#!/usr/bin/env bash
# Builds the core library (release) and copies it, with its header, into the Python package's
# _native/ directory, where the binding looks first.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --manifest-path "$root/runtime_rust_dll/Cargo.toml"
native="$root/bindings/python/acestep_runtime/_native"
mkdir -p "$native"
cp "$root/runtime_rust_dll/target/release/libacestep_runtime.so" "$native/"
cp "$root/include/acestep_runtime.h" "$native/"

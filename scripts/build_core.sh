#!/usr/bin/env bash
# Builds the core library (release) and copies it, with its header, into the Python package's
# _native/ directory, where the binding looks. A library an editable install compiled there earlier
# (acestep_runtime.abi3.so, which the binding would prefer) is removed so this build is the one loaded.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# The same cargo command setuptools-rust runs for `pip install` (bindings/python/setup.py) and
# scripts/dll_release.py: with one command cargo keeps one build of the library instead of rebuilding
# the crate each time the other command runs.
cargo rustc --lib --release --manifest-path "$root/runtime_rust_dll/Cargo.toml" --crate-type cdylib
native="$root/bindings/python/acestep_runtime/_native"
mkdir -p "$native"
rm -f "$native/acestep_runtime.abi3.so"
cp "$root/runtime_rust_dll/target/release/libacestep_runtime.so" "$native/"
cp "$root/include/acestep_runtime.h" "$native/"

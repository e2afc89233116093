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
# Replaced by rename, never rewritten in place: a running process (a test) may have the old one mapped.
for f in "$root/runtime_rust_dll/target/release/libacestep_runtime.so" "$root/include/acestep_runtime.h"; do
  dst="$native/$(basename "$f")"
  cmp -s "$f" "$dst" || { cp "$f" "$dst.tmp.$$" && mv -f "$dst.tmp.$$" "$dst"; }
done

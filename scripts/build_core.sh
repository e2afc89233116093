#!/usr/bin/env bash
# Builds the core library (release) and copies it, with its header, into the Python package's
# _native/ directory, where the binding looks first.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --manifest-path "$root/runtime_rust_dll/Cargo.toml"
native="$root/bindings/python/acestep_runtime/_native"
mkdir -p "$native"
# Replaced by rename, never rewritten in place: a running process (a test) may have the old one mapped.
for f in "$root/runtime_rust_dll/target/release/libacestep_runtime.so" "$root/include/acestep_runtime.h"; do
  dst="$native/$(basename "$f")"
  cmp -s "$f" "$dst" || { cp "$f" "$dst.tmp.$$" && mv -f "$dst.tmp.$$" "$dst"; }
done

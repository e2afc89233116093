#!/usr/bin/env bash
# Builds the C test host (tests/c/drive_generation.c) against include/acestep_runtime.h with strict
# warnings, links the release core library, and runs it on the tiny model package: once natively
# and, when valgrind is installed, once more under valgrind (errors and leaks fail the run).
#   ACE_PACKAGE=dir   package to drive (default fixtures/generated/tiny-package)
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
pkg="${ACE_PACKAGE:-$root/fixtures/generated/tiny-package}"
lib="$root/runtime_rust_dll/target/release"
[ -f "$pkg/manifest.json" ] || { echo "[c-test] no model package at $pkg (run scripts/setup.sh --dev)" >&2; exit 1; }
# A no-op when the release library is up to date; never test a stale one.
cargo rustc --lib --release --quiet --manifest-path "$root/runtime_rust_dll/Cargo.toml" --crate-type cdylib

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cc -std=c11 -Wall -Wextra -Werror -pedantic -O1 -g -I"$root/include" \
  "$root/runtime_rust_dll/tests/c/drive_generation.c" -o "$work/drive_generation" \
  -L"$lib" -Wl,-rpath,"$lib" -lacestep_runtime -lm
# The host loop printed in docs/dll_api.md ("Driving a generation") must compile as well.
awk '/^## Driving a generation/ { f = 1 } f && /^```c$/ { c = 1; next } c && /^```$/ { exit } c { print }' \
  "$root/docs/dll_api.md" > "$work/doc_loop.c"
[ -s "$work/doc_loop.c" ] || { echo "[c-test] no C block under 'Driving a generation' in docs/dll_api.md" >&2; exit 1; }
cc -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -I"$root/include" "$work/doc_loop.c"
mkdir "$work/pkgs"
python3 "$root/runtime_rust_dll/tests/c/make_test_packages.py" "$pkg" "$work/pkgs"

echo "[c-test] drive_generation"
"$work/drive_generation" "$pkg" "$work/pkgs"
if command -v valgrind >/dev/null; then
  # The 10 s request (one VAE tile) keeps valgrind at about a minute on 2 cores.
  echo "[c-test] drive_generation under valgrind"
  start=$(date +%s)
  valgrind --quiet --error-exitcode=1 --leak-check=full --show-possibly-lost=no --errors-for-leak-kinds=definite,indirect \
    "$work/drive_generation" "$pkg" "$work/pkgs" --short
  echo "[c-test] valgrind run took $(( $(date +%s) - start )) s"
else
  echo "[c-test] valgrind not installed: skipped the memory check"
fi

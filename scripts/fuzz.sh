#!/usr/bin/env bash
# Long fuzzing runs of every text/JSON entry point of the C ABI (targets: runtime_rust_dll/tests/
# common/fuzz_targets.rs; seed corpus: runtime_rust_dll/fuzz/corpus/<target>/).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]     (default 300 s, every target)
#
# Coverage-guided with libFuzzer, built on stable Rust with SanitizerCoverage (the flags cargo-fuzz
# uses, minus the nightly-only AddressSanitizer). New inputs go to fuzz/target/corpus-work/<target>/,
# crashes to fuzz/artifacts/; the repo's corpus is only read. If libFuzzer cannot be built, the
# mutation fuzzer of `cargo test --test fuzz` runs instead, optimised, for the same time.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
crate="$root/runtime_rust_dll"
secs="${1:-300}"
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls "$crate/fuzz/corpus")
fi

host="$(rustc -vV | sed -n 's/^host: //p')"
flags="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
if RUSTFLAGS="$flags" cargo build --release --target "$host" --manifest-path "$crate/fuzz/Cargo.toml" --bin ace; then
  bin="$crate/fuzz/target/$host/release/ace"
  mkdir -p "$crate/fuzz/artifacts"
  for t in "${targets[@]}"; do
    work="$crate/fuzz/target/corpus-work/$t"
    mkdir -p "$work"
    echo "[fuzz] $t: libFuzzer for ${secs}s"
    ACE_FUZZ_TARGET="$t" "$bin" -max_total_time="$secs" -print_final_stats=1 -max_len=65536 \
      -artifact_prefix="$crate/fuzz/artifacts/$t-" "$work" "$crate/fuzz/corpus/$t"
  done
else
  echo "[fuzz] libFuzzer did not build; running the mutation fuzzer for ${secs}s per target"
  ACE_FUZZ_SECONDS="$secs" ACE_FUZZ_TARGETS="$(IFS=,; echo "${targets[*]}")" ACE_FUZZ_SEED="${ACE_FUZZ_SEED:-$RANDOM$RANDOM}" \
    cargo test --release --manifest-path "$crate/Cargo.toml" --test fuzz -- --nocapture
fi

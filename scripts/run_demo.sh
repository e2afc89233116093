#!/usr/bin/env bash
# The main job on a new machine: set up, build the tiny random-weight model package (once; cached
# under fixtures/generated/), then generate a track with the torch-free host.
#   bash scripts/run_demo.sh [extra acestep-runtime generate flags]
# The tiny model has random weights, so the track is noise-like; with real checkpoints exported by
# `python -m tools.onnx_export --checkpoints DIR --out PKG`, pass `--model PKG`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# --dev: the exporter that builds the tiny package needs torch; generating does not.
"$root/scripts/setup.sh" --dev
cd "$root"
python3 -m acestep_runtime generate \
  --request fixtures/cases/text2music_01.json --duration 12 --format flac --out out/ "$@"

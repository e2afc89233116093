#!/usr/bin/env bash
# The main job on a new machine: runtime setup (no torch), the random-weight demo model package
# (rebuilt with numpy from the committed skeleton in fixtures/demo_skeleton when missing or stale;
# cached under fixtures/generated/demo-package), then a track from the torch-free host.
#   bash scripts/run_demo.sh [extra acestep-runtime generate flags]
# The demo model has random weights, so the track is noise-like; with real checkpoints exported by
# `python -m tools.onnx_export --checkpoints DIR --out PKG`, pass `--model PKG`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
"$root/scripts/setup.sh"
cd "$root"
"$py" -m tools.demo_package
# The request fixes the seed (43): a rerun writes the same bytes again, hence --overwrite.
"$py" -m acestep_runtime generate --model fixtures/generated/demo-package \
  --request fixtures/cases/text2music_01.json --duration 12 --format flac --out out/ --overwrite "$@"

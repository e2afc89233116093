#!/usr/bin/env bash
# Builds (or reuses, when the exporter sources are unchanged) the tiny random-weight checkpoints and the
# tiny model package under fixtures/generated/. Pass --force to rebuild. See tools/parity/fixtures.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
exec "${PYTHON:-python3}" -m tools.parity.fixtures "$@"

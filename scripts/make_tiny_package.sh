#!/usr/bin/env bash
# Builds (or reuses, when the exporter sources are unchanged) the tiny random-weight checkpoints and the
# tiny model packages (turbo and base) under fixtures/generated/. Pass --force to rebuild, --variant
# turbo|base to build one. See tools/parity/fixtures.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
exec "${PYTHON:-python3}" -m tools.parity.fixtures "$@"

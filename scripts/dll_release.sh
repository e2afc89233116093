#!/usr/bin/env bash
# Builds the release folder and archives under dist/ (see scripts/dll_release.py --help).
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/dll_release.py" "$@"

#!/usr/bin/env bash
# Builds the release folder and archives under dist/ (see scripts/dll_release.py --help).
set -euo pipefail
here="${BASH_SOURCE[0]%/*}"
[ "$here" = "${BASH_SOURCE[0]}" ] && here=.
exec "${PYTHON:-python3}" "$here/dll_release.py" "$@"

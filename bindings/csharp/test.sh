#!/usr/bin/env bash
# Builds and tests the C# host (called by scripts/test.sh after setup.sh --dev):
#   1. the C# test runner (mono Tests.exe): table vs header, errors, handles, ORT binding;
#   2. pytest bindings/csharp/tests: C# vs torch/the Python host (noise, library loading, the
#      per-step example and the driver host — in this process through pythonnet (mono) and as a
#      mono process — + AceStepGenerate.exe against Pipeline.generate on the tiny packages, byte for
#      byte; WAV encoders; ABI struct layouts against cc).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${PYTHON:-python3}"
if ! command -v mcs >/dev/null || ! command -v mono >/dev/null; then
  echo "[csharp] mcs/mono missing: run scripts/setup.sh --dev (installs mono-devel)" >&2
  exit 1
fi
bash "$here/build.sh"
ort_capi="$("$py" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')"
ort_lib="$(ls "$ort_capi"/libonnxruntime.so* 2>/dev/null | head -n 1)"
if [ -z "$ort_lib" ]; then
  echo "[csharp] no libonnxruntime.so in $ort_capi" >&2
  exit 1
fi
export ACESTEP_ORT_LIB="$ort_lib"
export ACESTEP_HEADER="$root/include/acestep_runtime.h"
export ACESTEP_TEST_PACKAGE="${ACESTEP_TEST_PACKAGE:-$root/fixtures/generated/tiny-package}"
echo "[csharp] mono $here/bin/Tests.exe (ONNX Runtime: $ort_lib)"
mono "$here/bin/Tests.exe"
echo "[csharp] pytest bindings/csharp/tests"
cd "$root"
"$py" -m pytest -q --durations=8 "$here/tests"

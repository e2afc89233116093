#!/usr/bin/env bash
# Builds the C# binding, the examples (Generate.exe: per-step loop; AceStepGenerate.exe: the driver
# CLI) and the test runner with mono's mcs (C# 7) into
# bindings/csharp/bin/, and copies the core library next to them (where DllImport looks first).
# Needs the core built (scripts/build_core.sh) and mcs (scripts/setup.sh --dev installs mono-devel).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/bin"
mkdir -p "$out"
mcs_flags=(-langversion:7 -unsafe -nologo -warnaserror+ -debug-)
mcs "${mcs_flags[@]}" -target:library -doc:"$out/AceStep.Runtime.xml" -nowarn:1591 \
    -r:System.Numerics.dll -out:"$out/AceStep.Runtime.dll" -recurse:"$here/src/AceStep.Runtime/*.cs"
mcs "${mcs_flags[@]}" -out:"$out/Generate.exe" -r:"$out/AceStep.Runtime.dll" "$root"/examples/ffi/csharp/*.cs
mcs "${mcs_flags[@]}" -out:"$out/AceStepGenerate.exe" -r:"$out/AceStep.Runtime.dll" "$root"/examples/ffi/csharp/AceStepGenerate/*.cs
mcs "${mcs_flags[@]}" -out:"$out/Tests.exe" -r:"$out/AceStep.Runtime.dll" -r:System.Core.dll "$here/tests/Tests.cs"
lib="$root/bindings/python/acestep_runtime/_native/libacestep_runtime.so"
[ -e "$lib" ] || lib="$root/runtime_rust_dll/target/release/libacestep_runtime.so"
if [ ! -e "$lib" ]; then
  echo "[csharp] core library not built: run scripts/build_core.sh first" >&2
  exit 1
fi
cp "$lib" "$out/"
echo "[csharp] built $out (mcs $(mcs --version | awk '{print $NF}'))"

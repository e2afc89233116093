# Windows entry point for scripts/dll_release.py (the one implementation; see its --help).
# Deliberately only finds Python and forwards the arguments: PowerShell is not available where this
# project is tested, so this file is kept too small to need a test.
$script = Join-Path $PSScriptRoot 'dll_release.py'
if (Get-Command py -ErrorAction SilentlyContinue) { & py -3 $script @args } else { & python $script @args }
exit $LASTEXITCODE

"""Post-export graph optimisation: precision profiles (int8, fp16) of an exported fp32 model package.

See docs/precision_profiles.md. Kept apart from `tools/onnx_export` so that the exporter stays a plain
torch → ONNX step and a profile can be applied to an existing fp32 package without re-exporting.
"""

"""Exporter: official ACE-Step 1.5 checkpoints → ONNX model package (see docs/onnx_export.md).

Entry points: `python -m tools.onnx_export` (export) and `python -m tools.onnx_export.make_tiny`
(tiny random-weight checkpoints in the official layout, for tests).
"""

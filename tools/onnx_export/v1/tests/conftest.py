"""Session fixtures: the cached tiny v1 checkpoints and package (fixtures/generated, built on first use)
and the spec-faithful torch modules loaded from those checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def v1_package() -> Path:
    from tools.onnx_export.v1.fixtures import tiny_v1_package_dir

    return tiny_v1_package_dir()


@pytest.fixture(scope="session")
def v1_checkpoints(v1_package) -> Path:
    from tools.onnx_export.v1.fixtures import CHECKPOINTS_NAME

    return v1_package.parent / CHECKPOINTS_NAME


@pytest.fixture(scope="session")
def v1_models(v1_checkpoints):
    """Export wrappers (torch) around freshly loaded modules: name -> module, plus the raw models."""
    from tools.onnx_export.v1.config import DCAE_DIR, TEXT_ENCODER_DIR, TRANSFORMER_DIR, VOCODER_DIR
    from tools.onnx_export.v1.dcae import load_dcae
    from tools.onnx_export.v1.export import graph_modules
    from tools.onnx_export.v1.text_encoder import load_umt5
    from tools.onnx_export.v1.transformer import load_transformer
    from tools.onnx_export.v1.vocoder import load_vocoder

    models = {"text_encoder": load_umt5(v1_checkpoints / TEXT_ENCODER_DIR),
              "transformer": load_transformer(v1_checkpoints / TRANSFORMER_DIR),
              "dcae": load_dcae(v1_checkpoints / DCAE_DIR), "vocoder": load_vocoder(v1_checkpoints / VOCODER_DIR)}
    return models, graph_modules(models)

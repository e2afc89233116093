"""The v1 model package: export every graph into a directory described by `manifest.json`
(docs/io_contract_v1.md). Same manifest format and crash safety as the 1.5 writer (tools/onnx_export/package.py):
files go to a staging directory, the manifest is written last, the directory is renamed into place."""
from __future__ import annotations

import gc
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from ..common import (DEFAULT_EXTERNAL_DATA_MIN_BYTES, DEFAULT_OPSET, CheckpointError, read_json, require_dir,
                      require_file)
from ..package import (FORMAT_VERSION, MANIFEST_FILE, PRECISION, RANDOM_WEIGHTS_MARKER, PackageError, _git_commit,
                       check_output_dir, describe_components, describe_extra_files, describe_tokenizer_dir,
                       library_versions, staged_package_dir, write_json_atomic)
from .config import (DCAE_DIR, LYRIC_TOKENIZER_DIR, LYRIC_TOKENIZER_FILE, TEXT_ENCODER_DIR, TRANSFORMER_DIR,
                     VOCODER_DIR, V1Config)

MODEL_FAMILY = "ace-step-v1"          # the 1.5 writer says "ace-step-v1.5"
MODEL_VARIANT = "ace-step-v1-3.5b"
TEXT_TOKENIZER_DIR = "tokenizer/text"
LYRIC_TOKENIZER_PKG_DIR = "tokenizer/lyric"
LYRIC_TOKENIZER_PKG_FILE = "tokenizer.json"
COMPONENT_DIRS = {"text_encoder": TEXT_ENCODER_DIR, "transformer": TRANSFORMER_DIR, "dcae": DCAE_DIR,
                  "vocoder": VOCODER_DIR}
REQUIRED_FILES = {
    TEXT_ENCODER_DIR: ("config.json", "model.safetensors", "tokenizer.json"),
    TRANSFORMER_DIR: ("config.json", "diffusion_pytorch_model.safetensors"),
    DCAE_DIR: ("config.json", "diffusion_pytorch_model.safetensors"),
    VOCODER_DIR: ("config.json", "diffusion_pytorch_model.safetensors"),
}


@dataclass
class V1ExportOptions:
    checkpoints: Path
    out: Path
    lyric_tokenizer: Path | None = None   # default: <checkpoints>/lyric_tokenizer/vocab.json
    opset: int = DEFAULT_OPSET
    force: bool = False
    external_data_min_bytes: int = DEFAULT_EXTERNAL_DATA_MIN_BYTES
    log: Callable[[str], None] = field(default=print)


def is_v1_checkpoints(path: Path) -> bool:
    """True when `path` holds the v1 transformer folder (used by the main CLI to pick this exporter)."""
    return (Path(path) / TRANSFORMER_DIR).is_dir()


def lyric_tokenizer_config(tokenizer_file: Path, vocab_size: int) -> dict:
    """Ids the host's lyric tokenization needs (spec §4), read from the tokenizer file itself."""
    from tokenizers import Tokenizer

    from .tokenizers_tiny import LYRIC_SPECIALS, LYRIC_STRUCTURE

    try:
        tok = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise CheckpointError(f"lyric tokenizer {tokenizer_file} cannot be read: {exc}") from exc
    ids = {}
    for token in [LYRIC_SPECIALS[i] for i in sorted(LYRIC_SPECIALS)] + LYRIC_STRUCTURE:
        got = tok.token_to_id(token)
        if got is None:
            raise CheckpointError(f"lyric tokenizer {tokenizer_file} has no token {token}")
        ids[token] = got
    n = tok.get_vocab_size(with_added_tokens=True)
    if n > vocab_size:
        raise CheckpointError(f"lyric tokenizer {tokenizer_file} has {n} ids but the transformer embeds {vocab_size}")
    languages = {t[1:-1]: i for t, i in ids.items() if t not in ("[STOP]", "[UNK]", "[SPACE]", "[START]")
                 and t not in LYRIC_STRUCTURE}
    return {"vocab_size": n, "stop_id": ids["[STOP]"], "unk_id": ids["[UNK]"], "space_id": ids["[SPACE]"],
            "start_id": ids["[START]"], "language_ids": languages,
            "structure_ids": {t: ids[t] for t in LYRIC_STRUCTURE}}


def _check_vocoder(vocoder) -> None:
    if vocoder.config["n_mels"] != 128:
        raise PackageError(f"vocoder n_mels = {vocoder.config['n_mels']}, the DCAE decodes 128 mel bins")


def export_v1_package(opts: V1ExportOptions) -> Path:
    from .dcae import load_dcae
    from .export import export_v1_graphs, v1_host_config
    from .text_encoder import copy_tokenizer_files, load_umt5, tokenizer_appends_eos
    from .transformer import load_transformer
    from .vocoder import load_vocoder

    ckpt = require_dir(Path(opts.checkpoints), "checkpoints directory")
    out = Path(opts.out).absolute()
    check_output_dir(out, opts.force)
    if opts.opset != DEFAULT_OPSET:
        raise PackageError(f"--opset {opts.opset}: the exporters are pinned to opset {DEFAULT_OPSET}")
    missing = [str(ckpt / d) for d in REQUIRED_FILES if not (ckpt / d).is_dir()]
    if missing:
        raise CheckpointError("missing v1 checkpoint component directories: " + ", ".join(missing))
    missing = [str(ckpt / d / f) for d, files in REQUIRED_FILES.items() for f in files if not (ckpt / d / f).is_file()]
    if missing:
        raise CheckpointError("missing v1 checkpoint files: " + ", ".join(missing))
    lyric_tok = Path(opts.lyric_tokenizer) if opts.lyric_tokenizer else ckpt / LYRIC_TOKENIZER_DIR / LYRIC_TOKENIZER_FILE
    require_file(lyric_tok, "lyric tokenizer (the official acestep/models/lyrics_utils/vocab.json; "
                            "pass --lyric-tokenizer)")

    # configs first: a mismatch is reported before minutes of export
    tr_cfg = V1Config.from_dir(ckpt / TRANSFORMER_DIR)
    te_dim = read_json(ckpt / TEXT_ENCODER_DIR / "config.json", "UMT5 config").get("d_model")
    if tr_cfg.text_embedding_dim != te_dim:
        raise PackageError(f"checkpoints do not fit together: transformer text_embedding_dim = "
                           f"{tr_cfg.text_embedding_dim} but umt5 d_model = {te_dim}")
    lyric_cfg = lyric_tokenizer_config(lyric_tok, tr_cfg.lyric_encoder_vocab_size)

    with staged_package_dir(out) as staging:
        # One component at a time: load, export its graphs, free it. The full-size transformer alone is
        # 10.4 GB in fp32 (inference keys only); holding every component at once would add ~2 GB more.
        loaders = (("text_encoder", lambda: load_umt5(ckpt / TEXT_ENCODER_DIR)),
                   ("vocoder", lambda: load_vocoder(ckpt / VOCODER_DIR)),
                   ("dcae", lambda: load_dcae(ckpt / DCAE_DIR)),
                   ("transformer", lambda: load_transformer(ckpt / TRANSFORMER_DIR, inference_only=True)))
        configs: dict = {}
        files: dict = {}
        for name, load in loaders:
            opts.log(f"loading {name} from {ckpt / COMPONENT_DIRS[name]}")
            model = load()
            configs[name] = SimpleNamespace(config=model.config) if hasattr(model, "config") else model
            if name == "vocoder":
                _check_vocoder(model)
            files.update(export_v1_graphs({name: model}, staging, opset=opts.opset,
                                          external_data_min_bytes=opts.external_data_min_bytes, log=opts.log))
            del model
            gc.collect()
        host = v1_host_config(configs, lyric_cfg)

        copy_tokenizer_files(ckpt / TEXT_ENCODER_DIR, staging / TEXT_TOKENIZER_DIR)
        host["text_encoder"]["tokenizer_appends_eos"] = tokenizer_appends_eos(
            staging / TEXT_TOKENIZER_DIR, host["text_encoder"]["eos_token_id"])
        (staging / LYRIC_TOKENIZER_PKG_DIR).mkdir(parents=True)
        shutil.copyfile(lyric_tok, staging / LYRIC_TOKENIZER_PKG_DIR / LYRIC_TOKENIZER_PKG_FILE)
        tokenizers = {key: describe_tokenizer_dir(staging, rel)
                      for key, rel in (("text", TEXT_TOKENIZER_DIR), ("lyric", LYRIC_TOKENIZER_PKG_DIR))}

        opts.log("writing manifest")
        components, taken = describe_components(staging, files)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_family": MODEL_FAMILY,
            "model_variant": MODEL_VARIANT,
            "checkpoints": dict(COMPONENT_DIRS),
            "precision": PRECISION,
            "random_weights": (ckpt / RANDOM_WEIGHTS_MARKER).is_file(),
            "opset": opts.opset,
            "exporter": {"name": "tools.onnx_export.v1", "onnx_exporter": "torch.onnx.export(dynamo=True)",
                         "git_commit": _git_commit(), "versions": library_versions()},
            "components": components,
            "files": describe_extra_files(staging, taken, {}),
            "tokenizers": tokenizers,
            "config": json.loads(json.dumps(host)),
        }
        write_json_atomic(staging / MANIFEST_FILE, manifest)  # last file written
    return out

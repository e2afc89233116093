"""ACE-Step v1.5 DiT-side modules (condition encoder, DiT, FSQ tokenizer/detokenizer), the strict loader
for official `acestep-v15-*` checkpoints, a tiny checkpoint writer and ONNX export of these graphs."""
from .config import AceStepConfig
from .model import AceStepModel, load_acestep_checkpoint
from .tiny import write_tiny_acestep

__all__ = ["AceStepConfig", "AceStepModel", "load_acestep_checkpoint", "write_tiny_acestep",
           "export_acestep_graphs", "acestep_host_config"]


def __getattr__(name):  # export pulls in onnx; import lazily
    if name in ("export_acestep_graphs", "acestep_host_config"):
        from . import export
        return getattr(export, name)
    raise AttributeError(name)

"""Builds the wheel with the core library inside it.

setuptools-rust runs ``cargo rustc --release`` on ``runtime_rust_dll`` and puts the cdylib at
``acestep_runtime/_native/acestep_runtime.abi3.so`` (``.pyd`` on Windows); ``build_py`` adds the C
header beside it, because the binding builds its cffi declarations from the header at import time.

Why not maturin's cffi mode: it regenerates the header with cbindgen and feeds it to ``cffi.cdef``
unprocessed, and cdef cannot parse what our header legitimately holds (float and array ``#define``
constants, the C23 enum-base ``#if`` guards). ``_native._cdef_from_header`` handles those.

The library links no Python, so the wheel is tagged for the stable ABI (``cp310-abi3``): one wheel per
platform, not per Python version.
"""

import re
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools_rust import Binding, RustExtension

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MANIFEST = REPO / "runtime_rust_dll" / "Cargo.toml"
HEADER = REPO / "include" / "acestep_runtime.h"


def crate_version() -> str:
    text = MANIFEST.read_text(encoding="utf-8")
    package = text.split("[package]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^version\s*=\s*"([^"]+)"', package, re.M).group(1)


class build_py_with_header(build_py):
    """Copies the generated C header into ``acestep_runtime/_native/`` (the build tree, or the source
    tree for an editable install, where setuptools-rust also puts the library)."""

    def run(self):
        super().run()
        base = HERE if self.editable_mode else Path(self.build_lib)
        native = base / "acestep_runtime" / "_native"
        native.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HEADER, native / HEADER.name)

    def get_outputs(self, include_bytecode=True):
        # Listed so that an editable install and `bdist_wheel` account for the file.
        outputs = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            outputs.append(str(Path(self.build_lib, "acestep_runtime", "_native", HEADER.name)))
        return outputs


setup(
    version=crate_version(),
    rust_extensions=[
        RustExtension(
            "acestep_runtime._native.acestep_runtime",
            path=str(MANIFEST),
            binding=Binding.NoBinding,
            py_limited_api=True,
            # setuptools-rust would make an editable (inplace) build a debug build: the tests and the
            # demo want the optimised core, and the release build is the one cargo already cached.
            debug=False,
        )
    ],
    cmdclass={"build_py": build_py_with_header},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
    zip_safe=False,
)

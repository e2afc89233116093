"""Copies of a model package for the C test: broken ones for the bad-use cases, and the same
graphs labelled as a base model (the C test's stand-in graphs ignore the weights, so this drives the
guided [cond | uncond] path without exporting a base package).

Each copy is a directory of symlinks to the package's files (nothing large is copied) with its own
edited manifest.json. Usage: python3 make_test_packages.py <package-dir> <out-dir>
"""

import copy
import json
import os
import sys


def main(src: str, out: str) -> None:
    src = os.path.abspath(src)
    with open(os.path.join(src, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)

    def make(name: str, text: str) -> None:
        d = os.path.join(out, name)
        os.makedirs(d)
        for entry in os.listdir(src):
            if entry != "manifest.json":
                os.symlink(os.path.join(src, entry), os.path.join(d, entry))
        with open(os.path.join(d, "manifest.json"), "w", encoding="utf-8") as f:
            f.write(text)

    def edited(change) -> str:
        m = copy.deepcopy(manifest)
        change(m)
        return json.dumps(m, indent=1)

    def as_base(m: dict) -> None:
        m["model_variant"] = "acestep-v15-base"
        m["config"]["acestep"].update(is_turbo=False, uses_cfg=True)

    make("as-base", edited(as_base))
    # Valid in every other respect: its files and sizes check out, only the component is gone.
    make("no-vae", edited(lambda m: m["components"].pop("vae_decoder")))
    make("bad-json", json.dumps(manifest)[:-20])
    make("not-object", "[]")
    make("bad-version", edited(lambda m: m.update(format_version=2)))
    # A path that leaves the package (to a file that exists, so only the ".." can be refused).
    make("escape", edited(lambda m: m["components"]["vae_decoder"].update(file="../no-vae/vae_decoder.onnx")))
    make("absolute", edited(lambda m: m["components"]["vae_decoder"].update(file=os.path.join(src, "vae_decoder.onnx"))))
    make("missing-file", edited(lambda m: m["components"]["vae_decoder"].update(file="nothing_here.onnx")))
    make("wrong-size", edited(lambda m: m["components"]["vae_decoder"].update(bytes=m["components"]["vae_decoder"]["bytes"] + 1)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

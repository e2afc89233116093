"""`acestep-runtime`: generate a track from a model package, or describe a package.

    acestep-runtime generate --caption "lofi hip hop" --duration 12 --seed 42 --out out/
    acestep-runtime generate --request fixtures/cases/text2music_01.json --model PKG --format wav16
    acestep-runtime info PKG

Ctrl-C cancels between steps, writes nothing and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger("acestep_runtime")

EXIT_CANCELLED = 130
TINY_NOTE = (
    "note: no --model given, using {path} (built by tools.parity.fixtures or tools.demo_package). Its weights "
    "are RANDOM: the output is noise-like, not music. Export real checkpoints with `python -m tools.onnx_export "
    "--checkpoints DIR --out PKG` (see docs/onnx_export.md) and pass --model PKG."
)


def _default_model() -> Path:
    from .api import default_model

    return default_model()


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers separated by commas, got {text!r}") from None


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _parse_floats(text: str) -> list[float]:
    return [_finite(s) for s in text.split(",") if s.strip()]


def _version_text() -> str:
    from . import __version__
    from ._native import abi_version, version

    return f"acestep-runtime {__version__} (core {version()}, ABI v{abi_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acestep-runtime", description="ACE-Step 1.5 music generation without PyTorch")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (providers, timings)")
    parser.add_argument("--version", action="version", version=_version_text())
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate tracks (text2music, DiT path)")
    gen.add_argument("--model", type=Path, default=None, help="model package directory (default: the tiny test package)")
    gen.add_argument("--request", type=Path, help="request JSON file; flags given as well override its values")
    gen.add_argument("--caption")
    gen.add_argument("--lyrics")
    gen.add_argument("--lyrics-file", type=Path)
    gen.add_argument("--instrumental", action="store_true", default=None)
    gen.add_argument("--language", dest="vocal_language")
    gen.add_argument("--bpm", type=int)
    gen.add_argument("--keyscale")
    gen.add_argument("--timesignature")
    gen.add_argument("--duration", type=_finite, help="seconds: 1.5 packages 10 to 600 (default 30); v1 packages up to 240")
    gen.add_argument("--seed", dest="seeds", type=_parse_seeds, help="seed, or one per item: 42,43 (default: random)")
    gen.add_argument("--batch-size", type=int)
    gen.add_argument("--shift", type=_finite, help="turbo: 1, 2 or 3 (default 3)")
    gen.add_argument("--timesteps", type=_parse_floats, help="custom turbo timesteps, e.g. 0.97,0.76,...")
    gen.add_argument("--method", dest="infer_method", choices=["ode", "sde"])
    gen.add_argument("--steps", dest="inference_steps", type=int, help="1.5 base/sft packages and v1 packages (v1 default 60)")
    gen.add_argument("--guidance-scale", type=_finite, help="1.5 base/sft packages and v1 packages (v1 default 15)")
    gen.add_argument("--guidance-type", choices=["apg", "cfg"])
    gen.add_argument("--audio-codes", help="LM codes: <|audio_code_N|> tokens or comma-separated ints")
    gen.add_argument("--overlapped-decode", action="store_true", default=None,
                     help="v1 packages, songs over 48 s: decode in the official overlapping windows (changes the "
                          "song slightly; needed for long songs at full size within 24 GiB, see docs/performance_v1.md)")
    gen.add_argument("--vae-chunk", dest="vae_decode_chunk", type=int, metavar="FRAMES",
                     help="1.5 packages: latent frames per VAE decode window (default 512, the official; at least "
                          "128): smaller needs less memory for the same song, at the cost of frames decoded twice")
    lm = gen.add_argument_group("5 Hz LM (packages with an LM; defaults are the official ones)")
    lm.add_argument("--think", dest="thinking", action="store_true", default=None,
                    help="run the LM: CoT metadata, then audio codes (default when the package has an LM)")
    lm.add_argument("--no-think", dest="thinking", action="store_false", help="DiT only, no LM")
    lm.add_argument("--simple", dest="description", metavar="IDEA",
                    help="simple mode: the LM writes caption, lyrics and metadata from a one-line idea")
    lm.add_argument("--lm-temperature", type=_finite, help="default 0.85 (0 = greedy)")
    lm.add_argument("--lm-cfg-scale", type=_finite, help="default 2.0 (1 = no CFG)")
    lm.add_argument("--lm-top-p", type=_finite, help="default 0.9 (1 = off)")
    lm.add_argument("--lm-top-k", type=int, help="default 0 (off)")
    lm.add_argument("--lm-negative-prompt", help='default "NO USER INPUT"')
    lm.add_argument("--lm-max-text-tokens", type=int, help="cap of each LM text phase (default: the LM's context - 64)")
    gen.add_argument("--noise", dest="noise_mode", choices=["torch_cpu", "torch_cuda"])
    gen.add_argument("--format", default=None,
                     help="flac, wav16, wav24, wav32f, mp3 (default: from the --out extension, else flac)")
    gen.add_argument("--out", default="out/", help="output file, or directory if it exists or ends with / (default out/)")
    gen.add_argument("--overwrite", action="store_true", help="replace existing output files")
    gen.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    gen.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    gen.add_argument("--verify", action="store_true", help="check every package file's sha256 first")
    gen.add_argument("--session-cache", default="auto", metavar="DIR|off",
                     help="keep ONNX Runtime's optimised graphs in DIR so the next start skips optimising "
                          "and pre-packing (default: $ACESTEP_SESSION_CACHE if set, else off; takes up to "
                          "~1.9x the package on disk)")
    gen.add_argument("--fast-start", action="store_true",
                     help="leave the weights memory-mapped, not pre-packed: sessions start in seconds "
                          "whatever the package size; GEMMs pack on the fly (see docs/performance.md)")
    gen.add_argument("--no-progress", action="store_true")

    info = sub.add_parser("info", help="describe a model package")
    info.add_argument("model", type=Path, nargs="?", default=None)
    info.add_argument("--verify", action="store_true", help="check every file's sha256")
    return parser


def _request_from_args(args) -> dict:
    """The request as a dict: the --request file's, with the flags given on top. The core checks it."""
    from .request import load_request_file

    data = load_request_file(args.request) if args.request is not None else {}
    overrides = {
        key: getattr(args, key)
        for key in ("caption", "lyrics", "instrumental", "vocal_language", "bpm", "keyscale", "timesignature",
                    "duration", "seeds", "batch_size", "shift", "timesteps", "infer_method", "inference_steps",
                    "guidance_scale", "guidance_type", "noise_mode", "audio_codes", "thinking", "description",
                    "lm_temperature", "lm_cfg_scale", "lm_top_p", "lm_top_k", "lm_negative_prompt",
                    "lm_max_text_tokens", "overlapped_decode", "vae_decode_chunk")
        if getattr(args, key, None) is not None
    }
    if args.lyrics_file is not None:
        overrides["lyrics"] = args.lyrics_file.read_text(encoding="utf-8")
    for alias, key in (("language", "vocal_language"), ("seed", "seeds")):
        if key in overrides and alias in data:  # a flag replaces the file's value under either name
            del data[alias]
    data.update(overrides)
    if "seeds" in overrides and "batch_size" not in overrides:
        # --seed 1,2 means two items, with or without --request.
        data["batch_size"] = max(1, len(overrides["seeds"]))
    return data


class _Progress:
    """tqdm bars per stage, with the stage name and ETA."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"{stage:>9}", unit="step", file=sys.stderr, leave=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _generate(args) -> int:
    from . import outputs
    from .pipeline import Cancelled, Pipeline

    model = args.model
    if model is None:
        model = _default_model()
        print(TINY_NOTE.format(path=model), file=sys.stderr)
    request = _request_from_args(args)

    cancel = threading.Event()
    previous = {}

    def on_signal(signum, frame):
        if cancel.is_set():  # second Ctrl-C: stop waiting for the current step
            raise KeyboardInterrupt
        cancel.set()
        print("\ncancelling after the current step ...", file=sys.stderr)

    progress = _Progress(enabled=not args.no_progress)
    cache = None if args.session_cache.lower() in ("off", "none", "0") else args.session_cache
    with Pipeline.open(model, device=args.device, threads=args.threads, verify=args.verify,
                       session_cache=cache, prepack=not args.fast_start) as pipe:
        # Everything that can fail before generating fails here: the request, the format, the outputs.
        plan = pipe.plan(request)
        fmt = outputs.resolve_format(args.out, args.format or request.get("audio_format"))
        creating_dir = str(args.out).endswith(("/", "\\"))
        # With the LM, the file names (track ids) are known only after its phases: checked then.
        if plan["file_names"]:
            paths = outputs.output_paths(args.out, plan["file_names"], fmt)
            outputs.check_targets(paths, overwrite=args.overwrite, creating_dir=creating_dir)
        for note in plan["notes"]:
            print(f"note: {note}", file=sys.stderr)
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
        try:
            result = pipe.generate(request, progress=progress, cancel=cancel)
            progress.close()
            if cancel.is_set():
                raise Cancelled("generation cancelled")
            if result.lm is not None:
                _log_lm(result)
                if not plan["file_names"]:
                    paths = outputs.output_paths(args.out, result.file_names, fmt)
                    outputs.check_targets(paths, overwrite=args.overwrite, creating_dir=creating_dir)
            paths = result.save(args.out, fmt, overwrite=args.overwrite, cancel=cancel)
        except (Cancelled, KeyboardInterrupt):
            progress.close()
            print("cancelled: no output written", file=sys.stderr)
            return EXIT_CANCELLED
        finally:
            progress.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    for path, seed in zip(paths, result.seeds):
        print(f"{path}  (seed {seed}, {result.audio.shape[-1] / result.sample_rate:.2f} s)")
    t = result.timings
    print(
        f"load {t.get('load', 0):.2f} s, encode {t.get('encode', 0):.2f} s, diffusion {t.get('diffusion', 0):.2f} s, "
        f"decode {t.get('decode', 0):.2f} s, total {t['total']:.2f} s",
        file=sys.stderr,
    )
    return 0


def _log_lm(result) -> None:
    """The LM's plan: one line on stderr, the details with -v."""
    lm = result.lm
    meta = lm.get("metadata") or {}
    phases = ", ".join(f"{p['phase']} {p['tokens']} tokens" for p in lm["phases"])
    print(f"lm: {phases}; {lm['code_count']} codes ({lm['code_count'] / 5:.1f} s)", file=sys.stderr)
    log.info("lm metadata: %s", json.dumps(meta, ensure_ascii=False))
    log.info("lm caption: %s", lm.get("caption"))
    log.info("lm lyrics: %s", lm.get("lyrics"))
    stats = result.lm_stats
    if stats.get("tokens"):
        log.info("lm: %d calls, onnxruntime %.2f ms/token, host %.2f ms/token", stats["tokens"],
                 stats["ort_ms_per_token"], stats["host_ms_per_token"])


def _info(args) -> int:
    from .package import ModelPackage

    model = args.model or _default_model()
    with ModelPackage.open(model, verify=args.verify) as package:
        summary = package.summary()
    if summary.get("random_weights"):
        print("note: this package has RANDOM weights (a test package): its output is noise, not music", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    return 0


# request field → the flag that sets it, so a core message about request.<field> names the flag too.
_FLAGS = {"vocal_language": "--language", "seeds": "--seed", "batch_size": "--batch-size", "infer_method": "--method",
          "inference_steps": "--steps", "guidance_scale": "--guidance-scale", "guidance_type": "--guidance-type",
          "audio_codes": "--audio-codes", "noise_mode": "--noise", "caption": "--caption", "lyrics": "--lyrics",
          "bpm": "--bpm", "keyscale": "--keyscale", "timesignature": "--timesignature", "duration": "--duration",
          "shift": "--shift", "timesteps": "--timesteps", "thinking": "--think/--no-think", "description": "--simple",
          "lm_temperature": "--lm-temperature", "lm_cfg_scale": "--lm-cfg-scale", "lm_top_p": "--lm-top-p",
          "lm_top_k": "--lm-top-k", "lm_negative_prompt": "--lm-negative-prompt",
          "lm_max_text_tokens": "--lm-max-text-tokens", "overlapped_decode": "--overlapped-decode"}


def _with_flag(message: str) -> str:
    import re

    match = re.match(r"request\.([a-z_]+)", message)
    flag = _FLAGS.get(match.group(1)) if match else None
    return f"{message} (flag {flag})" if flag else message


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from ._native import AceError
    from .package import PackageError
    from .request import RequestError

    try:
        return _generate(args) if args.command == "generate" else _info(args)
    except KeyboardInterrupt:
        print("cancelled: no output written", file=sys.stderr)
        return EXIT_CANCELLED
    except AceError as exc:
        print(f"error: {_with_flag(exc.message)}", file=sys.stderr)
        return 2
    except (RequestError, PackageError, ValueError, TypeError, FileNotFoundError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

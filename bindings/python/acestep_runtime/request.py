"""The generation request a user gives the host (CLI flags or a JSON file), validated up front.

Fields follow the official ``GenerationParams`` names where they exist. Values the core checks
(bpm, keyscale, time signature, language, shift, timesteps, duration range) are checked again by the
core with its own messages; this module catches unknown keys and wrong types early.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DURATION_S = 30.0
INFER_METHODS = ("ode", "sde")
GUIDANCE_TYPES = ("apg", "cfg")
NOISE_MODES = ("torch_cpu", "torch_cuda")


class RequestError(ValueError):
    """The request has an unknown key or a value of the wrong type or range."""


@dataclass
class GenerationRequest:
    caption: str = ""
    lyrics: str = ""
    instrumental: bool = False
    vocal_language: str = "unknown"
    bpm: int | None = None
    keyscale: str | None = None
    timesignature: str | None = None
    # seconds; the DiT-only path needs one (default 30 s). With audio codes the code count decides.
    duration: float | None = None
    # One seed per batch item; missing or negative seeds are drawn at random and reported.
    seeds: list[int] = field(default_factory=list)
    batch_size: int = 1
    shift: float | None = None
    timesteps: list[float] | None = None
    infer_method: str = "ode"
    # base/sft packages only (turbo ignores guidance, as the official turbo model does)
    inference_steps: int | None = None
    guidance_scale: float = 7.0
    guidance_type: str = "apg"
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    # LM audio codes (ints 0..63999, or a string of <|audio_code_N|> tokens): selects the cover path
    audio_codes: list[int] | str | None = None
    noise_mode: str = "torch_cpu"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationRequest":
        if not isinstance(data, dict):
            raise RequestError(f"a request must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        # Aliases used by the official example files.
        if "language" in data:
            if "vocal_language" in data:
                raise RequestError("give either 'language' or 'vocal_language', not both")
            data["vocal_language"] = data.pop("language")
        if "seed" in data:
            if "seeds" in data:
                raise RequestError("give either 'seed' or 'seeds', not both")
            data["seeds"] = [data.pop("seed")]
        data.pop("think", None)  # the official examples' LM switch; the LM path is not in this host yet
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RequestError(f"unknown request key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        request = cls(**data)
        request.validate()
        return request

    @classmethod
    def from_file(cls, path: str | Path) -> "GenerationRequest":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RequestError(f"request file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise RequestError(f"request file {path} is not valid JSON: {exc}") from None
        # fixture cases wrap the request: {"id": ..., "request": {...}}
        if isinstance(data, dict) and isinstance(data.get("request"), dict):
            data = data["request"]
        return cls.from_dict(data)

    def validate(self) -> None:
        def expect(name, kinds, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) and bool not in kinds:
                raise RequestError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
            if not isinstance(value, kinds):
                raise RequestError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")

        expect("caption", (str,))
        expect("lyrics", (str,))
        expect("instrumental", (bool,))
        expect("vocal_language", (str,))
        expect("bpm", (int,), allow_none=True)
        expect("keyscale", (str,), allow_none=True)
        if isinstance(self.timesignature, int) and not isinstance(self.timesignature, bool):
            self.timesignature = str(self.timesignature)
        expect("timesignature", (str,), allow_none=True)
        expect("duration", (int, float), allow_none=True)
        expect("batch_size", (int,))
        expect("shift", (int, float), allow_none=True)
        expect("inference_steps", (int,), allow_none=True)
        expect("guidance_scale", (int, float))
        expect("cfg_interval_start", (int, float))
        expect("cfg_interval_end", (int, float))
        if not 1 <= self.batch_size <= 64:
            raise RequestError(f"batch_size must be between 1 and 64, got {self.batch_size}")
        if not isinstance(self.seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise RequestError(f"seeds must be a list of integers, got {self.seeds!r}")
        if len(self.seeds) > self.batch_size:
            raise RequestError(f"{len(self.seeds)} seeds given for batch_size {self.batch_size}")
        if self.timesteps is not None and (
            not isinstance(self.timesteps, list) or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in self.timesteps)
        ):
            raise RequestError(f"timesteps must be a list of numbers, got {self.timesteps!r}")
        if self.infer_method not in INFER_METHODS:
            raise RequestError(f"infer_method must be one of {', '.join(INFER_METHODS)}, got {self.infer_method!r}")
        if self.guidance_type not in GUIDANCE_TYPES:
            raise RequestError(f"guidance_type must be one of {', '.join(GUIDANCE_TYPES)}, got {self.guidance_type!r}")
        if self.noise_mode not in NOISE_MODES:
            raise RequestError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {self.noise_mode!r}")
        if self.audio_codes is not None and not isinstance(self.audio_codes, (list, str)):
            raise RequestError("audio_codes must be a list of ints or a string of <|audio_code_N|> tokens")

    def seeds_for_batch(self) -> list[int]:
        """One seed per item; -1 (random, resolved by the core) where none was given."""
        return list(self.seeds) + [-1] * (self.batch_size - len(self.seeds))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

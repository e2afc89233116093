"""Writing generated audio to disk: WAV (16/24-bit PCM, 32-bit float), FLAC and MP3.

Every file is written atomically: the bytes go to a temporary file in the destination directory,
are flushed to disk, and the temporary file is renamed over the destination. A failure or an
interrupt (Ctrl-C) at any point leaves either the previous file or nothing, never a partial file.

MP3 (lameenc, in-memory) carries no gapless-playback tag, so decoders return the encoder delay and
the padding to whole 1152-sample frames as well: fewer than 2304 extra samples at 48 kHz. The JSON
sidecar records the exact sample count for a host that needs to trim.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_RATE = 48_000

# format name -> (file extension, soundfile format, soundfile subtype); mp3 goes through lameenc.
FORMATS = {
    "wav16": (".wav", "WAV", "PCM_16"),
    "wav24": (".wav", "WAV", "PCM_24"),
    "wav32f": (".wav", "WAV", "FLOAT"),
    "flac": (".flac", "FLAC", "PCM_24"),
    "mp3": (".mp3", None, None),
}
FORMAT_ALIASES = {"wav": "wav16"}
_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile command id (sndfile.h)
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (there is no getter) and put it back


def resolve_format(name: str) -> str:
    """Canonical format name for `name` (case-insensitive); ValueError names the valid choices."""
    key = FORMAT_ALIASES.get(name.lower(), name.lower())
    if key not in FORMATS:
        valid = ", ".join(sorted([*FORMATS, *FORMAT_ALIASES]))
        raise ValueError(f"unknown output format {name!r}; choose one of: {valid}")
    return key


def extension(fmt: str) -> str:
    return FORMATS[resolve_format(fmt)][0]


def _check_audio(audio: np.ndarray) -> np.ndarray:
    """Validates [channels, samples] float audio and returns it as float32."""
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"audio must be a numpy array, got {type(audio).__name__}")
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise ValueError(f"audio must have shape [channels (1 or 2), samples], got {audio.shape}")
    if audio.shape[1] == 0:
        raise ValueError("audio has no samples")
    if not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"audio must be floating point, got {audio.dtype}")
    audio = np.asarray(audio, dtype=np.float32)
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or Inf")
    return audio


def encode(audio: np.ndarray, fmt: str, *, sample_rate: int = SAMPLE_RATE, mp3_kbps: int = 192) -> bytes:
    """Encodes [channels, samples] float audio in [-1, 1] to the bytes of a file of format `fmt`."""
    fmt = resolve_format(fmt)
    audio = _check_audio(audio)
    if fmt == "mp3":
        return _encode_mp3(audio, sample_rate, mp3_kbps)
    import soundfile as sf

    _, container, subtype = FORMATS[fmt]
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=sample_rate, channels=audio.shape[0], format=container, subtype=subtype) as out:
        # Float WAVs get a PEAK chunk holding the write time; without it, same audio = same bytes.
        sf._snd.sf_command(out._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
        # soundfile takes [samples, channels]; PCM subtypes clip to the integer range themselves.
        out.write(audio.T)
    return buffer.getvalue()


def _encode_mp3(audio: np.ndarray, sample_rate: int, kbps: int) -> bytes:
    import lameenc

    pcm = np.clip(audio, -1.0, 1.0)
    pcm16 = np.round(pcm * 32767.0).astype("<i2")
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(pcm16.shape[0])
    encoder.set_quality(2)
    interleaved = np.ascontiguousarray(pcm16.T).tobytes()
    return bytes(encoder.encode(interleaved) + encoder.flush())


# A temporary file of ours older than this was left by a killed process (SIGKILL, power loss).
STALE_PARTIAL_S = 3600


def write_temp(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to a new temporary file next to `path` (``.<name>.<random>.partial``, flushed to
    disk, with the mode a plain open() would give) and returns its path; rename it over `path` with
    ``os.replace`` to publish it. Stale temporaries of ours for the same name are removed first."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {directory}")
    remove_stale_partials(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        # Also on KeyboardInterrupt or a full disk: never leave the partial file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return Path(tmp_name)


def remove_stale_partials(path: Path, *, older_than_s: float = STALE_PARTIAL_S) -> None:
    """Removes ``.<name>.*.partial`` files next to `path` older than `older_than_s` (ours, from a
    killed run; a live writer's temporary file is seconds old)."""
    import time

    cutoff = time.time() - older_than_s
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.partial"):
        with contextlib.suppress(OSError):
            if stale.stat().st_mtime < cutoff:
                stale.unlink()


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically (temp file in the same directory, fsync, rename)."""
    tmp = write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(path)


def write_audio(path: str | os.PathLike, audio: np.ndarray, fmt: str, **encode_options) -> Path:
    """Encodes and atomically writes one track. Returns the path written."""
    return write_bytes_atomic(path, encode(audio, fmt, **encode_options))

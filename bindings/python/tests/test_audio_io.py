"""Audio output: every format reads back at 48 kHz stereo with the right length; writes are atomic."""

import os

import numpy as np
import pytest
import soundfile as sf

from acestep_runtime import audio_io

FRAMES = 37  # latent frames -> 37 * 1920 samples, an odd, non-round length
N = FRAMES * 1920


@pytest.fixture
def audio():
    t = np.arange(N) / 48000.0
    left = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    right = 0.3 * np.sin(2 * np.pi * 660.0 * t + 0.5)
    return np.stack([left, right]).astype(np.float32)


@pytest.mark.parametrize("fmt,tolerance", [("wav16", 1 / 32767), ("wav24", 1 / 2**23), ("wav32f", 0.0), ("flac", 1 / 2**23)])
def test_lossless_formats_round_trip(tmp_path, audio, fmt, tolerance):
    path = audio_io.write_audio(tmp_path / f"x{audio_io.extension(fmt)}", audio, fmt)
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 48000
    assert data.shape == (N, 2)
    assert np.max(np.abs(data.T - audio)) <= tolerance + 1e-7


def test_mp3_reads_back_stereo_48k_with_the_right_length(tmp_path, audio):
    path = audio_io.write_audio(tmp_path / "x.mp3", audio, "mp3")
    info = sf.info(path)
    assert info.samplerate == 48000 and info.channels == 2
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    # MP3 has no gapless trim here (see audio_io): the decoder returns the encoder delay plus the
    # padding to whole 1152-sample frames, so the length is N plus less than two frames.
    assert N <= data.shape[0] < N + 2 * 1152
    # lossy but the same signal once the codec delay is removed
    lags = range(0, 2 * 1152)
    score = [np.dot(data[lag:lag + 4800, 0], audio[0, :4800]) for lag in lags]
    lag = int(np.argmax(score))
    aligned = data[lag:lag + N - 2304, :].T
    assert np.corrcoef(aligned[0], audio[0, : N - 2304])[0, 1] > 0.99
    assert np.corrcoef(aligned[1], audio[1, : N - 2304])[0, 1] > 0.99


def test_pcm_formats_clip_out_of_range_values(tmp_path):
    loud = np.full((2, 1920), 1.5, dtype=np.float32)
    data, _ = sf.read(audio_io.write_audio(tmp_path / "c.wav", loud, "wav16"), dtype="float32")
    assert np.all(data <= 1.0) and np.all(data > 0.99)


def test_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match="unknown output format 'ogg'.*wav16"):
        audio_io.resolve_format("ogg")


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros((3, 100), np.float32), "shape"),
        (np.zeros((2, 0), np.float32), "no samples"),
        (np.full((2, 10), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_audio_is_rejected(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        audio_io.write_audio(tmp_path / "bad.wav", bad, "wav16")
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_is_a_clear_error(tmp_path, audio):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        audio_io.write_audio(tmp_path / "nope" / "x.wav", audio, "wav16")


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch, audio):
    target = tmp_path / "x.flac"

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        audio_io.write_audio(target, audio, "flac")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_file(tmp_path, monkeypatch, audio):
    target = tmp_path / "x.wav"
    audio_io.write_audio(target, audio, "wav16")
    before = target.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        audio_io.write_audio(target, audio * 0.5, "wav16")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]


@pytest.mark.parametrize("fmt", ["wav16", "wav24", "wav32f", "flac", "mp3"])
def test_same_audio_gives_same_bytes(audio, fmt):
    # libsndfile writes a time-stamped PEAK chunk into float WAVs unless told not to
    first = audio_io.encode(audio, fmt)
    import time

    time.sleep(1.1)
    assert audio_io.encode(audio, fmt) == first


def test_written_files_get_the_usual_permissions(tmp_path, audio):
    path = audio_io.write_audio(tmp_path / "x.wav", audio, "wav16")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

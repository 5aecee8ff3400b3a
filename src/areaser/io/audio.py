"""Audio I/O: read any file soundfile reads as mono float32 at one sample rate.

Functional core on plain arrays (like librosa): ``load_audio`` returns a 1-D
``np.float32`` array in [-1, 1] at ``sr`` Hz. Every defect a user can hand us
raises :class:`AudioError`, whose message names the file and the reason.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from areaser.core.errors import AreaserError
from areaser.io.files import atomic_path

__all__ = [
    "DEFAULT_SR",
    "AudioError",
    "AudioInfo",
    "audio_info",
    "load_audio",
    "resample",
    "to_mono",
    "write_audio",
    "is_lfs_pointer",
    "stream_audio",
    "MAX_CHANNELS",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
    "MAX_HEADER_SECONDS",
    "check_limits",
]

DEFAULT_SR = 16_000
# Peak below this is treated as digital silence (16-bit LSB is ~3e-5).
SILENCE_PEAK = 1e-6
_LFS_MAGIC = b"version https://git-lfs"
# What a header may declare before anything is decoded: beyond these the numbers are damage, not audio.
MAX_CHANNELS = 32
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_HEADER_SECONDS = 24 * 3600.0  # e.g. a FLAC whose STREAMINFO says "length unknown" reads as ~2**63 frames
# at most this many samples (frames x channels) are decoded at once by stream_audio (64 MiB of float32)
MAX_BLOCK_SAMPLES = 1 << 24


class AudioError(AreaserError, ValueError):
    """A file that cannot be used as audio. ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no samples decoded)."""

    path: str
    sample_rate: int
    frames: int
    channels: int
    format: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_lfs_pointer(path: str | os.PathLike) -> bool:
    """True if ``path`` is a Git LFS pointer file (a small text stub, not audio)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(_LFS_MAGIC)) == _LFS_MAGIC
    except OSError:
        return False


BROKEN_LINK = "broken symbolic link (its target does not exist)"
LINK_LOOP = "symbolic link loop (it leads back to itself or to a folder above it), not followed"


def link_problem(path: str | os.PathLike) -> str | None:
    """:data:`BROKEN_LINK` or :data:`LINK_LOOP` if ``path`` is a symbolic link that leads nowhere, else ``None``."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as e:
        return LINK_LOOP if e.errno == errno.ELOOP else BROKEN_LINK
    return None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, link_problem(path) or "file not found")  # exists() follows links: say which
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    if is_lfs_pointer(path):
        raise AudioError(path, "Git LFS pointer, not audio (fetch the real file with `git lfs pull`)")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of ``path``; raise :class:`AudioError` if it is not usable audio."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or TypeError
        raise AudioError(path, f"not a readable audio file ({_short(e)})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "no audio samples (zero length)")
    out = AudioInfo(str(path), int(info.samplerate), int(info.frames), int(info.channels), str(info.format))
    if not 1 <= out.channels <= MAX_CHANNELS:
        raise AudioError(path, f"header declares {out.channels} channels; at most {MAX_CHANNELS} are supported")
    if not MIN_SAMPLE_RATE <= out.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            path,
            f"header declares a sample rate of {out.sample_rate} Hz; "
            f"supported rates are {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz",
        )
    if out.duration_s > MAX_HEADER_SECONDS:
        raise AudioError(
            path,
            f"header declares an implausible length ({out.frames} frames = {out.duration_s / 3600:.0f} h; "
            f"at most {MAX_HEADER_SECONDS / 3600:g} h is accepted): the file is damaged or its length is unknown",
        )
    return out


def check_limits(
    path: str | os.PathLike, info: AudioInfo, max_seconds: float | None = None, max_samples: int | None = None
) -> None:
    """Refuse a header that asks too much; raise :class:`AudioError`.

    ``info`` (read before decoding) is refused if it is longer than ``max_seconds`` or holds more than
    ``max_samples`` samples (frames x channels).
    """
    if max_seconds is not None and info.duration_s > max_seconds:
        raise AudioError(path, f"too long: {info.duration_s:.1f} s exceeds the limit of {float(max_seconds):g} s")
    if max_samples is not None and info.frames * info.channels > max_samples:
        raise AudioError(
            path,
            f"too many samples to decode: {info.channels} channels x {info.frames} frames "
            f"({info.duration_s:.1f} s at {info.sample_rate} Hz) = {info.frames * info.channels} samples; "
            f"the limit is {int(max_samples)}",
        )


def to_mono(y: np.ndarray) -> np.ndarray:
    """Average channels: ``[N, C] -> [N]``; a 1-D array is returned unchanged."""
    return y.mean(axis=1) if y.ndim == 2 else y


def resample(y: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """Resample ``y`` (``[N]`` or ``[N, C]``) from ``orig_sr`` to ``sr`` Hz with soxr (HQ)."""
    if orig_sr == sr:
        return y
    return soxr.resample(y, orig_sr, sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike,
    sr: int | None = DEFAULT_SR,
    *,
    mono: bool = True,
    max_seconds: float | None = None,
    allow_silent: bool = False,
    max_samples: int | None = None,
) -> np.ndarray:
    """Load an audio file as float32 in [-1, 1].

    Parameters
    ----------
    path : audio file in any format libsndfile reads (wav, flac, ogg, ...).
    sr : target sample rate in Hz (default 16000); ``None`` keeps the file's rate.
    mono : mix all channels to one (default). If False the result is ``[N, C]``.
    max_seconds : refuse files longer than this (checked from the header, before decoding).
    allow_silent : accept an all-zero file (default: refuse it).
    max_samples : refuse files holding more samples (frames x channels) than this (from the header).

    Returns
    -------
    np.ndarray, float32, shape ``[N]`` (or ``[N, C]`` when ``mono=False``).

    Raises
    ------
    AudioError : missing, empty, not audio, LFS pointer, zero length, too long,
        NaN/Inf samples, or silent. The message names the file and the reason.
    """
    path = Path(path)
    info = audio_info(path)
    check_limits(path, info, max_seconds, max_samples)
    try:
        y, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(path, f"cannot decode audio ({_short(e)})") from None
    if y.size == 0:
        raise AudioError(path, "no audio samples (zero length)")
    if not np.isfinite(y).all():
        raise AudioError(path, "contains NaN or infinite samples")
    if mono:
        y = to_mono(y)
    if sr is not None and file_sr != sr:
        y = resample(y, file_sr, sr)
    if not allow_silent and float(np.max(np.abs(y))) < SILENCE_PEAK:
        raise AudioError(path, "silent: every sample is zero")
    # float formats may exceed full scale; keep the documented range
    np.clip(y, -1.0, 1.0, out=y)
    return np.ascontiguousarray(y, dtype=np.float32)


def write_audio(path: str | os.PathLike, y: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    """Write ``y`` (``[N]`` or ``[N, C]`` float in [-1, 1]) to ``path`` atomically.

    The format comes from the extension; wav defaults to 16-bit PCM.
    """
    path = Path(path)
    if subtype is None and path.suffix.lower() == ".wav":
        subtype = "PCM_16"
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(y, -1.0, 1.0), sr, subtype=subtype)
    return path


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # libsndfile prefixes the path again; drop it to keep one clean line
    return msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg


def stream_audio(
    path: str | os.PathLike,
    sr: int | None = DEFAULT_SR,
    block_s: float = 30.0,
    *,
    max_seconds: float | None = None,
    allow_silent: bool = False,
    max_samples: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``path`` as consecutive mono float32 blocks at ``sr`` Hz, decoding ``block_s`` s at a time.

    The streaming twin of :func:`load_audio`: the same checks and the same result
    once the blocks are concatenated (up to the resampler's streaming edges), but
    memory is bounded by one block whatever the file's length. Channels are
    averaged, then each block goes through one streaming soxr resampler (HQ), so
    block borders leave no seams. Blocks are ``[M]`` with M about ``block_s * sr``
    (the first and last may be shorter; none is empty).

    Raises :class:`AudioError` for everything :func:`load_audio` refuses. Defects
    found while decoding (NaN samples, an all-zero file) raise when they are met,
    which may be after some blocks were already yielded.
    """
    path = Path(path)
    info = audio_info(path)
    check_limits(path, info, max_seconds, max_samples)
    if block_s <= 0:
        raise ValueError(f"block_s must be > 0, got {block_s}")
    out_sr = info.sample_rate if sr is None else sr
    stream = None if out_sr == info.sample_rate else soxr.ResampleStream(info.sample_rate, out_sr, 1, "float32", "HQ")
    peak = 0.0
    try:
        with sf.SoundFile(str(path)) as f:
            # a block is block_s seconds, but never more than MAX_BLOCK_SAMPLES samples over all channels
            frames = max(1, min(int(block_s * info.sample_rate), MAX_BLOCK_SAMPLES // info.channels))
            blocks = f.blocks(blocksize=frames, dtype="float32", always_2d=True)
            for y, last in _with_last(blocks):
                if not np.isfinite(y).all():
                    raise AudioError(path, "contains NaN or infinite samples")
                y = np.ascontiguousarray(to_mono(y), dtype=np.float32)
                if stream is not None:
                    y = stream.resample_chunk(y, last=last)
                peak = max(peak, float(np.max(np.abs(y)))) if y.size else peak
                np.clip(y, -1.0, 1.0, out=y)
                if y.size:
                    yield y
    except AudioError:
        raise
    except Exception as e:  # libsndfile errors in the middle of a damaged file
        raise AudioError(path, f"cannot decode audio ({_short(e)})") from None
    if not allow_silent and peak < SILENCE_PEAK:
        raise AudioError(path, "silent: every sample is zero")


def _with_last(it: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
    """Pair each item with a flag telling whether it is the last one."""
    prev = next(it, None)
    for item in it:
        yield prev, False
        prev = item
    if prev is not None:
        yield prev, True

"""Vocal tract length perturbation (VTLP, Jaitly & Hinton 2013), three ways behind one option.

The warp (paper.md), piecewise linear with 0 and S/2 fixed, S the sample rate::

    f' = alpha * f                                                          if f <= F_hi * min(alpha, 1) / alpha
    f' = S/2 - (S/2 - F_hi*min(alpha,1)) / (S/2 - F_hi*min(alpha,1)/alpha) * (S/2 - f)   otherwise

Convention everywhere here: content at frequency ``f`` moves to ``f' = warp(f)`` (alpha < 1
lowers formants: a 1000 Hz tone comes out at 800 Hz at alpha 0.8).

``melwarp`` (default)
    on the fly inside :class:`areaser.features.LogMel`: each example's mel filterbank is
    evaluated at the warped STFT bin frequencies, ``H_m(warp(f))``, so the energy of bin ``f``
    lands in the band that holds ``warp(f)``. A per-example filterbank, nothing else.
``stft``
    the same warp applied to the waveform: STFT, magnitudes read at ``warp^-1`` of each output
    bin, phases advanced at the warped instantaneous frequency (a phase vocoder), inverse STFT.
    Used by :func:`augment_manifest` to write augmented copies to disk like the paper.
``legacy-time``
    what the authors' nlpaug release really did (nlpaug issue #280): the warp map was computed
    over the STFT's *frames* (``time_dim, freq_dim`` swapped), so it moves frames in time.
    For faithful reproduction only.

nlpaug 1.1.11 fixed the axis but still maps bins over 0..S (not 0..S/2) and ignores ``fhi``;
it is kept out of the package and measured in ``benchmarks/bench_features.py``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import librosa
import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_FHI",
    "VTLPConfig",
    "warp_frequencies",
    "unwarp_frequencies",
    "sample_factors",
    "filterbank_at",
    "vtlp_stft",
    "legacy_time_warp",
    "warp_waveform",
    "copy_factor",
    "copy_settings",
    "copies_folder",
    "augment_manifest",
]

DEFAULT_FHI = 4800.0
Impl = Literal["melwarp", "stft", "legacy-time", "none"]


@dataclass(frozen=True)
class VTLPConfig:
    """VTLP settings; the defaults are the paper's (nlpaug ``factor=(0.8, 1.2)``, ``fhi=4800``)."""

    impl: Impl = "melwarp"
    factor_range: tuple[float, float] = (0.8, 1.2)
    fhi: float = DEFAULT_FHI
    distribution: Literal["uniform"] = "uniform"

    def __post_init__(self) -> None:
        if self.impl not in ("melwarp", "stft", "legacy-time", "none"):
            raise ValueError(f"impl must be 'melwarp', 'stft', 'legacy-time' or 'none', got {self.impl!r}")
        lo, hi = self.factor_range
        if not 0 < lo <= hi:
            raise ValueError(f"factor_range must satisfy 0 < low <= high, got {self.factor_range}")
        if not self.fhi > 0:
            raise ValueError(f"fhi must be > 0 Hz, got {self.fhi}")
        if self.distribution != "uniform":
            raise ValueError(f"distribution must be 'uniform', got {self.distribution!r}")
        object.__setattr__(self, "factor_range", (float(lo), float(hi)))

    def to_dict(self) -> dict:
        return asdict(self)


def _lib(*xs):
    return torch if any(isinstance(x, Tensor) for x in xs) else np


def _check_fhi(sr: float, fhi: float) -> None:
    if not 0 < fhi < sr / 2:
        raise ValueError(f"fhi must lie in (0, sr/2) = (0, {sr / 2:g}) Hz, got {fhi}")


def _breakpoints(f, alpha, sr: float, fhi: float):
    """Array library, sr/2, ``fhi * min(alpha, 1)`` (the knee's image) and the knee ``/ alpha``."""
    _check_fhi(sr, fhi)
    xp = _lib(f, alpha)
    scale = fhi * (torch.clamp(alpha, max=1.0) if xp is torch and isinstance(alpha, Tensor) else np.minimum(alpha, 1.0))
    return xp, sr / 2, scale, scale / alpha


def warp_frequencies(f, alpha, sr: float, fhi: float = DEFAULT_FHI):
    """The VTLP map ``f -> f'`` in Hz (numpy arrays, torch tensors or floats; broadcasts).

    Defined on ``[0, sr/2]`` (0 and ``sr/2`` are fixed points, the map is continuous and
    increasing); outside that range the formula is extended linearly, which only the
    ``legacy-time`` reproduction uses.
    """
    xp, half, scale, boundary = _breakpoints(f, alpha, sr, fhi)
    upper = half - (half - scale) / (half - boundary) * (half - f)
    return xp.where(f <= boundary, alpha * f, upper)


def unwarp_frequencies(g, alpha, sr: float, fhi: float = DEFAULT_FHI):
    """The inverse map ``f' -> f`` (same conventions as :func:`warp_frequencies`)."""
    xp, half, scale, boundary = _breakpoints(g, alpha, sr, fhi)
    upper = half - (half - boundary) / (half - scale) * (half - g)
    return xp.where(g <= scale, g / alpha, upper)


def sample_factors(
    n: int,
    config: VTLPConfig = VTLPConfig(),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` warp factors, float32 ``[n]``, drawn from ``config.distribution`` over ``config.factor_range``.

    Pass a seeded ``torch.Generator`` for reproducible draws (it must live on ``device``).
    """
    lo, hi = config.factor_range
    u = torch.rand(n, generator=generator, device=device)
    return lo + (hi - lo) * u


def filterbank_at(freqs: Tensor, mel_f: Tensor, mel_norm: str | None = "slaney") -> Tensor:
    """Triangular mel filters evaluated at arbitrary frequencies.

    Parameters
    ----------
    freqs : float64 ``[..., F]`` frequencies in Hz at which to evaluate (the STFT bins, warped).
    mel_f : float64 ``[n_mels + 2]`` band edges in Hz (``librosa.mel_frequencies``), increasing.
    mel_norm : ``'slaney'`` (area normalisation, librosa's default) or ``None``.

    Returns
    -------
    float32 ``[..., n_mels, F]``. With the plain bin frequencies it is librosa's
    ``filters.mel`` bit for bit (the same float64 expressions and float32 rounding steps).

    A frequency between edges ``j`` and ``j + 1`` lies on the rising slope of filter ``j`` and
    the falling slope of filter ``j - 1`` and nowhere else, so the bank is built from two
    weights per frequency and a scatter: O(F) work instead of O(n_mels * F).
    """
    n_mels = len(mel_f) - 2
    fdiff = mel_f[1:] - mel_f[:-1]
    j = torch.searchsorted(mel_f, freqs.contiguous(), right=True) - 1  # edge interval of each frequency
    inside = (j >= 0) & (j <= n_mels)
    jc = j.clamp(0, n_mels)
    rise = ((freqs - mel_f[jc]) / fdiff[jc]).float()  # librosa: -(mel_f[m] - f) / fdiff[m]
    fall = ((mel_f[jc + 1] - freqs) / fdiff[jc]).float()  # librosa: (mel_f[m + 2] - f) / fdiff[m + 1]
    if mel_norm == "slaney":
        enorm = 2.0 / (mel_f[2:] - mel_f[:-2])
        rise = (rise.double() * enorm[jc.clamp(max=n_mels - 1)]).float()
        fall = (fall.double() * enorm[(jc - 1).clamp(min=0)]).float()
    elif mel_norm is not None:
        raise ValueError(f"mel_norm must be 'slaney' or None, got {mel_norm!r}")
    # filter index n_mels (rising) and -1 (falling) do not exist: send them to a spare row
    rise = torch.where(inside & (jc < n_mels), rise, 0.0)
    fall = torch.where(inside & (jc > 0), fall, 0.0)
    out = torch.zeros(*freqs.shape[:-1], n_mels + 1, freqs.shape[-1], dtype=torch.float32, device=freqs.device)
    out.scatter_(-2, jc.unsqueeze(-2), rise.unsqueeze(-2))
    out.scatter_add_(-2, ((jc - 1) % (n_mels + 1)).unsqueeze(-2), fall.unsqueeze(-2))
    return out[..., :n_mels, :]


def vtlp_stft(
    y: np.ndarray,
    sr: int,
    alpha: float,
    fhi: float = DEFAULT_FHI,
    win_length: int = 1024,
    n_fft: int = 2048,
    hop_length: int | None = None,
    n_iter: int = 2,
) -> np.ndarray:
    """VTLP on a waveform by STFT resynthesis; returns float32 ``[N]`` (same length as ``y``).

    Output bin ``k`` (frequency ``g``) takes the magnitude at ``warp^-1(g)`` (linear
    interpolation between bins) times ``sqrt(d warp^-1 / dg)``, so the energy in every band
    is carried over like the ``melwarp`` filterbank does, and a phase advanced each frame by
    the warped instantaneous frequency of its source bin (a phase vocoder), so a tone comes
    out as a clean tone at ``warp(f)``. Phases are referred to the frame centre (``+ pi * k``)
    so the bins of one partial stay coherent. Defaults at 16 kHz: 64 ms Hann frames, hop 16 ms,
    zero-padded to 2048 points (7.8 Hz bins) so the interpolation samples each lobe finely.
    ``n_iter`` Griffin-Lim iterations then make the phases of noise-like parts consistent.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"vtlp_stft expects a 1-D signal, got shape {y.shape}")
    if not alpha > 0:
        raise ValueError(f"warp factor must be > 0, got {alpha}")
    hop = hop_length or win_length // 4
    stft_kw = dict(n_fft=n_fft, hop_length=hop, win_length=win_length)
    spec = librosa.stft(y, **stft_kw)  # complex64 [F, T]
    n_bins = spec.shape[0]
    k = np.arange(n_bins)
    bin_hz = sr / n_fft

    src_hz = unwarp_frequencies(k * bin_hz, alpha, sr, fhi)
    src = src_hz / bin_hz  # fractional source bin of each output bin
    j0 = np.clip(np.floor(src).astype(int), 0, n_bins - 2)
    frac = (src - j0)[:, None]
    mag = np.abs(spec)
    gain = np.sqrt(np.gradient(src_hz, k * bin_hz))[:, None]  # energy-preserving Jacobian
    mag_out = (gain * ((1 - frac) * mag[j0] + frac * mag[j0 + 1])).astype(np.float32)

    # centre-referenced phase: the bins of one partial share it (a centred window's DFT adds -pi*k)
    psi = np.angle(spec).astype(np.float64) + np.pi * k[:, None]
    dpsi = np.diff(psi, axis=1) - 2 * np.pi * k[:, None] * hop / n_fft
    dpsi = (dpsi + np.pi) % (2 * np.pi) - np.pi
    inst_hz = (k[:, None] + dpsi * n_fft / (2 * np.pi * hop)) * bin_hz  # [F, T-1]
    near = np.clip(np.rint(src).astype(int), 0, n_bins - 1)
    advance = (2 * np.pi * hop / sr * warp_frequencies(inst_hz[near], alpha, sr, fhi)) % (2 * np.pi)
    psi_out = np.concatenate([psi[near, :1], psi[near, :1] + np.cumsum(advance, axis=1)], axis=1)
    phase = ((psi_out - np.pi * k[:, None]) % (2 * np.pi)).astype(np.float32)
    out = np.empty(spec.shape, np.complex64)  # mag * exp(i phase), ~15x faster than np.exp on complex
    out.real, out.imag = mag_out * np.cos(phase), mag_out * np.sin(phase)
    for _ in range(n_iter):
        # Griffin-Lim steps from the vocoder's phases: noise has no coherent phase to carry
        # over, and without them the inverse STFT cancels ~70 % of its energy
        again = librosa.stft(librosa.istft(out, length=len(y), **stft_kw), **stft_kw)
        out = mag_out * again / np.maximum(np.abs(again), 1e-12)
    return librosa.istft(out, length=len(y), **stft_kw).astype(np.float32)


def legacy_time_warp(y: np.ndarray, sr: int, alpha: float, fhi: float = DEFAULT_FHI) -> np.ndarray:
    """The authors' VTLP as their nlpaug release ran it: the warp moves STFT *frames* in time.

    Facts reproduced: ``librosa.stft`` defaults of the time (n_fft 2048, hop 512, centred with
    reflect padding, librosa < 0.9.0), map evaluated at ``linspace(0, 1, T) * sr`` over the T
    frames, rescaled so its maximum is ``T - 1``, first and last frame kept, every other frame
    split between the two frames around its target, inverse STFT without a length (so the
    output is ``512 * (T - 1)`` samples, a little shorter than the input). Returns float32.
    """
    y = np.asarray(y, dtype=np.float32)
    spec = librosa.stft(y, n_fft=2048, hop_length=512, center=True, pad_mode="reflect")
    n_frames = spec.shape[1]
    out = np.zeros_like(spec)
    out[:, 0] += spec[:, 0]
    out[:, -1] += spec[:, -1]
    if n_frames > 2:
        target = warp_frequencies(np.linspace(0, 1, n_frames) * sr, alpha, sr, fhi)
        target = target * (n_frames - 1) / target.max()
        i = np.arange(1, n_frames - 1)
        pos = np.floor(target[i]).astype(int)
        up = (target[i] - pos).astype(np.float32)
        np.add.at(out.T, pos, ((1 - up)[:, None] * spec[:, i].T))
        np.add.at(out.T, pos + 1, (up[:, None] * spec[:, i].T))
    return librosa.istft(out, hop_length=512).astype(np.float32)


def warp_waveform(y: np.ndarray, sr: int, alpha: float, config: VTLPConfig = VTLPConfig(impl="stft")) -> np.ndarray:
    """Apply an audio-rewriting VTLP (``config.impl`` ``'stft'`` or ``'legacy-time'``) to ``y [N]``."""
    if config.impl == "stft":
        return vtlp_stft(y, sr, alpha, config.fhi)
    if config.impl == "legacy-time":
        return legacy_time_warp(y, sr, alpha, config.fhi)
    raise ValueError(
        f"impl {config.impl!r} does not rewrite audio: use 'stft' or 'legacy-time' "
        "(melwarp is applied on the fly by LogMel)"
    )


def copy_factor(seed: int, utt_id: str, copy: int, config: VTLPConfig = VTLPConfig()) -> float:
    """The warp factor of copy ``copy`` of ``utt_id``: a pure function of its arguments.

    Seeded per (seed, utterance, copy) rather than by position, so a resumed or reordered
    run draws the same factors.
    """
    h = int.from_bytes(hashlib.blake2b(utt_id.encode("utf-8"), digest_size=8).digest(), "little")
    rng = np.random.default_rng([seed, copy, h])
    lo, hi = config.factor_range
    return float(rng.uniform(lo, hi))


def copy_settings(config: VTLPConfig, seed: int = 0) -> dict:
    """What fixes the audio of an offline copy besides its source: recorded as ``augment.json``."""
    return {"impl": config.impl, "factor_range": list(config.factor_range), "fhi": config.fhi, "seed": seed}


def copies_folder(root: str | Path, config: VTLPConfig, seed: int = 0) -> Path:
    """The cache folder of copies made with these settings under ``root``: ``root/<impl>-<digest>``.

    The digest is of :func:`copy_settings`, so runs with the same settings find (and reuse) the same
    copies, and other settings never meet them. The number of copies is not part of the key: copy ``k``
    of an utterance is the same file whatever the number asked for.
    """
    import json

    key = json.dumps(copy_settings(config, seed), sort_keys=True)
    return Path(root) / f"{config.impl}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def augment_manifest(
    manifest: "pd.DataFrame",
    out_dir: str | Path,
    copies: int = 7,
    config: VTLPConfig = VTLPConfig(impl="stft"),
    seed: int = 0,
    progress: bool = False,
) -> "pd.DataFrame":
    """Write ``copies`` VTLP copies of every utterance in ``manifest`` under ``out_dir``.

    Copies are ``out_dir/wav/<utt_id>__vtlp<k>.wav`` (k = 1..copies), written atomically;
    ``out_dir/manifest.csv`` lists only the copies, each with ``source_id`` = its source's
    ``utt_id``, the source's speaker, session and label (so a split keeps copies with their
    source), and the factor in ``vtlp_factor``. Rows that are copies already are skipped.
    Idempotent: finished copies are kept, so an interrupted run resumes; settings are
    recorded in ``out_dir/augment.json`` and a run with other settings is refused. A call that
    finds everything in place leaves every file as it was (``augment.json`` and ``manifest.csv`` are
    replaced only when their content changes), so a cache folder (:func:`copies_folder`) is only read.

    Returns the manifest of the copies; ``attrs['written']`` counts the files this call wrote.
    """
    import json

    import pandas as pd

    from .audio import DEFAULT_SR, load_audio, write_audio
    from .fileio import atomic_write_json
    from .manifest import make_manifest, write_manifest

    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    if config.impl not in ("stft", "legacy-time"):
        raise ValueError(f"augment writes audio: impl must be 'stft' or 'legacy-time', got {config.impl!r}")
    out_dir = Path(out_dir)
    settings = copy_settings(config, seed)
    meta_path = out_dir / "augment.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != settings:
            shown = ", ".join(f"{k}={v}" for k, v in old.items())
            raise ValueError(f"{out_dir}: holds copies made with other settings ({shown}); use another output folder")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(meta_path, settings)

    sources = make_manifest(manifest)
    sources = sources[sources["source_id"] == ""]
    rows, written = [], 0
    jobs = [(r, k) for r in sources.to_dict("records") for k in range(1, copies + 1)]
    ctx = _progress(progress, len(jobs))
    with ctx as bar:
        task = bar.add_task("VTLP copies", total=len(jobs)) if bar is not None else None
        cached: tuple[str, np.ndarray] | None = None
        for row, k in jobs:
            utt_id = f"{row['utt_id']}__vtlp{k}"
            path = out_dir / "wav" / f"{utt_id}.wav"
            alpha = copy_factor(seed, row["utt_id"], k, config)
            if not path.is_file():  # atomic writes: an existing file is a finished copy
                if cached is None or cached[0] != row["utt_id"]:
                    cached = (row["utt_id"], load_audio(row["path"], DEFAULT_SR))
                y = warp_waveform(cached[1], DEFAULT_SR, alpha, config)
                peak = float(np.max(np.abs(y))) if len(y) else 0.0
                if peak > 1.0:  # rescale rather than clip
                    y = y * (0.99 / peak)
                write_audio(path, y, DEFAULT_SR)
                written += 1
            rows.append(
                {
                    **row,
                    "utt_id": utt_id,
                    "path": str(path),
                    "source_id": row["utt_id"],
                    "duration_s": _duration(path),
                    "vtlp_factor": round(alpha, 4),
                }
            )
            if bar is not None:
                bar.advance(task)
    out = make_manifest(pd.DataFrame(rows, columns=list(sources.columns) + ["vtlp_factor"]))
    target = out_dir / "manifest.csv"
    fresh = write_manifest(out, out_dir / f".manifest-{os.getpid()}-{os.urandom(4).hex()}.csv")  # workers: own name
    if target.is_file() and target.read_bytes() == fresh.read_bytes():
        fresh.unlink()  # unchanged: the cached manifest stays as it is
    else:
        os.replace(fresh, target)
    out.attrs["written"] = written
    return out


def _duration(path: Path) -> float:
    from .audio import audio_info

    return audio_info(path).duration_s


def _progress(enabled: bool, total: int):
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
    )

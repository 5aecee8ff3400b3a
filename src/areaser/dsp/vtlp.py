"""Vocal tract length perturbation (VTLP, Jaitly & Hinton 2013), three ways behind one option.

The warp (paper.md), piecewise linear with 0 and S/2 fixed, S the sample rate::

    f' = alpha * f                                                          if f <= F_hi * min(alpha, 1) / alpha
    f' = S/2 - (S/2 - F_hi*min(alpha,1)) / (S/2 - F_hi*min(alpha,1)/alpha) * (S/2 - f)   otherwise

Convention everywhere here: content at frequency ``f`` moves to ``f' = warp(f)`` (alpha < 1
lowers formants: a 1000 Hz tone comes out at 800 Hz at alpha 0.8).

``melwarp`` (default)
    on the fly inside :class:`areaser.dsp.features.LogMel`: each example's mel filterbank is
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
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import librosa
import numpy as np
import torch
from torch import Tensor

from areaser.dsp.mel import DEFAULT_FHI, unwarp_frequencies, warp_frequencies

if TYPE_CHECKING:
    pass


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

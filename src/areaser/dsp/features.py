"""Log-Mel spectrograms, batched in torch, equal to librosa's (the paper's) features.

The paper computes ``log10(librosa.feature.melspectrogram(y, sr=16000, n_fft=800, hop_length=400))``
per 2 s window: 128 mel bands x 81 frames, H = frequency, W = time. :func:`log_mel` (functional)
and :class:`LogMel` (``nn.Module``) compute the same values for a whole batch at once with
``torch.stft`` and librosa's Slaney mel basis, on CPU or CUDA.

Differences from the paper, each a :class:`FeatureConfig` field:

- ``log='log10'`` takes ``log10(max(S, amin))`` with ``amin=1e-10``: librosa's ``power_to_db``
  floor, but base-10 values (``power_to_db / 10``) so they equal the paper's wherever the
  paper's are finite; digital silence gives -10 instead of -inf.
- ``norm``: ``'none'`` (the paper), ``'utterance'`` (per mel band mean/std over the frames of
  each utterance: a ``groups`` argument says which windows belong together, else each example
  is its own utterance) or ``'dataset'`` (per mel band mean/std fitted on training data with
  :meth:`LogMel.fit_stats`, kept in the module's ``state_dict`` so it ships with the model).

VTLP ``melwarp`` (:mod:`areaser.dsp.vtlp`) happens here: ``warp_factors`` gives each example its own
filterbank, evaluated at warped STFT bin frequencies, so no audio is rewritten.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from numbers import Integral, Real
from typing import Iterable, Literal

import librosa
import numpy as np
import torch
from torch import Tensor, nn

from areaser.dsp.mel import DEFAULT_FHI, filterbank_at, warp_frequencies

__all__ = [
    "FeatureConfig",
    "check_types",
    "log_mel",
    "LogMel",
    "mel_basis",
    "n_frames",
    "normalize",
    "warped_mel_filterbank",
]

Norm = Literal["none", "utterance", "dataset"]

# Bounds on the numbers that size the STFT window, the mel basis and the statistics buffers. A config or
# model file is read from disk: without them a crafted value builds gigabyte-sized tensors before any check.
MAX_SR = 192_000  # the highest rate studio audio is recorded at (12x speech's 16 kHz)
MAX_N_FFT = 2**15  # 2 s at 16 kHz, 0.17 s at 192 kHz: longer than any speech frame; basis <= 512 x 16,385
MAX_N_MELS = 512  # 4x the paper's 128 bands; finer than the STFT bins of any usual n_fft resolve


@dataclass(frozen=True)
class FeatureConfig:
    """Log-Mel settings; the defaults are the paper's (librosa ``melspectrogram`` defaults).

    ``pad_mode`` pads the signal's ends by ``n_fft // 2`` when ``center=True``: ``'constant'``
    (zeros) is librosa's default since 0.9.0, kept for parity with a current librosa;
    ``'reflect'`` was the default before 0.9.0 and is what the authors' librosa (< 0.8: their code
    calls ``librosa.output``) computed, so the ``faithful`` training preset uses it. It changes the
    first and last frame or two of every window. ``mel_norm`` is librosa's filter normalisation
    (``'slaney'`` or ``None``). ``amin`` is the power floor before the log; ``norm_eps`` the floor
    of a std when normalising.
    """

    sr: int = 16_000
    n_fft: int = 800
    hop_length: int = 400
    win_length: int | None = None
    window: str = "hann"
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    power: float = 2.0
    center: bool = True
    pad_mode: str = "constant"
    htk: bool = False
    mel_norm: str | None = "slaney"
    log: Literal["log10", "none"] = "log10"
    amin: float = 1e-10
    norm: Norm = "none"
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_types(self)
        for name, most in {"sr": MAX_SR, "n_fft": MAX_N_FFT, "n_mels": MAX_N_MELS}.items():
            if not 1 <= getattr(self, name) <= most:
                raise ValueError(f"{name}={getattr(self, name)} is out of range: need 1 <= {name} <= {most}")
        if self.hop_length < 1:
            raise ValueError(f"hop_length must be >= 1 sample, got {self.hop_length}")
        if self.win_length is not None and not 1 <= self.win_length <= self.n_fft:
            raise ValueError(f"win_length={self.win_length} is out of range: need 1 to n_fft ({self.n_fft})")
        if not 0 <= self.fmin < self.sr / 2:
            raise ValueError(f"need 0 <= fmin < sr/2, got fmin={self.fmin}, sr={self.sr}")
        if self.fmax is not None and not self.fmin < self.fmax <= self.sr / 2:
            raise ValueError(f"need fmin < fmax <= sr/2, got fmin={self.fmin}, fmax={self.fmax}, sr={self.sr}")
        if self.log not in ("log10", "none"):
            raise ValueError(f"log must be 'log10' or 'none', got {self.log!r}")
        if not self.amin > 0:
            raise ValueError(f"amin must be > 0 (the floor that keeps log10 finite), got {self.amin}")
        if self.norm not in ("none", "utterance", "dataset"):
            raise ValueError(f"norm must be 'none', 'utterance' or 'dataset', got {self.norm!r}")
        if self.pad_mode not in ("constant", "reflect", "replicate", "circular"):
            raise ValueError(f"pad_mode {self.pad_mode!r} not supported by torch.stft")
        if not self.power > 0 or not self.norm_eps > 0:
            raise ValueError(f"need power > 0 and norm_eps > 0, got power={self.power}, norm_eps={self.norm_eps}")
        if self.mel_norm not in (None, "slaney"):
            raise ValueError(f"mel_norm must be 'slaney' or None, got {self.mel_norm!r}")
        try:
            librosa.filters.get_window(self.window, 4, fftbins=True)  # 4 samples: the name is checked, not the size
        except ValueError as e:
            raise ValueError(f"window {self.window!r}: {e}") from None

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        if not isinstance(d, dict):
            raise ValueError(f"feature settings must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def check_types(obj: object, label: str = "") -> None:
    """ValueError naming the field when a dataclass field holds another type than its annotation says.

    For configs read from JSON: ``"128"``, ``[128]`` or ``true`` where a number belongs, ``3.5``
    where an integer does, ``NaN``. Plain annotations only (``int``, ``float``, ``bool``, ``str``,
    ``X | None``, ``tuple[int, ...]``); the others are left to the dataclass' own checks.
    """
    for f in fields(obj):
        v, kinds = getattr(obj, f.name), [k.strip() for k in str(f.type).split("|")]
        if v is None and "None" in kinds:
            continue
        is_int = lambda x: isinstance(x, Integral) and not isinstance(x, bool)  # noqa: E731
        ok, want = {
            "int": (is_int(v), "an integer"),
            "float": (isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
            "bool": (isinstance(v, bool), "true or false"),
            "str": (isinstance(v, str), "a string"),
        }.get(kinds[0], (True, ""))
        if kinds[0].startswith("tuple"):
            ok, want = isinstance(v, (list, tuple)) and all(map(is_int, v)), "a list of integers"
        if not ok:
            raise ValueError(f"{label}{f.name} must be {want}{' or null' if 'None' in kinds else ''}, got {v!r}")


def n_frames(n_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
    """Frames for ``n_samples`` samples (2 s at 16 kHz with the defaults: 81)."""
    if config.center:
        return 1 + n_samples // config.hop_length
    return 1 + (n_samples - config.n_fft) // config.hop_length


@lru_cache(maxsize=16)
def _basis_np(config: FeatureConfig) -> np.ndarray:
    return librosa.filters.mel(
        sr=config.sr,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
        htk=config.htk,
        norm=config.mel_norm,
    )


def mel_basis(config: FeatureConfig = FeatureConfig()) -> Tensor:
    """Librosa's mel filterbank, float32 ``[n_mels, n_fft // 2 + 1]``."""
    return torch.from_numpy(_basis_np(config).copy())


def _window(config: FeatureConfig) -> Tensor:
    win_length = config.win_length or config.n_fft
    w = librosa.filters.get_window(config.window, win_length, fftbins=True)
    w = librosa.util.pad_center(w, size=config.n_fft)  # as librosa.stft does
    return torch.from_numpy(w.astype(np.float32))


def _mel_points(config: FeatureConfig) -> Tensor:
    fmax = config.fmax if config.fmax is not None else config.sr / 2
    return torch.from_numpy(librosa.mel_frequencies(config.n_mels + 2, fmin=config.fmin, fmax=fmax, htk=config.htk))


def _bin_freqs(config: FeatureConfig) -> Tensor:
    return torch.from_numpy(librosa.fft_frequencies(sr=config.sr, n_fft=config.n_fft))


def warped_mel_filterbank(
    alpha: Tensor | float, config: FeatureConfig | None = None, fhi: float = DEFAULT_FHI
) -> Tensor:
    """Per-example VTLP mel filterbanks ``H_m(warp(f))``, float32 ``[B, n_mels, n_fft // 2 + 1]``.

    ``alpha``: ``[B]`` factors (or one float). Equal to librosa's basis exactly at ``alpha = 1``.
    The filter whose peak sat at ``c`` Hz now peaks at ``warp^-1(c)``, so the input energy at
    ``f`` is counted in the band of ``warp(f)``.
    """
    config = config or FeatureConfig()
    alpha = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1, 1)
    freqs = warp_frequencies(_bin_freqs(config)[None, :], alpha, config.sr, fhi)
    return filterbank_at(freqs, _mel_points(config), config.mel_norm)


def _as_batch(wave: Tensor | np.ndarray) -> Tensor:
    wave = torch.as_tensor(wave)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2:
        raise ValueError(f"expected a wave [B, N] or [N], got shape {tuple(wave.shape)}")
    return wave.float()  # the window and basis are float32


@lru_cache(maxsize=16)
def _bands(config: FeatureConfig, group: int = 16) -> tuple[tuple[int, int, int, int], ...]:
    """``(first_mel, end_mel, first_bin, end_bin)`` per group of ``group`` filters.

    A Slaney filter covers only the bins between its neighbours' centres, so the mel product
    runs group by group over the bins the group touches: 13 % of the dense multiply-adds at
    the paper's settings, the same sums (only zeros are skipped).
    """
    nz = _basis_np(config) > 0
    out = []
    for m in range(0, config.n_mels, group):
        cols = np.flatnonzero(nz[m : m + group].any(axis=0))
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 0)
        out.append((m, min(m + group, config.n_mels), lo, hi))
    return tuple(out)


# CPU batches are cut into chunks that stay in cache: per-window cost grows ~3x from 8 to 256.
_CPU_CHUNK = 32


def _compute(
    wave: Tensor,
    config: FeatureConfig,
    window: Tensor,
    basis: Tensor,
    mel_f: Tensor,
    bin_freqs: Tensor,
    warp: Tensor | None,
    fhi: float,
) -> Tensor:
    """The pipeline without normalisation: ``[B, N] -> [B, n_mels, frames]``."""
    if warp is not None:
        warp = torch.as_tensor(warp, device=wave.device).reshape(-1)
        if len(warp) != len(wave):
            raise ValueError(f"need one warp factor per example: {len(warp)} factors for {len(wave)} examples")
    if config.center and config.pad_mode in ("reflect", "circular") and wave.shape[-1] <= config.n_fft // 2:
        raise ValueError(
            f"pad_mode {config.pad_mode!r} pads {config.n_fft // 2} samples from inside the signal, which needs "
            f"more than that; got {wave.shape[-1]} samples ('constant' and 'replicate' take any length)"
        )
    if wave.device.type == "cpu" and len(wave) > _CPU_CHUNK:
        return torch.cat(
            [
                _compute(
                    wave[i : i + _CPU_CHUNK],
                    config,
                    window,
                    basis,
                    mel_f,
                    bin_freqs,
                    None if warp is None else warp[i : i + _CPU_CHUNK],
                    fhi,
                )
                for i in range(0, len(wave), _CPU_CHUNK)
            ]
        )
    spec = torch.stft(
        wave,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        window=window,
        center=config.center,
        pad_mode=config.pad_mode,
        return_complex=True,
    ).transpose(1, 2)  # [B, frames, freq]: torch computes frame by frame, so this is contiguous
    ri = torch.view_as_real(spec)
    power = torch.addcmul(ri[..., 0].square(), ri[..., 1], ri[..., 1])  # |X|^2 without a sqrt
    if config.power != 2.0:
        power = power.pow(config.power / 2.0)
    grad = power.requires_grad  # in-place and out= shortcuts only where autograd is not tracking
    if warp is None and grad:
        mel = torch.cat([power[..., lo:hi] @ basis[m0:m1, lo:hi].T for m0, m1, lo, hi in _bands(config)], dim=-1)
    elif warp is None:
        mel = power.new_empty(*power.shape[:-1], config.n_mels)
        for m0, m1, lo, hi in _bands(config):
            torch.matmul(power[..., lo:hi], basis[m0:m1, lo:hi].T, out=mel[..., m0:m1])
    else:
        # per-example filterbank H_m(warp(f)): energy at f lands in the band of warp(f)
        warped = warp_frequencies(bin_freqs[None, :], warp.to(bin_freqs.dtype)[:, None], config.sr, fhi)
        fb = filterbank_at(warped, mel_f, config.mel_norm).to(power.dtype)
        mel = torch.bmm(power, fb.transpose(1, 2))
    if config.log == "log10":
        mel = torch.log10(torch.clamp(mel, min=config.amin)) if grad else mel.clamp_(min=config.amin).log10_()
    return mel.transpose(1, 2).contiguous()


def normalize(
    x: Tensor,
    config: FeatureConfig,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    groups: Tensor | None = None,
) -> Tensor:
    """Apply ``config.norm`` to log-Mel ``x [B, n_mels, T]``.

    ``'dataset'`` needs ``mean``/``std [n_mels]``; ``'utterance'`` uses per-band statistics over
    all frames of the examples that share a ``groups [B]`` id (default: each example alone).
    """
    if config.norm == "none":
        return x
    if config.norm == "dataset":
        if mean is None or std is None:
            raise ValueError("norm='dataset' needs statistics: call LogMel.fit_stats(...) on training features first")
        return (x - mean[:, None].to(x)) / std[:, None].to(x).clamp_min(config.norm_eps)
    if groups is None:
        mu = x.mean(dim=2, keepdim=True)
        sd = x.std(dim=2, keepdim=True, unbiased=False)
    else:
        _, inv = torch.unique(torch.as_tensor(groups, device=x.device), return_inverse=True)
        n_g = int(inv.max()) + 1
        count = torch.zeros(n_g, device=x.device, dtype=x.dtype).index_add_(
            0, inv, torch.full_like(inv, x.shape[2], dtype=x.dtype)
        )
        s1 = torch.zeros(n_g, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, inv, x.sum(2))
        s2 = torch.zeros(n_g, x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, inv, x.square().sum(2))
        m = s1 / count[:, None]
        mu = m[inv][:, :, None]
        sd = (s2 / count[:, None] - m.square()).clamp_min(0).sqrt()[inv][:, :, None]
    return (x - mu) / sd.clamp_min(config.norm_eps)


def log_mel(
    wave: Tensor | np.ndarray,
    config: FeatureConfig = FeatureConfig(),
    warp: Tensor | None = None,
    *,
    fhi: float = DEFAULT_FHI,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    groups: Tensor | None = None,
) -> Tensor:
    """Log-Mel spectrogram of a batch of waveforms (functional twin of :class:`LogMel`).

    Parameters
    ----------
    wave : ``[B, N]`` or ``[N]`` samples at ``config.sr`` (torch or numpy).
    warp : optional VTLP factors ``[B]`` (``melwarp``); ``None`` = no warp.
    fhi : VTLP boundary frequency in Hz.
    mean, std, groups : normalisation inputs, see :func:`normalize`.

    Returns
    -------
    float32 ``[B, n_mels, frames]`` on ``wave``'s device (``[B, 128, 81]`` for 2 s at the defaults).
    """
    wave = _as_batch(wave)
    dev = wave.device
    x = _compute(
        wave,
        config,
        _window(config).to(dev),
        mel_basis(config).to(dev),
        _mel_points(config).to(dev),
        _bin_freqs(config).to(dev),
        warp,
        fhi,
    )
    return normalize(x, config, mean, std, groups)


class LogMel(nn.Module):
    """Batched log-Mel transform with optional per-example VTLP (``melwarp``).

    ``LogMel(config)(wave [B, N], warp_factors [B] | None) -> [B, n_mels, frames]``.
    The window, the mel basis and the dataset statistics are buffers, so ``.to(device)``
    moves them and ``state_dict()`` saves the statistics with the model.
    """

    def __init__(self, config: FeatureConfig = FeatureConfig(), fhi: float = DEFAULT_FHI):
        super().__init__()
        self.config = config
        self.fhi = float(fhi)
        self.register_buffer("window", _window(config), persistent=False)
        self.register_buffer("basis", mel_basis(config), persistent=False)
        # float64: the warped filterbank at factor 1 equals librosa's basis bit for bit
        self.register_buffer("mel_f", _mel_points(config), persistent=False)
        self.register_buffer("bin_freqs", _bin_freqs(config), persistent=False)
        self.register_buffer("mean", torch.zeros(config.n_mels))
        self.register_buffer("std", torch.ones(config.n_mels))
        self.register_buffer("fitted", torch.tensor(False))

    def forward(self, wave: Tensor, warp_factors: Tensor | None = None, groups: Tensor | None = None) -> Tensor:
        """``wave [B, N]`` (or ``[N]``) -> ``[B, n_mels, frames]``; see :func:`log_mel`."""
        x = self.raw(wave, warp_factors)
        return self.normalize(x, groups)

    def raw(self, wave: Tensor, warp_factors: Tensor | None = None) -> Tensor:
        """The log-Mel before normalisation (what training precomputes for dev and test windows)."""
        wave = _as_batch(wave).to(self.window.device)
        return _compute(wave, self.config, self.window, self.basis, self.mel_f, self.bin_freqs, warp_factors, self.fhi)

    def normalize(self, x: Tensor, groups: Tensor | None = None) -> Tensor:
        """Apply the configured normalisation to raw log-Mel ``x [B, n_mels, T]``."""
        if self.config.norm == "dataset" and not bool(self.fitted):
            raise RuntimeError(
                "LogMel(norm='dataset') has no statistics: call fit_stats(...) on training features first"
            )
        return normalize(x, self.config, self.mean, self.std, groups)

    @torch.no_grad()
    def fit_stats(self, features: Tensor | np.ndarray | Iterable[Tensor | np.ndarray]) -> "LogMel":
        """Fit per-band mean and std on raw log-Mel ``[B, n_mels, T]`` (a tensor or an iterable of them).

        Accumulates in float64 so streaming over a whole corpus stays exact. Returns ``self``.
        """
        if isinstance(features, (Tensor, np.ndarray)):
            features = [features]
        n, s1, s2 = (
            0,
            torch.zeros(self.config.n_mels, dtype=torch.float64),
            torch.zeros(self.config.n_mels, dtype=torch.float64),
        )
        for x in features:
            x = torch.as_tensor(x).to("cpu", torch.float64)
            if x.ndim != 3 or x.shape[1] != self.config.n_mels:
                raise ValueError(f"fit_stats expects [B, {self.config.n_mels}, T] log-Mel, got {tuple(x.shape)}")
            n += x.shape[0] * x.shape[2]
            s1 += x.sum((0, 2))
            s2 += x.square().sum((0, 2))
        if n == 0:
            raise ValueError("fit_stats got no frames")
        mean = s1 / n
        std = (s2 / n - mean.square()).clamp_min(0).sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())
        self.fitted.fill_(True)
        return self

    def extra_repr(self) -> str:
        c = self.config
        return f"sr={c.sr}, n_fft={c.n_fft}, hop={c.hop_length}, n_mels={c.n_mels}, log={c.log}, norm={c.norm}"

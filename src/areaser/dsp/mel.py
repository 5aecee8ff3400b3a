"""The mel scale and VTLP's piecewise-linear frequency warp, shared by the features and the augmentation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    pass


DEFAULT_FHI = 4800.0


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

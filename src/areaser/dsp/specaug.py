"""SpecAugment-style masking (Park et al., Interspeech 2019): blank bands of mel rows and frames.

Training only, on the log-Mel batch the model reads. Each example gets ``n_freq`` masks of
``0 .. freq_width - 1`` mel rows and ``n_time`` masks of ``0 .. time_width - 1`` frames, each
at a uniform position; masked cells take the example's own mean, so a mask carries no level
cue whatever the feature normalisation. Widths of 0 turn a kind of mask off (the default: the
paper has no masking).

>>> import torch
>>> x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
>>> y = spec_mask(x, MaskConfig(freq_width=3, n_freq=1), torch.Generator().manual_seed(0))
>>> y.shape == x.shape and bool((y != x).any())
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

__all__ = ["MaskConfig", "spec_mask"]


@dataclass(frozen=True)
class MaskConfig:
    """Mask sizes. ``freq_width`` in mel rows, ``time_width`` in frames (exclusive maxima)."""

    freq_width: int = 0
    n_freq: int = 2
    time_width: int = 0
    n_time: int = 2

    def __post_init__(self) -> None:
        if min(self.freq_width, self.n_freq, self.time_width, self.n_time) < 0:
            raise ValueError(f"mask widths and counts must be >= 0, got {asdict(self)}")

    @property
    def active(self) -> bool:
        return (self.freq_width > 1 and self.n_freq > 0) or (self.time_width > 1 and self.n_time > 0)

    def to_dict(self) -> dict:
        return asdict(self)


def _band_mask(n_ex: int, size: int, width: int, count: int, g: torch.Generator) -> Tensor:
    """``[n_ex, size]`` bool: ``count`` bands per example of width ``U{0..width-1}`` at uniform starts."""
    pos = torch.arange(size)
    out = torch.zeros(n_ex, size, dtype=torch.bool)
    for _ in range(count):
        w = torch.randint(0, max(width, 1), (n_ex, 1), generator=g)
        start = (torch.rand(n_ex, 1, generator=g) * (size - w + 1)).floor().long()
        out |= (pos >= start) & (pos < start + w)
    return out


def spec_mask(x: Tensor, config: MaskConfig, generator: torch.Generator) -> Tensor:
    """Masked copy of log-Mel ``x [B, n_mels, T]`` (``x`` itself when no mask is active).

    The random draws come from ``generator`` (CPU), so a step's masks are a function of its seed.
    """
    if not config.active:
        return x
    b, f, t = x.shape
    m = torch.zeros(b, f, t, dtype=torch.bool)
    if config.freq_width > 1:
        m |= _band_mask(b, f, min(config.freq_width, f), config.n_freq, generator)[:, :, None]
    if config.time_width > 1:
        m |= _band_mask(b, t, min(config.time_width, t), config.n_time, generator)[:, None, :]
    fill = x.mean(dim=(1, 2), keepdim=True)
    return torch.where(m.to(x.device), fill, x)

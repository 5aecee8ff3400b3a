"""SpecAugment-style masks: whole mel rows / whole frames, contiguous, at most the width, example's mean."""

from __future__ import annotations

import torch

from areaser.dsp.specaug import MaskConfig, spec_mask


def _masked(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y != x


def test_frequency_masks_blank_whole_contiguous_rows_with_the_example_mean():
    torch.manual_seed(0)
    x = torch.randn(64, 16, 10) + 5.0
    y = spec_mask(x, MaskConfig(freq_width=4, n_freq=1), torch.Generator().manual_seed(1))
    m = _masked(x, y)
    rows = m.any(dim=2)
    assert torch.equal(rows, m.all(dim=2))  # a masked row is masked in every frame
    widths = rows.sum(1)
    assert widths.max() <= 3 and widths.max() == 3 and (widths == 0).any()  # U{0..3}: all sizes occur in 64 draws
    for i in range(len(x)):
        r = torch.nonzero(rows[i]).flatten()
        if len(r):
            assert r[-1] - r[0] + 1 == len(r)  # contiguous
            assert torch.allclose(y[i][m[i]], x[i].mean().expand(int(m[i].sum())))


def test_time_masks_blank_whole_frames_and_are_a_function_of_the_seed():
    x = torch.randn(8, 16, 40)
    cfg = MaskConfig(time_width=6, n_time=2)
    a = spec_mask(x, cfg, torch.Generator().manual_seed(3))
    b = spec_mask(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    m = _masked(x, a)
    assert torch.equal(m.any(dim=1), m.all(dim=1))
    assert m.any(dim=1).sum(1).max() <= 10  # two masks of at most 5 frames


def test_masks_off_by_default_return_the_input():
    x = torch.randn(2, 8, 8)
    assert spec_mask(x, MaskConfig(), torch.Generator()) is x
    assert not MaskConfig().active and not MaskConfig(freq_width=1).active

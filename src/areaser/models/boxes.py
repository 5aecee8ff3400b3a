"""Box reductions of a grid: every window of up to ``max_h x max_w`` cells, one elementwise op each.

Shared by the eager attention paths (:mod:`areaser.models.attention`) and the traced blocks that
``torch.compile`` fuses (:mod:`areaser.models.attention_fused`); plain torch ops, so both can use them.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

__all__ = ["box_chain", "combine"]


def box_chain(x: Tensor, max_h: int, max_w: int, op: str = "mean") -> Iterator[tuple[tuple[int, int], Tensor]]:
    """Yield ``((h, w), y)``: box means, sums or maxima (``op``) of x over dims 1 and 2.

    x is ``[N, H, W, ...]``; y is ``[N, H-h+1, W-w+1, ...]`` with ``y[:, i, j]`` the reduction of
    ``x[:, i:i+h, j:j+w]``. Shapes come width-major (w outer), only those that fit. Each window is
    built from the one a cell smaller with one elementwise op, so the cost is one pass per shape
    and there are no large prefix sums (summed-area tables) to lose precision.
    """
    H, W = x.shape[1], x.shape[2]
    row = x
    for w in range(1, min(max_w, W) + 1):
        if w > 1:
            row = combine(row[:, :, :-1], x[:, :, w - 1 :], w, op)
        col = row
        for h in range(1, min(max_h, H) + 1):
            if h > 1:
                col = combine(col[:, :-1], row[:, h - 1 :], h, op)
            yield (h, w), col


def combine(smaller: Tensor, new: Tensor, count: int, op: str) -> Tensor:
    """Reduction over ``count`` cells from the one over ``count - 1`` cells and the new cell."""
    if op == "mean":
        return torch.lerp(smaller, new, 1.0 / count)  # running mean: one pass
    return smaller + new if op == "sum" else torch.maximum(smaller, new)

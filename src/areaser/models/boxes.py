"""Box reductions of a grid: every window of up to ``max_h x max_w`` cells, one elementwise op each.

Shared by the eager attention paths (:mod:`areaser.models.attention`) and the traced blocks that
``torch.compile`` fuses (:mod:`areaser.models.attention_fused`); plain torch ops, so both can use them.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

__all__ = ["box_chain", "box_chain_adjoint", "combine"]


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


def box_chain_adjoint(g: dict[tuple[int, int], Tensor], op: str = "mean") -> Tensor:
    """Adjoint of :func:`box_chain` (``op`` mean or sum): ``sum_s box_s^T(g[s])``, ``[N, H, W, ...]``, out of place.

    ``g[(h, w)]`` has the shape of that shape's box reductions, for every shape of a chain up to
    ``max(h) x max(w)``. The chain run backwards with pads instead of writes into slices: what tracing
    and ONNX export record as plain ops (Pad, Mul, Add), for any batch size and width. The in-place
    twin the eager fast path uses, without an allocation per shape, is ``areas._box_adjoint``.
    """
    mh = max(h for h, _ in g)
    mw = max(w for _, w in g)
    new_part, old_part = (lambda c: 1.0 / c, lambda c: (c - 1) / c) if op == "mean" else (lambda c: 1.0, lambda c: 1.0)
    lead = (0, 0) * (g[(1, 1)].dim() - 3)  # dims after H and W are not padded

    def pad_h(x: Tensor, top: int, bottom: int) -> Tensor:
        return torch.nn.functional.pad(x, (*lead, 0, 0, top, bottom))

    def pad_w(x: Tensor, left: int, right: int) -> Tensor:
        return torch.nn.functional.pad(x, (*lead, left, right))

    rows: dict[int, Tensor] = {}
    for w in range(1, mw + 1):
        acc, grad_row = g[(mh, w)], None
        for h in range(mh, 1, -1):  # col_h = combine(col_{h-1}[:, :-1], row[:, h-1:])
            part = pad_h(acc * new_part(h), h - 1, 0)
            grad_row = part if grad_row is None else grad_row + part
            acc = g[(h - 1, w)] + pad_h(acc * old_part(h), 0, 1)
        rows[w] = acc if grad_row is None else grad_row + acc
    acc, out = rows[mw], None
    for w in range(mw, 1, -1):  # row_w = combine(row_{w-1}[:, :, :-1], x[:, :, w-1:])
        part = pad_w(acc * new_part(w), w - 1, 0)
        out = part if out is None else out + part
        acc = rows[w - 1] + pad_w(acc * old_part(w), 0, 1)
    return acc if out is None else out + acc

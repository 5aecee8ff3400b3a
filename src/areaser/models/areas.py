"""Areas of a 2-D memory: their shapes, counts, box means, maxima and keys (the functional core)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from areaser.models.boxes import box_chain

KEY_MODES = ("mean", "max", "sample", "concat", "max_concat", "sum", "sample_concat", "sample_sum")
LEARNED_KEY_MODES = ("concat", "max_concat", "sum", "sample_concat", "sample_sum")
VALUE_MODES = ("sum", "mean", "max")
LAYOUTS = ("2d", "rows")


# ----------------------------------------------------------------------------- shapes and counts


def _pair(max_area: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(max_area, int):
        max_area = (1, max_area)
    h, w = (int(a) for a in max_area)
    if h < 1 or w < 1:
        raise ValueError(f"max_area must be >= (1, 1), got {(h, w)}")
    return h, w


def area_shapes(height: int, width: int, max_area: int | tuple[int, int]) -> list[tuple[int, int]]:
    """Area shapes ``(h, w)`` that fit a ``height x width`` grid, in tensor2tensor order (h outer).

    ``max_area`` is ``(max_h, max_w)``; an int means ``(1, max_w)``.
    """
    max_h, max_w = _pair(max_area)
    return [(h, w) for h in range(1, min(max_h, height) + 1) for w in range(1, min(max_w, width) + 1)]


def count_areas(height: int, width: int, max_area: int | tuple[int, int], layout: str = "2d") -> int:
    """Number of areas one query's softmax runs over on a ``height x width`` map.

    ``layout="rows"``: areas inside one row (``max_h`` is ignored). Examples: rows of 20 with
    max width 1..5 give 20, 39, 57, 74, 90; ``"2d"`` 64 x 20 with 3 x 3 gives 10,773.
    """
    _check_layout(layout)
    if layout == "rows":
        height, max_area = 1, (1, _pair(max_area)[1])
    return sum((height - h + 1) * (width - w + 1) for h, w in area_shapes(height, width, max_area))


def _area_sizes(height: int, width: int, max_area, device=None) -> tuple[Tensor, Tensor]:
    """Heights and widths ``[A]`` (int64) of every area, tensor2tensor order."""
    shapes = area_shapes(height, width, max_area)
    counts = torch.tensor([(height - h + 1) * (width - w + 1) for h, w in shapes], device=device)
    hs = torch.tensor([h for h, _ in shapes], device=device)
    ws = torch.tensor([w for _, w in shapes], device=device)
    return hs.repeat_interleave(counts), ws.repeat_interleave(counts)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


# ----------------------------------------------------------------------------- box operations


def _box_adjoint(g: dict[tuple[int, int], Tensor], H: int, W: int, op: str = "mean") -> Tensor:
    """Adjoint of ``box_chain(op)`` for ``op`` mean or sum: ``sum_s box_s^T(g[s])``, ``[N, H, W, ...]``.

    ``g[(h, w)]`` has the shape of that shape's box reductions; every tensor in g is overwritten
    (the caller owns them). Runs the chain backwards: two elementwise ops per shape.
    """
    mh = max(h for h, _ in g)
    mw = max(w for _, w in g)
    ref = g[(1, 1)]
    new_part, old_part = (lambda c: 1.0 / c, lambda c: (c - 1) / c) if op == "mean" else (lambda c: 1.0, lambda c: 1.0)
    rows: dict[int, Tensor] = {}
    for w in range(1, mw + 1):
        acc = g[(mh, w)]
        grad_row = None
        for h in range(mh, 1, -1):  # col_h = combine(col_{h-1}[:-1], row[h-1:])
            if grad_row is None:
                grad_row = ref.new_zeros((ref.shape[0], H, W - w + 1, *ref.shape[3:]))
            grad_row[:, h - 1 :].add_(acc, alpha=new_part(h))
            prev = g[(h - 1, w)]
            prev[:, : H - h + 1].add_(acc, alpha=old_part(h))
            acc = prev
        rows[w] = acc if grad_row is None else grad_row.add_(acc)
    acc = rows[mw]
    out = None
    for w in range(mw, 1, -1):  # row_w = combine(row_{w-1}[:, :, :-1], x[:, :, w-1:])
        if out is None:
            out = ref.new_zeros((ref.shape[0], H, W, *ref.shape[3:]))
        out[:, :, w - 1 :].add_(acc, alpha=new_part(w))
        prev = rows[w - 1]
        prev[:, :, : W - w + 1].add_(acc, alpha=old_part(w))
        acc = prev
    return acc if out is None else out.add_(acc)


def _grid(memory: Tensor, height: int) -> Tensor:
    """``[N, L, D]`` -> ``[N, height, L / height, D]`` (row-major positions), with a clear error."""
    if memory.dim() != 3:
        raise ValueError(f"memory must be [batch, length, depth], got shape {tuple(memory.shape)}")
    n, length, d = memory.shape
    if height < 1 or length % height:
        raise ValueError(f"memory length {length} is not a multiple of height {height}")
    return memory.reshape(n, height, length // height, d)


def _t2t_order(boxes: dict[tuple[int, int], Tensor], n: int, d: int) -> Tensor:
    """Concatenate per-shape maps ``[N, H', W', D]`` into ``[N, A, D]`` in tensor2tensor order."""
    return torch.cat([boxes[s].reshape(n, -1, d) for s in sorted(boxes)], dim=1)


# ----------------------------------------------------------------------------- area features


class AreaFeatures(NamedTuple):
    """Per-area statistics, tensor2tensor order. Tensors ``[N, A, D]``; heights/widths ``[A]`` int64."""

    sum: Tensor
    mean: Tensor
    std: Tensor
    heights: Tensor
    widths: Tensor


def area_features(memory: Tensor, height: int, max_area: int | tuple[int, int], epsilon: float = 1e-6) -> AreaFeatures:
    """Sum, mean, std, height and width of every area of a memory ``[N, L, D]``.

    The memory is viewed as ``[height, L / height]``; areas go up to ``max_area = (max_h, max_w)``
    (an int means ``(1, max_w)``). ``std = sqrt(|E[x^2] - mean^2| + epsilon)`` as in tensor2tensor.
    Differentiable.
    """
    grid = _grid(memory, height)
    n, H, W, d = grid.shape
    mh, mw = _pair(max_area)
    means = dict(box_chain(grid, mh, mw, "mean"))
    squares = dict(box_chain(grid * grid, mh, mw, "mean"))
    mean = _t2t_order(means, n, d)
    mean_sq = _t2t_order(squares, n, d)
    heights, widths = _area_sizes(H, W, (mh, mw), memory.device)
    size = (heights * widths).to(memory.dtype)[:, None]
    std = torch.sqrt(torch.abs(mean_sq - mean * mean) + epsilon)
    return AreaFeatures(mean * size, mean, std, heights, widths)


def area_max(memory: Tensor, height: int, max_area: int | tuple[int, int]) -> Tensor:
    """Elementwise maximum over every area of a memory ``[N, L, D]`` -> ``[N, A, D]`` (t2t order)."""
    grid = _grid(memory, height)
    n, _, _, d = grid.shape
    return _t2t_order(dict(box_chain(grid, *_pair(max_area), "max")), n, d)


class AreaKeyNet(nn.Module):
    """Learned area keys (tensor2tensor's modes concat, max_concat, sum, sample_concat, sample_sum).

    Height and width embeddings (``dim // 2`` each) join the area statistics, then a 2-layer MLP
    (``Linear -> ReLU -> Linear``, width ``dim``) maps them to a key of size ``dim``.
    """

    def __init__(self, dim: int, mode: str, max_area: int | tuple[int, int]):
        super().__init__()
        if mode not in LEARNED_KEY_MODES:
            raise ValueError(f"AreaKeyNet mode must be one of {LEARNED_KEY_MODES}, got {mode!r}")
        half = dim // 2
        if mode in ("sum", "sample_sum") and 2 * half != dim:
            raise ValueError(f"key mode {mode!r} adds a size embedding of 2 * (dim // 2): dim must be even, got {dim}")
        mh, mw = _pair(max_area)
        self.mode = mode
        self.height_embed = nn.Embedding(mh, half)
        self.width_embed = nn.Embedding(mw, half)
        in_features = {"concat": 2 * dim + 2 * half, "max_concat": dim + 2 * half, "sum": dim,
                       "sample_concat": dim + 2 * half, "sample_sum": dim}[mode]  # fmt: skip
        self.mlp = nn.Sequential(nn.Linear(in_features, dim), nn.ReLU(), nn.Linear(dim, dim))

    def size_embedding(self, heights: Tensor, widths: Tensor) -> Tensor:
        """``[A]`` heights and widths -> ``[A, 2 * (dim // 2)]``."""
        return torch.cat([self.height_embed(heights - 1), self.width_embed(widths - 1)], dim=-1)

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(features)


def area_keys(
    k: Tensor,
    height: int,
    max_area: int | tuple[int, int],
    mode: str = "mean",
    noise: bool = False,
    key_net: AreaKeyNet | None = None,
) -> Tensor:
    """Area keys ``[N, A, D]`` of keys ``[N, L, D]`` for a key mode (tensor2tensor semantics).

    ``noise``: add ``std * N(0, 1)`` to the mean for the sample modes (training time in t2t).
    Learned modes need ``key_net`` (an :class:`AreaKeyNet` of that mode).
    """
    if mode not in KEY_MODES:
        raise ValueError(f"key mode must be one of {KEY_MODES}, got {mode!r}")
    if mode == "max":
        return area_max(k, height, max_area)
    feats = area_features(k, height, max_area)
    mean = feats.mean
    if mode.startswith("sample") and noise:
        mean = mean + feats.std * torch.randn_like(feats.std)
    if mode in ("mean", "sample"):
        return mean
    if key_net is None or key_net.mode != mode:
        raise ValueError(f"key mode {mode!r} is learned: pass key_net=AreaKeyNet(dim, {mode!r}, max_area)")
    size = key_net.size_embedding(feats.heights, feats.widths).to(k.dtype).expand(k.shape[0], -1, -1)
    if mode == "concat":
        x = torch.cat([mean, feats.std, size], dim=-1)
    elif mode == "max_concat":
        x = torch.cat([area_max(k, height, max_area), size], dim=-1)
    elif mode == "sum":
        x = size + mean + feats.std
    elif mode == "sample_concat":
        x = torch.cat([mean, size], dim=-1)
    else:  # sample_sum
        x = mean + size
    return key_net(x)

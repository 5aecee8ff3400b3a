"""Multiscale area attention (Li et al., ICML 2019), exact and fast.

An *area* is a rectangle of adjacent memory positions. The memory ``[B, L, D]`` is viewed as a
grid ``[height, L / height]`` and every rectangle of up to ``max_area = (max_h, max_w)`` cells is one
attention target: its key summarises the keys inside it (mean, max, mean + noise, or a learned MLP
of mean / std / size), its value sums (or averages, or max-pools) the values inside it, and the
softmax runs over all areas. Areas are ordered as in tensor2tensor: by shape (h outer, w inner),
then by top-left position, row-major.

Layouts of a feature map ``[B, C, H, W]`` (H = frequency, W = time):

* ``"2d"``: the memory is the whole H x W map, every rectangle is an area (the paper's text).
  64 x 20 with 3 x 3 areas: 10,773 areas.
* ``"rows"``: each frequency row is its own memory of 1 x W cells and its queries attend to 1-D
  time spans inside that row (what the authors' TF code computes: it passed the 4-D map as
  ``[batch, heads, length, depth]`` with ``memory_height=1``). ``max_h`` has no effect there.

Speed. With ``mean`` keys (``sample`` outside training is the same) an area's logit is the box
average of the per-position logits ``q . k_p``, and with ``sum`` / ``mean`` values the output is
``V`` weighted by the box-summed area weights. :class:`_LinearAreaAttention` uses both: it never
materialises area keys or values, computes box averages with one elementwise op per area shape,
works on blocks of (batch x queries) so memory stays bounded, and recomputes each block in the
backward pass (as flash attention does) instead of storing the weights. On CPU the blocks are
spread over ``torch.get_num_threads()`` Python threads that each run their ops serially, so a
busy machine that deschedules one thread does not stall every op. In training on maps of at least
256 positions (``backend="auto"``) each block instead runs as a few loops that ``torch.compile``
fuses (:mod:`areaser.attention_fused`: C++ on CPU, Triton on CUDA), about 2x faster on CPU, 3x
with dropout, where a compiler is found. Every other mode builds
the area keys/values with the same box operations, then attends in blocks that are recomputed
in the backward pass (activation checkpointing). tensor2tensor's key mode ``sum`` is a learned
mode (size embedding + mean + std through the MLP), so it takes the second route.

Exactness. Results equal brute-force enumeration of the areas up to rounding, with one deliberate
detail: area weights smaller than ``exp(log(tiny) / 2)`` times the largest weight (1e-19 in
float32) are raised to that value. The change is far below float precision, and it keeps the
arithmetic out of denormal numbers, which make CPUs about 100x slower.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from . import attention_fused
from .boxes import box_chain

__all__ = [
    "KEY_MODES",
    "LEARNED_KEY_MODES",
    "VALUE_MODES",
    "LAYOUTS",
    "BACKENDS",
    "AreaFeatures",
    "area_shapes",
    "count_areas",
    "area_features",
    "area_max",
    "area_keys",
    "area_attention",
    "AreaKeyNet",
    "AreaAttention",
]

KEY_MODES = ("mean", "max", "sample", "concat", "max_concat", "sum", "sample_concat", "sample_sum")
LEARNED_KEY_MODES = ("concat", "max_concat", "sum", "sample_concat", "sample_sum")
VALUE_MODES = ("sum", "mean", "max")
LAYOUTS = ("2d", "rows")
# How the fast path runs: "eager" (torch ops), "compiled" (fused kernels, attention_fused), or "auto":
# compiled when training on a memory of >= attention_fused.MIN_LENGTH positions and the machine can
# compile (a C++ compiler on CPU, Triton on CUDA), eager otherwise.
BACKENDS = ("auto", "eager", "compiled")

# Position logits per block of (batch x queries) on the fast path. CPU: a block's maps stay in
# cache (2**16 measured best of 2**14..2**18 on one thread); GPUs: blocks large enough to hide
# kernel launches. The generic path holds [block, areas] logits plus softmax and autograd copies.
FAST_BLOCK_ELEMENTS = {"cpu": 2**16, "cuda": 2**23}
GENERIC_BLOCK_ELEMENTS = 2**22


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


# ----------------------------------------------------------------------------- attention


def _floor(dtype: torch.dtype) -> float:
    """Smallest log-weight (relative to the largest) kept: half of log(tiny), e.g. -43.7 in float32."""
    return 0.5 * math.log(torch.finfo(dtype).tiny)


def _blocks(n: int, lq: int, per_query: int, budget: int) -> list[tuple[slice, slice]]:
    """(batch slice, query slice) blocks holding at most ~budget logits each (>= 1 query)."""
    nq = max(1, min(lq, budget // max(per_query, 1)))
    nb = max(1, min(n, budget // max(per_query * nq, 1)))
    return [(slice(b, min(b + nb, n)), slice(i, min(i + nq, lq))) for b in range(0, n, nb) for i in range(0, lq, nq)]


def _dropout_masks(drop: float, seed: int, device: torch.device) -> tuple[Callable[[Tensor], Tensor], float]:
    """A maker of boolean keep-masks, and the keep probability it realises.

    The maker replays exactly when rebuilt with the same seed.

    Each element compares 16 random bits with a threshold, so the drop probability is realised to
    1/65536 (0.5 exactly); the bits come 64 at a time from one integer draw, about 8x cheaper on
    CPU than ``bernoulli_``, which otherwise dominates the cost of attention dropout.
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    threshold = round((1.0 - drop) * 65536) - 32768  # keep where a uniform int16 < threshold

    def masks(like: Tensor) -> Tensor:
        n = like.numel()
        bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, generator=gen, device=like.device)
        return (bits.view(torch.int16)[:n] < threshold).view(like.shape)

    return masks, (threshold + 32768) / 65536


def _groups(n: int, lq: int, length: int, budget: int) -> list[list[tuple[slice, slice]]]:
    """Blocks of (batch, queries) grouped by batch slice: one worker owns a group's dk / dv rows."""
    groups: dict[int, list[tuple[slice, slice]]] = {}
    for bs, qs in _blocks(n, lq, length, budget):
        groups.setdefault(bs.start, []).append((bs, qs))
    return list(groups.values())


# torch.set_num_threads sets the calling thread's OpenMP / MKL team size *and* the process-wide
# count that every thread takes at its first torch op. The workers need the former (one each) but
# must not leave the latter at one, or a thread starting meanwhile (a service's) would run serially
# for good. So the workers are made once per process and thread count, the caller restoring the
# process-wide count as soon as they have set theirs, and are kept (no per-call thread start-up).
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_POOLS.clear)  # a forked child has none of the threads


def _workers(n: int) -> ThreadPoolExecutor:
    """``n`` started threads whose ops run serially, shared by every caller in this process."""
    with _POOLS_LOCK:
        if n not in _POOLS:
            pool = ThreadPoolExecutor(n, thread_name_prefix="area-attention")
            ready = threading.Barrier(n + 1)

            def start() -> None:
                torch.get_num_threads()  # a thread's first call takes the process-wide count: do it now,
                torch.set_num_threads(1)  # so that this one stays
                ready.wait()

            before = torch.get_num_threads()
            try:
                # while every task waits at the barrier no thread is idle, so each submit starts one
                started = [pool.submit(start) for _ in range(n)]
                ready.wait()
            finally:
                torch.set_num_threads(before)
            for f in started:
                f.result()
            _POOLS[n] = pool
        return _POOLS[n]


def _run_groups(fn: Callable[[int, slice, slice], None], groups: list, device: torch.device) -> None:
    """Run ``fn(index, batch, queries)`` on every block.

    On CPU the groups go to ``torch.get_num_threads()`` Python threads, each running its ops
    serially: no parallel region (and barrier) per op, which stalls whenever one thread is
    descheduled on a busy machine.
    """
    blocks = [(i, b) for i, b in enumerate(b for g in groups for b in g)]
    per_group, start = [], 0
    for g in groups:
        per_group.append(blocks[start : start + len(g)])
        start += len(g)

    inference = torch.is_inference_mode_enabled()

    def work(group):
        # autograd modes are per thread; inference_mode(False) turns grad mode on, so no_grad goes inside
        with torch.inference_mode(inference), torch.no_grad():
            for i, (bs, qs) in group:
                fn(i, bs, qs)

    threads = torch.get_num_threads() if device.type == "cpu" else 1
    if threads > 1 and len(groups) > 1:
        list(_workers(threads).map(work, per_group))
    else:
        for group in per_group:
            work(group)


def _fused(backend: str, q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether the fast path runs compiled kernels (see :data:`BACKENDS`)."""
    if backend == "eager" or torch.compiler.is_compiling():  # inside a compiled model: its compiler fuses
        return False
    if backend == "compiled":
        can, why = attention_fused.available(q.device)
        if not can:
            raise RuntimeError(f"area attention backend 'compiled' is not available here: {why}; use 'eager'")
        return True
    training = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return training and k.shape[1] >= attention_fused.MIN_LENGTH and attention_fused.available(q.device)[0]


class _LinearAreaAttention(torch.autograd.Function):
    """Mean keys, sum/mean values: attention over every area without materialising areas.

    Per block of queries: ``s = f * k q^T - m`` per position ``[nb, H, W, n]`` (queries innermost so
    every box op is a long vectorised loop), box means give the area logits shape by shape, their
    exponentials sum to the softmax denominator and scatter back (the adjoint box op) onto the
    positions as ``P``; the output is ``P^T v / denominator``. ``m`` is the largest position logit,
    which is also the largest area logit (a 1 x 1 area), so the exponentials never overflow.
    Backward recomputes each block and uses ``delta = dO . O`` for the softmax Jacobian.
    Dropout masks come from a generator seeded per call and block, so backward replays them
    whatever thread runs the block; their 1 / keep scale is applied once per block.
    """

    @staticmethod
    def forward(ctx, q, k, v, height, max_h, max_w, factor, value_mean, dropout, seed, budget, fused):
        ctx.args = (height, max_h, max_w, factor, value_mean, dropout, seed, budget, fused)
        if fused:  # the torch.compile backend of attention_fused, or None
            out, shift, log_den = attention_fused.forward(q, k, v, *ctx.args)
            ctx.save_for_backward(q, k, v, out, shift, log_den)
            return out
        n, lq, _ = q.shape
        length = k.shape[1]
        H, W = height, length // height
        value_op = "mean" if value_mean else "sum"
        floor = _floor(q.dtype)
        out = q.new_empty((n, lq, v.shape[-1]))
        shift = q.new_empty((n, lq))
        log_den = q.new_empty((n, lq))

        def block(i: int, bs: slice, qs: slice) -> None:
            masks, keep = _dropout_masks(dropout, seed + i, q.device) if dropout > 0 else (None, 1.0)
            s = torch.matmul(k[bs], q[bs, qs].transpose(1, 2)).mul_(factor)  # [nb, L, nq]
            m = s.amax(dim=1)
            s = s.sub_(m[:, None, :]).view(s.shape[0], H, W, -1)
            clamp = bool(s.amin() < floor)  # box means >= the smallest position logit
            den = torch.zeros_like(m)
            weights = {}
            for shape, mean in box_chain(s, max_h, max_w):
                e = mean.clamp_min(floor).exp_() if clamp else mean.exp()
                den += e.sum(dim=(1, 2))
                weights[shape] = e.mul_(masks(e)) if masks is not None else e
            scale = den if masks is None else den * keep
            p = _box_adjoint(weights, H, W, value_op).div_(scale[:, None, None, :])
            out[bs, qs] = torch.matmul(p.view(p.shape[0], length, -1).transpose(1, 2), v[bs])
            shift[bs, qs] = m
            log_den[bs, qs] = den.log()

        _run_groups(block, _groups(n, lq, length, budget), q.device)
        ctx.save_for_backward(q, k, v, out, shift, log_den)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, shift, log_den = ctx.saved_tensors
        height, max_h, max_w, factor, value_mean, dropout, seed, budget, fused = ctx.args
        if fused:
            grads = attention_fused.backward(q, k, v, grad_out, out, shift, log_den, *ctx.args)
            return (*grads, None, None, None, None, None, None, None, None, None)
        n, lq, _ = q.shape
        length = k.shape[1]
        H, W = height, length // height
        value_op = "mean" if value_mean else "sum"
        floor = _floor(q.dtype)
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)

        def block(i: int, bs: slice, qs: slice) -> None:
            masks, keep = _dropout_masks(dropout, seed + i, q.device) if dropout > 0 else (None, 1.0)
            go = grad_out[bs, qs]  # [nb, nq, Dv]
            # box means of s are the areas' log softmax weights (forward's shift and log-denominator)
            s = torch.matmul(k[bs], q[bs, qs].transpose(1, 2)).mul_(factor)
            s = s.sub_((shift[bs, qs] + log_den[bs, qs])[:, None, :]).view(s.shape[0], H, W, -1)
            low = (floor - log_den[bs, qs])[:, None, None, :]  # forward's clamp, same offset
            clamp = bool((s.amin(dim=(1, 2), keepdim=True) < low).any())
            gp = torch.matmul(v[bs], go.transpose(1, 2)).view_as(s)  # dL/dP per position
            delta = (go * out[bs, qs]).sum(-1)[:, None, None, :]  # sum_a w_a dL/dw_a
            if masks is not None:  # dL/dw = mask * box(gp) / keep: fold 1/keep into gp
                gp = gp.mul_(1.0 / keep)
            elif value_mean:  # box means of (gp - delta) are dL/dw - delta directly
                gp = gp.sub_(delta)
            scatter, grad_logit = {}, {}
            chains = zip(box_chain(s, max_h, max_w), box_chain(gp, max_h, max_w, value_op))
            for (shape, mean), (_, g) in chains:
                wgt = torch.clamp(mean, min=low).exp_() if clamp else mean.exp()  # softmax weights
                if masks is not None:
                    mask = masks(wgt)
                    grad_logit[shape] = torch.mul(g, mask).sub_(delta).mul_(wgt)
                    scatter[shape] = wgt.mul_(mask)
                else:
                    grad_logit[shape] = wgt * g if value_mean else (g - delta).mul_(wgt)
                    scatter[shape] = wgt
            p = _box_adjoint(scatter, H, W, value_op).view(s.shape[0], length, -1)
            if masks is not None:
                p = p.mul_(1.0 / keep)
            ds = _box_adjoint(grad_logit, H, W, "mean").view(s.shape[0], length, -1).mul_(factor)
            dq[bs, qs] = torch.matmul(ds.transpose(1, 2), k[bs])
            dk[bs] += torch.matmul(ds, q[bs, qs])
            dv[bs] += torch.matmul(p, go)

        _run_groups(block, _groups(n, lq, length, budget), q.device)
        return dq, dk, dv, None, None, None, None, None, None, None, None, None


def _attend_block(q, k_area, v_area, factor, top_k, dropout):
    """Attention of queries ``[N, n, D]`` over materialised areas ``[N, A, D]``, ``[N, A, Dv]``."""
    logits = torch.matmul(q, k_area.transpose(1, 2)) * factor
    logits = (logits - logits.amax(-1, keepdim=True).detach()).clamp_min(_floor(q.dtype))
    weights = logits.softmax(-1)
    if top_k > 0 and top_k < weights.shape[-1]:
        kth = weights.topk(top_k, dim=-1).values[..., -1:]
        weights = torch.where(weights >= kth, weights, torch.zeros_like(weights))
        weights = weights / weights.sum(-1, keepdim=True)
    if dropout > 0:  # seeded from the global RNG, which checkpointing replays for the backward
        masks, keep = _dropout_masks(dropout, int(torch.randint(0, 2**62, (1,)).item()), q.device)
        weights = weights * masks(weights) / keep
    return torch.matmul(weights, v_area)


def _exporting() -> bool:
    return bool(getattr(torch.compiler, "is_exporting", lambda: False)())  # torch >= 2.5


def _attend_whole(q, k, v, height, max_h, max_w, factor, key_mode, value_mode, top_k, noisy, key_net) -> Tensor:
    """Area attention with every area materialised, no blocks and no data-dependent branches.

    This is what tracing and export (TorchScript, ``torch.export``, ONNX) can record for any batch size and input
    length.
    """
    n, _, d = k.shape
    gk, gv = k.reshape(n, height, -1, d), v.reshape(n, height, -1, v.shape[-1])
    if key_mode in ("mean", "sample") and not noisy:
        k_area = _t2t_order(dict(box_chain(gk, max_h, max_w, "mean")), n, d)
    else:
        k_area = area_keys(k, height, (max_h, max_w), key_mode, noisy, key_net)
    v_area = _t2t_order(dict(box_chain(gv, max_h, max_w, value_mode)), n, v.shape[-1])
    return _attend_block(q, k_area, v_area, factor, top_k, 0.0)


def area_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    height: int = 1,
    *,
    max_area: int | tuple[int, int] = (1, 1),
    key_mode: str = "mean",
    value_mode: str = "sum",
    temperature: float = 1.0,
    scale: bool = False,
    top_k: int = 0,
    dropout: float = 0.0,
    sample_noise: bool = False,
    key_net: AreaKeyNet | None = None,
    block_elements: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """Area attention of queries over every area of a memory (tensor2tensor semantics).

    Args:
        q: queries ``[..., Lq, D]``; k: keys ``[..., L, D]``; v: values ``[..., L, Dv]``.
        height: memory height; the memory is viewed as ``[height, L / height]`` (1 = a sequence).
        max_area: largest area ``(max_h, max_w)``; an int means ``(1, max_w)``.
        key_mode: one of :data:`KEY_MODES`; value_mode: one of :data:`VALUE_MODES`.
        temperature: logits are divided by it (t2t's ``area_temperature``).
        scale: also multiply logits by ``1 / sqrt(D)`` (t2t leaves that to the caller).
        top_k: keep only the ``top_k`` largest weights per query, renormalised (0 = all).
        dropout: probability of dropping each area weight. Applied whenever > 0: the caller
            decides train vs eval.
        sample_noise: add ``std * N(0, 1)`` to area means for the sample key modes.
        key_net: the :class:`AreaKeyNet` for learned key modes.
        block_elements: most logits held at once (bounds peak memory; default per path).
        backend: one of :data:`BACKENDS`, for the fast path (mean / sample keys, sum / mean values,
            no top-k): ``"compiled"`` fuses each block with ``torch.compile`` (10-30 s per kernel on
            first use, then about 2x faster on CPU), ``"eager"`` runs torch ops, ``"auto"`` compiles
            when training on a memory of at least ``attention_fused.MIN_LENGTH`` positions on a
            machine that can.

    Returns
    -------
        ``[..., Lq, Dv]``. Half-precision inputs are computed in float32.
    """
    if key_mode not in KEY_MODES:
        raise ValueError(f"key_mode must be one of {KEY_MODES}, got {key_mode!r}")
    if value_mode not in VALUE_MODES:
        raise ValueError(f"value_mode must be one of {VALUE_MODES}, got {value_mode!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    max_h, max_w = _pair(max_area)
    lead, length = q.shape[:-2], k.shape[-2]
    if height < 1 or length % height:
        raise ValueError(f"memory length {length} is not a multiple of height {height}")
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):  # exp/box sums need float32 range and precision
        q, k, v = q.float(), k.float(), v.float()
    q, k, v = q.reshape(-1, *q.shape[-2:]), k.reshape(-1, *k.shape[-2:]), v.reshape(-1, *v.shape[-2:])
    factor = (1.0 / math.sqrt(q.shape[-1]) if scale else 1.0) / temperature

    noisy = key_mode.startswith("sample") and sample_noise
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or _exporting():
        if dropout > 0:
            raise ValueError("attention dropout cannot be exported: export in eval mode, without dropout_at_eval")
        out = _attend_whole(q, k, v, height, max_h, max_w, factor, key_mode, value_mode, top_k, noisy, key_net)
    elif key_mode in ("mean", "sample") and not noisy and value_mode != "max" and top_k == 0:
        seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout > 0 else 0
        fused = _fused(backend, q, k, v)
        budget = block_elements or (attention_fused.BLOCK_ELEMENTS if fused else FAST_BLOCK_ELEMENTS).get(
            q.device.type, FAST_BLOCK_ELEMENTS["cuda"]
        )
        out = _LinearAreaAttention.apply(
            q, k, v, height, max_h, max_w, factor, value_mode == "mean", dropout, seed, budget,
            "inductor" if fused else None,
        )  # fmt: skip
    else:
        k_area = area_keys(k, height, (max_h, max_w), key_mode, noisy, key_net)
        if value_mode == "max":
            v_area = area_max(v, height, (max_h, max_w))
        else:
            feats = area_features(v, height, (max_h, max_w))
            v_area = feats.mean if value_mode == "mean" else feats.sum
        blocks = _blocks(q.shape[0], q.shape[1], k_area.shape[1], block_elements or GENERIC_BLOCK_ELEMENTS)
        recompute = torch.is_grad_enabled() and len(blocks) > 1  # keep one block's graph at a time
        out = q.new_empty((q.shape[0], q.shape[1], v.shape[-1]))
        for bs, qs in blocks:
            args = (q[bs, qs], k_area[bs], v_area[bs], factor, top_k, dropout)
            out[bs, qs] = checkpoint(_attend_block, *args, use_reentrant=False) if recompute else _attend_block(*args)
    return out.reshape(*lead, q.shape[1], v.shape[-1]).to(dtype)


class AreaAttention(nn.Module):
    """Self area attention over a feature map ``[B, C, H, W]`` -> ``[B, C, H, W]``.

    Queries, keys and values are the map's positions (optionally projected). See the module
    docstring for the ``layout`` choices and :func:`area_attention` for the arguments it shares.

    Args:
        dim: channels C.
        max_area: largest area ``(max_h, max_w)``.
        layout: ``"2d"`` (every rectangle of the map) or ``"rows"`` (1-D spans in each row).
        scale: multiply logits by ``1 / sqrt(head_dim)``.
        project: learn Q/K/V projections (``dim -> heads * head_dim``) and an output projection.
        heads: attention heads; without projections the channels are split between them.
        head_dim: per-head size with projections (default ``dim // heads``).
        dropout: attention dropout on the area weights, in training mode only unless
            ``dropout_at_eval`` (the authors' code hard-codes ``training=True``).
        sample_at_eval: keep the sample modes' noise outside training too (authors' code).
        backend: one of :data:`BACKENDS` (see :func:`area_attention`).
    """

    def __init__(
        self,
        dim: int,
        *,
        key_mode: str = "mean",
        value_mode: str = "sum",
        max_area: int | tuple[int, int] = (3, 3),
        layout: str = "2d",
        temperature: float = 1.0,
        top_k: int = 0,
        scale: bool = False,
        project: bool = False,
        heads: int = 1,
        head_dim: int | None = None,
        dropout: float = 0.0,
        dropout_at_eval: bool = False,
        sample_at_eval: bool = False,
        block_elements: int | None = None,
        backend: str = "auto",
    ):
        super().__init__()
        _check_layout(layout)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if key_mode not in KEY_MODES:
            raise ValueError(f"key_mode must be one of {KEY_MODES}, got {key_mode!r}")
        if value_mode not in VALUE_MODES:
            raise ValueError(f"value_mode must be one of {VALUE_MODES}, got {value_mode!r}")
        if heads < 1 or (not project and dim % heads):
            raise ValueError(f"without projections dim ({dim}) must split evenly into heads ({heads})")
        self.dim, self.heads = dim, heads
        self.head_dim = (head_dim or dim // heads) if project else dim // heads
        self.key_mode, self.value_mode, self.layout = key_mode, value_mode, layout
        self.max_area = _pair(max_area)
        self.temperature, self.top_k, self.scale = temperature, top_k, scale
        self.dropout, self.dropout_at_eval, self.sample_at_eval = dropout, dropout_at_eval, sample_at_eval
        self.block_elements, self.backend = block_elements, backend
        inner = heads * self.head_dim
        self.q_proj = nn.Linear(dim, inner) if project else None
        self.k_proj = nn.Linear(dim, inner) if project else None
        self.v_proj = nn.Linear(dim, inner) if project else None
        self.out_proj = nn.Linear(inner, dim) if project else None
        learned = key_mode in LEARNED_KEY_MODES
        self.key_net = AreaKeyNet(self.head_dim, key_mode, self.max_area) if learned else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"expected a map [batch, {self.dim}, height, width], got {tuple(x.shape)}")
        b, _, H, W = x.shape
        tokens = x.permute(0, 2, 3, 1)  # [B, H, W, C], positions row-major
        q = self.q_proj(tokens) if self.q_proj is not None else tokens
        k = self.k_proj(tokens) if self.k_proj is not None else tokens
        v = self.v_proj(tokens) if self.v_proj is not None else tokens

        def split(t: Tensor) -> Tensor:  # [B, H, W, heads*d] -> attention batch
            t = t.reshape(b, H, W, self.heads, -1).permute(0, 3, 1, 2, 4)  # [B, heads, H, W, d]
            return (
                t.reshape(b * self.heads * H, W, -1) if self.layout == "rows" else t.reshape(b * self.heads, H * W, -1)
            )

        drop = self.dropout if (self.training or self.dropout_at_eval) else 0.0
        out = area_attention(
            split(q), split(k), split(v), 1 if self.layout == "rows" else H,
            max_area=self.max_area, key_mode=self.key_mode, value_mode=self.value_mode,
            temperature=self.temperature, scale=self.scale, top_k=self.top_k, dropout=drop,
            sample_noise=self.training or self.sample_at_eval, key_net=self.key_net,
            block_elements=self.block_elements, backend=self.backend,
        )  # fmt: skip
        out = out.reshape(b, self.heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(b, H, W, -1)
        if self.out_proj is not None:
            out = self.out_proj(out)
        return out.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, key_mode={self.key_mode!r}, value_mode={self.value_mode!r}, "
            f"max_area={self.max_area}, layout={self.layout!r}, heads={self.heads}, scale={self.scale}, "
            f"temperature={self.temperature}, top_k={self.top_k}, dropout={self.dropout}, "
            f"dropout_at_eval={self.dropout_at_eval}, sample_at_eval={self.sample_at_eval}"
        )

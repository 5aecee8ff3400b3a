"""The linear area-attention path compiled into fused kernels by ``torch.compile``.

The eager fast path (:class:`areaser.models.attention_fast._LinearAreaAttention`) runs ~60 elementwise ops per
block of queries in the forward pass and ~150 in the backward pass, each one a pass over memory
and a trip through the dispatcher. Here each block is one pure function of its tensors (box means
by running ``lerp``, the adjoint box operation as a sum of padded shifts, the dropout masks from a
counter-based hash) that TorchInductor fuses into a few loops: C++ with OpenMP on CPU, Triton on
CUDA. The maths is the eager path's (same shift, floor and ``delta = dO . O`` backward), so the
results agree to float rounding; only the dropout masks are a different (equally uniform) stream.

Blocks have one fixed shape per call (``nb`` memories x ``nq`` queries), the tails padded with
zero queries (and zero memories): a zero query row gives finite outputs that are dropped, and a
zero output gradient adds nothing to dK and dV. So a model compiles each kernel once per map size
and dtype, not once per batch size.

Compilation takes 10-30 s per kernel on a first use (TorchInductor caches kernels on disk, so a
later process loads them in about a second); :func:`available` says whether this machine can.
"""

from __future__ import annotations

import functools
import math
import shutil
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from areaser.models.boxes import box_chain

__all__ = ["BLOCK_ELEMENTS", "MIN_LENGTH", "available", "forward", "backward"]

# Position logits per fused block: large enough that a call's ~0.1 ms overhead is noise (640 x 1280 on
# the paper's map; measured 1.66 s against 2.1 s at 2**18 and 1.98 s at 320 x 1280, 2 threads), small
# enough for the fused loops' working set to stay in cache per thread.
BLOCK_ELEMENTS = {"cpu": 2**20, "cuda": 2**23}
# Shorter memories gain little from fusing and would make every small test model compile its kernels.
MIN_LENGTH = 256


# Device types whose compile failed in this process (a broken tool chain fails again), with the reason.
_FAILED: dict[str, str] = {}


def available(device: torch.device) -> tuple[bool, str]:
    """Whether kernels can be compiled for ``device``, and if not, why (one line)."""
    if device.type in _FAILED:
        return False, f"compiling failed earlier in this process ({_FAILED[device.type]})"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401  (optional: only probed)
        except ImportError:
            return False, "Triton is not installed"
        return True, ""
    if device.type != "cpu":
        return False, f"no fused kernels for {device.type} devices"
    if not _compiler_found():
        return False, "no C++ compiler found (TorchInductor needs g++ or clang++ on PATH)"
    return True, ""


@functools.lru_cache(maxsize=1)
def _compiler_found() -> bool:
    """Whether TorchInductor's C++ compiler (``CXX``, else g++ / c++ / clang++) is on PATH (looked up once)."""
    cxx = torch._inductor.config.cpp.cxx
    names = [c for c in (cxx if isinstance(cxx, tuple) else (cxx,)) if c]
    return any(shutil.which(c) for c in names + ["g++", "c++", "clang++"])


# ----------------------------------------------------------------------------- block maths


def _mix(x: Tensor) -> Tensor:
    """lowbias32 (C. Wellons' integer hash: xorshift-multiply rounds) of int32 words.

    int32 products wrap modulo 2**32 in torch and in the generated kernels; the shifts are masked to
    act as logical shifts, so this is the unsigned hash bit for bit.
    """
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x7FEB352D
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * -0x7B935975  # 0x846CA68B as a signed 32-bit word
    return x ^ ((x >> 16) & 0xFFFF)


def _keep(like: Tensor, key: Tensor, threshold: int) -> Tensor:
    """Boolean keep-mask shaped like ``like``: 16 hash bits of (element index + key) below threshold."""
    idx = torch.arange(like.numel(), device=like.device, dtype=torch.int32).view(like.shape)
    return (_mix(idx + key) & 0xFFFF) < threshold


def _adjoint(g: dict[tuple[int, int], Tensor], op: str) -> Tensor:
    """Adjoint of :func:`~areaser.models.boxes.box_chain`: each shape's values spread back onto its areas."""
    total = None
    for (h, w), t in g.items():
        c = 1.0 / (h * w) if op == "mean" else 1.0
        for di in range(h):
            for dj in range(w):
                part = F.pad(t, (0, 0, dj, w - 1 - dj, di, h - 1 - di))
                total = part * c if total is None else total + part * c
    return total


def _forward_block(q, k, v, keys, *, height, max_h, max_w, factor, value_op, floor, threshold, keep):
    """Output, shift and log-denominator of queries ``q [nb, nq, D]`` over memories ``k, v``."""
    nb, length = k.shape[0], k.shape[1]
    s = torch.matmul(k, q.transpose(1, 2)) * factor  # [nb, L, nq]
    m = s.amax(dim=1)
    s = (s - m[:, None, :]).view(nb, height, length // height, -1)
    den, weights = None, {}
    for j, (shape, mean) in enumerate(box_chain(s, max_h, max_w, "mean")):
        e = mean.clamp_min(floor).exp()
        total = e.sum(dim=(1, 2))
        den = total if den is None else den + total
        weights[shape] = e * _keep(e, keys[j], threshold) if threshold is not None else e
    p = _adjoint(weights, value_op) / (den * keep)[:, None, None, :]
    out = torch.matmul(p.reshape(nb, length, -1).transpose(1, 2), v)
    return out, m, den.log()


def _backward_block(
    q, k, v, go, out, shift, log_den, keys, *, height, max_h, max_w, factor, value_op, floor, threshold, keep
):
    """DQ of the block and its contributions to dK and dV (the eager path's backward, fused)."""
    nb, length = k.shape[0], k.shape[1]
    s = torch.matmul(k, q.transpose(1, 2)) * factor
    s = (s - (shift + log_den)[:, None, :]).view(nb, height, length // height, -1)
    low = (floor - log_den)[:, None, None, :]
    gp = torch.matmul(v, go.transpose(1, 2)).view_as(s) / keep  # dL/dP per position
    delta = (go * out).sum(-1)[:, None, None, :]
    sums = dict(box_chain(gp, max_h, max_w, value_op))
    scatter, grad_logit = {}, {}
    for j, (shape, mean) in enumerate(box_chain(s, max_h, max_w, "mean")):
        wgt = torch.maximum(mean, low).exp()
        if threshold is not None:
            mask = _keep(wgt, keys[j], threshold)
            grad_logit[shape] = (sums[shape] * mask - delta) * wgt
            scatter[shape] = wgt * mask
        else:
            grad_logit[shape] = (sums[shape] - delta) * wgt
            scatter[shape] = wgt
    p = _adjoint(scatter, value_op).reshape(nb, length, -1) / keep
    ds = _adjoint(grad_logit, "mean").reshape(nb, length, -1) * factor
    return torch.matmul(ds.transpose(1, 2), k), torch.matmul(ds, q), torch.matmul(p, go)


# Every compiled partial shares one code object and so one dynamo cache (8 entries by default, after
# which it silently runs uncompiled): the drivers raise the limit to the number of kernels kept here.
_KERNELS = 64


@functools.lru_cache(maxsize=_KERNELS)
def _compiled(kind: str, compiler: str, **statics):
    """One compiled kernel per block function, compiler and static arguments (new shapes recompile).

    ``compiler`` is a ``torch.compile`` backend: ``"inductor"`` fuses; ``"eager"`` runs the same traced
    graph op by op (what the tests use to check the traced maths without minutes of C++ compiles).
    """
    fn = _forward_block if kind == "forward" else _backward_block
    # each box shape's weights are read by up to 9 shifted terms of the adjoint: realise them once
    # instead of recomputing exp and the mask hash per term (3x faster with dropout)
    options = {"realize_reads_threshold": 1} if compiler == "inductor" else None
    return torch.compile(
        functools.partial(fn, **statics), backend=compiler, dynamic=False, fullgraph=True, options=options
    )


def _run(kind: str, compiler: str, statics: dict, *args: Tensor):
    """A compiled block; where compiling fails, the same function uncompiled (and a warning, once)."""
    try:
        if compiler != "inductor" or args[0].device.type not in _FAILED:
            return _compiled(kind, compiler, **statics)(*args)
    except Exception as e:  # a missing header, a broken compiler, an unsupported platform
        if compiler != "inductor":
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = _FAILED[args[0].device.type] = f"{type(e).__name__}: {first}"[:300]
        message = f"area attention: compiling fused kernels failed ({reason}); running them uncompiled, then eager"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    fn = _forward_block if kind == "forward" else _backward_block
    return fn(*args, **statics)


# ----------------------------------------------------------------------------- driver


def _layout(n: int, lq: int, length: int, budget: int) -> tuple[int, int]:
    """(memories, queries) per block: queries split evenly (whole vectors), then whole memories batched."""
    per_query = max(length, 1)
    splits = max(1, math.ceil(lq * per_query / budget))
    nq = min(lq, -(-math.ceil(lq / splits) // 16) * 16)  # whole 16-lane vectors: no loop tails
    nb = max(1, min(n, budget // (nq * per_query)))
    return nb, nq


def _pad(t: Tensor, rows: int, cols: int) -> Tensor:
    """Zero-pad ``t [n, l, d]`` to ``[rows, cols, d]``."""
    return F.pad(t, (0, 0, 0, cols - t.shape[1], 0, rows - t.shape[0])) if t.shape[:2] != (rows, cols) else t


def _statics(height, max_h, max_w, factor, value_mean, dropout, dtype):
    floor = 0.5 * math.log(torch.finfo(dtype).tiny)
    threshold = round((1.0 - dropout) * 65536) if dropout > 0 else None
    keep = threshold / 65536 if threshold is not None else 1.0
    return dict(height=height, max_h=max_h, max_w=max_w, factor=float(factor), value_op="mean" if value_mean else "sum",
                floor=floor, threshold=threshold, keep=keep)  # fmt: skip


def _block_keys(seed: int, block: int, shapes: int, device: torch.device) -> Tensor:
    """Per-shape 32-bit mask keys of one block, from the call's seed (so backward replays them)."""
    words = [(seed * 1_000_003 + block * 64 + j) % 2**32 for j in range(shapes)]
    base = torch.tensor([w - 2**32 if w >= 2**31 else w for w in words], dtype=torch.int32)
    return _mix(_mix(base)).to(device)


def _each_block(q: Tensor, k: Tensor, max_h: int, max_w: int, height: int, dropout: float, seed: int, budget: int):
    """Yield ``(bs, qs, keys)`` per block: batch and query slices, and the block's mask keys.

    Forward and backward walk the same blocks in the same order, so the keys (unused without
    dropout) replay.
    """
    n, lq, length = q.shape[0], q.shape[1], k.shape[1]
    nb, nq = _layout(n, lq, length, budget)
    shapes = min(max_h, height) * min(max_w, length // height)
    none = torch.zeros(shapes, dtype=torch.int32, device=q.device)
    for index, (b, i) in enumerate((b, i) for b in range(0, n, nb) for i in range(0, lq, nq)):
        keys = _block_keys(seed, index, shapes, q.device) if dropout > 0 else none
        yield slice(b, min(b + nb, n)), slice(i, min(i + nq, lq)), keys


@torch._dynamo.config.patch(recompile_limit=_KERNELS)
def forward(q, k, v, height, max_h, max_w, factor, value_mean, dropout, seed, budget, compiler="inductor"):
    """Fused forward of :class:`~areaser.models.attention_fast._LinearAreaAttention`: ``(out, shift, log_den)``."""
    q, k, v = q.detach(), k.detach(), v.detach()  # guards would otherwise recompile on requires_grad
    n, lq, _ = q.shape
    length = k.shape[1]
    statics = _statics(height, max_h, max_w, factor, value_mean, dropout, q.dtype)
    nb, nq = _layout(n, lq, length, budget)
    out = q.new_empty((n, lq, v.shape[-1]))
    shift, log_den = q.new_empty((n, lq)), q.new_empty((n, lq))
    for bs, qs, keys in _each_block(q, k, max_h, max_w, height, dropout, seed, budget):
        rows, cols = bs.stop - bs.start, qs.stop - qs.start
        o, m, ld = _run("forward", compiler, statics, _pad(q[bs, qs], nb, nq), _pad(k[bs], nb, length),
                        _pad(v[bs], nb, length), keys)  # fmt: skip
        out[bs, qs], shift[bs, qs], log_den[bs, qs] = o[:rows, :cols], m[:rows, :cols], ld[:rows, :cols]
    return out, shift, log_den


@torch._dynamo.config.patch(recompile_limit=_KERNELS)
def backward(
    q, k, v, grad_out, out, shift, log_den, height, max_h, max_w, factor, value_mean, dropout, seed, budget,
    compiler="inductor",
):  # fmt: skip
    """Fused backward: ``(dq, dk, dv)``."""
    q, k, v, out = q.detach(), k.detach(), v.detach(), out.detach()
    grad_out = grad_out.detach().contiguous()
    n, lq, _ = q.shape
    length = k.shape[1]
    statics = _statics(height, max_h, max_w, factor, value_mean, dropout, q.dtype)
    nb, nq = _layout(n, lq, length, budget)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for bs, qs, keys in _each_block(q, k, max_h, max_w, height, dropout, seed, budget):
        rows, cols = bs.stop - bs.start, qs.stop - qs.start
        args = [_pad(t[bs, qs], nb, nq) for t in (q, grad_out, out)]
        stats = [_pad(t[bs, qs, None], nb, nq)[..., 0] for t in (shift, log_den)]
        a, b_, c = _run("backward", compiler, statics, args[0], _pad(k[bs], nb, length), _pad(v[bs], nb, length),
                        args[1], args[2], *stats, keys)  # fmt: skip
        dq[bs, qs] = a[:rows, :cols]
        dk[bs] += b_[:rows]
        dv[bs] += c[:rows]
    return dq, dk, dv

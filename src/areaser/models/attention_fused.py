"""The linear area-attention path compiled into fused kernels by ``torch.compile``.

The eager fast path (:class:`areaser.models.attention_fast._LinearAreaAttention`) runs ~60 elementwise ops per
block of queries in the forward pass and ~150 in the backward pass, each one a pass over memory
and a trip through the dispatcher. Here each block is one pure function of its tensors (box means
by running ``lerp``, the adjoint box chain of :func:`~areaser.models.boxes.box_chain_adjoint` run
backwards with pads, the dropout masks from a counter-based hash, on CPU a polynomial ``exp``) that
TorchInductor fuses into a few loops: on CPU single-threaded C++ whose blocks run on the worker threads
of :mod:`areaser.models.threads`, on CUDA Triton. The maths is the eager path's (same shift, floor and
``delta = dO . O`` backward), so the results agree to float rounding; only the dropout masks are a
different (equally uniform) stream. On CPU in float32 with areas up to 3 x 3 (the paper's case) the
blocks run instead as one hand-written C++ kernel (:mod:`areaser.models.attention_native`: the same
maths and the same masks, about twice as fast, built in seconds), TorchInductor's being the fallback.

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

from areaser.models import attention_native
from areaser.models.boxes import box_chain, box_chain_adjoint
from areaser.models.threads import _run_groups, by_batch

__all__ = ["BLOCK_ELEMENTS", "MIN_LENGTH", "available", "block_elements", "forward", "backward"]

# Position logits per fused block: on CPU a block's buffers (256 KB each at 2**16 float32) stay in a core's
# L2 and a call's ~0.1 ms overhead is still small (fwd + bwd of the paper's case, one thread, AMD EPYC, AVX2:
# 2.3-3.0 s at 2**16 against 3.0 s at 2**15 and 3.5 s at 2**17; two threads 1.65 s against 1.96 and 2.0 s).
BLOCK_ELEMENTS = {"cpu": 2**16, "cuda": 2**23}
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


# exp(r) on |r| <= ln(2) / 2 by the degree-5 polynomial of least maximum relative error (fitted by Lawson's
# iteration on 20,001 points: 8.3e-8 in exact arithmetic), constant term first. One multiply-add fewer than the
# degree-6 Taylor polynomial before it: fwd + bwd of the paper's case 3 % faster (5.76 s against 5.98 s, one
# thread, Zen 1, both in one process).
_EXP_POLY = (1.0000000798, 0.9999996767, 0.4999882595, 0.1666757097, 0.0419219968, 0.0083004135)


def _exp(x: Tensor) -> Tensor:
    """``exp(x)`` for ``floor - log(areas) <= x <= 0``: on CPU in float32 a short polynomial, else ``torch.exp``.

    TorchInductor's vectorised ``exp`` (SLEEF, 1 ULP) costs about as much as the rest of a block's
    elementwise work on AVX2; this is ``2**n * exp(r)`` with ``n = round(x / ln 2)``, ``|r| <= ln(2) / 2``
    (ln 2 split in two parts, Cody-Waite) and :data:`_EXP_POLY` for ``exp(r)``, the power of two written
    into the exponent bits: within 2.1e-7 relative in float32, about twice as fast. ``n`` stays far from
    the float32 exponent's limits for the inputs here (>= -60).
    """
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return x.exp()
    n = torch.floor(x * 1.4426950408889634 + 0.5)
    r = x - n * 0.693145751953125 - n * 1.4286068202862268e-06
    p = _EXP_POLY[-1]
    for c in _EXP_POLY[-2::-1]:
        p = p * r + c
    return p * ((n.to(torch.int32) + 127) << 23).view(torch.float32)


def _mask_bits(threshold: int) -> int:
    """Random bits one keep-mask needs: 16 less the threshold's trailing zero bits (1 for dropout 0.5)."""
    return 16 - ((threshold & -threshold).bit_length() - 1)


def _hash_words(grid: Tensor, keys: Tensor) -> list[Tensor]:
    """One hashed int32 word per cell of ``grid [nb, H, W, nq]`` and per key: the random bits of every shape's masks."""
    idx = torch.arange(grid.numel(), device=grid.device, dtype=torch.int32).view(grid.shape)
    return [_mix(idx + keys[i]) for i in range(keys.shape[0])]


def _keep(words: list[Tensor], j: int, like: Tensor, threshold: int) -> Tensor:
    """Boolean keep-mask of shape ``j``'s areas (shaped like ``like``), from the words of their anchor cells.

    An area reads the words of its anchor (top-left) cell and shape ``j`` its own field of
    :func:`_mask_bits` bits there: every (shape, area) pair owns a distinct (word, field), so its mask
    is independent of every other's; each field is uniform, so ``field < threshold >> (16 - bits)``
    keeps exactly ``threshold / 65536``.
    """
    bits = _mask_bits(threshold)
    per = 32 // bits
    word = words[j // per][:, : like.shape[1], : like.shape[2]]
    return ((word >> (j % per * bits)) & ((1 << bits) - 1)) < (threshold >> (16 - bits))


def _forward_block(q, k, v, keys, *, height, max_h, max_w, factor, value_op, floor, threshold, keep):
    """Output, shift and log-denominator of queries ``q [nb, nq, D]`` over memories ``k, v``."""
    nb, length = k.shape[0], k.shape[1]
    s = torch.matmul(k, q.transpose(1, 2)) * factor  # [nb, L, nq]
    m = s.amax(dim=1)
    s = (s - m[:, None, :]).view(nb, height, length // height, -1)
    words = _hash_words(s, keys) if threshold is not None else None
    den, weights = None, {}
    for j, (shape, mean) in enumerate(box_chain(s, max_h, max_w, "mean")):
        e = _exp(mean.clamp_min(floor))
        total = e.sum(dim=(1, 2))
        den = total if den is None else den + total
        weights[shape] = e * _keep(words, j, e, threshold) if words is not None else e
    p = box_chain_adjoint(weights, value_op) / (den * keep)[:, None, None, :]
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
    words = _hash_words(s, keys) if threshold is not None else None
    scatter, grad_logit = {}, {}
    for j, (shape, mean) in enumerate(box_chain(s, max_h, max_w, "mean")):
        wgt = _exp(torch.maximum(mean, low))
        if words is not None:
            mask = _keep(words, j, wgt, threshold)
            grad_logit[shape] = (sums[shape] * mask - delta) * wgt
            scatter[shape] = wgt * mask
        else:
            grad_logit[shape] = (sums[shape] - delta) * wgt
            scatter[shape] = wgt
    p = box_chain_adjoint(scatter, value_op).reshape(nb, length, -1) / keep
    ds = box_chain_adjoint(grad_logit, "mean").reshape(nb, length, -1) * factor
    return torch.matmul(ds.transpose(1, 2), k), torch.matmul(ds, q), torch.matmul(p, go)


# Every compiled partial shares one code object and so one dynamo cache (8 entries by default, after
# which it silently runs uncompiled): the drivers raise the limit to the number of kernels kept here.
_KERNELS = 64


@functools.lru_cache(maxsize=_KERNELS)
def _compiled(kind: str, compiler: str, device: str, **statics):
    """One compiled kernel per block function, compiler and static arguments (new shapes recompile).

    ``compiler`` is a ``torch.compile`` backend: ``"inductor"`` fuses; ``"eager"`` runs the same traced
    graph op by op (what the tests use to check the traced maths without minutes of C++ compiles).
    """
    fn = _forward_block if kind == "forward" else _backward_block
    # Realise reused intermediates (an area shape's weights feed the denominator and two steps of the
    # adjoint chain; its dropout mask two products) instead of recomputing them in each reader: Inductor
    # does so by itself for a reused exp, not for the polynomial one nor the mask hash. With the opcount
    # threshold at 16: 3.35 s fwd + bwd on one thread, against 5.7 s without it (and 6.8 s for the
    # 36-term adjoint sum the chain replaced).
    options = {"realize_reads_threshold": 1, "realize_opcount_threshold": 16} if compiler == "inductor" else None
    if options is not None and device == "cpu":
        # One thread per kernel, and C++ wrappers, which release the GIL: the blocks then run in parallel on
        # the worker threads of areaser.models.threads (1.7x on two cores) instead of one OpenMP team
        # meeting at a barrier after every loop of every block (1.2-1.5x).
        options |= {"cpp.threads": 1, "cpp_wrapper": True}
    return torch.compile(
        functools.partial(fn, **statics), backend=compiler, dynamic=False, fullgraph=True, options=options
    )


def _run(kind: str, compiler: str, statics: dict, *args: Tensor):
    """A compiled block; where compiling fails, the same function uncompiled (and a warning, once).

    On CPU, in float32, with areas up to 3 x 3, ``"inductor"`` runs the hand-written kernel of
    :mod:`~areaser.models.attention_native` instead (the same maths and masks, 2x faster), falling back
    to TorchInductor where that kernel cannot be built.
    """
    if compiler == "inductor" and _native(args[0], args[1], statics["height"], statics["max_h"], statics["max_w"]):
        native = attention_native.forward_block if kind == "forward" else attention_native.backward_block
        return native(*args, **statics)
    try:
        if compiler != "inductor" or args[0].device.type not in _FAILED:
            return _compiled(kind, compiler, args[0].device.type, **statics)(*args)
    except Exception as e:  # a missing header, a broken compiler, an unsupported platform
        if compiler != "inductor":
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = _FAILED[args[0].device.type] = f"{type(e).__name__}: {first}"[:300]
        message = f"area attention: compiling fused kernels failed ({reason}); running them uncompiled, then eager"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    fn = _forward_block if kind == "forward" else _backward_block
    return fn(*args, **statics)


def _native(q: Tensor, k: Tensor, height: int, max_h: int, max_w: int) -> bool:
    """Whether the native kernel runs these blocks (built once per process; a failed build warns once)."""
    if not attention_native.supports(q, height, k.shape[1], max_h, max_w):
        return False
    if "native" in _FAILED:
        return False
    can, why = attention_native.available()
    if not can:
        _FAILED["native"] = why
        message = f"area attention: the native CPU kernel is not available ({why}); using TorchInductor's kernels"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return can


# ----------------------------------------------------------------------------- driver


def block_elements(q: Tensor, k: Tensor, height: int, max_h: int, max_w: int) -> int:
    """Position logits per block: the native kernel's budget where it runs, else :data:`BLOCK_ELEMENTS`."""
    if _native(q, k, height, max_h, max_w):
        return attention_native.BLOCK_ELEMENTS
    return BLOCK_ELEMENTS.get(q.device.type, BLOCK_ELEMENTS["cuda"])


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


def _block_keys(seed: int, blocks: int | range, words: int, device: torch.device) -> Tensor:
    """The 32-bit hash keys of one block ``[words]``, or of a range of blocks ``[blocks, words]``.

    ``mix(mix(seed * 1000003 + block * 64 + word))`` wrapped to 32 bits: from the call's seed, so the
    backward replays them.
    """
    index = torch.tensor(blocks if isinstance(blocks, range) else [blocks], dtype=torch.int64)
    raw = (seed * 1_000_003 % 2**32 + index[:, None] * 64 + torch.arange(words)) % 2**32  # seeds reach 2**62
    keys = _mix(_mix(torch.where(raw >= 2**31, raw - 2**32, raw).to(torch.int32))).to(device)
    return keys if isinstance(blocks, range) else keys[0]


def _block_groups(n: int, lq: int, length: int, budget: int) -> list[list[tuple[slice, slice]]]:
    """The blocks of :func:`_layout`, grouped by batch slice (:func:`~areaser.models.threads.by_batch`).

    Forward and backward walk the same blocks in the same order, so a block's index (and so its
    dropout mask keys) replays.
    """
    nb, nq = _layout(n, lq, length, budget)
    return by_batch(
        [(slice(b, min(b + nb, n)), slice(i, min(i + nq, lq))) for b in range(0, n, nb) for i in range(0, lq, nq)]
    )


def _keys(seed: int, index: int | range, threshold: int | None, max_h: int, max_w: int, height: int, length: int,
          device):  # fmt: skip
    """The hash keys of block ``index`` (or of each block of a range), one per word of mask bits.

    Without dropout a single zero, which the kernels ignore.
    """
    rows = (len(index),) if isinstance(index, range) else ()
    if threshold is None:
        return torch.zeros((*rows, 1), dtype=torch.int32, device=device)
    shapes = min(max_h, height) * min(max_w, length // height)
    return _block_keys(seed, index, -(-shapes // (32 // _mask_bits(threshold))), device)


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
    groups = _block_groups(n, lq, length, budget)
    # every block's keys in one go: ~25 small ops per block otherwise (0.15 ms each, under the GIL)
    all_keys = _keys(seed, range(sum(map(len, groups))), statics["threshold"], max_h, max_w, height, length, q.device)

    def block(index: int, bs: slice, qs: slice) -> None:
        rows, cols = bs.stop - bs.start, qs.stop - qs.start
        keys = all_keys[index]
        o, m, ld = _run("forward", compiler, statics, _pad(q[bs, qs], nb, nq), _pad(k[bs], nb, length),
                        _pad(v[bs], nb, length), keys)  # fmt: skip
        out[bs, qs], shift[bs, qs], log_den[bs, qs] = o[:rows, :cols], m[:rows, :cols], ld[:rows, :cols]

    _run_groups(block, groups, q.device)
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
    groups = _block_groups(n, lq, length, budget)
    all_keys = _keys(seed, range(sum(map(len, groups))), statics["threshold"], max_h, max_w, height, length, q.device)

    def block(index: int, bs: slice, qs: slice) -> None:
        rows, cols = bs.stop - bs.start, qs.stop - qs.start
        keys = all_keys[index]
        args = [_pad(t[bs, qs], nb, nq) for t in (q, grad_out, out)]
        stats = [_pad(t[bs, qs, None], nb, nq)[..., 0] for t in (shift, log_den)]
        a, b_, c = _run("backward", compiler, statics, args[0], _pad(k[bs], nb, length), _pad(v[bs], nb, length),
                        args[1], args[2], *stats, keys)  # fmt: skip
        dq[bs, qs] = a[:rows, :cols]
        dk[bs] += b_[:rows]  # a group's blocks share one batch slice, so one worker writes these rows
        dv[bs] += c[:rows]

    _run_groups(block, groups, q.device)
    return dq, dk, dv

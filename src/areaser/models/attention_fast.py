"""The memory-light fast path of area attention: blocked logits, hashed dropout, custom backward."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from areaser.models import attention_fused
from areaser.models.areas import _box_adjoint
from areaser.models.boxes import box_chain
from areaser.models.threads import _run_groups, by_batch

# Position logits per block of (batch x queries) on the fast path. CPU: a block's maps stay in
# cache (2**16 measured best of 2**14..2**18 on one thread); GPUs: blocks large enough to hide
# kernel launches. The generic path holds [block, areas] logits plus softmax and autograd copies.
FAST_BLOCK_ELEMENTS = {"cpu": 2**16, "cuda": 2**23}
GENERIC_BLOCK_ELEMENTS = 2**22


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
    """The fast path's blocks grouped by batch slice (:func:`~areaser.models.threads.by_batch`)."""
    return by_batch(_blocks(n, lq, length, budget))


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

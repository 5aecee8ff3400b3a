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
256 positions (``backend="auto"``) each block instead runs fused (:mod:`areaser.models.attention_fused`:
on CPU in float32 with areas up to 3 x 3 a hand-written C++ kernel, :mod:`areaser.models.attention_native`;
otherwise loops that ``torch.compile`` fuses, C++ on CPU and Triton on CUDA), where a compiler is found:
docs/benchmarks.md measures how much faster.
Every other mode builds the area keys/values with the same box operations, then attends in blocks
that are recomputed in the backward pass (activation checkpointing). tensor2tensor's key mode ``sum`` is a learned
mode (size embedding + mean + std through the MLP), so it takes the second route.

Exactness. Results equal brute-force enumeration of the areas up to rounding, with one deliberate
detail: area weights smaller than ``exp(log(tiny) / 2)`` times the largest weight (1e-19 in
float32) are raised to that value. The change is far below float precision, and it keeps the
arithmetic out of denormal numbers, which make CPUs about 100x slower.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from areaser.models import attention_fused
from areaser.models.areas import (
    KEY_MODES,
    VALUE_MODES,
    AreaKeyNet,
    _pair,
    _t2t_order,
    area_features,
    area_keys,
    area_max,
)
from areaser.models.attention_fast import (
    FAST_BLOCK_ELEMENTS,
    GENERIC_BLOCK_ELEMENTS,
    _attend_block,
    _blocks,
    _fused,
    _LinearAreaAttention,
)
from areaser.models.attention_onnx import ExportMarker, attend_linear_whole
from areaser.models.boxes import box_chain
from areaser.models.threads import _POOLS

# How the fast path runs: "eager" (torch ops), "compiled" (fused kernels, attention_fused), or "auto":
# compiled when training on a memory of >= attention_fused.MIN_LENGTH positions and the machine can
# compile (a C++ compiler on CPU, Triton on CUDA), eager otherwise.
BACKENDS = ("auto", "eager", "compiled")
os.register_at_fork(after_in_child=_POOLS.clear)  # a forked child has none of the threads


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
            first use, then 1.4-2.9x faster on CPU), ``"eager"`` runs torch ops, ``"auto"`` compiles
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
        if key_mode in ("mean", "sample") and not noisy and value_mode != "max" and top_k == 0:
            mean = value_mode == "mean"
            if torch.onnx.is_in_onnx_export() and torch.jit.is_tracing() and not _exporting():
                # TorchScript export: one node that attention_onnx.expand turns into blocked Loops (height may
                # be a traced size here: the frequency rows, fixed by the model's input)
                out = ExportMarker.apply(q, k, v, int(height), max_h, max_w, factor, mean)
            else:
                out = attend_linear_whole(q, k, v, height, max_h, max_w, factor, mean)
        else:
            out = _attend_whole(q, k, v, height, max_h, max_w, factor, key_mode, value_mode, top_k, noisy, key_net)
    elif key_mode in ("mean", "sample") and not noisy and value_mode != "max" and top_k == 0:
        seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout > 0 else 0
        fused = _fused(backend, q, k, v)
        if block_elements:
            budget = block_elements
        elif fused:
            budget = attention_fused.block_elements(q, k, height, max_h, max_w)
        else:
            budget = FAST_BLOCK_ELEMENTS.get(q.device.type, FAST_BLOCK_ELEMENTS["cuda"])
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

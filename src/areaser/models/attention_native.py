"""The fused blocks of area attention on CPU as one hand-written C++ kernel (float32, areas up to 3 x 3).

TorchInductor turns each block of :mod:`areaser.models.attention_fused` into ~20 loops, each a pass
over block-sized buffers (the box means of every shape, their exponentials, masks and adjoint chain)
that outgrow a core's cache: the loops wait on memory. ``area_kernel.cpp`` walks the areas' anchor
cells instead, 8 queries per vector, and keeps everything between loading a cell's neighbourhood and
adding the weights back onto it in registers; its dropout masks hash once per anchor, not once per
area. The position logits and the products with values stay torch matmuls. Same maths and the same
dropout masks as the traced blocks (:func:`attention_fused._forward_block`), to float rounding.

The kernel is compiled on first use with the machine's C++ compiler (``CXX``, else g++ / c++ /
clang++; 3-5 s) into ``$AREASER_CACHE_DIR`` (default ``~/.cache/areaser``), under a name made from
the source, compiler, flags and CPU, and loaded with ctypes, whose calls release the GIL: blocks run
in parallel on the worker threads of :mod:`areaser.models.threads`. x86-64 machines with AVX2 and FMA
get ``-march=x86-64-v3`` (the same code on every such machine, not ``-march=native``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BLOCK_ELEMENTS", "MAX_SIDE", "available", "supports", "forward_block", "backward_block"]

# Position logits per block: a block's matmuls large enough to run near the core's peak, and the kernel's
# per-chunk rows (8 queries x 4 arrays x 1,280 cells) still in L2. fwd + bwd of the paper's case with dropout,
# two threads, AMD EPYC Zen 3, best of 5: 1.39 / 1.28 s at 2**16, 1.16 / 1.23 s at 2**18, 1.07 / 1.23 s at 2**20.
BLOCK_ELEMENTS = 2**18
MAX_SIDE = 3  # area sides the kernel is instantiated for (AREA_SIZES in area_kernel.cpp)
LANES = 8  # queries per vector: a block's query count is padded to a multiple
_SOURCE = Path(__file__).with_name("area_kernel.cpp")
_FLAGS = ("-std=c++20", "-O3", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _arch_flags() -> tuple[str, ...]:
    """x86-64-v3 (AVX2, FMA) where the CPU has it; else the compiler's baseline for this architecture."""
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma", "bmi2"} <= _cpu_flags():
        return ("-march=x86-64-v3",)
    return ()


def _cache_dir() -> Path:
    root = os.environ.get("AREASER_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(root) / ("kernels" if os.environ.get("AREASER_CACHE_DIR") else "areaser/kernels")


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    """The compiled kernel, built on first use (raises ``RuntimeError`` with the reason if it cannot be)."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ or clang++)")
    flags = (*_FLAGS, *_arch_flags())
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"{cxx} --version failed: {e}") from None
    key = hashlib.sha256("\0".join([_SOURCE.read_text(), cxx, version, *flags, platform.machine()]).encode())
    target = _cache_dir() / f"area_kernel-{key.hexdigest()[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # built beside the target, then renamed: a concurrent process (a DDP worker) sees all or nothing
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            done = subprocess.run([cxx, *flags, "-o", str(built), str(_SOURCE)], capture_output=True, text=True)
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["no message"])[0]
                raise RuntimeError(f"compiling {_SOURCE.name} failed: {first[:200]}")
            os.replace(built, target)
    lib = ctypes.CDLL(str(target))
    f, i, p = ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    lib.area_forward.argtypes = [p] * 5 + [i] * 8 + [f, f, i, f]
    lib.area_backward.argtypes = [p] * 8 + [i] * 9 + [f, f, f]
    lib.area_forward.restype = lib.area_backward.restype = i
    return lib


def available() -> tuple[bool, str]:
    """Whether the kernel is built (building it now if need be), and if not, why (one line)."""
    try:
        _library()
    except (RuntimeError, OSError) as e:
        return False, str(e)
    return True, ""


def supports(x: Tensor, height: int, length: int, max_h: int, max_w: int) -> bool:
    """Whether the kernel covers this case: float32 on CPU, area sides (as far as the grid allows) <= 3."""
    sides_fit = min(max_h, height) <= MAX_SIDE and min(max_w, length // height) <= MAX_SIDE
    return x.device.type == "cpu" and x.dtype == torch.float32 and sides_fit


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _lanes(t: Tensor) -> Tensor:
    """Zero-pad the query dim (1) of ``t [nb, nq, ...]`` to whole vectors of :data:`LANES`."""
    pad = -t.shape[1] % LANES
    return F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) if pad else t


def _dropout(threshold: int | None) -> int:
    return -1 if threshold is None else threshold


def forward_block(q, k, v, keys, *, height, max_h, max_w, factor, value_op, floor, threshold, keep):
    """:func:`areaser.models.attention_fused._forward_block` by the kernel: ``(out, shift, log_den)``."""
    nb, nq, length = q.shape[0], q.shape[1], k.shape[1]
    s = torch.matmul(k, _lanes(q).transpose(1, 2)).contiguous()  # [nb, L, nq], unscaled: the kernel scales
    p, shift, log_den = torch.empty_like(s), s.new_empty(nb, s.shape[2]), s.new_empty(nb, s.shape[2])
    keys = keys.contiguous()
    rc = _library().area_forward(_ptr(s), _ptr(p), _ptr(shift), _ptr(log_den), _ptr(keys), nb, height,
                                 length // height, s.shape[2], nq, max_h, max_w, value_op == "mean", factor, floor,
                                 _dropout(threshold), keep)  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"area_kernel refused its arguments (code {rc}); check supports() first")
    return torch.matmul(p.transpose(1, 2), v)[:, :nq], shift[:, :nq], log_den[:, :nq]


def backward_block(
    q, k, v, go, out, shift, log_den, keys, *, height, max_h, max_w, factor, value_op, floor, threshold, keep
):  # fmt: skip
    """:func:`areaser.models.attention_fused._backward_block` by the kernel: DQ and the dK, dV contributions."""
    nb, nq, length = q.shape[0], q.shape[1], k.shape[1]
    q, go, out = _lanes(q), _lanes(go), _lanes(out)
    shift, log_den = _lanes(shift[..., None])[..., 0], _lanes(log_den[..., None])[..., 0]
    s = torch.matmul(k, q.transpose(1, 2)).contiguous()  # unscaled, and dL/dP per position before the 1 / keep
    gp = torch.matmul(v, go.transpose(1, 2)).contiguous()
    off = (shift + log_den).contiguous()
    low = (floor - log_den).contiguous()
    delta = (go * out).sum(-1).contiguous()
    pv, ds = torch.empty_like(s), torch.empty_like(s)
    keys = keys.contiguous()
    rc = _library().area_backward(_ptr(s), _ptr(gp), _ptr(off), _ptr(low), _ptr(delta), _ptr(pv), _ptr(ds),
                                  _ptr(keys), nb, height, length // height, s.shape[2], nq, max_h, max_w,
                                  value_op == "mean", _dropout(threshold), factor, 1.0 / keep, 1.0 / keep)  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"area_kernel refused its arguments (code {rc}); check supports() first")
    return torch.matmul(ds.transpose(1, 2), k)[:, :nq], torch.matmul(ds, q), torch.matmul(pv, go)

"""The hand-written CPU kernel of area attention: the traced blocks' maths and masks, its policy, its build."""

from __future__ import annotations

import re

import pytest
import torch
from test_attention_fused import brute_force, inputs, run_isolated, train_with_failing_compiler

from areaser.models import attention_fused, attention_native
from areaser.models.attention_fast import _LinearAreaAttention

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kernel():
    can, why = attention_native.available()
    if not can:
        pytest.skip(f"the native kernel cannot be built here: {why}")


def block_inputs(nb, nq, height, width, d, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(nb, nq, d, generator=gen)
    k, v = (torch.randn(nb, height * width, d, generator=gen) for _ in range(2))
    return q, k, v, torch.randn(nb, nq, d, generator=gen)


# (height, width, max_h, max_w): interior and edge anchors, sides cut by the grid, 1-D spans
CASES = [(7, 5, 3, 3), (2, 9, 3, 3), (6, 4, 1, 3), (5, 6, 3, 1), (4, 4, 2, 2)]


@pytest.mark.parametrize("height,width,max_h,max_w", CASES)
@pytest.mark.parametrize("value_mean", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.5, 0.1])
def test_kernel_blocks_equal_the_traced_blocks(kernel, height, width, max_h, max_w, value_mean, dropout):
    """Forward and backward of a block (2 memories, 13 queries: a partial vector) against the traced
    block functions run as torch ops, dropout masks included, to float32 rounding."""
    q, k, v, go = block_inputs(2, 13, height, width, 6, seed=height * 10 + width)
    statics = attention_fused._statics(height, max_h, max_w, 0.8, value_mean, dropout, torch.float32)
    keys = attention_fused._keys(5, 3, statics["threshold"], max_h, max_w, height, height * width, "cpu")
    want = attention_fused._forward_block(q, k, v, keys, **statics)
    got = attention_native.forward_block(q, k, v, keys, **statics)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=2e-5)
    out, shift, log_den = want
    want_grads = attention_fused._backward_block(q, k, v, go, out, shift, log_den, keys, **statics)
    got_grads = attention_native.backward_block(q, k, v, go, out, shift, log_den, keys, **statics)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=2e-5)


def test_training_in_float32_runs_the_kernel_and_matches_enumeration(kernel):
    """``"inductor"`` on CPU in float32 takes the kernel; with many blocks (budget 300: 3 memories of 40
    positions, padded query tails) it agrees with float64 enumeration of every area, gradients too."""
    q, k, v = inputs(n=3, length=40, d=8, seed=4)
    want = brute_force(q, k, v, 8, 3, 3, 0.9, False)
    g = torch.randn_like(want)
    want_grads = torch.autograd.grad((want * g).sum(), (q, k, v))
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    assert attention_fused._native(q32, k32, 8, 3, 3)
    got = _LinearAreaAttention.apply(q32, k32, v32, 8, 3, 3, 0.9, False, 0.0, 0, 300, "inductor")
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=2e-5)
    for a, b in zip(torch.autograd.grad((got * g.float()).sum(), (q32, k32, v32)), want_grads):
        torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=2e-5)


def test_training_dropout_replays_the_traced_masks(kernel):
    """With dropout the kernel path and the traced graph (torch.compile's eager backend) give the same
    outputs and gradients: the same masks, drawn per block and replayed by the backward."""
    q, k, v = (t.detach().float().requires_grad_() for t in inputs(n=2, length=30, d=4, seed=8))
    args = (5, 3, 3, 0.7, False, 0.5, 17, 200)
    got = _LinearAreaAttention.apply(q, k, v, *args, "inductor")
    want = _LinearAreaAttention.apply(q, k, v, *args, "eager")
    torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-5)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((got * g).sum(), (q, k, v)), torch.autograd.grad((want * g).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=2e-5)
    undropped = _LinearAreaAttention.apply(q, k, v, 5, 3, 3, 0.7, False, 0.0, 17, 200, "inductor")
    assert not torch.allclose(got, undropped, atol=1e-3)


def test_the_kernel_covers_float32_cpu_and_areas_up_to_three_cells_a_side():
    x32, x64 = torch.zeros(1, 4, 2), torch.zeros(1, 4, 2, dtype=torch.float64)
    assert attention_native.supports(x32, 64, 1280, 3, 3)
    assert not attention_native.supports(x32, 3, 12, 4, 4)  # a 3 x 4 grid cuts 4 x 4 areas to 3 x 4
    assert not attention_native.supports(x32, 4, 16, 4, 4)
    assert not attention_native.supports(x64, 64, 1280, 3, 3)
    assert attention_native.supports(x32, 3, 9, 9, 2)  # sides cut by the grid: 3 x 2


def test_the_build_is_cached_under_the_cache_dir(kernel, tmp_path):
    """One shared object per source, compiler, flags and CPU, renamed into place: nothing half-written."""
    script = """
        from areaser.models import attention_native
        print(attention_native.available())
    """
    done = run_isolated(script, {"AREASER_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0 and "(True, '')" in done.stdout, done.stderr[-2000:]
    names = [p.name for p in (tmp_path / "kernels").iterdir()]
    assert len(names) == 1 and re.fullmatch(r"area_kernel-[0-9a-f]{16}\.so", names[0]), names


def test_a_failing_build_warns_once_and_trains_with_the_same_maths(tmp_path):
    """A compiler that always fails (CXX=/bin/false): available() says why, training warns once and runs
    the traced blocks (TorchInductor fails too, then they run uncompiled): the same numbers as eager."""
    lines = train_with_failing_compiler(tmp_path, "float32", 1e-6)
    reason, warnings = lines[0], lines[2:]
    assert reason.startswith("compiling area_kernel.cpp failed")
    assert sum("area attention: the native CPU kernel is not available" in w for w in warnings) == 1
    assert not list((tmp_path / "areaser" / "kernels").iterdir())  # the failed build left nothing behind

"""The fused (torch.compile) path of area attention: its traced maths, its dropout masks, its policy.

The default tests run the traced block functions with torch.compile's ``eager`` backend (the graph
TorchInductor would fuse, run op by op: seconds, not the minutes of C++ compiles on two cores); the
``compile`` tests run TorchInductor itself (``make test-compile``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from areaser.models import attention_fused
from areaser.models.attention import area_attention
from areaser.models.attention_fast import _fused, _LinearAreaAttention
from areaser.models.layers import AreaAttention

TOL = dict(atol=1e-10, rtol=1e-10)


pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force(q, k, v, height, max_h, max_w, factor, value_mean):
    """Softmax over every enumerated area: keys are cell means, values cell sums (or means)."""
    n, length, _ = k.shape
    width = length // height
    rows = []
    for h in range(1, max_h + 1):
        for w in range(1, max_w + 1):
            for i in range(height - h + 1):
                for j in range(width - w + 1):
                    row = torch.zeros(length, dtype=q.dtype)
                    row[[(i + a) * width + (j + b) for a in range(h) for b in range(w)]] = 1
                    rows.append(row)
    member = torch.stack(rows)  # [areas, cells]
    count = member.sum(1, keepdim=True)
    keys = member @ k / count
    values = member @ v / (count if value_mean else 1)
    return torch.softmax(q @ keys.transpose(1, 2) * factor, dim=-1) @ values


def inputs(n=3, length=30, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, length, d, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(3)]


def traced(q, k, v, height, max_h, max_w, factor, value_mean, dropout=0.0, seed=0, budget=200):
    """The fused path with torch.compile's eager backend: the traced graph, no C++ compile."""
    return _LinearAreaAttention.apply(q, k, v, height, max_h, max_w, factor, value_mean, dropout, seed, budget, "eager")


@pytest.mark.parametrize("value_mean", [False, True])
@pytest.mark.parametrize("budget", [200, 10**6])  # blocks with padded tails (3 memories, 30 queries); one block
def test_traced_blocks_match_brute_force(value_mean, budget):
    q, k, v = inputs()
    got = traced(q, k, v, 5, 3, 2, 0.7, value_mean, budget=budget)
    want = brute_force(q, k, v, 5, 3, 2, 0.7, value_mean)
    torch.testing.assert_close(got, want, **TOL)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((got * g).sum(), (q, k, v)), torch.autograd.grad((want * g).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, **TOL)


def test_fast_exp_is_within_three_tenths_of_a_millionth():
    """The fused blocks' float32 exp on CPU against float64 exp over every input they can see (an area's
    log-weight relative to the largest: the floor -43.7 minus log of up to 10,773 areas, to 0), including
    the reduction's boundaries (multiples of ln 2 / 2); other dtypes take torch.exp itself."""
    grid = torch.linspace(-60.0, 0.0, 600_001, dtype=torch.float64)
    edges = (torch.arange(-173, 1, dtype=torch.float64) * math.log(2) / 2).clamp(min=-60.0)
    x = torch.cat([grid, edges, edges + 1e-6, edges - 1e-6]).clamp(max=0.0).float()
    got = attention_fused._exp(x).double()
    want = x.double().exp()
    assert ((got - want).abs() / want).max().item() < 3e-7
    doubles = torch.linspace(-50.0, 0.0, 1001, dtype=torch.float64)
    assert torch.equal(attention_fused._exp(doubles), doubles.exp())


def test_float32_blocks_match_brute_force_to_float32_rounding():
    """The traced blocks in float32 (fast exp included) against float64 enumeration of the areas."""
    q, k, v = inputs(n=2, length=40, d=8, seed=3)
    want = brute_force(q, k, v, 8, 3, 3, 0.9, False)
    g = torch.randn_like(want)
    want_grads = torch.autograd.grad((want * g).sum(), (q, k, v))
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    got = traced(q32, k32, v32, 8, 3, 3, 0.9, False, budget=300)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=2e-5)
    for a, b in zip(torch.autograd.grad((got * g.float()).sum(), (q32, k32, v32)), want_grads):
        torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=2e-5)


def test_block_layout_pads_only_tails():
    """Queries split evenly under the budget (rounded up to whole 16-lane vectors), then whole
    memories batched into a block."""
    assert attention_fused._layout(32, 1280, 1280, 2**20) == (1, 640)
    assert attention_fused._layout(3, 30, 30, 200) == (1, 16)  # 30 * 30 / 200 -> 5 splits of 6 -> 16 queries
    assert attention_fused._layout(8, 16, 10, 400) == (2, 16)  # 16 queries x 10 positions: two memories fit
    assert attention_fused._layout(2048, 20, 20, 2**16) == (163, 20)  # short rows: many memories per block


def test_traced_dropout_gradients_are_exact():
    """With a fixed seed the hashed masks are a deterministic function, replayed by the backward."""
    q, k, v = inputs(n=2, length=12, d=2, seed=2)

    def f(q, k, v):
        return traced(q, k, v, 3, 2, 2, 2.0, False, dropout=0.4, seed=11, budget=50)

    assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=True)
    assert not torch.allclose(f(q, k, v), traced(q, k, v, 3, 2, 2, 2.0, False, budget=50))


def lowbias32(x: int) -> int:
    """C. Wellons' published lowbias32 on Python integers (the reference the masks hash with)."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_mask_hash_is_lowbias32():
    words = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1]
    signed = torch.tensor([w - 2**32 if w >= 2**31 else w for w in words], dtype=torch.int32)
    assert [int(h) % 2**32 for h in attention_fused._mix(signed)] == [lowbias32(w) for w in words]


def test_a_mask_takes_as_many_bits_as_its_threshold_needs():
    """16 random bits per mask less the threshold's trailing zeros: 0.5 is one bit, 0.25 two, 0.1 fifteen."""
    assert attention_fused._mask_bits(32768) == 1  # keep 1/2: one bit below 1
    assert attention_fused._mask_bits(49152) == 2  # keep 3/4: two bits below 3
    assert attention_fused._mask_bits(round(0.9 * 65536)) == 15  # 58982 = 2 * 29491
    assert attention_fused._mask_bits(1) == 16


@pytest.mark.parametrize("drop", [0.5, 0.1])
def test_masks_keep_the_asked_fraction_independently(drop):
    """Every shape's keep rate within 5 standard errors of 1 - drop; neighbours, two shapes at one anchor
    (one word's fields, or two words), and two keys are independent."""
    threshold = round((1 - drop) * 65536)
    grid = torch.empty(4, 64, 64, 64)
    per = 32 // attention_fused._mask_bits(threshold)
    shapes = 9
    words = -(-shapes // per)

    def masks(seed):
        keys = attention_fused._block_keys(seed, 0, words, torch.device("cpu"))
        hashed = attention_fused._hash_words(grid, keys)
        return [attention_fused._keep(hashed, j, grid[:, : 64 - j % 3, : 64 - j // 3], threshold) for j in range(9)]

    a, b = masks(12345), masks(99)
    p = threshold / 65536
    for m in a:
        m = m.flatten()
        assert abs(m.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / m.numel())

    def joint(x, y):  # both kept, against p * p
        n = x.numel()
        return abs((x & y).double().mean().item() - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / n)

    first = a[0].flatten()
    assert joint(first[1:], first[:-1])  # adjacent areas of one shape
    assert joint(a[0][:, :62, :62].flatten(), a[1][:, :62, :62].flatten())  # one anchor, the same word
    assert joint(a[0][:, :62, :62].flatten(), a[8][:, :62, :62].flatten())  # one anchor, another word at 0.1
    assert joint(first, b[0].flatten())  # two keys


def test_auto_compiles_only_training_on_long_memories():
    long_q = torch.zeros(1, 256, 4, requires_grad=True)
    short_q = torch.zeros(1, 255, 4, requires_grad=True)
    can, _ = attention_fused.available(torch.device("cpu"))
    assert _fused("auto", long_q, long_q, long_q) is can
    assert _fused("auto", short_q, short_q, short_q) is False
    assert _fused("eager", long_q, long_q, long_q) is False
    with torch.no_grad():
        assert _fused("auto", long_q, long_q, long_q) is False  # inference: a compile would not pay


def test_backend_errors_say_what_to_do():
    q = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="backend must be one of"):
        area_attention(q, q, q, 2, backend="fast")
    with pytest.raises(ValueError, match="backend must be one of"):
        AreaAttention(2, backend="fast")
    meta = torch.zeros(1, 4, 2, device="meta")
    with pytest.raises(RuntimeError, match="'compiled' is not available here: no fused kernels for meta.*use 'eager'"):
        area_attention(meta, meta, meta, 2, max_area=(2, 2), backend="compiled")


@pytest.mark.compile
def test_inductor_kernels_match_the_traced_graph():
    """TorchInductor's kernels compute what the traced graph computes, dropout masks included."""
    q, k, v = inputs()
    for dropout in (0.0, 0.3):
        args = (5, 3, 2, 0.7, False, dropout, 4, 200)
        want = _LinearAreaAttention.apply(q, k, v, *args, "eager")
        got = _LinearAreaAttention.apply(q, k, v, *args, "inductor")
        torch.testing.assert_close(got, want, **TOL)
        g = torch.randn_like(want)
        grads = zip(torch.autograd.grad((got * g).sum(), (q, k, v)), torch.autograd.grad((want * g).sum(), (q, k, v)))
        for a, b in grads:
            torch.testing.assert_close(a, b, **TOL)


def run_isolated(script: str, env: dict) -> subprocess.CompletedProcess:
    """``script`` (dedented) in a fresh Python process with ``env`` added to this one's environment."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)  # fmt: skip


def train_with_failing_compiler(tmp_path, dtype: str, atol: float) -> list[str]:
    """Fused training calls in a process whose C++ compiler always fails (``CXX=/bin/false``), checked
    against the eager path to ``atol``; prints what the native kernel and attention_fused say, then each
    warning's first words, one per line."""
    script = f"""
        import warnings, torch
        from areaser.models import attention_fused, attention_native
        from areaser.models.attention_fast import _LinearAreaAttention
        torch.set_num_threads(1)
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 12, 3, dtype=torch.{dtype}, generator=gen, requires_grad=True) for _ in range(3))
        args = (3, 2, 2, 0.7, False, 0.3, 4, 50)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = _LinearAreaAttention.apply(q, k, v, *args, "inductor")
            g1 = torch.autograd.grad(got.sum(), (q, k, v))
        want = _LinearAreaAttention.apply(q, k, v, *args, "eager")
        g2 = torch.autograd.grad(want.sum(), (q, k, v))
        assert torch.allclose(got, want, atol={atol}) and all(torch.allclose(a, b, atol={atol}) for a, b in zip(g1, g2))
        print(attention_native.available()[1])
        print(attention_fused.available(torch.device("cpu"))[1])
        for w in caught:
            print(str(w.message)[:60])
        """
    env = {"CXX": "/bin/false", "AREASER_CACHE_DIR": str(tmp_path / "areaser"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}  # fmt: skip
    done = run_isolated(script, env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def test_a_failing_compiler_falls_back_to_the_same_maths(tmp_path):
    """A broken tool chain (here a C++ compiler that always fails) warns once and still gives the
    fused path's results, then the eager path; nothing raises (float64: TorchInductor's kernels)."""
    lines = train_with_failing_compiler(tmp_path, "float64", 1e-12)
    reason, warnings = lines[1], lines[2:]
    # the backward, run after the failure was recorded, does not warn again
    assert sum("compiling fused kernels failed" in w for w in warnings) == 1
    assert reason.startswith("compiling failed earlier in this process")


def test_strict_determinism_trains_with_the_eager_path():
    """Compiled kernels use the CPU's widest vectors, which --deterministic strict does not pin."""
    from areaser.runs.config import TrainConfig, build_modules

    for mode, backend in (("strict", "eager"), ("auto", "auto")):
        _, model = build_modules(TrainConfig.from_dict({"model": "paper", "deterministic": mode}), 4)
        assert model.attention.backend == backend

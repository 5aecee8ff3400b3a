"""Area attention against brute-force enumeration of every area (float64, plain Python loops)."""

from __future__ import annotations

import math

import pytest
import torch

from areaser.models.areas import (
    KEY_MODES,
    LEARNED_KEY_MODES,
    VALUE_MODES,
    AreaKeyNet,
    area_features,
    area_max,
    area_shapes,
    count_areas,
)
from areaser.models.attention import area_attention
from areaser.models.layers import AreaAttention

TOL = dict(atol=1e-6, rtol=1e-6)
SAMPLE_MODES = [m for m in KEY_MODES if m.startswith("sample")]


# ----------------------------------------------------------------------------- brute force


def enumerate_areas(height: int, width: int, max_h: int, max_w: int) -> list[tuple[int, int, list[int]]]:
    """Every area as (h, w, flat cell indices), tensor2tensor order: shape (h, then w), row-major."""
    areas = []
    for h in range(1, max_h + 1):
        for w in range(1, max_w + 1):
            for i in range(height - h + 1):
                for j in range(width - w + 1):
                    cells = [(i + a) * width + (j + b) for a in range(h) for b in range(w)]
                    areas.append((h, w, cells))
    return areas


def linear(x: torch.Tensor, layer: torch.nn.Linear | None) -> torch.Tensor:
    return x if layer is None else x @ layer.weight.T + layer.bias


def membership(height: int, width: int, max_h: int, max_w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """0/1 matrix [areas, cells] of the enumerated areas, with their heights and widths."""
    areas = enumerate_areas(height, width, max_h, max_w)
    member = torch.zeros(len(areas), height * width, dtype=torch.bool)
    for a, (_, _, cells) in enumerate(areas):
        member[a, cells] = True
    return member, torch.tensor([h for h, _, _ in areas]), torch.tensor([w for _, w, _ in areas])


def brute_force(att: AreaAttention, x: torch.Tensor, noise_seed: int | None = None) -> torch.Tensor:
    """What ``att(x)`` must compute, from the enumerated areas (membership matrices, no box ops).

    Noise (sample modes) is drawn as the module draws it: one N(0, 1) tensor [memories, areas, d].
    """
    B, C, H, W = x.shape
    tokens = x.permute(0, 2, 3, 1).reshape(B, H * W, C)
    q, k, v = (linear(tokens, p) for p in (att.q_proj, att.k_proj, att.v_proj))
    d, heads = att.head_dim, att.heads
    dv = v.shape[-1] // heads
    max_h, max_w = att.max_area
    if att.layout == "rows":
        memories = [(b, hd, [r * W + j for j in range(W)]) for b in range(B) for hd in range(heads) for r in range(H)]
        member, hs, ws = membership(1, W, max_h, max_w)
    else:
        memories = [(b, hd, list(range(H * W))) for b in range(B) for hd in range(heads)]
        member, hs, ws = membership(H, W, max_h, max_w)
    count = member.sum(1, keepdim=True).to(x.dtype)
    mf = member.to(x.dtype)
    noise = None
    if noise_seed is not None:
        torch.manual_seed(noise_seed)
        noise = torch.randn(len(memories), len(member), d, dtype=x.dtype)
    factor = (1 / math.sqrt(d) if att.scale else 1.0) / att.temperature
    net = att.key_net
    out = x.new_zeros(B, H * W, heads, dv)
    for n, (b, hd, pos) in enumerate(memories):
        qs, ks = q[b, pos, hd * d : (hd + 1) * d], k[b, pos, hd * d : (hd + 1) * d]
        vs = v[b, pos, hd * dv : (hd + 1) * dv]
        mean = mf @ ks / count
        std = torch.sqrt(torch.abs(mf @ (ks * ks) / count - mean * mean) + 1e-6)
        kmax = ks[None].masked_fill(~member[..., None], -math.inf).amax(1)
        if noise is not None:
            mean = mean + std * noise[n]
        mode = att.key_mode
        if mode in ("mean", "sample"):
            keys = mean
        elif mode == "max":
            keys = kmax
        else:
            size = torch.cat([net.height_embed.weight[hs - 1], net.width_embed.weight[ws - 1]], dim=1)
            feat = {
                "concat": lambda: torch.cat([mean, std, size], dim=1),
                "max_concat": lambda: torch.cat([kmax, size], dim=1),
                "sum": lambda: size + mean + std,
                "sample_concat": lambda: torch.cat([mean, size], dim=1),
                "sample_sum": lambda: mean + size,
            }[mode]()
            keys = linear(torch.relu(linear(feat, net.mlp[0])), net.mlp[2])
        values = {
            "sum": lambda: mf @ vs,
            "mean": lambda: mf @ vs / count,
            "max": lambda: vs[None].masked_fill(~member[..., None], -math.inf).amax(1),
        }[att.value_mode]()
        weights = torch.softmax(qs @ keys.T * factor, dim=-1)
        if att.top_k:
            kth = weights.sort(dim=-1, descending=True).values[:, att.top_k - 1 : att.top_k]
            weights = torch.where(weights >= kth, weights, torch.zeros_like(weights))
            weights = weights / weights.sum(-1, keepdim=True)
        out[b, pos, hd] = weights @ values
    out = linear(out.reshape(B, H * W, -1), att.out_proj)
    return out.reshape(B, H, W, -1).permute(0, 3, 1, 2)


def check_against_brute_force(att: AreaAttention, x: torch.Tensor, noise_seed: int | None = None) -> None:
    """Values and gradients (input and every parameter) of att(x) equal the brute force."""
    x = x.clone().requires_grad_(True)
    grad_out = torch.randn(x.shape[0], att.dim, *x.shape[2:], dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    if noise_seed is not None:
        torch.manual_seed(noise_seed)
    ours = att(x)
    theirs = brute_force(att, x, noise_seed)
    torch.testing.assert_close(ours, theirs, **TOL)
    params = [x, *att.parameters()]
    g_ours = torch.autograd.grad((ours * grad_out).sum(), params, allow_unused=True)
    g_theirs = torch.autograd.grad((theirs * grad_out).sum(), params, allow_unused=True)
    for a, b in zip(g_ours, g_theirs):
        if b is None:  # e.g. the height embedding in the rows layout
            assert a is None or torch.count_nonzero(a) == 0
        else:
            torch.testing.assert_close(a, b, **TOL)


def make(dim: int = 4, **kw) -> AreaAttention:
    torch.manual_seed(0)
    kw.setdefault("max_area", (2, 3))
    kw.setdefault("block_elements", 300)  # several blocks even on tiny maps: exercises chunking
    return AreaAttention(dim, **kw).double()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 4, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- areas


def test_area_counts_match_the_paper():
    assert [count_areas(64, 20, (3, w), layout="rows") for w in range(1, 6)] == [20, 39, 57, 74, 90]
    assert count_areas(64, 20, (3, 3)) == 10_773
    assert count_areas(64, 20, (3, 3)) == count_areas(64, 20, (3, 3), layout="2d")
    feats = area_features(torch.zeros(1, 64 * 20, 1), 64, (3, 3))
    assert feats.mean.shape == (1, 10_773, 1)
    assert area_shapes(2, 5, (3, 3)) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]


def test_area_features_match_enumeration():
    H, W, D = 4, 5, 3
    mem = torch.randn(2, H * W, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    feats = area_features(mem, H, (3, 2))
    areas = enumerate_areas(H, W, 3, 2)
    assert feats.sum.shape == (2, len(areas), D)
    for a, (h, w, cells) in enumerate(areas):
        block = mem[:, cells]
        torch.testing.assert_close(feats.sum[:, a], block.sum(1), **TOL)
        torch.testing.assert_close(feats.mean[:, a], block.mean(1), **TOL)
        std = torch.sqrt(torch.abs((block**2).mean(1) - block.mean(1) ** 2) + 1e-6)
        torch.testing.assert_close(feats.std[:, a], std, **TOL)
        torch.testing.assert_close(area_max(mem, H, (3, 2))[:, a], block.amax(1), **TOL)
        assert (feats.heights[a].item(), feats.widths[a].item()) == (h, w)


def test_areas_larger_than_the_map_are_skipped(x):
    att = make(max_area=(3, 7))
    check_against_brute_force(att, x[:, :, :2, :])  # 2 x 5 map: no 3-high areas, no 6- or 7-wide ones
    assert count_areas(2, 5, (3, 7)) == sum((2 - h + 1) * (5 - w + 1) for h in (1, 2) for w in range(1, 6))


# ----------------------------------------------------------------------------- every mode, both layouts


@pytest.mark.parametrize("layout", ["2d", "rows"])
@pytest.mark.parametrize("value_mode", VALUE_MODES)
@pytest.mark.parametrize("key_mode", KEY_MODES)
def test_matches_brute_force(x, key_mode, value_mode, layout):
    att = make(key_mode=key_mode, value_mode=value_mode, layout=layout, project=True, scale=True, temperature=0.7)
    att.eval()  # no noise, no dropout: deterministic
    check_against_brute_force(att, x)


@pytest.mark.parametrize("layout", ["2d", "rows"])
@pytest.mark.parametrize("value_mode", VALUE_MODES)
@pytest.mark.parametrize("key_mode", SAMPLE_MODES)
def test_sample_noise_in_training_matches_brute_force(x, key_mode, value_mode, layout):
    att = make(key_mode=key_mode, value_mode=value_mode, layout=layout)
    att.train()
    check_against_brute_force(att, x, noise_seed=7)


@pytest.mark.parametrize("key_mode", ["mean", "max"])
def test_top_k_matches_brute_force(x, key_mode):
    att = make(key_mode=key_mode, top_k=5)
    check_against_brute_force(att, x)


@pytest.mark.parametrize("project", [False, True])
def test_heads_match_brute_force(x, project):
    att = make(heads=2, project=project, head_dim=3 if project else None)
    check_against_brute_force(att, x)
    assert att(x).shape == x.shape


def test_large_logits_stay_exact():
    """Logit gaps beyond the denormal floor (354 in float64, 44 in float32) change nothing visible,
    and logits far beyond exp's range (float32 overflows at 88) do not overflow."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 16, 6, 7, dtype=torch.float64, generator=gen)
    for value_mode in ("sum", "mean"):
        att = make(16, value_mode=value_mode, max_area=(3, 3))
        check_against_brute_force(att, 8 * x)  # float64, gaps up to ~2000
        att = make(16, value_mode=value_mode, max_area=(3, 3), temperature=0.1)
        want = brute_force(att, x)  # gaps up to ~300
        got = att.float()(x.float()).double()
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- dropout and noise


@pytest.mark.parametrize("key_mode", ["mean", "max"])  # fast path, generic path
@pytest.mark.parametrize("value_mode", ["sum", "mean"])
def test_dropout_gradients_are_exact(key_mode, value_mode):
    """With a fixed seed dropout is a deterministic function: the backward (which regenerates or
    replays the masks) must match finite differences."""
    gen = torch.Generator().manual_seed(2)
    q, k = (torch.randn(1, 12, 2, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(2))
    v = torch.randn(1, 12, 2, dtype=torch.float64, generator=gen, requires_grad=True)

    def f(q, k, v):
        torch.manual_seed(11)
        return area_attention(q, k, v, 3, max_area=(2, 2), key_mode=key_mode, value_mode=value_mode,
                              dropout=0.4, temperature=0.5, block_elements=100)  # fmt: skip

    assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=True)
    assert not torch.allclose(f(q, k, v), area_attention(q, k, v, 3, max_area=(2, 2), key_mode=key_mode,
                                                         value_mode=value_mode, temperature=0.5))  # fmt: skip


def test_worker_threads_give_the_same_result():
    """On CPU the blocks run in torch.get_num_threads() Python threads: same values, gradients and
    dropout masks as one thread."""
    gen = torch.Generator().manual_seed(6)
    ts = [torch.randn(3, 40, 4, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(3)]
    results = []
    for threads in (1, 3):
        torch.set_num_threads(threads)
        torch.manual_seed(9)
        out = area_attention(*ts, 5, max_area=(2, 3), dropout=0.3, block_elements=100)
        results.append((out, *torch.autograd.grad(out.square().sum(), ts)))
        assert torch.get_num_threads() == threads  # the workers' one-thread setting does not leak
        with torch.inference_mode():  # blocks write into tensors made in the caller's mode
            torch.testing.assert_close(area_attention(*ts, 5, max_area=(2, 3), block_elements=100),
                                       area_attention(*ts, 5, max_area=(2, 3)))  # fmt: skip
    torch.set_num_threads(1)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_threads_started_during_area_attention_get_the_process_thread_count():
    """A thread's first torch op takes the process-wide thread count: area attention running in
    other threads (a service's requests) must not leave that count at its workers' one."""
    import threading

    gen = torch.Generator().manual_seed(2)
    ts = [torch.randn(4, 40, 4, generator=gen) for _ in range(3)]
    torch.set_num_threads(3)
    stop, counts, running = threading.Event(), [], threading.Semaphore(0)

    def busy():
        torch.set_num_threads(3)
        area_attention(*ts, 5, max_area=(2, 3), block_elements=100)
        running.release()
        while not stop.is_set():
            area_attention(*ts, 5, max_area=(2, 3), block_elements=100)

    def fresh():  # a new thread: its first torch op initialises its count from the process's
        counts.append(torch.get_num_threads())

    try:
        area_attention(*ts, 5, max_area=(2, 3), block_elements=100)  # a warm-up makes the workers
        callers = [threading.Thread(target=busy) for _ in range(2)]
        for t in callers:
            t.start()
            running.acquire()
        for _ in range(30):
            t = threading.Thread(target=fresh)
            t.start()
            t.join()
        stop.set()
        for t in callers:
            t.join()
        assert counts == [3] * 30
        assert torch.get_num_threads() == 3
    finally:
        stop.set()
        torch.set_num_threads(1)


def test_worker_threads_run_serially_without_autograd():
    """Blocks run serially, with grad mode off in every thread (a block writing a grad-tracked result into the
    shared output broke training), and in inference mode only where the caller is in it."""
    from areaser.models.threads import _run_groups

    groups = [[(slice(i, i + 1), slice(0, 4))] for i in range(3)]
    torch.set_num_threads(3)
    try:
        for inference in (False, True):
            seen = []
            with torch.inference_mode(inference):
                _run_groups(lambda i, b, q: seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                                                         torch.get_num_threads())),
                            groups, torch.device("cpu"))  # fmt: skip
            assert seen == [(False, inference, 1)] * 3  # and each worker's ops run serially
    finally:
        torch.set_num_threads(1)


def test_dropout_only_in_training_unless_asked(x):
    plain = make(dropout=0.0).eval()
    att = make(dropout=0.5)
    att.eval()
    torch.testing.assert_close(att(x), plain(x))
    att.train()
    assert not torch.allclose(att(x), att(x))
    faithful = make(dropout=0.5, dropout_at_eval=True).eval()
    assert not torch.allclose(faithful(x), faithful(x))


def test_sample_noise_only_in_training_unless_asked(x):
    att = make(key_mode="sample").eval()
    torch.testing.assert_close(att(x), make(key_mode="mean")(x))
    noisy = make(key_mode="sample", sample_at_eval=True).eval()
    assert not torch.allclose(noisy(x), noisy(x))


# ----------------------------------------------------------------------------- interface


def test_functional_matches_module_layouts(x):
    att = make(max_area=(2, 2)).eval()
    tokens = x.permute(0, 2, 3, 1).reshape(2, 20, 4)
    torch.testing.assert_close(att(x).permute(0, 2, 3, 1).reshape(2, 20, 4),
                               area_attention(tokens, tokens, tokens, 4, max_area=(2, 2)))  # fmt: skip
    rows = make(max_area=(2, 2), layout="rows").eval()
    per_row = x.permute(0, 2, 3, 1).reshape(8, 5, 4)  # [B * H, W, C]
    torch.testing.assert_close(rows(x).permute(0, 2, 3, 1).reshape(8, 5, 4),
                               area_attention(per_row, per_row, per_row, 1, max_area=(1, 2)))  # fmt: skip


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="key_mode"):
        AreaAttention(4, key_mode="median")
    with pytest.raises(ValueError, match="layout"):
        AreaAttention(4, layout="3d")
    with pytest.raises(ValueError, match="even"):
        AreaKeyNet(5, "sum", (2, 2))
    with pytest.raises(ValueError, match="multiple of height"):
        area_attention(torch.zeros(1, 10, 2), torch.zeros(1, 10, 2), torch.zeros(1, 10, 2), 3)
    with pytest.raises(ValueError, match="key_net"):
        area_attention(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), 2, key_mode="concat")
    with pytest.raises(ValueError, match=r"\[batch, 4, height, width\]"):
        AreaAttention(4)(torch.zeros(1, 3, 2, 2))


# ----------------------------------------------------------------------------- the PyPI package


def _package_pair(key_mode, value_mode, layout, H, W, dim):
    pkg = pytest.importorskip("area_attention")
    ours = make(dim, key_mode=key_mode, value_mode=value_mode, layout=layout, scale=True, block_elements=None).eval()
    max_h = 1 if layout == "rows" else 2  # the package cannot take taller areas than its memory
    mem_h = 1 if layout == "rows" else H
    theirs = pkg.AreaAttention(dim, key_mode, value_mode, max_h, 3, mem_h, W).double().eval()
    if key_mode in LEARNED_KEY_MODES:
        theirs.area_height_embedding.weight.data.copy_(ours.key_net.height_embed.weight[:max_h])
        theirs.area_width_embedding.weight.data.copy_(ours.key_net.width_embed.weight)
        for i in (0, 2):
            theirs.area_key_embedding[i].load_state_dict(ours.key_net.mlp[i].state_dict())
    return ours, theirs


@pytest.mark.parametrize("layout", ["2d", "rows"])
@pytest.mark.parametrize("value_mode", VALUE_MODES)
@pytest.mark.parametrize("key_mode", KEY_MODES)
def test_parity_with_area_attention_package(x, key_mode, value_mode, layout):
    B, C, H, W = x.shape
    ours, theirs = _package_pair(key_mode, value_mode, layout, H, W, C)
    tokens = x.permute(0, 2, 3, 1)  # [B, H, W, C]
    mem = tokens.reshape(B * H, W, C) if layout == "rows" else tokens.reshape(B, H * W, C)
    want = theirs(mem, mem, mem).reshape(B, H, W, C).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=1e-5)


def test_area_features_parity_with_package(x):
    pkg = pytest.importorskip("area_attention")
    mem = x.permute(0, 2, 3, 1).reshape(2, 20, 4)
    theirs = pkg.AreaAttention(4, "mean", "sum", 2, 3, 4, 5)._compute_area_features(mem)
    ours = area_features(mem, 4, (2, 3))
    mean, std, total, heights, widths = theirs
    for a, b in ((ours.mean, mean), (ours.std, std), (ours.sum, total)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in ((ours.heights, heights), (ours.widths, widths)):
        assert torch.equal(a.expand(2, -1), b[..., 0].long())


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("key_mode", ["mean", "max"])  # fast path, generic path
def test_cuda_matches_cpu(key_mode):
    gen = torch.Generator().manual_seed(4)
    cpu = [torch.randn(2, 30, 3, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(3)]
    gpu = [t.detach().cuda().requires_grad_(True) for t in cpu]
    kw = dict(max_area=(3, 3), key_mode=key_mode, temperature=0.5, block_elements=200)
    outs = [area_attention(*ts, 5, **kw) for ts in (cpu, gpu)]
    torch.testing.assert_close(outs[1].cpu(), outs[0], **TOL)
    grads = [torch.autograd.grad(o.square().sum(), ts) for o, ts in zip(outs, (cpu, gpu))]
    for a, b in zip(*grads):
        torch.testing.assert_close(b.cpu(), a, **TOL)

    def f(q, k, v):  # dropout masks come from a CUDA generator and must replay in backward
        torch.manual_seed(3)
        return area_attention(q, k, v, 5, dropout=0.3, **kw)

    assert torch.autograd.gradcheck(f, tuple(gpu), fast_mode=True)


# ----------------------------------------------------------------------------- the path tracing and export record


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the loop bounds: fixed by max_area at these sizes
@pytest.mark.parametrize("layout", ["2d", "rows"])
@pytest.mark.parametrize("value_mode", ["sum", "mean"])
def test_the_traced_linear_path_matches_brute_force_at_other_batch_sizes_and_widths(layout, value_mode):
    """Under tracing (what ONNX export records) mean keys with sum / mean values take the area-free linear
    path; traced at one batch size and width, it gives the brute force at others, large logits included."""
    att = make(6, key_mode="mean", value_mode=value_mode, layout=layout, max_area=(3, 3), project=True).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        traced = torch.jit.trace(att, torch.randn(2, 6, 4, 5, dtype=torch.float64, generator=gen), check_trace=False)
        graph = str(traced.inlined_graph)
        for shape, gain in (((2, 6, 4, 5), 1.0), ((3, 6, 4, 9), 1.0), ((1, 6, 4, 7), 40.0)):
            x = gain * torch.randn(*shape, dtype=torch.float64, generator=gen)
            torch.testing.assert_close(traced(x), brute_force(att, x), **TOL)
    assert "aten::pad" in graph or "aten::constant_pad_nd" in graph  # the adjoint chain's pads: no areas gathered


def test_the_adjoint_box_chain_is_the_adjoint_of_the_box_chain():
    """<box_s(x), g_s> summed over shapes equals <x, box_chain_adjoint(g)>, for means and sums."""
    from areaser.models.boxes import box_chain, box_chain_adjoint

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 6, 3, dtype=torch.float64, generator=gen)
    for op in ("mean", "sum"):
        boxes = dict(box_chain(x, 3, 4, op))
        g = {s: torch.randn(b.shape, dtype=torch.float64, generator=gen) for s, b in boxes.items()}
        lhs = sum((boxes[s] * g[s]).sum() for s in boxes)
        torch.testing.assert_close((x * box_chain_adjoint(g, op)).sum(), lhs)

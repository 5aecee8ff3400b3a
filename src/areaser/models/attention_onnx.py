"""Area attention in an ONNX graph: the fast path's algebra in cache-sized blocks, as plain ONNX ops.

Export records the linear case of area attention (mean keys, sum / mean values, no top-k) in two ways:

* the TorchScript exporter records one placeholder node per call, ``areaser::AreaAttention`` (from
  :class:`ExportMarker`), and :func:`expand` replaces each by nested ``Loop`` nodes over memories and
  blocks of queries. A block (:data:`BLOCK_ELEMENTS` position logits) stays in a core's cache, which
  the whole-batch graph did not: it streamed ~14 M area logits per memory through main memory per op;
* ``torch.export`` (the dynamo exporter, the fallback) traces :func:`attend_linear_whole`, the same
  algebra over the whole batch at once.

The block body is the eager fast path's forward (:class:`~areaser.models.attention_fast._LinearAreaAttention`):
position logits ``s = k q^T - m`` ``[H, W, nq]`` (queries innermost, so every box op is a few long
contiguous runs), box sums shape by shape (two slices and an add each), their means' exponentials, the
softmax denominator, the adjoint box chain (pads and adds) onto the positions as ``P``, and ``P^T v / den``.
The clamp of the log-weights at :func:`~areaser.models.attention_fast._floor` runs only in blocks whose
smallest position logit is below it (an ``If``, as the eager path's test), so results equal the eager
path's to float rounding. Everything is opset 18; shapes are computed in the graph, so one file serves
any batch size and input length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from areaser.models.attention_fast import _floor
from areaser.models.boxes import box_chain, box_chain_adjoint

__all__ = ["BLOCK_ELEMENTS", "DOMAIN", "OP", "ExportMarker", "attend_linear_whole", "expand"]

DOMAIN, OP = "areaser", "AreaAttention"
# Position logits per Loop iteration: queries per block = BLOCK_ELEMENTS // memory length, a multiple of 8.
# The paper's 64 x 20 map (1,280 positions), one thread, Intel Xeon (AVX-512, 2 MB L2): 16, 32, 64 and 128
# queries per block took 23.5, 21.4, 23.2 and 27.6 ms per memory (benchmarks/bench_inference.py measures the
# whole model). AMD Zen 3 (AVX2, 512 KB L2): 8, 16, 24, 32, 48 and 64 queries took 49.2, 37.6, 34.4, 33.4, 32.4
# and 33.2 ms. Box sums as fixed-kernel convolutions (Conv 1 -> 9 shapes, the adjoint as ConvTranspose 9 -> 1,
# so ~12 ops per block instead of ~76) took 40 ms there against 32 ms for these slices and pads: ONNX Runtime
# runs one-channel convolutions at about a third of its MatMul rate (as a Conv 9 -> 1, the adjoint: 80 ms).
BLOCK_ELEMENTS = 40_960
_OPSET = 18
_BIG = 2**62  # "to the end" in Slice


def attend_linear_whole(q, k, v, height, max_h, max_w, factor, value_mean: bool) -> Tensor:
    """Mean keys, sum / mean values without materialising areas, in ops that tracing and export record.

    The fast path's forward for the whole batch at once and out of place: position logits
    ``s = f k q^T - m`` ``[N, H, W, Lq]``, their box means are the area logits (the largest is ``m``'s
    1 x 1 area, so ``exp`` never overflows), the exponentials sum to the softmax denominator and go back
    onto the positions through the adjoint box chain (:func:`~areaser.models.boxes.box_chain_adjoint`:
    pads), and the output is ``P^T v / den``. It holds every area's weight for every query
    (``O(N Lq areas)``) but gathers no area keys or values.
    """
    n, lq, _ = q.shape
    s = torch.matmul(k, q.transpose(1, 2)) * factor  # [N, L, Lq]
    s = (s - s.amax(dim=1, keepdim=True)).reshape(n, height, -1, lq)
    floor = _floor(q.dtype)
    den = None
    weights = {}
    for shape, mean in box_chain(s, max_h, max_w):
        e = mean.clamp_min(floor).exp()  # the fast path's clamp, applied always (a no-op above the floor)
        total = e.sum(dim=(1, 2))
        den = total if den is None else den + total
        weights[shape] = e
    p = box_chain_adjoint(weights, "mean" if value_mean else "sum").reshape(n, -1, lq)
    return torch.matmul((p / den[:, None, :]).transpose(1, 2), v)


class ExportMarker(torch.autograd.Function):
    """Area attention that the TorchScript ONNX exporter records as one ``areaser::AreaAttention`` node.

    Its forward is :func:`attend_linear_whole` (what the trace computes); :func:`expand` turns the
    node into standard ops after export.
    """

    @staticmethod
    def forward(ctx, q, k, v, height: int, max_h: int, max_w: int, factor: float, value_mean: bool):  # noqa: ANN001
        return attend_linear_whole(q, k, v, height, max_h, max_w, factor, value_mean)

    @staticmethod
    def symbolic(g, q, k, v, height, max_h, max_w, factor, value_mean):  # noqa: ANN001
        out = g.op(
            f"{DOMAIN}::{OP}", q, k, v, height_i=height, max_h_i=max_h, max_w_i=max_w, factor_f=factor,
            value_mean_i=int(value_mean), floor_f=_floor(torch.float32),
        )  # fmt: skip
        return out.setType(q.type())  # the exporter needs a type: [N, Lq, Dv] is q's wherever Dv = D (every model here)


# ----------------------------------------------------------------------------- graph building


class _Graph:
    """Nodes and constants of one ONNX graph under construction; every name starts with ``prefix``."""

    def __init__(self, prefix: str):
        self.prefix, self.count, self.nodes, self.inits = prefix, 0, [], []

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}{self.count}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value, dtype=np.int64) -> str:  # noqa: ANN001
        from onnx import numpy_helper

        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def graph(self, name: str, inputs: list, outputs: list):  # noqa: ANN201
        from onnx import helper

        return helper.make_graph(self.nodes, self.prefix + name, inputs, outputs, initializer=self.inits)


def _box_sums(g: _Graph, x: str, max_h: int, max_w: int):  # noqa: ANN202
    """Yield ``((h, w), sums)``: box sums of ``x [H, W, nq]`` over its first two axes (box_chain's order)."""
    axis_h, axis_w, zero, last, end = g.const([0]), g.const([1]), g.const([0]), g.const([-1]), g.const([_BIG])
    row = x
    for w in range(1, max_w + 1):
        if w > 1:
            row = g.op("Add", g.op("Slice", row, zero, last, axis_w), g.op("Slice", x, g.const([w - 1]), end, axis_w))
        col = row
        for h in range(1, max_h + 1):
            if h > 1:
                new = g.op("Slice", row, g.const([h - 1]), end, axis_h)
                col = g.op("Add", g.op("Slice", col, zero, last, axis_h), new)
            yield (h, w), col


def _box_sums_adjoint(g: _Graph, weights: dict, max_h: int, max_w: int, masses: list | None) -> str:
    """``sum_s box_sum_s^T(weights[s])`` ``[H, W, nq]``: the chain of :func:`_box_sums` run backwards with pads.

    With ``masses`` a list, appends per width the total of that width's weights (``[nq]``), which the
    vertical pass has summed anyway.
    """

    def pad(x: str, axis: int, before: int, after: int) -> str:
        pads = [0] * 6
        pads[axis], pads[3 + axis] = before, after
        return g.op("Pad", x, g.const(pads))

    rows = {}
    for w in range(1, max_w + 1):
        acc, parts = weights[(max_h, w)], []
        for h in range(max_h, 1, -1):  # col_h = col_{h-1}[:-1] + row[h-1:]
            parts.append(pad(acc, 0, h - 1, 0))
            acc = g.op("Add", weights[(h - 1, w)], pad(acc, 0, 0, 1))
        if masses is not None:
            masses.append(g.op("ReduceSum", acc, g.const([0, 1]), keepdims=0))
        for part in parts:
            acc = g.op("Add", acc, part)
        rows[w] = acc
    acc, parts = rows[max_w], []
    for w in range(max_w, 1, -1):  # row_w = row_{w-1}[:, :-1] + x[:, w-1:]
        parts.append(pad(acc, 1, w - 1, 0))
        acc = g.op("Add", rows[w - 1], pad(acc, 1, 0, 1))
    for part in parts:
        acc = g.op("Add", acc, part)
    return acc


def _weights_branch(prefix: str, s: str, max_h: int, max_w: int, value_mean: bool, floor: float, clamp: bool):
    """If-branch: ``(P [H, W, nq], den [nq])`` of a block's shifted position logits ``s``."""
    from onnx import TensorProto, helper

    g = _Graph(prefix)
    low = g.const(floor, np.float32) if clamp else ""
    weights, masses = {}, []
    for (h, w), sums in _box_sums(g, s, max_h, max_w):
        size = h * w
        mean = sums if size == 1 else g.op("Mul", sums, g.const(1.0 / size, np.float32))
        e = g.op("Exp", g.op("Max", mean, low) if clamp else mean)
        weights[(h, w)] = g.op("Mul", e, g.const(1.0 / size, np.float32)) if value_mean and size > 1 else e
    p = _box_sums_adjoint(g, weights, max_h, max_w, None if value_mean else masses)
    if value_mean:  # each area's weight / size lands on its size positions: P sums to the denominator
        masses.append(g.op("ReduceSum", p, g.const([0, 1]), keepdims=0))
    den = masses[0]
    for m in masses[1:]:
        den = g.op("Add", den, m)
    g.op("Identity", p, out=prefix + "p")
    g.op("Identity", den, out=prefix + "den")
    outputs = [helper.make_tensor_value_info(prefix + n, TensorProto.FLOAT, None) for n in ("p", "den")]
    return g.graph("weights", [], outputs)


def _loop_body(g: _Graph, name: str, index: str, out: str):  # noqa: ANN202
    """The ``Loop`` body graph of ``g``: inputs ``index`` (int64) and a condition passed through, output ``out``."""
    from onnx import TensorProto, helper

    cond = g.name("cond")
    g.op("Identity", cond, out=cond + "_out")
    inputs = [helper.make_tensor_value_info(index, TensorProto.INT64, []),
              helper.make_tensor_value_info(cond, TensorProto.BOOL, [])]  # fmt: skip
    outputs = [helper.make_tensor_value_info(cond + "_out", TensorProto.BOOL, []),
               helper.make_tensor_value_info(out, TensorProto.FLOAT, None)]  # fmt: skip
    return g.graph(name, inputs, outputs)


def _loop_nodes(
    prefix: str, q: str, k: str, v: str, out: str, *, height, max_h, max_w, factor, value_mean, floor, block_elements
):
    """Nodes and constants computing area attention ``out [N, Lq, Dv]`` of ``q [N, Lq, D]``, ``k``, ``v``."""
    from onnx import helper

    max_h = min(max_h, height)
    o = _Graph(prefix)
    qs = o.op("Mul", q, o.const(factor, np.float32)) if factor != 1.0 else q
    shape_q, shape_k = o.op("Shape", q), o.op("Shape", k)
    n, lq = o.op("Gather", shape_q, o.const([0])), o.op("Gather", shape_q, o.const([1]))
    length = o.op("Gather", shape_k, o.const([1]))
    width = o.op("Div", length, o.const([height]))
    # (widths beyond a narrow map's W give empty boxes, which add nothing)
    # queries per block: block_elements // L rounded down to whole 8s, at least 8, at most Lq rounded up to 8s
    eight, seven = o.const([8]), o.const([7])
    nq = o.op("Mul", o.op("Div", o.op("Div", o.const([block_elements]), length), eight), eight)
    nq = o.op("Min", o.op("Max", nq, eight), o.op("Mul", o.op("Div", o.op("Add", lq, seven), eight), eight))
    pad = o.op("Mod", o.op("Sub", nq, o.op("Mod", lq, nq)), nq)
    q_pad = o.op("Pad", qs, o.op("Concat", o.const([0, 0, 0, 0]), pad, o.const([0]), axis=0))
    blocks = o.op("Div", o.op("Add", lq, pad), nq)
    grid = o.op("Concat", o.const([height]), width, nq, axis=0)  # [H, W, nq]

    # inner Loop body: queries [i * nq, (i + 1) * nq) of one memory
    b = _Graph(prefix + "blk_")
    start = b.op("Mul", b.op("Unsqueeze", prefix + "i", b.const([0])), nq)
    q_blk = b.op("Slice", prefix + "qm", start, b.op("Add", start, nq), b.const([0]))  # [nq, D]
    s = b.op("MatMul", prefix + "km", b.op("Transpose", q_blk, perm=[1, 0]))  # [L, nq]
    s = b.op("Reshape", b.op("Sub", s, b.op("ReduceMax", s, b.const([0]), keepdims=1)), grid)
    low = b.op("Less", b.op("ReduceMin", s, keepdims=0), b.const(floor, np.float32))
    branches = {
        f"{name}_branch": _weights_branch(f"{prefix}{name}_", s, max_h, max_w, value_mean, floor, clamp)
        for name, clamp in (("then", True), ("else", False))
    }
    p, den = b.name("p"), b.name("den")
    b.nodes.append(helper.make_node("If", [low], [p, den], **branches))
    p = b.op("Reshape", p, b.op("Concat", b.const([-1]), nq, axis=0))  # [L, nq]
    y = b.op("MatMul", b.op("Transpose", p, perm=[1, 0]), prefix + "vm")  # [nq, Dv]
    b.op("Div", y, b.op("Unsqueeze", den, b.const([1])), out=prefix + "y")
    inner = _loop_body(b, "blocks", prefix + "i", prefix + "y")

    # outer Loop body: memory j
    m = _Graph(prefix + "mem_")
    for src, dst in ((q_pad, "qm"), (k, "km"), (v, "vm")):
        m.op("Gather", src, prefix + "j", axis=0, out=prefix + dst)
    ys = m.name("ys")
    m.nodes.append(helper.make_node("Loop", [m.op("Squeeze", blocks), ""], [ys], body=inner))  # [blocks, nq, Dv]
    dv = m.op("Gather", m.op("Shape", ys), m.const([2]))
    m.op("Reshape", ys, m.op("Concat", m.const([-1]), dv, axis=0), out=prefix + "ym")
    outer = _loop_body(m, "memories", prefix + "j", prefix + "ym")
    full = o.name("full")
    o.nodes.append(helper.make_node("Loop", [o.op("Squeeze", n), ""], [full], body=outer))  # [N, Lq + pad, Dv]
    o.op("Slice", full, o.const([0]), lq, o.const([1]), out=out)
    return o.nodes, o.inits


def expand(model, block_elements: int = BLOCK_ELEMENTS) -> int:  # noqa: ANN001
    """Replace every ``areaser::AreaAttention`` node of ``model`` (an ``onnx.ModelProto``) by standard ops.

    ``block_elements``: position logits per block of queries (see :data:`BLOCK_ELEMENTS`). Returns the
    number of nodes replaced. Raises ``ValueError`` for a model below opset 18.
    """
    graph = model.graph
    found = [i for i, node in enumerate(graph.node) if node.domain == DOMAIN and node.op_type == OP]
    if not found:
        return 0
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < _OPSET:
        raise ValueError(f"area attention exports to ONNX opset {_OPSET} or later, not {opset}")
    from onnx import helper

    nodes, inits = [], []
    for index, node in enumerate(graph.node):
        if index not in found:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        new_nodes, new_inits = _loop_nodes(
            f"area_attention{found.index(index)}_", *node.input, node.output[0],
            height=attrs["height"], max_h=attrs["max_h"], max_w=attrs["max_w"], factor=attrs["factor"],
            value_mean=bool(attrs["value_mean"]), floor=attrs["floor"], block_elements=block_elements,
        )  # fmt: skip
        nodes.extend(new_nodes)
        inits.extend(new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    kept = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return len(found)

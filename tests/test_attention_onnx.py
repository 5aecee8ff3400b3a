"""Area attention in ONNX: the export placeholder, its blocked Loops in ONNX Runtime, and the brute force."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_attention import brute_force, make

from areaser.models import attention_onnx

# the TorchScript exporter is what records the placeholder (torch.export traces attend_linear_whole instead)
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")


def _export(module: torch.nn.Module, x: torch.Tensor, opset: int = 18) -> onnx.ModelProto:
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module, (x,), buf, dynamo=False, opset_version=opset, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch", 3: "width"}, "y": {0: "batch", 3: "width"}},
        )  # fmt: skip
    return onnx.load_from_string(buf.getvalue())


def op_types(graph: onnx.GraphProto) -> list[str]:
    """Op types of a graph and of every subgraph inside it (Loop bodies, If branches), ``domain::`` where not ONNX's."""
    found = []
    for node in graph.node:
        found.append(f"{node.domain}::{node.op_type}" if node.domain else node.op_type)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                found += op_types(a.g)
    return found


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the loop bounds: fixed by max_area at these sizes
@pytest.mark.parametrize("layout", ["2d", "rows"])
@pytest.mark.parametrize("value_mode", ["sum", "mean"])
def test_exported_area_attention_runs_as_blocked_loops_and_matches_brute_force(layout, value_mode):
    """Exported once (batch 2, width 5), the graph gives the brute force at other batch sizes and widths
    (a map narrower than the widest area included) and with logits spread far beyond the clamp's floor,
    with blocks of 8 queries (several per memory, the last one padded)."""
    kw = dict(key_mode="mean", value_mode=value_mode, layout=layout, max_area=(3, 3), project=True)
    reference = make(6, **kw).eval()  # float64
    proto = _export(make(6, **kw).float().eval(), torch.randn(2, 6, 4, 5))  # the same weights (make seeds them)
    assert op_types(proto.graph).count(f"{attention_onnx.DOMAIN}::{attention_onnx.OP}") == 1
    assert attention_onnx.expand(proto, block_elements=64) == 1
    ops = op_types(proto.graph)
    assert ops.count("Loop") == 2 and ops.count("If") == 1 and not any("::" in op for op in ops)
    assert all(o.domain != attention_onnx.DOMAIN for o in proto.opset_import)
    onnx.checker.check_model(proto)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(5)
    for shape, gain in (((2, 6, 4, 5), 1.0), ((3, 6, 4, 9), 1.0), ((1, 6, 4, 2), 1.0), ((2, 6, 4, 7), 40.0)):
        x = gain * torch.randn(*shape, dtype=torch.float64, generator=gen)
        (got,) = session.run(None, {"x": x.float().numpy()})
        with torch.no_grad():
            want = brute_force(reference, x).numpy()
        scale = np.abs(want).max()
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * scale, (shape, gain)


def test_expanding_below_opset_18_is_refused():
    att = make(6, key_mode="mean", value_mode="sum", layout="2d", max_area=(2, 2), project=True).float().eval()
    with pytest.warns(torch.jit.TracerWarning):
        proto = _export(att, torch.randn(1, 6, 4, 5), opset=17)
    with pytest.raises(ValueError, match="opset 18 or later, not 17"):
        attention_onnx.expand(proto)

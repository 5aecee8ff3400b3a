"""Checkpoints: safetensors + JSON, no pickle anywhere, exact round trip of a training state."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from areaser.runs.checkpoint import CheckpointError, load_tree, load_weights, read_header, save_tree, save_weights
from areaser.train.module import compute_loss


def test_tree_round_trip_keeps_types_and_tensors(tmp_path):
    adam = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    adam.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    adam.step()
    tree = {
        "epoch": 3,
        "optimizer_states": [adam.state_dict()],  # int keys, tuples (betas), tensors, None
        "callbacks": {"EarlyStopping{'monitor': 'dev_ua'}": {"best_score": torch.tensor(0.5), "wait_count": 1}},
        "odd": {"inf": math.inf, "nan_free": -math.inf, "tuple": (1, "a"), "__dunder": 1},
        "scalar": torch.tensor(2.0, dtype=torch.float64),
    }
    path = save_tree(tmp_path / "last.safetensors", tree, {"config": {"seed": 0}})
    back, header = load_tree(path)
    assert header["config"] == {"seed": 0} and header["kind"] == "tree"
    assert back["epoch"] == 3
    st, st0 = back["optimizer_states"][0], adam.state_dict()
    assert set(st["state"]) == {0}  # int keys survive
    assert st["param_groups"][0]["betas"] == (0.9, 0.999)
    for k, v in st0["state"][0].items():
        assert torch.equal(st["state"][0][k], v)
    assert back["odd"] == {"inf": math.inf, "nan_free": -math.inf, "tuple": (1, "a"), "__dunder": 1}
    assert back["scalar"].dtype == torch.float64 and float(back["scalar"]) == 2.0
    # a fresh optimizer accepts the restored state
    adam2 = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    adam2.load_state_dict(st)
    # the sidecar JSON is for people; the safetensors header is the truth
    assert (tmp_path / "last.json").is_file()


def test_objects_that_would_need_pickle_are_refused(tmp_path):
    with pytest.raises(TypeError, match="without pickle"):
        save_tree(tmp_path / "x.safetensors", {"fn": lambda: 0})
    assert not (tmp_path / "x.safetensors").exists()


def test_foreign_or_wrong_kind_files_get_a_clear_error(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="no areaser header"):
        read_header(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_header(tmp_path / "junk.safetensors")
    save_weights(tmp_path / "best.safetensors", {"model.w": torch.ones(2)}, {"classes": ["a", "b"]})
    sd, header = load_weights(tmp_path / "best.safetensors")
    assert torch.equal(sd["model.w"], torch.ones(2)) and header["classes"] == ["a", "b"]
    with pytest.raises(CheckpointError, match="weights only"):
        load_tree(tmp_path / "best.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        read_header(tmp_path / "missing.safetensors")


def test_losses():
    torch.manual_seed(0)
    z, y = torch.randn(16, 4), torch.randint(0, 4, (16,))
    ce = compute_loss(z, y, "ce")
    assert torch.allclose(ce, torch.nn.functional.cross_entropy(z, y))
    # the authors' probability loss equals CE where no probability hits the clip
    assert torch.allclose(compute_loss(z, y, "softmax-nll"), ce, atol=1e-6)
    # ... and is clipped where CE is not: a confident wrong answer costs at most -log(1e-7)
    big = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    assert compute_loss(big, torch.tensor([1]), "softmax-nll") == pytest.approx(-math.log(1e-7), rel=1e-4)
    assert compute_loss(big, torch.tensor([1]), "ce") == pytest.approx(100.0)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(compute_loss(z, y, "ce", w), torch.nn.functional.cross_entropy(z, y, weight=w))

"""The paper's CNN: presets, any input length, config round trips, train/eval behaviour, learning."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from areaser.models.cnn import MIN_FRAMES, PRESETS, ModelConfig, build_model, build_model_from_config

SMALL = dict(channels=(4, 4, 8, 8, 8), n_mels=32)  # the same architecture, cheap enough for tests


pytestmark = pytest.mark.usefixtures("one_thread")


def logmel(batch: int, frames: int, n_mels: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, n_mels, frames, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_give_logits_for_any_length(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    assert model.config == PRESETS[name]
    with torch.no_grad():
        for frames in (MIN_FRAMES, 81, 203):
            assert model(logmel(2, frames)).shape == (2, 4)
        assert model(logmel(2, 81).unsqueeze(1)).shape == (2, 4)  # [B, 1, n_mels, T] too


def test_faithful_map_and_head_are_the_papers():
    model = build_model("faithful", dropout=0.0).eval()
    x = logmel(2, 81)
    with torch.no_grad():
        fmap = model.feature_map(x)
        assert fmap.shape == (2, 80, 64, 20)  # frequency concat: 256 rows -> 64 after two poolings
        assert model.classifier.in_features == 80 * 64 * 20
        # at 81 frames the time resize is the identity: logits are dense(flatten(map))
        torch.testing.assert_close(model(x), model.classifier(fmap.flatten(1)))
    att = model.attention
    assert (att.layout, att.key_mode, att.value_mode, att.scale, att.q_proj) == ("rows", "mean", "sum", False, None)


def test_paper_is_2d_with_projections_and_channel_concat_is_an_option():
    model = build_model("paper")
    att = model.attention
    assert (att.layout, att.scale, att.max_area) == ("2d", True, (3, 3)) and att.q_proj is not None
    with torch.no_grad():
        assert model.eval().feature_map(logmel(1, 81)).shape == (1, 80, 64, 20)
        assert build_model("paper", concat="channel").eval().feature_map(logmel(1, 81)).shape == (1, 80, 32, 20)
    assert build_model("cnn").attention is None


def test_short_or_malformed_input_says_what_is_needed():
    model = build_model("paper", **SMALL).eval()
    with pytest.raises(ValueError, match=f"3 frames.*at least {MIN_FRAMES}"):
        model(logmel(1, 3, 32))
    with pytest.raises(ValueError, match=r"\[batch, 32, frames\]"):
        model(logmel(1, 40, 64))


def test_config_round_trips_through_json():
    for cfg in [*PRESETS.values(), dataclasses.replace(PRESETS["paper"], max_area=(4, 4), channels=(8, 8, 8, 8, 8))]:
        back = ModelConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
        assert back == cfg
    torch.manual_seed(0)
    model = build_model("faithful", **SMALL)
    again = build_model_from_config(json.loads(json.dumps(dataclasses.asdict(model.config))))
    again.load_state_dict(model.state_dict())  # a checkpoint's weights fit the stored config


def test_overrides_and_bad_options():
    model = build_model("paper", max_area=[4, 2], key_mode="max", n_classes=6)  # lists, as from JSON
    assert model.config.max_area == (4, 2) and model.attention.key_mode == "max"
    assert model(logmel(1, 40)).shape == (1, 6)
    with pytest.raises(ValueError, match="unknown model 'vgg'.*faithful, paper, cnn"):
        build_model("vgg")
    with pytest.raises(ValueError, match="unknown model option.*max_areas"):
        build_model("paper", max_areas=(2, 2))
    with pytest.raises(ValueError, match="layout='3d'.*2d, rows"):
        build_model("paper", layout="3d")


def test_dropout_train_eval_behaviour():
    x = logmel(2, 40, 32)
    torch.manual_seed(0)
    paper = build_model("paper", **SMALL).eval()
    with torch.no_grad():
        torch.testing.assert_close(paper(x), paper(x))  # eval: deterministic
        faithful = build_model("faithful", **SMALL).eval()
        assert not torch.allclose(faithful(x), faithful(x))  # the authors' test-time dropout
        paper.train()
        assert not torch.allclose(paper(x), paper(x))


def test_frozen_batchnorm_never_uses_batch_statistics():
    torch.manual_seed(0)
    model = build_model("paper", batchnorm="frozen", dropout=0.0, **SMALL)
    x = 3.0 + logmel(4, 40, 32)
    with torch.no_grad():
        train_out = model.train()(x)
        torch.testing.assert_close(model.eval()(x), train_out)
    assert torch.count_nonzero(model.conv2[2].running_mean) == 0
    proper = build_model("paper", dropout=0.0, **SMALL).train()
    proper(x)
    assert torch.count_nonzero(proper.conv2[2].running_mean) > 0


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_learns(name):
    """A few Adam steps on a small batch: every parameter gets a gradient and the loss falls."""
    torch.manual_seed(0)
    model = build_model(name, **SMALL).train()
    x, y = logmel(8, 40, 32, seed=1), torch.arange(8) % 4
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.5 * losses[0]


@pytest.mark.parametrize("name", ["paper", "faithful"])
def test_traced_model_matches_eager_for_other_batches_and_lengths(name):
    """Tracing (as ONNX export does) records attention without baked-in shapes."""
    torch.manual_seed(0)
    model = build_model(name, dropout_at_eval=False, **SMALL).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks, constant by design
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace itself; ONNX export still uses it
        traced = torch.jit.trace(model, logmel(2, 40, 32))
        for batch, frames in ((3, 40), (1, 61)):
            x = logmel(batch, frames, 32, seed=batch)
            torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="dropout cannot be exported"):
            torch.jit.trace(build_model(name, **SMALL).train(), logmel(2, 40, 32))

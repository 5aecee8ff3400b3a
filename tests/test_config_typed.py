"""The model's options in a training config are typed: checked against ModelConfig when the config is made."""

from __future__ import annotations

import pytest

from areaser.models.cnn import ModelConfig
from areaser.runs.config import ConfigError, config_with


def _cfg(**kw):
    return config_with(None, manifest="m.csv", **kw)


def test_overrides_give_the_typed_model_config_of_the_preset() -> None:
    m = _cfg(model="cnn", model_overrides={"dropout": 0.25, "channels": [8, 8, 16, 16, 16]}).resolved().model_config(7)
    assert isinstance(m, ModelConfig)
    # the cnn preset's own choices stay, the overrides replace theirs, n_mels comes from the features (128)
    assert (m.arch, m.head, m.dropout, m.channels, m.n_classes, m.n_mels) == (
        "cnn", "global_pool", 0.25, (8, 8, 16, 16, 16), 7, 128,
    )  # fmt: skip


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dropout": "high"}, "dropout must be a finite number"),
        ({"max_areas": [3, 3]}, "unknown model option.*max_areas"),
        ({"max_area": [0, 3]}, "max_area must be"),
        ({"heads": 2.5}, "heads"),
        ({"n_mels": 64}, "n_mels cannot be overridden.*features.n_mels"),
    ],
)
def test_a_bad_model_option_is_refused_when_the_config_is_made(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _cfg(model_overrides=overrides).resolved()


def test_a_baseline_takes_no_model_options_and_an_unknown_model_lists_every_choice() -> None:
    with pytest.raises(ConfigError, match="classical baseline"):
        _cfg(model="egemaps-lr", model_overrides={"dropout": 0.1}).resolved()
    _cfg(model="egemaps-svm").resolved()  # no options: fine
    with pytest.raises(
        ConfigError, match="unknown model 'vgg'; choose one of: faithful, paper, cnn, egemaps-lr, egemaps-svm"
    ):
        _cfg(model="vgg").resolved().model_config()


def test_print_config_refuses_a_bad_option_with_one_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from areaser.cli import app

    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "m.csv"), "--set", 'model_overrides.dropout="high"', "--print-config"]
    )
    assert result.exit_code == 2 and "dropout must be a finite number" in result.output

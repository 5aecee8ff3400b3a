"""Experiment files in YAML (#16, item 7): `-c x.yaml` on train / cv and TrainConfig.load read YAML as they read
JSON, with the same strict key check; a syntax error names the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from areaser.cli import app
from areaser.runs.config import ConfigError, TrainConfig

# the same partial experiment, twice: nested sections, lists, null, a float written 1e-3 and a bool
JSON_CONFIG = {
    "manifest": "data/emodb.csv",
    "protocol": "lospk",
    "label_set": "neutral,happy,sad,angry",
    "model": "cnn",
    "model_overrides": {"channels": [8, 8, 16, 16, 16], "dropout": 0.25},
    "features": {"n_mels": 32, "hop_length": 800, "fmax": None},
    "segments": {"test_hop_s": 0.8},
    "lr": 1e-3,
    "epochs": 7,
    "patience": None,
    "tensorboard": False,
}
YAML_CONFIG = """\
# the experiment of JSON_CONFIG, in YAML
manifest: data/emodb.csv
protocol: lospk
label_set: neutral,happy,sad,angry
model: cnn
model_overrides:
  channels: [8, 8, 16, 16, 16]
  dropout: 0.25
features:
  n_mels: 32
  hop_length: 800
  fmax: null
segments:
  test_hop_s: 0.8
lr: 1e-3        # a number in YAML 1.2 (PyYAML alone would read the string "1e-3")
epochs: 7
patience: ~
tensorboard: false
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _print_config(args: list[str]) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["train", *args, "--print-config"])
    return r.exit_code, r.output


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_gives_the_same_resolved_config_as_the_equivalent_json(tmp_path: Path, suffix: str) -> None:
    js = _write(tmp_path, "exp.json", json.dumps(JSON_CONFIG))
    ya = _write(tmp_path, f"exp{suffix}", YAML_CONFIG)
    assert TrainConfig.read_file(ya) == TrainConfig.read_file(js) == JSON_CONFIG
    assert TrainConfig.load(ya) == TrainConfig.load(js)
    assert TrainConfig.load(ya).resolved() == TrainConfig.load(js).resolved()
    # the command line: defaults < preset < -c FILE < options < --set, the file in either format
    code_j, out_j = _print_config(["-c", str(js), "--preset", "cpu", "--seed", "3"])
    code_y, out_y = _print_config(["-c", str(ya), "--preset", "cpu", "--seed", "3"])
    assert code_j == code_y == 0, out_y
    assert out_y == out_j  # --print-config stays JSON
    d = json.loads(out_y)
    assert d["lr"] == 1e-3 and d["model_overrides"]["channels"] == [8, 8, 16, 16, 16] and d["seed"] == 3
    assert d["features"]["norm"] == "dataset"  # the preset's, kept under the file's partial features


def test_a_run_config_json_round_trips_through_yaml(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    cfg = TrainConfig(manifest="m.csv", name="x").resolved()
    ya = _write(tmp_path, "run.yaml", yaml.safe_dump(cfg.to_dict()))
    assert TrainConfig.load(ya) == cfg


@pytest.mark.parametrize(
    "text, key",
    [
        ("manifest: m.csv\nlearning_rate: 0.01\n", "learning_rate"),
        ("manifest: m.csv\nfeatures:\n  n_mel: 64\n", "n_mel"),  # nested: named with its section
    ],
)
def test_an_unknown_key_in_yaml_is_refused_by_name(tmp_path: Path, text: str, key: str) -> None:
    ya = _write(tmp_path, "exp.yaml", text)
    with pytest.raises(ConfigError, match=rf"exp\.yaml: .*unknown key\(s\) \['{key}'\]"):
        TrainConfig.load(ya)
    code, out = _print_config(["-c", str(ya)])
    assert code == 2 and key in out and "exp.yaml" in out and "Traceback" not in out


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    ya = _write(tmp_path, "exp.yaml", "manifest: m.csv\nlr: 0.1\nepochs: 3\nlr: 0.2\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:4: .*'lr' given twice"):
        TrainConfig.read_file(ya)


@pytest.mark.parametrize(
    "text, line",
    [
        ("manifest: m.csv\nfeatures:\n  n_mels: 32\n   hop_length: 800\n", 4),  # bad indentation
        ("manifest: m.csv\nepochs: 3\nmodel_overrides: {channels: [4, 4\n", 4),  # unclosed flow collection
        ("manifest: m.csv\nname: 'unclosed\n", 3),
    ],
)
def test_a_yaml_syntax_error_is_one_line_naming_the_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    ya = _write(tmp_path, "broken.yaml", text)
    with pytest.raises(ConfigError) as e:
        TrainConfig.load(ya)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{ya}:{line}: not valid YAML (line {line}, ")
    code, out = _print_config(["-c", str(ya)])
    assert code == 2 and f"broken.yaml:{line}" in out.replace("\n", "") and "Traceback" not in out


@pytest.mark.parametrize(
    "text, holds",
    [
        ("- manifest: m.csv\n- lr: 0.1\n", "a list"),
        ("just a string\n", "a str"),
        ("# only a comment\n", "nothing"),
    ],
)
def test_a_yaml_whose_top_level_is_not_a_mapping_is_refused(tmp_path: Path, text: str, holds: str) -> None:
    ya = _write(tmp_path, "exp.yml", text)
    with pytest.raises(ConfigError, match=rf"exp\.yml: a config is a YAML mapping .* the file holds {holds}"):
        TrainConfig.load(ya)
    code, out = _print_config(["-c", str(ya)])
    assert code == 2 and "YAML mapping" in out.replace("\n", " ") and "Traceback" not in out


def test_yaml_tags_that_build_objects_are_refused(tmp_path: Path) -> None:
    ya = _write(tmp_path, "evil.yaml", "manifest: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml:1: not valid YAML .*python/object/apply"):
        TrainConfig.load(ya)


def test_a_json_list_is_refused_too_and_json_errors_keep_their_wording(tmp_path: Path) -> None:
    js = _write(tmp_path, "exp.json", "[1, 2]")
    code, out = _print_config(["-c", str(js)])
    assert code == 2 and "JSON object" in out.replace("\n", " ")
    bad = _write(tmp_path, "bad.json", '{"lr": 0.1,}')
    with pytest.raises(ConfigError, match=r"bad\.json: not a readable JSON config \(.*line 1"):
        TrainConfig.load(bad)

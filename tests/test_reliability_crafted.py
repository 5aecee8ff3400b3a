"""Crafted and damaged model files (#14, item 9): run directories and ``.onnx`` files whose configs or metadata hold
absurd sizes, wrong types, missing keys, invalid JSON or weights of another shape are refused with one error line
naming the file and the field, and absurd sizes are refused before anything is allocated.

Every file here is a real one (a run trained on the built-in corpus, its ONNX export) edited the way a person or a
broken tool could: the headers are rewritten with their checksums recomputed, so what is under test is the
validation, not the checksum."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Callable

import onnx
import pandas as pd
import pytest
from conftest import TINY_PAPER

from areaser.runs.checkpoint import (
    CheckpointError,
    load_run,
    load_tree,
    load_weights,
    run_paths,
    save_tree,
    save_weights,
)
from areaser.runs.config import config_with
from areaser.serve.export import OnnxBackend, export_onnx, read_metadata
from areaser.serve.recognizer import Recognizer
from areaser.train.lifecycle import train

TINY = TINY_PAPER
# what a refusal may cost: Python/numpy allocations (tracemalloc) and growth of the process' peak RSS
MAX_TRACED = 64 * 2**20
MAX_RSS_GROWTH_KIB = 256 * 2**10
AREASER = str(Path(sys.executable).parent / "areaser")


@pytest.fixture(scope="module")
def trained(builtin_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run of the paper's model (area attention) trained for an epoch; tests edit copies of it."""
    out = tmp_path_factory.mktemp("runs")
    cfg = config_with(None, manifest=str(builtin_corpus / "manifest.csv"), out_dir=str(out), name="tiny", **TINY)
    train(cfg, log=None)
    return out / "tiny"


@pytest.fixture(scope="module")
def exported(trained: Path) -> Path:
    return export_onnx(trained, trained.parent / "tiny.onnx")


@pytest.fixture(scope="module")
def audio(builtin_corpus: Path) -> str:
    return str(builtin_corpus / pd.read_csv(builtin_corpus / "manifest.csv")["path"].iloc[0])


def copy_run(trained: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / trained.name
    shutil.copytree(trained, dst)
    return dst


DROP = object()  # a value in ``changes``: remove the key


def changed(doc: dict, changes: dict[str, object]) -> dict:
    """``doc`` with ``changes`` applied: dotted keys (``"config.features.n_mels"``) to new values or :data:`DROP`."""
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        d = doc
        for p in parents:
            d = d[p]
        if value is DROP:
            del d[last]
        else:
            d[last] = value
    return doc


def craft_best(run: Path, changes: dict[str, object]) -> Path:
    """Rewrite the header of ``run``'s ``best.safetensors`` with ``changes`` (see :func:`changed`), checksum valid."""
    path = run_paths(run)["best"]
    state, header = load_weights(path)
    save_weights(path, state, changed(header, changes))
    return path


def craft_onnx(src: Path, dst: Path, changes: dict[str, object] | None = None, raw: str | None = None) -> Path:
    """A copy of ``src`` whose areaser metadata has ``changes`` (or is the text ``raw``)."""
    proto = onnx.load(str(src))
    (entry,) = [p for p in proto.metadata_props if p.key == "areaser"]
    entry.value = raw if raw is not None else json.dumps(changed(json.loads(entry.value), changes or {}))
    onnx.save(proto, str(dst))
    return dst


def refused_cheaply(fn: Callable[[], object], error: type[Exception] = CheckpointError) -> str:
    """``fn()`` raises ``error``, having allocated little on the way; returns the message (one line)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        with pytest.raises(error) as e:
            fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_TRACED, f"{peak / 2**20:.0f} MiB allocated before the refusal"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < MAX_RSS_GROWTH_KIB
    message = str(e.value)
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- run directories: absurd sizes


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("features.n_mels", 10**7, "n_mels"),  # a 10^7 x 401 float64 mel basis: 32 GB
        ("features.n_fft", 10**10, "n_fft"),  # an STFT window of 10^10 samples: 80 GB
        ("features.sr", 10**9, "sr"),  # builds; then every 2 s window is 2 x 10^9 samples
        ("segments.win_s", 1e9, "win_s"),  # builds; then one window is 1.6 x 10^13 samples
        ("model_overrides.channels", [4, 4, 8, 8, 10**6], "channels"),  # Q/K/V projections of 10^12 weights
    ],
)
def test_absurd_sizes_in_a_run_are_refused_before_building(trained, tmp_path, key, value, field):
    run = copy_run(trained, tmp_path)
    best = craft_best(run, {f"config.{key}": value})
    message = refused_cheaply(lambda: load_run(run))
    assert message.startswith(f"{best}: ") and field in message


@pytest.mark.filterwarnings("ignore:Empty filters detected")  # 512 bands of an 800-point STFT: some are empty
def test_sizes_each_in_bounds_whose_product_is_absurd_are_refused(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    # a dense head over a 1024 x 256 x 8192 map: 8.6 x 10^9 weights (34 GB), every option within its own bound
    overrides = {"channels": [4, 4, 8, 8, 1024], "head": "flatten", "ref_frames": 32768, "max_area": [2, 2]}
    best = craft_best(run, {"config.model_overrides": overrides, "config.features.n_mels": 512})
    message = refused_cheaply(lambda: load_run(run))
    assert message.startswith(f"{best}: ") and "parameters" in message


def test_a_window_giving_a_huge_spectrogram_is_refused(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    # 60 s at 192 kHz with a 1-sample hop: 11.5 M frames of 401 bins per window
    best = craft_best(
        run, {"config.features.sr": 192_000, "config.features.hop_length": 1, "config.segments.win_s": 60.0}
    )
    message = refused_cheaply(lambda: Recognizer.load(run))
    assert message.startswith(f"{best}: config.segments: ") and "frames" in message


# ----------------------------------------------------------------------------- run directories: types, keys, shapes


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("features.n_mels", "32", "n_mels"),  # a string where a number is
        ("segments", [2.0, 1.0, 0.4], "segments"),  # a list where an object is
        ("model_overrides.max_area", 2, "max_area"),  # a number where a list is
        ("model_overrides.channels", [4, 4, 8.5, 8, 8], "channels"),  # a fraction of a channel
    ],
)
def test_wrong_types_in_a_run_name_the_file_and_field(trained, tmp_path, key, value, field):
    run = copy_run(trained, tmp_path)
    best = craft_best(run, {f"config.{key}": value})
    message = refused_cheaply(lambda: Recognizer.load(run))
    assert message.startswith(f"{best}: ") and field in message


@pytest.mark.parametrize("key", ["classes", "config"])
def test_missing_header_keys_are_one_error_not_a_key_error(trained, tmp_path, key):
    run = copy_run(trained, tmp_path)
    best = craft_best(run, {key: DROP})
    message = refused_cheaply(lambda: load_run(run))
    assert message.startswith(f"{best}: ") and key in message


def test_a_config_without_segments_loads_with_the_defaults_the_model_was_built_with(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    craft_best(run, {"config.segments": DROP})
    rec = Recognizer.load(run)
    assert rec.config.win_s == 2.0 and rec.config.hop_s == 0.4


@pytest.mark.parametrize(
    "classes, reason",
    [
        (["neutral", "happy", "sad"], "weights do not fit"),  # 3 names, 4 outputs
        (["neutral", "happy", "happy", "angry"], "more than once"),  # scores would be labelled twice
        (["neutral", "", "sad", "angry"], "empty"),
        ("neutral,happy,sad,angry", "list of names"),
    ],
)
def test_a_class_list_that_does_not_fit_is_refused(trained, tmp_path, classes, reason):
    run = copy_run(trained, tmp_path)
    best = craft_best(run, {"classes": classes})
    message = refused_cheaply(lambda: load_run(run))
    assert message.startswith(f"{best}: ") and reason in message


def test_weights_of_another_shape_than_the_config_are_one_error(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    best = craft_best(run, {"config.model_overrides.channels": [4, 4, 8, 8, 16]})
    message = refused_cheaply(lambda: load_run(run))
    assert message.startswith(f"{best}: weights do not fit") and "size mismatch for conv5" in message


def test_a_training_state_without_weights_or_epoch_is_one_error(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    last = run_paths(run)["last"]
    tree, header = load_tree(last)
    save_tree(last, {k: v for k, v in tree.items() if k != "state_dict"}, header)
    assert refused_cheaply(lambda: load_run(run, "last")).startswith(f"{last}: corrupted: no state_dict")
    save_tree(last, tree, {**header, "epoch": "three"})
    message = refused_cheaply(lambda: load_run(run, "last"))
    assert message.startswith(f"{last}: corrupted: epoch")


# ----------------------------------------------------------------------------- ONNX files


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("features.n_mels", 10**7, "n_mels"),  # LogMel's mel basis: 32 GB
        ("features.n_fft", 10**10, "n_fft"),  # LogMel's window: 80 GB
        ("features.sr", 10**12, "sr"),  # builds; then a 2 s window is 2 x 10^12 samples
        ("segments.win_s", 1e9, "win_s"),  # builds; then one window is 1.6 x 10^13 samples
        ("features.sr", "16000", "sr"),  # a string where a number is
        ("features", [16000, 800], "features"),  # a list where an object is
        ("segments.hop_s", 0.0, "hop_s"),  # a window every 0 s
    ],
)
def test_absurd_or_mistyped_onnx_metadata_is_refused_before_building(exported, tmp_path, key, value, field):
    path = craft_onnx(exported, tmp_path / "m.onnx", {key: value})
    message = refused_cheaply(lambda: OnnxBackend(path), ValueError)
    assert message.startswith(f"{path}: ") and field in message


def test_invalid_json_in_onnx_metadata_names_the_file(exported, tmp_path):
    path = craft_onnx(exported, tmp_path / "m.onnx", raw='{"format": "areaser-onnx/1", "classes": [')
    message = refused_cheaply(lambda: read_metadata(path), ValueError)
    assert message == f"{path}: corrupted: the areaser metadata is not valid JSON"


@pytest.mark.parametrize("key", ["segments", "classes", "features_state"])
def test_missing_onnx_metadata_keys_are_one_error(exported, tmp_path, key):
    path = craft_onnx(exported, tmp_path / "m.onnx", {key: DROP})
    message = refused_cheaply(lambda: Recognizer.load(path), ValueError)
    assert message.startswith(f"{path}: {key}: missing")


def test_onnx_classes_must_match_the_graph_outputs(exported, tmp_path):
    path = craft_onnx(exported, tmp_path / "m.onnx", {"classes": ["neutral", "happy", "sad"]})  # 4 scores
    message = refused_cheaply(lambda: read_metadata(path), ValueError)
    assert message == f"{path}: the graph scores [4] classes, the metadata names 3"


def test_onnx_features_must_match_the_graph_input(exported, tmp_path):
    path = craft_onnx(exported, tmp_path / "m.onnx", {"features.n_mels": 64})  # the graph takes 32
    message = refused_cheaply(lambda: read_metadata(path), ValueError)
    assert message.startswith(f"{path}: the graph takes input [None, 32, None]")


@pytest.mark.parametrize(
    "state, reason",
    [
        ({"data": [0.0] * 3, "dtype": "float32"}, "size mismatch for mean"),  # 3 bands of statistics, 32 bands
        ({"data": [0.0] * 32, "dtype": "load"}, "dtype"),  # not a dtype: no attribute of torch is looked up
        ({"data": [[0.0], 1.0], "dtype": "float32"}, "not an array of numbers"),  # ragged
    ],
)
def test_onnx_feature_statistics_that_do_not_fit_are_one_error(exported, tmp_path, state, reason):
    path = craft_onnx(exported, tmp_path / "m.onnx", {"features_state.mean": state})
    message = refused_cheaply(lambda: OnnxBackend(path), ValueError)
    assert message.startswith(f"{path}: ") and reason in message


# ----------------------------------------------------------------------------- the command line


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    from areaser.cli import main

    monkeypatch.setattr(sys, "argv", ["areaser", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def test_cli_predict_with_a_crafted_run_is_one_line_naming_the_file(trained, tmp_path, audio, monkeypatch, capsys):
    run = copy_run(trained, tmp_path)
    best = craft_best(run, {"config.features.n_mels": 10**7})
    code, err = _cli(["predict", str(run), audio, "--no-progress"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(best) in err and "n_mels" in err


def test_cli_evaluate_with_an_absurd_window_in_config_json_is_one_line(trained, tmp_path, monkeypatch, capsys):
    run = copy_run(trained, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["segments"]["win_s"] = 1e9
    (run / "config.json").write_text(json.dumps(cfg))
    code, err = _cli(["evaluate", str(run)], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{run / 'config.json'}: config.segments: " in err and "win_s" in err


def test_cli_predict_with_corrupt_onnx_metadata_is_one_line_in_a_real_process(exported, tmp_path, audio):
    path = craft_onnx(exported, tmp_path / "m.onnx", raw="not json")
    r = subprocess.run(
        [AREASER, "predict", str(path), audio, "--no-progress"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {path}: corrupted: the areaser metadata is not valid JSON"]


@pytest.mark.parametrize("name", ["split.json", "report.json"])
def test_cli_evaluate_with_a_damaged_json_file_in_the_run_is_one_line(trained, tmp_path, monkeypatch, capsys, name):
    run = copy_run(trained, tmp_path)
    (run / name).write_text('{"test_files": [1, 2')  # cut short, as by a full disk
    code, err = _cli(["evaluate", str(run)], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{run / name}: not a readable JSON file" in err

"""Temperature scaling (issue #16, item 4): ECE by hand, T recovered from synthetic logits, a real tiny
run's calibration in its report, calibrated probabilities from `Recognizer.load` and through ONNX."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from areaser.runs.calibration import (
    NOT_HELD_OUT,
    calibrate,
    calibrated_probs,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from areaser.runs.checkpoint import load_run
from areaser.runs.config import config_with
from areaser.runs.metrics import utterance_probs
from areaser.serve.recognizer import Recognizer
from areaser.train.lifecycle import train

# ----------------------------------------------------------------------------- the functional core


def test_ece_equals_a_hand_computation() -> None:
    probs = np.array([[0.9, 0.1], [0.95, 0.05], [0.3, 0.7], [0.72, 0.28], [0.55, 0.45]])
    y = np.array([0, 1, 1, 1, 0])
    # 15 bins of width 1/15: 0.9 in (13/15, 14/15], 0.95 in (14/15, 1], 0.70 and 0.72 in (10/15, 11/15],
    # 0.55 in (8/15, 9/15]. Per bin |accuracy - mean confidence| weighted by its share of the 5 rows:
    #   0.9 right: 1/5 * |1 - 0.9| = 0.02;  0.95 wrong: 1/5 * 0.95 = 0.19;
    #   0.70 right + 0.72 wrong: 2/5 * |0.5 - 0.71| = 0.084;  0.55 right: 1/5 * 0.45 = 0.09
    assert expected_calibration_error(probs, y) == pytest.approx(0.02 + 0.19 + 0.084 + 0.09, abs=1e-12)
    # one bin: |accuracy 3/5 - mean confidence (0.9 + 0.95 + 0.7 + 0.72 + 0.55) / 5|
    assert expected_calibration_error(probs, y, n_bins=1) == pytest.approx(abs(0.6 - 3.82 / 5), abs=1e-12)
    curve = reliability_curve(probs, y)
    assert curve["count"][10] == 2 and curve["accuracy"][10] == 0.5 and curve["confidence"][10] == pytest.approx(0.71)
    assert sum(curve["count"]) == 5 and curve["confidence"][0] is None
    # perfectly calibrated in expectation is not 0 on few rows, but a sure and right model is
    assert expected_calibration_error(np.eye(3), [0, 1, 2]) == 0.0


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_fitted_temperature_recovers_the_one_that_made_the_logits(t_true: float) -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(0.0, 2.0, (6000, 4))  # calibrated logits: labels are drawn from their softmax
    p = np.exp(true - true.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    seen = true * t_true  # what an over- (t > 1) or under-confident (t < 1) model outputs
    t = fit_temperature(seen, y)
    assert t == pytest.approx(t_true, rel=0.06)
    # scaling each row by the fitted T undoes it: softmax(seen / T) ~ softmax(true)
    assert np.abs(calibrated_probs(seen, t) - p).max() < 0.1


def test_the_label_never_changes_with_the_temperature() -> None:
    # windows that disagree: dividing *window* logits by T before the prob mean would flip this utterance
    z = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert utterance_probs(z / 1.0).argmax() == 1 and utterance_probs(z / 5.0).argmax() == 0
    rng = np.random.default_rng(1)
    zs = rng.normal(0, 3, (400, 5))
    idx = rng.integers(0, 60, 400)
    idx[:60] = np.arange(60)
    for decision in ("prob", "logits"):
        base = utterance_probs(zs, idx, 60, decision)
        for t in (0.1, 0.7, 1.0, 3.0, 20.0):
            p = calibrated_probs(zs, t, idx, 60, decision)
            assert np.allclose(p.sum(1), 1.0)
            assert (p.argmax(1) == base.argmax(1)).all()
    # for the logits decision it is the window logits divided by T before the softmax
    mean = torch.zeros(60, 5, dtype=torch.float64).index_add_(0, torch.as_tensor(idx), torch.as_tensor(zs))
    mean /= torch.bincount(torch.as_tensor(idx), minlength=60)[:, None]
    np.testing.assert_allclose(calibrated_probs(zs, 2.0, idx, 60, "logits"), (mean / 2.0).softmax(-1).numpy(), 1e-9)
    assert np.allclose(calibrate(base, 1.0), base)


# ----------------------------------------------------------------------------- a real tiny run


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    return tiny_run  # read only: tests that change a run copy it first


def _speech_like(path: Path, seconds: float) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    y = np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(len(t))
    sf.write(str(path), (0.3 * y).astype(np.float32), 16000, subtype="PCM_16")
    return path


def test_a_run_records_its_calibration_and_draws_the_diagram(run: Path) -> None:
    report = json.loads((run / "report.json").read_text())
    cal = report["calibration"]
    rec = json.loads((run / "calibration.json").read_text())
    assert cal["calibrated"] and rec["calibrated"]
    assert cal["temperature"] == rec["temperature"] > 0 and cal["temperature"] != 1.0
    assert cal["n_dev"] == rec["n_dev"] == int(report["info"]["utterances train / dev / test"].split(" / ")[1])
    for k in ("ece_before", "ece_after", "nll_before", "nll_after"):
        assert 0 <= cal[k] < 10
    assert rec["dev"]["nll_after"] <= rec["dev"]["nll_before"] + 1e-12  # T minimises the dev NLL (T = 1 included)
    assert (run / "reliability.png").stat().st_size > 1000
    md = (run / "report.md").read_text()
    assert "## Calibration" in md and "![reliability diagram](reliability.png)" in md
    assert f"{100 * cal['ece_before']:.2f}" in md and f"{100 * cal['ece_after']:.2f}" in md
    assert sum(cal["reliability"]["before"]["count"]) == cal["n_test"] == report["test"]["n"]
    # the scores are those of the decision, whatever T
    header = json.loads((run / "checkpoints" / "best.json").read_text())
    assert rec["weights"]["checksum"] == header["checksum"]


def test_a_run_without_a_held_out_dev_part_is_not_calibrated(builtin_corpus: Path, tmp_path: Path, tiny_cnn) -> None:
    cfg = config_with(
        None,
        manifest=str(builtin_corpus / "manifest.csv"),
        out_dir=str(tmp_path),
        name="d",
        train_on_dev=True,
        **tiny_cnn,
    )
    report = train(cfg, log=None)
    cal = report["calibration"]
    assert cal["status"] == NOT_HELD_OUT and cal["temperature"] == 1.0 and not cal["calibrated"]
    assert cal["ece_before"] == cal["ece_after"]
    assert json.loads((tmp_path / "d" / "calibration.json").read_text())["temperature"] == 1.0
    assert NOT_HELD_OUT in (tmp_path / "d" / "report.md").read_text()
    assert Recognizer.load(tmp_path / "d").config.temperature == 1.0


def test_recognizer_probabilities_are_the_calibrated_decision_and_labels_stay(
    run: Path, builtin_corpus: Path, tmp_path: Path
) -> None:
    t = json.loads((run / "calibration.json").read_text())["temperature"]
    rec = Recognizer.load(run)
    assert rec.config.temperature == t
    loaded = load_run(run)
    # one 2 s window: the probabilities are softmax(logits / T)
    one = _speech_like(tmp_path / "one.wav", 2.0)
    wave = torch.from_numpy(sf.read(str(one), dtype="float32")[0])[None]
    with torch.no_grad():
        logits = loaded.model(loaded.features(wave))
    got = rec.predict(one)
    np.testing.assert_allclose(got.probabilities, (logits / t).softmax(-1)[0].numpy(), atol=2e-6)
    np.testing.assert_allclose(got.timeline[0].probabilities, got.probabilities, atol=2e-6)
    # many windows, every file of the corpus: softmax(log(p) / T) of the T = 1 decision; the same labels
    files = [builtin_corpus / p for p in pd.read_csv(builtin_corpus / "manifest.csv")["path"]][:30]
    plain = list(rec.with_config(temperature=1.0).predict_many(files))
    for temperature in (t, 0.2, 8.0):
        for a, b in zip(rec.with_config(temperature=temperature).predict_many(files), plain):
            assert a.label == b.label
            np.testing.assert_allclose(a.probabilities, calibrate(b.probabilities, temperature), atol=2e-6)
    assert any(
        abs(a.probabilities.max() - b.probabilities.max()) > 1e-4 for a, b in zip(rec.predict_many(files), plain)
    )
    # a run directory written before calibration existed loads with T = 1; a record of other weights is ignored
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / "calibration.json").unlink()
    assert Recognizer.load(old).config.temperature == 1.0
    rec_json = json.loads((run / "calibration.json").read_text())
    rec_json["weights"]["checksum"] = "sha256:" + "0" * 64
    (old / "calibration.json").write_text(json.dumps(rec_json))
    assert Recognizer.load(old).config.temperature == 1.0


def test_export_keeps_the_temperature(run: Path, builtin_corpus: Path, tmp_path: Path) -> None:
    from areaser.serve.export import export_onnx, read_metadata

    t = json.loads((run / "calibration.json").read_text())["temperature"]
    with contextlib.redirect_stdout(io.StringIO()):
        onnx_path = export_onnx(run, tmp_path / "m.onnx")
    assert read_metadata(onnx_path)["calibration"]["temperature"] == t
    rec = Recognizer.load(onnx_path)
    assert rec.config.temperature == t
    files = [builtin_corpus / p for p in pd.read_csv(builtin_corpus / "manifest.csv")["path"]][:5]
    for a, b in zip(rec.predict_many(files), Recognizer.load(run).predict_many(files)):
        assert a.label == b.label
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)

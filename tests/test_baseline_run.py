"""A classical baseline run is a run like a neural one: one lifecycle, and every verb works on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from areaser.cli import app
from areaser.runs.config import ConfigError, config_with
from areaser.train.lifecycle import RunLockedError, _RunLock, train

runner = CliRunner()


def _config(corpus: Path, out: Path, **kw):
    base = {"manifest": str(corpus / "manifest.csv"), "model": "egemaps-lr", "fold": 1, "out_dir": str(out),
            "name": "bl", "progress": False}  # fmt: skip
    return config_with(None, **(base | kw))


@pytest.fixture(scope="module")
def baseline_run(builtin_corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("baseline-runs")
    report = train(_config(builtin_corpus, out), log=None)
    return out / "bl", report


def _test_rows(run: Path, corpus: Path) -> pd.DataFrame:
    split = json.loads((run / "split.json").read_text())
    df = pd.read_csv(corpus / "manifest.csv").set_index("utt_id")
    rows = df.loc[split["test"]].reset_index()
    rows["path"] = [str(corpus / p) if not Path(p).is_absolute() else p for p in rows["path"]]
    return rows


# ----------------------------------------------------------------------------- one lifecycle


@pytest.mark.slow  # two fits (lr, then svm): 17 s; the neural twin runs in the default suite
def test_a_changed_config_is_refused_and_restart_overwrites(builtin_corpus, tmp_path) -> None:
    first = train(_config(builtin_corpus, tmp_path), log=None)
    with pytest.raises(ConfigError, match=r"another config \(differs in model\).*--restart"):
        train(_config(builtin_corpus, tmp_path, model="egemaps-svm"), log=None)
    assert json.loads((tmp_path / "bl" / "config.json").read_text())["model"] == "egemaps-lr"  # untouched
    # a key that does not change the result (progress bars) reads the finished run back, no refit
    mtime = (tmp_path / "bl" / "report.json").stat().st_mtime_ns
    assert train(_config(builtin_corpus, tmp_path, progress=True), log=None)["test"] == first["test"]
    assert (tmp_path / "bl" / "report.json").stat().st_mtime_ns == mtime
    svm = train(_config(builtin_corpus, tmp_path, model="egemaps-svm"), resume=False, log=None)
    assert json.loads((tmp_path / "bl" / "config.json").read_text())["model"] == "egemaps-svm"
    assert json.loads((tmp_path / "bl" / "report.json").read_text())["test"] == svm["test"]


def test_a_locked_run_is_refused_and_nothing_to_resume_is_said(builtin_corpus, tmp_path) -> None:
    run = tmp_path / "bl"
    run.mkdir()
    held = _RunLock(run / ".lock")
    assert held.acquire()
    try:
        with pytest.raises(RunLockedError, match="being trained by another process"):
            train(_config(builtin_corpus, tmp_path), log=None)
    finally:
        held.release()
    with pytest.raises(ConfigError, match="nothing to resume: .*baseline.safetensors"):
        train(_config(builtin_corpus, tmp_path), resume=True, log=None)


def test_a_run_cut_short_before_its_report_is_completed_from_the_stored_features(builtin_corpus, tmp_path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(builtin_corpus, corpus)
    first = train(_config(corpus, tmp_path), log=None)
    run = tmp_path / "bl"
    for f in ("done.json", "report.json", "report.md"):  # killed after the fit was kept, before the report
        (run / f).unlink()
    # the test audio now differs: a report equal to the first can only come from the stored features
    for p in _test_rows(run, corpus)["path"]:
        y, sr = sf.read(p)
        sf.write(p, y[::-1].copy(), sr)
    said: list[str] = []
    again = train(_config(corpus, tmp_path), log=said.append)
    assert again["test"] == first["test"] and (run / "done.json").is_file()
    assert any("completing the report" in s for s in said)


# ----------------------------------------------------------------------------- every verb


def test_evaluate_scores_a_baseline_run_again_to_its_own_scores(baseline_run) -> None:
    run, report = baseline_run
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    again = json.loads((run / "report.json").read_text())
    assert again["test"] == report["test"] and again["selected_epoch"] is None
    assert again["info"]["feature extraction + training time"] == report["info"]["feature extraction + training time"]


def test_predict_and_embed_score_a_recording_as_the_run_scores_an_utterance(baseline_run, builtin_corpus, tmp_path):
    from areaser.models.baselines import extract_features
    from areaser.runs.fitted import load_fitted

    run, _ = baseline_run
    path = _test_rows(run, builtin_corpus)["path"].iloc[0]
    out = tmp_path / "p.jsonl"
    result = runner.invoke(app, ["predict", str(run), path, "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text().splitlines()[0])
    # an utterance shorter than the baseline's window is one window, as it is: the classifier's own answer
    fit = load_fitted(run)
    x = extract_features([path], fit.cfg, fit.sr)
    expected = fit.classifier.predict_proba(x)[0]
    assert row["windows"] == 1 and row["label"] == fit.classes[int(np.argmax(expected))]
    assert [row["probabilities"][c] for c in fit.classes] == pytest.approx(expected, abs=1e-5)
    # embed: what the classifier reads, the imputed and standardised functionals
    emb = tmp_path / "e.npz"
    result = runner.invoke(app, ["embed", str(run), path, "--output", str(emb)])
    assert result.exit_code == 0, result.output
    vector = np.load(emb)["embeddings"][0]
    med = np.nanmedian(fit.x_train, axis=0)
    xs = np.where(np.isnan(x[0]), med, x[0])
    train = np.where(np.isnan(fit.x_train), med, fit.x_train)
    std = train.std(axis=0)
    expected_vec = (xs - train.mean(axis=0)) / np.where(std > 0, std, 1.0)
    assert vector.shape == (len(x[0]),)
    np.testing.assert_allclose(vector, expected_vec, rtol=1e-4, atol=1e-4)


def test_a_long_recording_is_cut_into_baseline_windows(baseline_run, builtin_corpus, tmp_path) -> None:
    from areaser.serve.backends import BASELINE_WINDOW_S
    from areaser.serve.recognizer import Recognizer

    run, _ = baseline_run
    paths = list(_test_rows(run, builtin_corpus)["path"])
    y = np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])
    sr = sf.info(paths[0]).samplerate
    pred = Recognizer.load(run).predict(y, sample_rate=sr)
    n, win = len(y) / sr, BASELINE_WINDOW_S
    # regular windows every win seconds, then the end-aligned one (none when it would repeat the last)
    expected = int((n - win) // win) + 1 + (1 if (n - win) % win > 1e-9 else 0)
    assert n > 2 * win and len(pred.timeline) == expected
    assert all(w.end_s - w.start_s == pytest.approx(win) for w in pred.timeline)


@pytest.mark.filterwarnings("ignore:.*httpx2")  # starlette's test client on the httpx installed
def test_serve_answers_with_the_baseline(baseline_run, builtin_corpus) -> None:
    from fastapi.testclient import TestClient

    from areaser.serve.recognizer import Recognizer
    from areaser.serve.service import create_app

    run, _ = baseline_run
    path = _test_rows(run, builtin_corpus)["path"].iloc[0]
    recognizer = Recognizer.load(run)
    with TestClient(create_app(recognizer)) as client:
        with open(path, "rb") as f:
            r = client.post("/v1/predict", files={"file": ("a.wav", f, "audio/wav")})
        assert r.status_code == 200, r.text
        assert r.json()["label"] == recognizer.predict(path).label


def test_export_refuses_a_baseline_run_with_the_reason(baseline_run, tmp_path) -> None:
    run, _ = baseline_run
    result = runner.invoke(app, ["export", str(run), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "does not export to ONNX" in result.output and "pitch tracking" in result.output
    assert not (tmp_path / "m.onnx").exists()
    result = runner.invoke(app, ["export", str(run), "--pretrained", str(tmp_path / "pre")])
    assert result.exit_code == 2 and "classical baseline run" in result.output
    assert not (tmp_path / "pre").exists()


def test_listen_follows_a_recording_with_the_baseline(baseline_run, builtin_corpus) -> None:
    run, _ = baseline_run
    path = _test_rows(run, builtin_corpus)["path"].iloc[0]
    result = runner.invoke(app, ["listen", str(run), path, "--fast", "--json", "--no-vad"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(s) for s in result.output.splitlines() if s.startswith("{")]
    updates, summary = lines[:-1], lines[-1]["summary"]
    duration = sf.info(path).duration
    assert len(updates) == int(duration // 0.5) and all(
        u["label"] in json.loads((run / "report.json").read_text())["classes"] for u in updates
    )
    assert summary


def test_a_run_folder_under_a_file_is_one_error_line(builtin_corpus, tmp_path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"file is a file, not a folder; choose another --out"):
        train(_config(builtin_corpus, tmp_path / "file" / "runs"), log=None)
    result = runner.invoke(app, ["train", str(builtin_corpus / "manifest.csv"), "--model", "egemaps-lr",
                                 "--out", str(tmp_path / "file" / "runs"), "--no-progress"])  # fmt: skip
    assert result.exit_code == 2 and "is a file, not a folder" in result.output

"""Embeddings (issue #16, item 5): the pooled penultimate layer per file, `areaser embed`, and the cv map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from areaser.cli import app
from areaser.data.segments import segment
from areaser.io.audio import load_audio
from areaser.runs.checkpoint import load_run
from areaser.runs.config import config_with
from areaser.serve.recognizer import Recognizer
from areaser.train.crossval import cross_validate

TINY = dict(
    model="cnn",
    model_overrides={"channels": [4, 4, 4, 4, 6]},
    features={"n_mels": 32, "hop_length": 800},
    epochs=1,
    batch_size=16,
    patience=None,
    progress=False,
    tensorboard=False,
    threads=1,
)


@pytest.fixture(scope="module")
def cv(builtin_corpus: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The smallest cross-validation: two folds of one epoch of a tiny CNN."""
    out = tmp_path_factory.mktemp("runs")
    cfg = config_with(None, manifest=str(builtin_corpus / "manifest.csv"), out_dir=str(out), name="cv", **TINY)
    return out / "cv", cross_validate(cfg, folds=[0, 4], log=None)


@pytest.fixture(scope="module")
def files(builtin_corpus: Path) -> list[Path]:
    return [builtin_corpus / p for p in pd.read_csv(builtin_corpus / "manifest.csv")["path"]][:6]


def test_embeddings_are_the_mean_penultimate_layer_and_deterministic(cv, files) -> None:
    run_dir = cv[0] / "fold1-Ses01"
    rec = Recognizer.load(run_dir)
    e = rec.embed(files)
    assert e.shape == (len(files), 6) and e.dtype == np.float32  # global_pool: channels[-1]
    assert np.array_equal(e, rec.embed(files)) and np.array_equal(e[2:3], rec.embed(files[2:3]))
    run = load_run(run_dir)
    windows, _ = segment(load_audio(files[0]), 16000, 2.0, rec.config.hop_s, "pad")
    with torch.no_grad():
        x = run.features(torch.from_numpy(windows))
        per_window = run.model.embed(x)
        assert torch.allclose(run.model.classifier(per_window), run.model(x))  # the classifier's input
    np.testing.assert_allclose(e[0], per_window.mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_cli_embed_writes_npz_and_csv(cv, files, tmp_path: Path) -> None:
    run_dir = cv[0] / "fold1-Ses01"
    bad = tmp_path / "missing.wav"
    r = CliRunner().invoke(app, ["embed", str(run_dir), *map(str, files), str(bad), "-o", str(tmp_path / "e.npz")])
    assert r.exit_code == 1, r.output  # one file could not be read: written without it, exit 1
    z = np.load(tmp_path / "e.npz")
    assert z["embeddings"].shape == (len(files), 6) and int(z["dim"]) == 6
    assert list(z["paths"]) == [str(f) for f in files] and (z["windows"] >= 1).all()
    r = CliRunner().invoke(app, ["embed", str(run_dir), *map(str, files), "-o", str(tmp_path / "e.csv")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "e.csv")
    assert list(df.columns) == ["path", "windows"] + [f"e{i}" for i in range(6)]
    np.testing.assert_allclose(df[[f"e{i}" for i in range(6)]].to_numpy(), z["embeddings"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(z["embeddings"], Recognizer.load(run_dir).embed(files), rtol=1e-6)
    r = CliRunner().invoke(app, ["embed", str(run_dir), str(files[0]), "-o", str(tmp_path / "e.json")])
    assert r.exit_code == 2 and ".npz or .csv" in r.output


def test_cv_report_has_the_embedding_map_and_the_calibration(cv) -> None:
    cv_dir, summary = cv
    emb = summary["embedding_map"]
    assert emb["file"] == "embedding_map.png" and (cv_dir / "embedding_map.png").stat().st_size > 1000
    assert emb["n"] == sum(json.loads((cv_dir / d / "report.json").read_text())["test"]["n"] for d in emb["folds"])
    assert emb["speakers"] >= 2
    md = (cv_dir / "report.md").read_text()
    assert "![embedding map](embedding_map.png)" in md
    assert "test ECE %, mean +- std" in md and "ece_after" in summary["aggregate"]

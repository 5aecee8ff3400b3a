"""Reports: JSON + Markdown + PNG in the run directory, the Markdown shows the pictures."""

from __future__ import annotations

import json

from areaser.metrics import classification_metrics, paper_and_honest, summarise_runs
from areaser.reports import write_cv_report, write_run_report

CLASSES = ("neutral", "happy", "sad", "angry")
PNG = b"\x89PNG\r\n\x1a\n"


def _report():
    test = classification_metrics([0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 2], CLASSES, speakers=list("aabbab"))
    history = [{"epoch": e, "train_loss": 1.0 / e, "dev_loss": 1.2 / e, "dev_wa": 0.3 + 0.1 * e,
                "dev_ua": 0.25 + 0.1 * e, "test_wa": 0.3 + 0.05 * e, "test_ua": 0.2 + 0.07 * e} for e in (1, 2, 3)]
    return {"name": "demo", "classes": list(CLASSES), "selected_epoch": 3, "test": test, "history": history,
            "paper_and_honest": paper_and_honest(history), "info": {"protocol": "loso"}}


def test_run_report_files_and_content(tmp_path):
    rep = _report()
    paths = write_run_report(tmp_path, rep)
    assert {p.name for p in tmp_path.iterdir()} == {"report.json", "report.md", "confusion.png", "curves.png"}
    for png in ("confusion.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG
    assert json.loads(paths["json"].read_text())["test"]["wa"] == rep["test"]["wa"]
    md = paths["md"].read_text()
    assert "![confusion matrix](confusion.png)" in md and "![learning curves](curves.png)" in md
    assert f"| 6 | {100 * rep['test']['wa']:.2f} | {100 * rep['test']['ua']:.2f} |" in md
    # both readings, labelled
    assert "Paper's way vs honest way" in md
    assert "paper: maxWA / maxUA (separate maxima)" in md and "honest: epoch chosen on dev" in md


def test_cv_report_shows_mean_and_std(tmp_path):
    rep = _report()
    folds = [{"name": f"fold{i}", "test_group": f"Ses0{i}", "dir": f"fold{i}", "epoch": 2,
              "wa": 0.5 + 0.1 * i, "ua": 0.4 + 0.1 * i, "macro_f1": 0.3 + 0.1 * i,
              "paper_max_wa": 0.9, "paper_max_ua": 0.8} for i in (1, 2, 3)]
    summary = {"name": "cv", "protocol": "xu2021", "classes": list(CLASSES), "folds": folds,
               "aggregate": summarise_runs(folds, ["wa", "ua", "macro_f1", "paper_max_wa", "paper_max_ua"]),
               "confusion": rep["test"]["confusion"]}
    paths = write_cv_report(tmp_path, summary)
    md = paths["md"].read_text()
    assert "| **mean +- std** |  |  | 70.00 +- 10.00 | 60.00 +- 10.00 | 50.00 +- 10.00 | 90.00 +- 0.00 | 80.00 +- 0.00 |" in md
    assert "[fold1](fold1/report.md)" in md and "![confusion matrix](confusion.png)" in md
    assert "paper's way" in md
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_random_evaluation_is_explained_where_the_two_scorings_differ(tmp_path):
    """The faithful model keeps dropout at evaluation: the final scoring of the chosen epoch and that
    epoch's tracked test score are two draws, and the report says so (only then)."""
    rep = _report()
    h = rep["paper_and_honest"]["honest"]
    same = {**rep, "test": {**rep["test"], "wa": h["wa"], "ua": h["ua"]}}
    assert "every scoring of the same" not in write_run_report(tmp_path, same)["md"].read_text()
    md = write_run_report(tmp_path, rep)["md"].read_text()
    assert "every scoring of the same" in md and f"WA {100 * h['wa']:.2f} here, {100 * rep['test']['wa']:.2f} there" in md

"""Reports: JSON + Markdown + PNG in the run directory, the Markdown shows the pictures."""

from __future__ import annotations

import json

from areaser.runs.metrics import classification_metrics, paper_and_honest, summarise_runs
from areaser.runs.reports import write_cv_report, write_run_report

CLASSES = ("neutral", "happy", "sad", "angry")
PNG = b"\x89PNG\r\n\x1a\n"


def _report():
    test = classification_metrics([0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 2], CLASSES, speakers=list("aabbab"))
    history = [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "dev_loss": 1.2 / e,
            "dev_wa": 0.3 + 0.1 * e,
            "dev_ua": 0.25 + 0.1 * e,
            "test_wa": 0.3 + 0.05 * e,
            "test_ua": 0.2 + 0.07 * e,
        }
        for e in (1, 2, 3)
    ]
    return {
        "name": "demo",
        "classes": list(CLASSES),
        "selected_epoch": 3,
        "test": test,
        "history": history,
        "paper_and_honest": paper_and_honest(history),
        "info": {"protocol": "loso"},
    }


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
    folds = [
        {
            "name": f"fold{i}",
            "test_group": f"Ses0{i}",
            "dir": f"fold{i}",
            "epoch": 2,
            "wa": 0.5 + 0.1 * i,
            "ua": 0.4 + 0.1 * i,
            "macro_f1": 0.3 + 0.1 * i,
            "paper_max_wa": 0.9,
            "paper_max_ua": 0.8,
        }
        for i in (1, 2, 3)
    ]
    summary = {
        "name": "cv",
        "protocol": "xu2021",
        "classes": list(CLASSES),
        "folds": folds,
        "aggregate": summarise_runs(folds, ["wa", "ua", "macro_f1", "paper_max_wa", "paper_max_ua"]),
        "confusion": rep["test"]["confusion"],
    }
    paths = write_cv_report(tmp_path, summary)
    md = paths["md"].read_text()
    assert (
        "| **mean +- std** |  |  | 70.00 +- 10.00 | 60.00 +- 10.00 | 50.00 +- 10.00 | 90.00 +- 0.00 | 80.00 +- 0.00 |"
        in md
    )
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
    assert (
        "every scoring of the same" in md and f"WA {100 * h['wa']:.2f} here, {100 * rep['test']['wa']:.2f} there" in md
    )


def test_notes_and_own_headings_are_drawn_above_the_numbers(tmp_path):
    """A warning (synthetic data, speaker-dependent protocol) comes before any number; a cross-corpus
    report gets its own title and test heading."""
    rep = {
        **_report(),
        "notes": ["corpus x is synthetic", "protocol y is speaker-dependent"],
        "title": "Cross-corpus report: a on b",
        "test_heading": "Scored on b",
    }
    md = write_run_report(tmp_path, rep)["md"].read_text()
    assert md.startswith("# Cross-corpus report: a on b\n")
    assert md.index("> **Note:** corpus x is synthetic") < md.index("| 6 |")
    assert "> **Note:** protocol y is speaker-dependent" in md and "## Scored on b" in md and "## Test set" not in md


def test_cv_report_draws_the_cross_corpus_table_with_mean_and_std(tmp_path):
    from areaser.runs.reports import write_cross_summary

    rep = _report()
    folds = [
        {
            "name": f"fold{i}",
            "test_group": f"Ses0{i}",
            "dir": f"fold{i}",
            "epoch": 1,
            "wa": 0.5,
            "ua": 0.5,
            "macro_f1": 0.5,
        }
        for i in (1, 2)
    ]
    cross_folds = [
        {"name": f"fold{i}", "dir": f"fold{i}/cross/emodb", "n": 40, "wa": w, "ua": u, "macro_f1": f}
        for i, (w, u, f) in ((1, (0.30, 0.20, 0.10)), (2, (0.50, 0.40, 0.30)))
    ]
    cross = {
        "emodb": {
            "corpus": "emodb",
            "corpus_text": "emodb",
            "manifest": "emodb.csv",
            "n": 40,
            "classes_used": ["neutral", "happy", "angry"],
            "classes_left_out": ["sad"],
            "folds": cross_folds,
            "aggregate": summarise_runs(cross_folds, ["wa", "ua", "macro_f1"]),
        }
    }
    summary = {
        "name": "cv",
        "protocol": "loso",
        "classes": list(CLASSES),
        "folds": folds,
        "aggregate": summarise_runs(folds, ["wa", "ua", "macro_f1"]),
        "confusion": rep["test"]["confusion"],
        "cross_corpus": cross,
    }
    md = write_cv_report(tmp_path, summary)["md"].read_text()
    # std of (0.3, 0.5) = std of (0.2, 0.4) = std of (0.1, 0.3) = 0.1414 (n - 1)
    assert "| **mean +- std** |  | 40.00 +- 14.14 | 30.00 +- 14.14 | 20.00 +- 14.14 |" in md
    assert "### Scored on emodb" in md and "(left out of UA): sad" in md
    assert "[fold1](fold1/cross/emodb/report.md)" in md
    md = write_cross_summary(
        tmp_path / "cross" / "emodb", {"name": "cv on emodb", "cross_corpus": cross}, base="../../"
    )["md"].read_text()
    assert "[fold2](../../fold2/cross/emodb/report.md)" in md and "40.00 +- 14.14" in md

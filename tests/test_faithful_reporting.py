"""How the faithful pipeline is reported (issue #13): random evaluation, seeds that are not folds, the
100-epoch reading, the area-size study on both layouts, and ``--print-config``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from areaser.runs.config import config_with
from areaser.runs.metrics import classification_metrics, paper_and_honest, summarise_runs
from areaser.runs.reports import pct, write_cv_report, write_run_report

CLASSES = ("neutral", "happy", "sad", "angry")
NOT_FOLDS = "random splits (seeds), overlapping, not folds"


# ----------------------------------------------------------------------------- point 9: random evaluation


def _run_report() -> dict:
    test = classification_metrics([0, 1, 2, 3, 0, 1, 2, 3], [0, 1, 2, 0, 0, 2, 2, 3], CLASSES)
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
        "name": "faithful",
        "classes": list(CLASSES),
        "selected_epoch": 3,
        "test": test,
        "history": history,
        "paper_and_honest": paper_and_honest(history),
    }


def test_the_random_evaluation_note_states_wa_and_ua_when_only_ua_differs(tmp_path):
    """A model random at evaluation (faithful: dropout at eval) scores the chosen weights twice: the note
    must give both scorings' WA and UA, not WA alone (here WA agrees and only UA differs)."""
    rep = _run_report()
    h = rep["paper_and_honest"]["honest"]
    ua = h["ua"] + 0.05
    rep["test"] = {**rep["test"], "wa": h["wa"], "ua": ua}
    md = write_run_report(tmp_path, rep)["md"].read_text()
    note = [line for line in md.splitlines() if "every scoring of the same" in line]
    assert len(note) == 1, "the note is shown when the two scorings differ in UA only"
    assert "UA" in note[0] and pct(h["ua"]) in note[0] and pct(ua) in note[0], note[0]
    assert pct(h["wa"]) in note[0]


# ----------------------------------------------------------------------------- point 9: seeds, not folds


def _prov(tmp_path: Path, protocol: str) -> dict:
    from areaser.runs.provenance import describe

    wav = tmp_path / "wav"
    wav.mkdir(exist_ok=True)
    rows = pd.DataFrame(
        {"corpus": ["iemocap"] * 2, "path": [str(wav / "a.wav"), str(wav / "b.wav")], "source_id": [""] * 2}
    )
    label_set = "4class-exc" if protocol == "xu2021" else "4class"
    return describe(None, rows, label_set, CLASSES, protocol)


def _fold_reports(tmp_path: Path, protocol: str) -> list[dict]:
    from areaser.runs.provenance import notes

    prov = _prov(tmp_path, protocol)
    test = classification_metrics([0, 1, 2, 3], [0, 1, 2, 0], CLASSES)
    groups = [f"seed{i}" for i in range(3)] if protocol == "xu2021" else [f"Ses0{i + 1}" for i in range(3)]
    names = groups if protocol == "xu2021" else [f"fold{i + 1}-{g}" for i, g in enumerate(groups)]
    return [
        {
            "fold": n,
            "test_group": g,
            "selected_epoch": 2,
            "test": test,
            "classes": list(CLASSES),
            "provenance": prov,
            "notes": notes(prov),
            "config": {"label_set": prov["label_set"]},
        }
        for n, g in zip(names, groups)
    ]


def test_xu2021_seeds_are_called_overlapping_random_splits_not_folds(tmp_path):
    from areaser.runs.provenance import console_line

    rep = _fold_reports(tmp_path, "xu2021")[0]
    line = console_line(rep)
    assert NOT_FOLDS in line, line
    assert "held out seed0" not in line and "fold seed0" not in line, line
    # a session protocol keeps its folds
    loso = _fold_reports(tmp_path, "loso")[0]
    line = console_line(loso)
    assert "fold fold1-Ses01 (held out Ses01)" in line and "not folds" not in line


def test_the_xu2021_cv_report_and_console_say_the_seeds_are_not_folds(tmp_path):
    from areaser.train.report import _cv_line, summarise_cv

    for protocol in ("xu2021", "loso"):
        reports = _fold_reports(tmp_path, protocol)
        c = config_with(None, manifest=str(tmp_path / "m.csv"), protocol=protocol, name=f"cv-{protocol}")
        summary = summarise_cv(c, reports, [r["fold"] for r in reports])
        out = tmp_path / protocol
        out.mkdir()
        md = write_cv_report(out, summary)["md"].read_text()
        console = _cv_line(summary)
        if protocol == "xu2021":
            assert NOT_FOLDS in md and NOT_FOLDS in console, (md, console)
            assert "| fold | held out |" not in md and "## Per fold" not in md
            assert f"> **Note:** protocol xu2021 runs 5 {NOT_FOLDS}" in md
        else:
            assert "not folds" not in md and "not folds" not in console
            assert "| fold | held out |" in md


def test_a_cv_report_without_provenance_still_names_xu2021_seeds_as_random_splits(tmp_path):
    """Summaries written before reports held their provenance: the protocol alone decides."""
    folds = [
        {
            "name": f"seed{i}",
            "test_group": f"seed{i}",
            "dir": f"seed{i}",
            "epoch": 2,
            "wa": 0.5,
            "ua": 0.4,
            "macro_f1": 0.3,
        }
        for i in range(2)
    ]
    summary = {
        "name": "cv",
        "protocol": "xu2021",
        "classes": list(CLASSES),
        "folds": folds,
        "aggregate": summarise_runs(folds, ["wa", "ua", "macro_f1"]),
        "confusion": [[1, 0, 0, 0]] * 4,
    }
    md = write_cv_report(tmp_path, summary)["md"].read_text()
    assert NOT_FOLDS in md and "| random split (seed) | test part |" in md


# ----------------------------------------------------------------------------- point 9: no early stopping


@pytest.mark.parametrize(
    "kw",
    [{"protocol": "xu2021"}, {"preset": "faithful"}, {"preset": "faithful", "protocol": "xu2021"}],
    ids=["xu2021", "faithful", "faithful-xu2021"],
)
def test_early_stopping_does_not_cut_the_papers_100_epoch_reading_short(kw):
    """The paper's reading is maxima over the test scores of all its epochs: under xu2021 or the faithful
    preset the resolved config has no early stopping (patience None), whatever the default patience."""
    kw = dict(kw)
    preset = kw.pop("preset", None)
    c = config_with(None, preset=preset, manifest="m.csv", **kw).resolved()
    assert c.patience is None, f"{kw} {preset}: patience {c.patience} would stop the paper's reading early"
    if c.protocol == "xu2021":
        assert c.epochs == 100 and c.track_test


# ----------------------------------------------------------------------------- point 10: area-size study


def test_the_area_size_study_runs_both_layouts_and_labels_the_figures_reading(builtin_corpus, tmp_path):
    from areaser.models.cnn import PRESETS
    from areaser.studies.definitions import get_study
    from areaser.studies.plan import AblationConfig, plan_runs

    study = get_study("area-size")
    grid = {
        (s.overrides.get("model"), s.overrides["vtlp.impl"], tuple(s.overrides["model_overrides.max_area"]))
        for s in study.settings
    }
    assert grid == {(m, v, (a, a)) for m in ("faithful", "paper") for v in ("none", "melwarp") for a in (1, 2, 3, 4)}
    for s in study.settings:
        figure = "the paper's figure" in s.label
        assert figure == (s.overrides["model"] == "faithful"), s.label  # only the 1-D reading is the figure's
        assert f"`{s.overrides['model']}`" in s.label and s.overrides["model"] in s.series
    assert "faithful" in study.description and "paper's figure" in study.description
    # the grid it builds: every setting's run trains the model it names (1-D row spans vs 2-D areas)
    cfg = AblationConfig(
        manifest=str(builtin_corpus / "manifest.csv"),
        out=str(tmp_path / "s"),
        quick=True,
        settings=tuple(s.name for s in study.settings),
    )
    runs = plan_runs(study, cfg)
    assert len(runs) == 16 and not (tmp_path / "s").exists()
    for r in runs:
        model = r.config["model"]
        assert model == r.setting.overrides["model"]
        assert r.config["model_overrides"]["max_area"] == list(r.setting.overrides["model_overrides.max_area"])
        assert "layout" not in r.config["model_overrides"]
        assert PRESETS[model].layout == ("rows" if model == "faithful" else "2d")


# ----------------------------------------------------------------------------- point 12: --print-config


def _cli(*args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch):
    """The command line app, in-process (no second torch import), run in ``cwd``."""
    from typer.testing import CliRunner

    from areaser.cli.app import app

    monkeypatch.chdir(cwd)
    r = CliRunner().invoke(app, list(args))
    r.returncode = r.exit_code
    return r


@pytest.mark.parametrize("command", ["train", "cv"])
def test_print_config_prints_the_resolved_config_and_writes_nothing(command, tmp_path, monkeypatch):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("utt_id,path\n")
    out = tmp_path / "runs"
    args = [str(manifest), "--protocol", "xu2021", "--preset", "faithful", "--epochs", "7", "--set", "lr=0.001"]
    args += ["--out", str(out)] + (["--name", "cvx"] if command == "cv" else [])
    r = _cli(command, *args, "--print-config", cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.returncode == 0, r.stdout + r.stderr
    printed = json.loads(r.stdout)
    expected = config_with(
        None,
        preset="faithful",
        manifest=str(manifest),
        protocol="xu2021",
        epochs=7,
        lr=0.001,
        out_dir=str(out),
        **({"name": "cvx"} if command == "cv" else {}),
    )
    assert printed == expected.resolved().to_dict()
    assert printed["label_set"] == "4class-exc" and printed["track_test"] is True  # resolved, not the raw options
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"], "nothing written, no run directory"
    if command == "cv":
        return
    # a config that cannot run is refused in one line, before anything is written
    r = _cli(command, str(manifest), "--set", "loss=nope", "--print-config", cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.returncode == 2 and "loss must be one of" in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]

"""`areaser evaluate RUN` scores exactly the test utterances of RUN/split.json, wherever it is run from,
and refuses (exit 2, the report left byte for byte as it was) when one of them is missing or changed.

The run is trained in a project folder with relative paths (`corpus/manifest.csv`, `--out runs`), as
`make demo` does; each test works on its own copy of that folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_CNN

from areaser.runs.config import config_with
from areaser.train.lifecycle import train

# A tiny model and features (seconds per run on 2 shared cores), as tests/test_crosscorpus.py.
TINY = TINY_CNN  # tests/conftest.py's tiny CNN
RUN = Path("runs") / "r"
REPORT = ("report.json", "report.md", "confusion.png")


@pytest.fixture(scope="module")
def trained(builtin_corpus: Path, tmp_path_factory) -> Path:
    """A project folder: ``corpus/`` (a copy of the built-in corpus) and ``runs/r``, trained from inside it."""
    proj = tmp_path_factory.mktemp("proj")
    shutil.copytree(builtin_corpus, proj / "corpus")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(proj)
        train(config_with(None, manifest="corpus/manifest.csv", out_dir="runs", name="r", **TINY), log=None)
    return proj


@pytest.fixture
def proj(trained: Path, tmp_path: Path) -> Path:
    """This test's own copy of the project folder (corpus and run moved together)."""
    dst = tmp_path / "proj"
    shutil.copytree(trained, dst)
    return dst


def _cli(args: list[str], cwd: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    from areaser.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["areaser", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _report_bytes(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in REPORT}


def _test_rows(proj: Path) -> pd.DataFrame:
    """The run's test utterances, as rows of its manifest (audio paths made absolute)."""
    split = json.loads((proj / RUN / "split.json").read_text())
    df = pd.read_csv(proj / "corpus" / "manifest.csv", keep_default_na=False)
    df["path"] = [str(proj / "corpus" / p) for p in df["path"]]
    return df.set_index("utt_id").loc[split["test"]].reset_index()


def _record_test_hashes(proj: Path) -> None:
    """Give split.json the SHA-1 of each test file (``test_files``), as ``split_record`` writes it.

    A no-op once training writes them itself."""
    path = proj / RUN / "split.json"
    split = json.loads(path.read_text())
    if "test_files" not in split:
        rows = _test_rows(proj)
        split["test_files"] = {
            u: {"sha1": hashlib.sha1(Path(p).read_bytes()).hexdigest(), "bytes": os.path.getsize(p)}
            for u, p in zip(rows["utt_id"], rows["path"])
        }
        path.write_text(json.dumps(split, indent=2))


def test_evaluate_from_another_folder_scores_the_runs_own_test_set(proj, tmp_path, monkeypatch, capsys):
    code, _, err = _cli(["evaluate", str(RUN)], proj, monkeypatch, capsys)
    assert code == 0, err
    reference = _report_bytes(proj / RUN)
    n_test = len(json.loads((proj / RUN / "split.json").read_text())["test"])
    assert json.loads(reference["report.json"])["test"]["n"] == n_test

    # another folder holding a different corpus at the run's relative manifest path: half of
    # session 1 gone, the rest relabelled. Its manifest must not be the one scored.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "corpus").mkdir(parents=True)
    df = pd.read_csv(proj / "corpus" / "manifest.csv", keep_default_na=False)
    df["path"] = [str(proj / "corpus" / p) for p in df["path"]]
    ses1 = df.index[df["session"] == "Ses01"]
    df = df.drop(ses1[::2])
    df.loc[df["session"] == "Ses01", "label"] = "neutral"
    df.to_csv(elsewhere / "corpus" / "manifest.csv", index=False)

    for run in (proj / RUN, Path(os.path.relpath(proj / RUN, elsewhere))):
        code, out, err = _cli(["evaluate", str(run)], elsewhere, monkeypatch, capsys)
        assert code == 0, err
        assert _report_bytes(proj / RUN) == reference, run
        assert "test WA" in out


def _remove_row(proj: Path, rows: pd.DataFrame) -> str:
    man = proj / "corpus" / "manifest.csv"
    df = pd.read_csv(man, keep_default_na=False)
    df[df["utt_id"] != rows["utt_id"].iloc[0]].to_csv(man, index=False)
    return "split.json"


def _delete_file(proj: Path, rows: pd.DataFrame) -> str:
    os.remove(rows["path"].iloc[0])
    return "missing"


def _change_file(proj: Path, rows: pd.DataFrame) -> str:
    _record_test_hashes(proj)
    shutil.copyfile(rows["path"].iloc[1], rows["path"].iloc[0])  # another test utterance's audio
    return "differ"


def _relabel(proj: Path, rows: pd.DataFrame) -> str:
    man = proj / "corpus" / "manifest.csv"
    df = pd.read_csv(man, keep_default_na=False)
    df.loc[df["utt_id"] == rows["utt_id"].iloc[0], "label"] = "fear"  # no 4class class
    df.to_csv(man, index=False)
    return "label outside the run's classes"


@pytest.mark.parametrize(
    "mutate",
    [_remove_row, _delete_file, _change_file, _relabel],
    ids=["row-removed", "file-deleted", "file-changed", "relabelled"],
)
def test_a_missing_or_changed_test_utterance_is_refused_and_the_report_kept(proj, mutate, monkeypatch, capsys):
    before = _report_bytes(proj / RUN)
    said = mutate(proj, _test_rows(proj))
    code, out, err = _cli(["evaluate", str(RUN)], proj, monkeypatch, capsys)
    assert code != 0
    line = " ".join(err.split())
    assert said in line and "report left as it is" in line and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap it)
    assert _report_bytes(proj / RUN) == before


def test_evaluate_refuses_a_report_of_another_test_set(proj, monkeypatch, capsys):
    """Even without file hashes, a different set of utterances never replaces the report."""
    report = json.loads((proj / RUN / "report.json").read_text())
    report["test"]["n"] += 1  # as if the report had scored one utterance more
    (proj / RUN / "report.json").write_text(json.dumps(report))
    before = _report_bytes(proj / RUN)
    code, _, err = _cli(["evaluate", str(RUN)], proj, monkeypatch, capsys)
    assert code != 0 and "differs from the one of its report" in " ".join(err.split())
    assert _report_bytes(proj / RUN) == before


def test_split_record_holds_the_ids_training_writes_and_the_hashes_evaluate_checks(proj, monkeypatch, capsys):
    """``split_record``: what training's split.json should hold (ids as now, plus base and test_files)."""
    from areaser.data.splits import split_record
    from areaser.runs.config import TrainConfig
    from areaser.train.folds import prepare_fold

    monkeypatch.chdir(proj)
    prep = prepare_fold(TrainConfig.load(RUN / "config.json").resolved())
    rec = split_record(prep.fold, prep.parts)
    written = json.loads((RUN / "split.json").read_text())
    ids = ("fold", "test_group", "train", "dev", "test")
    assert {k: rec[k] for k in ids} == {k: written[k] for k in ids}
    assert Path(rec["base"]).resolve() == proj.resolve()
    rows = _test_rows(proj)  # hashes of the bytes, computed here with hashlib
    assert rec["test_files"] == {
        u: {"sha1": hashlib.sha1(Path(p).read_bytes()).hexdigest(), "bytes": os.path.getsize(p)}
        for u, p in zip(rows["utt_id"], rows["path"])
    }
    assert written["test_files"] == rec["test_files"]
    (RUN / "split.json").write_text(json.dumps(rec))
    code, _, err = _cli(["evaluate", str(RUN)], proj, monkeypatch, capsys)
    assert code == 0, err

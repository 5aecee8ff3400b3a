"""Odd inputs on the command line (#14, low items): ``-o`` that cannot be written is refused before any work, a
folder without audio in a batch is one error row (the rest is scored), symbolic link loops and broken links are
named as such, a file name with a newline or rich markup stays one row as it is, and a manifest whose relative
paths do not resolve says what they are relative to."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from areaser.cli import app
from areaser.data.manifest import ManifestError, read_manifest


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> Path:
    return tiny_run


def _speech_like(path: Path) -> Path:
    """2 s of a 150 Hz pulse train with a moving formant-ish envelope (passes the not-speech check)."""
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    y = (
        np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(32000)
    ) * 0.3
    sf.write(str(path), y.astype(np.float32), 16000, subtype="PCM_16")
    return path


def _predict(*args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, ["predict", *args, "--no-progress"])


def test_an_output_that_is_a_folder_is_refused_before_scoring(model, tmp_path, monkeypatch) -> None:
    wav = _speech_like(tmp_path / "a.wav")
    (tmp_path / "out.csv").mkdir()
    r = _predict(str(model), str(wav), "-o", "out.csv", cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.exit_code == 2, r.output
    assert "out.csv: is a folder" in r.stderr and "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "out.csv"] and not list(
        (tmp_path / "out.csv").iterdir()
    )


def test_a_folder_without_audio_is_one_error_row_and_the_rest_is_scored(model, tmp_path, monkeypatch) -> None:
    wav = _speech_like(tmp_path / "a.wav")
    (tmp_path / "x.wav").mkdir()  # a folder that looks like a file name, no audio under it
    r = _predict(str(model), str(wav), "x.wav", "-o", "res.csv", cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.exit_code == 1, r.output  # 1: some inputs failed, the others were scored
    rows = pd.read_csv(tmp_path / "res.csv", keep_default_na=False)
    assert list(rows["path"]) == [str(wav), "x.wav"]
    assert rows["label"][0] != "" and rows["error"][0] == ""
    assert "is a folder, not an audio file" in rows["error"][1]


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_link_loops_and_broken_links_are_named(model, tmp_path, monkeypatch) -> None:
    (tmp_path / "loop1.wav").symlink_to("loop2.wav")
    (tmp_path / "loop2.wav").symlink_to("loop1.wav")
    (tmp_path / "broken.wav").symlink_to("gone.wav")
    r = _predict(str(model), "loop1.wav", "broken.wav", cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.exit_code == 1
    assert "loop1.wav: symbolic link loop" in r.stderr
    assert "broken.wav: broken symbolic link (its target does not exist)" in r.stderr
    assert "file not found" not in r.stderr


def test_odd_file_names_stay_one_row_shown_as_they_are(model, tmp_path, monkeypatch) -> None:
    newline = _speech_like(tmp_path / "two\nlines.wav")
    markup = _speech_like(tmp_path / "[bold]loud.wav")
    r = _predict(str(model), newline.name, markup.name, "missing\n.wav", cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.exit_code == 1, r.output
    lines = r.stdout.splitlines()
    assert any(line.lstrip().startswith("two\\nlines.wav ") for line in lines), r.stdout  # one row, escaped
    assert not any(line.strip() == "lines.wav" for line in lines)
    assert any(line.lstrip().startswith("[bold]loud.wav ") for line in lines), r.stdout  # markup kept as text
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: missing\\n.wav: file not found"], r.stderr
    # the CSV keeps the real name (a quoted cell is valid CSV)
    _predict(str(model), newline.name, "-o", "res.csv", cwd=tmp_path, monkeypatch=monkeypatch)
    assert list(pd.read_csv(tmp_path / "res.csv")["path"]) == ["two\nlines.wav"]


def test_relative_manifest_paths_say_what_they_are_relative_to(tmp_path, monkeypatch) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "wav").mkdir()
    _speech_like(tmp_path / "wav" / "a.wav")
    # written relative to tmp_path, but the CSV sits in lists/: the paths resolve to lists/wav/a.wav
    (tmp_path / "lists" / "m.csv").write_text("utt_id,path,label\na,wav/a.wav,angry\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(tmp_path / "lists" / "m.csv")
    assert f"relative paths are read from the manifest's folder {tmp_path / 'lists'}" in str(e.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError) as e:
        read_manifest("nothere.csv")
    assert f"file not found (relative to the current folder {tmp_path})" in str(e.value)
    with pytest.raises(ManifestError) as e:  # an absolute path needs no such note
        read_manifest(tmp_path / "nothere.csv")
    assert "relative to" not in str(e.value)


def test_a_table_of_many_classes_keeps_its_file_column_in_an_80_column_terminal(monkeypatch, capsys) -> None:
    """Seven classes are wider than 80 columns: the table is printed whole, not with the file column dropped."""
    from areaser.cli.serve import _prediction_rows, _print_predictions
    from areaser.serve.recognizer import Prediction, Window

    monkeypatch.setenv("COLUMNS", "80")
    classes = ("neutral", "happy", "sad", "angry", "fear", "disgust", "boredom")
    p = np.full(7, 1 / 7)
    results = [
        Prediction(f"/data/emodb/{n}.wav", "neutral", classes, p, [Window(0.0, 2.0, p)], 2.0)
        for n in ("03a05Wa", "03b10Nc")
    ]
    rows = [row for r in results for row in _prediction_rows(r, classes, False)]
    _print_predictions(results, rows, classes, False)
    out = capsys.readouterr().out
    assert "03a05Wa.wav" in out and "03b10Nc.wav" in out, out
    assert all(c in out for c in classes) and "…" not in out, out

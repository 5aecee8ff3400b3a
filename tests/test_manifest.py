"""Manifest round trip, validation and label sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from areaser.data.labels import LABEL_SETS, get_label_set
from areaser.data.manifest import COLUMNS, ManifestError, make_manifest, read_manifest, select_classes, write_manifest
from areaser.io.files import atomic_write_text


def _corpus(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for i, (label, raw) in enumerate(
        [
            ("neutral", "neu"),
            ("happy", "hap"),
            ("excited", "exc"),
            ("sad", "sad"),
            ("angry", "ang"),
            ("frustration", "fru"),
        ]
    ):
        p = tmp_path / "wav" / f"u{i}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, np.full(1600, 0.1, np.float32), 16_000)
        rows.append(
            dict(
                utt_id=f"u{i}",
                path=str(p),
                corpus="test",
                speaker=f"s{i % 2}",
                session="Ses01",
                gender="F",
                label=label,
                raw_label=raw,
                duration_s=0.1,
                improvised=i % 2 == 0,
            )
        )
    return make_manifest(rows)


def test_round_trip_with_relative_paths(tmp_path: Path) -> None:
    df = _corpus(tmp_path)
    out = tmp_path / "manifest.csv"
    write_manifest(df, out)
    text = out.read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert "wav/u0.wav" in text and str(tmp_path) not in text  # stored relative to the CSV
    back = read_manifest(out)
    assert list(back["utt_id"]) == list(df["utt_id"])
    assert [Path(p).resolve() for p in back["path"]] == [Path(p).resolve() for p in df["path"]]
    assert list(back["improvised"]) == [True, False, True, False, True, False]
    assert back["duration_s"].dtype == float


def test_validation_reports_every_problem(tmp_path: Path) -> None:
    df = _corpus(tmp_path)
    df.loc[1, "utt_id"] = "u0"
    df.loc[2, "label"] = "Joyful"  # labels are lower-case words (any word: "joyful" itself is valid)
    df.loc[3, "path"] = str(tmp_path / "gone.wav")
    out = tmp_path / "bad.csv"
    write_manifest(df, out)
    with pytest.raises(ManifestError) as e:
        read_manifest(out)
    msg = str(e.value)
    assert str(out) in msg and "duplicate utt_id" in msg and "Joyful" in msg and "missing" in msg
    assert len(e.value.problems) == 3


def test_not_a_manifest(tmp_path: Path) -> None:
    bad = atomic_write_text(tmp_path / "x.csv", "a,b\n1,2\n")
    with pytest.raises(ManifestError, match="needs columns"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="file not found"):
        read_manifest(tmp_path / "nope.csv")


def test_label_sets_paper_vs_common_practice(tmp_path: Path) -> None:
    df = _corpus(tmp_path)
    common = select_classes(df, get_label_set("4class"))
    paper = select_classes(df, get_label_set("4class-exc"))
    assert sorted(common["raw_label"]) == ["ang", "exc", "hap", "neu", "sad"]
    assert sorted(paper["raw_label"]) == ["ang", "exc", "neu", "sad"]  # real 'hap' left out
    assert set(paper.loc[paper["raw_label"] == "exc", "class"]) == {"happy"}
    assert list(paper["y"]) == [LABEL_SETS["4class-exc"].index(c) for c in paper["class"]]
    with pytest.raises(ValueError, match="choose one of"):
        get_label_set("five")

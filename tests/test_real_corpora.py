"""The loaders on the real corpora beside the project (``../shared/data``, see its README.md).

Expected counts are the documented ones (the data README and the corpora's papers), never the
loaders' own output. Each corpus is scanned once per module. Skipped, with the reason, when the
data is absent (a user's clone has no ``../shared/data``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from areaser.cli import app
from areaser.data.corpora import load_corpus
from areaser.data.corpora.base import CorpusScan
from areaser.data.manifest import read_manifest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not (DATA / "emodb" / "wav").is_dir() or not (DATA / "ravdess").is_dir():
    pytest.skip(
        f"real corpora absent: no {DATA}/emodb/wav and {DATA}/ravdess (only beside the project's "
        "own checkout, never shipped)",
        allow_module_level=True,
    )

# /work/shared/data/README.md: raw EmoDB emotion -> count, and the loader's canonical name for it.
EMODB_RAW = {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71, "neutral": 79, "sadness": 62}
EMODB_CANONICAL = {
    "anger": "angry",
    "boredom": "boredom",
    "disgust": "disgust",
    "fear": "fear",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
}
EMODB_SPEAKERS = {"03": 49, "08": 58, "09": 43, "10": 38, "11": 55, "12": 35, "13": 61, "14": 69, "15": 56, "16": 71}
RAVDESS_LABELS = {"neutral": 96, **{e: 192 for e in ("calm", "happy", "sad", "angry", "fear", "disgust", "surprise")}}
RAVDESS_TWINS = ("03-01-03-01-02-01-07", "03-01-03-01-02-02-07")  # identical recordings in every copy


@pytest.fixture(scope="module")
def emodb() -> CorpusScan:
    return load_corpus("emodb", DATA / "emodb", progress=False)


@pytest.fixture(scope="module")
def ravdess() -> CorpusScan:
    return load_corpus("ravdess", DATA / "ravdess", progress=False)


def test_emodb_counts_per_label_and_speaker(emodb: CorpusScan) -> None:
    df = emodb.manifest
    assert len(df) == sum(EMODB_RAW.values()) == 535
    assert Counter(df["label"]) == {EMODB_CANONICAL[k]: n for k, n in EMODB_RAW.items()}
    assert Counter(df["speaker"]) == {f"emodb_{s}": n for s, n in EMODB_SPEAKERS.items()}
    assert emodb.skipped == [] and emodb.warnings == []


def test_emodb_has_no_identical_recordings(emodb: CorpusScan) -> None:
    assert set(emodb.manifest["same_as"]) == {""}


def test_ravdess_counts_per_label_and_speaker(ravdess: CorpusScan) -> None:
    df = ravdess.manifest
    assert len(df) == 1440 and {Path(p).suffix for p in df["path"]} == {".flac"}
    assert Counter(df["label"]) == RAVDESS_LABELS
    assert Counter(df["speaker"]) == {f"ravdess_{a:02d}": 60 for a in range(1, 25)}
    assert ravdess.skipped == [] and ravdess.warnings == []


def test_ravdess_has_five_stereo_files(ravdess: CorpusScan) -> None:
    channels = Counter(sf.info(p).channels for p in ravdess.manifest["path"])
    assert channels == {1: 1435, 2: 5}


def test_ravdess_identical_pair_is_marked(ravdess: CorpusScan) -> None:
    same = ravdess.manifest.set_index("utt_id")["same_as"]
    earlier, later = RAVDESS_TWINS
    assert same[later] == earlier and same[earlier] == ""
    assert dict(same[same != ""]) == {later: earlier}  # the README's only pair


def test_scan_cli_writes_the_emodb_manifest(tmp_path: Path) -> None:
    out = tmp_path / "manifest.csv"
    res = CliRunner().invoke(app, ["scan", "emodb", str(DATA / "emodb"), "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "535 utterances, 10 speakers" in res.output and "0 files skipped" in res.output
    assert "warning" not in res.output
    back = read_manifest(out)
    assert Counter(back["label"]) == {EMODB_CANONICAL[k]: n for k, n in EMODB_RAW.items()}
    assert Counter(back["speaker"]) == {f"emodb_{s}": n for s, n in EMODB_SPEAKERS.items()}
    assert set(back["same_as"]) == {""}

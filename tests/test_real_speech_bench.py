"""``benchmarks.real_speech`` end to end on EmoDB: every model, 2 folds, 1 epoch, a tiny CNN.

Runs on the real corpus beside the project (``../shared/data``, see its README.md) and skips
with the reason when it is absent (a user's clone has no data) or when the ``opensmile``
package (the ``bench`` extra) is missing. The fast test runs one model of each kind (neural
``cnn``, the package's classical ``egemaps-lr``, the ``opensmile-svm`` peer) on 6 utterances per
speaker (``--per-speaker 6``), about 40 s on two busy cores (each neural cross-validation costs
~15 s of Lightning overhead, the librosa eGeMAPS-like features ~0.2-0.7 s per file); the slow
one runs all six models on all 535 files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import real_speech

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (DATA / "emodb" / "wav").is_dir(),
    reason=f"real corpora absent: no {DATA}/emodb/wav (only beside the project's own checkout, never shipped)",
)
TINY = ["--epochs", "1", "--set", 'model_overrides={"channels":[4,4,4,4,4]}']
CELL = re.compile(r"^\**(\d+\.\d+) \+- (\d+\.\d+)\**$")


FAST = ("cnn", "egemaps-lr", "opensmile-svm")


def _bench(tmp_path: Path, models: tuple[str, ...], extra: list[str]) -> tuple[list[str], Path]:
    pytest.importorskip("opensmile", reason="the opensmile package (bench extra) is not installed")
    doc = tmp_path / "docs" / "real-speech.md"
    args = [
        "--corpora",
        "emodb",
        "--models",
        ",".join(models),
        "--folds",
        "2",
        *TINY,
        *extra,
        "--data",
        str(DATA),
        "--out",
        str(tmp_path / "runs"),
        "--doc",
        str(doc),
        "--no-progress",
    ]
    return args, doc


def _check(doc: Path, store: dict, runs: Path, models: tuple[str, ...]) -> None:
    text = doc.read_text()
    assert "EmoDB, protocol `lospk`, label set `emodb`" in text
    for model in models:
        rows = [ln for ln in text.splitlines() if ln.startswith(f"| `{model}` | {real_speech.WHAT[model]} |")]
        assert len(rows) == 1, f"no score row for {model}"
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        for cell in cells[2:5]:  # UA, WA, macro-F1: mean +- std in %
            m = CELL.match(cell)
            assert m, f"{model}: {cell!r} is not 'mean +- std'"
            assert 0 <= float(m[1]) <= 100 and 0 <= float(m[2]) <= 100
        assert cells[5] == "2 of 10"
        assert float(cells[6]) >= 0
        png = doc.parent / "real-speech" / f"emodb-{model}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
        entry = store["runs"][f"emodb/{model}/seed0"]
        assert [f["name"] for f in entry["folds"]] == ["fold1-emodb_03", "fold2-emodb_08"]
        for f in entry["folds"]:
            report = json.loads((Path(entry["cv_dir"]) / f["name"] / "report.json").read_text())
            assert set(report["test"]["per_class"]) == set(entry["classes"])
    assert len([ln for ln in text.splitlines() if ln.startswith("| `")]) == 2 * len(models)  # + recall
    assert 'model_overrides = {"channels": [4, 4, 4, 4, 4]}' in text and "epochs = 1" in text
    assert json.loads(doc.with_suffix(".json").read_text())["runs"].keys() == store["runs"].keys()
    assert str(runs) in entry["cv_dir"]


@needs_data
def test_every_model_on_emodb_subset_resumes_and_rewrites_the_doc(tmp_path: Path) -> None:
    args, doc = _bench(tmp_path, FAST, ["--per-speaker", "6"])
    store = real_speech.main(args)
    _check(doc, store, tmp_path / "runs", FAST)
    assert "**Subset.**" in doc.read_text()
    text = doc.read_text()

    again = real_speech.main(args)  # resumes: every fold has its report
    assert all(e["trained"] == 0 for e in again["runs"].values())
    assert len(again["invocations"]) == 1 and doc.read_text() == text

    doc.unlink()
    real_speech.main(["--doc", str(doc), "--doc-only"])
    assert doc.read_text() == text


@needs_data
def test_a_folder_made_with_other_settings_is_refused(tmp_path: Path) -> None:
    common = [
        "--corpora",
        "emodb",
        "--models",
        "cnn",
        "--folds",
        "1",
        "--per-speaker",
        "3",
        "--data",
        str(DATA),
        "--out",
        str(tmp_path / "runs"),
        "--doc",
        str(tmp_path / "d.md"),
        "--no-progress",
    ]
    real_speech.main(common + TINY)
    with pytest.raises(SystemExit, match="holds runs made with another epochs"):
        real_speech.main(common + ["--epochs", "2", *TINY[2:]])


@needs_data
@pytest.mark.slow
def test_every_model_on_all_of_emodb(tmp_path: Path) -> None:
    args, doc = _bench(tmp_path, real_speech.MODELS, [])
    store = real_speech.main(args)
    _check(doc, store, tmp_path / "runs", real_speech.MODELS)
    assert "**Subset.**" not in doc.read_text()


def test_absent_data_folder_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"data folder .*absent.* not found"):
        real_speech.main(
            ["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "runs"), "--doc", str(tmp_path / "d.md")]
        )

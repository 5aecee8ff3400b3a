"""Pretrained model folders (#16, item 1): `areaser export RUN --pretrained DIR` writes a Hugging Face-style folder
(config.json, model.safetensors, preprocessor_config.json, README.md) that Recognizer.from_pretrained, `predict` and
`serve` load from JSON and safetensors alone, scoring exactly as the run does; tampered folders are refused in one line
naming the file, and the write is atomic."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_PAPER
from safetensors import safe_open
from typer.testing import CliRunner

from areaser.cli import app
from areaser.runs.config import config_with
from areaser.serve.pretrained import FILES, FORMAT, PretrainedError, export_pretrained, is_pretrained, load_pretrained
from areaser.serve.recognizer import Recognizer
from areaser.train.lifecycle import train

# a tiny area-attention run, its log-Mel normalised with dataset statistics (so the folder carries them)
TINY = {**TINY_PAPER, "features": {**TINY_PAPER["features"], "norm": "dataset"}}


@pytest.fixture(scope="module")
def run(builtin_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    train(config_with(None, manifest=str(builtin_corpus / "manifest.csv"), out_dir=str(out), name="tiny", **TINY))
    return out / "tiny"


@pytest.fixture(scope="module")
def folder(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_pretrained(run, tmp_path_factory.mktemp("export") / "tiny-pretrained")


@pytest.fixture(scope="module")
def wavs(builtin_corpus: Path) -> list[Path]:
    df = pd.read_csv(builtin_corpus / "manifest.csv")
    return [builtin_corpus / p for p in df["path"][::10]]  # 6 files, several lengths


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def _edit(path: Path, change) -> None:  # noqa: ANN001
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def _cli(args: list[str]):  # noqa: ANN202
    return CliRunner().invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------------------- same model, same numbers


def test_from_pretrained_scores_exactly_as_the_run(run: Path, folder: Path, wavs: list[Path], monkeypatch) -> None:
    ref = Recognizer.load(run)
    want = list(ref.predict_many(wavs))

    def no_pickle(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a pretrained folder must load without pickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    for rec in (Recognizer.from_pretrained(folder), Recognizer.load(folder)):  # load() recognises the folder too
        assert rec.classes == ("neutral", "happy", "sad", "angry") and rec.sr == 16_000
        assert rec.config == ref.config  # window, hop, padding, decision, calibration temperature
        assert (rec.config.win_s, rec.config.hop_s, rec.config.decision) == (2.0, 0.4, "prob")
        got = list(rec.predict_many(wavs))
        assert [g.label for g in got] == [w.label for w in want]
        for g, w in zip(got, want):
            assert g.probabilities.dtype == np.float32 and np.array_equal(g.probabilities, w.probabilities)
            assert len(g.timeline) == len(w.timeline) > 0
            assert all(np.array_equal(a.probabilities, b.probabilities) for a, b in zip(g.timeline, w.timeline))
    windows = np.random.default_rng(0).uniform(-0.3, 0.3, (5, 32_000)).astype(np.float32)
    a = Recognizer.load(run).backend.classifier(torch.from_numpy(windows))
    b = Recognizer.from_pretrained(folder).backend.classifier(torch.from_numpy(windows))
    assert torch.equal(a, b)


def test_folder_layout_follows_the_hub_conventions(folder: Path, run: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == FORMAT and cfg["architectures"] == ["AreaAttentionCNN"] and cfg["model_type"] == "areaser"
    assert cfg["id2label"] == {"0": "neutral", "1": "happy", "2": "sad", "3": "angry"}
    assert cfg["label2id"] == {"neutral": 0, "happy": 1, "sad": 2, "angry": 3} and cfg["num_labels"] == 4
    assert cfg["model_options"]["channels"] == [4, 4, 8, 8, 8] and cfg["model_options"]["max_area"] == [2, 2]
    assert cfg["window"] == {"win_s": 2.0, "hop_s": 0.4, "pad_mode": "repeat"} and cfg["decision"] == "prob"
    assert cfg["areaser_version"] and cfg["stochastic_at_eval"] is False
    assert cfg["calibration"]["temperature"] == Recognizer.load(run).config.temperature
    assert "manifest" not in cfg["training"]["provenance"]  # a path of the training machine: not published
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert (pre["sampling_rate"], pre["n_fft"], pre["hop_length"], pre["n_mels"]) == (16_000, 800, 800, 32)
    assert pre["window_seconds"] == 2.0 and pre["norm"] == "dataset"
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
        mean = f.get_tensor("features.mean")
    assert keys and all(k.startswith(("features.", "model.")) for k in keys)
    assert len(pre["mean"]) == 32 and torch.equal(torch.tensor(pre["mean"], dtype=torch.float32), mean)
    assert not torch.equal(mean, torch.zeros(32))  # fitted on the training part
    assert is_pretrained(folder) and not is_pretrained(run)


def test_the_model_card_says_the_corpus_is_synthetic(folder: Path) -> None:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "areaser" and meta["license"] == "unknown"
    assert meta["pipeline_tag"] == "audio-classification"
    assert {"speech-emotion-recognition", "synthetic-data"} <= set(meta["tags"])
    assert "datasets" not in meta  # the synthetic corpus is not the real corpus whose layout it borrows
    body = text.split("---\n", 2)[2]
    assert "**Trained on the built-in SYNTHETIC corpus" in body and "do not measure emotion recognition.**" in body
    assert "loso (speaker-independent)" in body and "fold fold1-Ses01 (held out Ses01)" in body
    assert "4class (neutral, happy, sad, angry)" in body and "0 neutral, 1 happy, 2 sad, 3 angry" in body
    test = json.loads((folder / "config.json").read_text())["training"]["test"]
    assert f"| {test['n']} | {100 * test['wa']:.2f} | {100 * test['ua']:.2f} |" in body
    assert "| environment | areaser " in body and "Recognizer.from_pretrained" in body


def test_a_card_for_a_real_corpus_lists_it_as_a_dataset_without_the_synthetic_warning(folder: Path, run: Path) -> None:
    from areaser.serve.pretrained import model_card

    report = json.loads((run / "report.json").read_text())
    report["provenance"].update(synthetic=False, corpus="emodb", corpus_names=["emodb"])
    text = model_card(json.loads((folder / "config.json").read_text()), report, license="cc-by-nc-4.0")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["datasets"] == ["emodb"] and meta["license"] == "cc-by-nc-4.0" and "synthetic-data" not in meta["tags"]
    assert "SYNTHETIC" not in text and "| training corpus | emodb |" in text and "## Test scores" in text


# ----------------------------------------------------------------------------- the command line


def test_cli_export_then_predict_and_serve_the_folder(run: Path, wavs: list[Path], tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "hub" / "model"
    r = _cli(["export", run, "--pretrained", out, "--license", "mit"])
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output.replace("\n", "") and "SYNTHETIC" in r.output and "model.safetensors" in r.output
    assert yaml.safe_load((out / "README.md").read_text().split("---\n")[1])["license"] == "mit"
    r = _cli(["predict", out, wavs[0], "--no-progress"])
    assert r.exit_code == 0, r.output
    assert wavs[0].name in r.output.replace("\n", "") and "neutral" in r.output
    r = _cli(["predict", out, *wavs[:3], "-o", tmp_path / "p.jsonl", "--no-progress"])
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    want = [p.to_dict() for p in Recognizer.load(run).predict_many(wavs[:3])]
    assert [g["probabilities"] for g in got] == [w["probabilities"] for w in want]
    served = {}
    monkeypatch.setattr(
        "areaser.serve.service.serve", lambda rec, host, port, limits, **kw: served.setdefault("rec", rec)
    )
    r = _cli(["serve", out, "--port", "0"])
    assert r.exit_code == 0, r.output
    assert served["rec"].classes == ("neutral", "happy", "sad", "angry") and served["rec"].name == "model"


def test_export_needs_a_target(run: Path) -> None:
    r = _cli(["export", run])
    assert r.exit_code == 2 and "--onnx" in r.output and "--pretrained" in r.output


# ----------------------------------------------------------------------------- tampered folders


@pytest.mark.parametrize(
    "file, change, says",
    [
        ("config.json", lambda d: d.update(architectures=["Wav2Vec2ForSequenceClassification"]), "architectures"),
        ("config.json", lambda d: d["features"].update(n_mels=10**6), "n_mels=1000000 is out of range"),
        (
            "config.json",
            lambda d: d["model_options"].update(channels=[1024] * 5, head="flatten", ref_frames=2**15),
            "parameters",
        ),
        ("config.json", lambda d: d["window"].update(win_s=1e6), "window: need 0 < win_s"),
        ("config.json", lambda d: d.update(format="areaser-pretrained/99"), "unsupported format"),
        ("config.json", lambda d: d["calibration"].update(temperature=-1), "calibration: temperature must be"),
        (
            "config.json",
            lambda d: d["model_options"].update(eval_hook="os.system"),
            "unknown model option(s) eval_hook",
        ),
        # five class names for four outputs: id2label alone, or every count changed with it (then the weights say)
        ("config.json", lambda d: d["id2label"].update({"4": "fear"}), "label2id: does not mirror id2label"),
        (
            "config.json",
            lambda d: (
                d["id2label"].update({"4": "fear"}),
                d.update(label2id={**d["label2id"], "fear": 4}, num_labels=5),
            ),
            "id2label names 5 classes",
        ),
        (
            "model.safetensors",
            lambda d: (
                d["id2label"].update({"4": "fear"}),
                d.update(label2id={**d["label2id"], "fear": 4}, num_labels=5),
                d["model_options"].update(n_classes=5),
            ),
            "weights do not fit config.json: size mismatch for classifier.weight",
        ),
        ("config.json", lambda d: d["id2label"].update({"1": "neutral"}), "'neutral' given more than once"),
        ("preprocessor_config.json", lambda d: d.update(n_mels=64), "n_mels 64 disagrees with config.json (32)"),
        ("preprocessor_config.json", lambda d: d.update(mean=[0.0] * 32), "mean is not the normalisation"),
    ],
)
def test_a_tampered_folder_is_refused_in_one_line_naming_the_file(
    folder: Path, tmp_path: Path, file: str, change, says: str
) -> None:
    d = _copy(folder, tmp_path)
    _edit(d / ("config.json" if file == "model.safetensors" else file), change)
    with pytest.raises(PretrainedError) as e:
        Recognizer.from_pretrained(d)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{d / file}: ") and says in msg, msg
    r = _cli(["predict", d, "x.wav"])
    assert r.exit_code == 2 and file in r.output and "Traceback" not in r.output


def test_damaged_or_missing_weights_are_refused(folder: Path, tmp_path: Path) -> None:
    d = _copy(folder, tmp_path)
    w = d / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-8:] = bytes(8)  # last bytes of the last tensor
    w.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match=r"model\.safetensors: corrupted: checksum mismatch"):
        load_pretrained(d)
    w.unlink()
    with pytest.raises(PretrainedError, match=r"model\.safetensors: missing"):
        load_pretrained(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(PretrainedError, match=r"config\.json: not a readable JSON file"):
        Recognizer.load(d)  # still recognised as a pretrained folder, so its problem is reported


# ----------------------------------------------------------------------------- writing safely


def test_export_refuses_to_overwrite_a_folder_that_is_not_a_pretrained_folder(
    run: Path, folder: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(PretrainedError, match=r"mine: not empty and not an areaser pretrained folder"):
        export_pretrained(run, mine)
    r = _cli(["export", run, "--pretrained", mine])
    assert r.exit_code == 2 and "not overwritten" in r.output.replace("\n", " ")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(PretrainedError, match="not empty and not an areaser pretrained folder"):
        export_pretrained(run, run)  # a run directory has a config.json too, of another kind
    extra = _copy(folder, tmp_path)
    (extra / "train.log").write_text("mine")
    with pytest.raises(PretrainedError, match=r"holds 'train\.log', which an export does not write"):
        export_pretrained(run, extra)
    (tmp_path / "empty").mkdir()
    assert load_pretrained(export_pretrained(run, tmp_path / "empty")).classes[0] == "neutral"
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(PretrainedError, match="exists and is not a folder"):
        export_pretrained(run, f)


def test_the_write_is_staged_then_renamed_and_a_failure_keeps_the_earlier_folder(
    run: Path, folder: Path, tmp_path: Path, monkeypatch
) -> None:
    import areaser.serve.pretrained as pretrained

    target = _copy(folder, tmp_path)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    renames = []
    real_replace = os.replace

    def replace(src, dst):  # noqa: ANN001, ANN202
        src, dst = Path(src), Path(dst)
        renames.append((src.name, dst.name, sorted(p.name for p in src.iterdir()) if src.is_dir() else None))
        return real_replace(src, dst)

    monkeypatch.setattr(pretrained.os, "replace", replace)
    assert export_pretrained(run, target) == target  # replaces an earlier pretrained folder whole
    staged = [r for r in renames if r[1] == target.name and r[0].startswith(f".{target.name}.tmp.")]
    assert len(staged) == 1 and staged[0][2] == sorted(FILES)  # complete before it is renamed into place
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # same run: the same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # nothing staged or old left behind

    def broken_card(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("disk full")

    monkeypatch.setattr(pretrained, "model_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        export_pretrained(run, target)
    with pytest.raises(RuntimeError, match="disk full"):
        export_pretrained(run, tmp_path / "new")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no half folder, no staging left


# ----------------------------------------------------------------------------- what cannot, or can, be represented


def test_a_classical_baseline_run_is_refused_in_one_line(tmp_path: Path) -> None:
    b = tmp_path / "egemaps"
    b.mkdir()
    (b / "config.json").write_text(json.dumps(config_with(model="egemaps-lr", manifest="m.csv").to_dict()))
    with pytest.raises(PretrainedError) as e:
        export_pretrained(b, tmp_path / "out")
    assert "\n" not in str(e.value) and "classical baseline run (egemaps-lr)" in str(e.value)
    assert "scikit-learn" in str(e.value) and not (tmp_path / "out").exists()


def test_a_model_random_at_evaluation_is_exported_and_says_so(tmp_path: Path) -> None:
    from test_inference import make_random_run

    run = make_random_run(tmp_path / "faithful", model="faithful", overrides={"channels": [4, 4, 8, 8, 8]})
    out = export_pretrained(run, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["stochastic_at_eval"] is True
    assert "random at evaluation" in (out / "README.md").read_text()
    assert "None recorded" in (out / "README.md").read_text()  # no report.json: no scores claimed
    windows = torch.from_numpy(np.random.default_rng(1).uniform(-0.3, 0.3, (3, 32_000)).astype(np.float32))
    outs = []
    for rec in (Recognizer.load(run), Recognizer.from_pretrained(out)):
        torch.manual_seed(7)  # the same draw from the same weights
        with torch.no_grad():
            outs.append(rec.backend.classifier(windows))
    assert torch.equal(*outs)

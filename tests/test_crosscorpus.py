"""Cross-corpus scoring and provenance: a run scored on another corpus' manifest, classes matched by
name, absent classes out of UA; every report names its corpus, label set and protocol, and says so
when the data are synthetic or the protocol speaker-dependent.

Expected numbers come from the manifests and the confusion matrices themselves, never from the code
under test: supports are counted in the CSV, UA is the mean recall over the classes present."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CNN

from areaser.runs.config import ConfigError, config_with
from areaser.train.crosscorpus import evaluate_on
from areaser.train.crossval import cross_validate
from areaser.train.lifecycle import train

SYNTH = "synthetic (built-in espeak-ng corpus): scores show the code runs, not emotion recognition"
SPK_DEP = "speaker-dependent: speakers appear in train and test"
CLASSES = ["neutral", "happy", "sad", "angry"]  # 4class; excited is happy there

# A tiny model and features (seconds per run on 2 shared cores), as tests/test_training.py.
TINY = TINY_CNN  # tests/conftest.py's tiny CNN


def tiny(manifest: Path, out: Path, **overrides):
    return config_with(None, manifest=str(manifest), out_dir=str(out), **{**TINY, **overrides})


def _frame(manifest: Path) -> pd.DataFrame:
    """The manifest with absolute audio paths, so a copy of it can live anywhere."""
    df = pd.read_csv(manifest, keep_default_na=False)
    df["path"] = [str(manifest.parent / p) for p in df["path"]]
    return df


@pytest.fixture(scope="module")
def manifest(builtin_corpus: Path) -> Path:
    return builtin_corpus / "manifest.csv"


@pytest.fixture(scope="module")
def other(manifest: Path, tmp_path_factory) -> Path:
    """'Another corpus': the built-in audio under corpus name othercorp, 4 neutral utterances relabelled
    boredom (no 4class class: left out)."""
    df = _frame(manifest).assign(corpus="othercorp")
    df.loc[df.index[df["label"] == "neutral"][:4], "label"] = "boredom"
    path = tmp_path_factory.mktemp("othercorp") / "manifest.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def neural(manifest: Path, other: Path, tmp_path_factory):
    """A tiny loso fold-1 run trained with --test-manifest other; its console lines kept. A high learning
    rate, so that one epoch already gives a model whose decisions depend on its input."""
    lines: list[str] = []
    cfg = tiny(manifest, tmp_path_factory.mktemp("runs"), name="net", test_manifests=[str(other)], lr=1e-2)
    report = train(cfg, log=lines.append)
    return Path(cfg.out_dir) / "net", report, "\n".join(lines)


def _test_only(run_dir: Path, manifest: Path, path: Path) -> Path:
    """A manifest of the run's own test utterances (from its split.json)."""
    test_ids = set(json.loads((run_dir / "split.json").read_text())["test"])
    df = _frame(manifest)
    df[df["utt_id"].isin(test_ids)].to_csv(path, index=False)
    return path


def _ua_from_confusion(confusion) -> float:
    """Mean recall over the classes present in the reference (rows with a support)."""
    cm = np.asarray(confusion, dtype=float)
    return float(np.mean([cm[i, i] / cm[i].sum() for i in range(len(cm)) if cm[i].sum() > 0]))


# ----------------------------------------------------------------------------- cross-corpus


def test_train_with_a_test_manifest_scores_the_other_corpus_by_class_name(neural, other):
    run_dir, report, log = neural
    cross = run_dir / "cross" / "othercorp"
    for name in ("report.json", "report.md", "confusion.png"):
        assert (cross / name).is_file(), name
    rep = json.loads((cross / "report.json").read_text())
    df = pd.read_csv(other, keep_default_na=False)
    counts = df["label"].value_counts()
    # classes by name through 4class: excited is happy, boredom has no class and is left out
    expected = {
        "neutral": counts["neutral"],
        "happy": counts["happy"] + counts["excited"],
        "sad": counts["sad"],
        "angry": counts["angry"],
    }
    assert {k: v["support"] for k, v in rep["test"]["per_class"].items()} == expected
    assert rep["test"]["n"] == len(df) - 4 and rep["labels_left_out"] == {"boredom": 4}
    assert rep["classes_left_out"] == [] and rep["classes_used"] == CLASSES
    assert rep["test"]["ua"] == pytest.approx(_ua_from_confusion(rep["test"]["confusion"]))
    md = (cross / "report.md").read_text()
    assert "trained on" in md and "scored on" in md and "iemocap" in md and "othercorp" in md
    assert "boredom 4" in md and "4class (neutral, happy, sad, angry)" in md
    assert "othercorp" in log  # the console line of the cross-corpus score
    # scoring again gives the same numbers and leaves the run's own report alone
    own = (run_dir / "report.json").read_bytes(), (run_dir / "report.md").read_bytes()
    assert evaluate_on(run_dir, other, log=None)["test"] == rep["test"]
    assert ((run_dir / "report.json").read_bytes(), (run_dir / "report.md").read_bytes()) == own


def test_a_model_class_absent_from_the_other_corpus_is_listed_and_left_out_of_ua(neural, other, tmp_path):
    run_dir, _, _ = neural
    full = evaluate_on(run_dir, other, log=None)["test"]
    cm = np.asarray(full["confusion"])
    kept = int(np.argmax(np.diag(cm)))  # a class with correct predictions stays, so UA > 0
    assert cm[kept, kept] > 0
    gone = next(c for i, c in enumerate(CLASSES) if i != kept)
    drop = {"happy", "excited"} if gone == "happy" else {gone}
    df = pd.read_csv(other, keep_default_na=False)
    path = tmp_path / "manifest.csv"
    df[~df["label"].isin(drop)].assign(corpus="reduced").to_csv(path, index=False)
    rep = evaluate_on(run_dir, path, log=None)
    assert rep["classes_left_out"] == [gone] and gone not in rep["classes_used"]
    t = rep["test"]
    assert t["per_class"][gone]["support"] == 0
    present = [i for i, c in enumerate(CLASSES) if c != gone]
    recall = [t["per_class"][CLASSES[i]]["recall"] for i in present]
    assert t["ua"] == pytest.approx(sum(recall) / 3)  # over the 3 classes present, not 4
    assert t["ua"] != pytest.approx(sum(recall) / 4)
    assert t["ua"] == pytest.approx(_ua_from_confusion(t["confusion"]))
    md = (run_dir / "cross" / "reduced" / "report.md").read_text()
    assert f"| model classes absent from reduced (left out of UA) | {gone} |" in md


def _windows(path: str):
    """2 s windows every 0.4 s (the test hop), a short utterance padded: ``[n, 32000]`` float32."""
    import torch

    from areaser.data.segments import segment
    from areaser.io.audio import load_audio

    windows, _ = segment(load_audio(path, 16000), 16000, 2.0, 0.4, "pad")
    return torch.from_numpy(np.asarray(windows, dtype=np.float32))


def _sharpen(run_dir: Path, paths: list[str]) -> None:
    """Give a run a random output layer centred on its inputs' features, so that its decisions swing
    with the windows (a one-epoch tiny model says nearly the same class whatever it hears)."""
    import torch

    from areaser.runs.checkpoint import load_run, load_weights, save_weights

    run, seen = load_run(run_dir), []
    hook = run.model.classifier.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    with torch.no_grad():
        for p in paths:
            run.model(run.features(_windows(p)))
    hook.remove()
    h = torch.cat(seen)
    w = 10 * torch.randn(4, h.shape[1], generator=torch.Generator().manual_seed(0)) / (h.std(0) + 1e-6)
    best = run_dir / "checkpoints" / "best.safetensors"
    state, header = load_weights(best)
    state["model.classifier.weight"], state["model.classifier.bias"] = w, -w @ h.mean(0)
    save_weights(best, state, header)


def test_neural_scores_are_the_mean_window_probability_of_every_utterance(neural, other, tmp_path):
    """The paper's decision, by hand: 2 s windows every 0.4 s, mean of the softmax probabilities,
    argmax; the confusion matrix must be the report's."""
    import torch

    from areaser.runs.checkpoint import load_run

    run_dir = tmp_path / "sharp"
    shutil.copytree(neural[0], run_dir)
    df = pd.read_csv(other, keep_default_na=False)
    _sharpen(run_dir, list(df["path"][::3]))
    rep = evaluate_on(run_dir, other, log=None)
    run = load_run(run_dir)
    index = {"neutral": 0, "happy": 1, "excited": 1, "sad": 2, "angry": 3}
    cm = np.zeros((4, 4), dtype=int)
    for row in df[df["label"].isin(index)].itertuples():
        with torch.no_grad():
            p = run.model(run.features(_windows(row.path))).softmax(-1).mean(0)
        cm[index[row.label], int(p.argmax())] += 1
    assert (cm.sum(0) > 0).sum() >= 3  # the decisions vary from utterance to utterance: the check bites
    assert cm.tolist() == rep["test"]["confusion"]


def test_scoring_the_runs_own_test_utterances_reproduces_its_test_scores(neural, manifest, tmp_path):
    """The same window / decision pipeline as the run's own report: its test set scored through
    evaluate_on gives exactly its test scores."""
    run_dir, report, _ = neural
    rep = evaluate_on(run_dir, _test_only(run_dir, manifest, tmp_path / "manifest.csv"), log=None)
    assert rep["test"] == report["test"]
    assert rep["notes"] and "scored on the corpus it was trained on" in rep["notes"][-1]


def test_a_baseline_run_keeps_its_fit_and_scores_other_corpora(manifest, other, tmp_path):
    from areaser.models.baselines import FEATURE_NAMES, extract_features, fit_predict, get_baseline
    from areaser.runs.fitted import FIT_FILE, load_fitted

    cfg = config_with(
        None, manifest=str(manifest), model="egemaps-lr", out_dir=str(tmp_path), name="bl", progress=False
    )
    report = train(cfg, log=None)
    run_dir = tmp_path / "bl"
    fit = load_fitted(run_dir)
    assert (run_dir / FIT_FILE).is_file() and not [p for p in run_dir.rglob("*") if p.suffix in (".pkl", ".joblib")]
    split = json.loads((run_dir / "split.json").read_text())
    assert fit.header["train_ids"] == split["train"] and not set(split["train"]) & set(split["test"])
    assert fit.x_train.shape == (len(split["train"]), len(FEATURE_NAMES)) and len(fit.y_train) == len(split["train"])
    # what is kept is the training part itself: its features, and its labels as 4class indices
    df = _frame(manifest).set_index("utt_id")
    x_train = extract_features(list(df.loc[split["train"], "path"]))
    assert np.array_equal(fit.x_train, x_train, equal_nan=True)
    index = {"neutral": 0, "happy": 1, "excited": 1, "sad": 2, "angry": 3}
    assert fit.y_train.tolist() == [index[v] for v in df.loc[split["train"], "label"]]
    # and scoring refits the classifier of the run: the same probabilities as a fit on that part
    test_paths = list(df.loc[split["test"], "path"])
    expected = fit_predict(x_train, fit.y_train, extract_features(test_paths), 4, get_baseline("egemaps-lr"))
    assert np.allclose(fit.predict_proba(test_paths), expected)
    # the refit classifier is the one the run scored: its own test utterances give its own test scores
    own = evaluate_on(run_dir, _test_only(run_dir, manifest, tmp_path / "test.csv"), log=None)
    assert own["test"] == report["test"]
    rep = evaluate_on(run_dir, other, log=None)
    assert rep["test"]["n"] == 60 - 4 and rep["labels_left_out"] == {"boredom": 4}  # all originals but boredom
    assert (run_dir / "cross" / "othercorp" / "report.md").is_file()


@pytest.mark.slow  # a cross-validation of every fold: 11 s; one run's cross-corpus scoring stays in the default suite
def test_cv_scores_every_fold_on_each_test_manifest_and_aggregates(manifest, other, tmp_path):
    lines: list[str] = []
    cfg = tiny(manifest, tmp_path, name="cv", test_manifests=[str(other)])
    summary = cross_validate(cfg, folds=[0, 1], log=lines.append)
    uas = [
        json.loads((tmp_path / "cv" / f / "cross" / "othercorp" / "report.json").read_text())["test"]["ua"]
        for f in ("fold1-Ses01", "fold2-Ses02")
    ]
    agg = summary["cross_corpus"]["othercorp"]["aggregate"]
    assert agg["ua"]["mean"] == pytest.approx(sum(uas) / 2)
    assert agg["ua"]["std"] == pytest.approx(statistics.stdev(uas))
    md = (tmp_path / "cv" / "report.md").read_text()
    assert "Cross-corpus" in md and "### Scored on othercorp" in md
    assert f"{100 * sum(uas) / 2:.2f} +- {100 * statistics.stdev(uas):.2f}" in md
    assert "[fold1-Ses01](fold1-Ses01/cross/othercorp/report.md)" in md
    # the cv summary names corpus, label set and protocol, and the console says the data are synthetic
    info = summary["info"]
    assert info["corpus"].startswith("iemocap") and SYNTH in info["corpus"]
    assert (
        info["label set"] == "4class (neutral, happy, sad, angry)" and info["protocol"] == "loso (speaker-independent)"
    )
    assert SYNTH in md and any("cross-corpus on othercorp" in line for line in lines)
    assert SYNTH in lines[-1] and "iemocap" in lines[-1]


def test_test_manifests_are_checked_before_any_training(manifest, tmp_path):
    df = _frame(manifest).assign(label="calm")  # no class of 4class
    bad = tmp_path / "calm.csv"
    df.to_csv(bad, index=False)
    with pytest.raises(
        ConfigError,
        match=r"calm.csv: none of its labels \(calm\) maps to a class of the model "
        r"\(neutral, happy, sad, angry",
    ):
        cross_validate(tiny(manifest, tmp_path, name="cv", test_manifests=[str(bad)]), folds=[0], log=None)
    assert not (tmp_path / "cv" / "fold1-Ses01").exists()


# ----------------------------------------------------------------------------- the command line


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from areaser.cli import main

    monkeypatch.setattr(sys, "argv", ["areaser", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_evaluate_manifest_and_train_test_manifest(neural, manifest, other, tmp_path, monkeypatch, capsys):
    run_dir, _, _ = neural
    code, out, err = _cli(["evaluate", str(run_dir), "--test-manifest", str(other)], monkeypatch, capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "on othercorp (synthetic)" in flat and "trained on iemocap (synthetic)" in flat and SYNTH in flat
    # labels sharing no class with the model: one line naming the file and the classes
    df = _frame(manifest).assign(label="calm")
    bad = tmp_path / "nothing_shared.csv"
    df.to_csv(bad, index=False)
    code, out, err = _cli(["evaluate", str(run_dir), "--test-manifest", str(bad)], monkeypatch, capsys)
    flat = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert "nothing_shared.csv" in flat and "neutral, happy, sad, angry" in flat and "calm" in flat
    # train --test-manifest: a tiny run from a config file, scored on the other corpus too
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({**TINY, "manifest": str(manifest)}))
    code, out, err = _cli(
        [
            "train",
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "runs"),
            "--name",
            "cli",
            "--test-manifest",
            str(other),
            "--no-progress",
        ],
        monkeypatch,
        capsys,
    )
    assert code in (0, None), err
    assert (tmp_path / "runs" / "cli" / "cross" / "othercorp" / "report.json").is_file()
    assert json.loads((tmp_path / "runs" / "cli" / "config.json").read_text())["test_manifests"] == [str(other)]
    assert SYNTH in " ".join(out.split())


# ----------------------------------------------------------------------------- provenance


def test_run_reports_name_corpus_label_set_protocol_and_flag_synthetic_data(neural):
    run_dir, report, log = neural
    info = json.loads((run_dir / "report.json").read_text())["info"]
    assert info["corpus"] == f"iemocap: {SYNTH}"  # the manifest's corpus column, and what it is
    assert info["label set"] == "4class (neutral, happy, sad, angry)"
    assert info["protocol"] == "loso (speaker-independent)"
    assert "fold1-Ses01" in info["test scores"] and "dev" in info["test scores"]
    md = (run_dir / "report.md").read_text()
    assert f"> **Note:** corpus iemocap is {SYNTH}" in md
    assert SPK_DEP not in md
    first = log.split("\n")[[i for i, line in enumerate(log.split("\n")) if line.startswith("test WA")][0] :]
    assert "iemocap (synthetic)" in first[0] and "4class (neutral, happy, sad, angry)" in first[0]
    assert "loso" in first[0] and SYNTH in first[1]


def test_synthetic_corpus_is_recognised_by_its_marker_file(manifest, tmp_path):
    from areaser.runs.provenance import describe, is_synthetic

    df = _frame(manifest)
    assert is_synthetic(manifest)  # synth_config.json beside the manifest
    moved = tmp_path / "elsewhere" / "manifest.csv"
    moved.parent.mkdir()
    df.to_csv(moved, index=False)
    assert not is_synthetic(moved) and is_synthetic(moved, df["path"])  # the audio's folders hold the marker
    # the same audio copied out of the corpus is no longer recognised (it is a real user's data as far as we know)
    real = tmp_path / "real"
    (real / "wav").mkdir(parents=True)
    few = df.head(3).copy()
    few["path"] = [shutil.copy(p, real / "wav" / Path(p).name) for p in few["path"]]
    few.assign(corpus="mycorpus").to_csv(real / "manifest.csv", index=False)
    p = describe(real / "manifest.csv", None, "4class", CLASSES, "lospk")
    assert p["corpus"] == "mycorpus" and p["synthetic"] is False and p["speaker_dependent"] is False
    assert describe(moved, None, "4class", CLASSES, "loso")["synthetic"] is True


@pytest.mark.parametrize("protocol", ["xu2021", "random"])
def test_speaker_dependent_protocols_are_flagged_in_report_and_console(protocol, manifest, tmp_path):
    from areaser.data.splits import PROTOCOLS

    if protocol not in PROTOCOLS:
        pytest.skip(f"protocol {protocol!r} is not in this version")
    lines: list[str] = []
    report = train(tiny(manifest, tmp_path, name=protocol, protocol=protocol, track_test=False), log=lines.append)
    assert report["info"]["protocol"] == f"{protocol} ({SPK_DEP})"
    md = (tmp_path / protocol / "report.md").read_text()
    assert f"> **Note:** protocol {protocol} is {SPK_DEP}" in md
    assert any(SPK_DEP in line for line in lines)


def test_real_corpus_cross_scores_name_it_and_are_not_called_synthetic(neural, tmp_path):
    """EmoDB (real speech, beside the project): 4class keeps neutral, happy, sad, angry; boredom, disgust
    and fear are left out. A subset of 5 per emotion keeps this quick."""
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emodb"
    if not (root / "wav").is_dir():
        pytest.skip(f"{root} absent: the real corpora are not part of a clone")
    from areaser.data.corpora import load_corpus
    from areaser.data.manifest import write_manifest

    df = load_corpus("emodb", root, progress=False, check_silent=False).manifest
    df = df.groupby("label", group_keys=False).head(5)
    path = tmp_path / "emodb.csv"
    write_manifest(df, path)
    run_dir, _, _ = neural
    rep = evaluate_on(run_dir, path, log=None)
    counts = df["label"].value_counts()
    kept = [c for c in CLASSES if c in counts]
    assert rep["test"]["n"] == sum(int(counts[c]) for c in kept)
    assert rep["labels_left_out"] == {k: int(v) for k, v in counts.items() if k not in CLASSES}
    assert rep["provenance"]["scored_on"]["corpus"] == "emodb" and not rep["provenance"]["scored_on"]["synthetic"]
    assert rep["provenance"]["trained_on"]["synthetic"]
    assert (run_dir / "cross" / "emodb" / "report.md").is_file()
    assert all("corpus emodb" not in n for n in rep["notes"])

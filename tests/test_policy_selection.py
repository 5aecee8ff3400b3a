"""Epoch selection and training order, pinned on real runs where the choice matters.

On the reference run of ``test_training.py`` the epoch best on dev, the last epoch and the
epoch best on test are one and the same, so choosing on test, scoring the last weights or
keeping the highest loss would all go unseen. Here a manifest is built so that they differ by
construction, from the built-in corpus's 4-class recordings:

* train (session ``C``): the recordings with their labels;
* test (session ``A``): the same recordings again (new ids), same labels: test scores rise as
  the model fits its training data;
* dev (session ``B``, one speaker): the same recordings with every label moved to the next
  class (neutral -> happy -> sad -> angry -> neutral): the better the model fits, the worse
  dev gets, so dev UA peaks early and dev loss is lowest early.

``loso`` fold 0 of that manifest is exactly this cut (test = the first session, dev = the
speaker of the second, train = the rest). Each test first asserts that its scenario is not
degenerate (best != last, best on dev != best on test), so it cannot pass vacuously.

Expected values come from first principles: my own argmax / argmin over the recorded curve, and
my own scoring of the saved weights (``best.safetensors`` / ``last.safetensors``, read back
with :mod:`areaser.runs.checkpoint`, a forward pass and per-class recall computed here),
never from the selection code under test.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from areaser.data.windows import load_windows
from areaser.runs.checkpoint import load_run, load_tree, read_header
from areaser.runs.config import TrainConfig, build_modules, config_with
from areaser.runs.metrics import best_epoch, is_better, lower_is_better, paper_and_honest
from areaser.train.lifecycle import train

CLASSES = ("neutral", "happy", "sad", "angry")
NEXT = {c: CLASSES[(i + 1) % len(CLASSES)] for i, c in enumerate(CLASSES)}

# A tiny model that fits its 51 training recordings within a few epochs at a high rate; 2 s
# training hop (one window per 2 s) keeps an epoch near one second on one thread.
TINY = {
    "model_overrides": {"channels": [4, 4, 8, 8, 8], "max_area": [2, 2]},
    "features": {"n_mels": 32, "hop_length": 800},
    "segments": {"train_hop_s": 2.0},
    "epochs": 8,
    "batch_size": 16,
    "lr": 6e-3,
    "patience": None,
    "progress": False,
    "tensorboard": False,
    "threads": 1,
    "track_test": True,
}


# ----------------------------------------------------------------------------- the scenario


@pytest.fixture(scope="module")
def scenario(builtin_corpus: Path, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """``(manifest, rows)``: the train / anti-labelled dev / test-equals-train manifest above."""
    from areaser.data.manifest import read_manifest

    df = read_manifest(builtin_corpus / "manifest.csv")  # absolute paths
    base = df[df["label"].isin(CLASSES) & (df["source_id"] == "")].reset_index(drop=True)
    train_rows = base.assign(session="C")
    test_rows = base.assign(utt_id="T_" + base["utt_id"], session="A", speaker="A1")
    dev_rows = base.assign(
        utt_id="D_" + base["utt_id"],
        session="B",
        speaker="B1",
        label=base["label"].map(NEXT),
        raw_label=base["label"].map(NEXT),
    )
    rows = pd.concat([train_rows, dev_rows, test_rows], ignore_index=True)
    out = tmp_path_factory.mktemp("policy")
    rows.to_csv(out / "manifest.csv", index=False)
    return out / "manifest.csv", rows


class TrainOrder(Callback):
    """Records the window indices of every training batch, per epoch (0-based): ``epochs[e]``.

    A training batch is ``(waves, labels, idx)`` with ``idx`` the windows' indices in the
    training set (``areaser.data.windows._TrainBatch``), so this is the order the model saw them in.
    """

    def __init__(self):
        self.epochs: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.epochs.setdefault(trainer.current_epoch, []).extend(batch[2].tolist())


def _run(manifest: Path, out: Path, monitor: str) -> tuple[TrainConfig, dict, Path, TrainOrder]:
    order = TrainOrder()
    cfg = config_with(None, manifest=str(manifest), out_dir=str(out), name=monitor, monitor=monitor, **TINY)
    report = train(cfg, callbacks=[order], log=None)
    return cfg, report, out / monitor, order


@pytest.fixture(scope="module")
def ua_run(scenario, tmp_path_factory):
    """The default monitor (``dev_ua``), test tracked after every epoch."""
    return _run(scenario[0], tmp_path_factory.mktemp("runs"), "dev_ua")


@pytest.fixture(scope="module")
def loss_run(scenario, tmp_path_factory):
    """``monitor=dev_loss``; same data, seed and schedule as ``ua_run``."""
    return _run(scenario[0], tmp_path_factory.mktemp("runs"), "dev_loss")


# ----------------------------------------------------------------------------- scoring by hand


def _load(run_dir: Path, which: str):
    """``(features, model, epoch)`` of ``best.safetensors`` (the kept weights) or ``last.safetensors``
    (Lightning's state after the last epoch), built from the run's ``config.json``; epochs 1-based."""
    if which == "best":
        run = load_run(run_dir, "best")
        assert tuple(run.classes) == CLASSES
        return run.features, run.model, int(run.header["epoch"])
    tree, header = load_tree(run_dir / "checkpoints/last.safetensors")
    features, model = build_modules(TrainConfig.load(run_dir / "config.json"), len(CLASSES))
    state = tree["state_dict"]
    for prefix, m in (("features.", features), ("model.", model)):
        m.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return features.eval(), model.eval(), int(header["epoch"]) + 1  # Lightning counts from 0


@lru_cache(maxsize=None)
def _rescore(run_dir: str, which: str, part: str, manifest: str) -> dict:
    """Score ``which`` weights of a run on ``part`` (``dev`` / ``test``), computed here:
    window logits by a forward pass, utterance = argmax of the mean window softmax (decision
    ``prob``), WA, UA (mean per-class recall over present classes), confusion, window CE loss."""
    rows = pd.read_csv(manifest, keep_default_na=False)
    rows = rows[rows["session"] == {"test": "A", "dev": "B"}[part]].reset_index(drop=True)
    rows["y"] = [CLASSES.index(c) for c in rows["label"]]
    features, model, epoch = _load(Path(run_dir), which)
    cfg = TrainConfig.load(Path(run_dir) / "config.json")
    assert cfg.decision == "prob"
    ws = load_windows(rows, cfg.segments, train=False, sr=cfg.features.sr)
    with torch.no_grad():
        logits = torch.cat(
            [model(features(ws.waves(torch.arange(i, min(i + 64, len(ws)))))) for i in range(0, len(ws), 64)]
        ).double()
    probs = np.zeros((ws.n_utts, len(CLASSES)))
    np.add.at(probs, ws.utt_index.numpy(), logits.softmax(-1).numpy())
    pred = probs.argmax(1)
    y = ws.utterances["y"].to_numpy()
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    present = sorted(set(y.tolist()))
    return {
        "epoch": epoch,
        "wa": float((pred == y).mean()),
        "ua": float(np.mean([(pred[y == c] == c).mean() for c in present])),
        "confusion": confusion.tolist(),
        "loss": float(F.cross_entropy(logits, ws.labels)),
    }


def rescore(run, which: str, part: str, manifest: Path) -> dict:
    return _rescore(str(run[2]), which, part, str(manifest))


def first_best(values: list[float], lower: bool) -> int:
    """1-based epoch of the first minimum (``lower``) or maximum of a recorded curve."""
    target = min(values) if lower else max(values)
    return 1 + values.index(target)


# ----------------------------------------------------------------------------- (a) chosen on dev, not test


def test_the_epoch_is_chosen_on_dev_even_when_test_is_scored_every_epoch(ua_run, scenario):
    cfg, report, run_dir, _ = ua_run
    hist = report["history"]
    dev = [r["dev_ua"] for r in hist]
    test_ua, test_wa = [r["test_ua"] for r in hist], [r["test_wa"] for r in hist]
    mine = first_best(dev, lower=False)
    on_test = {
        first_best(test_ua, False),
        first_best(test_wa, False),
        first_best([a + b for a, b in zip(test_wa, test_ua)], False),
        first_best([r["test_loss"] for r in hist], True),
    }
    assert len(hist) == cfg.epochs == 8
    assert mine not in on_test, f"scenario degenerate: dev and test prefer the same epoch {mine} ({dev}, {test_ua})"

    # the recorded 'dev' curve is the dev set's (anti-labelled), not the test set's: re-scored by hand
    best_dev, last_dev = rescore(ua_run, "best", "dev", scenario[0]), rescore(ua_run, "last", "dev", scenario[0])
    assert best_dev["epoch"] == mine and last_dev["epoch"] == len(hist)
    assert best_dev["ua"] == pytest.approx(dev[mine - 1], abs=1e-9)
    assert last_dev["ua"] == pytest.approx(dev[-1], abs=1e-9)

    # the kept weights, the reported epoch and the honest reading all follow dev
    assert report["selected_epoch"] == mine
    assert read_header(run_dir / "checkpoints/best.safetensors")["epoch"] == mine
    ph = report["paper_and_honest"]
    assert ph["honest"] == {"monitor": "dev_ua", "epoch": mine, "wa": test_wa[mine - 1], "ua": test_ua[mine - 1]}
    # ... while the paper's reading is the (optimistic) maximum over test epochs
    assert ph["paper"]["max_ua"] == max(test_ua) and ph["paper"]["max_ua_epoch"] == first_best(test_ua, False)
    assert ph["paper"]["max_ua_epoch"] != mine


# ----------------------------------------------------------------------------- (b) test scored with the chosen weights


def test_the_test_score_comes_from_the_chosen_epochs_weights_not_the_last(ua_run, scenario):
    cfg, report, run_dir, _ = ua_run
    hist = report["history"]
    best = rescore(ua_run, "best", "test", scenario[0])
    last = rescore(ua_run, "last", "test", scenario[0])
    assert best["epoch"] == report["selected_epoch"] and last["epoch"] == len(hist)
    assert best["epoch"] < last["epoch"], "scenario degenerate: the best epoch is the last"
    assert best["confusion"] != last["confusion"], "scenario degenerate: best and last weights score test alike"

    assert report["test"]["confusion"] == best["confusion"]
    assert report["test"]["wa"] == pytest.approx(best["wa"], abs=1e-9)
    assert report["test"]["ua"] == pytest.approx(best["ua"], abs=1e-9)
    assert report["test"]["n"] == sum(map(sum, best["confusion"]))
    # the test curve recorded during training agrees at both ends
    assert hist[best["epoch"] - 1]["test_ua"] == pytest.approx(best["ua"], abs=1e-9)
    assert hist[-1]["test_ua"] == pytest.approx(last["ua"], abs=1e-9)
    assert report["paper_and_honest"]["honest"]["ua"] == pytest.approx(report["test"]["ua"], abs=1e-9)


# ----------------------------------------------------------------------------- (c) a loss is minimised


def test_a_loss_monitor_keeps_the_epoch_with_the_lowest_dev_loss(loss_run, ua_run, scenario):
    cfg, report, run_dir, _ = loss_run
    hist = report["history"]
    loss = [r["dev_loss"] for r in hist]
    lowest, highest = first_best(loss, lower=True), first_best(loss, lower=False)
    assert lowest != highest, f"scenario degenerate: flat dev loss {loss}"
    # the monitor only chooses which weights are kept: training itself is the dev_ua run's
    assert [{k: v for k, v in r.items() if k != "train_s"} for r in hist] == [
        {k: v for k, v in r.items() if k != "train_s"} for r in ua_run[1]["history"]
    ]

    assert report["selected_epoch"] == lowest
    assert read_header(run_dir / "checkpoints/best.safetensors")["epoch"] == lowest
    assert report["paper_and_honest"]["honest"]["monitor"] == "dev_loss"
    assert report["paper_and_honest"]["honest"]["epoch"] == lowest
    # the kept weights are the lowest-loss ones (re-scored by hand), and they score the test set
    dev = rescore(loss_run, "best", "dev", scenario[0])
    assert dev["epoch"] == lowest and dev["loss"] == pytest.approx(min(loss), rel=1e-4)
    test = rescore(loss_run, "best", "test", scenario[0])
    assert report["test"]["confusion"] == test["confusion"]
    assert report["test"]["ua"] == pytest.approx(test["ua"], abs=1e-9)


def test_best_epoch_is_the_one_selection_rule(ua_run, loss_run):
    """Losses are minimised, scores maximised, the earliest epoch wins ties, NaN never wins;
    and the rule applied to a run's own history gives that run's kept epoch."""
    rows = [
        {"epoch": e, "dev_loss": loss, "dev_ua": u}
        for e, (loss, u) in enumerate([(0.9, 0.3), (0.5, 0.6), (0.5, 0.6), (0.7, 0.2)], start=1)
    ]
    assert best_epoch(rows, "dev_loss") == 1 and best_epoch(rows, "dev_ua") == 1  # first of the ties
    assert best_epoch([{"test_loss": 2.0}, {"test_loss": 1.0}], "test_loss") == 1
    assert best_epoch([{"dev_ua": math.nan}, {"dev_ua": 0.1}, {"dev_ua": math.nan}], "dev_ua") == 1
    assert best_epoch([{"dev_loss": 1.0}, {"dev_loss": math.nan}], "dev_loss") == 0
    assert lower_is_better("dev_loss") and not lower_is_better("dev_ua") and not lower_is_better("dev_f1")
    assert is_better("dev_loss", 0.4, 0.5) and not is_better("dev_loss", 0.5, 0.5) and not is_better("dev_ua", 0.4, 0.5)
    assert is_better("dev_ua", 0.0, None)
    ph = paper_and_honest([{**r, "test_wa": 0.5, "test_ua": 0.4} for r in rows], "dev_loss")
    assert ph["honest"]["epoch"] == 2
    for cfg, report, run_dir, _ in (ua_run, loss_run):
        hist = report["history"]
        assert hist[best_epoch(hist, cfg.monitor)]["epoch"] == report["selected_epoch"]


# ----------------------------------------------------------------------------- (d) a new order every epoch


def test_training_windows_are_reshuffled_every_epoch_and_the_seed_fixes_the_order(ua_run, loss_run):
    _, report, _, order = ua_run
    n = report["info"]["train windows per epoch"]
    epochs = [order.epochs[e] for e in range(len(report["history"]))]
    assert n > 2 * TINY["batch_size"]
    for seen in epochs:
        assert sorted(seen) == list(range(n))  # every window exactly once
        assert seen != list(range(n))  # shuffled, not index order
    assert len({tuple(s) for s in epochs}) == len(epochs)  # a new order every epoch
    # the order is a function of the seed (and epoch) only: the second run saw the same batches
    again = loss_run[3]
    assert [again.epochs[e] for e in range(len(epochs))] == epochs

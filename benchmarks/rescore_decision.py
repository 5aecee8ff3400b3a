"""Score the real-speech benchmark's trained folds again under both utterance decisions, training nothing.

    python -m benchmarks.rescore_decision [runs/real-speech/emodb/cnn-seed0 ...] [--draws N]

For each cv folder (default: every neural ``<corpus>/<model>-seed<seed>`` of ``runs/real-speech``),
each fold's ``best.safetensors`` scores the utterances its ``split.json`` lists as test, with the
windows of its own config, once per decision: ``prob`` (mean of window softmax probabilities, the
paper and the default) and ``logits`` (softmax of the mean logit). Both decisions see the same window
outputs (:func:`areaser.runs.metrics.utterance_probs`), so a difference is the rule's alone. A model that is
random at evaluation (``faithful``: dropout and sample noise at test time) is scored ``--draws`` times
per decision with seeds 0..N-1; its table gives the mean of the draws and, beside it, the UA of the
fold's own report (one draw). Prints UA in % as mean +- sample std over folds, one row per folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from areaser.data.labels import get_label_set
from areaser.data.windows import load_windows
from areaser.runs.checkpoint import load_run
from areaser.runs.config import TrainConfig
from areaser.runs.metrics import DECISIONS, classification_metrics, utterance_probs
from areaser.train.scoring import predict_windows

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "real-speech"


def fold_ua(fold: Path, draws: int) -> dict[str, float]:
    """UA (fraction) of one fold per decision, the mean over ``draws`` evaluations when the model is random."""
    c = TrainConfig.load(fold / "config.json").resolved()
    split = json.loads((fold / "split.json").read_text())
    rows = pd.read_csv(c.manifest, keep_default_na=False).set_index("utt_id").loc[split["test"]].reset_index()
    run = load_run(fold)
    stochastic = bool(run.model.config.dropout_at_eval or run.model.config.sample_at_eval)
    classes = list(run.classes)
    labels = get_label_set(c.label_set, labels=classes)
    rows["y"] = [classes.index(labels.map(lbl)) for lbl in rows["label"]]
    ws = load_windows(rows, c.segments, train=False, sr=c.features.sr)
    ws.precompute(run.features)
    y = ws.utterances["y"].to_numpy()
    out = {d: [] for d in DECISIONS}
    for k in range(draws if stochastic else 1):
        torch.manual_seed(k)
        logits = predict_windows(run.features, run.model, ws)
        for d in DECISIONS:
            p = utterance_probs(logits, ws.utt_index, ws.n_utts, d)
            out[d].append(classification_metrics(y, p.argmax(1), classes)["ua"])
    res = {d: float(np.mean(v)) for d, v in out.items()}
    res["prob_range"] = float(np.max(out["prob"]) - np.min(out["prob"]))  # between this fold's draws
    res["report"] = float(json.loads((fold / "report.json").read_text())["test"]["ua"])
    res["draws"] = len(out["prob"])
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path, help="cv folders (default: every neural one in runs/real-speech)")
    ap.add_argument("--draws", type=int, default=10, help="evaluations of a model that is random at test time")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    folders = args.folders or sorted(
        p
        for p in RUNS.glob("*/*-seed*")
        if (p / "cv.json").is_file() and p.name.split("-seed")[0] in ("cnn", "paper", "faithful")
    )
    table = {}
    print("| folder | folds | UA prob | UA logits | UA of the reports |")
    print("|---|---:|---:|---:|---:|")
    for cv in folders:
        folds = sorted(f for f in cv.glob("fold*") if (f / "report.json").is_file())
        per = [fold_ua(f, args.draws) for f in folds]
        pm = {
            k: (100 * np.mean([r[k] for r in per]), 100 * np.std([r[k] for r in per], ddof=1))
            for k in ("prob", "logits", "report")
        }
        table[str(cv)] = {"folds": per, **{k: list(v) for k, v in pm.items()}}
        cells = " | ".join(f"{m:.2f} +- {s:.2f}" for m, s in pm.values())
        draws = f" ({per[0]['draws']} draws each)" if per and per[0]["draws"] > 1 else ""
        print(
            f"| {cv.relative_to(RUNS) if cv.is_relative_to(RUNS) else cv}{draws} | {len(per)} | {cells} |", flush=True
        )
        if draws:
            wide = max(range(len(per)), key=lambda i: per[i]["prob_range"])
            print(
                f"  largest UA range between the draws of one fold ({folds[wide].name}, prob): "
                f"{100 * per[wide]['prob_range']:.1f} points",
                flush=True,
            )
    return table


if __name__ == "__main__":
    main()

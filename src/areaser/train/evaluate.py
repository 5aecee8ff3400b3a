"""Re-evaluation of a trained run (or every fold of a cv) on its own test set, reports rewritten."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from areaser.data.windows import load_windows
from areaser.io.files import read_json
from areaser.runs.calibration import read_calibration
from areaser.runs.checkpoint import load_run, run_paths
from areaser.runs.config import ConfigError, TrainConfig
from areaser.runs.fitted import is_baseline_run, load_fitted
from areaser.runs.metrics import classification_metrics
from areaser.runs.provenance import console_line
from areaser.runs.reports import write_cv_report, write_run_report
from areaser.train.baseline import baseline_report
from areaser.train.callbacks import read_history
from areaser.train.crosscorpus import score_test_manifests
from areaser.train.embed import _with_embedding_map
from areaser.train.report import _cv_line, build_report, summarise_cv
from areaser.train.testsets import _check_same_test_set, _run_test_set, _training_dir


def evaluate_run(run_dir: str | os.PathLike, log: Callable[[str], None] | None = print) -> dict:
    """Score a run directory again from its ``best.safetensors`` and rewrite its report.

    Scores exactly the test utterances of ``RUN/split.json``, in its order, read through the
    run's manifest(s): a relative manifest path in ``config.json`` is relative to the folder
    training ran in (found from where the run directory is: it was made as ``OUT_DIR/NAME``;
    or ``split.json``'s ``base``), never to the current directory. Raises ConfigError, before
    anything is written, when ``split.json`` is absent, a listed utterance is not in the
    manifest or its label no longer maps to the run's class, a test audio file is missing or
    differs from the one scored at training (``split.json``'s ``test_files`` SHA-1, when
    recorded), or the utterances scored are not those of the existing report (count, class
    supports, speakers). A report is never overwritten by one of another test set.

    A classical baseline run is scored by its stored fit (:func:`areaser.runs.fitted.load_fitted`).
    A cross-validation directory (``cv.json``) re-evaluates every fold and the aggregate.
    Cross-corpus reports (``RUN/cross/``) are not scored again: :func:`evaluate_on` does that.
    """
    run_dir = Path(run_dir)
    if (run_dir / "cv.json").is_file():
        meta = read_json(run_dir / "cv.json", ConfigError)
        reports = [evaluate_run(run_dir / name, log) for name in meta["folds"]]
        c = TrainConfig.from_dict(meta["config"])
        base = _training_dir(run_dir, c.out_dir, c.name or run_dir.name)
        # the cross-corpus table is kept: fold scores on other corpora are read back (scored if missing)
        crosses = [
            score_test_manifests(run_dir / name, c.test_manifests, log=log, reuse=True, base=base)
            for name in meta["folds"]
        ]
        summary = summarise_cv(c, reports, meta["folds"], crosses)
        _with_embedding_map(run_dir, summary, log)
        write_cv_report(run_dir, summary)
        if log:
            log(f"{run_dir}: {_cv_line(summary)}")
        return summary
    paths = run_paths(run_dir)
    if not paths["config"].is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.json)")
    if is_baseline_run(run_dir):
        return _evaluate_baseline(run_dir, paths, log)
    if not paths["best"].is_file():
        raise ConfigError(f"{run_dir}: no best.safetensors yet (the run has not finished an epoch)")
    c = TrainConfig.load(paths["config"]).resolved()
    run = load_run(run_dir)
    prep = _run_test_set(run_dir, c, run.classes)  # the utterances of split.json, checked
    ws = load_windows(prep.parts["test"], c.segments, train=False, sr=c.features.sr)
    history = read_history(paths["metrics"])
    module = _Evaluated(run.features, run.model)

    cal = read_calibration(run_dir)  # the T fitted on dev after training, kept (dev is not scored again)
    if cal is not None and (cal.get("weights") or {}).get("checksum") not in (None, run.header.get("checksum")):
        cal = None  # fitted to other weights
    report = build_report(c, prep, history, int(run.header["epoch"]), module, ws, ws, 0.0, None, cal)
    old = read_json(paths["report_json"], ConfigError) if paths["report_json"].is_file() else {}
    _check_same_test_set(run_dir, old, report)
    for key in ("training time", "training throughput", "train windows per epoch"):  # facts of the training
        if key in old.get("info", {}):
            report["info"][key] = old["info"][key]
    write_run_report(run_dir, report)
    if log:
        log(f"{run_dir}: {console_line(report)}")
    return report


def _evaluate_baseline(run_dir: Path, paths: dict[str, Path], log) -> dict:
    """:func:`evaluate_run` of a classical baseline run: its stored fit scores the test utterances again."""
    c = TrainConfig.load(paths["config"]).resolved()
    fit = load_fitted(run_dir)
    prep = _run_test_set(run_dir, c, fit.classes)  # the utterances of split.json, checked
    test = prep.parts["test"]
    proba = fit.predict_proba(list(test["path"]), progress=bool(c.progress and log))
    metrics = classification_metrics(test["y"].to_numpy(), proba.argmax(1), fit.classes, list(test["speaker"]))
    old = read_json(paths["report_json"], ConfigError) if paths["report_json"].is_file() else {}
    timing = old.get("info", {}).get("feature extraction + training time")  # a fact of the training, kept
    report = baseline_report(c, prep, metrics, timing)
    _check_same_test_set(run_dir, old, report)
    write_run_report(run_dir, report)
    if log:
        log(f"{run_dir}: {console_line(report)}")
    return report


@dataclass
class _Evaluated:
    features: torch.nn.Module
    model: torch.nn.Module

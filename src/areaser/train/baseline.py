"""The classical baselines' run: features, fit, scoring and report in a run directory."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from areaser.data.splits import split_record
from areaser.io.files import atomic_write_json
from areaser.models.baselines import FEATURE_NAMES, extract_features, fit_predict, get_baseline
from areaser.runs.checkpoint import CheckpointError
from areaser.runs.config import TrainConfig
from areaser.runs.fitted import FIT_FILE, _save_fit, load_fitted
from areaser.runs.metrics import classification_metrics
from areaser.runs.provenance import console_line
from areaser.runs.reports import write_run_report
from areaser.train.crosscorpus import check_test_manifests, score_test_manifests
from areaser.train.folds import prepare_fold
from areaser.train.report import fold_report

# ----------------------------------------------------------------------------- a run, like a neural one


def fit_baseline_run(c: TrainConfig, paths: dict[str, Path], lock, *, resume: bool, bar=None, log=print) -> dict:
    """Fit and score a baseline on one fold; the baseline body of :func:`areaser.train.lifecycle.train`.

    ``train`` hands ``config.model`` in :data:`BASELINES` here after its one set of run rules
    (lock, changed config refused, finished runs returned, ``--restart``). The same fold
    (``prepare_fold``), metrics (``classification_metrics``), run directory (``config.json``,
    ``split.json``, ``report.json``, ``report.md``, ``confusion.png``, ``done.json``) and report as a
    neural run. The classifier learns from the fold's ``train`` part (augmented copies included, if
    any); the ``dev`` part is left unused, as it only picks the epoch of a neural model. The fit is
    kept (:data:`FIT_FILE`) before the report; with ``resume`` (a fit of this config exists, the run
    was cut short) the stored features of the same utterances are used instead of extracting them
    again. ``config.test_manifests`` (other corpora) are scored with it after the run
    (:func:`areaser.train.crosscorpus.score_test_manifests`). ``bar``: an outer rich progress.
    """
    say = log or (lambda s: None)
    run_dir = paths["dir"]
    prep = prepare_fold(c)
    check_test_manifests(c.label_set, prep.classes, c.test_manifests)  # a bad one stops before the work
    bcfg = get_baseline(c.model, seed=c.seed)
    train, test = prep.parts["train"], prep.parts["test"]
    t0 = time.perf_counter()
    stored = _stored_features(run_dir, prep) if resume else None
    if stored is not None:
        say(f"completing the report of {run_dir} (cut short) from its stored fit ({FIT_FILE})")
        x_train, x_test = stored
    else:
        x = extract_features(
            list(train["path"]) + list(test["path"]), bcfg, c.features.sr, progress=c.progress, bar=bar
        )
        x_train, x_test = x[: len(train)], x[len(train) :]
    t_feat = time.perf_counter() - t0
    proba = fit_predict(x_train, train["y"].to_numpy(), x_test, len(prep.classes), bcfg)
    metrics = classification_metrics(test["y"].to_numpy(), proba.argmax(1), prep.classes, list(test["speaker"]))
    timing = f"{t_feat:.1f} s + {time.perf_counter() - t0 - t_feat:.1f} s"
    report = baseline_report(c, prep, metrics, timing)
    lock.acquire_new(paths["config"])
    run_dir.mkdir(parents=True, exist_ok=True)
    c.save(paths["config"])
    atomic_write_json(paths["split"], split_record(prep.fold, prep.parts))
    _save_fit(run_dir, c, prep, x_train, bcfg, x_test)  # before the report: a run with a report can always score again
    write_run_report(run_dir, report)
    say(console_line(report, paths["report_md"]))
    score_test_manifests(run_dir, c.test_manifests, log=log)
    atomic_write_json(paths["done"], {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})  # every artefact exists
    return report


def _stored_features(run_dir: Path, prep) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored ``(x_train, x_test)`` of this fold's utterances, or ``None`` when the fit holds others."""
    try:
        fit = load_fitted(run_dir)
    except CheckpointError:
        return None
    same = fit.header.get("train_ids") == list(prep.parts["train"]["utt_id"]) and fit.header.get("test_ids") == list(
        prep.parts["test"]["utt_id"]
    )
    return (fit.x_train, fit.x_test) if same and fit.x_test is not None else None


def baseline_report(c: TrainConfig, prep, metrics: dict, timing: str | None) -> dict:
    """The report of a baseline run (:func:`areaser.train.report.fold_report`, no epochs): test ``metrics``.

    ``timing``: the "feature extraction + training time" line (``None``: left out, as when scored again).
    """
    bcfg = get_baseline(c.model, seed=c.seed)
    facts = {
        "test scores": f"the test part of fold {prep.fold.name} ({prep.fold.test_group}); classifier fitted on "
        "the train part, dev part unused",
        "model": f"{c.model} ({len(FEATURE_NAMES)} eGeMAPS-like functionals, {bcfg.classifier}, C={bcfg.C:g})",
        "utterances train / dev (unused) / test": " / ".join(str(len(prep.parts[k])) for k in ("train", "dev", "test")),
    }
    if timing is not None:
        facts["feature extraction + training time"] = timing
    return fold_report(c, prep, metrics, None, [], facts).to_dict()

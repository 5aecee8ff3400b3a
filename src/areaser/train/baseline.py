"""The classical baselines' run: features, fit, scoring and report in a run directory."""

from __future__ import annotations

import time
from pathlib import Path

from areaser.data.splits import split_record
from areaser.io.files import atomic_write_json, read_json
from areaser.models.baselines import BASELINES, FEATURE_NAMES, extract_features, fit_predict, get_baseline, is_baseline
from areaser.runs.checkpoint import run_paths
from areaser.runs.config import ConfigError, TrainConfig
from areaser.runs.determinism import environment, environment_text
from areaser.runs.fitted import _save_fit
from areaser.runs.metrics import classification_metrics
from areaser.runs.provenance import console_line, describe, info_rows, notes, split_text
from areaser.runs.reports import write_run_report
from areaser.train.crosscorpus import check_test_manifests, score_test_manifests
from areaser.train.folds import prepare_fold

# ----------------------------------------------------------------------------- a run, like a neural one


def train_baseline(config, *, log=print, bar=None, resume: bool | None = None) -> dict:
    """Train and score a baseline on one fold of a :class:`areaser.runs.config.TrainConfig`.

    The twin of :func:`areaser.train.lifecycle.train` for ``config.model`` in :data:`BASELINES`
    (``train`` hands baselines here): the same fold (``prepare_fold``), the same metrics
    (``classification_metrics``), the same run directory (``config.json``, ``split.json``,
    ``report.json``, ``report.md``, ``confusion.png``) and report dict, so tables and
    cross-validation treat both alike. The classifier learns from the fold's ``train`` part (augmented copies
    included, if any); the ``dev`` part is left unused, as it only picks the epoch of a
    neural model. A run whose ``report.json`` exists with the same config is returned as it
    is, unless ``resume`` is ``False`` (``--restart``). ``bar``: an outer rich progress to
    draw into. The fit is kept (:data:`FIT_FILE`), and ``config.test_manifests`` (other corpora)
    are scored with it after the run (:func:`areaser.train.crosscorpus.score_test_manifests`).
    """
    say = log or (lambda s: None)
    c = (config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)).resolved()
    if not is_baseline(c.model):
        raise ConfigError(f"model {c.model!r} is not a classical baseline ({', '.join(BASELINES)})")
    run_dir = Path(c.out_dir) / c.name
    report_path = run_dir / "report.json"
    done = run_paths(run_dir)["done"]  # written last: a run killed while writing its report is fitted again
    if done.is_file() and report_path.is_file() and resume is not False:
        old = read_json(report_path, ConfigError)
        if old.get("config") == c.to_dict():
            say(f"{run_dir}: already finished ({done.name} exists)")
            return old
    prep = prepare_fold(c)
    check_test_manifests(c.label_set, prep.classes, c.test_manifests)  # a bad one stops before the work
    bcfg = get_baseline(c.model, seed=c.seed)
    t0 = time.perf_counter()
    train, test = prep.parts["train"], prep.parts["test"]
    paths = list(train["path"]) + list(test["path"])
    x = extract_features(paths, bcfg, c.features.sr, progress=c.progress, bar=bar)
    x_train, x_test = x[: len(train)], x[len(train) :]
    t_feat = time.perf_counter() - t0
    proba = fit_predict(x_train, train["y"].to_numpy(), x_test, len(prep.classes), bcfg)
    metrics = classification_metrics(test["y"].to_numpy(), proba.argmax(1), prep.classes, list(test["speaker"]))
    prov = describe(c.manifest, prep.parts, c.label_set, prep.classes, c.protocol)
    env = environment(c.deterministic)
    report = {
        "name": c.name,
        "classes": list(prep.classes),
        "fold": prep.fold.name,
        "test_group": prep.fold.test_group,
        "selected_epoch": None,
        "test": metrics,
        "history": [],
        "config": c.to_dict(),
        "provenance": prov,
        "notes": notes(prov),
        "info": {
            **info_rows(prov),
            "manifest": c.manifest,
            "fold": split_text(prov, prep.fold.name, prep.fold.test_group)
            + f", {prep.fold.index + 1} of {prep.n_folds}",
            "test scores": f"the test part of fold {prep.fold.name} ({prep.fold.test_group}); classifier fitted on "
            "the train part, dev part unused",
            "model": f"{c.model} ({len(FEATURE_NAMES)} eGeMAPS-like functionals, {bcfg.classifier}, C={bcfg.C:g})",
            "utterances train / dev (unused) / test": " / ".join(
                str(len(prep.parts[k])) for k in ("train", "dev", "test")
            ),
            "feature extraction + training time": f"{t_feat:.1f} s + {time.perf_counter() - t0 - t_feat:.1f} s",
            "environment": environment_text(env),
        },
        "environment": env,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    c.save(run_dir / "config.json")
    atomic_write_json(run_dir / "split.json", split_record(prep.fold, prep.parts))
    _save_fit(run_dir, c, prep, x_train, bcfg)  # before the report: a run with a report can always score again
    write_run_report(run_dir, report)
    say(console_line(report, run_dir / "report.md"))
    score_test_manifests(run_dir, c.test_manifests, log=log)
    atomic_write_json(done, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})  # every artefact exists
    return report

"""Cross-validation, re-evaluation and cross-corpus scoring: every fold, then mean +- std.

:func:`cross_validate` trains the folds one after the other (each a run directory of
:func:`areaser.train.lifecycle.train`, under ``out_dir/name/<fold>/``) and writes the aggregate
report beside them; a fold that already has its report is kept, so a half-finished cv
resumes. :func:`evaluate_run` scores a run directory (or a whole cv directory) again from
its ``best.safetensors`` and rewrites the reports: exactly the test utterances ``split.json``
lists, found through the run's manifest wherever it is run from (relative paths are relative
to the folder training ran in, not to the current one), and it refuses, leaving the report
as it is, when any of them is missing or has changed. :func:`areaser.data.splits.split_record` is what
``split.json`` holds, per-file SHA-1 of the test audio included.

:func:`evaluate_on` scores a trained run (neural or baseline; or every fold of a cv) on
*another* corpus' manifest: every original utterance whose label maps, by name through the
run's label set, to one of the model's classes. Its report goes to ``RUN/cross/<corpus>/``
and names both corpora; the run's own report is left alone. ``TrainConfig.test_manifests``
makes ``train`` and ``cross_validate`` do this after every fold (:func:`score_test_manifests`),
and the cv report gets a cross-corpus table, mean +- std over folds (:func:`summarise_cross`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from areaser.io.files import atomic_write_json
from areaser.models.baselines import is_baseline
from areaser.runs.config import ConfigError, TrainConfig
from areaser.runs.reports import write_cv_report
from areaser.train.callbacks import make_progress
from areaser.train.crosscorpus import check_test_manifests, score_test_manifests
from areaser.train.embed import _with_embedding_map
from areaser.train.folds import prepare_fold
from areaser.train.lifecycle import train
from areaser.train.report import _cv_line, summarise_cv


def cross_validate(
    config: TrainConfig | Mapping,
    folds: Sequence[int] | None = None,
    *,
    resume: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Train every fold (or ``folds``) of the protocol in turn; write the aggregate report.

    Fold runs live in ``out_dir/name/<fold name>/``; the summary in ``out_dir/name/report.*``.
    A fold whose report exists is not trained again, so a half-finished cv resumes. Every fold's
    model is also scored on each of ``config.test_manifests`` (checked before any training) and
    the summary gets their cross-corpus table.
    """
    c = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    c = replace(c, name=c.name or f"{c.model}-{c.protocol}")
    base = replace(c, fold=0).resolved()  # checks choices before anything runs
    prep = prepare_fold(base)
    check_test_manifests(base.label_set, prep.classes, c.test_manifests)
    chosen = list(range(prep.n_folds)) if folds is None else list(folds)
    bad = [f for f in chosen if not 0 <= f < prep.n_folds]
    if bad:
        raise ConfigError(f"fold(s) {bad} out of range: protocol {c.protocol!r} has {prep.n_folds} folds")
    fold_cfgs = []
    for i in chosen:
        fc = replace(c, fold=i, name="", out_dir=str(Path(c.out_dir) / c.name))
        fc = replace(fc, name=prepare_fold(fc.resolved()).fold.name)
        fold_cfgs.append(fc)
    cv_dir = Path(c.out_dir) / c.name
    cv_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cv_dir / "cv.json", {"config": c.to_dict(), "folds": [f.name for f in fold_cfgs]})
    bar = make_progress() if c.progress else None
    reports, crosses = [], []
    try:
        if bar is not None:
            bar.start()
        per_fold = 1 if is_baseline(c.model) else base.epochs  # a baseline has no epochs: one step per fold
        overall = bar.add_task("all folds", total=len(fold_cfgs) * per_fold, info="") if bar is not None else None
        for fc in fold_cfgs:
            r = train(fc, resume=resume, bar=bar, overall_task=overall, log=log)
            if not r:  # non-zero DDP rank
                return {}
            reports.append(r)
            crosses.append(score_test_manifests(cv_dir / fc.name, c.test_manifests, log=log, reuse=True))
            if bar is not None:
                done = sum(len(x["history"]) or 1 for x in reports)
                bar.update(overall, completed=done, total=done + (len(fold_cfgs) - len(reports)) * per_fold)
    finally:
        if bar is not None:
            bar.stop()
    summary = summarise_cv(c, reports, [f.name for f in fold_cfgs], crosses)
    _with_embedding_map(cv_dir, summary, log)
    paths = write_cv_report(cv_dir, summary)
    if log:
        log(_cv_line(summary, paths["md"]))
    return summary

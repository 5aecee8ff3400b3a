"""Cross-validation and re-evaluation: every fold of a protocol, then mean +- std.

:func:`cross_validate` trains the folds one after the other (each a run directory of
:func:`areaser.training.train`, under ``out_dir/name/<fold>/``) and writes the aggregate
report beside them; a fold that already has its report is kept, so a half-finished cv
resumes. :func:`evaluate_run` scores a run directory (or a whole cv directory) again from
its ``best.safetensors`` and rewrites the reports.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .baselines import is_baseline
from .config import ConfigError, TrainConfig
from .fileio import atomic_write_json
from .training import build_report, make_progress, prepare_fold, read_history, train

__all__ = ["cross_validate", "summarise_cv", "evaluate_run"]


def cross_validate(
    config: TrainConfig | Mapping,
    folds: Sequence[int] | None = None,
    *,
    resume: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Train every fold (or ``folds``) of the protocol in turn; write the aggregate report.

    Fold runs live in ``out_dir/name/<fold name>/``; the summary in ``out_dir/name/report.*``.
    A fold whose report exists is not trained again, so a half-finished cv resumes.
    """
    from .reports import write_cv_report

    c = (config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config))
    c = replace(c, name=c.name or f"{c.model}-{c.protocol}")
    base = replace(c, fold=0).resolved()  # checks choices before anything runs
    prep = prepare_fold(base)
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
    reports = []
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
            if bar is not None:
                done = sum(len(x["history"]) or 1 for x in reports)
                bar.update(overall, completed=done, total=done + (len(fold_cfgs) - len(reports)) * per_fold)
    finally:
        if bar is not None:
            bar.stop()
    summary = summarise_cv(c, reports, [f.name for f in fold_cfgs])
    paths = write_cv_report(cv_dir, summary)
    agg = summary["aggregate"]
    if log:
        log(f"{c.protocol}: WA {100 * agg['wa']['mean']:.2f} +- {100 * agg['wa']['std']:.2f} %, "
            f"UA {100 * agg['ua']['mean']:.2f} +- {100 * agg['ua']['std']:.2f} % over {len(reports)} fold(s); "
            f"report {paths['md']}")
    return summary


def summarise_cv(c: TrainConfig, reports: Sequence[Mapping], dirs: Sequence[str]) -> dict:
    """Aggregate fold reports into the cv summary :func:`areaser.reports.write_cv_report` draws."""
    from .metrics import summarise_runs

    rows = []
    for r, d in zip(reports, dirs):
        row = {"name": r["fold"], "test_group": r["test_group"], "dir": d, "epoch": r["selected_epoch"],
               "wa": r["test"]["wa"], "ua": r["test"]["ua"], "macro_f1": r["test"]["macro_f1"]}
        if "paper_and_honest" in r:
            row["paper_max_wa"] = r["paper_and_honest"]["paper"]["max_wa"]
            row["paper_max_ua"] = r["paper_and_honest"]["paper"]["max_ua"]
        rows.append(row)
    keys = ["wa", "ua", "macro_f1"] + (["paper_max_wa", "paper_max_ua"] if "paper_max_wa" in rows[0] else [])
    confusion = np.sum([np.asarray(r["test"]["confusion"]) for r in reports], axis=0).tolist()
    return {
        "name": c.name,
        "protocol": c.protocol,
        "classes": reports[0]["classes"],
        "folds": rows,
        "aggregate": summarise_runs(rows, keys),
        "confusion": confusion,
        "info": {"manifest": c.manifest, "protocol": c.protocol, "preset / model": f"{c.preset} / {c.model}",
                 "VTLP": c.vtlp.impl, "folds": len(rows)},
    }


def evaluate_run(run_dir: str | os.PathLike, log: Callable[[str], None] | None = print) -> dict:
    """Score a run directory again from its ``best.safetensors`` and rewrite its report.

    A cross-validation directory (``cv.json``) re-evaluates every fold and the aggregate.
    """
    from .checkpoint import load_run, run_paths
    from .data import load_windows
    from .reports import write_cv_report, write_run_report

    run_dir = Path(run_dir)
    if (run_dir / "cv.json").is_file():
        meta = json.loads((run_dir / "cv.json").read_text())
        reports = [evaluate_run(run_dir / name, log) for name in meta["folds"]]
        c = TrainConfig.from_dict(meta["config"])
        summary = summarise_cv(c, reports, meta["folds"])
        write_cv_report(run_dir, summary)
        if log:
            agg = summary["aggregate"]
            log(f"{run_dir}: WA {100 * agg['wa']['mean']:.2f} +- {100 * agg['wa']['std']:.2f} %, "
                f"UA {100 * agg['ua']['mean']:.2f} +- {100 * agg['ua']['std']:.2f} % over {len(reports)} fold(s)")
        return summary
    paths = run_paths(run_dir)
    if not paths["config"].is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.json)")
    if not paths["best"].is_file():
        raise ConfigError(f"{run_dir}: no best.safetensors yet (the run has not finished an epoch)")
    c = TrainConfig.load(paths["config"]).resolved()
    prep = prepare_fold(c)
    run = load_run(run_dir)
    ws = load_windows(prep.parts["test"], c.segments, train=False, sr=c.features.sr)
    history = read_history(paths["metrics"])
    module = _Evaluated(run.features, run.model)
    report = build_report(c, prep, history, int(run.header["epoch"]), module, ws, ws, 0.0, None)
    old = json.loads(paths["report_json"].read_text()) if paths["report_json"].is_file() else {}
    for key in ("training time", "training throughput", "train windows per epoch"):  # facts of the training
        if key in old.get("info", {}):
            report["info"][key] = old["info"][key]
    write_run_report(run_dir, report)
    if log:
        log(f"{run_dir}: test WA {100 * report['test']['wa']:.2f} %, UA {100 * report['test']['ua']:.2f} %")
    return report


@dataclass
class _Evaluated:
    features: torch.nn.Module
    model: torch.nn.Module

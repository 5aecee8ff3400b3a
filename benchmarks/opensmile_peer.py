"""The openSMILE peer of ``benchmarks.real_speech``: eGeMAPSv02 functionals + a linear SVM.

openSMILE (audEERING, the ``opensmile`` package of the ``bench`` extra) computes the 88
eGeMAPSv02 utterance functionals (Eyben et al., IEEE TAC 2016), the standard hand-crafted
reference of speech emotion recognition. Its licence allows research and non-commercial use
only, so it is a benchmark peer here and never imported by ``src/areaser`` (whose own
``egemaps-lr`` / ``egemaps-svm`` baselines compute eGeMAPS-*like* functionals with librosa).

Per fold of an areaser protocol (:func:`areaser.train.folds.prepare_fold`, so exactly the split the
neural models and the baselines see): scikit-learn ``StandardScaler`` + ``SVC(kernel="linear",
C=1, class_weight="balanced")`` fitted on the fold's train part, scored on its test part with
:func:`areaser.runs.metrics.classification_metrics`; the dev part is unused (a fixed classifier has
no epoch to choose). Audio is decoded with :func:`areaser.io.audio.load_audio` (mono, 16 kHz), as
for every other model, and handed to openSMILE as a signal.

Features are cached in the work folder (``opensmile-eGeMAPSv02.csv``: one row per file keyed
by absolute path, size and mtime, with the seconds its extraction took), so folds, seeds and
later invocations extract each file once. Run directories look like those of
:func:`areaser.train.crossval.cross_validate`: ``<cv>/<fold name>/{config.json, report.json,
report.md, confusion.png}`` and ``<cv>/report.{json,md}``; a fold whose ``report.json`` holds
the same config is kept (resume).

Time per fold (report info ``feature extraction + training time``): the extraction seconds of
the fold's train and test files that no earlier fold of the protocol uses (from the cache, so
the figure does not depend on what was cached already: a whole cross-validation costs the sum,
as for the ``egemaps-*`` baselines run in one process), then the fit and scoring.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

NAME = "opensmile-svm"
FEATURE_SET = "eGeMAPSv02"
KERNEL, C = "linear", 1.0
_KEY = ("path", "size", "mtime_ns")


def _smile():
    import opensmile  # the bench extra; non-commercial licence: benchmark peer only

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )


def opensmile_version() -> str:
    import opensmile

    return opensmile.__version__


def _file_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


def extract(paths: Sequence[str], cache: Path, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """eGeMAPSv02 functionals ``[len(paths), 88]`` and extraction seconds ``[len(paths)]``.

    Files missing from ``cache`` (a CSV, keyed by absolute path, size and mtime) are extracted
    and the cache rewritten (atomically, so parallel workers never leave it half written).
    """
    from areaser.io.audio import DEFAULT_SR, load_audio
    from areaser.io.files import atomic_write_text

    table = pd.read_csv(cache) if cache.is_file() else pd.DataFrame()
    known = {tuple(r): i for i, r in enumerate(table[list(_KEY)].itertuples(index=False))} if len(table) else {}
    keys = [_file_key(p) for p in paths]
    todo = sorted({k for k in keys if k not in known})
    if todo:
        smile = _smile()
        rows = []
        it = todo
        if progress:
            from rich.progress import track

            it = track(todo, description=f"openSMILE {FEATURE_SET}", transient=True)
        for k in it:
            t0 = time.perf_counter()
            f = smile.process_signal(load_audio(k[0], sr=DEFAULT_SR), DEFAULT_SR)
            secs = time.perf_counter() - t0
            rows.append(
                {
                    "path": k[0],
                    "size": k[1],
                    "mtime_ns": k[2],
                    "seconds": secs,
                    **{c: float(f[c].iloc[0]) for c in f.columns},
                }
            )
        fresh = pd.DataFrame(rows)
        if len(table):  # a changed file replaces its stale row
            table = table[~table["path"].isin(set(fresh["path"]))]
        table = pd.concat([table, fresh], ignore_index=True) if len(table) else fresh
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, table.to_csv(index=False, float_format="%.9g"))
        known = {tuple(r): i for i, r in enumerate(table[list(_KEY)].itertuples(index=False))}
    feats = [c for c in table.columns if c not in (*_KEY, "seconds")]
    idx = [known[k] for k in keys]
    return table[feats].to_numpy(np.float64)[idx], table["seconds"].to_numpy(np.float64)[idx]


def _classifier():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(kernel=KERNEL, C=C, class_weight="balanced"))


def cross_validate(
    config,
    folds: Sequence[int] | None = None,
    *,
    cache: Path,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Every fold (or ``folds``) of ``config``'s protocol; the summary of
    :func:`areaser.train.report.summarise_cv`, also written as ``<out_dir>/<name>/report.*``."""
    from areaser.io.files import atomic_write_json
    from areaser.runs.config import ConfigError
    from areaser.runs.metrics import classification_metrics
    from areaser.runs.provenance import describe, info_rows, notes
    from areaser.runs.reports import write_cv_report, write_run_report
    from areaser.train.folds import prepare_fold, read_manifests
    from areaser.train.report import summarise_cv

    say = log or (lambda s: None)
    c = replace(config, model=NAME)
    cv_dir = Path(c.out_dir) / c.name
    df = read_manifests(c.resolved())
    n_folds = prepare_fold(replace(c, fold=0).resolved(), df).n_folds
    chosen = list(range(n_folds)) if folds is None else list(folds)
    if any(not 0 <= f < n_folds for f in chosen):
        raise ConfigError(f"fold(s) {chosen} out of range: protocol {c.protocol!r} has {n_folds} folds")
    preps = [prepare_fold(replace(c, fold=i).resolved(), df) for i in range(max(chosen) + 1)]
    seen: set[str] = set()  # files an earlier fold of the protocol already extracted
    first_use = []
    for p in preps:
        files = set(p.parts["train"]["path"]) | set(p.parts["test"]["path"])
        first_use.append(files - seen)
        seen |= files
    reports, names = [], []
    for i in chosen:
        prep = preps[i]
        fc = replace(c, fold=i, out_dir=str(cv_dir), name=prep.fold.name).resolved()
        run_dir = cv_dir / fc.name
        names.append(fc.name)
        old = run_dir / "report.json"
        if old.is_file():
            r = json.loads(old.read_text())
            if r.get("config") == fc.to_dict():
                say(f"{run_dir}: already finished (report.json exists)")
                reports.append(r)
                continue
        train, test = prep.parts["train"], prep.parts["test"]
        x, secs = extract(list(train["path"]) + list(test["path"]), cache, progress)
        paths = list(train["path"]) + list(test["path"])
        t_feat = float(sum(s for p, s in zip(paths, secs) if p in first_use[i]))
        t0 = time.perf_counter()
        model = _classifier().fit(x[: len(train)], train["y"].to_numpy())
        pred = model.predict(x[len(train) :])
        metrics = classification_metrics(test["y"].to_numpy(), pred, prep.classes, list(test["speaker"]))
        t_fit = time.perf_counter() - t0
        prov = describe(fc.manifest, prep.parts, fc.label_set, prep.classes, fc.protocol)
        report = {
            "name": fc.name,
            "classes": list(prep.classes),
            "fold": prep.fold.name,
            "test_group": prep.fold.test_group,
            "selected_epoch": None,
            "test": metrics,
            "history": [],
            "config": fc.to_dict(),
            "provenance": prov,
            "notes": notes(prov),
            "info": {
                **info_rows(prov),
                "manifest": fc.manifest,
                "protocol / fold": f"{fc.protocol} / {prep.fold.name} (held out: {prep.fold.test_group})",
                "model": f"{NAME}: openSMILE {opensmile_version()} {FEATURE_SET} functionals ({x.shape[1]}) + "
                f"StandardScaler + SVC(kernel={KERNEL!r}, C={C:g}, class_weight='balanced'); peer, "
                "not part of areaser",
                "utterances train / dev (unused) / test": " / ".join(
                    str(len(prep.parts[k])) for k in ("train", "dev", "test")
                ),
                "feature extraction + training time": f"{t_feat:.1f} s + {t_fit:.1f} s",
            },
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        fc.save(run_dir / "config.json")
        write_run_report(run_dir, report)
        say(f"{run_dir}: test WA {100 * metrics['wa']:.2f} %, UA {100 * metrics['ua']:.2f} %")
        reports.append(report)
    summary = summarise_cv(replace(c, name=c.name), reports, names)
    summary["info"]["preset / model"] = f"- / {NAME} (openSMILE {FEATURE_SET} + SVM, peer)"
    write_cv_report(cv_dir, summary)
    atomic_write_json(cv_dir / "peer.json", {"config": c.to_dict(), "folds": names})
    return summary

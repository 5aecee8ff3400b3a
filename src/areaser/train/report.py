"""Reports of runs and of cvs assembled from scores: one run's report, mean +- std over folds."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from areaser.models.baselines import is_baseline
from areaser.runs.calibration import test_summary
from areaser.runs.config import TrainConfig
from areaser.runs.determinism import environment, environment_text
from areaser.runs.metrics import paper_and_honest, summarise_runs
from areaser.runs.provenance import (
    corpus_text,
    describe,
    info_rows,
    label_set_text,
    notes,
    parts_text,
    protocol_text,
    split_text,
    with_notes,
)
from areaser.runs.reports import RunReport
from areaser.train.folds import PreparedFold
from areaser.train.scoring import (
    _seeded_logits,
    eval_draw_seeds,
    predict_windows,
    score_draws,
    score_windows,
    summarise_draws,
)


def summarise_cv(
    c: TrainConfig,
    reports: Sequence[Mapping],
    dirs: Sequence[str],
    cross: Sequence[Mapping[str, Mapping]] | None = None,
) -> dict:
    """Aggregate fold reports into the cv summary :func:`areaser.runs.reports.write_cv_report` draws.

    ``cross``: per fold, its cross-corpus reports by name (:func:`score_test_manifests`); they
    become the summary's ``cross_corpus`` table (:func:`summarise_cross`).
    """
    rows = []
    for r, d in zip(reports, dirs):
        row = {
            "name": r["fold"],
            "test_group": r["test_group"],
            "dir": d,
            "epoch": r["selected_epoch"],
            "wa": r["test"]["wa"],
            "ua": r["test"]["ua"],
            "macro_f1": r["test"]["macro_f1"],
        }
        if "paper_and_honest" in r:
            row["paper_max_wa"] = r["paper_and_honest"]["paper"]["max_wa"]
            row["paper_max_ua"] = r["paper_and_honest"]["paper"]["max_ua"]
        if r.get("calibration"):  # test ECE before / after the fold's temperature (fitted on its dev part)
            row.update({k: r["calibration"][k] for k in ("temperature", "ece_before", "ece_after")})
        rows.append(row)
    keys = ["wa", "ua", "macro_f1"] + (["paper_max_wa", "paper_max_ua"] if "paper_max_wa" in rows[0] else [])
    keys += ["temperature", "ece_before", "ece_after"]  # summarise_runs skips them unless every fold has them
    confusion = np.sum([np.asarray(r["test"]["confusion"]) for r in reports], axis=0).tolist()
    # a fold finished before reports held their provenance: the same facts from its config and manifest
    prov = reports[0].get("provenance") or describe(
        c.manifest, None, reports[0]["config"].get("label_set"), reports[0]["classes"], c.protocol
    )
    how = "classifier fitted on its train part" if is_baseline(c.model) else "model of the epoch chosen on its dev part"
    envs = sorted({environment_text(r["environment"]) for r in reports if r.get("environment")}) or ["not recorded"]
    summary = {
        "name": c.name,
        "protocol": c.protocol,
        "classes": reports[0]["classes"],
        "folds": rows,
        "aggregate": summarise_runs(rows, keys),
        "confusion": confusion,
        "provenance": prov,
        "notes": notes(prov),
        "info": {
            **info_rows(prov),
            "manifest": c.manifest,
            "preset / model": f"{c.preset} / {c.model}",
            "VTLP": c.vtlp.impl,
            "folds": len(rows),
            "scores": f"the test part of each ({how}); mean +- std over the {parts_text(prov, len(rows))}",
            # folds run in other processes or sessions can differ: every distinct one is named
            "environment": " | ".join(envs),
        },
    }
    if cross and any(cross):
        summary["cross_corpus"] = summarise_cross(dirs, cross)
        summary["notes"] = notes(prov, *(e["scored_on"] for e in summary["cross_corpus"].values()))
    return summary


def _pm(agg: Mapping, key: str) -> str:
    return f"{100 * agg[key]['mean']:.2f} +- {100 * agg[key]['std']:.2f}"


def _cv_line(summary: Mapping, where: str | os.PathLike | None = None) -> str:
    """Console summary of a cv: where the numbers come from, mean +- std, one line per other corpus."""
    agg, p, n = summary["aggregate"], summary["provenance"], len(summary["folds"])
    lines = [
        f"{corpus_text(p)}, label set {label_set_text(p.get('label_set'), p['classes'])}, protocol "
        f"{protocol_text(p)}: WA {_pm(agg, 'wa')} %, UA {_pm(agg, 'ua')} % over {parts_text(p, n)} (test part of each)"
        + (f"; report {where}" if where else "")
    ]
    for e in summary.get("cross_corpus", {}).values():
        lines.append(_cross_line(e))
    return with_notes("\n".join(lines), summary.get("notes"))


def _cross_line(e: Mapping) -> str:
    left = f"; absent there, left out of UA: {', '.join(e['classes_left_out'])}" if e["classes_left_out"] else ""
    return (
        f"  cross-corpus on {e['corpus_text']}: WA {_pm(e['aggregate'], 'wa')} %, UA {_pm(e['aggregate'], 'ua')} % "
        f"over {len(e['folds'])} fold(s), {e['n']} utterances, classes {', '.join(e['classes_used'])}{left}"
    )


def summarise_cross(dirs: Sequence[str], cross: Sequence[Mapping[str, Mapping]]) -> dict:
    """Per other corpus, every fold's cross-corpus scores and their mean +- std.

    ``dirs``: the fold directories (relative to the cv folder); ``cross``: per fold, its
    cross-corpus reports by name (:func:`evaluate_on`). Returns ``{name: {"corpus",
    "corpus_text", "manifest", "scored_on" (its provenance), "n", "classes_used",
    "classes_left_out", "folds", "aggregate"}}``, what :func:`areaser.runs.reports.write_cv_report` draws.
    """
    out = {}
    for name in dict.fromkeys(k for per_fold in cross for k in per_fold):
        done = [(d, per_fold[name]) for d, per_fold in zip(dirs, cross) if name in per_fold]
        rows = [
            {
                "name": d,
                "dir": f"{d}/cross/{name}",
                "n": r["test"]["n"],
                "wa": r["test"]["wa"],
                "ua": r["test"]["ua"],
                "macro_f1": r["test"]["macro_f1"],
            }
            for d, r in done
        ]
        first = done[0][1]
        scored = first["provenance"]["scored_on"]
        out[name] = {
            "corpus": scored["corpus"],
            "corpus_text": corpus_text(scored),
            "manifest": scored["manifest"],
            "scored_on": scored,
            "n": first["test"]["n"],
            "classes_used": first["classes_used"],
            "classes_left_out": first["classes_left_out"],
            "folds": rows,
            "aggregate": summarise_runs(rows, ["wa", "ua", "macro_f1"]),
        }
    return out


def build_report(
    c: TrainConfig,
    prep: PreparedFold,
    history: list[dict],
    selected_epoch: int,
    module,
    test_ws,
    train_ws,
    fit_s: float,
    ddp: dict | None,
    calibration: Mapping | None = None,
) -> dict:
    """The report dict of a run (:mod:`areaser.runs.reports`): ``module``'s scores on ``test_ws``.

    ``calibration``: the run's temperature record (:func:`areaser.runs.calibration.fit_record`, fitted on
    dev, or :func:`~areaser.runs.calibration.not_calibrated`); the report's ``calibration`` then holds its
    ``T`` and the test part's ECE / NLL before and after (:func:`areaser.runs.calibration.test_summary`).

    Besides the scores it names where they come from, so a number is never read without it:
    ``provenance`` (:func:`areaser.runs.provenance.describe`: corpus, synthetic or not, label set and
    classes, protocol), ``notes`` (the synthetic-data and speaker-dependence warnings) and the
    same facts as lines of ``info``.

    A model that is random at evaluation (``faithful``: attention dropout and sample noise kept at
    eval) gets :data:`TEST_DRAWS` seeded scorings (:func:`eval_draw_seeds`, :func:`score_draws`):
    ``test`` is the first draw, ``test_draws`` (:func:`summarise_draws`) holds every draw's WA / UA /
    macro-F1, their mean and sample std, and the seeds that re-score them.
    """
    ws = test_ws
    if ws.feats is None:
        ws.precompute(module.features)
    draws = None
    if getattr(module.model, "stochastic_at_eval", False):  # every scoring is a draw: score several
        seeds = eval_draw_seeds(c.seed)
        scores = score_draws(module.features, module.model, ws, prep.classes, c.decision, seeds)
        test, draws = scores[0], summarise_draws(scores, seeds)
        logits = _seeded_logits(module, ws, seeds[0]) if calibration is not None else None  # draw 1's
    else:
        logits = predict_windows(module.features, module.model, ws)
        test = score_windows(ws, logits, prep.classes, c.decision, speakers=True)
    epochs_run = len(history)
    windows = sum(r["train_windows"] for r in history)
    secs = sum(r["train_s"] for r in history)
    report = fold_report(
        c,
        prep,
        test,
        selected_epoch,
        history,
        {
            "test scores": f"the test part of {prep.fold.name} ({prep.fold.test_group}), model of the epoch "
            f"chosen on its dev part ({c.monitor})",
            "preset / model": f"{c.preset} / {c.model}",
            "VTLP": c.vtlp.impl,
            "utterances train / dev / test": " / ".join(str(len(prep.parts[k])) for k in ("train", "dev", "test")),
            "test utterances dropped (too short)": ws.dropped,
            "train windows per epoch": len(train_ws),
            "epochs run / selected": f"{epochs_run} / {selected_epoch} (on {c.monitor})",
            "training time": f"{fit_s:.1f} s",
            "training throughput": f"{windows / secs:.1f} windows/s" if secs > 0 else "",
        },
    )
    report.test_draws = draws
    if calibration is not None:
        report.calibration = test_summary(calibration, logits, ws, c.decision)
    if c.track_test and history and "test_ua" in history[0]:
        report.paper_and_honest = paper_and_honest(history, c.monitor)
    if ddp:
        report.ddp = ddp
        report.info["processes (DDP)"] = ddp["world_size"]
    return report.to_dict()


def fold_report(
    c: TrainConfig,
    prep: PreparedFold,
    test: dict,
    selected_epoch: int | None,
    history: list[dict],
    facts: Mapping[str, object],
) -> RunReport:
    """The :class:`~areaser.runs.reports.RunReport` of one fold of ``c``, neural or baseline.

    What every run's report says the same way: the fold, its provenance (corpus, label set, protocol)
    and the warnings it calls for, the config and the environment; ``facts``: the ``info`` rows of
    the kind of model (how it was chosen and trained), placed between the fold and the environment.
    """
    prov = describe(c.manifest, prep.parts, c.label_set, prep.classes, c.protocol)
    env = environment(c.deterministic)
    info = {
        **info_rows(prov),
        "manifest": c.manifest,
        "fold": split_text(prov, prep.fold.name, prep.fold.test_group) + f", {prep.fold.index + 1} of {prep.n_folds}",
        **facts,
        "environment": environment_text(env),
    }
    return RunReport(
        c.name,
        list(prep.classes),
        prep.fold.name,
        prep.fold.test_group,
        selected_epoch,
        test,
        history,
        c.to_dict(),
        prov,
        notes(prov),
        info,
        env,
    )

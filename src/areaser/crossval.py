"""Cross-validation, re-evaluation and cross-corpus scoring: every fold, then mean +- std.

:func:`cross_validate` trains the folds one after the other (each a run directory of
:func:`areaser.training.train`, under ``out_dir/name/<fold>/``) and writes the aggregate
report beside them; a fold that already has its report is kept, so a half-finished cv
resumes. :func:`evaluate_run` scores a run directory (or a whole cv directory) again from
its ``best.safetensors`` and rewrites the reports: exactly the test utterances ``split.json``
lists, found through the run's manifest wherever it is run from (relative paths are relative
to the folder training ran in, not to the current one), and it refuses, leaving the report
as it is, when any of them is missing or has changed. :func:`areaser.splits.split_record` is what
``split.json`` holds, per-file SHA-1 of the test audio included.

:func:`evaluate_on` scores a trained run (neural or baseline; or every fold of a cv) on
*another* corpus' manifest: every original utterance whose label maps, by name through the
run's label set, to one of the model's classes. Its report goes to ``RUN/cross/<corpus>/``
and names both corpora; the run's own report is left alone. ``TrainConfig.test_manifests``
makes ``train`` and ``cross_validate`` do this after every fold (:func:`score_test_manifests`),
and the cv report gets a cross-corpus table, mean +- std over folds (:func:`summarise_cross`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .baselines import is_baseline
from .config import ConfigError, TrainConfig
from .determinism import environment_text
from .fileio import atomic_write_json, file_digest, read_json
from .labels import LabelSet, get_label_set
from .provenance import (
    console_line,
    corpus_names,
    corpus_text,
    describe,
    info_rows,
    label_set_text,
    notes,
    parts_text,
    protocol_text,
    with_notes,
)
from .training import build_report, make_progress, prepare_fold, read_history, train

__all__ = [
    "cross_validate",
    "summarise_cv",
    "evaluate_run",
    "evaluate_on",
    "check_test_manifests",
    "score_test_manifests",
    "summarise_cross",
]


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
    from .reports import write_cv_report

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


def summarise_cv(
    c: TrainConfig,
    reports: Sequence[Mapping],
    dirs: Sequence[str],
    cross: Sequence[Mapping[str, Mapping]] | None = None,
) -> dict:
    """Aggregate fold reports into the cv summary :func:`areaser.reports.write_cv_report` draws.

    ``cross``: per fold, its cross-corpus reports by name (:func:`score_test_manifests`); they
    become the summary's ``cross_corpus`` table (:func:`summarise_cross`).
    """
    from .metrics import summarise_runs

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
    "classes_left_out", "folds", "aggregate"}}``, what :func:`areaser.reports.write_cv_report` draws.
    """
    from .metrics import summarise_runs

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

    A cross-validation directory (``cv.json``) re-evaluates every fold and the aggregate.
    Cross-corpus reports (``RUN/cross/``) are not scored again: :func:`evaluate_on` does that.
    """
    from .checkpoint import load_run, run_paths
    from .data import load_windows
    from .reports import write_cv_report, write_run_report

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
    if not paths["best"].is_file():
        raise ConfigError(f"{run_dir}: no best.safetensors yet (the run has not finished an epoch)")
    c = TrainConfig.load(paths["config"]).resolved()
    run = load_run(run_dir)
    prep = _run_test_set(run_dir, c, run.classes)  # the utterances of split.json, checked
    ws = load_windows(prep.parts["test"], c.segments, train=False, sr=c.features.sr)
    history = read_history(paths["metrics"])
    module = _Evaluated(run.features, run.model)
    from .calibration import read_calibration

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


def _with_embedding_map(cv_dir: Path, summary: dict, log) -> None:
    """Add the t-SNE map of every fold's test utterances (:func:`areaser.embed.write_embedding_map`) to a cv summary."""
    from .embed import write_embedding_map

    emb = write_embedding_map(cv_dir, [f["dir"] for f in summary["folds"]], log=log)
    if emb is not None:
        summary["embedding_map"] = emb


@dataclass
class _Evaluated:
    features: torch.nn.Module
    model: torch.nn.Module


# ----------------------------------------------------------------------------- a run's own test set

_NOT_SCORED = "not scored, report left as it is"


def _training_dir(run_dir: str | os.PathLike, out_dir: str, name: str) -> Path | None:
    """The folder training ran in, told by where the run directory is now.

    ``train`` makes the run directory as ``OUT_DIR/NAME`` (``config.json``'s ``out_dir`` and
    ``name``) relative to its working directory, so a run directory ``/x/runs/demo`` of
    ``out_dir="runs"`` was trained in ``/x``. ``None`` when ``out_dir`` is absolute or the run
    directory's path does not end in ``OUT_DIR/NAME`` (it was moved or renamed).
    """
    tail = Path(os.path.normpath(Path(out_dir) / name))
    if tail.is_absolute() or ".." in tail.parts or tail == Path("."):
        return None
    n = len(tail.parts)
    for here in (Path(os.path.abspath(run_dir)), Path(run_dir).resolve()):
        if here.parts[-n:] == tail.parts:
            return Path(*here.parts[:-n])
    return None


def _run_manifests(run_dir: Path, c: TrainConfig, split: Mapping) -> list[str]:
    """Absolute paths of the run's manifest and ``extra_manifests``; ConfigError if not found.

    Relative ones are tried against the folder training ran in (:func:`_training_dir`), then
    against ``split.json``'s ``base``; never against the current directory.
    """
    names = [c.manifest, *c.extra_manifests]
    if all(os.path.isabs(m) for m in names):
        return names
    bases = [b for b in (_training_dir(run_dir, c.out_dir, c.name), split.get("base")) if b]
    bases = list(dict.fromkeys(Path(b) for b in bases))
    if not bases:
        raise ConfigError(
            f"{run_dir}: its manifest {c.manifest} is a path relative to the folder training ran in, which is "
            f"unknown: the run directory is not at OUT_DIR/NAME of its config.json ({Path(c.out_dir) / c.name}) "
            f"and split.json records no base; {_NOT_SCORED}"
        )
    for b in bases:
        found = [m if os.path.isabs(m) else str(b / m) for m in names]
        if all(os.path.isfile(m) for m in found):
            return found
    tried = ", ".join(str(b / c.manifest) for b in bases)
    raise ConfigError(
        f"{run_dir}: the run's manifest {c.manifest} is not where training read it ({tried}); {_NOT_SCORED}"
    )


def _run_test_set(run_dir: Path, c: TrainConfig, classes: Sequence[str]):
    """The run's fold with the utterances of ``split.json`` (a ``PreparedFold``), checked.

    Every id of every part must be in the run's manifest(s), with a label that maps to one of
    the run's ``classes``; every test audio file must exist and, where ``split.json`` records
    ``test_files``, have the same SHA-1. Anything else raises ConfigError naming the run, how
    many utterances and one example.
    """
    from .checkpoint import run_paths
    from .manifest import ManifestError, make_manifest, read_manifest, select_classes, validate_manifest
    from .training import PreparedFold

    split_path = run_paths(run_dir)["split"]
    if not split_path.is_file():
        raise ConfigError(
            f"{run_dir}: no split.json, so which utterances the run was tested on is unknown; {_NOT_SCORED}"
        )
    split = read_json(split_path, ConfigError)
    manifests = _run_manifests(run_dir, c, split)
    frames = [read_manifest(m, check_files=False) for m in manifests]
    df = make_manifest(pd.concat(frames, ignore_index=True)) if len(frames) > 1 else frames[0]
    problems = validate_manifest(df, check_files=False)
    if problems:
        raise ManifestError("manifests " + ", ".join(manifests), problems)
    where = manifests[0] if len(manifests) == 1 else "manifests " + ", ".join(manifests)
    ls = _class_map(c.label_set, classes)
    row_of = {u: i for i, u in enumerate(df["utt_id"])}
    parts = {}
    for part in ("train", "dev", "test"):
        ids = [str(u) for u in split[part]]
        missing = [u for u in ids if u not in row_of]
        if missing:
            raise ConfigError(
                f"{run_dir}: {len(missing)} of the {len(ids)} {part} utterances of split.json are not "
                f"in {where} (e.g. {missing[0]}): not the data the run was made of; {_NOT_SCORED}"
            )
        rows = df.iloc[[row_of[u] for u in ids]].reset_index(drop=True)
        sel = select_classes(rows, ls)
        if len(sel) < len(rows):
            bad = rows[~rows["utt_id"].isin(set(sel["utt_id"]))]
            raise ConfigError(
                f"{run_dir}: {len(bad)} {part} utterance(s) of split.json now have a label outside the "
                f"run's classes in {where} (e.g. {bad['utt_id'].iloc[0]}: {bad['label'].iloc[0]}); "
                f"{_NOT_SCORED}"
            )
        parts[part] = sel
    test = parts["test"]
    absent = [p for p in test["path"] if not os.path.isfile(p)]
    if absent:
        raise ConfigError(
            f"{run_dir}: {len(absent)} of the {len(test)} test audio files are missing "
            f"(e.g. {absent[0]}); {_NOT_SCORED}"
        )
    files = split.get("test_files")
    if files is not None:
        changed = [
            p
            for u, p in zip(test["utt_id"], test["path"])  # the size first: no read when it differs
            if u not in files
            or files[u].get("bytes") not in (None, os.path.getsize(p))
            or file_digest(p) != files[u]["sha1"]
        ]
        if changed:
            raise ConfigError(
                f"{run_dir}: {len(changed)} of the {len(test)} test audio files differ from those the "
                f"run was tested on (SHA-1 in split.json; e.g. {changed[0]}); {_NOT_SCORED}"
            )
    # the fold's number of folds and classes, as training derived them from this manifest
    derived = prepare_fold(replace(c, manifest=manifests[0], extra_manifests=manifests[1:]), df)
    if tuple(derived.classes) != tuple(classes):
        raise ConfigError(
            f"{run_dir}: label set {c.label_set} gives classes {', '.join(derived.classes)} on {where}, "
            f"the model has {', '.join(classes)}; {_NOT_SCORED}"
        )
    fold = replace(derived.fold, name=split["fold"], test_group=split["test_group"])
    return PreparedFold(parts, tuple(classes), fold, derived.n_folds)


def _test_set_facts(report: Mapping) -> dict:
    """What identifies the utterances a report scored: count, class supports, speakers, drops."""
    t = report["test"]
    facts = {"utterances": t["n"], "per class": {k: v["support"] for k, v in t["per_class"].items()}}
    if "per_speaker" in t:
        facts["per speaker"] = {k: v["n"] for k, v in t["per_speaker"].items()}
    dropped = report.get("info", {}).get("test utterances dropped (too short)")
    if dropped is not None:
        facts["dropped"] = dropped
    return facts


def _check_same_test_set(run_dir: Path, old: Mapping, new: Mapping) -> None:
    """ConfigError if ``new`` scored other utterances than the run's existing report ``old``."""
    if not old.get("test"):
        return
    was, now = _test_set_facts(old), _test_set_facts(new)
    diff = [k for k in was if k in now and was[k] != now[k]]
    if diff:
        k = diff[0]
        raise ConfigError(
            f"{run_dir}: the test set scored now differs from the one of its report ({k}: "
            f"{json.dumps(now[k])} now, {json.dumps(was[k])} in report.json); {_NOT_SCORED}"
        )


# ----------------------------------------------------------------------------- cross-corpus


@dataclass
class _Other:
    """Another corpus' manifest as a run sees it: its utterances with a model class, and what is left out."""

    manifest: str
    name: str  # RUN/cross/<name>/
    originals: pd.DataFrame  # every original recording of the manifest
    rows: pd.DataFrame  # those whose label maps to a model class, with ``class`` and ``y``
    absent: list[str]  # model classes without an utterance here: not in UA
    unmapped: dict[str, int]  # labels that map to no model class, and their counts


def _class_map(label_set: str, classes: Sequence[str]) -> LabelSet:
    """The run's label set with exactly the run's classes, in the run's order (``y`` = model output)."""
    try:
        ls = get_label_set(label_set, labels=classes)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if set(ls.classes) != set(classes):
        raise ConfigError(f"label set {label_set!r} has classes {list(ls.classes)}, the model {list(classes)}")
    return LabelSet(ls.name, tuple(classes), dict(ls.mapping), ls.description)


def _other_corpus(manifest: str | os.PathLike, label_set: str, classes: Sequence[str]) -> _Other:
    """Read ``manifest`` and match its labels to the model's classes by name (ConfigError if none match)."""
    from .manifest import read_manifest, select_classes

    df = read_manifest(manifest)
    orig = df[df["source_id"] == ""].reset_index(drop=True)  # augmented copies are not another corpus' data
    ls = _class_map(label_set, classes)
    rows = select_classes(orig, ls)
    have = sorted(set(orig["label"]))
    if not len(rows):
        raise ConfigError(
            f"{manifest}: none of its labels ({', '.join(have) or 'none'}) maps to a class of the model "
            f"({', '.join(classes)}; label set {label_set})"
        )
    left = orig.loc[orig["label"].map(ls.map).isna(), "label"].value_counts()
    return _Other(
        str(manifest),
        _cross_name(manifest, orig),
        orig,
        rows,
        [k for k in classes if k not in set(rows["class"])],
        {str(k): int(v) for k, v in left.items()},
    )


def _cross_name(manifest: str | os.PathLike, df: pd.DataFrame) -> str:
    """Folder name of a corpus' cross-corpus report: its ``corpus`` values, else the manifest's folder."""
    name = "+".join(corpus_names(df)) or Path(manifest).resolve().parent.name or "other"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


def check_test_manifests(label_set: str, classes: Sequence[str], manifests: Sequence[str]) -> list[str]:
    """Check other corpora before training; returns their names, raises ConfigError or ManifestError.

    Each must be readable, share a class with the model and have its own name (``RUN/cross/<name>/``).
    """
    names: dict[str, str] = {}
    for m in manifests:
        name = _other_corpus(m, label_set, classes).name
        if name in names:
            raise ConfigError(
                f"test manifests {names[name]} and {m} are both corpus {name!r} (RUN/cross/{name}/); "
                "give one of them another corpus column value"
            )
        names[name] = str(m)
    return list(names)


def score_test_manifests(
    run_dir: str | os.PathLike,
    manifests: Sequence[str],
    log: Callable[[str], None] | None = print,
    reuse: bool = False,
    base: str | os.PathLike | None = None,
) -> dict[str, dict]:
    """:func:`evaluate_on` for each of ``manifests``; the cross-corpus reports by name.

    ``reuse``: a report already in ``RUN/cross/<name>/`` for the same manifest is read back
    instead (``cross_validate`` after ``train`` scored the fold, or a resumed cv). ``base``:
    the folder relative manifest paths (given and recorded) are relative to (default: the
    current directory; ``evaluate_run`` passes the folder training ran in).
    """
    from .manifest import read_manifest

    def where(p: str) -> Path:
        return (Path(base) / p if base is not None and not os.path.isabs(p) else Path(p)).resolve()

    out: dict[str, dict] = {}
    for m in manifests:
        if reuse:
            name = _cross_name(where(m), read_manifest(where(m), check_files=False))
            old = Path(run_dir) / "cross" / name / "report.json"
            if old.is_file():
                r = read_json(old, ConfigError)
                if where(r["provenance"]["scored_on"]["manifest"]) == where(m):
                    out[name] = r
                    continue
        r = evaluate_on(run_dir, m if base is None else where(m), log=log)
        out[r["cross_name"]] = r
    return out


@dataclass
class _Trained:
    """A trained run that scores rows (``path``, ``y``, ``speaker``): ``score(rows) -> (metrics, dropped)``."""

    classes: tuple[str, ...]
    fold: str
    epoch: int | None
    model: str  # how the model was made, for the report
    score: Callable[[pd.DataFrame], tuple[dict, int]]


def _trained(run_dir: Path, c: TrainConfig, log) -> _Trained:
    """The model of a run directory: a baseline refit from its stored fit, or the dev-chosen weights."""
    from .metrics import classification_metrics

    if is_baseline(c.model):
        from .baselines import load_fitted

        fit = load_fitted(run_dir)

        def score_baseline(rows: pd.DataFrame) -> tuple[dict, int]:
            proba = fit.predict_proba(list(rows["path"]), progress=bool(c.progress and log))
            return classification_metrics(rows["y"].to_numpy(), proba.argmax(1), fit.classes, list(rows["speaker"])), 0

        how = f"{c.model}, refit on the run's stored training features (deterministic: the classifier it scored)"
        return _Trained(fit.classes, fit.header["fold"], None, how, score_baseline)

    from .checkpoint import load_run
    from .data import load_windows
    from .training import predict_windows, score_windows

    run = load_run(run_dir)

    def score_neural(rows: pd.DataFrame) -> tuple[dict, int]:  # build_report's pipeline, on other rows
        ws = load_windows(rows, c.segments, train=False, sr=c.features.sr)
        if not len(ws):
            raise ConfigError(f"no utterance gives a window (segments.policy {c.segments.policy!r} dropped them all)")
        ws.precompute(run.features)
        logits = predict_windows(run.features, run.model, ws)
        return score_windows(ws, logits, run.classes, c.decision, speakers=True), ws.dropped

    epoch = int(run.header["epoch"])
    return _Trained(
        run.classes,
        run.header.get("fold", ""),
        epoch,
        f"{c.preset} / {c.model}, weights of epoch {epoch} (chosen on dev)",
        score_neural,
    )


def evaluate_on(
    run_dir: str | os.PathLike, manifest: str | os.PathLike, log: Callable[[str], None] | None = print
) -> dict:
    """Score a trained run on another corpus' manifest (cross-corpus); write ``RUN/cross/<name>/``.

    ``run_dir``: a run directory of ``train``, neural (its ``best.safetensors``) or a baseline
    (``egemaps-lr`` / ``egemaps-svm``: its stored fit), or a cv directory (every fold, then
    mean +- std in ``CV/cross/<name>/``). ``<name>``: the manifest's ``corpus`` values, else its
    folder's name.

    Every original utterance of ``manifest`` whose label maps to a model class by name, through
    the run's label set (``4class`` sends ``excited`` to ``happy``), is scored; the others are
    left out and counted by label. Model classes the manifest lacks are listed and left out of
    UA and macro-F1, which average over the classes present in the reference
    (:func:`areaser.metrics.classification_metrics`). A neural run scores with the windows and
    decision of its own test set (``load_windows``, ``predict_windows``, ``score_windows``).
    The report names both corpora (trained on, scored on), the label set, the classes used and
    left out; the run's own report is never touched.

    Returns the report dict (a cv directory: the cross-corpus summary). Raises ConfigError when
    no label of ``manifest`` maps to a model class (naming the file and the classes),
    ManifestError for an unusable manifest, CheckpointError for a run without a model.
    """
    from .checkpoint import run_paths
    from .reports import write_run_report

    run_dir = Path(run_dir)
    if (run_dir / "cv.json").is_file():
        return _evaluate_cv_on(run_dir, manifest, log)
    paths = run_paths(run_dir)
    if not paths["config"].is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.json)")
    c = TrainConfig.load(paths["config"]).resolved()
    model = _trained(run_dir, c, log)
    other = _other_corpus(manifest, c.label_set, model.classes)
    metrics, dropped = model.score(other.rows)

    own = read_json(paths["report_json"], ConfigError) if paths["report_json"].is_file() else {}
    trained = own.get("provenance") or describe(c.manifest, None, c.label_set, model.classes, c.protocol)
    scored = describe(manifest, other.originals, c.label_set, model.classes)
    used = [k for k in model.classes if k not in other.absent]
    warn = notes({**trained, "speaker_dependent": None}, scored)  # the run's own split plays no part here
    same = sorted(set(trained["corpus_names"]) & set(scored["corpus_names"]))
    if same:
        warn.append(
            f"scored on the corpus it was trained on ({', '.join(same)}): its training utterances may be "
            "among those scored, so this is not a cross-corpus result"
        )
    left = ", ".join(f"{k} {v}" for k, v in other.unmapped.items()) or "none"
    report = {
        "kind": "cross-corpus",
        "name": f"{c.name} on {other.name}",
        "cross_name": other.name,
        "title": f"Cross-corpus report: {c.name}, trained on {corpus_text(trained)}, scored on {corpus_text(scored)}",
        "test_heading": f"Scored on {scored['corpus']}: every original utterance with a class of the model",
        "run": str(run_dir),
        "classes": list(model.classes),
        "classes_used": used,
        "classes_left_out": other.absent,
        "labels_left_out": other.unmapped,
        "fold": model.fold,
        "selected_epoch": model.epoch,
        "test": metrics,
        "history": [],
        "provenance": {"trained_on": trained, "scored_on": scored},
        "notes": warn,
        "info": {
            "trained on": f"{trained['corpus']} ({trained['manifest']}), protocol {protocol_text(trained)}, "
            f"fold {model.fold}",
            "scored on": f"{scored['corpus']} ({scored['manifest']}): every original utterance whose label maps to "
            "a model class; no protocol, none of it split off for training",
            "label set": label_set_text(c.label_set, model.classes),
            "classes used (UA and macro-F1 average over these)": ", ".join(used),
            f"model classes absent from {scored['corpus']} (left out of UA)": ", ".join(other.absent) or "none",
            "utterances scored / originals": f"{metrics['n']} / {len(other.originals)}",
            "left out: labels with no class": left,
            "utterances dropped (too short)": dropped,
            "model": model.model,
        },
    }
    out = write_run_report(run_dir / "cross" / other.name, report)
    if log:
        absent = f"; absent there, left out of UA: {', '.join(other.absent)}" if other.absent else ""
        log(
            with_notes(
                f"{run_dir} on {corpus_text(scored)}: WA {100 * metrics['wa']:.2f} %, "
                f"UA {100 * metrics['ua']:.2f} % over "
                f"{metrics['n']} utterances (classes {', '.join(used)}{absent}; labels left out: {left}); trained on "
                f"{corpus_text(trained)}, label set {label_set_text(c.label_set, model.classes)}, protocol "
                f"{protocol_text(trained)}, fold {model.fold}; report {out['md']}",
                warn,
            )
        )
    return report


def _evaluate_cv_on(cv_dir: Path, manifest: str | os.PathLike, log) -> dict:
    """:func:`evaluate_on` for every fold of a cv, then mean +- std in ``CV/cross/<name>/``."""
    from .reports import write_cross_summary

    meta = read_json(cv_dir / "cv.json", ConfigError)
    reports = {name: evaluate_on(cv_dir / name, manifest, log) for name in meta["folds"]}
    first = next(iter(reports.values()))
    name = first["cross_name"]
    cross = summarise_cross(list(reports), [{name: r} for r in reports.values()])
    trained = first["provenance"]["trained_on"]
    summary = {
        "kind": "cross-corpus cv",
        "name": f"{meta['config'].get('name') or cv_dir.name} on {name}",
        "provenance": first["provenance"],
        "notes": first["notes"],
        "info": {
            "trained on": f"{trained['corpus']} ({trained['manifest']}), protocol {protocol_text(trained)}, "
            f"{len(reports)} fold(s): a model each",
            "scored on": first["info"]["scored on"],
            "label set": first["info"]["label set"],
        },
        "cross_corpus": cross,
    }
    paths = write_cross_summary(cv_dir / "cross" / name, summary, base="../../")
    if log:
        log(
            with_notes(
                f"{cv_dir}: trained on {corpus_text(trained)}\n{_cross_line(cross[name])}; report {paths['md']}",
                summary["notes"],
            )
        )
    return summary

"""Cross-corpus scoring: a trained run on another corpus' manifest, labels mapped by name."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from areaser.data.labels import LabelSet, get_label_set
from areaser.data.manifest import read_manifest, select_classes
from areaser.data.windows import load_windows
from areaser.io.files import read_json
from areaser.models.baselines import is_baseline
from areaser.runs.checkpoint import load_run, run_paths
from areaser.runs.config import ConfigError, TrainConfig
from areaser.runs.fitted import load_fitted
from areaser.runs.metrics import classification_metrics
from areaser.runs.provenance import (
    corpus_names,
    corpus_text,
    describe,
    label_set_text,
    notes,
    protocol_text,
    with_notes,
)
from areaser.runs.reports import write_cross_summary, write_run_report
from areaser.train.report import _cross_line, summarise_cross
from areaser.train.scoring import predict_windows, score_windows

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
    if is_baseline(c.model):
        fit = load_fitted(run_dir)

        def score_baseline(rows: pd.DataFrame) -> tuple[dict, int]:
            proba = fit.predict_proba(list(rows["path"]), progress=bool(c.progress and log))
            return classification_metrics(rows["y"].to_numpy(), proba.argmax(1), fit.classes, list(rows["speaker"])), 0

        how = f"{c.model}, refit on the run's stored training features (deterministic: the classifier it scored)"
        return _Trained(fit.classes, fit.header["fold"], None, how, score_baseline)

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
    (:func:`areaser.runs.metrics.classification_metrics`). A neural run scores with the windows and
    decision of its own test set (``load_windows``, ``predict_windows``, ``score_windows``).
    The report names both corpora (trained on, scored on), the label set, the classes used and
    left out; the run's own report is never touched.

    Returns the report dict (a cv directory: the cross-corpus summary). Raises ConfigError when
    no label of ``manifest`` maps to a model class (naming the file and the classes),
    ManifestError for an unusable manifest, CheckpointError for a run without a model.
    """
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

"""A run's own test set found again: the utterances split.json lists, checked unchanged."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from areaser.data.manifest import ManifestError, make_manifest, read_manifest, select_classes, validate_manifest
from areaser.io.files import file_digest, read_json
from areaser.runs.checkpoint import run_paths
from areaser.runs.config import ConfigError, TrainConfig
from areaser.train.crosscorpus import _class_map
from areaser.train.folds import PreparedFold, prepare_fold

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

"""One fold of a protocol made ready to train: manifests read, split, copies joined, class weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch

from areaser.core.errors import UnknownNameError
from areaser.data.manifest import ManifestError, make_manifest, read_manifest, validate_manifest
from areaser.data.splits import (
    SplitError,
    check_fold,
    get_protocol,
    make_folds,
    resolve_label_set,
    select_utterances,
    selection_line,
    selection_table,
    split_frame,
)
from areaser.dsp.augment import augment_manifest, copies_folder
from areaser.runs.config import ConfigError, TrainConfig

# ----------------------------------------------------------------------------- data preparation


@dataclass
class PreparedFold:
    """A fold ready to load: the rows of each part, the classes, the fold itself.

    ``notes``: lines about the data a run trains on that the console prints (train) before training:
    dev not held out (``train_on_dev``), the xu2021 selection on IEMOCAP against a complete copy's counts.
    """

    parts: dict[str, pd.DataFrame]
    classes: tuple[str, ...]
    fold: Any
    n_folds: int
    notes: tuple[str, ...] = ()


def copies_root(config: TrainConfig) -> Path:
    """Where a run's own VTLP copies (``vtlp_copies``) are cached: ``copies_dir``, else beside the manifest.

    The copies themselves lie in a folder under it named by their settings
    (:func:`areaser.dsp.augment.copies_folder`).
    """
    return Path(config.copies_dir or Path(config.manifest).resolve().parent / "vtlp-copies").resolve()


def _own_copies(config: TrainConfig, df: pd.DataFrame) -> pd.DataFrame:
    """``vtlp_copies`` offline copies (``vtlp.impl``) of every original the protocol selects, cached.

    Every fold of a selection shares them (the authors copied every file once); the copies of
    utterances outside a fold's training part are never trained on (:func:`areaser.data.splits.split_frame`).
    A second run with the same settings finds every file and writes none.
    """
    orig = df[df["source_id"] == ""]
    chosen = set(select_utterances(orig, get_protocol(config.protocol), config.label_set)["utt_id"])
    folder = copies_folder(copies_root(config), config.vtlp, config.seed)
    return augment_manifest(
        orig[orig["utt_id"].isin(chosen)],
        folder,
        copies=int(config.vtlp_copies or 0),
        config=config.vtlp,
        seed=config.seed,
    )


def read_manifests(config: TrainConfig) -> pd.DataFrame:
    """The manifest plus ``extra_manifests`` (augmented copies) plus the run's own copies, checked.

    The run's own copies: ``vtlp_copies`` per selected original, made with ``vtlp.impl`` on first
    use and cached (:func:`copies_root`). Ids must stay unique.
    """
    frames = [read_manifest(config.manifest)] + [read_manifest(p) for p in config.extra_manifests]
    df = make_manifest(pd.concat(frames, ignore_index=True)) if len(frames) > 1 else frames[0]
    if config.vtlp_copies and config.vtlp.impl in ("stft", "legacy-time"):
        df = make_manifest(pd.concat([df, _own_copies(config, df)], ignore_index=True))
    problems = validate_manifest(df, check_files=False)
    if problems:
        raise ManifestError("manifests " + ", ".join([config.manifest, *config.extra_manifests]), problems)
    if config.copies is not None:  # keep the first `copies` copies of every source
        rank = df.groupby("source_id").cumcount() + 1
        df = df[(df["source_id"] == "") | (rank <= config.copies)].reset_index(drop=True)
    return df


def prepare_fold(config: TrainConfig, df: pd.DataFrame | None = None) -> PreparedFold:
    """Select, split and check one fold; every input problem is raised here, before training."""
    c = config
    try:
        df = read_manifests(c) if df is None else df
        protocol = get_protocol(c.protocol)
        sel = select_utterances(df, protocol, c.label_set)
        folds = make_folds(sel, protocol, c.seed)
        if not 0 <= c.fold < len(folds):
            raise ConfigError(
                f"fold {c.fold} out of range: protocol {c.protocol!r} has {len(folds)} folds (0..{len(folds) - 1})"
            )
        fold = folds[c.fold]
        parts = split_frame(sel, fold, use_copies=True, train_on_dev=bool(c.train_on_dev))
        classes = resolve_label_set(df, c.label_set).classes
        check_fold(parts, classes, fold.name)
        notes = _data_notes(c, df, protocol, parts)
    except (SplitError, UnknownNameError) as e:
        raise ConfigError(str(e)) from None
    return PreparedFold(parts, classes, fold, len(folds), notes)


def _data_notes(c: TrainConfig, df: pd.DataFrame, protocol, parts: Mapping[str, pd.DataFrame]) -> tuple[str, ...]:
    """The lines :class:`PreparedFold` carries for the console (see there)."""
    notes = []
    if c.train_on_dev:
        notes.append(
            f"dev is not held out: its {len(parts['dev'])} utterances are also trained on (train_on_dev, the authors' "
            "80 % training part); it is still scored every epoch, so the dev-chosen epoch is not an honest choice"
        )
    orig = df[df["source_id"] == ""]
    if protocol.name == "xu2021" and len(orig) and set(orig["corpus"].astype(str)) == {"iemocap"}:
        spec = c.label_set or protocol.label_set
        table = selection_table(df, protocol, spec)
        notes.append("xu2021 on IEMOCAP, " + selection_line(table, spec, protocol.min_duration_s))
    return tuple(notes)


def _class_weights(c: TrainConfig, labels: torch.Tensor, n_classes: int) -> torch.Tensor | None:
    if isinstance(c.class_weights, list):
        if len(c.class_weights) != n_classes:
            raise ConfigError(f"class_weights has {len(c.class_weights)} values for {n_classes} classes")
        return torch.tensor(c.class_weights, dtype=torch.float32)
    if c.class_weights == "balanced":  # n / (C * n_c) over training windows
        counts = torch.bincount(labels, minlength=n_classes).float()
        return (counts.sum() / (n_classes * counts.clamp_min(1))).float()
    return None

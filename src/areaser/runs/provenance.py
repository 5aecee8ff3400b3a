"""Where a number comes from: the corpus, the label set and the protocol, named in every report.

One helper for every kind of result (a neural run, a baseline run, a cross-validation summary,
a cross-corpus score), so each names the same facts the same way:

* the **corpus**: the values of the manifest's ``corpus`` column (``emodb``), and whether it is
  the built-in synthetic corpus (:mod:`areaser.builtin.synth`): its scores show that the code runs, not
  that emotions are recognised. It is recognised by its ``synth_config.json``, in the
  manifest's folder or in a folder above the audio files (a manifest copied elsewhere that
  still points at the synthetic audio is still synthetic);
* the **label set** with the classes it resolved to (``all`` and comma lists depend on the data);
* the **protocol**, flagged when it is speaker-dependent (speakers appear in train and test:
  the scores say nothing about new speakers), and when its "folds" are overlapping random
  splits, one per seed (``xu2021``: each seed draws its own 80/20 split, so test sets overlap
  and the spread over seeds is no cross-validation spread).

:func:`describe` gathers these facts as a JSON-ready dict (kept as ``report["provenance"]``);
:func:`info_rows` turns it into the lines of a report's fact table, :func:`notes` into the
warnings shown above a report and under a console line, :func:`corpus_text` into a short name;
:func:`console_line` is the one-line summary of a run that ``train`` and ``evaluate`` print.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from areaser.core.errors import UnknownNameError
from areaser.data.manifest import read_manifest
from areaser.data.splits import get_protocol

__all__ = [
    "SYNTHETIC_NOTE",
    "SPEAKER_DEPENDENT_NOTE",
    "SYNTH_MARKER",
    "corpus_names",
    "is_synthetic",
    "speaker_dependent",
    "overlapping_splits",
    "RANDOM_SPLITS_NOTE",
    "split_text",
    "describe",
    "corpus_text",
    "label_set_text",
    "protocol_text",
    "info_rows",
    "notes",
    "with_notes",
    "console_line",
]

SYNTH_MARKER = "synth_config.json"  # written by areaser.builtin.synth into the corpus root
SYNTHETIC_NOTE = "synthetic (built-in espeak-ng corpus): scores show the code runs, not emotion recognition"
SPEAKER_DEPENDENT_NOTE = "speaker-dependent: speakers appear in train and test"
RANDOM_SPLITS_NOTE = (
    "random splits (seeds), overlapping, not folds: each seed draws its own 80/20 utterance split, so the test "
    "sets overlap and the spread over seeds is not a cross-validation spread"
)


def corpus_names(rows: pd.DataFrame) -> tuple[str, ...]:
    """Distinct ``corpus`` values of the original recordings in ``rows`` (sorted; empty ones left out)."""
    orig = rows[rows["source_id"] == ""] if "source_id" in rows.columns else rows
    return tuple(sorted({str(v) for v in orig.get("corpus", pd.Series(dtype=str)) if str(v)}))


def is_synthetic(manifest: str | os.PathLike | None, paths: Iterable[str] = ()) -> bool:
    """True when ``synth_config.json``, the mark of the built-in synthetic corpus, is beside the data.

    That is, when the manifest's folder, or the common folder of ``paths`` or one above it, holds it.
    """
    dirs: list[Path] = []
    if manifest:
        dirs.append(Path(manifest).resolve().parent)
    paths = [os.path.abspath(p) for p in paths]
    if paths:
        root = Path(os.path.commonpath(paths))
        dirs += [root, *root.parents]
    return any((d / SYNTH_MARKER).is_file() for d in dirs)


def speaker_dependent(protocol: str) -> bool | None:
    """Whether a protocol's test speakers are also trained on; ``None`` for an unknown protocol.

    Keyed on the protocol's kind: ``random`` splits utterances, not speakers (``xu2021`` and
    ``random``); the other kinds hold out sessions or speakers.
    """
    try:
        p = get_protocol(protocol)
    except UnknownNameError:
        return None
    return bool(getattr(p, "speaker_dependent", p.kind == "random"))


def overlapping_splits(protocol: str | None) -> bool | None:
    """Whether a protocol's "folds" are independent random splits, one per seed, whose test sets overlap.

    ``xu2021`` (the paper's 80/20 utterance split drawn again for every seed) is; ``random``
    (stratified k-fold over utterances: disjoint test parts) and the session / speaker protocols
    are not. ``None`` for an unknown protocol.

    >>> overlapping_splits("xu2021"), overlapping_splits("random"), overlapping_splits("loso")
    (True, False, False)
    """
    if not protocol:
        return None
    try:
        p = get_protocol(protocol)
    except UnknownNameError:
        return None
    return p.kind == "random" and not p.stratified


def _overlapping(p: Mapping) -> bool:
    """A provenance dict's ``overlapping_splits``, worked out from its protocol when it predates the key."""
    v = p.get("overlapping_splits")
    return bool(overlapping_splits(p.get("protocol")) if v is None else v)


def split_text(p: Mapping, name: str, held_out: str) -> str:
    """``fold fold1-Ses01 (held out Ses01)``, or ``random split seed0 (one of 5 ..., not folds)``."""
    if not _overlapping(p):
        return f"fold {name} (held out {held_out})"
    return f"random split {name} (one of {_n_splits(p)} random splits (seeds), overlapping, not folds)"


def parts_text(p: Mapping, n: int) -> str:
    """``5 fold(s)``, or ``5 random splits (seeds, overlapping)`` under a protocol such as ``xu2021``."""
    return f"{n} random splits (seeds, overlapping)" if _overlapping(p) else f"{n} fold(s)"


def _n_splits(p: Mapping) -> int:

    return get_protocol(p["protocol"]).n_folds or 5


def describe(
    manifest: str | os.PathLike | None,
    rows: pd.DataFrame | Mapping[str, pd.DataFrame] | None,
    label_set: str | None,
    classes: Sequence[str],
    protocol: str | None = None,
) -> dict:
    """JSON-ready provenance of scores on ``rows`` of ``manifest``.

    ``rows`` are the utterances used, with ``corpus`` and ``path`` columns, or a fold's ``{part: rows}``.
    ``rows=None`` reads the manifest (for results written before reports held their
    provenance); an unreadable manifest gives the corpus ``unknown``. ``protocol`` is the
    protocol the numbers come from (``None`` when none applies).
    """
    if isinstance(rows, Mapping):
        rows = pd.concat(list(rows.values()), ignore_index=True)
    if rows is None and manifest:
        try:
            rows = read_manifest(manifest, check_files=False)
        except ValueError:
            rows = None
    names = corpus_names(rows) if rows is not None else ()
    orig = rows[rows["source_id"] == ""] if rows is not None and "source_id" in rows.columns else rows
    return {
        "manifest": str(manifest or ""),
        "corpus": "+".join(names) or "unknown",
        "corpus_names": list(names),
        "synthetic": is_synthetic(manifest, [] if orig is None else list(orig["path"])),
        "label_set": label_set,
        "classes": list(classes),
        "protocol": protocol,
        "speaker_dependent": speaker_dependent(protocol) if protocol else None,
        "overlapping_splits": overlapping_splits(protocol),
    }


def corpus_text(p: Mapping) -> str:
    """``emodb``, or ``iemocap (synthetic)``: a corpus as a short console name.

    Parentheses, not brackets: console lines go through rich, which would take ``[synthetic]``
    for markup and drop it.
    """
    return p["corpus"] + (" (synthetic)" if p.get("synthetic") else "")


def label_set_text(label_set: str | None, classes: Sequence[str]) -> str:
    """``4class (neutral, happy, sad, angry)``: the spec and the classes it resolved to."""
    listed = ", ".join(classes)
    return listed if not label_set or label_set == ",".join(classes) else f"{label_set} ({listed})"


def protocol_text(p: Mapping) -> str:
    """``loso (speaker-independent)`` or ``xu2021 (speaker-dependent: speakers appear in train and test)``."""
    dep = p.get("speaker_dependent")
    flag = {True: SPEAKER_DEPENDENT_NOTE, False: "speaker-independent", None: ""}[dep]
    return f"{p['protocol']} ({flag})" if flag else str(p["protocol"])


def info_rows(p: Mapping, prefix: str = "") -> dict[str, str]:
    """Fact-table lines of a provenance dict: corpus (with the synthetic warning), label set, protocol."""
    corpus = p["corpus"] + (f": {SYNTHETIC_NOTE}" if p.get("synthetic") else "")
    out = {f"{prefix}corpus": corpus, f"{prefix}label set": label_set_text(p.get("label_set"), p["classes"])}
    if p.get("protocol"):
        out[f"{prefix}protocol"] = protocol_text(p)
    return out


def notes(*provenances: Mapping) -> list[str]:
    """The warnings a reader must see beside the numbers.

    Synthetic data, speaker-dependent protocols, and "folds" that are overlapping random splits
    (``xu2021``). A provenance whose ``speaker_dependent`` is ``None`` has no split of its own (a
    cross-corpus score), so neither protocol note applies to it.
    """
    out: list[str] = []
    for p in provenances:
        if p.get("synthetic"):
            out.append(f"corpus {p['corpus']} is {SYNTHETIC_NOTE}")
        if p.get("speaker_dependent"):
            out.append(f"protocol {p['protocol']} is {SPEAKER_DEPENDENT_NOTE}")
            if _overlapping(p):
                out.append(f"protocol {p['protocol']} runs {_n_splits(p)} {RANDOM_SPLITS_NOTE}")
    return list(dict.fromkeys(out))


def with_notes(line: str, extra: Sequence[str] | None) -> str:
    """``line``, then each note on its own indented line (a console summary)."""
    return "\n".join([line, *(f"  note: {n}" for n in extra or ())])


def console_line(report: Mapping, where: str | os.PathLike | None = None) -> str:
    """Console summary of a run report: its test scores and where each comes from.

    The corpus, the label set with its classes, the protocol and fold (a random split, not a fold,
    under ``xu2021``), how the model was chosen, then the report's notes (synthetic data,
    speaker-dependent protocol, overlapping random splits) on their own lines.
    """
    t, p = report["test"], report["provenance"]
    sel = report.get("selected_epoch")
    how = f"epoch {sel} chosen on dev" if sel is not None else "fitted on the train part"
    line = (
        f"test WA {100 * t['wa']:.2f} %, UA {100 * t['ua']:.2f} % on {corpus_text(p)}, "
        f"label set {label_set_text(p.get('label_set'), p['classes'])}, protocol {protocol_text(p)}, "
        f"{split_text(p, report['fold'], report['test_group'])}, {how}"
    )
    return with_notes(line + (f"; report {where}" if where else ""), report.get("notes"))

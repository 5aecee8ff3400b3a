"""The manifest: one table type (a pandas DataFrame) for every corpus.

One row per utterance. Required columns, in order:

=============  =====================================================================
utt_id         unique id (IEMOCAP's ``Ses01F_impro01_F000``, a file stem elsewhere)
path           audio file; relative paths in a CSV are relative to the CSV's folder
corpus         loader name (``iemocap``, ``ravdess``, ...)
speaker        speaker id, unique across the corpus (``Ses01F``, ``ravdess_07``)
session        recording session / group ("" if the corpus has none)
gender         ``F``, ``M`` or ""
label          canonical label (:data:`areaser.data.labels.CANONICAL`), or a corpus' own lower-case label
raw_label      the corpus' own label string
duration_s     seconds, from the file header
improvised     True / False / <NA> (IEMOCAP only)
source_id      for an augmented copy, the ``utt_id`` of its source; else ""
=============  =====================================================================

Extra columns are kept as they are.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from areaser.core.errors import AreaserError
from areaser.data.labels import LabelSet
from areaser.io.files import atomic_write_text

__all__ = [
    "COLUMNS",
    "ManifestError",
    "make_manifest",
    "read_manifest",
    "write_manifest",
    "validate_manifest",
    "select_classes",
    "count_table",
]

COLUMNS: tuple[str, ...] = (
    "utt_id",
    "path",
    "corpus",
    "speaker",
    "session",
    "gender",
    "label",
    "raw_label",
    "duration_s",
    "improvised",
    "source_id",
)
_STR_COLUMNS = ("utt_id", "path", "corpus", "speaker", "session", "gender", "label", "raw_label", "source_id")


class ManifestError(AreaserError, ValueError):
    """A manifest that cannot be used; ``problems`` lists every defect found."""

    def __init__(self, where: str, problems: list[str]):
        self.problems = problems
        shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"{where}: {len(problems)} problem(s): {shown}")


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA if col == "improvised" else (np.nan if col == "duration_s" else "")
    for col in _STR_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    df["duration_s"] = pd.to_numeric(df["duration_s"], errors="coerce").astype(float)
    df["improvised"] = df["improvised"].map(_to_bool).astype("boolean")
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra].reset_index(drop=True)


def _to_bool(v: object) -> object:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or v == "":
        return pd.NA
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    return pd.NA


def make_manifest(records: Iterable[Mapping[str, object]] | pd.DataFrame) -> pd.DataFrame:
    """Build a manifest from row dicts (or a DataFrame), filling absent columns."""
    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    if df.empty and not len(df.columns):
        df = pd.DataFrame(columns=list(COLUMNS))
    return _normalise(df)


def validate_manifest(df: pd.DataFrame, check_files: bool = True) -> list[str]:
    """Return a list of problems (empty if the manifest is sound).

    Checks: required columns, empty ids, duplicate ids, empty or upper-case labels, and (with
    ``check_files``) audio files that do not exist.
    """
    problems: list[str] = []
    missing_cols = [c for c in ("utt_id", "path", "label") if c not in df.columns]
    if missing_cols:
        return [f"missing required column(s) {missing_cols}"]
    if (df["utt_id"] == "").any():
        problems.append(f"{int((df['utt_id'] == '').sum())} row(s) with an empty utt_id")
    dup = df["utt_id"][df["utt_id"].duplicated(keep=False) & (df["utt_id"] != "")]
    if len(dup):
        problems.append(f"duplicate utt_id(s): {', '.join(sorted(set(dup))[:5])}")
    bad = sorted({str(x) for x in df["label"] if not str(x) or str(x) != str(x).strip().lower()})
    if bad:
        problems.append(f"label(s) {bad} are empty or not lower case (labels are lower-case words)")
    if check_files:
        absent = [p for p in df["path"] if not os.path.isfile(p)]
        if absent:
            problems.append(f"{len(absent)} audio file(s) missing, e.g. {absent[0]}")
    return problems


def read_manifest(path: str | os.PathLike, check_files: bool = True) -> pd.DataFrame:
    """Read a manifest CSV, resolve relative paths, validate; raise :class:`ManifestError`."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        what = "a folder, not a manifest CSV" if path.is_dir() else "file not found"
        raise ManifestError(str(path), [what + where])
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise ManifestError(str(path), [f"not a readable CSV ({e})"]) from None
    if "utt_id" not in raw.columns or "path" not in raw.columns or "label" not in raw.columns:
        raise ManifestError(str(path), [f"not a manifest: needs columns utt_id, path, label (has {list(raw.columns)})"])
    df = make_manifest(raw)
    base = path.resolve().parent
    relative = [not os.path.isabs(p) for p in df["path"]]
    df["path"] = [str(base / p) if rel else p for p, rel in zip(df["path"], relative)]
    problems = validate_manifest(df, check_files=check_files)
    if check_files and any(rel and not os.path.isfile(p) for p, rel in zip(df["path"], relative)):
        # the usual mistake: paths written relative to another folder than the CSV's
        note = f" (relative paths are read from the manifest's folder {base}, not from the current folder)"
        problems = [q + note if "audio file(s) missing" in q else q for q in problems]
    if problems:
        raise ManifestError(str(path), problems)
    return df


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV atomically; audio paths under the CSV's folder are stored relative."""
    path = Path(path)
    out = make_manifest(df)
    base = path.resolve().parent

    def rel(p: str) -> str:
        try:
            return str(Path(p).resolve().relative_to(base))
        except ValueError:
            return str(Path(p).resolve())

    out["path"] = [rel(p) for p in out["path"]]
    out["improvised"] = out["improvised"].map(lambda v: "" if v is pd.NA else str(bool(v)).lower())
    buf = io.StringIO()
    out.to_csv(buf, index=False, float_format="%.4f")
    return atomic_write_text(path, buf.getvalue())


def select_classes(df: pd.DataFrame, label_set: LabelSet) -> pd.DataFrame:
    """Rows whose label the task uses, with a ``class`` column (class name) and ``y`` (index)."""
    cls = df["label"].map(label_set.map)
    out = df[cls.notna()].copy()
    out["class"] = cls[cls.notna()].astype(str)
    out["y"] = out["class"].map(label_set.index).astype(int)
    return out.reset_index(drop=True)


def count_table(df: pd.DataFrame, by: str, column: str = "label") -> pd.DataFrame:
    """Counts of ``column`` values per ``by`` value, with a ``total`` row and column."""
    tab = pd.crosstab(df[by], df[column], margins=True, margins_name="total")
    return tab

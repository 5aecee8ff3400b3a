"""Any other corpus: a folder per label, or a CSV of ``path,label[,speaker]``.

Folder layout: ``ROOT/<label>/**/*.wav``; the utterance id is the path under ROOT
without the extension, and speaker is "" (use the CSV form to give speakers).
CSV layout: ``path,label[,speaker]`` with or without a header line; with a header
(first cell ``path``) the optional columns ``speaker``, ``session``, ``gender``
and ``utt_id`` are read by name. Paths are relative to the CSV's folder. Common
label spellings (``anger``, ``ang``, ``Happiness``, ``joy``, ``pleasant surprise``)
map to the canonical vocabulary; single letters are too ambiguous and are not
accepted. A file with an unknown label is skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..labels import CANONICAL
from .base import CorpusError, CorpusScan, check_root, collect, find_wavs

SYNONYMS: dict[str, tuple[str, ...]] = {
    "neutral": ("neu", "neut", "neutrality"),
    "happy": ("hap", "happiness", "joy", "joyful", "happy_joy"),
    "excited": ("exc", "excitement"),
    "sad": ("sadness", "unhappy"),
    "angry": ("ang", "anger", "mad"),
    "fear": ("fea", "fearful", "afraid", "scared"),
    "disgust": ("dis", "disgusted"),
    "surprise": ("sur", "surprised", "ps", "pleasant_surprise", "pleasant_surprised"),
    "calm": ("calmness",),
    "boredom": ("bored", "bor"),
    "frustration": ("fru", "frustrated"),
    "other": ("oth",),
    "undecided": ("xxx",),
}
ALIASES = {alias: canon for canon, names in SYNONYMS.items() for alias in (canon, *names)}
assert set(SYNONYMS) == set(CANONICAL)  # every canonical label has its entry
LAYOUT = "ROOT/<label>/<file>.wav folders, or a CSV of path,label[,speaker]"


def canonical_label(raw: str) -> str | None:
    """Canonical label for a spelling such as ``Anger``, ``happiness`` or ``pleasant surprise``."""
    return ALIASES.get(raw.strip().lower().replace("-", "_").replace(" ", "_"))


def _unknown(raw: str) -> str:
    return f"unknown label {raw!r} (known: {', '.join(CANONICAL)} and common spellings)"


def _row(uid: str, raw: str, speaker: str = "", session: str = "", gender: str = "") -> dict[str, object] | str:
    label = canonical_label(raw)
    if label is None:
        return _unknown(raw)
    gender = gender.strip().upper()[:1] if gender.strip() else ""
    return {"utt_id": uid, "speaker": speaker, "session": session, "gender": gender, "label": label, "raw_label": raw}


def _folder_items(root: Path) -> list[tuple[Path, dict[str, object] | str]]:
    items = []
    for path in find_wavs(root, LAYOUT):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            items.append((path, "not inside a label folder"))
        else:
            items.append((path, _row(rel.with_suffix("").as_posix(), rel.parts[0])))
    return items


def _read_csv(csv: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(csv, header=None, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as e:
        raise CorpusError(csv, f"not a readable CSV ({e}); expected {LAYOUT}") from None
    if len(table) and str(table.iloc[0, 0]).strip().lower() == "path":  # header line
        table.columns = [str(c).strip().lower() for c in table.iloc[0]]
        table = table.iloc[1:]
        if "label" not in table.columns:
            raise CorpusError(csv, f"header has no 'label' column (has {list(table.columns)})")
    elif table.shape[1] in (2, 3):
        table.columns = ["path", "label", "speaker"][: table.shape[1]]
    else:
        raise CorpusError(csv, f"{table.shape[1]} columns; expected path,label[,speaker]")
    if table.empty:
        raise CorpusError(csv, "no rows; expected path,label[,speaker] lines")
    return table


def _csv_items(csv: Path) -> list[tuple[Path, dict[str, object] | str]]:
    base = csv.parent
    items = []
    for rec in _read_csv(csv).to_dict("records"):
        path = base / rec["path"]
        uid = rec.get("utt_id") or Path(rec["path"]).with_suffix("").as_posix()
        items.append((path, _row(uid, rec["label"], rec.get("speaker", ""), rec.get("session", ""),
                                 rec.get("gender", ""))))
    return items


def load(root: str | os.PathLike, *, progress: bool = True, check_silent: bool = True) -> CorpusScan:
    """Scan a folder-per-label tree or a ``path,label[,speaker]`` CSV (``root`` is the CSV file)."""
    path = Path(root).expanduser()
    if path.is_file():
        path, items = path.resolve(), _csv_items(path.resolve())
    else:
        path = check_root(root)
        items = _folder_items(path)
    return collect(path, "generic", items, len(items), {}, LAYOUT,
                   progress=progress, check_silent=check_silent, require_match=False)

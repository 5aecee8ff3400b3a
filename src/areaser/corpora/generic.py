"""Any other corpus: a folder per label, or a CSV of ``path,label[,speaker]``.

Folder layout: ``ROOT/<label>/**/<file>``, every audio file soundfile reads (``.wav``,
``.flac``, ``.ogg``, ...); the utterance id is the path under ROOT without the extension.
Speaker is "" unless ``speaker_regex`` finds it in that path (``(?P<speaker>...)`` or
group 1; ``--speaker-regex`` on the command line), as speaker-independent protocols need.
CSV layout: ``path,label[,speaker]`` with or without a header line; with a header
(first cell ``path``) the optional columns ``speaker``, ``session``, ``gender``
and ``utt_id`` are read by name. Paths are relative to the CSV's folder. Common
label spellings (``anger``, ``ang``, ``Happiness``, ``joy``, ``pleasant surprise``)
map to the canonical vocabulary; single letters are too ambiguous to map. Any other
label is kept as its own lower-case label (``Contempt`` -> ``contempt``, ``raw_label``
keeps the original), and the scan warns once which labels were not in the vocabulary.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ..labels import CANONICAL
from .base import CorpusError, CorpusScan, check_root, collect, find_audio

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
LAYOUT = "ROOT/<label>/<audio file> folders, or a CSV of path,label[,speaker]"


def canonical_label(raw: str) -> str | None:
    """Canonical label for a spelling such as ``Anger``, ``happiness`` or ``pleasant surprise``."""
    return ALIASES.get(raw.strip().lower().replace("-", "_").replace(" ", "_"))


def _row(uid: str, raw: str, speaker: str = "", session: str = "", gender: str = "") -> dict[str, object] | str:
    if not raw.strip():
        return "empty label"
    label = canonical_label(raw) or raw.strip().lower()  # an unknown label is its own label
    gender = gender.strip().upper()[:1] if gender.strip() else ""
    return {"utt_id": uid, "speaker": speaker, "session": session, "gender": gender, "label": label, "raw_label": raw}


def compile_speaker_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled; ValueError if it is invalid or has no group to take the speaker from."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"speaker regex {pattern!r} is not a valid regular expression ({e})") from None
    if not regex.groups:
        raise ValueError(f"speaker regex {pattern!r} has no group; mark the speaker as (?P<speaker>...) or (...)")
    return regex


def _speaker(regex: re.Pattern[str], rel: str) -> str:
    """The speaker ``regex`` finds in the relative path ``rel``; "" if none (no match, empty group)."""
    m = regex.search(rel)
    if m is None:
        return ""
    return (m["speaker"] if "speaker" in regex.groupindex else m[1]) or ""


def _folder_items(root: Path, speaker_regex: re.Pattern[str] | None) -> list[tuple[Path, dict[str, object] | str]]:
    items: list[tuple[Path, dict[str, object] | str]] = []
    for path in find_audio(root, LAYOUT):
        rel = path.relative_to(root)
        speaker = _speaker(speaker_regex, rel.as_posix()) if speaker_regex is not None else ""
        if len(rel.parts) < 2:
            items.append((path, "not inside a label folder"))
        elif speaker_regex is not None and not speaker:
            items.append((path, f"no speaker: the path does not match speaker regex {speaker_regex.pattern!r}"))
        else:
            items.append((path, _row(rel.with_suffix("").as_posix(), rel.parts[0], speaker)))
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
        items.append(
            (path, _row(uid, rec["label"], rec.get("speaker", ""), rec.get("session", ""), rec.get("gender", "")))
        )
    return items


def unknown_label_warning(manifest: pd.DataFrame) -> list[str]:
    """One warning naming the labels outside the vocabulary, with their counts; [] if none."""
    unknown = manifest[~manifest["label"].isin(CANONICAL)]
    if unknown.empty:
        return []
    counts = unknown["label"].value_counts().sort_index()
    listed = ", ".join(
        f"{label} {int(n):,}" for label, n in counts.items()
    )  # int(): a plain number, never a numpy repr
    return [
        f"generic: {len(counts)} label(s) not in the vocabulary, kept as their own labels: {listed} "
        f"(known: {', '.join(CANONICAL)} and common spellings)"
    ]


def load(
    root: str | os.PathLike,
    *,
    progress: bool = True,
    check_silent: bool = True,
    speaker_regex: str | None = None,
) -> CorpusScan:
    """Scan a folder-per-label tree or a ``path,label[,speaker]`` CSV (``root`` is the CSV file).

    Parameters
    ----------
    root : the folder holding one folder per label, or the CSV file.
    progress, check_silent : as for every loader (:mod:`areaser.corpora`).
    speaker_regex : folder layout only: a regex searched in each file's path relative to
        ``root`` (``/``-separated, label folder included); its group ``speaker``, else group 1,
        is the speaker. A file whose path does not match is skipped with the reason.
        ValueError if invalid, without a group, or given with a CSV (which has a speaker column).
    """
    path = Path(root).expanduser()
    if path.is_file():
        if speaker_regex is not None:
            raise ValueError("speaker regex is for the folder layout; a CSV gives speakers in its speaker column")
        path, items = path.resolve(), _csv_items(path.resolve())
    else:
        regex = compile_speaker_regex(speaker_regex) if speaker_regex is not None else None
        path = check_root(root)
        items = _folder_items(path, regex)
    scan = collect(
        path,
        "generic",
        items,
        len(items),
        {},
        LAYOUT,
        progress=progress,
        check_silent=check_silent,
        require_match=False,
    )
    scan.warnings += unknown_label_warning(scan.manifest)
    return scan

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

Nothing under a label folder vanishes: audio soundfile cannot read, broken links, link loops
and every other file except hidden files and transcripts, annotations and docs
(:data:`~.base.COMPANION_EXTENSIONS`: ``.txt``, ``.csv``, ``.md``, ``.json``, ...) are skipped
entries with the reason. A CSV is decoded by its byte-order mark (UTF-8, UTF-16; warned);
a bad row is a skipped entry ``CSV:LINE`` naming the cell (``empty path cell``, a wrong
number of cells), a gender cell that is not F/M/female/male is a warning naming file, line
and column (the gender is left empty), and so are header columns areaser does not read.
"""

from __future__ import annotations

import csv as csvlib
import io
import os
import re
from pathlib import Path

import pandas as pd

from areaser.data.corpora.base import CorpusError, CorpusScan, Skipped, check_root, collect, find_audio, read_text
from areaser.data.labels import CANONICAL

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
    return {"utt_id": uid, "speaker": speaker, "session": session, "gender": gender, "label": label, "raw_label": raw}


GENDERS = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M", "": ""}
CSV_COLUMNS = ("path", "label", "speaker", "session", "gender", "utt_id")  # the columns read by name


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


def _folder_items(
    root: Path, speaker_regex: re.Pattern[str] | None, other: list[Skipped]
) -> list[tuple[Path, dict[str, object] | str]]:
    """``(audio file, row or skip reason)`` under ``root``; files that are not audio go to ``other``."""
    items: list[tuple[Path, dict[str, object] | str]] = []
    for path in find_audio(root, LAYOUT, skipped=other, list_other=True):
        rel = path.relative_to(root)
        speaker = _speaker(speaker_regex, rel.as_posix()) if speaker_regex is not None else ""
        if len(rel.parts) < 2:
            items.append((path, "not inside a label folder"))
        elif speaker_regex is not None and not speaker:
            items.append((path, f"no speaker: the path does not match speaker regex {speaker_regex.pattern!r}"))
        else:
            items.append((path, _row(rel.with_suffix("").as_posix(), rel.parts[0], speaker)))
    return items


def _read_csv(csv: Path, warnings: list[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The column names of ``csv`` and its data rows as ``(line number, cells)``.

    Read with the csv module rather than pandas so that every row keeps its line number for
    the messages. Rows with fewer cells than columns are padded with "" (trailing optional
    cells may be left out); blank lines are dropped. :class:`CorpusError` for a file that is
    not CSV or has no usable header or rows, naming the line.
    """
    try:
        text = read_text(csv, warnings)
    except OSError as e:
        raise CorpusError(csv, f"cannot be read ({e.strerror or e})") from None
    reader = csvlib.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        rows += ((reader.line_num, cells) for cells in reader if cells)
    except csvlib.Error as e:
        raise CorpusError(csv, f"line {reader.line_num}: not a readable CSV ({e}); expected {LAYOUT}") from None
    if not rows:
        raise CorpusError(csv, "no rows; expected path,label[,speaker] lines")
    first_line, first = rows[0]
    if first[0].strip().lower() == "path":  # header line
        columns = [c.strip().lower() for c in first]
        rows = rows[1:]
        if "label" not in columns:
            raise CorpusError(csv, f"line {first_line}: header has no 'label' column (has {columns})")
        unread = [c for c in columns if c not in CSV_COLUMNS]
        if unread:
            warnings.append(
                f"{csv}:{first_line}: column(s) {', '.join(map(repr, unread))} not read "
                f"(areaser reads {', '.join(CSV_COLUMNS)})"
            )
    elif len(first) in (2, 3):
        columns = ["path", "label", "speaker"][: len(first)]
    else:
        raise CorpusError(csv, f"{len(first)} columns; expected path,label[,speaker] (line {first_line})")
    if not rows:
        raise CorpusError(csv, "no rows; expected path,label[,speaker] lines")
    return columns, rows


def _csv_items(csv: Path, warnings: list[str]) -> list[tuple[Path, dict[str, object] | str]]:
    """``(audio file, row or skip reason)`` per CSV row; a row that names no file is ``(CSV:LINE, reason)``."""
    base = csv.parent
    columns, rows = _read_csv(csv, warnings)
    items: list[tuple[Path, dict[str, object] | str]] = []
    for line, cells in rows:
        where = Path(f"{csv}:{line}")
        if len(cells) > len(columns):
            items.append((where, f"{len(cells)} cells; expected {len(columns)} ({','.join(columns)})"))
            continue
        rec = dict(zip(columns, [c.strip() for c in cells] + [""] * (len(columns) - len(cells))))
        if not rec["path"]:
            items.append((where, "empty path cell"))
            continue
        gender = GENDERS.get(rec.get("gender", "").lower())
        if gender is None:
            warnings.append(f"{csv}:{line}: gender cell {rec['gender']!r} is not F, M, female or male; left empty")
            gender = ""
        uid = rec.get("utt_id") or Path(rec["path"]).with_suffix("").as_posix()
        row = _row(uid, rec["label"], rec.get("speaker", ""), rec.get("session", ""), gender)
        items.append((base / rec["path"], row))
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
    progress, check_silent : as for every loader (:mod:`areaser.data.corpora`).
    speaker_regex : folder layout only: a regex searched in each file's path relative to
        ``root`` (``/``-separated, label folder included); its group ``speaker``, else group 1,
        is the speaker. A file whose path does not match is skipped with the reason.
        ValueError if invalid, without a group, or given with a CSV (which has a speaker column).
    """
    path = Path(root).expanduser()
    warnings: list[str] = []
    other: list[Skipped] = []  # folder layout: what is under the label folders but not audio
    if path.is_file():
        if speaker_regex is not None:
            raise ValueError("speaker regex is for the folder layout; a CSV gives speakers in its speaker column")
        path, items = path.resolve(), _csv_items(path.resolve(), warnings)
    else:
        regex = compile_speaker_regex(speaker_regex) if speaker_regex is not None else None
        path = check_root(root)
        items = _folder_items(path, regex, other)
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
    scan.skipped += other
    scan.warnings[:0] = warnings  # the CSV's own problems first
    scan.warnings += unknown_label_warning(scan.manifest)
    return scan

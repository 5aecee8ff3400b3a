"""Shared pieces of the corpus loaders: the scan result, file probing, count checks.

A loader turns a user's local copy of a corpus into a manifest (one row per
usable utterance) and never crashes on a defective copy: every file it cannot
use becomes a :class:`Skipped` entry with the reason, and a count that differs
from the documented full corpus becomes a warning (subsets are legitimate).
Audio is any file soundfile reads (:data:`AUDIO_EXTENSIONS`): copies are often
converted (RAVDESS as FLAC, say), so no loader insists on ``.wav``. Nothing under the
root vanishes silently: broken symbolic links, link loops and audio formats soundfile
cannot read are skipped entries too (:func:`find_audio`).
"""

from __future__ import annotations

import codecs
import io
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd
import soundfile as sf
from rich.console import Console
from rich.progress import track as rich_track

from areaser.core.errors import AreaserError
from areaser.data.manifest import make_manifest
from areaser.io.audio import BROKEN_LINK, LINK_LOOP, SILENCE_PEAK, AudioError, AudioInfo, audio_info, link_problem
from areaser.io.files import file_digest

__all__ = [
    "Skipped",
    "CorpusScan",
    "CorpusError",
    "APPLEDOUBLE",
    "SILENT",
    "DUPLICATE",
    "BROKEN_LINK",
    "LINK_LOOP",
    "AUDIO_EXTENSIONS",
    "UNREADABLE_AUDIO_EXTENSIONS",
    "COMPANION_EXTENSIONS",
    "NotInCorpus",
    "check_root",
    "is_audio",
    "link_problem",
    "find_audio",
    "read_text",
    "probe",
    "track",
    "check_counts",
    "same_as",
    "with_same_as",
    "scan_files",
    "collect",
]

T = TypeVar("T")

# macOS copies carry "._name" AppleDouble files next to every real file. They are
# reported as skipped (not hidden) so the user sees why the file count is off.
APPLEDOUBLE = "macOS metadata file (._*), not audio"
SILENT = "silent: every sample is zero"
# Constant reasons group well in a summary; the copy in use is in the manifest.
DUPLICATE = "duplicate utterance id (an earlier usable file with the same id is used)"

# File name extension -> the soundfile format that reads it. Only formats this
# libsndfile build has are kept (MP3 needs libsndfile >= 1.1).
_EXTENSION_FORMATS = {
    ".wav": "WAV",
    ".wave": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".opus": "OGG",
    ".mp3": "MP3",
    ".aif": "AIFF",
    ".aiff": "AIFF",
    ".aifc": "AIFF",
    ".au": "AU",
    ".snd": "AU",
    ".caf": "CAF",
    ".w64": "W64",
    ".rf64": "RF64",
}
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    ext for ext, fmt in _EXTENSION_FORMATS.items() if fmt in sf.available_formats()
)
# Audio that libsndfile cannot decode: reported by name (convert it) rather than ignored.
UNREADABLE_AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".m4a", ".m4b", ".aac", ".wma", ".amr", ".awb", ".ape", ".wv", ".ac3", ".mka", ".alac", ".mpc", ".tta"}
    | {ext for ext in _EXTENSION_FORMATS if ext not in AUDIO_EXTENSIONS}  # e.g. .mp3 before libsndfile 1.1
)
# Files a corpus folder holds beside its audio (transcripts, annotations, docs, metadata).
# generic lists every other non-audio file as skipped; listing these too would bury the real
# defects under one entry per transcript and make every clean copy look damaged.
COMPANION_EXTENSIONS: frozenset[str] = frozenset(
    {".txt", ".csv", ".tsv", ".md", ".rst", ".json", ".jsonl", ".yaml", ".yml", ".xml", ".html", ".htm"}
    | {".pdf", ".lab", ".textgrid", ".trn", ".log", ".ini", ".cfg"}
)
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})  # and hidden ".*" files (.DS_Store)


class NotInCorpus(str):
    """A :data:`Parser`'s skip reason for a file outside the corpus (a RAVDESS song in a speech copy).

    A plain ``str`` reason means "this name does not parse": possibly a damaged corpus file,
    so it counts against the documented full-corpus counts. A ``NotInCorpus`` reason is
    listed as skipped just the same but not counted, so a complete copy with extra material
    beside it does not look incomplete.
    """

    __slots__ = ()


@dataclass(frozen=True)
class Skipped:
    """A file a loader could not use, and why."""

    path: str
    reason: str


@dataclass
class CorpusScan:
    """What a loader found: the manifest of usable utterances, skipped files, warnings."""

    manifest: pd.DataFrame
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class CorpusError(AreaserError, ValueError):
    """The root does not exist or does not hold the corpus' layout."""

    def __init__(self, root: str | os.PathLike, expected: str):
        self.root = str(root)
        super().__init__(f"{root}: {expected}")


def check_root(root: str | os.PathLike) -> Path:
    """``root`` as an absolute Path; :class:`CorpusError` if it is not a folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise CorpusError(root, "does not exist")
    if not path.is_dir():
        raise CorpusError(root, "is not a folder")
    return path.resolve()


def is_audio(path: Path) -> bool:
    """True if ``path``'s extension, in any letter case, is one of :data:`AUDIO_EXTENSIONS`."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _walk(root: Path, depth: int | None, problems: list[Skipped]) -> list[Path]:
    """Every entry but folders ``depth`` levels below ``root`` (any level if ``None``).

    Linked folders are followed (pathlib's ``**`` skips them, so a linked ``Actor_01`` would
    vanish); a folder link back to one of its own ancestors is a loop, listed in ``problems``.
    """
    found: list[Path] = []

    def visit(folder: Path, level: int, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            problems.append(Skipped(str(folder), f"folder cannot be read ({e.strerror or type(e).__name__})"))
            return
        for entry in entries:
            try:
                st = entry.stat() if entry.is_dir() else None  # follows links: a linked folder is a folder
            except OSError:  # a link loop: is_dir() raises ELOOP
                st = None
            if st is None:
                if depth is None or level == depth:
                    found.append(Path(entry.path))
            elif depth is None or level < depth:
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    problems.append(Skipped(entry.path, LINK_LOOP))
                else:
                    visit(Path(entry.path), level + 1, ancestors | {key})

    if root.is_dir():
        st = root.stat()
        visit(root, 1, frozenset({(st.st_dev, st.st_ino)}))
    return found


def _is_companion(path: Path) -> bool:
    name = path.name.lower()
    return name.startswith(".") or name in _SYSTEM_FILES or path.suffix.lower() in COMPANION_EXTENSIONS


def find_audio(
    root: Path,
    expected: str | None = None,
    pattern: str = "**/*",
    *,
    skipped: list[Skipped] | None = None,
    list_other: bool = False,
) -> list[Path]:
    """Every file under ``root`` that is audio or looks like it, sorted; what else is wrong to ``skipped``.

    Returned: files with an :data:`AUDIO_EXTENSIONS` extension, and, so that the loader parses
    their names and :func:`probe` gives the reason, broken links and link loops with such an
    extension and files in formats soundfile cannot read (:data:`UNREADABLE_AUDIO_EXTENSIONS`).

    Parameters
    ----------
    root : folder to search; folders reached through symbolic links are searched too.
    expected : the layout, for the error; with it, finding no file raises
        :class:`CorpusError` (the root holds no corpus). ``None`` returns ``[]`` instead,
        for a loader that searches several folders and reports empty ones itself.
    pattern : ``"**/*"`` (the default) searches every sub-folder; ``"*/*"`` (one ``*`` per
        level) only files exactly that many levels down.
    skipped : if given, receives the entries that are not returned but must not vanish:
        broken links and link loops of any other name (folder links included) and folders
        that cannot be read; with ``list_other`` also every other file except hidden files and
        :data:`COMPANION_EXTENSIONS` (reason ``not an audio file extension (.xyz)``).
    list_other : for a layout where every file should be audio (generic's label folders);
        the named corpora ship transcripts and label files of their own beside the audio.
    """
    parts = pattern.split("/")
    if pattern == "**/*":
        depth = None
    elif all(p == "*" for p in parts):
        depth = len(parts)
    else:
        raise ValueError(f"unsupported pattern {pattern!r}; use '**/*' or '*', '*/*', ...")
    problems: list[Skipped] = []
    found = []
    for path in _walk(root, depth, problems):
        ext = path.suffix.lower()
        link = link_problem(path)
        if ext in AUDIO_EXTENSIONS or ext in UNREADABLE_AUDIO_EXTENSIONS:
            if link or path.is_file():
                found.append(path)
            else:
                problems.append(Skipped(str(path), "not a regular file (a device, pipe or socket)"))
        elif link:
            problems.append(Skipped(str(path), link))
        elif list_other and not _is_companion(path):
            problems.append(
                Skipped(
                    str(path), f"not an audio file extension ({ext})" if ext else "not an audio file (no extension)"
                )
            )
    if skipped is not None:
        skipped += sorted(problems, key=lambda s: s.path)
    if not found and expected is not None:
        raise CorpusError(root, f"no audio files (.wav, .flac, .ogg, ...) found; expected {expected}")
    return sorted(found)


# (byte-order mark, codec, what to call it); UTF-32 LE before UTF-16 LE, whose BOM it starts with
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32 LE"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32 BE"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8 with a byte-order mark"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16 BE"),
)


def read_text(path: Path, warnings: list[str]) -> str:
    r"""The text of ``path`` (newlines as ``\n``), decoded by its byte-order mark, else as UTF-8.

    Label files re-saved on Windows start with a BOM or are UTF-16; read as plain UTF-8 their
    first (or every) line would silently fail to parse. Without a BOM, NUL bytes mean UTF-16
    (ASCII text has one in every other byte, even or odd). One line in ``warnings`` names the
    file when it is not plain UTF-8, or when bytes could not be decoded (they become U+FFFD).
    OSError if the file cannot be read.
    """
    data = path.read_bytes()
    encoding, name = "utf-8", ""
    for bom, codec, what in _BOMS:
        if data.startswith(bom):
            encoding, name = codec, what
            break
    else:
        if b"\x00" in data:
            le = data[1::2].count(0) >= data[0::2].count(0)
            encoding = "utf-16-le" if le else "utf-16-be"
            name = f"UTF-16 {'LE' if le else 'BE'} without a byte-order mark (guessed from its NUL bytes)"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        text = data.decode(encoding, errors="replace")
        warnings.append(
            f"{path}: not valid {name or 'UTF-8'}: undecodable bytes (the first at byte {e.start}) read as U+FFFD, "
            "lines holding them may be ignored"
        )
    else:
        if name:
            warnings.append(f"{path}: read as {name}, not plain UTF-8")
    return io.StringIO(text, newline=None).read()  # universal newlines, as open() gives


NOT_FINITE = "contains NaN or infinite samples"


def _silence_or_nan(path: Path) -> str | None:
    """:data:`SILENT`, :data:`NOT_FINITE` or ``None`` (usable).

    Stops at the first block holding a non-zero finite sample, so a normal file costs one short
    read; only a silent file is read to the end. NaN compares false with everything, so it is
    tested for first: a NaN file is not "silent".
    """
    with sf.SoundFile(str(path)) as f:
        for block in f.blocks(blocksize=16384, dtype="float32"):
            if not block.size:
                continue
            if not np.isfinite(block).all():
                return NOT_FINITE
            if float(np.max(np.abs(block))) >= SILENCE_PEAK:
                return None
    return SILENT


def probe(path: Path, check_silent: bool = True) -> AudioInfo | str:
    """Header facts of ``path``, or the reason it cannot be used.

    Reasons: macOS ``._*`` file, broken link or link loop, audio format soundfile cannot
    read, Git LFS pointer, empty or unreadable file (from :func:`areaser.io.audio.audio_info`),
    and with ``check_silent`` digital silence (every sample below :data:`areaser.io.audio.SILENCE_PEAK`).
    """
    if path.name.startswith("._"):
        return APPLEDOUBLE
    link = link_problem(path)
    if link is not None:
        return link
    if path.suffix.lower() in UNREADABLE_AUDIO_EXTENSIONS and path.is_file():
        return f"audio format soundfile cannot read ({path.suffix}): convert it, e.g. to .flac"
    try:
        info = audio_info(path)
        reason = _silence_or_nan(path) if check_silent else None
        if reason is not None:
            return reason
    except AudioError as e:
        return e.reason
    except Exception as e:  # libsndfile can fail mid-file on a truncated copy
        return f"cannot decode audio ({type(e).__name__}: {e})"
    return info


def track(items: Iterable[T], description: str, progress: bool, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on stderr when ``progress`` is true."""
    if not progress:
        yield from items
        return

    yield from rich_track(items, description=description, total=total, transient=True, console=Console(stderr=True))


def check_counts(corpus: str, found: Mapping[str, int], expected: Mapping[str, int]) -> list[str]:
    """One warning if ``found`` differs from the documented full-corpus ``expected`` counts."""
    if all(found.get(k, 0) == v for k, v in expected.items()):
        return []

    def fmt(counts: Mapping[str, int]) -> str:
        return ", ".join(f"{k} {counts.get(k, 0):,}" for k in expected)

    return [
        f"{corpus}: found {fmt(found)}; a complete copy has {fmt(expected)} "
        "(fine for a subset, otherwise the copy is incomplete)"
    ]


def same_as(paths: Sequence[str], ids: Sequence[str]) -> list[str]:
    """For each file, the id of the first earlier file with the same bytes, else "".

    Corpora hold byte-identical recordings under different ids (RAVDESS Actor_07);
    a protocol keeps such utterances on one side of a split. Sizes are compared first
    and only files that share a size are hashed, so a scan reads almost nothing more.
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        by_size[os.path.getsize(path)].append(i)
    out = [""] * len(paths)
    for group in (g for g in by_size.values() if len(g) > 1):
        first: dict[bytes, str] = {}
        for i in group:  # in input order, so the earliest file of a set is the one named
            earlier = first.setdefault(file_digest(paths[i]), ids[i])
            out[i] = "" if earlier == ids[i] else earlier
    return out


# parse(path) -> row fields (utt_id, speaker, session, gender, label, raw_label, ...) or a skip
# reason: a str (unparseable, counted as a corpus file) or a NotInCorpus (outside it, not counted)
Parser = Callable[[Path], "dict[str, object] | str"]


def scan_files(
    root: str | os.PathLike,
    corpus: str,
    parse: Parser,
    expected: Mapping[str, int],
    layout: str,
    *,
    progress: bool = True,
    check_silent: bool = True,
) -> CorpusScan:
    """Load a corpus whose facts are all in its file names (every corpus but IEMOCAP).

    Every audio file under ``root`` is parsed by ``parse`` and the rest is :func:`collect`'s;
    broken links and link loops of other names are skipped entries too (:func:`find_audio`).
    """
    root = check_root(root)
    other: list[Skipped] = []
    files = find_audio(root, layout, skipped=other)
    scan = collect(
        root,
        corpus,
        ((p, parse(p)) for p in files),
        len(files),
        expected,
        layout,
        progress=progress,
        check_silent=check_silent,
    )
    scan.skipped += other
    return scan


def collect(
    root: Path,
    corpus: str,
    items: Iterable[tuple[Path, "dict[str, object] | str"]],
    n_items: int,
    expected: Mapping[str, int],
    layout: str,
    *,
    progress: bool = True,
    check_silent: bool = True,
    require_match: bool = True,
) -> CorpusScan:
    """Turn ``(path, parsed row or skip reason)`` pairs into a :class:`CorpusScan`.

    Each file is probed (:func:`probe`); the first usable file of an utterance id
    wins and later copies are skipped as duplicates. A usable file whose bytes equal
    an earlier one's keeps its own id and names that one in the extra manifest column
    ``same_as`` (:func:`same_as`; "" for every other file). ``expected`` holds the documented full
    counts: ``"files"`` (distinct utterances plus files whose names do not parse; a
    :class:`NotInCorpus` reason is not counted) and optionally per raw label. With
    ``require_match``, :class:`CorpusError` if no name parses at all (the root holds some other corpus).
    """
    records: list[dict[str, object]] = []
    skipped: list[Skipped] = []
    used: set[str] = set()  # ids already in the manifest
    raw_labels: dict[str, str] = {}  # every parsed id (usable or not) -> raw label, for the counts
    n_unparsed = 0
    for path, row in track(items, f"scanning {corpus}", progress, total=n_items):
        if path.name.startswith("._"):
            skipped.append(Skipped(str(path), APPLEDOUBLE))
            continue
        if isinstance(row, str):
            skipped.append(Skipped(str(path), str(row)))
            n_unparsed += not isinstance(row, NotInCorpus)  # outside the corpus: not a missing corpus file
            continue
        uid = str(row["utt_id"])
        raw_labels[uid] = str(row["raw_label"])
        if uid in used:
            skipped.append(Skipped(str(path), DUPLICATE))
            continue
        info = probe(path, check_silent)
        if isinstance(info, str):
            skipped.append(Skipped(str(path), info))
            continue
        used.add(uid)
        records.append({**row, "path": str(path), "corpus": corpus, "duration_s": info.duration_s})
    if require_match and not raw_labels:
        raise CorpusError(root, f"none of its {n_items} files is a {corpus} utterance; expected {layout}")
    found = {"files": len(raw_labels) + n_unparsed, **Counter(raw_labels.values())}
    return CorpusScan(with_same_as(records), skipped, check_counts(corpus, found, expected))


def with_same_as(records: list[dict[str, object]]) -> pd.DataFrame:
    """The manifest of ``records`` (usable files, in scan order) with its ``same_as`` column."""
    manifest = make_manifest(records)
    manifest["same_as"] = same_as(list(manifest["path"]), list(manifest["utt_id"]))
    return manifest

"""Shared pieces of the corpus loaders: the scan result, file probing, count checks.

A loader turns a user's local copy of a corpus into a manifest (one row per
usable utterance) and never crashes on a defective copy: every file it cannot
use becomes a :class:`Skipped` entry with the reason, and a count that differs
from the documented full corpus becomes a warning (subsets are legitimate).
Audio is any file soundfile reads (:data:`AUDIO_EXTENSIONS`): copies are often
converted (RAVDESS as FLAC, say), so no loader insists on ``.wav``.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd
import soundfile as sf

from ..audio import SILENCE_PEAK, AudioError, AudioInfo, audio_info
from ..fileio import file_digest
from ..manifest import make_manifest

__all__ = [
    "Skipped",
    "CorpusScan",
    "CorpusError",
    "APPLEDOUBLE",
    "SILENT",
    "DUPLICATE",
    "AUDIO_EXTENSIONS",
    "check_root",
    "is_audio",
    "find_audio",
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


class CorpusError(ValueError):
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


def find_audio(root: Path, expected: str | None = None, pattern: str = "**/*") -> list[Path]:
    """Every audio file (:func:`is_audio`) matching ``pattern`` under ``root``, sorted.

    Parameters
    ----------
    root : folder to search.
    expected : the layout, for the error; with it, finding no file raises
        :class:`CorpusError` (the root holds no corpus). ``None`` returns ``[]`` instead,
        for a loader that searches several folders and reports empty ones itself.
    pattern : glob under ``root``; the default searches every sub-folder.
    """
    found = sorted(p for p in root.glob(pattern) if is_audio(p) and p.is_file())
    if not found and expected is not None:
        raise CorpusError(root, f"no audio files (.wav, .flac, .ogg, ...) found; expected {expected}")
    return found


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

    Reasons: macOS ``._*`` file, Git LFS pointer, empty or unreadable file
    (from :func:`areaser.audio.audio_info`), and with ``check_silent`` digital
    silence (every sample below :data:`areaser.audio.SILENCE_PEAK`).
    """
    if path.name.startswith("._"):
        return APPLEDOUBLE
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
    from rich.console import Console
    from rich.progress import track as rich_track

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


# parse(path) -> row fields (utt_id, speaker, session, gender, label, raw_label, ...) or a skip reason
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

    Every audio file under ``root`` is parsed by ``parse`` and the rest is :func:`collect`'s.
    """
    root = check_root(root)
    files = find_audio(root, layout)
    return collect(
        root,
        corpus,
        ((p, parse(p)) for p in files),
        len(files),
        expected,
        layout,
        progress=progress,
        check_silent=check_silent,
    )


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
    counts: ``"files"`` (distinct utterances plus files whose names do not parse)
    and optionally per raw label. With ``require_match``, :class:`CorpusError` if no
    name parses at all (the root holds some other corpus).
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
            skipped.append(Skipped(str(path), row))
            n_unparsed += 1
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

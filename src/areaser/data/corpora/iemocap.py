"""IEMOCAP_full_release: labels from the EmoEvaluation files, audio from sentences/wav.

Layout (``root`` is the folder holding ``Session1`` .. ``Session5``; only those exact names are
read, and any other ``Session*`` folder, such as ``Session1 (copy)`` or ``Session6``, is a skipped
entry)::

    Session{1..5}/sentences/wav/<dialog>/<utterance>.wav   any audio extension (.wav, .WAV, .flac, ...)
    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt        only *.txt directly in that folder

A label line is ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``;
header (``%``), annotator (``C-E1:``, ``A-E2:``, ...) and blank lines are ignored. A label file
is decoded by its byte-order mark (UTF-8, UTF-16, UTF-32; warned, as are undecodable bytes); a
malformed label line is a warning naming the file, the line and the field that is wrong.
Speaker ``Ses01F`` = session + the letter before the utterance number (not the
dialog's letter, which says who leads the dialog); improvised if the dialog name
holds ``impro``. Skipped, with the reason: label lines whose audio is missing, audio
files without a label line or with an unparseable name, a second file of the same
utterance (``X.wav`` and ``X.flac``), ``._*`` files, LFS pointers, unreadable and
silent audio. Byte-identical files are marked in the ``same_as`` column.

Duplicate label lines (an EmoEvaluation file may hold an utterance's summary line twice):
identical repeats (same utterance, same label) are collapsed silently; conflicting ones
(same utterance, another label, in one file or across files) are a warning naming the
file and the utterance, and the FIRST label read is kept (files in sorted order).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from areaser.data.corpora.base import (
    APPLEDOUBLE,
    DUPLICATE,
    CorpusError,
    CorpusScan,
    Skipped,
    check_counts,
    check_root,
    find_audio,
    probe,
    read_text,
    track,
    with_same_as,
)
from areaser.io.audio import AudioInfo, link_problem

RAW_TO_CANONICAL = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "sad": "sad",
    "ang": "angry",
    "fru": "frustration",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
    "oth": "other",
    "xxx": "undecided",
}
# Documented counts of a complete copy: the standard 4-class raw labels over all sessions.
EXPECTED = {"total": 5531, "neu": 1708, "ang": 1103, "sad": 1084, "hap": 595, "exc": 1041}

UTT_RE = re.compile(r"^(?P<dialog>Ses(?P<ses>\d\d)[FM]_\w+)_(?P<spk>[FM])(?P<num>\d{3})$")
LINE_RE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s*$")
# The same line, loosely: to say which field of a line LINE_RE refuses is wrong.
LOOSE_RE = re.compile(r"^(?P<span>\[[^\]]*\]?)\s*(?P<uid>[^\s\[]*)\s*(?P<raw>[^\s\[]*)\s*(?P<vad>.*)$")
SPAN_RE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]$")
VAD_RE = re.compile(r"^\[[^\]]*\]$")
LAYOUT = "IEMOCAP_full_release with Session1..Session5 folders (sentences/wav audio files, dialog/EmoEvaluation)"
SESSIONS = tuple(f"Session{i}" for i in range(1, 6))
NOT_A_SESSION = "not one of Session1..Session5 (a copy?), not read"


def _sessions(root: Path, skipped: list[Skipped]) -> list[Path]:
    """``root``'s Session1..Session5 folders; other ``Session*`` folders go to ``skipped``.

    A copy such as ``Session1 (copy)`` or a stray ``Session6`` would otherwise be read as
    more of the corpus, and its files could stand in for the real session's in the manifest.
    """

    def candidates(folder: Path) -> list[Path]:  # any letter case: "session1" is reported, not ignored
        return sorted(
            p for p in folder.iterdir() if p.name.lower().startswith("session") and (p.is_dir() or p.is_symlink())
        )

    found = candidates(root)
    if not found and (root / "IEMOCAP_full_release").is_dir():  # the folder above the release
        found = candidates(root / "IEMOCAP_full_release")
    if not found:
        raise CorpusError(root, f"no Session* folders; expected {LAYOUT}")
    sessions = []
    for p in found:
        why = NOT_A_SESSION if p.name not in SESSIONS else link_problem(p)
        if why is None:
            sessions.append(p)
        else:
            skipped.append(Skipped(str(p), why))
    if not sessions:
        names = ", ".join(p.name for p in found)
        raise CorpusError(root, f"no Session1..Session5 folder (only {names}, not read); expected {LAYOUT}")
    return sessions


def _malformed(line: str) -> str:
    """What is wrong with a label line :data:`LINE_RE` refused, naming the field."""
    m = LOOSE_RE.match(line)
    if m is None or not line.startswith("["):
        return f"not [<start> - <end>] <utterance id> <label> [<V>, <A>, <D>]: {line[:60]!r}"
    if not SPAN_RE.match(m["span"]):
        return f"field 'start - end time' is {m['span'][:30]!r}, not [<start> - <end>] in seconds"
    if not m["uid"]:
        return "field 'utterance id' is missing"
    if not m["raw"]:
        return f"field 'label' is missing (after utterance id {m['uid']!r})"
    if not m["vad"].strip():
        return "field 'V/A/D' is missing"
    if not VAD_RE.match(m["vad"].strip()):
        return f"field 'V/A/D' is {m['vad'].strip()[:30]!r}, not [<V>, <A>, <D>]"
    return f"not [<start> - <end>] <utterance id> <label> [<V>, <A>, <D>]: {line[:60]!r}"


def read_labels(txt: Path, skipped: list[Skipped], warnings: list[str]) -> dict[str, str]:
    """``{utterance id: raw label}`` from one EmoEvaluation file.

    Duplicate summary lines of one utterance: a repeat with the same label is collapsed
    silently; a repeat with another label is a warning naming the file, line and utterance,
    and the FIRST label is kept. The file is decoded by :func:`~.base.read_text` (BOMs,
    UTF-16; a warning if it is not plain UTF-8). OSError if it cannot be read.
    """
    labels: dict[str, str] = {}
    for n, line in enumerate(read_text(txt, warnings).split("\n"), 1):
        if line.startswith("\ufeff"):  # a BOM inside the file (files pasted together): the line is still read
            warnings.append(f"{txt}:{n}: byte-order mark at the start of the line ignored")
            line = line.lstrip("\ufeff")
        if not line.startswith("["):  # header, annotator and blank lines
            continue
        m = LINE_RE.match(line.strip())
        if not m:
            warnings.append(f"{txt}:{n}: malformed label line ignored: {_malformed(line.strip())}")
            continue
        uid, raw = m.group(3), m.group(4)
        if not UTT_RE.match(uid):
            skipped.append(Skipped(f"{txt}:{n}", f"unparseable utterance id {uid!r}"))
        elif raw not in RAW_TO_CANONICAL:
            skipped.append(Skipped(f"{txt}:{n}", f"unknown label {raw!r}"))
        elif uid in labels:
            if raw != labels[uid]:  # an identical repeat says nothing new: collapsed silently
                warnings.append(
                    f"{txt}:{n}: {uid} labelled twice with different labels "
                    f"({labels[uid]!r}, then {raw!r}), first label kept"
                )
        else:
            labels[uid] = raw
    return labels


def _first_usable(files: list[Path], check_silent: bool, skipped: list[Skipped]) -> tuple[Path, AudioInfo] | None:
    """The first of an utterance's ``files`` that :func:`probe` finds usable; the others go to ``skipped``."""
    chosen = None
    for path in files:
        info = DUPLICATE if chosen is not None else probe(path, check_silent)
        if isinstance(info, str):
            skipped.append(Skipped(str(path), info))
        else:
            chosen = (path, info)
    return chosen


def load(root: str | os.PathLike, *, progress: bool = True, check_silent: bool = True) -> CorpusScan:
    """Scan an IEMOCAP_full_release copy; see the module docstring for what is skipped."""
    root = check_root(root)
    skipped: list[Skipped] = []
    warnings: list[str] = []
    labels: dict[str, tuple[str, Path]] = {}  # uid -> (raw label, label file)
    wavs: dict[str, list[Path]] = {}  # uid -> its audio files (normally one)
    for sess in _sessions(root, skipped):
        evaluation = sess / "dialog" / "EmoEvaluation"
        if not evaluation.is_dir():
            warnings.append(f"{sess}: no dialog/EmoEvaluation folder, its utterances have no labels")
        for txt in sorted(evaluation.glob("*.txt")):  # not recursive: Categorical/, Attribute/ hold other files
            if txt.name.startswith("._"):
                skipped.append(Skipped(str(txt), APPLEDOUBLE))
                continue
            try:
                file_labels = read_labels(txt, skipped, warnings)
            except OSError as e:  # a broken link or an unreadable file: its labels are missing
                skipped.append(Skipped(str(txt), link_problem(txt) or f"label file cannot be read ({e.strerror})"))
                continue
            for uid, raw in file_labels.items():
                if uid in labels and labels[uid][0] != raw:
                    warnings.append(
                        f"{txt}: {uid} labelled {raw!r} here but {labels[uid][0]!r} in "
                        f"{labels[uid][1]}, first label kept"
                    )
                labels.setdefault(uid, (raw, txt))
        for wav in find_audio(sess / "sentences" / "wav", pattern="*/*", skipped=skipped):
            if wav.name.startswith("._"):
                skipped.append(Skipped(str(wav), APPLEDOUBLE))
            elif not UTT_RE.match(wav.stem):
                skipped.append(Skipped(str(wav), "unparseable name: expected <dialog>_<F|M><NNN>.wav"))
            else:
                wavs.setdefault(wav.stem, []).append(wav)
    if not labels:
        raise CorpusError(root, f"no label lines in Session*/dialog/EmoEvaluation/*.txt; expected {LAYOUT}")

    skipped += [
        Skipped(str(w), "no label line in EmoEvaluation")
        for u, files in sorted(wavs.items())
        if u not in labels
        for w in files
    ]
    records = []
    for uid in track(sorted(labels), "scanning iemocap", progress):
        raw, txt = labels[uid]
        m = UTT_RE.match(uid)
        assert m is not None  # read_labels only keeps parseable ids
        if uid not in wavs:
            expected_wav = txt.parent.parent.parent / "sentences" / "wav" / m["dialog"] / f"{uid}.wav"
            skipped.append(Skipped(str(expected_wav), "wav missing (the utterance has a label line)"))
            continue
        usable = _first_usable(wavs[uid], check_silent, skipped)
        if usable is None:
            continue
        wav, info = usable
        records.append(
            {
                "utt_id": uid,
                "path": str(wav),
                "corpus": "iemocap",
                "speaker": f"Ses{m['ses']}{m['spk']}",
                "session": f"Ses{m['ses']}",
                "gender": m["spk"],
                "label": RAW_TO_CANONICAL[raw],
                "raw_label": raw,
                "duration_s": info.duration_s,
                "improvised": "impro" in m["dialog"],
            }
        )
    found = Counter(raw for raw, _ in labels.values() if raw in EXPECTED)
    found["total"] = sum(found.values())
    warnings += check_counts("iemocap 4-class labels", found, EXPECTED)
    return CorpusScan(with_same_as(records), skipped, warnings)

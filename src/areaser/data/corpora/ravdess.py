"""RAVDESS, speech part: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (48 kHz), or any audio file so named.

Converted copies are common (e.g. 16 kHz FLAC: ``03-01-05-01-02-01-01.flac``).

Fields: modality (03 audio), vocal channel (01 speech, 02 song: skipped, and not counted
against the full-corpus counts, so speech and song copies side by side still count as
complete), emotion, intensity, statement, repetition, actor 01-24 (odd = male). A name
with a wrong field value is skipped with a reason naming the field. Speaker ids are
``ravdess_07``; no sessions. 1,440 speech files in a complete copy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from areaser.data.corpora.base import CorpusScan, NotInCorpus, scan_files

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
EXPECTED = {"files": 1440, "01": 96, **{e: 192 for e in EMOTIONS if e != "01"}}
NAME_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
LAYOUT = "Actor_XX/MM-VV-EE-II-SS-RR-AA audio files (e.g. Actor_01/03-01-05-01-02-01-01.wav or .flac)"
_TWO = ("01", "02")
# (field, its allowed values) in name order; modality is any two digits (03 audio-only, as before)
FIELDS = (
    ("modality", None),
    ("vocal channel", _TWO),
    ("emotion", tuple(EMOTIONS)),
    ("intensity", _TWO),
    ("statement", _TWO),
    ("repetition", _TWO),
    ("actor", tuple(f"{a:02d}" for a in range(1, 25))),
)
SONG = "song (vocal channel 02), not part of the speech corpus"


def parse(path: Path) -> dict[str, object] | str:
    m = NAME_RE.match(path.stem)
    if not m:
        return f"unparseable name: expected {LAYOUT}"
    for (field, allowed), value in zip(FIELDS, m.groups()):
        if allowed is not None and value not in allowed:
            return f"unparseable name: {field} field {value!r} is not {allowed[0]}-{allowed[-1]}; expected {LAYOUT}"
    if m[2] != "01":
        return NotInCorpus(SONG)
    actor = int(m[7])
    return {
        "utt_id": path.stem,
        "speaker": f"ravdess_{actor:02d}",
        "gender": "M" if actor % 2 else "F",
        "label": EMOTIONS[m[3]],
        "raw_label": m[3],
    }


def load(root: str | os.PathLike, *, progress: bool = True, check_silent: bool = True) -> CorpusScan:
    """Scan a RAVDESS speech copy (``Audio_Speech_Actors_01-24`` or the folder above it)."""
    return scan_files(root, "ravdess", parse, EXPECTED, LAYOUT, progress=progress, check_silent=check_silent)

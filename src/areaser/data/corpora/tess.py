"""TESS: ``<SPK>_<word>_<emotion>.wav`` (e.g. ``OAF_back_angry.wav``, 24,414 Hz), or any audio file so named.

Speakers OAF and YAF (both female), speaker ids ``tess_OAF``; no sessions.
Folder names vary between copies, so labels come from the file name only
(case-insensitive). Some copies hold the whole set twice in nested folders: the
second copy of a file is skipped as a duplicate. 2,800 files in a complete copy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from areaser.data.corpora.base import CorpusScan, scan_files

EMOTIONS = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "ps": "surprise",
    "sad": "sad",
}
EXPECTED = {"files": 2800}
NAME_RE = re.compile(r"^(OAF|YAF)_([A-Za-z]+)_([A-Za-z]+)$", re.IGNORECASE)
LAYOUT = "<OAF|YAF>_<word>_<emotion> audio files (e.g. OAF_back_angry.wav)"


def parse(path: Path) -> dict[str, object] | str:
    m = NAME_RE.match(path.stem)
    if not m:
        return f"unparseable name: expected {LAYOUT}"
    if m[3].lower() not in EMOTIONS:
        return f"unparseable name: emotion field {m[3]!r} is not one of {' '.join(EMOTIONS)}; expected {LAYOUT}"
    spk, word, emo = m[1].upper(), m[2].lower(), m[3].lower()
    return {
        "utt_id": f"{spk}_{word}_{emo}",
        "speaker": f"tess_{spk}",
        "gender": "F",
        "label": EMOTIONS[emo],
        "raw_label": emo,
    }


def load(root: str | os.PathLike, *, progress: bool = True, check_silent: bool = True) -> CorpusScan:
    """Scan a TESS copy (any folder structure; labels from file names)."""
    return scan_files(root, "tess", parse, EXPECTED, LAYOUT, progress=progress, check_silent=check_silent)

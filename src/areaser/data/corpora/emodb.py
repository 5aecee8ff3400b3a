"""EmoDB (Berlin): ``wav/SSTTTEV.wav`` (e.g. ``03a01Fa.wav``, 16 kHz), or any audio file so named.

SS speaker, TTT text, E emotion (W anger, L boredom, E disgust, A fear, F
happiness, T sadness, N neutral), V version. Speaker ids are ``emodb_03`` with
the documented genders; no sessions. 535 files in a complete copy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from areaser.data.corpora.base import CorpusScan, scan_files

EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral"}
GENDERS = {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M", "12": "M", "13": "F", "14": "F", "15": "M", "16": "F"}
TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
EXPECTED = {"files": 535}
NAME_RE = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")
LAYOUT = "wav/SSTTTEV audio files (e.g. wav/03a01Fa.wav)"


def parse(path: Path) -> dict[str, object] | str:
    m = NAME_RE.match(path.stem)
    if not m:
        return f"unparseable name: expected {LAYOUT}"
    for field, value, allowed in (("speaker", m[1], GENDERS), ("text", m[2], TEXTS), ("emotion", m[3], EMOTIONS)):
        if value not in allowed:
            return f"unparseable name: {field} field {value!r} is not one of {' '.join(allowed)}; expected {LAYOUT}"
    return {
        "utt_id": path.stem,
        "speaker": f"emodb_{m[1]}",
        "gender": GENDERS[m[1]],
        "label": EMOTIONS[m[3]],
        "raw_label": m[3],
    }


def load(root: str | os.PathLike, *, progress: bool = True, check_silent: bool = True) -> CorpusScan:
    """Scan an EmoDB copy (the ``wav`` folder or the one above it)."""
    return scan_files(root, "emodb", parse, EXPECTED, LAYOUT, progress=progress, check_silent=check_silent)

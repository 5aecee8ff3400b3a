"""CREMA-D: ``AudioWAV/AAAA_SSS_EEE_LL.wav`` (e.g. ``1001_DFA_ANG_XX.wav``, 16 kHz), or any audio file so named.

Actor 1001-1091, sentence code, emotion ANG DIS FEA HAP NEU SAD, intensity LO MD
HI XX. Speaker ids are ``cremad_1001``; the names carry no gender or session
(both ""). Circulating copies have defects that are skipped with the reason: Git
LFS pointers, the misnamed ``1040_ITH_SAD_X.wav``, and digitally silent files
(found cheaply: reading stops at the first non-zero sample). 7,442 files in a
complete copy, counting the misnamed one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from areaser.data.corpora.base import CorpusScan, scan_files

EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
EXPECTED = {"files": 7442}
NAME_RE = re.compile(r"^(1\d{3})_([A-Z]{3})_([A-Z]{3})_(LO|MD|HI|XX)$")
MISNAMED_RE = re.compile(r"^1\d{3}_[A-Z]{3}_[A-Z]{3}_X$")
LAYOUT = "AudioWAV/AAAA_SSS_EEE_LL audio files (e.g. AudioWAV/1001_DFA_ANG_XX.wav)"


def parse(path: Path) -> dict[str, object] | str:
    m = NAME_RE.match(path.stem)
    if not m:
        if MISNAMED_RE.match(path.stem):
            return "misnamed: intensity 'X' (a known CREMA-D defect), expected LO/MD/HI/XX"
        return f"unparseable name: expected {LAYOUT}"
    if m[3] not in EMOTIONS:
        return f"unparseable name: emotion field {m[3]!r} is not one of {' '.join(EMOTIONS)}; expected {LAYOUT}"
    return {"utt_id": path.stem, "speaker": f"cremad_{m[1]}", "label": EMOTIONS[m[3]], "raw_label": m[3]}


def load(root: str | os.PathLike, *, progress: bool = True, check_silent: bool = True) -> CorpusScan:
    """Scan a CREMA-D copy (the ``AudioWAV`` folder or the one above it)."""
    return scan_files(root, "cremad", parse, EXPECTED, LAYOUT, progress=progress, check_silent=check_silent)

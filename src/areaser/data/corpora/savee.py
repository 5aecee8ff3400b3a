"""SAVEE: ``AudioData/<SPK>/<emo><NN>.wav`` or flat ``<SPK>_<emo><NN>.wav`` (44.1 kHz), any audio format.

Speakers DC JE JK KL (all male), speaker ids ``savee_DC``; no sessions. Emotions
a anger, d disgust, f fear, h happiness, n neutral, sa sadness, su surprise.
Utterance ids are ``DC_a01`` in both layouts. 480 files in a complete copy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from areaser.data.corpora.base import CorpusScan, scan_files

EMOTIONS = {"a": "angry", "d": "disgust", "f": "fear", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprise"}
EXPECTED = {"files": 480}
SPEAKERS = ("DC", "JE", "JK", "KL")
FLAT_RE = re.compile(r"^(DC|JE|JK|KL)_(sa|su|a|d|f|h|n)(\d\d)$")
NESTED_RE = re.compile(r"^(sa|su|a|d|f|h|n)(\d\d)$")
LAYOUT = "AudioData/<DC|JE|JK|KL>/<emo><NN> or <SPK>_<emo><NN> audio files (e.g. AudioData/DC/a01.wav)"


def parse(path: Path) -> dict[str, object] | str:
    m = FLAT_RE.match(path.stem)
    if m:
        spk, emo, num = m.groups()
    elif (n := NESTED_RE.match(path.stem)) and path.parent.name in SPEAKERS:
        spk, (emo, num) = path.parent.name, n.groups()
    else:
        return f"unparseable name: expected {LAYOUT}"
    return {
        "utt_id": f"{spk}_{emo}{num}",
        "speaker": f"savee_{spk}",
        "gender": "M",
        "label": EMOTIONS[emo],
        "raw_label": emo,
    }


def load(root: str | os.PathLike, *, progress: bool = True, check_silent: bool = True) -> CorpusScan:
    """Scan a SAVEE copy in either layout."""
    return scan_files(root, "savee", parse, EXPECTED, LAYOUT, progress=progress, check_silent=check_silent)

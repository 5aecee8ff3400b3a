"""Inputs of inference: audio files, folders and list files expanded into paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from areaser.data.manifest import read_manifest

# what a folder search picks up: the extensions of the formats libsndfile reads
AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64 .sph .nist .voc".split()
)
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Turn command-line inputs into audio paths, in order.

    A folder gives every audio file under it (recursively, sorted, by :data:`AUDIO_SUFFIXES`);
    a ``.txt``/``.lst``/``.list`` file is a list of paths, one a line (``#`` comments, relative
    paths from the list's folder); a ``.csv`` file is a manifest (its ``path`` column). Anything
    else, and a folder without audio, is taken as an audio path, even if it does not exist: scoring
    it reports the problem.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        suffix = p.suffix.lower()
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file() and not f.name.startswith(".")
            )
            # a folder without audio (one named x.wav, say) stays an input: it gets its error row, the rest is scored
            out.extend(found or [p])
        elif suffix in LIST_SUFFIXES and p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    out.append(q if q.is_absolute() else p.parent / q)
        elif suffix == ".csv" and p.is_file():
            out.extend(Path(x) for x in read_manifest(p, check_files=False)["path"])
        else:
            out.append(p)
    return out

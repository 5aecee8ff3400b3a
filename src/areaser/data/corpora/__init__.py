"""Corpus loaders: a user's local copy of a corpus -> a manifest (one row per utterance).

.. code-block:: python

    scan = load_corpus("iemocap", "/data/IEMOCAP_full_release")
    scan.manifest    # areaser.data.manifest.COLUMNS, canonical labels
    scan.skipped     # [Skipped(path, reason), ...]: files that could not be used
    scan.warnings    # e.g. counts that differ from the documented full corpus

Every loader takes ``root`` plus the options ``progress`` (rich bar on stderr,
default True) and ``check_silent`` (skip digitally silent files, default True).
Each module's docstring gives the layout and naming it reads (the real ones),
what it skips, and how its speaker ids are formed.
"""

from __future__ import annotations

import os
from typing import Callable

from areaser.core.registry import Registry
from areaser.data.corpora import cremad, emodb, generic, iemocap, ravdess, savee, tess
from areaser.data.corpora.base import CorpusError, CorpusScan, Skipped

__all__ = ["CORPORA", "load_corpus", "CorpusScan", "Skipped", "CorpusError"]

CORPORA: Registry[Callable[..., CorpusScan]] = Registry(
    "corpus",
    {
        "iemocap": iemocap.load,
        "ravdess": ravdess.load,
        "cremad": cremad.load,
        "emodb": emodb.load,
        "tess": tess.load,
        "savee": savee.load,
        "generic": generic.load,
    },
)


def load_corpus(name: str, root: str | os.PathLike, **options: object) -> CorpusScan:
    """Scan ``root`` with the loader ``name`` (``crema-d`` and ``CREMA_D`` also find ``cremad``).

    Raises ValueError for an unknown name (listing the names) and
    :class:`CorpusError` (a ValueError) for a missing root or the wrong layout.
    """
    key = name.lower().replace("-", "").replace("_", "")
    return CORPORA.lookup(key if key in CORPORA else name)(root, **options)

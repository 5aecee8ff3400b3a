"""Shared fixtures. Everything is real: real audio, real code, fixed seeds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Keep the suite predictable on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def builtin_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built-in (synthetic, IEMOCAP-layout) corpus; its manifest is ``root/manifest.csv``."""
    from areaser.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("builtin")
    synthesize(root, SynthConfig(n_utterances=60, seed=0), progress=False)
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

"""Shared fixtures. Everything is real: real audio, real code, fixed seeds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# librosa's numba kernels are compiled into a cache; several fresh processes compiling the same kernel at
# once leave a mismatched cache that crashes every later process with a segmentation fault (numba issue
# 10128; seen here in pyin's gufuncs with pytest-xdist workers on a fresh install). So the controller
# compiles them once (pytest_configure, below) before any worker starts, and the workers only read them.
# The cache is this suite's own (a worker inherits the controller's environment, so the variable is set
# once, here), away from the user's librosa cache.
os.environ.setdefault(
    "NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"areaser-test-numba-{getattr(os, 'getuid', lambda: 0)()}")
)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Keep the suite predictable: 2 threads in one process, 1 per worker when pytest-xdist runs one per core.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


def pytest_configure(config: pytest.Config) -> None:
    """Compile librosa's kernels that the suite uses (pYIN, YIN, STFT, spectral features) in the controller."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import librosa

    from areaser.models.baselines import prosodic_features

    y = np.sin(np.linspace(0, 2000, 8000)).astype(np.float32)
    prosodic_features(y)
    librosa.yin(y, fmin=65, fmax=600, sr=16000)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small-tensor tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on a busy machine every parallel region waits for a descheduled thread, and tiny tensors gain nothing."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def builtin_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built-in (synthetic, IEMOCAP-layout) corpus; its manifest is ``root/manifest.csv``."""
    from areaser.builtin.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("builtin")
    synthesize(root, SynthConfig(n_utterances=60, seed=0), progress=False)
    return root


# The paper's model (2 x 2 areas) shrunk to train an epoch in seconds; modules override epochs and the like.
TINY_PAPER = {
    "model_overrides": {"channels": [4, 4, 8, 8, 8], "max_area": [2, 2]},
    "features": {"n_mels": 32, "hop_length": 800},
    "epochs": 1,
    "batch_size": 16,
    "lr": 3e-3,
    "patience": None,
    "progress": False,
    "tensorboard": False,
    "threads": 1,
}
# A CNN small enough to train an epoch in seconds; what it predicts does not matter to the tests using it.
TINY_CNN = {
    "model": "cnn",
    "model_overrides": {"channels": [4, 4, 4, 4, 4]},
    "features": {"n_mels": 32, "hop_length": 800},
    "epochs": 1,
    "batch_size": 16,
    "patience": None,
    "progress": False,
    "tensorboard": False,
    "threads": 1,
}


@pytest.fixture(scope="session")
def tiny_cnn() -> dict:
    """The config keys of :data:`TINY_CNN` (a fresh copy: a test may change it)."""
    import copy

    return copy.deepcopy(TINY_CNN)


@pytest.fixture(scope="session")
def tiny_run(builtin_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 1-epoch run of :data:`TINY_CNN` on the built-in corpus, trained once per session.

    Shared by every module that only reads a run (predict, export, serve, listen): copy it before
    changing anything in it.
    """
    from areaser.runs.config import config_with
    from areaser.train.lifecycle import train

    cfg = config_with(
        None, manifest=str(builtin_corpus / "manifest.csv"), out_dir=str(tmp_path_factory.mktemp("runs")), name="m",
        **TINY_CNN,
    )  # fmt: skip
    train(cfg, log=None)
    return Path(cfg.out_dir) / "m"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

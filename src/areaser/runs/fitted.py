"""A fitted classical baseline saved in a run directory (safetensors + JSON, no pickles) and read back."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from areaser.io.files import read_json
from areaser.models.baselines import (
    FEATURE_NAMES,
    BaselineConfig,
    FittedClassifier,
    extract_features,
    fit_classifier,
    get_baseline,
    is_baseline,
    prosodic_features,
)
from areaser.runs.checkpoint import CheckpointError, load_tree, save_tree
from areaser.runs.config import TrainConfig

# ----------------------------------------------------------------------------- a fitted baseline, kept

# Why training features, not the classifier: a fitted sklearn pipeline can only be saved by
# pickle (not allowed here: loading must not run code), and re-implementing the imputer,
# scaler, logistic regression and the calibrated SVM's predict_proba by hand would be a second
# implementation of sklearn's. Fitting is deterministic (lbfgs and libsvm, unshuffled
# calibration folds), so ``fit_classifier`` on the stored features and labels rebuilds the very
# classifier the run scored, without the audio and without the slow pitch tracking. The test
# part's features are kept too, so a run killed before its report is completed without
# extracting them again.
FIT_FILE = "baseline.safetensors"


@dataclass
class FittedBaseline:
    """A trained baseline run, ready to score new utterances (see :data:`FIT_FILE`).

    ``x_train`` ``[N, len(FEATURE_NAMES)]`` and ``y_train`` ``[N]`` are the run's training
    features and class indices; ``x_test`` ``[M, len(FEATURE_NAMES)]`` its test part's features
    (``None`` in a fit written before they were kept); ``classes`` its classes; ``header`` the
    stored JSON (``config``, ``fold``, ``train_ids``, ``test_ids``, ``baseline``, ``features``).
    """

    classes: tuple[str, ...]
    cfg: BaselineConfig
    sr: int
    x_train: np.ndarray
    y_train: np.ndarray
    header: dict
    x_test: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def classifier(self) -> FittedClassifier:
        """The classifier the run scored, fitted once from the stored training features."""
        return fit_classifier(self.x_train, self.y_train, len(self.classes), self.cfg)

    def features(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Functionals ``[len(waves), len(FEATURE_NAMES)]`` of mono waveforms ``[N_i]`` at :attr:`sr`."""
        rows = [prosodic_features(np.asarray(w, dtype=np.float32), self.sr, self.cfg) for w in waves]
        return np.stack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)))

    def predict_proba(self, paths: Sequence[str | os.PathLike], progress: bool = False) -> np.ndarray:
        """Class probabilities ``[len(paths), len(classes)]`` of the classifier the run fitted."""
        return self.classifier.predict_proba(extract_features(paths, self.cfg, self.sr, progress=progress))


def is_baseline_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` is a run directory of a classical baseline (``config.json`` names one, or a fit is there)."""
    d = Path(run_dir)
    if not d.is_dir():
        return False
    if (d / FIT_FILE).is_file():
        return True
    cfg = d / "config.json"
    try:
        model = read_json(cfg, CheckpointError).get("model") if cfg.is_file() else None
    except (CheckpointError, AttributeError):  # not a training config: not a run directory this can judge
        return False
    return isinstance(model, str) and is_baseline(model)


def _save_fit(run_dir, config, prep, x_train: np.ndarray, bcfg: BaselineConfig, x_test: np.ndarray):
    """Write :data:`FIT_FILE`: the fold's training features and labels, its test features, the config."""
    train, test = prep.parts["train"], prep.parts["test"]
    tensors = {
        "x_train": torch.from_numpy(np.array(x_train, dtype=np.float64)),  # copies: writable, contiguous
        "y_train": torch.from_numpy(np.array(train["y"], dtype=np.int64)),
        "x_test": torch.from_numpy(np.array(x_test, dtype=np.float64).reshape(len(test), len(FEATURE_NAMES))),
    }
    header = {
        "config": config.to_dict(),
        "classes": list(prep.classes),
        "fold": prep.fold.name,
        "train_ids": list(train["utt_id"]),
        "test_ids": list(test["utt_id"]),
        "baseline": asdict(bcfg),
        "features": list(FEATURE_NAMES),
    }
    return save_tree(os.path.join(run_dir, FIT_FILE), tensors, header)


def load_fitted(run_dir: str | os.PathLike) -> FittedBaseline:
    """The fit of a baseline run directory.

    Raises :class:`areaser.runs.checkpoint.CheckpointError` (one line, says what to do) when it is absent or was made
    with other settings or features.
    """
    path = Path(run_dir) / FIT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: not found; a baseline run stores its fit since cross-corpus scoring "
            "came in: train it again (areaser train ... --restart)"
        )
    tree, header = load_tree(path)
    c = TrainConfig.from_dict(header["config"])
    bcfg = get_baseline(c.model, seed=c.seed)
    if header.get("features") != list(FEATURE_NAMES) or header.get("baseline") != asdict(bcfg):
        raise CheckpointError(
            f"{path}: fitted with other features or baseline settings than this version's; train it again (--restart)"
        )
    x_test = tree["x_test"].numpy() if "x_test" in tree else None
    return FittedBaseline(
        tuple(header["classes"]),
        bcfg,
        c.features.sr,
        tree["x_train"].numpy(),
        tree["y_train"].numpy(),
        header,
        x_test,
    )

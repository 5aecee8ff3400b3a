"""A fitted classical baseline saved in a run directory (safetensors + JSON, no pickles) and read back."""

from __future__ import annotations
from areaser.models.baselines import BaselineConfig, FEATURE_NAMES, extract_features, fit_predict, get_baseline

import os
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np

from areaser.io.audio import DEFAULT_SR, load_audio
from areaser.runs.determinism import environment, environment_text
from areaser.runs.checkpoint import CheckpointError, load_tree
from areaser.runs.checkpoint import save_tree
from areaser.runs.config import TrainConfig
from pathlib import Path
import torch


# ----------------------------------------------------------------------------- a fitted baseline, kept

# Why training features, not the classifier: a fitted sklearn pipeline can only be saved by
# pickle (not allowed here: loading must not run code), and re-implementing the imputer,
# scaler, logistic regression and the calibrated SVM's predict_proba by hand would be a second
# implementation of sklearn's. Fitting is deterministic (lbfgs and libsvm, unshuffled
# calibration folds), so ``fit_predict`` on the stored features and labels rebuilds the very
# classifier the run scored, without the audio and without the slow pitch tracking.
FIT_FILE = "baseline.safetensors"


@dataclass
class FittedBaseline:
    """A trained baseline run, ready to score new utterances (see :data:`FIT_FILE`).

    ``x_train`` ``[N, len(FEATURE_NAMES)]`` and ``y_train`` ``[N]`` are the run's training
    features and class indices; ``classes`` its classes; ``header`` the stored JSON (``config``,
    ``fold``, ``train_ids``, ``baseline``, ``features``).
    """

    classes: tuple[str, ...]
    cfg: BaselineConfig
    sr: int
    x_train: np.ndarray
    y_train: np.ndarray
    header: dict

    def predict_proba(self, paths: Sequence[str | os.PathLike], progress: bool = False) -> np.ndarray:
        """Class probabilities ``[len(paths), len(classes)]`` of the classifier the run fitted."""
        x = extract_features(paths, self.cfg, self.sr, progress=progress)
        return fit_predict(self.x_train, self.y_train, x, len(self.classes), self.cfg)


def _save_fit(run_dir, config, prep, x_train: np.ndarray, bcfg: BaselineConfig):
    """Write :data:`FIT_FILE`: the fold's training features and labels, the config that made them."""

    train = prep.parts["train"]
    tensors = {
        "x_train": torch.from_numpy(np.array(x_train, dtype=np.float64)),  # copies: writable, contiguous
        "y_train": torch.from_numpy(np.array(train["y"], dtype=np.int64)),
    }
    header = {
        "config": config.to_dict(),
        "classes": list(prep.classes),
        "fold": prep.fold.name,
        "train_ids": list(train["utt_id"]),
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
    return FittedBaseline(
        tuple(header["classes"]), bcfg, c.features.sr, tree["x_train"].numpy(), tree["y_train"].numpy(), header
    )

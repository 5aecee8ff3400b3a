"""Training: one dataclass config -> one Lightning run -> one run directory.

The path of a run (:func:`train`)::

    TrainConfig -> manifest + protocol fold (splits) -> checks -> windows in memory (data)
        -> SERModule (LogMel on the batch, VTLP per example, model) under Lightning
        -> per epoch: dev (and test, when tracked) scored per utterance, history row,
           best.safetensors when dev improves, last.safetensors always
        -> test scored with the dev-chosen weights -> report (reports)

Everything a run needs is in :class:`~areaser.config.TrainConfig` (:mod:`areaser.config`);
it is saved as ``config.json`` and inside every checkpoint. Folds of a protocol and
re-evaluation are :mod:`areaser.crossval`. Checkpoints are safetensors + JSON (:mod:`areaser.checkpoint`),
never pickles. A run interrupted by a crash or Ctrl-C resumes from its last completed
epoch and ends with the same weights as an uninterrupted run: the data order, dropout and
VTLP factors of a step are seeded from ``(seed, epoch, step, rank)`` only.

Presets (``preset``):

``default``
    logits + cross-entropy, epoch chosen on the dev split, early stopping on dev.
``faithful``
    the authors' code: the ``faithful`` model with their Keras constants (frozen BatchNorm,
    Glorot init, Keras Adam with eps 1e-7 and decay), softmax outputs fed to a probability loss
    (Keras ``SparseCategoricalCrossentropy`` on probabilities, clipped at 1e-7), reflect-padded
    STFT, one offline ``legacy-time`` VTLP copy per training file, training on train + dev, their
    windows (``policy='legacy'``: test hop 6399 samples, strict end boundary), no early stopping,
    and the test set scored after every epoch so the paper's maxWA / maxUA can be reported beside
    the honest dev-chosen numbers (see :data:`areaser.config.TRAIN_PRESETS`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping

from .config import TRAIN_PRESETS, ConfigError, TrainConfig, config_with
from .fileio import atomic_write_json, atomic_write_text, read_json
from .specaug import spec_mask
from .splits import split_record

__all__ = [
    "ConfigError",
    "RunLockedError",
    "TrainConfig",
    "TRAIN_PRESETS",
    "config_with",
    "build_modules",
    "compute_loss",
    "prepare_fold",
    "train",
    "build_report",
    "read_history",
    "predict_windows",
    "score_windows",
    "KerasAdam",
    "TEST_DRAWS",
    "eval_draw_seeds",
    "score_draws",
    "summarise_draws",
]


# ----------------------------------------------------------------------------- modules


def build_modules(config: TrainConfig | Mapping, n_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(LogMel, model)`` for a config (a :class:`TrainConfig` or its dict)."""
    from .features import LogMel
    from .models import build_model

    c = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    features = LogMel(c.features, fhi=c.vtlp.fhi)
    try:
        model = build_model(c.model, n_classes=n_classes, n_mels=c.features.n_mels, **c.model_overrides)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"model {c.model!r} with overrides {c.model_overrides}: {e}") from None
    attention = getattr(model, "attention", None)
    if c.deterministic == "strict" and attention is not None and attention.backend == "auto":
        attention.backend = "eager"  # compiled kernels use the CPU's widest vectors: not pinned like ATen's
    return features, model


def _restart_bn_averages(model: torch.nn.Module) -> None:
    """BatchNorm layers average this epoch's batch statistics equally (``momentum=None``).

    With the default exponential average (momentum 0.1) the statistics an evaluation uses come
    from the last ~10 batches, so dev scores swing from epoch to epoch even where the weights have
    stopped moving (seen on EmoDB's one-speaker dev split); an equal average over the epoch does
    not. Frozen BatchNorm keeps its fixed statistics.
    """
    from .models import FrozenBatchNorm2d

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(m, FrozenBatchNorm2d):
            m.reset_running_stats()
            m.momentum = None


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def compute_loss(
    logits: torch.Tensor, y: torch.Tensor, kind: str = "ce", weight: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of ``logits`` against labels ``y``, of kind ``kind``.

    ``ce``: cross-entropy on logits. ``softmax-nll``: the authors' loss, -log of the softmax probability clipped
    to [1e-7, 1 - 1e-7] (Keras on probabilities).
    """
    if kind == "ce":
        return F.cross_entropy(logits, y, weight=weight)
    p = logits.softmax(-1).clamp(1e-7, 1 - 1e-7)
    return F.nll_loss(p.log(), y, weight=weight)


class KerasAdam(torch.optim.Adam):
    """Adam as tf.keras computes it (``optimizer='keras-adam'``): epsilon added to sqrt(v) before bias correction.

    tf.keras (``OptimizerV2`` Adam, the ``ApplyAdam`` kernel) takes ``lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)``
    and ``w -= lr_t * m / (sqrt(v) + eps)``; PyTorch ``w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    They agree when PyTorch's epsilon is ``eps / sqrt(1 - b2^t)``, which this class sets for each step
    (``t`` read from the optimizer state, so a resumed run goes on exactly) and puts back after it: the
    configured ``eps`` is what ``param_groups`` and checkpoints hold. Keras counts ``t`` once for all
    variables; here it is the group's largest step count (the same for every parameter that gets a
    gradient at every step, as all of this project's models do).
    """

    def step(self, closure=None):
        eps = [g["eps"] for g in self.param_groups]
        for g in self.param_groups:
            t = 1.0 + max((float(self.state[p]["step"]) for p in g["params"] if "step" in self.state[p]), default=0.0)
            g["eps"] = g["eps"] / (1.0 - g["betas"][1] ** t) ** 0.5
        try:
            return super().step(closure)
        finally:
            for g, e in zip(self.param_groups, eps):
                g["eps"] = e


class SERModule(L.LightningModule):
    """The model under training: ``features`` (LogMel, VTLP per example) then ``model``.

    Its ``state_dict`` keys are ``features.*`` and ``model.*``, the layout of
    ``best.safetensors`` and of :class:`areaser.inference.WaveformClassifier`.
    """

    def __init__(
        self,
        config: TrainConfig,
        classes: Sequence[str],
        class_weights: torch.Tensor | None,
        eval_sets: Mapping[str, Any],
        n_train: int,
    ):
        super().__init__()
        self.cfg = config
        self.classes = tuple(classes)
        self.features, self.model = build_modules(config, len(classes))
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.eval_sets = dict(eval_sets)  # name -> WindowSet (precomputed log-Mel)
        self.n_train = n_train
        self.epoch_stats: dict = {}
        self.eval_stats: dict = {}
        self.ddp_check: dict = {}

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.model(self.features(wave))

    def configure_optimizers(self):
        c = self.cfg
        keras = c.optimizer == "keras-adam"
        eps = c.adam_eps if c.adam_eps is not None else (1e-7 if keras else 1e-8)  # each library's default
        opt = (KerasAdam if keras else torch.optim.Adam)(
            self.parameters(), lr=c.lr, eps=eps, weight_decay=c.weight_decay
        )
        if c.lr_decay:
            # Keras' `decay` (inverse time, per step): step k (from 0) uses lr / (1 + decay * k). The
            # scheduler's step count is the optimizer's: it is stepped after every batch and resumes with it.
            decay = float(c.lr_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1.0 + decay * k))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if c.lr_schedule == "none":
            return opt
        # cosine decay to 0 over the configured epochs, stepped per epoch (resumes with the epoch)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ------------------------------------------------------------------ training

    def on_train_start(self) -> None:
        self.ddp_check = {"world_size": self.trainer.world_size, "init_in_sync": self._replicas_agree()}

    def on_train_epoch_start(self) -> None:
        if self.cfg.bn_stats == "epoch":
            _restart_bn_averages(self.model)
        self._seen = torch.zeros(self.n_train, dtype=torch.long)
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._loss_n = 0
        self._lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])  # the rate this epoch trains with
        self._t0 = time.perf_counter()

    def training_step(self, batch, batch_idx):
        wave, y, idx = batch
        # randomness of a step is a function of (seed, epoch, step, rank) alone: resuming replays it
        key = (self.cfg.seed, self.current_epoch, batch_idx, self.global_rank)
        torch.manual_seed(_seed(*key, 0))  # dropout
        warp = None
        if self.cfg.vtlp.impl == "melwarp":
            from .vtlp import sample_factors

            warp = sample_factors(len(y), self.cfg.vtlp, torch.Generator().manual_seed(_seed(*key, 1))).to(self.device)
        x = self.features(wave, warp)
        if self.cfg.masks.active:
            x = spec_mask(x, self.cfg.masks, torch.Generator().manual_seed(_seed(*key, 2)))
        logits = self.model(x)
        loss = compute_loss(logits, y, self.cfg.loss, self.class_weights)
        self._seen.index_add_(0, idx.cpu(), torch.ones_like(idx.cpu()))
        self._loss_sum += loss.detach().double().cpu() * len(y)
        self._loss_n += len(y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        seen = self._reduce(self._seen)
        loss = self._reduce(torch.stack([self._loss_sum, torch.tensor(float(self._loss_n), dtype=torch.float64)]))
        secs = time.perf_counter() - self._t0
        self.epoch_stats = {
            "train_loss": float(loss[0] / loss[1]),
            "train_windows": int(seen.sum()),  # all processes together, DDP padding included
            "train_windows_distinct": int((seen > 0).sum()),
            "train_s": round(secs, 3),
            "lr": self._lr,
        }

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size == 1:
            return t
        dt = t.dtype
        return self.trainer.strategy.reduce(t.to(self.device, torch.float64), reduce_op="sum").cpu().to(dt)

    def on_train_end(self) -> None:
        self.ddp_check["final_in_sync"] = self._replicas_agree()

    def _replicas_agree(self) -> bool:
        """All processes hold the same weights (always true without DDP)."""
        if self.trainer.world_size == 1:
            return True
        with torch.no_grad():
            s = torch.stack([p.double().sum() for p in self.parameters()]).sum().reshape(1)
            g = self.all_gather(s.to(self.device))
        return bool((g == g.reshape(-1)[0]).all())

    # ------------------------------------------------------------------ evaluation

    def on_validation_epoch_start(self) -> None:
        self._val = {name: [] for name in self.eval_sets}

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        feats, idx = batch
        logits = self.model(self.features.normalize(feats))
        self._val[list(self.eval_sets)[dataloader_idx]].append((idx.cpu(), logits.float().cpu()))

    def on_validation_epoch_end(self) -> None:
        out = {}
        for name, ws in self.eval_sets.items():
            parts = self._val[name]
            idx = torch.cat([p[0] for p in parts])
            logits = torch.empty(len(ws), len(self.classes))
            logits[idx] = torch.cat([p[1] for p in parts])
            m = score_windows(ws, logits, self.classes, self.cfg.decision)
            out.update(
                {
                    f"{name}_loss": float(F.cross_entropy(logits, ws.labels)),
                    f"{name}_wa": m["wa"],
                    f"{name}_ua": m["ua"],
                    f"{name}_f1": m["macro_f1"],
                }
            )
        self.eval_stats = out
        if self.trainer.world_size > 1:  # every process scores the whole set: they must agree
            v = torch.tensor([out["dev_ua"], out["dev_loss"]], device=self.device, dtype=torch.float64)
            g = self.all_gather(v)
            self.ddp_check["eval_in_sync"] = self.ddp_check.get("eval_in_sync", True) and bool((g == v).all())
        self.log_dict(out, sync_dist=True)


# ----------------------------------------------------------------------------- evaluation helpers


@torch.no_grad()
def predict_windows(features: torch.nn.Module, model: torch.nn.Module, ws, batch_size: int = 128) -> torch.Tensor:
    """Logits ``[n_windows, C]`` of a :class:`areaser.data.WindowSet` (eval mode, no warp)."""
    features.eval()
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(ws), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(ws)))
        x = ws.feats[idx].to(device) if ws.feats is not None else features.raw(ws.waves(idx).to(device))
        out.append(model(features.normalize(x)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def score_windows(
    ws, logits: torch.Tensor, classes: Sequence[str], decision: str = "prob", speakers: bool = False
) -> dict:
    """Utterance-level metrics of window ``logits [n_windows, C]`` (:func:`areaser.metrics.classification_metrics`).

    Each utterance's decision is :func:`areaser.metrics.utterance_probs` with ``decision``, the
    rule ``predict`` and the service apply to the same windows (:class:`areaser.inference.Recognizer`).
    """
    from .metrics import classification_metrics, utterance_probs

    probs = utterance_probs(logits, ws.utt_index, ws.n_utts, decision)
    y = ws.utterances["y"].to_numpy()
    spk = ws.utterances["speaker"].tolist() if speakers else None
    return classification_metrics(y, probs.argmax(1), classes, spk)


TEST_DRAWS = 10  # scorings of the test set when the model is random at evaluation


def eval_draw_seeds(seed: int, n: int = TEST_DRAWS) -> list[int]:
    """The torch seeds of the ``n`` test scorings of a run with ``seed`` (fixed: a report can be re-scored)."""
    return [_seed(seed, 0x7E57, i) for i in range(n)]


def score_draws(
    features: torch.nn.Module, model: torch.nn.Module, ws, classes: Sequence[str], decision: str, seeds: Sequence[int]
) -> list[dict]:
    """:func:`score_windows` (with speakers) once per seed, the global torch RNG seeded with it before each.

    For a model that is random at evaluation (attention dropout or area sampling kept at eval:
    ``model.stochastic_at_eval``) each scoring is one draw; the caller's RNG state is left as it was.
    """
    out = []
    with torch.random.fork_rng():
        for s in seeds:
            torch.manual_seed(int(s))
            out.append(score_windows(ws, predict_windows(features, model, ws), classes, decision, speakers=True))
    return out


def _seeded_logits(module, ws, seed: int) -> torch.Tensor:
    """:func:`predict_windows` with the global torch RNG seeded with ``seed`` (a model random at eval: one draw)."""
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        return predict_windows(module.features, module.model, ws)


def calibration_record(c: TrainConfig, module, dev_ws, weights_header: Mapping) -> dict:
    """The run's temperature (:mod:`areaser.calibration`), fitted on ``dev_ws`` after training; never retrains.

    A run whose dev part is trained on (``train_on_dev``, the faithful preset) has no held-out part:
    ``T = 1``, recorded as not calibrated. A model random at evaluation is fitted on one seeded draw.
    """
    from .calibration import fit_record, not_calibrated

    weights = {"epoch": int(weights_header.get("epoch", 0)), "checksum": weights_header.get("checksum")}
    if c.train_on_dev:
        return not_calibrated(decision=c.decision, weights=weights)
    if dev_ws.feats is None:
        dev_ws.precompute(module.features)
    return fit_record(_seeded_logits(module, dev_ws, eval_draw_seeds(c.seed)[0]), dev_ws, c.decision, weights)


def summarise_draws(scores: Sequence[Mapping], seeds: Sequence[int]) -> dict:
    """Per-draw WA / UA / macro-F1 with their mean and sample std (n - 1): a report's ``test_draws``."""
    out: dict[str, Any] = {"n": len(scores), "seeds": [int(s) for s in seeds]}
    for k in ("wa", "ua", "macro_f1"):
        v = np.array([float(m[k]) for m in scores])
        out[k] = v.tolist()
        out[f"{k}_mean"] = float(v.mean())
        out[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


# ----------------------------------------------------------------------------- data preparation


@dataclass
class PreparedFold:
    """A fold ready to load: the rows of each part, the classes, the fold itself.

    ``notes``: lines about the data a run trains on that the console prints (train) before training:
    dev not held out (``train_on_dev``), the xu2021 selection on IEMOCAP against a complete copy's counts.
    """

    parts: dict[str, pd.DataFrame]
    classes: tuple[str, ...]
    fold: Any
    n_folds: int
    notes: tuple[str, ...] = ()


def copies_root(config: TrainConfig) -> Path:
    """Where a run's own VTLP copies (``vtlp_copies``) are cached: ``copies_dir``, else beside the manifest.

    The copies themselves lie in a folder under it named by their settings
    (:func:`areaser.vtlp.copies_folder`).
    """
    return Path(config.copies_dir or Path(config.manifest).resolve().parent / "vtlp-copies").resolve()


def _own_copies(config: TrainConfig, df: pd.DataFrame) -> pd.DataFrame:
    """``vtlp_copies`` offline copies (``vtlp.impl``) of every original the protocol selects, cached.

    Every fold of a selection shares them (the authors copied every file once); the copies of
    utterances outside a fold's training part are never trained on (:func:`areaser.splits.split_frame`).
    A second run with the same settings finds every file and writes none.
    """
    from .splits import get_protocol, select_utterances
    from .vtlp import augment_manifest, copies_folder

    orig = df[df["source_id"] == ""]
    chosen = set(select_utterances(orig, get_protocol(config.protocol), config.label_set)["utt_id"])
    folder = copies_folder(copies_root(config), config.vtlp, config.seed)
    return augment_manifest(
        orig[orig["utt_id"].isin(chosen)],
        folder,
        copies=int(config.vtlp_copies or 0),
        config=config.vtlp,
        seed=config.seed,
    )


def read_manifests(config: TrainConfig) -> pd.DataFrame:
    """The manifest plus ``extra_manifests`` (augmented copies) plus the run's own copies, checked.

    The run's own copies: ``vtlp_copies`` per selected original, made with ``vtlp.impl`` on first
    use and cached (:func:`copies_root`). Ids must stay unique.
    """
    from .manifest import ManifestError, make_manifest, read_manifest, validate_manifest

    frames = [read_manifest(config.manifest)] + [read_manifest(p) for p in config.extra_manifests]
    df = make_manifest(pd.concat(frames, ignore_index=True)) if len(frames) > 1 else frames[0]
    if config.vtlp_copies and config.vtlp.impl in ("stft", "legacy-time"):
        df = make_manifest(pd.concat([df, _own_copies(config, df)], ignore_index=True))
    problems = validate_manifest(df, check_files=False)
    if problems:
        raise ManifestError("manifests " + ", ".join([config.manifest, *config.extra_manifests]), problems)
    if config.copies is not None:  # keep the first `copies` copies of every source
        rank = df.groupby("source_id").cumcount() + 1
        df = df[(df["source_id"] == "") | (rank <= config.copies)].reset_index(drop=True)
    return df


def prepare_fold(config: TrainConfig, df: pd.DataFrame | None = None) -> PreparedFold:
    """Select, split and check one fold; every input problem is raised here, before training."""
    from .splits import (
        SplitError,
        check_fold,
        get_protocol,
        make_folds,
        resolve_label_set,
        select_utterances,
        split_frame,
    )

    c = config
    try:
        df = read_manifests(c) if df is None else df
        protocol = get_protocol(c.protocol)
        sel = select_utterances(df, protocol, c.label_set)
        folds = make_folds(sel, protocol, c.seed)
        if not 0 <= c.fold < len(folds):
            raise ConfigError(
                f"fold {c.fold} out of range: protocol {c.protocol!r} has {len(folds)} folds (0..{len(folds) - 1})"
            )
        fold = folds[c.fold]
        parts = split_frame(sel, fold, use_copies=True, train_on_dev=bool(c.train_on_dev))
        classes = resolve_label_set(df, c.label_set).classes
        check_fold(parts, classes, fold.name)
        notes = _data_notes(c, df, protocol, parts)
    except SplitError as e:
        raise ConfigError(str(e)) from None
    return PreparedFold(parts, classes, fold, len(folds), notes)


def _data_notes(c: TrainConfig, df: pd.DataFrame, protocol, parts: Mapping[str, pd.DataFrame]) -> tuple[str, ...]:
    """The lines :class:`PreparedFold` carries for the console (see there)."""
    from .splits import selection_line, selection_table

    notes = []
    if c.train_on_dev:
        notes.append(
            f"dev is not held out: its {len(parts['dev'])} utterances are also trained on (train_on_dev, the authors' "
            "80 % training part); it is still scored every epoch, so the dev-chosen epoch is not an honest choice"
        )
    orig = df[df["source_id"] == ""]
    if protocol.name == "xu2021" and len(orig) and set(orig["corpus"].astype(str)) == {"iemocap"}:
        spec = c.label_set or protocol.label_set
        table = selection_table(df, protocol, spec)
        notes.append("xu2021 on IEMOCAP, " + selection_line(table, spec, protocol.min_duration_s))
    return tuple(notes)


def _class_weights(c: TrainConfig, labels: torch.Tensor, n_classes: int) -> torch.Tensor | None:
    if isinstance(c.class_weights, list):
        if len(c.class_weights) != n_classes:
            raise ConfigError(f"class_weights has {len(c.class_weights)} values for {n_classes} classes")
        return torch.tensor(c.class_weights, dtype=torch.float32)
    if c.class_weights == "balanced":  # n / (C * n_c) over training windows
        counts = torch.bincount(labels, minlength=n_classes).float()
        return (counts.sum() / (n_classes * counts.clamp_min(1))).float()
    return None


# ----------------------------------------------------------------------------- the run


class RunCheckpoint(Checkpoint):
    """Per-epoch bookkeeping: history row, ``best`` weights on dev improvement, ``last`` state.

    A Lightning ``Checkpoint`` callback (so Lightning adds no pickling checkpoint of its own).
    It runs at the end of each training epoch, after validation and early stopping. Its
    state (history, best score) travels inside ``last.safetensors``, so a resumed run
    continues the same history.

    The best epoch is :func:`areaser.metrics.best_epoch` over the history (lowest loss or highest
    score on ``monitor``, earliest on ties), the rule the report's honest reading uses too; ``mode``
    (for early stopping) comes from the same place (:func:`areaser.metrics.lower_is_better`).

    The state also records whether early stopping ended training at the saved epoch (``stopped``:
    Lightning keeps ``trainer.should_stop`` in no checkpoint), so a run resumed from the stopping
    epoch's state stops there too instead of training one more epoch, and the seconds spent in
    ``fit`` so far (``fit_s``), so a resumed run reports its whole training time.
    """

    def __init__(self, paths: dict[str, Path], header: dict, monitor: str):
        from .metrics import lower_is_better

        self.paths = paths
        self.header = header
        self.monitor = monitor
        self.mode = "min" if lower_is_better(monitor) else "max"
        self.history: list[dict] = []
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.stopped: bool | None = None  # None: not known (a fresh run, or a state saved before it was recorded)
        self.prior_fit_s = 0.0  # fit seconds of earlier sessions of this run (from the resumed state)
        self.t_start = time.perf_counter()

    def on_train_start(self, trainer, module) -> None:
        stopped = self.stopped
        es = trainer.early_stopping_callback
        if stopped is None and es is not None:  # an older state: early stopping's own counters tell
            stopped = int(getattr(es, "stopped_epoch", 0) or 0) > 0
        if stopped and es is not None:  # resumed from the epoch early stopping ended on: nothing left to train
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, module) -> None:
        from .checkpoint import save_weights
        from .metrics import best_epoch

        row = {"epoch": trainer.current_epoch + 1, **module.epoch_stats, **module.eval_stats}
        self.history = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]
        if best_epoch(self.history, self.monitor) == len(self.history) - 1:  # this epoch is the new best
            self.best_score, self.best_epoch = float(row[self.monitor]), row["epoch"]
            if trainer.is_global_zero:
                save_weights(
                    self.paths["best"], module.state_dict(), {**self.header, "epoch": row["epoch"], "scores": row}
                )
        if trainer.is_global_zero:
            _write_history(self.paths["metrics"], self.history)
        self.stopped = bool(trainer.should_stop)  # early stopping (a monitoring callback) has run by now
        trainer.save_checkpoint(str(self.paths["last"]))

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        if trainer.is_global_zero and isinstance(exception, KeyboardInterrupt):
            done = f"epoch {self.history[-1]['epoch']} is" if self.history else "no epoch was"
            print(
                f"\ninterrupted: {done} the last one saved in {self.paths['last']}; "
                "run the same command again to resume from there",
                file=sys.stderr,
                flush=True,
            )

    @property
    def fit_s(self) -> float:
        """Seconds spent in ``fit`` by this run, earlier sessions included."""
        return self.prior_fit_s + time.perf_counter() - self.t_start

    def state_dict(self) -> dict:
        return {
            "history": self.history,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "stopped": self.stopped,
            "fit_s": self.fit_s,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.stopped = state.get("stopped")
        self.prior_fit_s = float(state.get("fit_s", 0.0))


def _write_history(path: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in history for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())


def read_history(path: str | os.PathLike) -> list[dict]:
    """Rows of a run's ``metrics.csv`` with numbers parsed."""
    if not Path(path).is_file():
        return []
    df = pd.read_csv(path)
    return [
        {k: (int(v) if k in ("epoch", "train_windows", "train_windows_distinct") else float(v)) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


class RichEpochs(Callback):
    """Rich progress: a bar over epochs (with the dev score) and one over the current epoch's batches.

    Draws into ``bar`` (a ``rich.progress.Progress``); ``overall_task`` (cv: all folds) is
    advanced once per epoch.
    """

    def __init__(self, bar, label: str, overall_task=None):
        self.bar = bar
        self.label = label
        self.overall = overall_task
        self.epochs = self.batches = None

    def on_train_start(self, trainer, module) -> None:
        if trainer.is_global_zero:
            self.epochs = self.bar.add_task(
                self.label, total=trainer.max_epochs, completed=trainer.current_epoch, info=""
            )
            self.batches = self.bar.add_task("", total=trainer.num_training_batches, info="")

    def on_train_epoch_start(self, trainer, module) -> None:
        if self.batches is not None:
            self.bar.reset(
                self.batches,
                total=trainer.num_training_batches,
                description=f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
            )
            self.loss_sum, self.n = 0.0, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.batches is not None:
            self.loss_sum, self.n = self.loss_sum + float(outputs["loss"]), self.n + 1
            self.bar.update(self.batches, advance=1, info=f"loss {self.loss_sum / self.n:.3f}")

    def on_train_epoch_end(self, trainer, module) -> None:
        if self.epochs is None:
            return
        dev = module.eval_stats.get("dev_ua")
        info = f"loss {self.loss_sum / max(self.n, 1):.3f}" + (f"  dev UA {100 * dev:.1f} %" if dev is not None else "")
        self.bar.update(self.epochs, advance=1, info=info)
        if self.overall is not None:
            self.bar.advance(self.overall)

    def on_train_end(self, trainer, module) -> None:
        self._close()

    def on_exception(self, trainer, module, exception) -> None:
        self._close()

    def _close(self) -> None:
        if self.batches is not None:
            self.bar.remove_task(self.batches)
            self.batches = None


def make_progress():
    """The rich progress display used by train / cv (description, bar, counts, time, info)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    )


class RunLockedError(ConfigError):
    """Another process is training the same run directory (it holds ``RUN/.lock``)."""


# the temporary siblings :func:`areaser.fileio.atomic_path` writes: ".<name>.tmp.<8 mkstemp chars><suffix>"
_TEMP_NAME = re.compile(r"^\..+\.tmp\.[A-Za-z0-9_]{8}")


class _RunLock:
    """``RUN/.lock``, held with ``fcntl.flock`` while one process trains the run (rank 0 only under DDP).

    The lock dies with its process (kill -9 included), so a stale lock file never blocks a later run;
    the file itself is left in place (removing it would race with a process opening it). Where
    ``fcntl`` does not exist (Windows) runs are not locked. Taking the lock also removes temporary
    files a killed process left behind (:func:`_remove_stale_temps`): no other process writes there.
    """

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self.file = None

    @property
    def held(self) -> bool:
        return self.file is not None

    def acquire(self) -> bool:
        """Take the lock (creating the run directory); ``True`` if taken now, ``False`` if held already or off."""
        if self.held or not self.enabled:
            return False
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "a process that has not written its id yet"
            f.close()
            raise RunLockedError(
                f"{self.path.parent} is being trained by another process ({holder}, lock {self.path}); "
                "wait for it to finish, or choose another --name"
            ) from None
        import socket

        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.file = f
        _remove_stale_temps(self.path.parent)
        return True

    def release(self) -> None:
        if self.file is not None:
            import fcntl

            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def _remove_stale_temps(run_dir: Path) -> list[Path]:
    """Remove the temporary files of :func:`areaser.fileio.atomic_path` that a killed process left in ``run_dir``.

    Only while holding the run's lock: then no live process is writing them. TensorBoard's folder is not searched.
    """
    gone = []
    for p in run_dir.rglob(".*.tmp.*"):
        if p.is_file() and _TEMP_NAME.match(p.name) and "tensorboard" not in p.relative_to(run_dir).parts:
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def _same_run(old: Mapping, new: Mapping) -> list[str]:
    """Config keys that differ in ways that make resuming meaningless."""
    free = {
        "epochs",
        "patience",
        "progress",
        "tensorboard",
        "num_workers",
        "threads",
        "devices",
        "num_nodes",
        "strategy",
        "accelerator",
        "name",
        "out_dir",
        "deterministic",
        "test_manifests",
    }
    return sorted(k for k in set(old) | set(new) if k not in free and old.get(k) != new.get(k))


def train(
    config: TrainConfig | Mapping,
    *,
    resume: bool | None = None,
    callbacks: Sequence[Any] = (),
    bar=None,
    overall_task=None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Train one fold and write its run directory; return the report dict.

    ``resume``: ``None`` (default) resumes when the run directory has a last checkpoint and
    returns the stored report of a finished run; ``True`` requires a checkpoint; ``False``
    starts over (old checkpoints and logs of that run are removed). ``callbacks`` are extra
    Lightning callbacks. ``bar`` / ``overall_task``: an outer rich ``Progress`` to draw into
    (``cross_validate`` passes its own). Raises :class:`ConfigError`, :class:`ManifestError`
    or :class:`AudioError` before any training when the input is unusable.

    A run is finished when ``done.json`` exists: it is written last, after the report, its
    figures and the cross-corpus scores. A run whose training ended but whose report was cut
    short (killed) is completed from ``last.safetensors`` without training again. The run
    directory is locked while it is trained (``RUN/.lock``): a second ``train`` of the same
    run raises :class:`RunLockedError` naming the other process. A ``last.safetensors`` that
    cannot be resumed from (damaged, empty, not a training state) raises
    :class:`areaser.checkpoint.CheckpointError` before anything is loaded, offering ``--restart``.
    """
    from .baselines import is_baseline, train_baseline
    from .checkpoint import run_paths

    c = (config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)).resolved()
    _set_threads(c)  # first: strict pins code paths that the first computation fixes
    if is_baseline(c.model):  # a classical baseline: same fold, metrics and run directory, no epochs
        return train_baseline(c, log=log, bar=bar, resume=resume)
    paths = run_paths(Path(c.out_dir) / c.name)
    rank0 = (
        int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
        and int(os.environ.get("NODE_RANK", "0")) == 0
    )
    lock = _RunLock(paths["lock"], enabled=rank0)
    try:
        if paths["dir"].is_dir():  # before anything reads or removes its files (a new run: when it is created)
            lock.acquire()
        return _train(
            c, paths, rank0, lock, resume=resume, callbacks=callbacks, bar=bar, overall_task=overall_task, log=log
        )
    finally:
        lock.release()


def _set_threads(c: TrainConfig) -> None:
    """``c.threads`` torch threads; under ``deterministic="strict"`` threads and code paths pinned."""
    if c.deterministic == "strict":
        from .determinism import DeterminismError, pin_strict

        try:
            pin_strict(c.threads or 1)
        except DeterminismError as e:
            raise ConfigError(str(e)) from None
    elif c.threads:
        torch.set_num_threads(c.threads)


def _train(
    c: TrainConfig,
    paths: dict[str, Path],
    rank0: bool,
    lock: _RunLock,
    *,
    resume: bool | None,
    callbacks: Sequence[Any],
    bar,
    overall_task,
    log: Callable[[str], None] | None,
) -> dict:
    """The body of :func:`train`: ``c`` resolved, the run directory locked (a new one once created)."""
    from .checkpoint import CheckpointError, SafetensorsCheckpointIO, load_tree
    from .data import SERDataModule, load_windows

    say = log or (lambda s: None)

    # ---- decide: fresh, resume, or already finished
    if paths["config"].is_file():
        old = read_json(paths["config"], ConfigError)
        diff = _same_run(old, c.to_dict())
        if diff and resume is not False:
            raise ConfigError(
                f"{paths['dir']} holds a run with another config (differs in {', '.join(diff)}); "
                "choose another --name, or --restart to overwrite it"
            )
    if resume is False and paths["dir"].exists() and rank0:
        for key in ("done", "last", "best", "metrics", "report_json", "report_md", "split"):
            for p in (paths[key], paths[key].with_suffix(".json")) if key in ("last", "best") else (paths[key],):
                p.unlink(missing_ok=True)
        (paths["dir"] / "calibration.json").unlink(missing_ok=True)  # fitted to the old weights
        shutil.rmtree(paths["tensorboard"], ignore_errors=True)
    has_last = paths["last"].is_file() and resume is not False
    if resume is True and not has_last:
        raise ConfigError(f"nothing to resume: {paths['last']} does not exist")
    finished = all(paths[k].is_file() for k in ("done", "report_json", "report_md"))
    if has_last and finished and resume is None:
        say(f"{paths['dir']}: already finished (done.json exists); --restart to train it again")
        return read_json(paths["report_json"], ConfigError)
    if has_last:  # found before any data is loaded: a state that cannot be resumed from
        try:
            load_tree(paths["last"])  # readable, a training state, checksum, finite weights
        except CheckpointError as e:
            reason = " ".join(str(e).split())
            raise CheckpointError(
                f"cannot resume: {reason}; --restart trains the run again from scratch "
                f"({paths['best'].name} may still be intact: copy it away first to keep it)"
            ) from None

    # ---- inputs: everything that can be wrong is found before training
    prep = prepare_fold(c)
    if c.test_manifests:  # a cross-corpus manifest that cannot be scored is found before training
        from .crossval import check_test_manifests

        check_test_manifests(c.label_set, prep.classes, c.test_manifests)
    L.seed_everything(c.seed, workers=True, verbose=False)
    probe, _ = build_modules(c, len(prep.classes))  # checks the model config early
    say(
        f"run {paths['dir']}: fold {prep.fold.name} ({c.fold + 1}/{prep.n_folds}), utterances "
        + ", ".join(f"{k} {len(v)}" for k, v in prep.parts.items())
    )
    for note in prep.notes:  # dev not held out; the xu2021 selection against a complete IEMOCAP
        say(note)
    if has_last:
        from .checkpoint import read_header

        done_epochs = read_header(paths["last"])["epoch"] + 1
        if paths["report_json"].is_file():  # killed while writing the report: complete it, train no further
            say(f"completing the report of {paths['dir']} (cut short after training) from {paths['last']}")
        else:
            say(f"resuming after epoch {done_epochs} from {paths['last']}")
    own_bar = make_progress() if bar is None and c.progress and rank0 else None
    bar = bar or own_bar
    try:
        if own_bar is not None:
            own_bar.start()
        t_load = time.perf_counter()
        sets = {}
        tick = _load_progress(bar, sum(len(v) for v in prep.parts.values()))
        for part in ("train", "dev", "test"):
            sets[part] = load_windows(
                prep.parts[part], c.segments, train=(part == "train"), sr=c.features.sr, progress=tick
            )
            if not len(sets[part]):
                raise ConfigError(f"fold {prep.fold.name}: no {part} windows (segments.policy dropped every utterance)")
        if c.features.norm == "dataset":  # statistics from un-warped training windows
            probe.fit_stats(_raw_chunks(probe, sets["train"]))
        for part in ("dev", "test"):
            sets[part].precompute(probe)
        say(
            f"loaded {sum(len(s) for s in sets.values()):,} windows in {time.perf_counter() - t_load:.1f} s: "
            + ", ".join(f"{k} {len(v):,}" for k, v in sets.items())
        )
        eval_sets = {k: sets[k] for k in (("dev", "test") if c.track_test else ("dev",))}

        weights = _class_weights(c, sets["train"].labels, len(prep.classes))
        module = SERModule(c, prep.classes, weights, eval_sets, len(sets["train"]))
        module.features.load_state_dict(probe.state_dict())
        dm = SERDataModule(sets["train"], eval_sets, c.batch_size, c.seed, c.num_workers)

        header = {"config": c.to_dict(), "classes": list(prep.classes), "fold": prep.fold.name}
        if rank0:
            if lock.acquire() and paths["config"].is_file():  # a new run: another process created it meanwhile
                raise RunLockedError(f"{paths['dir']} was started by another process meanwhile; run the command again")
            paths["dir"].mkdir(parents=True, exist_ok=True)
            c.save(paths["config"])
            atomic_write_json(paths["split"], split_record(prep.fold, prep.parts))
        ckpt = RunCheckpoint(paths, header, c.monitor)
        cbs: list[Any] = [ckpt, *callbacks]
        if c.patience is not None:
            cbs.append(EarlyStopping(monitor=c.monitor, mode=ckpt.mode, patience=c.patience))
        if bar is not None:
            cbs.append(RichEpochs(bar, c.name if overall_task is None else prep.fold.name, overall_task))
        logger: Any = False
        if c.tensorboard:
            from lightning.pytorch.loggers import TensorBoardLogger

            logger = TensorBoardLogger(save_dir=str(paths["dir"]), name="tensorboard", version="")
        deterministic = (c.accelerator == "cpu") if c.deterministic == "auto" else bool(c.deterministic)
        trainer = L.Trainer(
            default_root_dir=str(paths["dir"]),
            max_epochs=c.epochs,
            accelerator=c.accelerator,
            devices=c.devices,
            num_nodes=c.num_nodes,
            strategy=c.strategy,
            deterministic=deterministic,
            logger=logger,
            callbacks=cbs,
            plugins=[SafetensorsCheckpointIO()],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            log_every_n_steps=1,
        )
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")  # inside Lightning, not ours
            trainer.fit(module, datamodule=dm, ckpt_path=str(paths["last"]) if has_last else None)
        fit_s = ckpt.prior_fit_s + time.perf_counter() - t0  # earlier sessions of a resumed run included
    finally:
        if own_bar is not None:
            own_bar.stop()
    if not trainer.is_global_zero:
        return {}

    # ---- final scoring with the dev-chosen weights (never the last epoch's, never chosen on test)
    from .checkpoint import load_weights
    from .metrics import best_epoch

    test_ws = sets["test"]
    chosen = int(ckpt.history[best_epoch(ckpt.history, c.monitor)]["epoch"])
    state, best_header = load_weights(paths["best"])
    if int(best_header["epoch"]) != chosen:
        raise RuntimeError(f"{paths['best']} holds epoch {best_header['epoch']}, but {c.monitor} picks epoch {chosen}")
    module.load_state_dict(state)
    module.to("cpu")
    from .calibration import write_calibration

    calibration = calibration_record(c, module, sets["dev"], best_header)  # T on dev only (before the report)
    write_calibration(paths["dir"], calibration)
    report = build_report(
        c,
        prep,
        ckpt.history,
        int(best_header["epoch"]),
        module,
        test_ws,
        sets["train"],
        fit_s,
        module.ddp_check if trainer.world_size > 1 else None,
        calibration,
    )
    from .reports import write_run_report

    write_run_report(paths["dir"], report)
    from .crossval import score_test_manifests
    from .provenance import console_line

    say(console_line(report, paths["report_md"]))
    score_test_manifests(paths["dir"], c.test_manifests, log=log)  # cross-corpus: RUN/cross/<corpus>/
    # the completion marker, last: without it a rerun completes whatever is missing (from the saved state)
    atomic_write_json(
        paths["done"],
        {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "epochs_run": len(ckpt.history),
            "selected_epoch": report["selected_epoch"],
            "stopped_early": bool(ckpt.stopped) and len(ckpt.history) < c.epochs,
        },
    )
    return report


def _load_progress(bar, total: int):
    """A callback for :func:`areaser.data.load_windows` that advances one 'load audio' task."""
    if bar is None:
        return None
    task = bar.add_task("load audio", total=total, info="")
    state = {"done": 0}

    def tick(done: int, n: int) -> None:
        state["done"] += 1
        bar.advance(task)
        if state["done"] == total:
            bar.remove_task(task)

    return tick


def _raw_chunks(features, ws, batch: int = 256):
    for i in range(0, len(ws), batch):
        yield features.raw(ws.waves(torch.arange(i, min(i + batch, len(ws)))))


def build_report(
    c: TrainConfig,
    prep: PreparedFold,
    history: list[dict],
    selected_epoch: int,
    module,
    test_ws,
    train_ws,
    fit_s: float,
    ddp: dict | None,
    calibration: Mapping | None = None,
) -> dict:
    """The report dict of a run (:mod:`areaser.reports`): ``module``'s scores on ``test_ws``.

    ``calibration``: the run's temperature record (:func:`areaser.calibration.fit_record`, fitted on
    dev, or :func:`~areaser.calibration.not_calibrated`); the report's ``calibration`` then holds its
    ``T`` and the test part's ECE / NLL before and after (:func:`areaser.calibration.test_summary`).

    Besides the scores it names where they come from, so a number is never read without it:
    ``provenance`` (:func:`areaser.provenance.describe`: corpus, synthetic or not, label set and
    classes, protocol), ``notes`` (the synthetic-data and speaker-dependence warnings) and the
    same facts as lines of ``info``.

    A model that is random at evaluation (``faithful``: attention dropout and sample noise kept at
    eval) gets :data:`TEST_DRAWS` seeded scorings (:func:`eval_draw_seeds`, :func:`score_draws`):
    ``test`` is the first draw, ``test_draws`` (:func:`summarise_draws`) holds every draw's WA / UA /
    macro-F1, their mean and sample std, and the seeds that re-score them.
    """
    from .determinism import environment, environment_text
    from .metrics import paper_and_honest
    from .provenance import describe, info_rows, notes, split_text

    ws = test_ws
    if ws.feats is None:
        ws.precompute(module.features)
    draws = None
    if getattr(module.model, "stochastic_at_eval", False):  # every scoring is a draw: score several
        seeds = eval_draw_seeds(c.seed)
        scores = score_draws(module.features, module.model, ws, prep.classes, c.decision, seeds)
        test, draws = scores[0], summarise_draws(scores, seeds)
        logits = _seeded_logits(module, ws, seeds[0]) if calibration is not None else None  # draw 1's
    else:
        logits = predict_windows(module.features, module.model, ws)
        test = score_windows(ws, logits, prep.classes, c.decision, speakers=True)
    epochs_run = len(history)
    windows = sum(r["train_windows"] for r in history)
    secs = sum(r["train_s"] for r in history)
    prov = describe(c.manifest, prep.parts, c.label_set, prep.classes, c.protocol)
    env = environment(c.deterministic)
    report = {
        "name": c.name,
        "classes": list(prep.classes),
        "fold": prep.fold.name,
        "test_group": prep.fold.test_group,
        "selected_epoch": selected_epoch,
        "test": test,
        "history": history,
        "config": c.to_dict(),
        "provenance": prov,
        "notes": notes(prov),
        "info": {
            **info_rows(prov),
            "manifest": c.manifest,
            "fold": split_text(prov, prep.fold.name, prep.fold.test_group)
            + f", {prep.fold.index + 1} of {prep.n_folds}",
            "test scores": f"the test part of {prep.fold.name} ({prep.fold.test_group}), model of the epoch "
            f"chosen on its dev part ({c.monitor})",
            "preset / model": f"{c.preset} / {c.model}",
            "VTLP": c.vtlp.impl,
            "utterances train / dev / test": " / ".join(str(len(prep.parts[k])) for k in ("train", "dev", "test")),
            "test utterances dropped (too short)": ws.dropped,
            "train windows per epoch": len(train_ws),
            "epochs run / selected": f"{epochs_run} / {selected_epoch} (on {c.monitor})",
            "training time": f"{fit_s:.1f} s",
            "training throughput": f"{windows / secs:.1f} windows/s" if secs > 0 else "",
            "environment": environment_text(env),
        },
        "environment": env,
    }
    if draws is not None:
        report["test_draws"] = draws
    if calibration is not None:
        from .calibration import test_summary

        report["calibration"] = test_summary(calibration, logits, ws, c.decision)
    if c.track_test and history and "test_ua" in history[0]:
        report["paper_and_honest"] = paper_and_honest(history, c.monitor)
    if ddp:
        report["ddp"] = ddp
        report["info"]["processes (DDP)"] = ddp["world_size"]
    return report

"""The Lightning module of a neural run: features on the batch, VTLP per example, loss, optimiser."""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import lightning as L
import torch
import torch.nn.functional as F

from areaser.dsp.specaug import spec_mask
from areaser.dsp.vtlp import sample_factors
from areaser.models.cnn import FrozenBatchNorm2d
from areaser.runs.config import TrainConfig, build_modules
from areaser.train.scoring import _seed, score_windows


def _restart_bn_averages(model: torch.nn.Module) -> None:
    """BatchNorm layers average this epoch's batch statistics equally (``momentum=None``).

    With the default exponential average (momentum 0.1) the statistics an evaluation uses come
    from the last ~10 batches, so dev scores swing from epoch to epoch even where the weights have
    stopped moving (seen on EmoDB's one-speaker dev split); an equal average over the epoch does
    not. Frozen BatchNorm keeps its fixed statistics.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(m, FrozenBatchNorm2d):
            m.reset_running_stats()
            m.momentum = None


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
    ``best.safetensors`` and of :class:`areaser.serve.backends.WaveformClassifier`.
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

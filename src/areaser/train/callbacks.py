"""Lightning callbacks of a run: checkpoints with history, rich progress per epoch."""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from pathlib import Path

import pandas as pd
from lightning.pytorch.callbacks import Callback, Checkpoint
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from areaser.io.files import atomic_write_text
from areaser.runs.checkpoint import save_weights
from areaser.runs.metrics import best_epoch, lower_is_better

# ----------------------------------------------------------------------------- the run


class RunCheckpoint(Checkpoint):
    """Per-epoch bookkeeping: history row, ``best`` weights on dev improvement, ``last`` state.

    A Lightning ``Checkpoint`` callback (so Lightning adds no pickling checkpoint of its own).
    It runs at the end of each training epoch, after validation and early stopping. Its
    state (history, best score) travels inside ``last.safetensors``, so a resumed run
    continues the same history.

    The best epoch is :func:`areaser.runs.metrics.best_epoch` over the history (lowest loss or highest
    score on ``monitor``, earliest on ties), the rule the report's honest reading uses too; ``mode``
    (for early stopping) comes from the same place (:func:`areaser.runs.metrics.lower_is_better`).

    The state also records whether early stopping ended training at the saved epoch (``stopped``:
    Lightning keeps ``trainer.should_stop`` in no checkpoint), so a run resumed from the stopping
    epoch's state stops there too instead of training one more epoch, and the seconds spent in
    ``fit`` so far (``fit_s``), so a resumed run reports its whole training time.
    """

    def __init__(self, paths: dict[str, Path], header: dict, monitor: str):

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
    return Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    )


def _load_progress(bar, total: int):
    """A callback for :func:`areaser.data.windows.load_windows` that advances one 'load audio' task."""
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

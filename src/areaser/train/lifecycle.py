"""Training: one dataclass config -> one Lightning run -> one run directory.

The path of a run (:func:`train`)::

    TrainConfig -> manifest + protocol fold (splits) -> checks -> windows in memory (data)
        -> SERModule (LogMel on the batch, VTLP per example, model) under Lightning
        -> per epoch: dev (and test, when tracked) scored per utterance, history row,
           best.safetensors when dev improves, last.safetensors always
        -> test scored with the dev-chosen weights -> report (reports)

Everything a run needs is in :class:`~areaser.runs.config.TrainConfig` (:mod:`areaser.runs.config`);
it is saved as ``config.json`` and inside every checkpoint. Folds of a protocol and
re-evaluation are :mod:`areaser.train.crossval`. Checkpoints are safetensors + JSON (:mod:`areaser.runs.checkpoint`),
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
    the honest dev-chosen numbers (see :data:`areaser.runs.config.TRAIN_PRESETS`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger

from areaser.data.splits import split_record
from areaser.data.windows import SERDataModule, load_windows
from areaser.io.files import atomic_write_json, check_output_folder, read_json
from areaser.models.baselines import is_baseline
from areaser.runs.calibration import write_calibration
from areaser.runs.checkpoint import (
    CheckpointError,
    SafetensorsCheckpointIO,
    load_tree,
    load_weights,
    read_header,
    run_paths,
)
from areaser.runs.config import ConfigError, TrainConfig, build_modules
from areaser.runs.determinism import DeterminismError, pin_strict
from areaser.runs.fitted import FIT_FILE
from areaser.runs.metrics import best_epoch
from areaser.runs.provenance import console_line
from areaser.runs.reports import write_run_report
from areaser.train.baseline import fit_baseline_run
from areaser.train.callbacks import RichEpochs, RunCheckpoint, _load_progress, make_progress
from areaser.train.crosscorpus import check_test_manifests, score_test_manifests
from areaser.train.folds import _class_weights, prepare_fold
from areaser.train.module import SERModule
from areaser.train.report import build_report
from areaser.train.scoring import _raw_chunks, calibration_record


class RunLockedError(ConfigError):
    """Another process is training the same run directory (it holds ``RUN/.lock``)."""


# the temporary siblings :func:`areaser.io.files.atomic_path` writes: ".<name>.tmp.<8 mkstemp chars><suffix>"
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

        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.file = f
        _remove_stale_temps(self.path.parent)
        return True

    def acquire_new(self, config: Path) -> None:
        """Take the lock before a run's first files are written (if not held already).

        :class:`RunLockedError` when the lock is taken now and ``config`` exists: another process
        created the run meanwhile (a new run is locked only once its folder is made).
        """
        if self.acquire() and config.is_file():
            raise RunLockedError(f"{self.path.parent} was started by another process meanwhile; run the command again")

    def release(self) -> None:
        if self.file is not None:
            import fcntl

            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def _remove_stale_temps(run_dir: Path) -> list[Path]:
    """Remove the temporary files of :func:`areaser.io.files.atomic_path` that a killed process left in ``run_dir``.

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
    :class:`areaser.runs.checkpoint.CheckpointError` before anything is loaded, offering ``--restart``.
    """
    c = (config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)).resolved()
    _set_threads(c)  # first: strict pins code paths that the first computation fixes
    paths = run_paths(Path(c.out_dir) / c.name)
    try:  # a file in the way: one line now, not a traceback where the folder is made
        check_output_folder(paths["dir"])
    except ValueError as e:
        raise ConfigError(f"{e}; choose another --out or --name") from None
    rank0 = (
        int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
        and int(os.environ.get("NODE_RANK", "0")) == 0
    )
    lock = _RunLock(paths["lock"], enabled=rank0)
    try:
        if paths["dir"].is_dir():  # before anything reads or removes its files (a new run: when it is created)
            lock.acquire()
        baseline = is_baseline(c.model)
        state = _decide(c, paths, rank0, resume, baseline, log)
        if isinstance(state, dict):  # finished before: its stored report
            return state
        if baseline:  # a classical baseline: same fold, metrics, run directory and lifecycle, no epochs
            return fit_baseline_run(c, paths, lock, resume=state, bar=bar, log=log)
        return _train(
            c, paths, rank0, lock, has_last=state, callbacks=callbacks, bar=bar, overall_task=overall_task, log=log
        )
    finally:
        lock.release()


def _decide(
    c: TrainConfig, paths: dict[str, Path], rank0: bool, resume: bool | None, baseline: bool, log
) -> dict | bool:
    """Fresh, resumed or finished: the stored report of a finished run, else whether a saved state is resumed.

    The same rules for neural and baseline runs. A run directory holding another config (other than in
    :func:`_same_run`'s free keys) is refused unless ``resume is False`` (``--restart``), which removes
    the old run's results first. A neural run resumes from ``last.safetensors`` (checked here, before any
    data is loaded); a baseline run from its stored fit (:data:`~areaser.runs.fitted.FIT_FILE`: the
    features of both parts), so a run killed before its report is completed without extracting again.
    """
    say = log or (lambda s: None)
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
        (paths["dir"] / FIT_FILE).unlink(missing_ok=True)
        shutil.rmtree(paths["tensorboard"], ignore_errors=True)
    state = paths["dir"] / FIT_FILE if baseline else paths["last"]
    has_state = state.is_file() and resume is not False
    if resume is True and not has_state:
        raise ConfigError(f"nothing to resume: {state} does not exist")
    finished = all(paths[k].is_file() for k in ("done", "report_json", "report_md"))
    if (has_state or baseline) and finished and resume is None:
        say(f"{paths['dir']}: already finished (done.json exists); --restart to train it again")
        return read_json(paths["report_json"], ConfigError)
    if has_state and not baseline:  # found before any data is loaded: a state that cannot be resumed from
        try:
            load_tree(paths["last"])  # readable, a training state, checksum, finite weights
        except CheckpointError as e:
            reason = " ".join(str(e).split())
            raise CheckpointError(
                f"cannot resume: {reason}; --restart trains the run again from scratch "
                f"({paths['best'].name} may still be intact: copy it away first to keep it)"
            ) from None
    return has_state


def _set_threads(c: TrainConfig) -> None:
    """``c.threads`` torch threads; under ``deterministic="strict"`` threads and code paths pinned."""
    if c.deterministic == "strict":
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
    has_last: bool,
    callbacks: Sequence[Any],
    bar,
    overall_task,
    log: Callable[[str], None] | None,
) -> dict:
    """The body of :func:`train` for a neural model.

    ``c`` resolved, the run directory locked (a new one once created); ``has_last``: resume from the
    ``last.safetensors`` :func:`_decide` checked.
    """
    say = log or (lambda s: None)

    # ---- inputs: everything that can be wrong is found before training
    prep = prepare_fold(c)
    if c.test_manifests:  # a cross-corpus manifest that cannot be scored is found before training
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
            lock.acquire_new(paths["config"])
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

    test_ws = sets["test"]
    chosen = int(ckpt.history[best_epoch(ckpt.history, c.monitor)]["epoch"])
    state, best_header = load_weights(paths["best"])
    if int(best_header["epoch"]) != chosen:
        raise RuntimeError(f"{paths['best']} holds epoch {best_header['epoch']}, but {c.monitor} picks epoch {chosen}")
    module.load_state_dict(state)
    module.to("cpu")

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

    write_run_report(paths["dir"], report)

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

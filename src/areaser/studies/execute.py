"""The paper's studies as commands: settings x folds x seeds -> a table and a plot.

A :class:`Study` is a named list of :class:`Setting` s; a setting is a dict of
:class:`areaser.runs.config.TrainConfig` overrides (dotted keys: ``vtlp.impl``,
``model_overrides.max_area``) plus, optionally, a number of offline VTLP copies.
A *run* is one (setting, fold, seed); :func:`run_study` trains every run that has
no result yet, in parallel worker processes, and aggregates::

    study_dir/
      study.json                     what the study was run with (a resume must match)
      augment/<impl>/                offline VTLP copies (areaser.dsp.augment.augment_manifest), made once
      runs/<setting>/<fold>/seed<s>/ the run directory of areaser.train.lifecycle.train, and
        result.json                  written last and atomically: the run is finished
      results.md  results.json  results.png

Resume: a run whose ``result.json`` exists is not run again, so an interrupted study
picks up where it stopped, and asking for more folds or seeds only runs the new ones.

Studies (:data:`STUDIES`):

=================  ==============================================================================
``area-size``      max area 1x1 .. 4x4, with and without VTLP, on both layouts: ``faithful-*`` (1-D
                   spans, what the authors' code computed: the reading of the paper's first figure)
                   and the ``paper`` model as written (2-D areas)
``vtlp-copies``    0..7 offline VTLP copies vs on-the-fly ``melwarp`` (the paper's second study)
``area-features``  key mode mean / max / sample (+ learned modes) x value mode sum / mean / max
``layout``         ``faithful`` vs ``paper`` vs ``cnn`` (+ the classical baselines)
``vtlp-impl``      VTLP off vs ``melwarp`` vs ``stft`` vs ``legacy-time``
=================  ==============================================================================

``quick=True`` shrinks everything for tests and demos: a tiny model, 1 epoch, 1 fold
and a few settings per study.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from concurrent.futures import as_completed
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from areaser.data.manifest import read_manifest
from areaser.dsp.augment import augment_manifest
from areaser.dsp.vtlp import VTLPConfig
from areaser.io.files import atomic_write_json, read_json
from areaser.io.workers import limit_threads, process_pool
from areaser.models.baselines import is_baseline, prosodic_features
from areaser.runs.config import ConfigError, TrainConfig
from areaser.studies.definitions import Study, get_study
from areaser.studies.plan import (
    AblationConfig,
    Run,
    StudyResult,
    _chosen_settings,
    _signature,
    ablate_command,
    plan_runs,
)
from areaser.studies.results import aggregate, write_results
from areaser.train.callbacks import make_progress
from areaser.train.folds import prepare_fold
from areaser.train.lifecycle import train


def execute_run(run: Run, threads: int | None = None) -> dict:
    """Train one run (neural or baseline) and write its ``result.json``; return the result.

    Top-level so worker processes can import it. ``threads`` caps torch's CPU threads.
    """
    if threads:
        torch.set_num_threads(threads)
    c = TrainConfig.from_dict(run.config)
    t0 = time.perf_counter()
    with quiet_lightning():
        report = train(c, log=None)  # neural or baseline
    elapsed = time.perf_counter() - t0
    test = report["test"]
    result = {
        "setting": run.setting.name,
        "fold": run.fold_name,
        "seed": run.seed,
        "wa": test["wa"],
        "ua": test["ua"],
        "macro_f1": test["macro_f1"],
        "n_test": test["n"],
        "selected_epoch": report.get("selected_epoch"),
        "elapsed_s": round(elapsed, 2),
        "confusion": test["confusion"],
        "classes": test["classes"],
        "environment": report.get("environment"),  # threads, CPU, code paths, versions: areaser.runs.determinism
    }
    ph = report.get("paper_and_honest")
    if ph:
        result["paper_max_wa"] = ph["paper"]["max_wa"]
        result["paper_max_ua"] = ph["paper"]["max_ua"]
    atomic_write_json(run.result_path, result)
    return result


@contextlib.contextmanager
def quiet_lightning():
    """Hush Lightning's per-run banners and library warnings.

    A study runs hundreds of runs, and its output is the progress bar and the table. Errors still raise.
    """
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _augment_chunk(sources, out: str, copies: int, impl: str) -> int:
    """Worker: write the copies of a slice of the sources (top-level, so spawn can import it)."""
    return len(augment_manifest(sources, out, copies=copies, config=VTLPConfig(impl=impl), seed=0))


def _prepare_augmentation(
    study_dir: Path, runs: Sequence[Run], cfg: AblationConfig, progress: bool, jobs: int = 1
) -> None:
    """Write the offline VTLP copies the pending runs need, once per implementation.

    With ``jobs > 1`` slices of the sources are copied in worker processes first; the
    final call then finds every file written (augment_manifest keeps finished copies)
    and only writes the manifest of them all.
    """
    need: dict[str, int] = {}  # implementation -> most copies any pending run uses
    for r in runs:
        if r.setting.copies:
            need[r.setting.copy_impl] = max(need.get(r.setting.copy_impl, 0), r.setting.copies)
    if not need:
        return
    # copies are only ever trained on: make them for the training utterances of the folds to run
    train_ids: set[str] = set()
    done: set[tuple[int, int]] = set()
    for r in runs:
        if r.setting.copies and (r.fold, r.seed) not in done:  # a seed may change the split (xu2021, kfold)
            done.add((r.fold, r.seed))
            c = replace(TrainConfig.from_dict(r.config), extra_manifests=[], copies=None).resolved()
            train_ids |= set(prepare_fold(c).parts["train"]["utt_id"])
    df = read_manifest(cfg.manifest)
    sources = df[df["utt_id"].isin(train_ids)]
    for impl, k in need.items():
        out = study_dir / "augment" / impl
        if jobs > 1 and len(sources) >= 4 * jobs:
            with process_pool(jobs, limit_threads, (1,)) as pool:
                chunks = [sources.iloc[i::jobs] for i in range(jobs)]
                list(pool.map(_augment_chunk, chunks, [str(out)] * jobs, [k] * jobs, [impl] * jobs))
        augment_manifest(sources, out, copies=k, config=VTLPConfig(impl=impl), seed=0, progress=progress)


def _warm_caches(runs: Sequence[Run]) -> None:
    """Compile librosa's numba kernels once here, before workers start.

    librosa caches compiled kernels next to its sources; several fresh processes
    compiling the same kernel at once can leave a mismatched cache that crashes every
    later process (numba issue 10128). Importing librosa here writes it first.
    """
    if any(is_baseline(str(r.config.get("model"))) for r in runs):
        prosodic_features(np.sin(np.linspace(0, 2000, 8000)).astype(np.float32))


def run_study(
    study: Study | str,
    cfg: AblationConfig,
    *,
    progress: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> StudyResult:
    """Run every unfinished run of ``study``, then write ``results.md/.json/.png``.

    ``command`` is the command line recorded in ``results.md`` (default: the equivalent
    ``areaser ablate`` call). Raises ``ValueError`` (``ConfigError``) before any training
    when the input cannot work: unknown study or setting, a protocol the corpus cannot
    support, or a study directory that holds another configuration.
    """
    study = get_study(study) if isinstance(study, str) else study
    t0 = time.perf_counter()
    say = log or (lambda s: None)
    study_dir = cfg.study_dir(study)
    sig = _signature(study, cfg)
    meta = study_dir / "study.json"
    if meta.is_file():
        old = read_json(meta, ConfigError)
        diff = sorted(k for k in sig if old.get(k) != sig[k])
        if diff:
            raise ConfigError(
                f"{study_dir} holds study runs made with another {', '.join(diff)}; "
                "use another --out or delete that folder"
            )
    runs = plan_runs(study, cfg)
    study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta, sig)
    todo = [r for r in runs if not r.result_path.is_file()]
    say(f"study {study.name}: {len(runs)} run(s) ({len(runs) - len(todo)} finished already), in {study_dir}")
    jobs = max(1, min(cfg.jobs or os.cpu_count() or 1, len(todo) or 1))
    _prepare_augmentation(study_dir, todo, cfg, progress, jobs)

    done: list[dict] = []

    bar = make_progress() if progress and todo else None
    task = bar.add_task(study.name, total=len(todo), info="") if bar is not None else None

    def finished(r: Run, res: dict) -> None:
        done.append(res)
        if bar is not None:
            bar.update(task, advance=1, info=f"{r.setting.name} {r.fold_name} s{r.seed}: UA {100 * res['ua']:.1f} %")

    try:
        if bar is not None:
            bar.start()
        if jobs == 1:
            for r in todo:
                finished(r, execute_run(r))
        elif todo:
            _warm_caches(todo)
            with process_pool(jobs, limit_threads, (1,)) as pool:
                futures = {pool.submit(execute_run, r, 1): r for r in todo}
                for fut in as_completed(futures):
                    try:
                        res = fut.result()
                    except BaseException:
                        # stop queued runs at once; the running ones finish and keep their results
                        pool.shutdown(wait=False, cancel_futures=True)
                        r = futures[fut]
                        say(f"run {r.setting.name} / {r.fold_name} / seed {r.seed} failed; finished runs are kept")
                        raise
                    finished(futures[fut], res)
    finally:
        if bar is not None:
            bar.stop()

    results = [read_json(r.result_path, ConfigError) for r in runs]
    rows = aggregate(_chosen_settings(study, cfg), results)
    elapsed = time.perf_counter() - t0
    cmd = command or ablate_command(study.name, cfg)
    paths = write_results(study_dir, study, cfg, rows, results, cmd, elapsed, executed=len(done))
    say(f"{len(done)} run(s) trained, {len(runs) - len(todo)} reused; table {paths['md']}")
    return StudyResult(study.name, study_dir, len(done), len(runs) - len(todo), rows, results, paths, elapsed)

"""The paper's studies as commands: settings x folds x seeds -> a table and a plot.

A :class:`Study` is a named list of :class:`Setting` s; a setting is a dict of
:class:`areaser.training.TrainConfig` overrides (dotted keys: ``vtlp.impl``,
``model_overrides.max_area``) plus, optionally, a number of offline VTLP copies.
A *run* is one (setting, fold, seed); :func:`run_study` trains every run that has
no result yet, in parallel worker processes, and aggregates::

    study_dir/
      study.json                     what the study was run with (a resume must match)
      augment/<impl>/                offline VTLP copies (areaser.vtlp.augment_manifest), made once
      runs/<setting>/<fold>/seed<s>/ the run directory of areaser.training.train, and
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
import json
import logging
import os
import shlex
import time
import warnings
from concurrent.futures import as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .config import ConfigError
from .determinism import environment_text, machine_description
from .fileio import atomic_write_json, atomic_write_text, read_json
from .workers import limit_threads, process_pool

__all__ = [
    "Setting",
    "Study",
    "STUDIES",
    "get_study",
    "AblationConfig",
    "StudyResult",
    "Run",
    "plan_runs",
    "quiet_lightning",
    "run_study",
    "execute_run",
    "aggregate",
    "results_table",
    "ablate_command",
    "QUICK_OVERRIDES",
]


# ----------------------------------------------------------------------------- studies


@dataclass(frozen=True)
class Setting:
    """One point of a study.

    name : directory-safe id (``3x3-vtlp``), the row of the table.
    overrides : TrainConfig overrides, dotted keys (``{"model_overrides.max_area": [3, 3]}``).
    copies : offline VTLP copies of every training utterance (0 = none), made with ``copy_impl``.
    copy_impl : ``stft`` or ``legacy-time`` (:func:`areaser.vtlp.augment_manifest`).
    label : what the setting is, in words (table and plot).
    series, x : where the plot puts it: ``x`` a number on a line named ``series``;
        ``x=None`` is drawn as a horizontal reference line (line plots) or a bar group.
    """

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    copies: int = 0
    copy_impl: str = "stft"
    label: str = ""
    series: str = ""
    x: float | None = None


@dataclass(frozen=True)
class Study:
    """A named list of settings; ``quick`` names the settings a quick run keeps."""

    name: str
    title: str
    description: str
    settings: tuple[Setting, ...]
    quick: tuple[str, ...]
    xlabel: str = ""

    def select(self, quick: bool) -> tuple[Setting, ...]:
        return tuple(s for s in self.settings if s.name in self.quick) if quick else self.settings


NO_VTLP = {"vtlp.impl": "none"}
MELWARP = {"vtlp.impl": "melwarp"}
BASELINE_MODELS = ("egemaps-lr", "egemaps-svm")


# The area-size study on both layouts. The paper's figure came from the authors' code, whose areas are
# 1-D time spans inside each frequency row (``faithful``: max_area_height is ignored, "a x a" is 1 x a);
# the ``paper`` model runs the paper as written (2-D areas of up to a x a over the whole map).
AREA_SIZE_MODELS = (
    ("faithful", "faithful-", "1-D time spans up to 1x{a} (\"{a}x{a}\" in the authors' code: the paper's figure)"),
    ("paper", "", "2-D areas up to {a}x{a} (the paper as written)"),
)


def _area_size() -> Study:
    settings = []
    for model, prefix, what in AREA_SIZE_MODELS:
        for vtlp, ov in (("no VTLP", NO_VTLP), ("VTLP (melwarp)", MELWARP)):
            for a in (1, 2, 3, 4):
                tag = "vtlp" if vtlp != "no VTLP" else "novtlp"
                settings.append(
                    Setting(
                        f"{prefix}{a}x{a}-{tag}",
                        {"model": model, **ov, "model_overrides.max_area": [a, a]},
                        label=f"`{model}`: {what.format(a=a)}, {vtlp}",
                        series=f"{model}, {vtlp}",
                        x=a,
                    )
                )
    return Study(
        "area-size",
        "Max area size, with and without VTLP, on both attention layouts",
        "The paper's first figure: multiscale area attention with the largest area 1x1 (plain attention) up "
        "to 4x4, trained on original data and with VTLP. The paper found 4x4 best on original data and 3x3 "
        "best with VTLP. Its numbers came from the authors' code, whose areas are 1-D time spans inside each "
        "frequency row (max area 'a x a' is really 1 x a): the `faithful-*` settings (model `faithful`) are "
        "the reading of the paper's figure (the model's layout; like the `layout` study, every setting trains "
        "with the study's common options, not with `--preset faithful`'s Keras constants). "
        "The other settings run the `paper` model, the paper as written "
        "(2-D areas of up to a x a over the whole map, Q/K/V projections, 1/sqrt(d) scaling): what the figure "
        "would be had the code done what the text says.",
        tuple(settings),
        ("1x1-novtlp", "2x2-novtlp", "2x2-vtlp"),
        xlabel="max area (a x a; faithful: 1 x a spans)",
    )


def _vtlp_copies() -> Study:
    settings = [
        Setting(
            f"copies{k}",
            dict(NO_VTLP),
            copies=k,
            copy_impl="stft",
            label=f"{k} offline VTLP copies (stft)" if k else "no augmentation",
            series="offline copies (stft)",
            x=k,
        )
        for k in range(8)
    ]
    settings.append(
        Setting(
            "melwarp",
            dict(MELWARP),
            label="on-the-fly VTLP (melwarp), a new warp every epoch",
            series="melwarp (on the fly)",
            x=None,
        )
    )
    return Study(
        "vtlp-copies",
        "Offline VTLP copies vs on-the-fly VTLP",
        "The paper's second study: 0 to 7 VTLP-augmented copies of every training file (more copies, higher "
        "accuracy), against drawing a new warp factor per example and epoch inside the log-Mel front end.",
        tuple(settings),
        ("copies0", "copies1", "melwarp"),
        xlabel="offline VTLP copies per training utterance",
    )


def _area_features() -> Study:
    from .attention import LEARNED_KEY_MODES, VALUE_MODES

    settings = [
        Setting(
            f"key-{k}-value-{v}",
            {"model_overrides.key_mode": k, "model_overrides.value_mode": v},
            label=f"key {k}, value {v}",
            series=f"value {v}",
        )
        for k in ("mean", "max", "sample")
        for v in VALUE_MODES
    ]
    settings += [
        Setting(
            f"key-{k}-value-sum",
            {"model_overrides.key_mode": k, "model_overrides.value_mode": "sum"},
            label=f"key {k} (learned), value sum",
            series="value sum",
        )
        for k in LEARNED_KEY_MODES
    ]
    return Study(
        "area-features",
        "Area key and value features",
        "The paper's third study: how an area's key is summarised (mean, max, or mean + std x noise 'sample') "
        "and how its value is (sum, mean, max); tensor2tensor's learned key modes (height / width embeddings "
        "and a 2-layer MLP) with the default sum value.",
        tuple(settings),
        ("key-max-value-mean", "key-sample-value-max", "key-sum-value-sum"),
    )


def _layout() -> Study:
    settings = (
        Setting(
            "faithful", {"model": "faithful"}, label="what the authors' code computes (1-D areas in frequency rows)"
        ),
        Setting("paper", {"model": "paper"}, label="what the paper describes (2-D areas, Q/K/V, scaling)"),
        Setting("cnn", {"model": "cnn"}, label="the same CNN without attention"),
        Setting("egemaps-lr", {"model": "egemaps-lr"}, label="eGeMAPS-like functionals + logistic regression"),
        Setting("egemaps-svm", {"model": "egemaps-svm"}, label="eGeMAPS-like functionals + RBF SVM"),
    )
    return Study(
        "layout",
        "Attention layout and baselines",
        "What the authors' code computes (`faithful`) against what the paper describes (`paper`) and against "
        "no attention at all (`cnn`), with two classical baselines on the same folds.",
        settings,
        ("faithful", "cnn", "egemaps-lr"),
    )


def _vtlp_impl() -> Study:
    settings = (
        Setting("none", dict(NO_VTLP), label="no VTLP"),
        Setting("melwarp", dict(MELWARP), label="warped mel filterbank, on the fly (default)"),
        Setting("stft", dict(NO_VTLP), copies=1, copy_impl="stft", label="1 offline copy, STFT frequency warp"),
        Setting(
            "legacy-time",
            dict(NO_VTLP),
            copies=1,
            copy_impl="legacy-time",
            label="1 offline copy, the authors' nlpaug time warp",
        ),
    )
    return Study(
        "vtlp-impl",
        "VTLP implementations",
        "VTLP as the project does it on the fly (`melwarp`), as a waveform rewrite (`stft`, one offline copy "
        "like the authors' committed script) and as the authors' nlpaug release really did it (`legacy-time`, "
        "frames warped in time).",
        settings,
        ("melwarp", "stft", "legacy-time"),
    )


STUDIES: dict[str, Study] = {
    s.name: s for s in (_area_size(), _vtlp_copies(), _area_features(), _layout(), _vtlp_impl())
}


def get_study(name: str) -> Study:
    """Look up a study by name; the error lists the names."""
    try:
        return STUDIES[name]
    except KeyError:
        raise ValueError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}") from None


# tiny model and data for --quick (tests, demos): minutes become seconds
QUICK_OVERRIDES: dict[str, Any] = {
    "model_overrides.channels": [4, 4, 8, 8, 8],
    "features.n_mels": 16,  # with the 50 ms hop: an 8 x 10 attention map instead of 64 x 20
    "features.hop_length": 800,
    "segments.test_hop_s": 1.0,
    "batch_size": 16,
    "lr": 1e-3,  # one epoch at the paper's 1e-4 barely moves the weights
    "patience": None,
    "threads": 1,  # a tiny model gains nothing from more, and loses much on a busy machine
}


# ----------------------------------------------------------------------------- config and plan


@dataclass
class AblationConfig:
    """How to run a study.

    manifest : corpus manifest CSV (``areaser scan`` / ``areaser synth``).
    protocol : ``loso`` (default), ``xu2021``, ``lospk``, ``kfold``.
    folds : run the first ``folds`` folds of the protocol (``None`` = all; 1 with ``quick``).
    seeds : training seeds; every fold is run once per seed (under ``xu2021`` and ``kfold`` the
        seed also draws the split, see :func:`areaser.splits.make_folds`).
    epochs : training epochs (``None`` = the protocol's default).
    jobs : worker processes (``None`` = one per CPU core); runs are independent.
    out : the study directory (``None`` = ``runs/ablations/<study>-<protocol>``).
    quick : tiny model, 1 epoch, 1 fold, few settings (tests and demos).
    overrides : extra TrainConfig overrides for every run (dotted keys); a study's own
        setting wins where both set a key.
    settings : run only these settings of the study (``None`` = all, or the quick ones).
    """

    manifest: str
    protocol: str = "loso"
    folds: int | None = None
    seeds: tuple[int, ...] = (0,)
    epochs: int | None = None
    jobs: int | None = None
    out: str | None = None
    quick: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    settings: tuple[str, ...] | None = None

    def study_dir(self, study: Study) -> Path:
        return Path(self.out) if self.out else Path("runs") / "ablations" / f"{study.name}-{self.protocol}"


@dataclass(frozen=True)
class Run:
    """One unit of work: a setting on one fold with one seed (picklable for the workers)."""

    setting: Setting
    fold: int
    fold_name: str
    seed: int
    run_dir: str
    config: dict  # TrainConfig as a dict, complete

    @property
    def result_path(self) -> Path:
        return Path(self.run_dir) / "result.json"


@dataclass
class StudyResult:
    """What :func:`run_study` did: ``executed`` runs now, ``skipped`` finished ones, the table."""

    study: str
    study_dir: Path
    executed: int
    skipped: int
    rows: list[dict]
    runs: list[dict]
    paths: dict[str, Path]
    elapsed_s: float


def _split_model_overrides(flat: Mapping[str, Any]) -> tuple[dict, dict]:
    """Dotted overrides -> (TrainConfig overrides, model_overrides dict merged key by key)."""
    plain, model = {}, {}
    for k, v in flat.items():
        if k.startswith("model_overrides."):
            model[k.split(".", 1)[1]] = v
        elif k == "model_overrides":
            model.update(dict(v))
        else:
            plain[k] = v
    return plain, model


def _train_config(cfg: AblationConfig, setting: Setting, extra_manifest: str | None):
    from .baselines import is_baseline
    from .training import config_with

    # later layers win: quick defaults < the user's overrides < --epochs < what the study varies
    layers: list[Mapping[str, Any]] = [
        {**QUICK_OVERRIDES, "epochs": 1} if cfg.quick else {},
        cfg.overrides,
        {"epochs": cfg.epochs} if cfg.epochs is not None else {},
        setting.overrides,
    ]
    flat: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for layer in layers:
        plain, mo = _split_model_overrides(layer)
        flat.update(plain)
        model.update(mo)
    if is_baseline(str(flat.get("model", ""))):
        model = {}  # a baseline has no neural model to configure
    if setting.copies:
        flat.update({"extra_manifests": [extra_manifest], "copies": setting.copies})
    return config_with(
        None,
        manifest=str(cfg.manifest),
        protocol=cfg.protocol,
        model_overrides=model,
        progress=False,
        tensorboard=False,
        **flat,
    )


def plan_runs(study: Study, cfg: AblationConfig) -> list[Run]:
    """Every run of the study (finished or not), in setting-major order; checks configs first."""
    from .baselines import is_baseline
    from .training import ConfigError, build_modules, prepare_fold

    settings = _chosen_settings(study, cfg)
    study_dir = cfg.study_dir(study)
    runs = []
    fold_names: list[str] | None = None
    for s in settings:
        # the copies' manifest, written by run_study before any training
        extra = str(study_dir / "augment" / s.copy_impl / "manifest.csv") if s.copies else None
        base = _train_config(cfg, s, extra)
        if fold_names is None:
            prep = prepare_fold(replace(base, extra_manifests=[], copies=None).resolved())
            n = cfg.folds or (1 if cfg.quick else prep.n_folds)
            if not 1 <= n <= prep.n_folds:
                raise ConfigError(f"--folds {n}: protocol {cfg.protocol!r} has {prep.n_folds} fold(s) on this corpus")
            fold_names = [
                prepare_fold(replace(base, fold=i, extra_manifests=[], copies=None).resolved()).fold.name
                for i in range(n)
            ]
        if not is_baseline(base.model):
            build_modules(base, n_classes=len(prep.classes))  # a bad model option fails here, not in a worker
        for i, fname in enumerate(fold_names):
            for seed in cfg.seeds:
                d = study_dir / "runs" / s.name / fname / f"seed{seed}"
                c = replace(base, fold=i, seed=seed, out_dir=str(d.parent), name=d.name)
                runs.append(Run(s, i, fname, seed, str(d), c.to_dict()))
    return runs


def _chosen_settings(study: Study, cfg: AblationConfig) -> tuple[Setting, ...]:
    if cfg.settings is None:
        return study.select(cfg.quick)
    known = {s.name: s for s in study.settings}
    bad = [n for n in cfg.settings if n not in known]
    if bad:
        raise ValueError(f"study {study.name!r} has no setting(s) {bad}; its settings: {', '.join(known)}")
    return tuple(known[n] for n in cfg.settings)


# ----------------------------------------------------------------------------- running


def _signature(study: Study, cfg: AblationConfig) -> dict:
    """What a resumed study must share with the first invocation (folds, seeds, jobs may change)."""
    return {
        "study": study.name,
        "manifest": str(Path(cfg.manifest).resolve()),
        "protocol": cfg.protocol,
        "epochs": cfg.epochs,
        "quick": cfg.quick,
        "overrides": json.loads(json.dumps(cfg.overrides)),
    }


def execute_run(run: Run, threads: int | None = None) -> dict:
    """Train one run (neural or baseline) and write its ``result.json``; return the result.

    Top-level so worker processes can import it. ``threads`` caps torch's CPU threads.
    """
    import torch

    from .training import TrainConfig, train

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
        "environment": report.get("environment"),  # threads, CPU, code paths, versions: areaser.determinism
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
    from .vtlp import VTLPConfig, augment_manifest

    return len(augment_manifest(sources, out, copies=copies, config=VTLPConfig(impl=impl), seed=0))


def _prepare_augmentation(
    study_dir: Path, runs: Sequence[Run], cfg: AblationConfig, progress: bool, jobs: int = 1
) -> None:
    """Write the offline VTLP copies the pending runs need, once per implementation.

    With ``jobs > 1`` slices of the sources are copied in worker processes first; the
    final call then finds every file written (augment_manifest keeps finished copies)
    and only writes the manifest of them all.
    """
    from .manifest import read_manifest
    from .training import TrainConfig, prepare_fold
    from .vtlp import VTLPConfig, augment_manifest

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
    import librosa  # noqa: F401  (eager signatures compile and cache at import)

    from .baselines import is_baseline, prosodic_features

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
    from .training import make_progress

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


def ablate_command(study: str, cfg: AblationConfig) -> str:
    """The ``areaser ablate`` command line equivalent to ``cfg``."""
    args = ["areaser", "ablate", study, "--manifest", str(cfg.manifest), "--protocol", cfg.protocol]
    if cfg.folds is not None:
        args += ["--folds", str(cfg.folds)]
    if tuple(cfg.seeds) != (0,):
        args += ["--seeds", ",".join(str(s) for s in cfg.seeds)]
    if cfg.epochs is not None:
        args += ["--epochs", str(cfg.epochs)]
    if cfg.jobs is not None:
        args += ["--jobs", str(cfg.jobs)]
    if cfg.out:
        args += ["--out", str(cfg.out)]
    if cfg.quick:
        args.append("--quick")
    if cfg.settings is not None:
        args += ["--only", ",".join(cfg.settings)]
    for k, v in cfg.overrides.items():
        args += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    return shlex.join(args)


# ----------------------------------------------------------------------------- aggregation and output


METRICS = ("wa", "ua", "macro_f1")


def aggregate(settings: Sequence[Setting], results: Sequence[Mapping]) -> list[dict]:
    """One row per setting: mean +- std (sample std over runs) of WA, UA, macro-F1."""
    from .metrics import summarise_runs

    rows = []
    for s in settings:
        rs = [r for r in results if r["setting"] == s.name]
        keys = list(METRICS) + (["paper_max_wa", "paper_max_ua"] if rs and "paper_max_wa" in rs[0] else [])
        rows.append(
            {
                "setting": s.name,
                "label": s.label,
                "series": s.series,
                "x": s.x,
                "runs": len(rs),
                "run_s": float(np.mean([r["elapsed_s"] for r in rs])) if rs else 0.0,
                **summarise_runs(rs, keys),
            }
        )
    return rows


def _pm(cell: Mapping) -> str:
    from .reports import pct

    return f"{pct(cell['mean'])} +- {pct(cell['std'])}"


def results_table(rows: Sequence[Mapping]) -> str:
    """Markdown table: setting, what it is, runs, WA / UA / macro-F1 (mean +- std, %), time per run."""
    paper = any("paper_max_wa" in r for r in rows)
    header = ["setting", "what", "runs", "WA %", "UA %", "macro-F1 %"]
    header += ["paper maxWA %", "paper maxUA %"] if paper else []
    header.append("s / run")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    best = {k: max(r[k]["mean"] for r in rows) for k in METRICS}
    tied = {k: all(r[k]["mean"] == best[k] for r in rows) for k in METRICS}  # nothing to point out
    for r in rows:
        cells = [f"`{r['setting']}`", r["label"], str(r["runs"])]
        for k in METRICS:
            cell = _pm(r[k])
            cells.append(f"**{cell}**" if r[k]["mean"] == best[k] and not tied[k] else cell)
        if paper:
            cells += [_pm(r[k]) if k in r else "-" for k in ("paper_max_wa", "paper_max_ua")]  # baselines: no epochs
        cells.append(f"{r['run_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(
    study_dir: Path,
    study: Study,
    cfg: AblationConfig,
    rows: Sequence[Mapping],
    results: Sequence[Mapping],
    command: str,
    elapsed_s: float,
    executed: int,
) -> dict[str, Path]:
    """``results.md`` (table + command), ``results.json`` (everything), ``results.png`` (plot)."""
    paths = {"md": study_dir / "results.md", "json": study_dir / "results.json", "png": study_dir / "results.png"}
    c0 = results[0] if results else {}
    machine = machine_description()
    # invocations that trained something: the study's cost survives resumes
    old = read_json(paths["json"], ConfigError) if paths["json"].is_file() else {}
    invocations = [i for i in old.get("invocations", []) if i.get("study_signature") == _signature(study, cfg)]
    if executed:
        invocations.append(
            {
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "wall_s": round(elapsed_s, 1),
                "runs_trained": executed,
                "jobs": cfg.jobs or os.cpu_count(),
                "machine": machine,
                "study_signature": _signature(study, cfg),
            }
        )
    wall = sum(i["wall_s"] for i in invocations)
    meta = {
        "study": study.name,
        "title": study.title,
        "command": command,
        "protocol": cfg.protocol,
        "manifest": str(cfg.manifest),
        "folds": sorted({r["fold"] for r in results}),
        "seeds": list(cfg.seeds),
        "epochs": cfg.epochs,
        "quick": cfg.quick,
        "overrides": cfg.overrides,
        "machine": machine,
        "wall_s": round(wall, 1),
        "run_s_total": round(sum(r["elapsed_s"] for r in results), 1),
        "classes": c0.get("classes", []),
        "invocations": invocations,
    }
    atomic_write_json(paths["json"], {**meta, "rows": list(rows), "runs": list(results)})
    plot_results(rows, study, paths["png"], meta["classes"])
    n_runs = len(results)
    md = [
        f"# {study.title} (`{study.name}`, protocol `{cfg.protocol}`)",
        "",
        study.description,
        "",
        "```bash",
        command,
        "```",
        "",
        results_table(rows),
        "",
        f"Mean +- sample std over {n_runs // max(1, len(rows))} run(s) per setting (folds {', '.join(meta['folds'])}; "
        f"seeds {', '.join(map(str, cfg.seeds))}); best mean in bold; "
        f"chance is {100 / max(1, len(meta['classes'])):.0f} % UA. "
        "Test-set scores; a neural model is scored with the weights of the epoch chosen on the fold's dev split."
        + (
            " *paper maxWA / maxUA*: maxima over epochs of test scores, the paper's optimistic reading, not "
            "comparable with the honest columns."
            if any("paper_max_wa" in r for r in rows)
            else ""
        ),
        "",
        f"Time: {wall:.0f} s wall clock in {len(invocations)} invocation(s) that trained runs "
        f"({', '.join(_invocation(i) for i in invocations) or 'none'}), "
        f"{meta['run_s_total']:.0f} s summed over runs; machine: {machine}.",
        "",
        *sorted({f"Environment: {environment_text(r['environment'])}." for r in results if r.get("environment")}),
        "",
        "![results](results.png)",
        "",
    ]
    atomic_write_text(paths["md"], "\n".join(md))
    return paths


def _invocation(i: Mapping) -> str:
    return f"{i['runs_trained']} run(s) with {i['jobs']} worker(s)"


def plot_results(rows: Sequence[Mapping], study: Study, path: Path, classes: Sequence[str] = ()) -> Path:
    """Plot a study's results to a PNG at ``path``.

    Lines with error bars where settings have a numeric ``x`` (like the paper's figures), grouped bars of
    WA / UA / macro-F1 otherwise.
    """
    from .reports import _pyplot, _save

    plt = _pyplot()
    numeric = [r for r in rows if r["x"] is not None]
    if numeric:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True)
        for ax, key, name in zip(axes, ("wa", "ua"), ("WA", "UA")):
            names = list(dict.fromkeys(r["series"] for r in numeric))
            for i, series in enumerate(names):
                pts = sorted((r for r in numeric if r["series"] == series), key=lambda r: r["x"])
                dx = 0.04 * (i - (len(names) - 1) / 2)  # side by side, so error bars do not hide each other
                ax.errorbar(
                    [r["x"] + dx for r in pts],
                    [100 * r[key]["mean"] for r in pts],
                    yerr=[100 * r[key]["std"] for r in pts],
                    marker="o",
                    capsize=3,
                    label=series,
                    color=f"C{i}",
                )
            for j, r in enumerate(r for r in rows if r["x"] is None):
                m, s = 100 * r[key]["mean"], 100 * r[key]["std"]
                color = f"C{j + 3}"
                ax.axhline(m, ls="--", color=color, label=r["series"] or r["setting"])
                ax.axhspan(m - s, m + s, color=color, alpha=0.12)
            xs = sorted({r["x"] for r in numeric})
            ax.set_xticks(xs)
            if study.name == "area-size":
                ax.set_xticklabels([f"{int(x)}x{int(x)}" for x in xs])
            ax.set_xlabel(study.xlabel)
            ax.set_title(f"{name} (mean +- std over runs)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("%")
        axes[1].legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4.2), dpi=100)
        x = np.arange(len(rows))
        w = 0.27
        for i, (key, name) in enumerate((("wa", "WA"), ("ua", "UA"), ("macro_f1", "macro-F1"))):
            ax.bar(
                x + (i - 1) * w,
                [100 * r[key]["mean"] for r in rows],
                w,
                yerr=[100 * r[key]["std"] for r in rows],
                capsize=2,
                label=name,
            )
        ax.set_xticks(
            x,
            [r["setting"] for r in rows],
            rotation=30 if len(rows) > 4 else 0,
            ha="right" if len(rows) > 4 else "center",
        )
        if classes:
            ax.axhline(100 / len(classes), ls=":", color="grey", label="chance (UA)")
        ax.set_ylabel("%")
        ax.set_title("mean +- std over runs")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{study.title}")
    fig.tight_layout()
    return _save(fig, path)

"""A study planned into runs: one training config per setting and seed, with a signature."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from areaser.models.baselines import is_baseline
from areaser.runs.config import ConfigError, build_modules, config_with
from areaser.studies.definitions import Setting, Study
from areaser.train.folds import prepare_fold

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
        seed also draws the split, see :func:`areaser.data.splits.make_folds`).
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
                raise ConfigError(
                    f"--first-folds {n}: protocol {cfg.protocol!r} has {prep.n_folds} fold(s) on this corpus"
                )
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


def ablate_command(study: str, cfg: AblationConfig) -> str:
    """The ``areaser ablate`` command line equivalent to ``cfg``."""
    args = ["areaser", "ablate", study, str(cfg.manifest), "--protocol", cfg.protocol]
    if cfg.folds is not None:
        args += ["--first-folds", str(cfg.folds)]
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

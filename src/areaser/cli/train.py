"""Training verbs: train, cv, evaluate, ablate and the demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from areaser.cli.app import app, console, fail
from areaser.cli.options import (
    _LABELS,
    _OUT_SHORT,
    _PROGRESS,
    TrainOptions,
    _log,
    _parse_sets,
    _print_config,
    _quiet_lightning,
    out_folder,
    renamed,
    train_config,
    train_options,
)


@app.command("train")
@train_options
def train_cmd(
    fold: Optional[int] = typer.Option(
        None, "--fold", "-f", min=0, help="Fold index, from 0 (loso: 0 holds out Ses01)."
    ),
    *,
    opts: TrainOptions,
) -> None:
    """Train one fold of a protocol; writes runs/NAME/ (config, checkpoints, metrics, report).

    Ctrl-C or a crash loses at most the epoch in progress: run the same command again to resume.
    """
    from areaser.runs.checkpoint import CheckpointError
    from areaser.runs.config import ConfigError
    from areaser.train.lifecycle import train

    _quiet_lightning()
    cfg = train_config(opts, fold=fold)
    if opts.print_config:
        return _print_config(cfg)
    try:
        train(cfg, resume=opts.resume, log=_log)
    except (ConfigError, CheckpointError) as e:  # a checkpoint that cannot be resumed from: the line offers --restart
        raise fail(str(e)) from None


@app.command("cv")
@train_options
def cv_cmd(
    folds: Optional[str] = typer.Option(None, "--folds", help="Comma-separated fold indices to run (default: all)."),
    *,
    opts: TrainOptions,
) -> None:
    """Run every fold of a protocol (or --folds) and write the aggregate report (mean +- std).

    Folds run one after the other into runs/NAME/<fold>/; finished folds are kept when re-run.
    """
    from areaser.runs.checkpoint import CheckpointError
    from areaser.runs.config import ConfigError
    from areaser.train.crossval import cross_validate

    _quiet_lightning()
    cfg = train_config(opts)
    if opts.print_config:  # the config every fold shares, under the cv's name (each fold's own differs in fold, name)
        from dataclasses import replace

        return _print_config(replace(cfg, name=cfg.name or f"{cfg.model}-{cfg.protocol}"))
    try:
        chosen = None if folds is None else [int(f) for f in folds.split(",") if f.strip()]
    except ValueError:
        raise fail(f"--folds expects comma-separated integers, got {folds!r}") from None
    try:
        cross_validate(cfg, chosen, resume=opts.resume, log=_log)
    except (ConfigError, CheckpointError) as e:  # a fold's checkpoint that cannot be resumed from: offers --restart
        raise fail(str(e)) from None


@app.command(
    "evaluate",
    help="Score a trained run again on its test utterances (those of RUN/split.json) "
    "and rewrite its report (JSON, Markdown, PNG).\n\n"
    "The utterances are found through the run's manifest, whose relative path is relative to the folder training "
    "ran in, not the current one. If any is missing from it or has changed (its audio's SHA-1, where split.json "
    "records it), nothing is scored, the report is left as it is, and the command fails (exit 2).\n\n"
    "With --test-manifest: score it on every original utterance of another corpus instead (cross-corpus).",
)
def evaluate_cmd(
    run: Path = typer.Argument(
        ..., help="A run directory of `areaser train` (neural or egemaps baseline), or of `areaser cv` (every fold)."
    ),
    test_manifest: list[Path] = typer.Option(
        [],
        "--test-manifest",
        metavar="CSV",
        help="Score the run on this other corpus' manifest instead (cross-corpus; repeatable): "
        "classes matched by name through the run's label set, report in RUN/cross/<corpus>/; "
        "the run's own report is kept.",
    ),
    old_manifest: list[Path] = typer.Option([], "--manifest", "-m", hidden=True, help="Deprecated: --test-manifest."),
) -> None:
    from areaser.data.manifest import ManifestError
    from areaser.runs.checkpoint import CheckpointError
    from areaser.runs.config import ConfigError
    from areaser.train.crosscorpus import evaluate_on
    from areaser.train.evaluate import evaluate_run

    manifest = renamed(test_manifest, old_manifest, new="--test-manifest", old="--manifest (-m)", where="in evaluate")
    _quiet_lightning()
    try:
        if not manifest:
            evaluate_run(run, log=_log)
        for m in manifest:
            evaluate_on(run, m, log=_log)
    except (ConfigError, CheckpointError, ManifestError) as e:
        raise fail(str(e)) from None
    if not manifest:
        console.print(f"report: {run / 'report.md'}", highlight=False)


@app.command(
    "demo",
    help="The whole job on the built-in SYNTHETIC corpus: train on four sessions, test on the fifth, "
    "report, classify a file.",
)
def demo_cmd(
    data: Path = typer.Option(Path("data/builtin"), "--data", help="Where the built-in corpus is (written if absent)."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder of run directories (default runs); the demo run is OUT/demo."
    ),
    out_short: Optional[Path] = _OUT_SHORT,
    n: int = typer.Option(1000, "--n", min=100, help="Utterances of the built-in corpus."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (default: the demo's tuned value)."),
    progress: bool = _PROGRESS,
) -> None:
    from areaser.builtin.demo import run_demo
    from areaser.runs.config import ConfigError

    out = out_folder(out, out_short) or Path("runs")
    _quiet_lightning()
    try:
        run_demo(data, out, n_utterances=n, epochs=epochs, progress=progress, console=console)
    except ConfigError as e:
        raise fail(str(e)) from None


@app.command(
    "ablate",
    help="Run one of the paper's studies: every setting x fold x seed, then a table and a plot.\n\n"
    "Studies: area-size (max area 1x1..4x4, with and without VTLP), vtlp-copies (0..7 offline VTLP copies vs "
    "on-the-fly melwarp), area-features (key mode x value mode), layout (faithful vs paper vs cnn, plus the "
    "egemaps-lr / egemaps-svm baselines), vtlp-impl (none, melwarp, stft, legacy-time).\n\n"
    "Runs go to worker processes; a run whose result exists is not run again, so an interrupted study resumes. Writes "
    "results.md (mean +- std of WA, UA, macro-F1 per setting), results.json and results.png in the study folder.",
)
def ablate_cmd(
    study: str = typer.Argument(..., help="area-size, vtlp-copies, area-features, layout or vtlp-impl."),
    manifest: Optional[Path] = typer.Argument(
        None, show_default=False, help="Corpus manifest CSV (areaser scan / areaser synth); required."
    ),
    protocol: str = typer.Option("loso", "--protocol", "-p", help="loso, lospk, kfold, random or xu2021."),
    labels: Optional[str] = _LABELS,
    first_folds: Optional[int] = typer.Option(
        None, "--first-folds", min=1, help="Run the first N folds (default: all)."
    ),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated training seeds; each fold runs once per seed."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Training epochs (default: the protocol's)."),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", min=1, help="Parallel worker processes (default: one per core)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Study folder (default: runs/ablations/STUDY-PROTOCOL)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny model, 1 epoch, 1 fold, few settings: a demo in seconds."),
    only: Optional[str] = typer.Option(
        None, "--only", help="Comma-separated settings of the study to run (default: all)."
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="KEY=VALUE training override for every run, dotted keys, JSON values "
        "(e.g. --set model_overrides.channels=[8,8,16,16,16] --set batch_size=64).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    # the spellings of earlier releases, hidden: --manifest/-m (now MANIFEST), --folds N (now --first-folds),
    # -o (now --out); --folds elsewhere is a list of fold indices, -m is --model
    old_manifest: Optional[Path] = typer.Option(None, "--manifest", "-m", hidden=True, help="Deprecated: MANIFEST."),
    old_folds: Optional[int] = typer.Option(None, "--folds", min=1, hidden=True, help="Deprecated: --first-folds."),
    out_short: Optional[Path] = _OUT_SHORT,
) -> None:
    import shlex

    from areaser.studies.definitions import get_study
    from areaser.studies.execute import run_study
    from areaser.studies.plan import AblationConfig
    from areaser.studies.results import results_table

    manifest = renamed(
        manifest,
        old_manifest,
        new="MANIFEST",
        old="--manifest (-m)",
        where="in ablate",
        instead="give the manifest after STUDY: areaser ablate STUDY MANIFEST",
    )
    folds = renamed(first_folds, old_folds, new="--first-folds", old="--folds N", where="in ablate")
    out = out_folder(out, out_short)
    if manifest is None:
        raise fail("missing MANIFEST: areaser ablate STUDY MANIFEST (a corpus manifest CSV)")
    try:
        st = get_study(study)
    except ValueError as e:
        raise fail(str(e)) from None
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise fail(f"--seeds must be integers separated by commas, got {seeds!r}") from None
    overrides = _parse_sets(set_)
    if labels is not None:
        overrides["label_set"] = labels
    if not manifest.is_file():
        raise fail(f"{manifest}: manifest not found (write one with `areaser scan` or `areaser synth`)")
    cfg = AblationConfig(
        manifest=str(manifest),
        protocol=protocol,
        folds=folds,
        seeds=seed_list or (0,),
        epochs=epochs,
        jobs=jobs,
        out=str(out) if out else None,
        quick=quick,
        overrides=overrides,
        settings=tuple(s.strip() for s in only.split(",") if s.strip()) if only else None,
    )
    try:
        res = run_study(
            st,
            cfg,
            progress=progress,
            command=shlex.join(["areaser", *sys.argv[1:]]),
            log=lambda s: console.print(s, highlight=False, soft_wrap=True),
        )
    except ValueError as e:  # ConfigError, SplitError: one line
        raise fail(str(e)) from None
    console.print(results_table(res.rows), highlight=False, soft_wrap=True)

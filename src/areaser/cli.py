"""Command line: a thin layer over the Python API (``areaser --help``).

Each command imports what it needs inside its body so ``--help`` stays fast.
Errors a user can fix (bad audio, bad manifest, bad option) print one line on
stderr and exit non-zero; they never print a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import typer
from rich.console import Console

from . import __version__

app = typer.Typer(
    name="areaser",
    help="Speech emotion recognition with multiscale area attention and VTLP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# soft_wrap: a line longer than the terminal is left for the terminal to wrap, never broken by rich, so
# paths and error lines stay whole (copy-pasteable, greppable); tables still fit the width
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def printable(text: object) -> str:
    """``text`` for the console on one line, control characters and rich markup escaped.

    A newline in a file name is shown as a backslash and ``n``, not as a second line; a ``[bold]``
    in a name stays text.
    """
    from rich.markup import escape

    return escape("".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text)))


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print one clear error line and return an Exit to raise."""
    err_console.print(f"[bold red]error:[/] {printable(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        console.print(f"areaser {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Speech emotion recognition with multiscale area attention and VTLP."""


# ----------------------------------------------------------------------------- data


def _print_counts(tab: "pandas.DataFrame", title: str) -> None:  # noqa: F821 (imported lazily)
    """Print a ``count_table`` as a compact rich table, the longer axis down the rows."""
    from rich import box
    from rich.table import Table

    if tab.shape[0] < tab.shape[1]:  # keeps the table narrow enough for an 80-column terminal
        tab = tab.T
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    table.add_column(str(tab.index.name))  # the title names both axes
    for col in tab.columns:
        table.add_column(str(col) or '""', justify="right")
    for idx, row in tab.iterrows():
        table.add_row(str(idx) or '""', *(f"{v:,}" for v in row))
    console.print(table)
    console.print()


@app.command("scan")
def scan(
    corpus: str = typer.Argument(..., help="Loader: iemocap, ravdess, cremad, emodb, tess, savee or generic."),
    root: Path = typer.Argument(
        ..., help="The corpus folder; for generic a folder per label, or a CSV of path,label[,speaker]."
    ),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Write the manifest CSV here (atomically). Without it the scan only prints."
    ),
    show_skipped: int = typer.Option(10, "--show-skipped", min=0, help="How many skipped files to list by name."),
    check_silent: bool = typer.Option(
        True, "--check-silent/--no-check-silent", help="Skip digitally silent files (reads until the first sound)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    speaker_regex: Optional[str] = typer.Option(
        None,
        "--speaker-regex",
        help="generic folder layout only: regex searched in each file's path under ROOT; its group "
        "'speaker' (or group 1) is the speaker, e.g. '(?P<speaker>spk\\d+)'. Files it misses are skipped.",
    ),
) -> None:
    """Scan a local copy of a corpus into a manifest; print counts per label, speaker and session."""
    from collections import Counter

    from .corpora import load_corpus
    from .fileio import check_output_file
    from .manifest import count_table, write_manifest

    # Only generic needs it: every other loader reads speakers from the corpus' own names.
    if speaker_regex is not None and corpus.lower() != "generic":
        raise fail(f"--speaker-regex is only for the generic loader; {corpus} reads speakers from its file names")
    options = {} if speaker_regex is None else {"speaker_regex": speaker_regex}
    try:
        if output is not None:  # before the scan: a bad -o must not cost it
            check_output_file(output)
        result = load_corpus(corpus, root, progress=progress, check_silent=check_silent, **options)
    except ValueError as e:  # unknown corpus name, missing root, wrong layout
        raise fail(str(e)) from None
    df = result.manifest
    if len(df):
        secs = float(df["duration_s"].sum())
        console.print(
            f"[bold]{corpus}[/]: {len(df):,} utterances, {df['speaker'].nunique()} speakers, "
            + (f"{secs / 3600:.2f} h" if secs >= 3600 else f"{secs / 60:.1f} min")
            + f" of audio, {len(result.skipped):,} files skipped",
            highlight=False,
        )
        _print_counts(count_table(df, "speaker"), "utterances per label and speaker")
        if (df["session"] != "").any():
            _print_counts(count_table(df, "session"), "utterances per label and session")
    if result.skipped:
        console.print(f"[bold]skipped {len(result.skipped):,} file(s)[/], by reason:", highlight=False)
        by_reason = Counter(s.reason for s in result.skipped).most_common()
        for reason, n in by_reason[:10]:
            console.print(f"  {n:>6,}  {reason}", highlight=False, soft_wrap=True)
        if len(by_reason) > 10:
            console.print(f"  {sum(n for _, n in by_reason[10:]):>6,}  {len(by_reason) - 10} other reasons")
        cwd = Path.cwd()
        for s in result.skipped[:show_skipped]:
            shown = Path(s.path).relative_to(cwd) if Path(s.path).is_relative_to(cwd) else s.path
            console.print(f"  {shown}: {s.reason}", highlight=False, soft_wrap=True)
        if len(result.skipped) > show_skipped:
            console.print(f"  ... and {len(result.skipped) - show_skipped:,} more", highlight=False)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    if not len(df):
        raise fail(f"{root}: no usable utterances ({len(result.skipped):,} files skipped, reasons above)")
    if output is not None:
        write_manifest(df, output)
        console.print(f"wrote {output} ({len(df):,} rows)", highlight=False)


@app.command("synth")
def synth(
    out_dir: Path = typer.Argument(..., help="New or empty folder (or an older synthetic corpus, which is replaced)."),
    n: int = typer.Option(1000, "--n", min=2, help="Number of utterances over all sessions."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same bytes."),
    classes: str = typer.Option(
        "neutral,happy,sad,angry",
        "--classes",
        help="Comma-separated emotions to render: neutral, happy, sad, angry, fear, surprise, disgust, frustration.",
    ),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", min=1, help="Worker processes (default: 1 up to 200 utterances, else all cores)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write the built-in SYNTHETIC acted-emotion corpus (espeak-ng) in the IEMOCAP layout.

    For demos and tests only: scores on it say nothing about accuracy on human speech.
    """
    import time

    from .manifest import count_table, read_manifest
    from .synth import SynthConfig, SynthError, same_corpus, synthesize

    t0 = time.perf_counter()
    try:
        cfg = SynthConfig(seed=seed, n_utterances=n, classes=tuple(c.strip() for c in classes.split(",") if c.strip()))
        unchanged = same_corpus(out_dir, cfg)
        manifest = synthesize(out_dir, cfg, progress=progress, jobs=jobs)
    except SynthError as e:
        raise fail(str(e)) from None
    df = read_manifest(manifest)
    _print_counts(count_table(df, "session", "raw_label"), "utterances per raw label and session")
    secs = float(df["duration_s"].sum())
    console.print(
        f"{'kept the existing' if unchanged else 'wrote a'} synthetic corpus of {len(df):,} utterances, "
        f"{secs / 3600:.2f} h of audio, in {time.perf_counter() - t0:.1f} s: {manifest}",
        highlight=False,
        soft_wrap=True,
    )


# ----------------------------------------------------------------------------- features


@app.command(
    "augment",
    help="Write VTLP-augmented copies of every utterance, and a manifest tying each copy to its source.\n\n"
    "Copies keep their source's speaker, session and label and carry source_id, so a split never puts a copy on "
    "another side than its source. Re-running resumes: finished copies are kept.",
)
def augment(
    manifest: Path = typer.Argument(
        ..., help="Manifest CSV of the utterances to copy (rows that are copies already are skipped)."
    ),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the copies (wav/) and their manifest.csv."),
    copies: int = typer.Option(7, "--copies", min=1, help="Augmented copies per utterance (the paper: up to 7)."),
    impl: str = typer.Option(
        "stft", "--impl", help="stft (correct VTLP) or legacy-time (the authors' nlpaug time warp)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the warp factors (one per utterance and copy)."),
    factor_min: float = typer.Option(0.8, "--factor-min", help="Smallest warp factor."),
    factor_max: float = typer.Option(1.2, "--factor-max", help="Largest warp factor."),
    fhi: float = typer.Option(4800.0, "--fhi", help="VTLP boundary frequency in Hz."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    import time

    from .manifest import read_manifest
    from .vtlp import VTLPConfig, augment_manifest

    if impl not in ("stft", "legacy-time"):
        raise fail(f"--impl must be stft or legacy-time, got {impl!r} (melwarp needs no copies: it runs in training)")
    t0 = time.perf_counter()
    df = read_manifest(manifest)
    try:
        cfg = VTLPConfig(impl=impl, factor_range=(factor_min, factor_max), fhi=fhi)
        out = augment_manifest(df, out_dir, copies=copies, config=cfg, seed=seed, progress=progress)
    except ValueError as e:
        raise fail(str(e)) from None
    secs = float(out["duration_s"].sum())
    console.print(
        f"{out.attrs['written']:,} copies written, {len(out) - out.attrs['written']:,} kept from an earlier run: "
        f"{len(out):,} copies of {out['source_id'].nunique():,} utterances ({secs / 3600:.2f} h) "
        f"in {time.perf_counter() - t0:.1f} s -> {out_dir / 'manifest.csv'}",
        highlight=False,
        soft_wrap=True,
    )


# ----------------------------------------------------------------------------- training


def _quiet_lightning() -> None:
    """Lightning's info lines (GPU available, tips) and a deprecation notice would break the progress bar."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def _parse_sets(sets: list[str]) -> dict:
    """``--set key.sub=value`` pairs; the value is read as JSON when it parses, else as a string."""
    import json

    out = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise fail(f"--set expects KEY=VALUE (e.g. --set vtlp.impl=none), got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _train_config(
    manifest: Optional[Path],
    config_file: Optional[Path],
    preset: Optional[str],
    sets: list[str],
    *,
    out: Optional[Path] = None,
    test_manifest: Sequence[Path] = (),
    copies_manifest: Sequence[Path] = (),
    copies: Optional[int] = None,
    **options,
) -> "TrainConfig":  # noqa: F821
    """Defaults < --preset < --config FILE (may be partial) < command-line options < --set KEY=VALUE.

    The config of ``train`` and ``cv``: ``options`` are config keys (``None``: not given); ``out``,
    ``test_manifest``, ``copies_manifest`` and ``copies`` are the paths and counts of their options.
    """
    from .training import ConfigError, TrainConfig, config_with

    base = None
    if config_file is not None:
        try:  # JSON, or YAML for .yaml / .yml; a mapping, its keys checked by config_with below
            base = TrainConfig.read_file(config_file)
        except ConfigError as e:
            raise fail(str(e)) from None
    options.update(
        out_dir=None if out is None else str(out),
        test_manifests=[str(m) for m in test_manifest] or None,
        **_copy_options(list(copies_manifest), copies),
    )
    given = {k: v for k, v in options.items() if v is not None}
    if manifest is not None:
        given["manifest"] = str(manifest)
    try:
        cfg = config_with(base, preset=preset, **given, **_parse_sets(sets))
    except ConfigError as e:
        raise fail(
            f"{config_file}: {e}" if config_file is not None and str(e).startswith("config") else str(e)
        ) from None
    return _check_copies(cfg, list(copies_manifest), copies)


_MANIFEST = typer.Argument(None, help="Manifest CSV (from `areaser scan` or `areaser synth`); or set it in --config.")
_PROTOCOL = typer.Option(
    None,
    "--protocol",
    "-p",
    help="loso (default), lospk, kfold, random (speaker-dependent, needs no speakers) or xu2021 (the paper's).",
)
_PRESET = typer.Option(
    None,
    "--preset",
    help="default, cpu (sized for a CPU: 32 mels, 50 ms hop, Adam 1e-3 + cosine, 20 epochs), "
    "faithful (the authors' pipeline: model, loss, Keras constants, one legacy-time VTLP copy, train + dev, "
    "their windows, test-set reading; max area 1x1 as their committed script) or faithful-3x3 (the same, "
    "3x3 areas as their log is named).",
)
_LABELS = typer.Option(
    None,
    "--labels",
    "-l",
    help="Classes: a label set (4class, 4class-exc, 6class, 7class, emodb, ravdess, cremad, tess, savee), "
    "all (every label in the manifest) or a comma list (neutral,happy,sad,angry). Default: the protocol's (4class).",
)
_MODEL = typer.Option(None, "--model", "-m", help="Model preset: paper (default), faithful, cnn, ...")
_EPOCHS = typer.Option(None, "--epochs", min=1, help="Epochs (default: the protocol's; 30, xu2021 100).")
_BATCH = typer.Option(None, "--batch-size", min=1, help="Batch size (default 32, the paper's).")
_LR = typer.Option(None, "--lr", help="Adam learning rate (default 1e-4, the paper's).")
_VTLP = typer.Option(None, "--vtlp", help="On-the-fly VTLP: melwarp (default) or none.")
_SEED = typer.Option(None, "--seed", help="Seed of the split, initialisation, order and augmentation (default 0).")
_CONFIG = typer.Option(
    None,
    "--config",
    "-c",
    help="JSON or YAML (.yaml, .yml) config file (a run's config.json works); unknown keys are refused.",
)
_SET = typer.Option(
    [], "--set", help='Override any config key, dotted: --set vtlp.impl=none --set model_overrides={"dropout":0.3}.'
)
_NAME = typer.Option(None, "--name", help="Run name: the run directory is OUT/NAME.")
_OUT = typer.Option(None, "--out", "-o", help="Folder of run directories (default runs).")
_DEVICES = typer.Option(None, "--devices", help="Devices (processes) per node; > 1 trains with DDP.")
_NODES = typer.Option(None, "--num-nodes", min=1, help="Nodes for multi-node DDP.")
_STRATEGY = typer.Option(None, "--strategy", help="Lightning strategy: auto (default), ddp, ...")
_ACCEL = typer.Option(None, "--accelerator", help="cpu (default), cuda or auto.")
_RESUME = typer.Option(
    None, "--resume/--restart", help="Resume from the last checkpoint (default: when one exists) or start over."
)
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
_MODEL_HELP = "Run directory of `areaser train`, a pretrained folder (`areaser export --pretrained`) or a .onnx file."
_DETERMINISTIC = typer.Option(
    None,
    "--deterministic",
    help="auto (default: deterministic kernels on CPU), on, off, or strict: also 1 thread (unless --set "
    "threads=N) and the AVX2 code paths of ATen, oneDNN and MKL (MKL_CBWR=AVX2,STRICT), so runs match "
    "whatever the thread settings of the machine. Every run records its threads, CPU and library versions.",
)
_DETERMINISTIC_VALUES = {"auto": "auto", "on": True, "off": False, "strict": "strict"}


def _deterministic(value: Optional[str]) -> "bool | str | None":
    if value is None:
        return None
    if value.lower() not in _DETERMINISTIC_VALUES:
        raise fail(f"--deterministic must be one of {', '.join(_DETERMINISTIC_VALUES)}; got {value!r}")
    return _DETERMINISTIC_VALUES[value.lower()]


_COPIES_MANIFEST = typer.Option(
    [],
    "--copies-manifest",
    metavar="CSV",
    help="Train on these offline VTLP copies too: the manifest.csv `areaser augment` writes (repeatable; "
    "config key extra_manifests). Copies follow their source: only those of training utterances are trained on. "
    "The run then makes no copies of its own.",
)
_COPIES = typer.Option(
    None,
    "--copies",
    min=0,
    help="Offline VTLP copies per training utterance: the first N of each source in --copies-manifest, or, "
    "without one, N copies the run makes itself with vtlp.impl stft or legacy-time (--set vtlp.impl=...), "
    "cached in <manifest folder>/vtlp-copies/ and reused (config key vtlp_copies). The faithful preset makes "
    "1 legacy-time copy, as the authors trained; 0: none (and no VTLP).",
)


def _copy_options(manifests: list[Path], n: Optional[int]) -> dict:
    """The config keys of --copies-manifest / --copies (for :func:`_train_config`)."""
    if manifests:
        return {"extra_manifests": [str(m) for m in manifests], "copies": n, "vtlp_copies": 0}
    return {"vtlp_copies": n}


def _check_copies(cfg: "TrainConfig", manifests: list[Path], n: Optional[int]) -> "TrainConfig":  # noqa: F821
    """--copies N without --copies-manifest: copies made by the run need an audio-rewriting vtlp.impl."""
    from dataclasses import replace

    if manifests or n is None:
        return cfg
    offline = cfg.vtlp.impl in ("stft", "legacy-time")
    if n == 0:  # no copies: an offline VTLP has nothing left to apply
        return replace(cfg, vtlp=replace(cfg.vtlp, impl="none")) if offline else cfg
    if not offline:
        raise fail(
            f"--copies {n}: the run makes its copies with vtlp.impl stft or legacy-time, not {cfg.vtlp.impl!r} "
            "(--set vtlp.impl=stft, or --preset faithful); or give copies with --copies-manifest"
        )
    return cfg


_PRINT_CONFIG = typer.Option(
    False,
    "--print-config",
    help="Print the fully resolved config as JSON (what the run's config.json would hold) and exit: "
    "nothing is trained or written.",
)


def _print_config(cfg: "TrainConfig") -> None:  # noqa: F821
    """``--print-config``: the resolved config as JSON on stdout (choices checked: a bad one fails, exit 2)."""
    import json

    from .training import ConfigError

    try:
        d = cfg.resolved().to_dict()
    except ConfigError as e:
        raise fail(str(e)) from None
    typer.echo(json.dumps(d, indent=2))


@app.command("train")
def train_cmd(
    manifest: Optional[Path] = _MANIFEST,
    protocol: Optional[str] = _PROTOCOL,
    fold: Optional[int] = typer.Option(
        None, "--fold", "-f", min=0, help="Fold index, from 0 (loso: 0 holds out Ses01)."
    ),
    labels: Optional[str] = _LABELS,
    preset: Optional[str] = _PRESET,
    model: Optional[str] = _MODEL,
    epochs: Optional[int] = _EPOCHS,
    batch_size: Optional[int] = _BATCH,
    lr: Optional[float] = _LR,
    vtlp: Optional[str] = _VTLP,
    seed: Optional[int] = _SEED,
    config: Optional[Path] = _CONFIG,
    set_: list[str] = _SET,
    name: Optional[str] = _NAME,
    out: Optional[Path] = _OUT,
    devices: Optional[int] = _DEVICES,
    num_nodes: Optional[int] = _NODES,
    strategy: Optional[str] = _STRATEGY,
    accelerator: Optional[str] = _ACCEL,
    resume: Optional[bool] = _RESUME,
    test_manifest: list[Path] = typer.Option(
        [],
        "--test-manifest",
        metavar="CSV",
        help="Also score the trained model on this other corpus' manifest (cross-corpus; repeatable): "
        "RUN/cross/<corpus>/.",
    ),
    copies_manifest: list[Path] = _COPIES_MANIFEST,
    copies: Optional[int] = _COPIES,
    progress: bool = _PROGRESS,
    deterministic: Optional[str] = _DETERMINISTIC,
    print_config: bool = _PRINT_CONFIG,
) -> None:
    """Train one fold of a protocol; writes runs/NAME/ (config, checkpoints, metrics, report).

    Ctrl-C or a crash loses at most the epoch in progress: run the same command again to resume.
    """
    from .checkpoint import CheckpointError
    from .training import ConfigError, train

    _quiet_lightning()
    cfg = _train_config(
        manifest,
        config,
        preset,
        set_,
        protocol=protocol,
        label_set=labels,
        fold=fold,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        **{"vtlp.impl": vtlp},
        seed=seed,
        name=name,
        out=out,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        accelerator=accelerator,
        progress=progress,
        deterministic=_deterministic(deterministic),
        test_manifest=test_manifest,
        copies_manifest=copies_manifest,
        copies=copies,
    )
    if print_config:
        return _print_config(cfg)
    try:
        train(cfg, resume=resume, log=_log)
    except (ConfigError, CheckpointError) as e:  # a checkpoint that cannot be resumed from: the line offers --restart
        raise fail(str(e)) from None


@app.command("cv")
def cv_cmd(
    manifest: Optional[Path] = _MANIFEST,
    protocol: Optional[str] = _PROTOCOL,
    folds: Optional[str] = typer.Option(None, "--folds", help="Comma-separated fold indices to run (default: all)."),
    labels: Optional[str] = _LABELS,
    preset: Optional[str] = _PRESET,
    model: Optional[str] = _MODEL,
    epochs: Optional[int] = _EPOCHS,
    batch_size: Optional[int] = _BATCH,
    lr: Optional[float] = _LR,
    vtlp: Optional[str] = _VTLP,
    seed: Optional[int] = _SEED,
    config: Optional[Path] = _CONFIG,
    set_: list[str] = _SET,
    name: Optional[str] = _NAME,
    out: Optional[Path] = _OUT,
    devices: Optional[int] = _DEVICES,
    num_nodes: Optional[int] = _NODES,
    strategy: Optional[str] = _STRATEGY,
    accelerator: Optional[str] = _ACCEL,
    resume: Optional[bool] = _RESUME,
    test_manifest: list[Path] = typer.Option(
        [],
        "--test-manifest",
        metavar="CSV",
        help="Also score every fold's model on this other corpus' manifest (cross-corpus; repeatable): "
        "a table in the cv report.",
    ),
    copies_manifest: list[Path] = _COPIES_MANIFEST,
    copies: Optional[int] = _COPIES,
    progress: bool = _PROGRESS,
    deterministic: Optional[str] = _DETERMINISTIC,
    print_config: bool = _PRINT_CONFIG,
) -> None:
    """Run every fold of a protocol (or --folds) and write the aggregate report (mean +- std).

    Folds run one after the other into runs/NAME/<fold>/; finished folds are kept when re-run.
    """
    from .checkpoint import CheckpointError
    from .crossval import cross_validate
    from .training import ConfigError

    _quiet_lightning()
    cfg = _train_config(
        manifest,
        config,
        preset,
        set_,
        protocol=protocol,
        label_set=labels,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        **{"vtlp.impl": vtlp},
        seed=seed,
        name=name,
        out=out,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        accelerator=accelerator,
        progress=progress,
        deterministic=_deterministic(deterministic),
        test_manifest=test_manifest,
        copies_manifest=copies_manifest,
        copies=copies,
    )
    if print_config:  # the config every fold shares, under the cv's name (each fold's own differs in fold, name)
        from dataclasses import replace

        return _print_config(replace(cfg, name=cfg.name or f"{cfg.model}-{cfg.protocol}"))
    try:
        chosen = None if folds is None else [int(f) for f in folds.split(",") if f.strip()]
    except ValueError:
        raise fail(f"--folds expects comma-separated integers, got {folds!r}") from None
    try:
        cross_validate(cfg, chosen, resume=resume, log=_log)
    except (ConfigError, CheckpointError) as e:  # a fold's checkpoint that cannot be resumed from: offers --restart
        raise fail(str(e)) from None


@app.command(
    "evaluate",
    help="Score a trained run again on its test utterances (those of RUN/split.json) "
    "and rewrite its report (JSON, Markdown, PNG).\n\n"
    "The utterances are found through the run's manifest, whose relative path is relative to the folder training "
    "ran in, not the current one. If any is missing from it or has changed (its audio's SHA-1, where split.json "
    "records it), nothing is scored, the report is left as it is, and the command fails (exit 2).\n\n"
    "With --manifest: score it on every original utterance of another corpus instead (cross-corpus).",
)
def evaluate_cmd(
    run: Path = typer.Argument(
        ..., help="A run directory of `areaser train` (neural or egemaps baseline), or of `areaser cv` (every fold)."
    ),
    manifest: list[Path] = typer.Option(
        [],
        "--manifest",
        "-m",
        metavar="CSV",
        help="Score the run on this other corpus' manifest instead (cross-corpus; repeatable): "
        "classes matched by name through the run's label set, report in RUN/cross/<corpus>/; "
        "the run's own report is kept.",
    ),
) -> None:
    from .checkpoint import CheckpointError
    from .crossval import evaluate_on, evaluate_run
    from .manifest import ManifestError
    from .training import ConfigError

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
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder of run directories; the demo run is OUT/demo."),
    n: int = typer.Option(1000, "--n", min=100, help="Utterances of the built-in corpus."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (default: the demo's tuned value)."),
    progress: bool = _PROGRESS,
) -> None:
    from .demo import run_demo
    from .training import ConfigError

    _quiet_lightning()
    try:
        run_demo(data, out, n_utterances=n, epochs=epochs, progress=progress, console=console)
    except ConfigError as e:
        raise fail(str(e)) from None


def _log(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)


@app.command(
    "ablate",
    help="Run one of the paper's studies: every setting x fold x seed, then a table and a plot.\n\n"
    "Studies: area-size (max area 1x1..4x4, with and without VTLP), vtlp-copies (0..7 offline VTLP copies vs "
    "on-the-fly melwarp), area-features (key mode x value mode), layout (faithful vs paper vs cnn, plus the "
    "egemaps-lr / egemaps-svm baselines), vtlp-impl (none, melwarp, stft, legacy-time).\n\n"
    "Runs go to worker processes; a run whose result exists is not run again, so an interrupted study resumes. Writes "
    "results.md (mean +- std of WA, UA, macro-F1 per setting), results.json and results.png in the study folder.",
)
def ablate(
    study: str = typer.Argument(..., help="area-size, vtlp-copies, area-features, layout or vtlp-impl."),
    manifest: Path = typer.Option(..., "--manifest", "-m", help="Corpus manifest CSV (areaser scan / areaser synth)."),
    protocol: str = typer.Option("loso", "--protocol", "-p", help="loso, lospk, kfold, random or xu2021."),
    labels: Optional[str] = _LABELS,
    folds: Optional[int] = typer.Option(None, "--folds", min=1, help="Run the first N folds (default: all)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated training seeds; each fold runs once per seed."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Training epochs (default: the protocol's)."),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", min=1, help="Parallel worker processes (default: one per core)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Study folder (default: runs/ablations/STUDY-PROTOCOL)."
    ),
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
) -> None:
    import shlex

    from .ablation import AblationConfig, get_study, results_table, run_study

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


# ----------------------------------------------------------------------------- inference


def _recognizer(model: Path, backend: str, onnx: Optional[Path], threads: Optional[int], **overrides):  # noqa: ANN202
    """Load MODEL for a command; a user error becomes one line."""
    from .checkpoint import CheckpointError
    from .inference import Recognizer

    if backend not in ("torch", "onnx"):
        raise fail(f"--backend must be torch or onnx, got {backend!r}")
    try:
        return Recognizer.load(model, backend=backend, onnx_path=onnx, threads=threads, **overrides)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None


def _prediction_rows(result, classes: tuple[str, ...], timeline: bool) -> list[dict]:  # noqa: ANN001
    """Flat rows for CSV and the screen table: one per file, or one per window with ``timeline``."""
    if not result.ok:
        return [{"path": result.source, "error": result.error}]
    probs = lambda p: {f"p_{c}": round(float(v), 4) for c, v in zip(classes, p)}  # noqa: E731
    if timeline:
        return [
            {
                "path": result.source,
                "start_s": round(w.start_s, 3),
                "end_s": round(w.end_s, 3),
                "label": classes[int(w.probabilities.argmax())],
                **probs(w.probabilities),
                "error": "",
            }
            for w in result.timeline
        ]
    return [
        {
            "path": result.source,
            "label": result.label,
            **probs(result.probabilities),
            "duration_s": round(result.duration_s, 3),
            "windows": len(result.timeline),
            "skipped": result.skipped,
            "warning": result.warning or "",
            "error": "",
        }
    ]


def _print_predictions(results: list, rows: list[dict], classes: tuple[str, ...], timeline: bool) -> None:
    """Screen table of the scored files (probabilities in %), then one error line per failure."""
    import os

    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    scored = [r.source for r in results if r.ok]
    one = len(scored) == 1  # a single file goes in the title, not in a column
    base = os.path.commonpath([os.path.abspath(p) for p in scored]) if len(scored) > 1 else ""
    base = base if base and os.path.isdir(base) else ""
    name = (lambda p: printable(os.path.relpath(os.path.abspath(p), base))) if base else printable  # noqa: E731
    title = (
        printable(scored[0])
        if one
        else f"{len(scored)} files" + (f" under {printable(os.path.relpath(base))}" if base else "")
    )
    if one and timeline:
        r = next(r for r in results if r.ok)
        title += f": {r.label} overall, {len(r.timeline)} windows" + (
            f", {r.skipped} skipped as silence" if r.skipped else ""
        )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    if not one:
        table.add_column("file", overflow="fold", min_width=12)
    if timeline:
        table.add_column("start s", justify="right", no_wrap=True)
        table.add_column("end s", justify="right", no_wrap=True)
    table.add_column("emotion", no_wrap=True)
    for c in classes:
        table.add_column(c, justify="right", no_wrap=True)
    if not timeline:
        table.add_column("dur s", justify="right", no_wrap=True)
        table.add_column("win", justify="right", no_wrap=True)
    last = None
    for row in rows:
        if row["error"]:
            continue
        cells = [] if one else [name(row["path"]) if row["path"] != last else ""]
        last = row["path"]
        if timeline:
            cells += [f"{row['start_s']:.1f}", f"{row['end_s']:.1f}"]
        cells += [row["label"]] + [f"{100 * row[f'p_{c}']:.1f}" for c in classes]
        if not timeline:
            cells += [f"{row['duration_s']:.1f}", str(row["windows"])]
        table.add_row(*cells)
    if scored:
        console.print(f"{title}; probabilities in %", highlight=False, soft_wrap=True)
        # many classes need more than the terminal's width: render the table whole (the terminal wraps its
        # lines) rather than let rich drop the file column and cut numbers
        need = Measurement.get(console, console.options.update_width(10_000), table).maximum
        width = console.width
        console.width = max(width, need)  # print() caps a width argument at the console's: widen it meanwhile
        try:
            console.print(table)
        finally:
            console.width = width
    for r in results:
        if r.ok and r.warning:
            err_console.print(
                f"[yellow]warning:[/] {printable(f'{r.source}: {r.warning}')}", highlight=False, soft_wrap=True
            )
        if not r.ok:
            err_console.print(f"[red]error:[/] {printable(r.error)}", highlight=False, soft_wrap=True)


@app.command(
    "predict",
    help="Recognise the emotion in recordings; long ones are streamed in blocks (flat memory).\n\n"
    "Every file gets a result: one that cannot be read gets its error line and the run goes on. Exit code 0 if all "
    "files were scored, 1 if some failed.",
)
def predict(
    model: Path = typer.Argument(..., help=_MODEL_HELP),
    inputs: list[Path] = typer.Argument(
        ...,
        help="Audio files (any format soundfile reads, any rate and channels), folders (searched "
        "recursively), lists of paths (.txt, one a line) or manifests (.csv).",
    ),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Write results to a .csv or .jsonl file (atomically) instead of the screen table."
    ),
    timeline: bool = typer.Option(
        False, "--timeline", help="One row per window (start, end, probabilities) instead of one per file."
    ),
    hop: Optional[float] = typer.Option(
        None, "--hop", min=0.01, help="Hop between 2 s windows in seconds (default: the model's test hop, 0.4)."
    ),
    silence_db: Optional[float] = typer.Option(
        None,
        "--silence-db",
        max=-1.0,
        help="Skip windows quieter than this RMS level in dBFS (e.g. -50); default: score all.",
    ),
    backend: str = typer.Option(
        "torch", "--backend", help="torch (PyTorch) or onnx (ONNX Runtime, see `areaser export`)."
    ),
    onnx: Optional[Path] = typer.Option(
        None, "--onnx", help="The .onnx file for --backend onnx (default: MODEL/model.onnx)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Windows scored at once (across files)."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads for inference (default: all cores)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over files on stderr."),
    vad: bool = typer.Option(
        False,
        "--vad",
        help="Voice activity detection: score only windows with enough voiced speech; a file without speech (a "
        "tone, a beep, noise) gets an error row 'no speech found', one with less than --min-speech gets 'too short'.",
    ),
    min_speech: float = typer.Option(
        0.5, "--min-speech", min=0.0, help="With --vad: seconds of voiced speech a file needs to be scored."
    ),
) -> None:
    import json

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .fileio import atomic_write_text, check_output_file
    from .inference import expand_inputs

    if output is not None and output.suffix.lower() not in (".csv", ".jsonl"):
        raise fail(f"{output}: -o takes a .csv or .jsonl file")
    try:  # before any scoring: a bad -o must not cost the work
        output = None if output is None else check_output_file(output)
    except ValueError as e:
        raise fail(str(e)) from None
    if model.suffix == ".onnx":
        backend, onnx = "onnx", model
    if threads:
        torch.set_num_threads(threads)
    overrides = {"batch_size": batch_size, "silence_db": silence_db}
    if hop is not None:
        overrides["hop_s"] = hop
    if vad:
        overrides.update(vad=True, min_speech_s=min_speech)
    rec = _recognizer(model, backend, onnx, threads, **overrides)
    try:
        paths = expand_inputs(inputs)
    except ValueError as e:
        raise fail(str(e)) from None
    results = []
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not progress or not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("files", total=len(paths))
        for result in rec.predict_many(paths):
            results.append(result)
            bar.advance(task)
    failed = sum(not r.ok for r in results)
    rows = [row for r in results for row in _prediction_rows(r, rec.classes, timeline)]
    if output is None:
        _print_predictions(results, rows, rec.classes, timeline)
    elif output.suffix.lower() == ".jsonl":
        atomic_write_text(output, "".join(json.dumps(r.to_dict(timeline=timeline)) + "\n" for r in results))
    else:
        import pandas as pd

        columns = ["path"] + (["start_s", "end_s"] if timeline else []) + ["label"] + [f"p_{c}" for c in rec.classes]
        columns += ([] if timeline else ["duration_s", "windows", "skipped", "warning"]) + ["error"]
        atomic_write_text(output, pd.DataFrame(rows, columns=columns).to_csv(index=False))
    if output is not None:
        console.print(f"wrote {output}: {len(results)} file(s), {failed} failed", highlight=False)
    if failed:
        err_console.print(f"[yellow]{failed} of {len(results)} file(s) could not be scored[/]", highlight=False)
        raise typer.Exit(1)


def _export_pretrained(model: Path, out: Path, license_: Optional[str]) -> None:
    """``export --pretrained``: write the folder, then list its files; a user error is one line."""
    from .checkpoint import CheckpointError
    from .pretrained import export_pretrained, load_pretrained

    try:
        export_pretrained(model, out, license=license_)
        loaded = load_pretrained(out)
    except (CheckpointError, ValueError) as e:
        raise fail(str(e)) from None
    prov = (loaded.config.get("training") or {}).get("provenance") or {}
    console.print(
        f"wrote {out}: {len(loaded.classes)} classes ({', '.join(loaded.classes)}), "
        f"{loaded.win_s:g} s windows at {loaded.sr} Hz, trained on {prov.get('corpus', 'an unknown corpus')}"
        + (" (SYNTHETIC: its scores do not measure emotion recognition)" if prov.get("synthetic") else ""),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    for f in sorted(out.iterdir()):
        size = f.stat().st_size
        console.print(
            f"  {f.name:<25} {size / 2**20:8.2f} MiB" if size >= 2**20 else f"  {f.name:<25} {size:>8,} B",
            highlight=False,
            markup=False,
        )


@app.command(
    "embed",
    help="Write each recording's embedding: the model's pooled penultimate layer (the vector its classifier reads), "
    "averaged over the recording's 2 s windows (those `predict` scores).\n\n"
    "-o emb.npz holds embeddings [n, D], paths, windows and dim; -o emb.csv one row per file (path, windows, "
    "e0..e{D-1}). A file that cannot be read gets its error line and is left out. Exit code 0 if all files were "
    "embedded, 1 if some failed.",
)
def embed_cmd(
    model: Path = typer.Argument(..., help="Run directory of `areaser train` (the PyTorch model)."),
    inputs: list[Path] = typer.Argument(
        ..., help="Audio files, folders (searched recursively), lists of paths (.txt) or manifests (.csv)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write them: a .npz or .csv file (atomically)."),
    hop: Optional[float] = typer.Option(
        None, "--hop", min=0.01, help="Hop between 2 s windows in seconds (default: the model's test hop)."
    ),
    silence_db: Optional[float] = typer.Option(
        None, "--silence-db", max=-1.0, help="Leave out windows quieter than this RMS level in dBFS (e.g. -50)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Windows through the model at once."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: all cores)."),
) -> None:
    import torch

    from .embed import write_embeddings
    from .fileio import check_output_file
    from .inference import expand_inputs

    if output.suffix.lower() not in (".npz", ".csv"):
        raise fail(f"{output}: -o takes a .npz or .csv file")
    try:  # before any work: a bad -o must not cost it
        output = check_output_file(output)
    except ValueError as e:
        raise fail(str(e)) from None
    if threads:
        torch.set_num_threads(threads)
    overrides = {"batch_size": batch_size, "silence_db": silence_db}
    if hop is not None:
        overrides["hop_s"] = hop
    rec = _recognizer(model, "torch", None, threads, **overrides)
    try:
        paths = expand_inputs(inputs)
        results = list(rec.embed_many(paths))
    except ValueError as e:
        raise fail(str(e)) from None
    done = [r for r in results if r.ok]
    for r in results:
        if not r.ok:
            err_console.print(f"[red]error:[/] {printable(r.error)}", highlight=False, soft_wrap=True)
    if not done:
        raise fail("no file could be embedded; nothing written", 1)
    import numpy as np

    write_embeddings(
        output, [r.source for r in done], np.stack([r.vector for r in done]), [r.windows for r in done], str(model)
    )
    failed = len(results) - len(done)
    more = f", {failed} failed" if failed else ""
    console.print(f"wrote {output}: {len(done)} file(s) x {done[0].vector.shape[0]} dims{more}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("export")
def export(
    model: Path = typer.Argument(..., help="Run directory of `areaser train`."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="Where to write the ONNX model (atomically)."),
    pretrained: Optional[Path] = typer.Option(
        None,
        "--pretrained",
        help="Write a model folder (config.json, model.safetensors, preprocessor_config.json, README.md model "
        "card; the Hugging Face layout) that predict, serve and Recognizer.from_pretrained load; atomically. "
        "A new, empty or earlier pretrained folder.",
    ),
    license_: Optional[str] = typer.Option(
        None,
        "--license",
        help="Licence id for the --pretrained model card (mit, cc-by-nc-4.0, other, ...); default unknown: "
        "the training corpus' terms bind its weights.",
    ),
    int8: bool = typer.Option(False, "--int8", help="Quantise to int8 with ONNX Runtime (smaller, faster on CPU)."),
    calibrate: Optional[list[Path]] = typer.Option(
        None,
        "--calibrate",
        help="Audio (files, folders, lists) to calibrate int8 (default: 32 utterances of the run's manifest).",
    ),
) -> None:
    """Export a trained model: to ONNX (--onnx), to a model folder other tools load (--pretrained), or both.

    The ONNX graph takes log-Mel (batch x n_mels x frames) and gives logits and probabilities; the folder holds
    config.json, model.safetensors, preprocessor_config.json and a README.md model card.
    """
    import logging
    import warnings

    from .checkpoint import CheckpointError
    from .export import export_onnx, read_metadata
    from .inference import expand_inputs

    if onnx is None and pretrained is None:
        raise fail("give --onnx FILE.onnx, --pretrained DIR, or both")
    if onnx is None and (int8 or calibrate):
        raise fail("--int8 and --calibrate apply to --onnx")
    if license_ is not None and pretrained is None:
        raise fail("--license applies to --pretrained (it goes into the model card)")
    if onnx is not None and onnx.suffix != ".onnx":
        raise fail(f"{onnx}: --onnx takes a path ending in .onnx")
    if calibrate and not int8:
        raise fail("--calibrate only applies with --int8")
    if pretrained is not None:
        _export_pretrained(model, pretrained, license_)
    if onnx is None:
        return
    try:
        cal = expand_inputs(calibrate) if calibrate else None
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, onnx, int8=int8, calibration=cal)
    except (CheckpointError, ValueError) as e:
        raise fail(str(e)) from None
    meta = read_metadata(onnx)
    shape = lambda s: "[" + ", ".join(map(str, s)) + "]"  # noqa: E731
    mode = "float32"
    if meta["int8"]:
        mode = f"{meta['int8']['mode']} int8" + (
            f", calibrated on {meta['int8']['calibration_windows']} windows"
            if meta["int8"].get("calibration_windows")
            else ""
        )
    console.print(
        f"wrote {onnx} ({onnx.stat().st_size / 2**20:.2f} MiB, {mode}, {len(meta['classes'])} classes: "
        f"{', '.join(meta['classes'])})",
        highlight=False,
    )
    console.print(
        f"  input  {meta['input']['name']:<13} float32 {shape(meta['input']['shape'])}  log10 mel power",
        highlight=False,
        markup=False,
    )
    for name, s in meta["outputs"].items():
        console.print(f"  output {name:<13} float32 {shape(s)}", highlight=False, markup=False)


def _pcm_chunks(stream, rate: int, sr: int, chunk_bytes: int = 4096):  # noqa: ANN001, ANN202
    """Raw 16-bit little-endian mono PCM from a binary stream as float32 chunks at ``sr`` (as they arrive)."""
    import numpy as np

    resampler = None
    if rate != sr:
        import soxr

        resampler = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
    read = getattr(stream, "read1", stream.read)  # read1: whatever has arrived, without waiting for a full chunk
    rest = b""
    while True:
        data = read(chunk_bytes)
        last = not data
        data = rest + data
        cut = len(data) - len(data) % 2
        rest = data[cut:]
        y = np.frombuffer(data[:cut], dtype="<i2").astype(np.float32) / 32768.0
        if resampler is not None:
            y = resampler.resample_chunk(y, last=last)
        if len(y) or last:
            yield y
        if last:
            return


def _file_chunks(path: Path, sr: int, block_s: float = 0.1):  # noqa: ANN202
    """A file decoded as mono float32 blocks of ``block_s`` seconds at ``sr``."""
    from .audio import stream_audio

    yield from stream_audio(path, sr, block_s)


def _listen_line(update, classes: Sequence[str]) -> str:  # noqa: ANN001
    if not update.voiced:
        return f"{update.time_s:8.2f} s  (no speech)"
    probs = "  ".join(f"{c} {100 * update.probabilities[c]:5.1f}" for c in classes)
    return f"{update.time_s:8.2f} s  {update.label:<10} {probs}"


def _listen_summary(summary: dict, latencies: list[float], as_json: bool, stopped: bool) -> str:
    import json

    lat = {
        "mean": round(1000 * sum(latencies) / len(latencies), 3) if latencies else None,
        "max": round(1000 * max(latencies), 3) if latencies else None,
    }
    if as_json:
        return json.dumps({"summary": {**summary, "latency_ms": lat, "interrupted": stopped}})
    overall = "no speech"
    if summary["label"] is not None:
        probs = ", ".join(f"{c} {100 * p:.1f}" for c, p in summary["probabilities"].items())
        overall = f"{summary['label']} overall ({probs} %)"
    timing = f"; latency per update mean {lat['mean']:.1f} ms, max {lat['max']:.1f} ms" if latencies else ""
    return (
        f"summary{' (interrupted)' if stopped else ''}: {summary['duration_s']:.2f} s of audio, "
        f"{summary['updates']} updates ({summary['voiced_updates']} with speech): {overall}{timing}"
    )


@app.command(
    "listen",
    help="Live emotion: read audio as it comes and print the rolling emotion every --every seconds.\n\n"
    "SOURCE '-' reads raw 16-bit little-endian mono PCM at --rate from stdin, e.g. `arecord -q -f S16_LE -r 16000 "
    "-c 1 | areaser listen MODEL -` or `ffmpeg -i in.mp3 -f s16le -ac 1 -ar 16000 - | areaser listen MODEL -`; a "
    "file is played at real-time pace (--fast: as fast as it can be scored). Each line: the time, the label and "
    "the probabilities (%) over the last --window seconds, smoothed over updates; '(no speech)' when the window "
    "holds too little voiced speech. At the end (or Ctrl-C, exit code 130) one summary line.",
)
def listen(
    model: Path = typer.Argument(..., help=_MODEL_HELP),
    source: str = typer.Argument(..., help="'-' for raw PCM on stdin, or an audio file (any format soundfile reads)."),
    rate: int = typer.Option(16000, "--rate", min=1000, max=384000, help="Sample rate of the PCM on stdin, Hz."),
    every: float = typer.Option(0.5, "--every", min=0.01, help="Seconds of audio between lines."),
    window: Optional[float] = typer.Option(
        None, "--window", min=0.05, help="Seconds scored at each line (default: the model's window, 2 s)."
    ),
    smoothing: float = typer.Option(
        0.5,
        "--smoothing",
        min=0.0,
        max=0.99,
        help="Exponential moving average of the probabilities over lines: weight of the past (0: none).",
    ),
    vad: bool = typer.Option(True, "--vad/--no-vad", help="Gate lines by voice activity ('(no speech)')."),
    fast: bool = typer.Option(False, "--fast", help="A file: do not wait for real time (stdin is read as it comes)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line (and a final {'summary': ...})."),
    backend: str = typer.Option("torch", "--backend", help="torch or onnx."),
    onnx: Optional[Path] = typer.Option(
        None, "--onnx", help="The .onnx file for --backend onnx (default: MODEL/model.onnx)."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for inference."),
) -> None:
    import json
    import time

    import torch

    from .audio import AudioError
    from .live import Listener

    if source == "-" and sys.stdin.isatty():
        raise fail(
            "stdin is a terminal: pipe raw 16-bit mono PCM into it, e.g. "
            "arecord -q -f S16_LE -r 16000 -c 1 | areaser listen MODEL -"
        )
    if source != "-" and not Path(source).exists():
        raise fail(f"{source}: file not found")
    if model.suffix == ".onnx":
        backend, onnx = "onnx", model
    if threads:
        torch.set_num_threads(threads)
    rec = _recognizer(model, backend, onnx, threads)
    try:
        live = Listener(rec, every_s=every, window_s=window, smoothing=smoothing, vad=vad)
    except ValueError as e:
        raise fail(str(e)) from None
    chunks = _pcm_chunks(sys.stdin.buffer, rate, rec.sr) if source == "-" else _file_chunks(Path(source), rec.sr)
    out = sys.stdout
    latencies: list[float] = []
    t0 = time.perf_counter()
    stopped = False
    try:
        for chunk in chunks:
            if source != "-" and not fast:  # real-time pace: a block is there once it has been "recorded"
                wait = t0 + (live.n + len(chunk)) / rec.sr - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            arrived = time.perf_counter()
            for update in live.feed(chunk):
                out.write((json.dumps(update.to_dict()) if as_json else _listen_line(update, rec.classes)) + "\n")
                out.flush()
                latencies.append(time.perf_counter() - arrived)
    except KeyboardInterrupt:
        stopped = True
    except AudioError as e:
        raise fail(str(e)) from None
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        raise typer.Exit(0) from None
    out.write(_listen_summary(live.summary(), latencies, as_json, stopped) + "\n")
    out.flush()
    if stopped:
        raise typer.Exit(130)


@app.command("serve")
def serve(
    model: Path = typer.Argument(..., help=_MODEL_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    backend: str = typer.Option("torch", "--backend", help="torch or onnx."),
    onnx: Optional[Path] = typer.Option(
        None, "--onnx", help="The .onnx file for --backend onnx (default: MODEL/model.onnx)."
    ),
    max_upload_mb: float = typer.Option(
        25.0, "--max-upload-mb", min=0.001, help="Largest upload accepted (413 above)."
    ),
    max_duration_s: float = typer.Option(
        600.0, "--max-duration-s", min=0.1, help="Longest audio accepted (422 above)."
    ),
    workers: int = typer.Option(
        2, "--workers", min=1, help="Recordings scored at the same time; more requests wait in line."
    ),
    vad: bool = typer.Option(
        False,
        "--vad",
        help="Voice activity detection by default for POST /v1/predict (a request's ?vad=false|true overrides it): "
        "no speech is 422 'no speech found', less than --min-speech is 422 'too short'.",
    ),
    min_speech: float = typer.Option(
        0.5, "--min-speech", min=0.0, help="With voice activity detection: seconds of voiced speech a file needs."
    ),
    max_streams: int = typer.Option(4, "--max-streams", min=1, help="Live streams (WS /v1/listen) open at once."),
    max_stream_s: float = typer.Option(
        600.0, "--max-stream-s", min=1.0, help="Longest live stream, in audio received and in wall-clock time."
    ),
) -> None:
    """Serve the model over HTTP: a web page at /, POST /v1/predict, WS /v1/listen, GET /v1/model, GET /healthz."""
    from .service import ServiceLimits
    from .service import serve as serve_app

    if model.suffix == ".onnx":
        backend, onnx = "onnx", model
    limits = ServiceLimits(
        int(max_upload_mb * 2**20), max_duration_s, workers, max_streams=max_streams, max_stream_s=max_stream_s
    )
    rec = _recognizer(model, backend, onnx, None, vad=vad, min_speech_s=min_speech)
    console.print(
        f"serving {model} ({rec.backend.name}, classes {', '.join(rec.classes)}) on http://{host}:{port}/",
        highlight=False,
    )
    serve_app(rec, host, port, limits, run_dir=model)  # the page names what the model was trained on


def main(prog_name: str | None = None) -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    from .audio import AudioError
    from .manifest import ManifestError

    try:
        app(prog_name=prog_name)
    except (AudioError, ManifestError) as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Options shared by the verbs (one meaning per flag) and the helpers that turn them into configs.

One meaning per flag, on every verb: ``-m`` is ``--model``; ``-o`` is ``--output FILE``, a file written;
``--out DIR`` (no short flag) is a folder written; ``--folds`` is a comma list of fold indices; ``--onnx`` is
the ONNX file ``export`` writes; ``--test-manifest`` is another corpus to score on. An old spelling is kept
for one release as a hidden option: :func:`renamed` takes its value and prints one :func:`deprecated` line.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import typer

from areaser.cli.app import console, err_console, fail

# ----------------------------------------------------------------------------- renamed options


def deprecated(old: str, where: str, instead: str) -> None:
    """Print the one line saying that a spelling is deprecated, on stderr.

    Parameters
    ----------
    old : the old spelling, e.g. ``--manifest``.
    where : where it is deprecated, e.g. ``in evaluate`` or ``for folders``.
    instead : what to write now, e.g. ``use --test-manifest``.

    Examples
    --------
    ``deprecated("--manifest", "in evaluate", "use --test-manifest")`` prints
    ``note: --manifest is deprecated in evaluate; use --test-manifest``.
    """
    err_console.print(f"note: {old} is deprecated {where}; {instead}", highlight=False, markup=False, soft_wrap=True)


def _given(value: object) -> bool:
    return value is not None and value != [] and value != ()


def renamed(new_value: Any, old_value: Any, *, new: str, old: str, where: str, instead: Optional[str] = None) -> Any:
    """The value of an option given by its new spelling or by its hidden old one.

    The old one prints a :func:`deprecated` line; both at once is refused (one line, exit 2), since
    they are one option.

    Parameters
    ----------
    new_value, old_value : what the two spellings received (``None`` or empty: not given).
    new, old : the two spellings, for the messages.
    where, instead : as in :func:`deprecated`; ``instead`` defaults to ``use NEW``.

    Returns
    -------
    ``old_value`` when the old spelling was given, else ``new_value``.
    """
    if not _given(old_value):
        return new_value
    deprecated(old, where, instead or f"use {new}")
    if _given(new_value):
        raise fail(f"{old} and {new} are the same option; give {new} only")
    return old_value


# -o names a file written (--output); a folder was -o on some verbs before --out lost its short flag
_OUT_SHORT = typer.Option(None, "-o", hidden=True, help="Deprecated for folders: use --out.")


def out_folder(out: Optional[Path], out_short: Optional[Path]) -> Optional[Path]:
    """``--out DIR``, or the hidden ``-o DIR`` of earlier releases (with its deprecation line)."""
    return renamed(out, out_short, new="--out", old="-o", where="for folders")


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
    from areaser.runs.config import ConfigError, TrainConfig, config_with

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
_OUT = typer.Option(None, "--out", help="Folder of run directories (default runs).")
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

    from areaser.runs.config import ConfigError

    try:
        d = cfg.resolved().to_dict()
    except ConfigError as e:
        raise fail(str(e)) from None
    typer.echo(json.dumps(d, indent=2))


_TEST_MANIFEST = typer.Option(
    [],
    "--test-manifest",
    metavar="CSV",
    help="Also score the trained model on this other corpus' manifest (cross-corpus; repeatable): train writes "
    "RUN/cross/<corpus>/, cv a table in its report (one per fold's model).",
)


def _cli(option: Any) -> Any:
    """A :class:`TrainOptions` field given on the command line as ``option``."""
    return field(metadata={"cli": option})


@dataclass(frozen=True)
class TrainOptions:
    """The options ``train`` and ``cv`` share, as given on the command line (``None``: not given).

    Written once: :func:`train_options` turns each field into a typer parameter of both verbs (its
    ``cli`` metadata is the option, help included), :func:`train_config` into their
    :class:`~areaser.runs.config.TrainConfig`. A field's order is its place in ``--help``.
    """

    manifest: Optional[Path] = _cli(_MANIFEST)
    protocol: Optional[str] = _cli(_PROTOCOL)
    labels: Optional[str] = _cli(_LABELS)
    preset: Optional[str] = _cli(_PRESET)
    model: Optional[str] = _cli(_MODEL)
    epochs: Optional[int] = _cli(_EPOCHS)
    batch_size: Optional[int] = _cli(_BATCH)
    lr: Optional[float] = _cli(_LR)
    vtlp: Optional[str] = _cli(_VTLP)
    seed: Optional[int] = _cli(_SEED)
    config: Optional[Path] = _cli(_CONFIG)
    set_: list[str] = _cli(_SET)
    name: Optional[str] = _cli(_NAME)
    out: Optional[Path] = _cli(_OUT)
    out_short: Optional[Path] = _cli(_OUT_SHORT)
    devices: Optional[int] = _cli(_DEVICES)
    num_nodes: Optional[int] = _cli(_NODES)
    strategy: Optional[str] = _cli(_STRATEGY)
    accelerator: Optional[str] = _cli(_ACCEL)
    resume: Optional[bool] = _cli(_RESUME)
    test_manifest: list[Path] = _cli(_TEST_MANIFEST)
    copies_manifest: list[Path] = _cli(_COPIES_MANIFEST)
    copies: Optional[int] = _cli(_COPIES)
    progress: bool = _cli(_PROGRESS)
    deterministic: Optional[str] = _cli(_DETERMINISTIC)
    print_config: bool = _cli(_PRINT_CONFIG)


def train_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: give a verb every :class:`TrainOptions` field as a typer parameter.

    ``command`` takes its own parameters (``--fold``, ``--folds``) and a keyword-only ``opts:
    TrainOptions``. The function returned shows typer (through ``__signature__``) its own parameters
    first, then one per field, and calls ``command`` with the fields gathered into ``opts``.

    Parameters
    ----------
    command : the verb's function, not yet registered with ``app.command``.

    Returns
    -------
    The function to register.
    """
    sig = inspect.signature(command, eval_str=True)  # real types: typer reads __signature__ as is
    if "opts" not in sig.parameters:
        raise TypeError(f"{command.__name__} needs a keyword-only parameter opts: TrainOptions")
    own = [p for p in sig.parameters.values() if p.name != "opts"]
    types = typing.get_type_hints(TrainOptions)
    shared = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.metadata["cli"], annotation=types[f.name])
        for f in fields(TrainOptions)
    ]
    names = [f.name for f in fields(TrainOptions)]

    @functools.wraps(command)
    def verb(**given: Any) -> Any:
        opts = TrainOptions(**{n: given.pop(n) for n in names})
        return command(**given, opts=opts)

    params = own + shared
    verb.__signature__ = sig.replace(parameters=params)
    # typer also reads the type hints, which functools.wraps copied as the strings of `command`'s own
    verb.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
    return verb


def train_config(opts: TrainOptions, **keys: Any) -> "TrainConfig":  # noqa: F821
    """The :class:`~areaser.runs.config.TrainConfig` of ``opts`` (see :func:`_train_config` for the layers).

    Parameters
    ----------
    opts : the shared options, as given.
    **keys : config keys of the verb's own options (``fold``), ``None`` when not given.
    """
    return _train_config(
        opts.manifest,
        opts.config,
        opts.preset,
        opts.set_,
        protocol=opts.protocol,
        label_set=opts.labels,
        model=opts.model,
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        lr=opts.lr,
        **{"vtlp.impl": opts.vtlp},
        seed=opts.seed,
        name=opts.name,
        out=out_folder(opts.out, opts.out_short),
        devices=opts.devices,
        num_nodes=opts.num_nodes,
        strategy=opts.strategy,
        accelerator=opts.accelerator,
        progress=opts.progress,
        deterministic=_deterministic(opts.deterministic),
        test_manifest=opts.test_manifest,
        copies_manifest=opts.copies_manifest,
        copies=opts.copies,
        **keys,
    )


def _log(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)

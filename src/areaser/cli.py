"""Command line: a thin layer over the Python API (``areaser --help``).

Each command imports what it needs inside its body so ``--help`` stays fast.
Errors a user can fix (bad audio, bad manifest, bad option) print one line on
stderr and exit non-zero; they never print a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

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
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print one clear error line and return an Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        console.print(f"areaser {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Speech emotion recognition with multiscale area attention and VTLP."""


# ----------------------------------------------------------------------------- data


def _print_counts(tab: "pandas.DataFrame", title: str) -> None:  # noqa: F821 (imported lazily)
    """Print a ``count_table`` as a rich table; labels become rows when the other axis is short."""
    from rich.table import Table

    if tab.shape[0] <= 13:  # few speakers/sessions: one column each reads better
        tab = tab.T
    table = Table(title=title, title_justify="left")
    table.add_column(f"{tab.index.name} \\ {tab.columns.name}")
    for col in tab.columns:
        table.add_column(str(col) or '""', justify="right")
    for idx, row in tab.iterrows():
        table.add_row(str(idx) or '""', *(f"{v:,}" for v in row))
    console.print(table)


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
) -> None:
    """Scan a local copy of a corpus into a manifest; print counts per label, speaker and session."""
    from collections import Counter

    from .corpora import load_corpus
    from .manifest import count_table, write_manifest

    try:
        result = load_corpus(corpus, root, progress=progress, check_silent=check_silent)
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
            console.print(f"  {n:>6,}  {reason}", highlight=False)
        if len(by_reason) > 10:
            console.print(f"  {sum(n for _, n in by_reason[10:]):>6,}  {len(by_reason) - 10} other reasons")
        for s in result.skipped[:show_skipped]:
            console.print(f"  {s.path}: {s.reason}", highlight=False, soft_wrap=True)
        if len(result.skipped) > show_skipped:
            console.print(f"  ... and {len(result.skipped) - show_skipped:,} more", highlight=False)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    if not len(df):
        raise fail(f"{root}: no usable utterances ({len(result.skipped):,} files skipped, reasons above)")
    if output is not None:
        write_manifest(df, output)
        console.print(f"wrote {output} ({len(df):,} rows)", highlight=False)


# ----------------------------------------------------------------------------- features


# ----------------------------------------------------------------------------- training


# ----------------------------------------------------------------------------- inference


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    from .audio import AudioError
    from .manifest import ManifestError

    try:
        app()
    except (AudioError, ManifestError) as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

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

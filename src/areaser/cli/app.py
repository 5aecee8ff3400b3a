"""Command line: a thin layer over the Python API (``areaser --help``).

Each command imports what it needs inside its body so ``--help`` stays fast.
Errors a user can fix (bad audio, bad manifest, bad option) print one line on
stderr and exit non-zero; they never print a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from areaser import __version__
from areaser.core.errors import AreaserError

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


def main(prog_name: str | None = None) -> None:
    """Console-script entry point (``areaser``, ``python -m areaser``).

    An :class:`~areaser.core.errors.AreaserError` that escapes a verb (a user error the verb did not
    turn into :func:`fail` itself: bad audio, a bad manifest, a missing extra, ...) is printed as one
    line, ``error: <message>``, on stderr, and the exit code is 2; never a traceback.

    Parameters
    ----------
    prog_name : the program's name in usage lines (default: from ``sys.argv[0]``).
    """
    try:
        app(prog_name=prog_name)
    except AreaserError as e:
        sys.exit(fail(str(e)).exit_code)

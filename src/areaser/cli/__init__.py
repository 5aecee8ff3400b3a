"""Command line: a thin layer over the Python API (``areaser --help``, ``python -m areaser``).

:mod:`~areaser.cli.app` holds the Typer app and the entry point; the verbs register themselves on it
when their module is imported: :mod:`~areaser.cli.data` (scan, synth, augment), :mod:`~areaser.cli.train`
(train, cv, evaluate, ablate, demo) and :mod:`~areaser.cli.serve` (predict, embed, export, listen, serve).
Options shared by several verbs are defined once, in :mod:`~areaser.cli.options`.
"""

# isort: off
# importing a verb module registers its verbs, in this order in `areaser --help`
from areaser.cli import data  # noqa: F401
from areaser.cli import train  # noqa: F401
from areaser.cli import serve  # noqa: F401

# isort: on
from areaser.cli.app import app, main

__all__ = ["app", "main"]

"""``python -m areaser``: the same command line as the ``areaser`` console script."""

from areaser.cli import main

main(prog_name="python -m areaser")

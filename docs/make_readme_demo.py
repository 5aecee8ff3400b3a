"""Regenerate the README's demo transcript: a fresh clone, ``time make demo``, pasted between markers.

    python docs/make_readme_demo.py            # clones this checkout's HEAD into a temporary folder
    python docs/make_readme_demo.py --check    # only says whether the README holds a transcript block

The transcript sits in ``README.md`` between ``<!-- demo-transcript:begin -->`` and
``<!-- demo-transcript:end -->``. This script clones the committed tree (``git clone`` of the
repository the script lives in, so uncommitted changes are not measured), runs ``time make demo``
there with ``../shared`` beside it when this checkout has one, and replaces the block with what
the terminal showed: the command, its output and the ``time`` lines (pip's notes about a local package index
left out). Paths of the temporary clone are
shown as they were. It takes as long as a first ``make demo`` (a few minutes on 2 cores). The README
is written atomically and only when the demo succeeded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- demo-transcript:begin -->", "<!-- demo-transcript:end -->"


def _block(text: str) -> tuple[int, int]:
    """Character offsets of the text between the markers; SystemExit when they are missing."""
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise SystemExit(f"{README}: no {BEGIN} ... {END} block to replace")
    return i + len(BEGIN), j


def keep(lines: list[str]) -> list[str]:
    """The transcript's lines: blank lines and pip's notes about this machine's package index left out."""
    return [ln for ln in lines if ln.strip() and not ln.startswith("WARNING: Location 'file:")]


def run_demo() -> str:
    """``time make demo`` in a fresh clone; returns the console transcript (raises on failure)."""
    with tempfile.TemporaryDirectory(prefix="areaser-demo-") as tmp:
        clone = Path(tmp) / "areaser"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        shared = ROOT.parent / "shared"
        if shared.is_dir():
            os.symlink(shared, Path(tmp) / "shared")
        env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
        proc = subprocess.run(
            ["bash", "-c", "time make demo"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout)
            raise SystemExit(f"make demo failed in the fresh clone (exit {proc.returncode}); README left as it was")
        lines = keep(proc.stdout.splitlines())
        return "$ git clone ... areaser && cd areaser && time make demo\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the README has the block")
    args = ap.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    a, b = _block(text)
    if args.check:
        print(f"{README}: transcript block of {text[a:b].count(chr(10))} lines")
        return
    transcript = run_demo()
    text = README.read_text(encoding="utf-8")  # again: edits made while the demo ran are kept
    a, b = _block(text)
    new = text[:a] + "\n```console\n" + transcript + "```\n" + text[b:]
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(README)
    print(f"{README}: demo transcript regenerated ({transcript.count(chr(10))} lines)")


if __name__ == "__main__":
    main()

"""Regenerate the console transcripts in README.md and docs/*.md from the commands that make them.

A transcript is a fenced ``console`` block between two HTML comments, which Markdown renders as
nothing::

    <!-- transcript: areaser predict --help -->
    ```console
    $ areaser predict --help
    ...what the command printed...
    ```
    <!-- /transcript -->

The opening comment names the command (one shell line, run by ``bash -c``; it must not contain
``-->``); words between ``transcript`` and the colon are options:

``heavy``
    Training, benchmarks, anything slow: run only with ``--heavy``.
``clone``
    Run the command in a fresh ``git clone`` of this checkout's HEAD (uncommitted changes are not
    measured), with ``../shared`` linked beside it where this checkout has one, under the caller's
    own PATH; shown as ``$ git clone ... areaser && cd areaser && COMMAND``, blank lines and pip's
    notes about a local package index left out. Implies ``heavy``. The README's demo transcript is
    ``<!-- transcript clone: time make demo -->``.
``exit=N``
    The exit status the command is expected to end with (default 0), for transcripts of refusals.
``timeout=S``
    Seconds before the command is killed (default 120, heavy 3600).
``columns=N``
    Terminal width the command is told (``COLUMNS``; default 100).
``needs=PATH``
    Skip the block, saying so, when PATH (relative to the repository root) does not exist: a run,
    a corpus or a model that an earlier command (``make demo``, a benchmark) makes.

Every other command runs from the repository root with ``.venv/bin`` first on PATH (``--bin``
changes that folder), ``TERM=dumb`` and ``NO_COLOR=1``; its standard output and error, merged, with
colour codes and trailing spaces removed, replace the block's body. A file is rewritten atomically
(a temporary file beside it, then ``os.replace``) and only when every command run for it succeeded;
blocks that were not run keep their text. Markers inside other fenced code blocks are not blocks.

Examples
--------
::

    python docs/make_transcripts.py --list               # every block, and whether its $ line matches
    python docs/make_transcripts.py                      # run the cheap blocks, rewrite their files
    python docs/make_transcripts.py --only 'predict'     # only blocks whose command contains "predict"
    python docs/make_transcripts.py --check              # run the cheap blocks, say which are stale
    python docs/make_transcripts.py --heavy --only 'make demo'   # the demo, from a fresh clone
    python docs/make_transcripts.py --heavy docs/benchmarks.md   # every benchmark (hours)

``--check`` writes nothing and exits with status 1 when a block is stale, malformed or failed; ``--list``
exits with 1 when a block's ``$`` line does not match its marker.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPEN = re.compile(r"^<!-- transcript(?P<opts>(?: [a-z]+(?:=\S+)?)*): (?P<cmd>.+?) -->$")
CLOSE = "<!-- /transcript -->"
FENCE = re.compile(r"^(`{3,}|~{3,})")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
CLONE_PROMPT = "git clone ... areaser && cd areaser && "
OPTIONS = {"heavy", "clone", "exit", "timeout", "columns", "needs"}


@dataclass
class Block:
    """One transcript block: its command, options and where its body lies in the file's lines."""

    path: Path
    line: int  # 1-based line of the opening marker
    command: str
    options: dict[str, str] = field(default_factory=dict)
    start: int = 0  # index of the first body line (after the opening marker)
    end: int = 0  # index of the closing marker

    @property
    def heavy(self) -> bool:
        return "heavy" in self.options or "clone" in self.options

    @property
    def prompt(self) -> str:
        """The ``$`` line the body should start with."""
        return "$ " + (CLONE_PROMPT if "clone" in self.options else "") + self.command

    def where(self) -> str:
        try:
            name = self.path.relative_to(ROOT)
        except ValueError:
            name = self.path
        return f"{name}:{self.line}"


def parse(path: Path, lines: list[str]) -> list[Block]:
    """The transcript blocks of one file; SystemExit naming the line when a marker is malformed."""
    blocks: list[Block] = []
    fence = ""
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\n")
        if fence:
            if line.startswith(fence[0] * len(fence)) and not line.strip(fence[0]):
                fence = ""
        elif m := FENCE.match(line):
            fence = m.group(1)
        elif line.startswith("<!-- transcript") and line != CLOSE:
            m = OPEN.match(line)
            if not m:
                raise SystemExit(f"{path}:{i + 1}: not a transcript marker: {line}")
            opts = dict(o.partition("=")[::2] for o in m.group("opts").split())
            unknown = set(opts) - OPTIONS
            if unknown:
                raise SystemExit(f"{path}:{i + 1}: unknown option(s) {', '.join(sorted(unknown))}")
            j = i + 1
            while j < len(lines) and lines[j].rstrip("\n") != CLOSE:
                if OPEN.match(lines[j].rstrip("\n")):
                    break
                j += 1
            if j == len(lines) or lines[j].rstrip("\n") != CLOSE:
                raise SystemExit(f"{path}:{i + 1}: transcript block without its {CLOSE}")
            blocks.append(Block(path, i + 1, m.group("cmd"), opts, i + 1, j))
            i = j
        i += 1
    return blocks


def body_prompt(lines: list[str]) -> str | None:
    """The first ``$`` line of a block body, or None when the body is not a fenced block with one."""
    if not lines or not FENCE.match(lines[0]):
        return None
    for line in lines[1:]:
        if line.startswith("$ "):
            return line.rstrip("\n")
        if FENCE.match(line):
            break
    return None


def clean(text: str, clone: bool) -> list[str]:
    """Output lines: colour codes and trailing spaces removed, leading and trailing blank lines dropped."""
    lines = [ANSI.sub("", ln).rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    if clone:  # a first install: blank lines and pip's notes about a local index are noise
        lines = [ln for ln in lines if ln and not ln.startswith("WARNING: Location 'file:")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def render(block: Block, output: list[str]) -> list[str]:
    """The new body: a console fence holding the ``$`` line and the output."""
    fence = "```"
    while any(ln.startswith(fence) for ln in output):
        fence += "`"
    return [f"{fence}console\n", block.prompt + "\n", *(ln + "\n" for ln in output), fence + "\n"]


def execute(command: str, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run one shell line in its own process group; (exit status or None on timeout, merged output)."""
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


def run(block: Block, bin_dir: Path) -> list[str]:
    """Run a block's command; its output lines, or RuntimeError saying why not."""
    env = {**os.environ, "COLUMNS": block.options.get("columns", "100"), "TERM": "dumb", "NO_COLOR": "1"}
    timeout = float(block.options.get("timeout", 3600 if block.heavy else 120))
    expected = int(block.options.get("exit", "0"))
    if "clone" in block.options:
        with tempfile.TemporaryDirectory(prefix="areaser-transcript-") as tmp:
            clone = Path(tmp) / "areaser"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            shared = ROOT.parent / "shared"
            if shared.is_dir():
                os.symlink(shared, Path(tmp) / "shared")
            rc, out = execute(block.command, clone, env, timeout)
    else:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        if (bin_dir / "python").exists():
            env["VIRTUAL_ENV"] = str(bin_dir.parent)
        rc, out = execute(block.command, ROOT, env, timeout)
    if rc is None:
        raise RuntimeError(f"timed out after {timeout:g} s\n{out}")
    if rc != expected:
        raise RuntimeError(f"exit status {rc}, expected {expected}\n{out}")
    return clean(out, "clone" in block.options)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` through a temporary file in the same folder (mode kept)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def selected(block: Block, args: argparse.Namespace) -> str | None:
    """None when the block is to run; otherwise why it is skipped."""
    if args.only and args.only not in block.command:
        return "not --only"
    if block.heavy and not args.heavy:
        return "heavy (--heavy runs it)"
    needs = block.options.get("needs")
    if needs and not (ROOT / needs).exists():
        return f"needs {needs}, which does not exist"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="Markdown files (default: README.md and docs/*.md)")
    ap.add_argument("--list", action="store_true", help="list the blocks and whether their $ line matches; run nothing")
    ap.add_argument("--check", action="store_true", help="run the selected blocks, say which are stale; write nothing")
    ap.add_argument("--only", metavar="PATTERN", help="only blocks whose command contains PATTERN")
    ap.add_argument("--heavy", action="store_true", help="run heavy blocks too (training, benchmarks, the demo)")
    ap.add_argument("--bin", type=Path, default=ROOT / ".venv" / "bin", help="folder put first on PATH")
    args = ap.parse_args(argv)
    files = [p.resolve() for p in args.files] or default_files()
    bad = 0
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        blocks = parse(path, lines)
        new_bodies: dict[int, list[str]] = {}
        failed = False
        for k, block in enumerate(blocks):
            if args.only and args.only not in block.command:
                continue
            prompt = body_prompt(lines[block.start : block.end])
            state = "ok" if prompt == block.prompt else ("no console block" if prompt is None else "$ line differs")
            kind = ",".join(o for o in ("clone", "heavy") if o in block.options) or "cheap"
            if args.list:
                print(f"{block.where()}  [{kind}]  {state}  {block.command}")
                bad += state != "ok"
                continue
            why = selected(block, args)
            if why:
                print(f"{block.where()}: skipped ({why}): {block.command}")
                continue
            print(f"{block.where()}: running: {block.command}", flush=True)
            try:
                body = render(block, run(block, args.bin.resolve()))
            except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
                print(f"{block.where()}: FAILED: {e}", file=sys.stderr)
                failed = True
                bad += 1
                continue
            if args.check:
                fresh = body == lines[block.start : block.end]
                print(f"{block.where()}: {'up to date' if fresh else 'STALE'}")
                bad += not fresh
            new_bodies[k] = body
        if args.list or args.check or not new_bodies:
            continue
        if failed:
            print(f"{path}: not written (a command failed)", file=sys.stderr)
            continue
        # read again: edits made while the commands ran are kept, if the blocks are still where they were
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        again = parse(path, lines)
        if [(b.command, b.options) for b in again] != [(b.command, b.options) for b in blocks]:
            print(f"{path}: not written (its transcript blocks changed while the commands ran)", file=sys.stderr)
            bad += 1
            continue
        for k in sorted(new_bodies, reverse=True):
            lines[again[k].start : again[k].end] = new_bodies[k]
        write_atomic(path, "".join(lines))
        print(f"{path}: {len(new_bodies)} transcript(s) regenerated")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

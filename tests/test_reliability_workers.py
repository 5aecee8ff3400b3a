"""Worker processes die with their parent (#14: kill -9 of `ablate` left its workers idling for ever).

A real parent process makes a real pool (areaser.io.workers.process_pool, the pool ablate, synth and the
benchmark use), its workers block in a task, the test kills the parent with SIGKILL (no clean-up runs
in it) and waits for the workers to be gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and /proc are POSIX")

PARENT = """
import json, time
from concurrent.futures import wait
from areaser.io.workers import process_pool

pool = process_pool(2)
wait([pool.submit(time.sleep, 1.0) for _ in range(2)])  # both workers started and working
futures = [pool.submit(time.sleep, 600) for _ in range(2)]  # then busy for long, as ablate's are
while not all(f.running() for f in futures):
    time.sleep(0.05)
time.sleep(0.5)
print(json.dumps(sorted(pool._processes)), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for its reaper is not running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:  # gone between the two looks
            return False
    return True


def _wait_gone(pids: list[int], within_s: float) -> list[int]:
    """The pids still alive after waiting up to ``within_s`` seconds (not a timing claim: a liveness bound)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("booted", [True, False], ids=["working", "still-starting"])
def test_workers_exit_when_their_parent_is_killed(booted: bool) -> None:
    """Killed while its workers compute, or while they still start (they must not adopt the new parent)."""
    code = PARENT if booted else PARENT.replace("wait([", "([")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    workers: list[int] = []
    try:
        line = parent.stdout.readline()
        workers = json.loads(line)
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        # their tasks sleep for 600 s: only the watchdog can end them this soon
        assert _wait_gone(workers, within_s=30) == [], "workers outlived their killed parent"
    finally:
        parent.kill()
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_living_parent_keeps_its_workers() -> None:
    """The watchdog ends orphans only: a pool of a living parent still computes."""
    from areaser.io.workers import POLL_S, process_pool

    with process_pool(1) as pool:
        assert pool.submit(pow, 3, 4).result(timeout=60) == 81
        time.sleep(3 * POLL_S)  # the worker's watchdog looks at its parent a few times
        assert pool.submit(pow, 2, 10).result(timeout=60) == 1024

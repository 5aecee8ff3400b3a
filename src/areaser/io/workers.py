"""Process pools whose workers die with their parent.

A ``ProcessPoolExecutor`` worker outlives a parent killed with SIGKILL: the parent's
clean-up never runs, and the worker finishes its queue, then waits for work for ever
(ablate's held 730-830 MB each). Every pool here starts its workers with a watchdog
thread that polls the parent's pid and exits the worker when the parent is gone
(its pid changes: the orphan is re-parented). Polling, rather than Linux's
``PR_SET_PDEATHSIG``, because that signal fires when the *thread* that spawned the
worker exits and is Linux-only; a 0.5 s poll costs nothing measurable.

Workers are started with ``spawn``: fork after torch has started threads can deadlock,
and spawned workers start clean (espeak-ng must never have spoken in them).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, Callable, Sequence

import torch
from threadpoolctl import threadpool_limits

__all__ = ["process_pool", "exit_with_parent", "limit_threads", "POLL_S"]

POLL_S = 0.5  # how often a worker checks that its parent lives (seconds)
EXIT_ORPHANED = 70  # exit status of a worker whose parent died (EX_SOFTWARE)


def exit_with_parent(parent: int, poll_s: float = POLL_S) -> threading.Thread:
    """Start a daemon thread that ends this process when ``parent`` (a pid) is no longer its parent.

    ``parent`` comes from the parent itself: read here, in a worker still starting when the
    parent died, it would be the new (adoptive) parent's pid, and the worker would live on.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(EXIT_ORPHANED)  # no clean-up: the process that wanted the results is gone

    thread = threading.Thread(target=watch, name="areaser-exit-with-parent", daemon=True)
    thread.start()
    return thread


def limit_threads(threads: int) -> None:
    """``threads`` torch and BLAS threads in this process (1 when several workers share the cores)."""
    torch.set_num_threads(threads)
    threadpool_limits(threads)


def _start_worker(parent: int, initializer: Callable[..., Any] | None, initargs: Sequence[Any]) -> None:
    exit_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    jobs: int,
    initializer: Callable[..., Any] | None = None,
    initargs: Sequence[Any] = (),
) -> ProcessPoolExecutor:
    """A spawn-context pool of ``jobs`` workers that exit when this process dies.

    ``initializer(*initargs)`` runs in each worker after the watchdog starts; it must be a
    module-level function (spawn pickles it by name).
    """
    return ProcessPoolExecutor(
        jobs,
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, tuple(initargs)),
    )

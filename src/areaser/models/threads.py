"""One shared pool of worker threads for the blocked area-attention fast path."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

# torch.set_num_threads sets the calling thread's OpenMP / MKL team size *and* the process-wide
# count that every thread takes at its first torch op. The workers need the former (one each) but
# must not leave the latter at one, or a thread starting meanwhile (a service's) would run serially
# for good. So the workers are made once per process and thread count, the caller restoring the
# process-wide count as soon as they have set theirs, and are kept (no per-call thread start-up).
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _workers(n: int) -> ThreadPoolExecutor:
    """``n`` started threads whose ops run serially, shared by every caller in this process."""
    with _POOLS_LOCK:
        if n not in _POOLS:
            pool = ThreadPoolExecutor(n, thread_name_prefix="area-attention")
            ready = threading.Barrier(n + 1)

            def start() -> None:
                torch.get_num_threads()  # a thread's first call takes the process-wide count: do it now,
                torch.set_num_threads(1)  # so that this one stays
                ready.wait()

            before = torch.get_num_threads()
            try:
                # while every task waits at the barrier no thread is idle, so each submit starts one
                started = [pool.submit(start) for _ in range(n)]
                ready.wait()
            finally:
                torch.set_num_threads(before)
            for f in started:
                f.result()
            _POOLS[n] = pool
        return _POOLS[n]


def by_batch(blocks: list[tuple[slice, slice]]) -> list[list[tuple[slice, slice]]]:
    """Blocks of (batch slice, query slice) grouped by batch slice, in order.

    One worker owns a group's rows of dK and dV, so no two threads add into the same rows.
    """
    groups: dict[int, list[tuple[slice, slice]]] = {}
    for bs, qs in blocks:
        groups.setdefault(bs.start, []).append((bs, qs))
    return list(groups.values())


def _run_groups(fn: Callable[[int, slice, slice], None], groups: list, device: torch.device) -> None:
    """Run ``fn(index, batch, queries)`` on every block.

    On CPU the groups go to ``torch.get_num_threads()`` Python threads, each running its ops
    serially: no parallel region (and barrier) per op, which stalls whenever one thread is
    descheduled on a busy machine.
    """
    blocks = [(i, b) for i, b in enumerate(b for g in groups for b in g)]
    per_group, start = [], 0
    for g in groups:
        per_group.append(blocks[start : start + len(g)])
        start += len(g)

    inference = torch.is_inference_mode_enabled()

    def work(group):
        # autograd modes are per thread; inference_mode(False) turns grad mode on, so no_grad goes inside
        with torch.inference_mode(inference), torch.no_grad():
            for i, (bs, qs) in group:
                fn(i, bs, qs)

    threads = torch.get_num_threads() if device.type == "cpu" else 1
    if threads > 1 and len(groups) > 1:
        list(_workers(threads).map(work, per_group))
    else:
        for group in per_group:
            work(group)

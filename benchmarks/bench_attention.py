"""Area attention speed and peak memory against the `area-attention` package and plain attention.

    python -m benchmarks.bench_attention [--device cpu|cuda] [--threads N] [--reps 3]
                                         [--throughput] [--out results.json]

The paper's case, forward + backward, all measured in one run on the same input: batch 32, a
64 x 20 map of 80 channels, 2-D areas up to 3 x 3 (10,773 areas), mean keys, sum values, no
projections (q = k = v = the map), no dropout unless ``--dropout`` (on the area weights; sdpa's
``dropout_p`` on its position weights).

* ``ours``: :func:`areaser.models.attention.area_attention` as training runs it (``backend="auto"``: the
  fused blocks of :mod:`areaser.models.attention_fused` where a C++ compiler is found; on CPU the
  native kernel of :mod:`areaser.models.attention_native`, on CUDA TorchInductor's Triton kernels),
  logits scaled by 1/sqrt(80) like the package's and sdpa's. Its warm-up call (``first s``) builds
  or loads the kernels (a later process loads them from the disk cache).
* ``ours-eager``: the same with ``backend="eager"`` (torch ops only).
* ``package``: ``area_attention.AreaAttention`` from PyPI (a PyTorch port of tensor2tensor's
  area attention that materialises every area), the peer. One repetition: it is slow on CPU.
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` over the 1,280 positions: the
  floor (area attention still has to normalise over 8.4 times as many targets).

Each case runs in its own subprocess so peak memory is its own: on CPU the peak resident set
size (``ru_maxrss``) above the RSS before the first call, on CUDA ``max_memory_allocated`` above
the allocation before it. Time is the best wall-clock repetition and its process CPU time
(user + system, all threads); on a shared machine ``--threads 1`` makes CPU seconds independent
of the load. Before timing, ours and the package are checked to agree on a small
batch. ``--throughput`` adds training windows/s of the full models (forward + backward + Adam,
batch 32, 128 x 81 log-Mel input) for the ``faithful``, ``paper`` and ``cnn`` presets, stepped
round robin so load changes hit all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

CASES = ("ours", "ours-eager", "package", "sdpa")
PRESETS = ("faithful", "paper", "cnn")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _attention_fn(case: str, height: int, width: int, dim: int, max_area: tuple[int, int], device, dropout=0.0):
    """The callable ``x [B, L, D] -> [B, L, D]`` of one case."""
    if case in ("ours", "ours-eager"):
        from areaser.models.attention import area_attention

        backend = "auto" if case == "ours" else "eager"
        # scale=True: logits divided by sqrt(dim), as the package and sdpa do
        return lambda x: area_attention(
            x, x, x, height, max_area=max_area, key_mode="mean", value_mode="sum", scale=True, dropout=dropout,
            backend=backend,
        )  # fmt: skip
    if case == "package":
        import area_attention

        module = area_attention.AreaAttention(
            dim, "mean", "sum", max_area[0], max_area[1], height, width, dropout_rate=dropout
        ).to(device)
        return lambda x: module(x, x, x)
    return lambda x: torch.nn.functional.scaled_dot_product_attention(x, x, x, dropout_p=dropout)


def run_case(args: argparse.Namespace) -> dict:
    """Child process: time forward + backward of one case and measure its peak memory."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn = _attention_fn(args.case, args.height, args.width, args.dim, tuple(args.max_area), device, args.dropout)
    x = torch.randn(args.batch, args.height * args.width, args.dim, device=device).requires_grad_(True)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
    reps = 1 if args.case == "package" and device.type == "cpu" else args.reps
    warmup = 0 if args.case == "package" and device.type == "cpu" else 1
    times, cpu_times, first = [], [], None
    for i in range(warmup + reps):
        x.grad = None
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn(x).sum().backward()
        _sync(device)
        if i == 0:
            first = time.perf_counter() - t0
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:  # ru_maxrss is KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"case": args.case, "seconds": min(times), "median_seconds": statistics.median(times),
            "cpu_seconds": min(cpu_times), "reps": len(times), "peak_bytes": int(peak),
            "first_call_seconds": first}  # fmt: skip


def parity_check(args: argparse.Namespace) -> float:
    """Max |ours - package| on 2 examples of the benchmark shape (ours scaled like the package)."""
    import area_attention

    from areaser.models.attention import area_attention as ours

    device = torch.device(args.device)
    torch.manual_seed(1)
    x = torch.randn(2, args.height * args.width, args.dim, device=device)
    h, w = args.max_area
    peer = area_attention.AreaAttention(args.dim, "mean", "sum", h, w, args.height, args.width).to(device)
    with torch.no_grad():
        want = peer(x, x, x)
        got = ours(x, x, x, args.height, max_area=(h, w), scale=True)
    return float((got - want).abs().max() / want.abs().max())


def throughput(args: argparse.Namespace, steps: int = 5) -> dict[str, float]:
    """Training windows/s of each preset (batch, 128 x 81 input), round robin, median step."""
    from areaser.models.cnn import build_model

    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 128, 81, device=device)
    y = torch.randint(0, 4, (args.batch,), device=device)
    models = {p: build_model(p).to(device).train() for p in PRESETS}
    opts = {p: torch.optim.Adam(m.parameters(), lr=1e-4) for p, m in models.items()}
    times: dict[str, list[float]] = {p: [] for p in PRESETS}
    for i in range(steps + 1):  # the first round is warm-up
        for p, m in models.items():
            _sync(device)
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opts[p].zero_grad(set_to_none=True)
            loss.backward()
            opts[p].step()
            _sync(device)
            if i:
                times[p].append(time.perf_counter() - t0)
    return {p: args.batch / statistics.median(t) for p, t in times.items()}


def _child(args: argparse.Namespace, case: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_attention", "--case", case, "--device", args.device,
           "--batch", str(args.batch), "--height", str(args.height), "--width", str(args.width),
           "--dim", str(args.dim), "--max-area", *map(str, args.max_area), "--reps", str(args.reps),
           "--dropout", str(args.dropout)]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=20)
    ap.add_argument("--dim", type=int, default=80)
    ap.add_argument("--max-area", type=int, nargs=2, default=(3, 3), metavar=("H", "W"))
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (the package on CPU: 1)")
    ap.add_argument("--dropout", type=float, default=0.0, help="attention dropout (the paper preset trains with 0.5)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--throughput", action="store_true", help="also training windows/s of the model presets")
    ap.add_argument("--out", default=None, help="write the results as JSON here (atomically)")
    ap.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.case:
        print(json.dumps(run_case(args)))
        return

    from rich.console import Console
    from rich.table import Table

    from areaser.models.areas import count_areas

    console = Console()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    n_areas = count_areas(args.height, args.width, tuple(args.max_area))
    if args.device == "cuda":
        where = torch.cuda.get_device_name(0)
    else:
        from areaser.runs.determinism import cpu_model

        where = f"{cpu_model()}, {args.threads or torch.get_num_threads()} threads"
    results = {"device": args.device, "where": where, "torch": torch.__version__, "batch": args.batch,
               "map": [args.height, args.width, args.dim], "max_area": list(args.max_area), "areas": n_areas,
               "cases": {}}  # fmt: skip
    if "package" in cases and "ours" in cases:
        results["max_relative_difference_to_package"] = parity_check(args)
    for case in cases:
        console.print(f"measuring {case} ...", style="dim")
        results["cases"][case] = _child(args, case)

    res = results["cases"]
    table = Table(title=f"area attention, forward + backward: batch {args.batch}, map {args.height} x {args.width} x "
                        f"{args.dim}, areas up to {args.max_area[0]} x {args.max_area[1]} ({n_areas:,} areas), "
                        f"{where}; best of reps", title_justify="left")  # fmt: skip
    for col in ("case", "reps", "first s", "wall s", "CPU s", "peak MB", "wall/ours", "CPU/ours", "MB/ours"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for case, r in res.items():
        ref = res.get("ours", r)
        table.add_row(case, str(r["reps"]), f"{r['first_call_seconds']:.1f}", f"{r['seconds']:.2f}",
                      f"{r['cpu_seconds']:.2f}",
                      f"{r['peak_bytes'] / 2**20:,.0f}", f"{r['seconds'] / ref['seconds']:.2f}",
                      f"{r['cpu_seconds'] / ref['cpu_seconds']:.2f}",
                      f"{r['peak_bytes'] / max(ref['peak_bytes'], 1):.2f}")  # fmt: skip
    console.print(table)

    ratios = {}
    if "ours" in res and "package" in res:
        ratios["speedup_vs_package"] = res["package"]["seconds"] / res["ours"]["seconds"]
        ratios["cpu_speedup_vs_package"] = res["package"]["cpu_seconds"] / res["ours"]["cpu_seconds"]
        ratios["memory_reduction_vs_package"] = res["package"]["peak_bytes"] / max(res["ours"]["peak_bytes"], 1)
    if "ours" in res and "sdpa" in res:
        ratios["slowdown_vs_sdpa"] = res["ours"]["seconds"] / res["sdpa"]["seconds"]
        ratios["cpu_slowdown_vs_sdpa"] = res["ours"]["cpu_seconds"] / res["sdpa"]["cpu_seconds"]
    if "ours" in res and "ours-eager" in res:
        ratios["speedup_vs_eager"] = res["ours-eager"]["seconds"] / res["ours"]["seconds"]
    if "ours" in res:
        ratios["peak_memory_vs_sdpa"] = res["ours"]["peak_bytes"] / max(res.get("sdpa", res["ours"])["peak_bytes"], 1)
    results["ratios"] = ratios
    results["load_average"] = os.getloadavg()
    goals = {"speedup_vs_package": (">=", 5.0), "cpu_speedup_vs_package": (">=", 5.0),
             "memory_reduction_vs_package": (">=", 5.0), "slowdown_vs_sdpa": ("<=", 2.0),
             "cpu_slowdown_vs_sdpa": ("<=", 2.0), "speedup_vs_eager": (">=", 1.0),
             "peak_memory_vs_sdpa": ("<=", 1.0)}  # fmt: skip
    summary = Table(title="goals", title_justify="left")
    for col in ("ratio (time: wall-clock unless cpu_)", "measured", "goal", "met"):
        summary.add_column(col)
    for k, v in ratios.items():
        op, goal = goals[k]
        met = v >= goal if op == ">=" else v <= goal
        summary.add_row(k, f"{v:.2f}", f"{op} {goal:g}", "yes" if met else "NO")
    if "max_relative_difference_to_package" in results:
        summary.add_row("max|ours - package| / max|package|", f"{results['max_relative_difference_to_package']:.1e}",
                        "< 1e-5", "yes" if results["max_relative_difference_to_package"] < 1e-5 else "NO")  # fmt: skip
    console.print(summary)
    one, five, fifteen = results["load_average"]
    console.print(f"load average during the run: {one:.1f}, {five:.1f}, {fifteen:.1f} (1, 5, 15 min; "
                  f"{os.cpu_count()} cores)")  # fmt: skip

    if args.throughput:
        console.print("measuring training throughput ...", style="dim")
        rates = throughput(args)
        results["throughput_windows_per_s"] = rates
        t = Table(title=f"training throughput (forward + backward + Adam), batch {args.batch}, "
                        f"128 x 81 log-Mel, {where}",
                  title_justify="left")  # fmt: skip
        for col in ("preset", "windows/s", "ratio to cnn"):
            t.add_column(col, justify="left" if col == "preset" else "right")
        for p, r in rates.items():
            t.add_row(p, f"{r:.1f}", f"{r / rates['cnn']:.2f}")
        console.print(t)

    if args.out:
        from areaser.io.files import atomic_write_json

        atomic_write_json(args.out, results)
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

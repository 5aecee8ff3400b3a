"""Training throughput (windows per second) of every model preset, side by side in one run.

    python -m benchmarks.bench_training [--device cpu|cuda] [--threads N] [--batch 32] [--steps 10] [--set KEY=VALUE]

One training step is what :class:`areaser.train.module.SERModule` does per batch: log-Mel of 32
waveform windows of 2 s with per-example ``melwarp`` VTLP factors, the model forward, the
cross-entropy, backward and an Adam step (lr 1e-4). The windows are real built-in corpus
audio (60 utterances synthesised into a temporary folder unless ``--root`` is given).

Peer: the ``cnn`` preset (the same convolutional stack without attention), measured in the
same run; the table gives each preset's throughput and its ratio to ``cnn``, i.e. what the
attention costs. Steps of the presets alternate (round robin) so a change in machine load hits
all of them alike; the median step time is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

console = Console()
PRESETS = ("cnn", "faithful", "paper")


def corpus_windows(root: Path | None, n: int) -> torch.Tensor:
    """``n`` training windows (hop 1 s) of the built-in corpus, float32 ``[n, 32000]``."""
    from areaser.data.manifest import read_manifest
    from areaser.data.segments import SegmentConfig, segment_utterances
    from areaser.io.audio import load_audio

    if root is None:
        from areaser.builtin.synth import SynthConfig, synthesize

        root = Path(tempfile.mkdtemp(prefix="areaser-bench-"))
        synthesize(root, SynthConfig(n_utterances=60, seed=0), progress=False)
    df = read_manifest(root / "manifest.csv")
    windows, _ = segment_utterances(
        ((r.utt_id, load_audio(r.path)) for r in df.itertuples()), 16_000, SegmentConfig(), train=True
    )
    reps = int(np.ceil(n / len(windows)))
    return torch.from_numpy(np.ascontiguousarray(np.tile(windows, (reps, 1))[:n]))


class Contender:
    """One preset: LogMel + model + Adam, stepping on batches of windows."""

    def __init__(self, preset: str, device: torch.device, overrides: dict):
        from areaser.runs.config import build_modules, config_with

        cfg = config_with(None, model=preset, **overrides)
        self.cfg = cfg
        self.features, self.model = build_modules(cfg, 4)
        self.features.to(device)
        self.model.to(device).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.device = device
        self.params = sum(p.numel() for p in self.model.parameters())
        self.times: list[float] = []

    def step(self, wave: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> None:
        from areaser.dsp.vtlp import sample_factors

        t0 = time.perf_counter()
        wave, y = wave.to(self.device, non_blocking=True), y.to(self.device)
        warp = sample_factors(len(y), self.cfg.vtlp, gen).to(self.device)
        loss = torch.nn.functional.cross_entropy(self.model(self.features(wave, warp)), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="measured steps per preset (after 2 warm-up steps)")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument(
        "--root", type=Path, default=None, help="a built-in corpus folder (default: synthesise 60 utterances)"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig override for every preset, e.g. features.n_mels=32 (value read as JSON)",
    )
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    torch.manual_seed(0)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    waves = corpus_windows(args.root, args.batch * 4)
    labels = torch.randint(0, 4, (len(waves),))
    contenders = {p: Contender(p, device, overrides) for p in presets}
    gen = torch.Generator().manual_seed(0)
    for i in range(args.steps + 2):  # round robin; the first 2 rounds are warm-up
        sl = slice((i % 4) * args.batch, (i % 4 + 1) * args.batch)
        for c in contenders.values():
            c.step(waves[sl], labels[sl], gen)
    for c in contenders.values():
        c.times = c.times[2:]

    peer = "cnn" if "cnn" in contenders else presets[0]
    rate = {p: args.batch / statistics.median(c.times) for p, c in contenders.items()}
    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name(device)
    else:
        from areaser.runs.determinism import cpu_model

        dev_name = cpu_model()
    table = Table(
        title=f"training throughput, batch {args.batch}, {device.type} ({dev_name}, "
        f"{torch.get_num_threads()} threads), median of {args.steps} steps"
        + (f", {' '.join(args.set)}" if args.set else ""),
        title_justify="left",
    )
    for col in ("preset", "parameters", "windows/s", "ms/step", f"ratio to {peer}"):
        table.add_column(col, justify="right" if col != "preset" else "left")
    for p, c in contenders.items():
        table.add_row(
            p,
            f"{c.params:,}",
            f"{rate[p]:.1f}",
            f"{1000 * statistics.median(c.times):.0f}",
            f"{rate[p] / rate[peer]:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()

"""Inference speed: real-time factor on one CPU core, and service throughput on loopback.

    python -m benchmarks.bench_inference [--model RUN_DIR] [--corpus DIR] [--files N]

Real-time factor (RTF) = seconds of audio per second, over the whole path a user pays for:
decode, resample (the corpus is re-written as 44.1 kHz stereo WAV, as recordings usually come),
mix to mono, windows, log-Mel, model, aggregation. One core: torch uses one thread, ONNX Runtime
one intra-op thread. Reported per wall second and per CPU second of the process (on a shared
machine the second is what one idle core gives). Peer: PyTorch fp32; ratios are by CPU second.
Two hops: the model's test hop (0.4 s, the paper's: five windows per 2 s of audio) and 2 s
(no overlap: one window per 2 s, the cheapest full coverage, e.g. ``predict --timeline --hop 2``).

Service throughput: requests per second of ``POST /v1/predict`` on 127.0.0.1 (uvicorn in this
process), N uploads of corpus files with at most K in flight, the default 2 inference workers.

Models: trained runs (``--model``) and/or presets with random weights (``--presets``; speed does
not depend on the weights, int8 agreement does: measure that on a trained run). Without
``--corpus`` the built-in corpus (60 utterances) is synthesised into a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

console = Console(width=120)


def random_run(run_dir: Path, model: str = "paper") -> Path:
    """A run directory with a randomly initialised model (E's checkpoint format)."""
    from areaser.data.labels import get_label_set
    from areaser.runs.checkpoint import run_paths, save_weights
    from areaser.runs.config import build_modules, config_with

    cfg = config_with(model=model, manifest="none.csv").to_dict()
    classes = list(get_label_set("4class").classes)
    torch.manual_seed(0)
    features, net = build_modules(cfg, len(classes))
    state = {
        **{f"features.{k}": v for k, v in features.state_dict().items()},
        **{f"model.{k}": v for k, v in net.state_dict().items()},
    }
    save_weights(run_paths(run_dir)["best"], state, {"config": cfg, "classes": classes})
    return run_dir


def corpus_as_recordings(corpus: Path, out: Path, n: int | None) -> tuple[list[Path], float]:
    """Re-write corpus files as 44.1 kHz stereo 16-bit WAV; return the paths and total seconds."""
    from areaser.io.audio import load_audio, resample, write_audio

    df = pd.read_csv(corpus / "manifest.csv")
    paths, total = [], 0.0
    for i, rel in enumerate(df["path"][:n]):
        y = resample(load_audio(corpus / rel), 16_000, 44_100)
        stereo = np.stack([y, 0.8 * y], axis=1)
        paths.append(write_audio(out / f"rec{i:03d}.wav", stereo, 44_100))
        total += len(y) / 44_100
    return paths, total


def measure_rtf(recognizer, paths: list[Path], audio_s: float, repeats: int = 3) -> tuple[float, float]:
    """Real-time factors of ``predict_many`` over ``paths``: per wall second and per CPU second of
    this process, each the best of ``repeats`` passes after a warm-up. With one thread the CPU
    figure is what one idle core would give, whatever else runs on the machine."""
    list(recognizer.predict_many(paths[:2]))
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        results = list(recognizer.predict_many(paths))
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
        assert all(r.ok for r in results)
    return audio_s / wall, audio_s / cpu


class _Server:
    def __init__(self, app) -> None:  # noqa: ANN001
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join()


def measure_service(recognizer, paths: list[Path], n: int, k: int) -> float:
    """Requests per second for ``n`` uploads with at most ``k`` in flight."""
    import httpx

    from areaser.serve.service import create_app

    bodies = [(p.name, p.read_bytes()) for p in paths]

    async def load(url: str) -> float:
        gate = asyncio.Semaphore(k)
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:

            async def one(i: int) -> None:
                async with gate:
                    r = await client.post("/v1/predict?timeline=false", files={"file": bodies[i % len(bodies)]})
                    r.raise_for_status()

            await asyncio.gather(*(one(i) for i in range(k)))  # warm-up
            t = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return n / (time.perf_counter() - t)

    with _Server(create_app(recognizer)) as url:
        return asyncio.run(load(url))


def _exports(model: Path, tmp: Path, calibration: list[Path]) -> tuple[dict[str, Path], str]:
    """fp32, static int8 and dynamic int8 ONNX files of a run, or the reason it does not export."""
    from areaser.serve.export import export_onnx, quantize_int8

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            fp32 = export_onnx(model, tmp / f"{model.name}.onnx")
            return {
                "fp32": fp32,
                "int8 static": quantize_int8(fp32, tmp / f"{model.name}.int8s.onnx", calibration=calibration),
                "int8 dynamic": quantize_int8(fp32, tmp / f"{model.name}.int8d.onnx", mode="dynamic"),
            }, ""
    except ValueError as e:
        return {}, str(e)


def model_flops(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Floating-point operations (multiply + add = 2) of one input of ``shape`` through the model's
    convolutions and dense layers, counted from the layer shapes (attention is not counted)."""
    total = 0

    def count(mod, inp, out) -> None:  # noqa: ANN001
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            total += 2 * out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total += 2 * out.numel() * mod.in_features

    hooks = [
        m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in hooks:
        h.remove()
    return float(total)


def compute_ceiling(run: Path, onnx_path: Path, batch: int = 40) -> str:
    """One line: the model's FLOPs per 2 s window, the rate ONNX Runtime runs them at on one thread,
    and the rate 200x real time at hop 0.4 s would need (2.5 windows per second of audio)."""
    import onnxruntime as ort

    from areaser.runs.checkpoint import load_run

    loaded = load_run(run)
    with torch.no_grad():
        shape = tuple(loaded.features(torch.zeros(1, 32_000)).shape)  # one 2 s window at 16 kHz
    flops = model_flops(loaded.model, shape)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    x = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal((batch, *shape[1:]), dtype=np.float32)}
    sess.run(None, x)
    best = min(_timed(lambda: sess.run(None, x)) for _ in range(5))
    rate = flops * batch / best
    attention = any("Attention" in type(m).__name__ and m is not loaded.model for m in loaded.model.modules())
    what = "convolutions and dense layers" + ("; area attention not counted" if attention else "")
    return (
        f"{run.name}: {flops / 1e6:,.0f} MFLOP per 2 s window ({shape[1]} x {shape[2]} log-Mel; {what}); "
        f"ONNX Runtime fp32 takes {1000 * best / batch:.2f} ms per window on one thread (batch {batch}): "
        f"{rate / 1e9:.0f} GFLOP/s of those; 200x real time at hop 0.4 s (2.5 windows per audio second) "
        f"needs {200 * 2.5 * flops / 1e9:.0f} GFLOP/s"
    )


def _timed(fn) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, action="append", default=[], help="a trained run directory (repeatable)")
    ap.add_argument(
        "--presets",
        default=None,
        help="model presets with random weights, comma-separated (default: cnn,paper without --model, none with it)",
    )
    ap.add_argument("--corpus", type=Path, help="built-in corpus root (default: synthesise one)")
    ap.add_argument("--files", type=int, default=None, help="use only the first N corpus files")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the files (best is kept)")
    ap.add_argument("--requests", type=int, default=64, help="service: uploads in total")
    ap.add_argument("--concurrency", type=int, default=4, help="service: uploads in flight at once")
    args = ap.parse_args()

    from areaser.serve.recognizer import Recognizer

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        presets = args.presets if args.presets is not None else ("" if args.model else "cnn,paper")
        models = args.model + [random_run(tmp / f"{name}-random", name) for name in presets.split(",") if name]
        corpus = args.corpus
        if corpus is None:
            from areaser.builtin.synth import SynthConfig, synthesize

            console.print("synthesising the built-in corpus ...")
            synthesize(tmp / "corpus", SynthConfig(n_utterances=60, seed=0), progress=False)
            corpus = tmp / "corpus"
        paths, audio_s = corpus_as_recordings(corpus, tmp / "rec", args.files)
        calib = paths[::2]
        from areaser.runs.determinism import machine_description

        console.print(
            f"{len(paths)} files, {audio_s:.1f} s of 44.1 kHz stereo audio; torch {torch.__version__}, "
            f"onnxruntime {__import__('onnxruntime').__version__}; {machine_description()}, "
            f"load average {os.getloadavg()[0]:.1f}",
            highlight=False,
        )

        hops = (0.4, 2.0)
        table = Table(
            title="inference real-time factor, one CPU thread: audio seconds per wall second and per CPU "
            "second (higher is better); vs peer by CPU second"
        )
        table.add_column("model")
        table.add_column("backend")
        for hop in hops:
            table.add_column(f"hop {hop:g} s: wall", justify="right")
            table.add_column("CPU", justify="right")
            table.add_column("vs peer", justify="right")
        onnx_files: dict[str, dict[str, Path]] = {}
        goals: list[str] = []
        torch.set_num_threads(1)
        for model in models:
            files, why = _exports(model, tmp, calib)
            onnx_files[model.name] = files
            makers = {"PyTorch fp32 (peer)": lambda m=model, **kw: Recognizer.load(m, **kw)}
            for kind, f in files.items():
                makers[f"ONNX Runtime {kind}"] = lambda f=f, **kw: Recognizer.load(f, threads=1, **kw)
            rtf = {
                (name, hop): measure_rtf(make(hop_s=hop), paths, audio_s, args.repeats)
                for name, make in makers.items()
                for hop in hops
            }
            for name in makers:
                cells = []
                for hop in hops:
                    (w, c), (_, peer) = rtf[name, hop], rtf["PyTorch fp32 (peer)", hop]
                    cells += [f"{w:,.1f}x", f"{c:,.1f}x", f"{c / peer:.2f}"]
                table.add_row(model.name, name, *cells)
            for hop in hops:  # the goal: >= 200x real time on one core with ONNX Runtime (CPU seconds)
                ort_rtf = {k: v[1] for (k, h), v in rtf.items() if h == hop and k.startswith("ONNX")}
                if ort_rtf:
                    best = max(ort_rtf, key=ort_rtf.get)
                    goals.append(
                        f"{model.name}, hop {hop:g} s: best ONNX Runtime RTF {ort_rtf[best]:,.0f}x "
                        f"per CPU second ({best}) "
                        f"-> goal 200x {'met' if ort_rtf[best] >= 200 else 'not met'}"
                    )
            if why:
                table.add_row(model.name, "ONNX Runtime", f"[red]not exportable: {why[:120]}[/]")
            if files:
                goals.append(compute_ceiling(model, files["fp32"]))
            if files:  # top-1 agreement of int8 with fp32 over the windows of the corpus
                fp32 = Recognizer.load(files["fp32"], threads=1)
                want = _window_labels(fp32, paths)
                for kind in ("int8 static", "int8 dynamic"):
                    got = _window_labels(Recognizer.load(files[kind], threads=1), paths)
                    console.print(
                        f"{model.name}: ONNX Runtime {kind} agrees with fp32 on the top-1 class of "
                        f"{np.mean(got == want):.2%} of {len(want)} windows (hop 0.4)",
                        highlight=False,
                    )
        console.print(table)
        for line in goals:
            console.print(line, highlight=False)

        torch.set_num_threads(os.cpu_count() or 1)
        svc = next((m for m in models if onnx_files.get(m.name)), models[0])
        table = Table(
            title=f"service throughput ({svc.name}): POST /v1/predict on loopback, {args.requests} uploads, "
            f"{args.concurrency} in flight, {os.cpu_count()} cores"
        )
        table.add_column("backend")
        table.add_column("requests/s", justify="right")
        table.add_column("audio s/s", justify="right")
        table.add_column("vs peer", justify="right")
        mean_s = audio_s / len(paths)
        backends = {"PyTorch fp32 (peer)": lambda: Recognizer.load(svc)}
        for kind in ("fp32", "int8 static"):
            if kind in onnx_files.get(svc.name, {}):
                backends[f"ONNX Runtime {kind}"] = lambda f=onnx_files[svc.name][kind]: Recognizer.load(f)
        rps = {}
        for name, make in backends.items():
            rps[name] = measure_service(make(), paths, args.requests, args.concurrency)
            table.add_row(
                name, f"{rps[name]:.1f}", f"{rps[name] * mean_s:,.0f}", f"{rps[name] / rps['PyTorch fp32 (peer)']:.2f}"
            )
        console.print(table)


def _window_labels(recognizer, paths: list[Path]) -> np.ndarray:
    """Top-1 class of every window of every file."""
    return np.concatenate([[int(w.probabilities.argmax()) for w in r.timeline] for r in recognizer.predict_many(paths)])


if __name__ == "__main__":
    main()

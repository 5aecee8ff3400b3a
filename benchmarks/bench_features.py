"""Features and VTLP: ours against the authors' pipeline and nlpaug, side by side in one run.

    python -m benchmarks.bench_features [--root BUILTIN_DIR] [--device cpu|cuda] [--threads N]

1. log-Mel of every 2 s window (test hop 0.4 s) of the corpus. Peer: the authors' pipeline,
   ``librosa.feature.melspectrogram`` per window through ``np.apply_along_axis``, then ``log10``.
   Ours: :class:`areaser.dsp.features.LogMel`, batches of 256 windows (moved to ``--device``).
   Goal: at least 10x faster.
2. VTLP per second of audio. Peer: nlpaug 1.1.11 ``VtlpAug`` with the paper's settings (zone
   (0, 1), coverage 1, fhi 4800, factor 0.8..1.2), waveform in, waveform out. Ours: ``melwarp``
   on the fly (warped log-Mel out, so the feature computation is included in our time),
   and ``stft`` (waveform out, like the peer). Goal: melwarp at least 50x faster.
3. A training step of the paper's model (``areaser.models.cnn.build_model('paper')``, batch 32, Adam
   1e-4, cross-entropy) with log-Mel computed on the fly, without and with the melwarp factors.
   Goal: the warp adds under 5 %. The two variants alternate step by step; medians are compared
   (at most ``--steps`` pairs, fewer if they would take longer than ``--step-budget`` seconds).

Audio s / wall s is seconds of audio processed per wall-clock second. On CPU every contender
runs on ``--threads`` threads (default 1, so ratios compare one core with one core). Without
``--root`` the built-in corpus (60 utterances) is synthesised into a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

console = Console()
SR = 16_000
WIN_S = 2.0


def corpus_windows(root: Path, max_utts: int | None) -> np.ndarray:
    """All test-hop windows of the corpus, float32 ``[n, 32000]``."""
    from areaser.data.manifest import read_manifest
    from areaser.data.segments import SegmentConfig, segment_utterances
    from areaser.io.audio import load_audio

    df = read_manifest(root / "manifest.csv")
    if max_utts:
        df = df.iloc[:max_utts]
    windows, _ = segment_utterances(((r.utt_id, load_audio(r.path)) for r in df.itertuples()), SR, SegmentConfig())
    return np.ascontiguousarray(windows)


def timed(fn, device: torch.device, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls after one warm-up (synchronising CUDA)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def table(title: str, rows: list[tuple[str, float, float]], peer_rate: float) -> Table:
    """Rows of (name, wall s, audio s) with audio s / wall s and the speed-up over ``peer_rate``."""
    t = Table(title=title, title_justify="left")
    for col in ("contender", "wall s", "audio s / wall s", "speed-up vs peer"):
        t.add_column(col, justify="left" if col == "contender" else "right")
    for name, wall, audio in rows:
        rate = audio / wall
        t.add_row(name, f"{wall:.3f}", f"{rate:,.0f}", f"{rate / peer_rate:,.1f}x" if np.isfinite(peer_rate) else "-")
    return t


def bench_log_mel(windows: np.ndarray, device: torch.device, repeats: int) -> float:
    import librosa

    from areaser.dsp.features import LogMel

    audio_s = len(windows) * WIN_S

    def authors() -> np.ndarray:
        mel = np.apply_along_axis(
            lambda w: librosa.feature.melspectrogram(y=w, sr=SR, n_fft=800, hop_length=400), 1, windows
        )
        with np.errstate(divide="ignore"):
            return np.log10(mel)

    module = LogMel().to(device)

    @torch.no_grad()
    def ours() -> None:
        for i in range(0, len(windows), 256):
            module(torch.from_numpy(windows[i : i + 256]).to(device, non_blocking=True))

    peer = timed(authors, torch.device("cpu"), max(1, repeats - 1))
    mine = timed(ours, device, repeats)
    console.print(
        table(
            f"log-Mel, {len(windows)} windows of 2 s ({audio_s:,.0f} s of audio), device {device}",
            [
                ("authors: librosa per window (apply_along_axis)", peer, audio_s),
                (f"areaser LogMel, batch 256 ({device})", mine, audio_s),
            ],
            audio_s / peer,
        )
    )
    return peer / mine


def bench_vtlp(windows: np.ndarray, device: torch.device, repeats: int, n_peer: int) -> dict[str, float]:
    """Rates in audio s / wall s: the peer's and ours; returns the speed-ups for the summary."""
    import librosa

    from areaser.dsp.features import LogMel
    from areaser.dsp.vtlp import VTLPConfig, sample_factors, vtlp_stft

    rng = np.random.default_rng(0)
    few = windows[:n_peer]
    few_s = len(few) * WIN_S
    audio_s = len(windows) * WIN_S
    factors = rng.uniform(0.8, 1.2, len(windows))
    rows: list[tuple[str, float, float]] = []
    try:
        import nlpaug.augmenter.audio as naa
    except ImportError:
        naa = None
        console.print("[yellow]nlpaug not installed (pip install -e '.[bench]'): no peer rows[/]")
    peer = peer_feats = float("nan")
    if naa is not None:
        aug = naa.VtlpAug(SR, zone=(0.0, 1.0), coverage=1.0, fhi=4800, factor=(0.8, 1.2))

        def nlpaug_all(features: bool) -> None:
            for w in few:
                out = aug.augment(w)[0]
                if features:  # what the authors did next: log-Mel of the augmented audio
                    np.log10(librosa.feature.melspectrogram(y=out, sr=SR, n_fft=800, hop_length=400) + 1e-10)

        peer = timed(lambda: nlpaug_all(False), torch.device("cpu"), 1)
        peer_feats = timed(lambda: nlpaug_all(True), torch.device("cpu"), 1)
        rows += [
            ("nlpaug 1.1.11 VtlpAug (waveform -> waveform): the peer", peer, few_s),
            ("nlpaug VtlpAug + authors' librosa log-Mel", peer_feats, few_s),
        ]

    def stft_all() -> None:
        for w, a in zip(few, factors):
            vtlp_stft(w, SR, float(a))

    module = LogMel().to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    cfg = VTLPConfig()

    @torch.no_grad()
    def melwarp(warp: bool) -> None:
        for i in range(0, len(windows), 256):
            w = torch.from_numpy(windows[i : i + 256]).to(device, non_blocking=True)
            module(w, sample_factors(len(w), cfg, gen, device=device) if warp else None)

    stft_s = timed(stft_all, torch.device("cpu"), 1)
    warped = timed(lambda: melwarp(True), device, repeats)
    plain = timed(lambda: melwarp(False), device, repeats)
    extra = max(warped - plain, 1e-9)
    rows += [
        ("areaser vtlp_stft (waveform -> waveform)", stft_s, few_s),
        (f"areaser melwarp, log-Mel included, batch 256 ({device})", warped, audio_s),
        (f"areaser plain log-Mel, no warp ({device})", plain, audio_s),
        ("areaser melwarp's own cost (melwarp - plain)", extra, audio_s),
    ]
    peer_rate = few_s / peer
    console.print(
        table(f"VTLP, factors U(0.8, 1.2), fhi 4800; per-window contenders on {len(few)} windows, CPU", rows, peer_rate)
    )
    return {
        "melwarp_vs_nlpaug": (audio_s / warped) / peer_rate,
        "own_vs_nlpaug": (audio_s / extra) / peer_rate,
        "melwarp_vs_nlpaug_features": (audio_s / warped) / (few_s / peer_feats),
        "stft_vs_nlpaug": (few_s / stft_s) / peer_rate,
    }


def bench_training_step(windows: np.ndarray, device: torch.device, steps: int, budget_s: float) -> float | None:
    try:
        from areaser.models.cnn import build_model
    except ImportError:
        console.print("[yellow]areaser.models.cnn.build_model not available yet: training-step row skipped[/]")
        return None
    from areaser.dsp.features import LogMel
    from areaser.dsp.vtlp import VTLPConfig, sample_factors

    torch.manual_seed(0)
    model = build_model("paper").to(device).train()
    features = LogMel().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = torch.from_numpy(windows[:32]).to(device)
    n_classes = model(features(batch[:2])).shape[-1]
    labels = torch.randint(0, n_classes, (32,), device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def step(warp: bool) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            x = features(batch, sample_factors(32, VTLPConfig(), gen, device=device) if warp else None)
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    t0 = time.perf_counter()
    for _ in range(2):
        step(False), step(True)
    per_pair = (time.perf_counter() - t0) / 2
    steps = max(2, min(steps, int(budget_s / per_pair)))  # a CPU step of the paper model can take seconds
    plain, warped = [], []
    for _ in range(steps):  # alternate so drifting machine load hits both alike
        plain.append(step(False))
        warped.append(step(True))
    p, w = statistics.median(plain), statistics.median(warped)
    t = Table(
        title=f"training step, paper model, batch 32 of 2 s windows, median of {steps} ({device})", title_justify="left"
    )
    for col in ("log-Mel on the fly", "step ms", "audio s / wall s"):
        t.add_column(col, justify="left" if col.startswith("log") else "right")
    t.add_row("plain", f"{1e3 * p:.1f}", f"{32 * WIN_S / p:,.0f}")
    t.add_row("with melwarp VTLP", f"{1e3 * w:.1f}", f"{32 * WIN_S / w:,.0f}")
    console.print(t)
    console.print(f"melwarp adds {100 * (w / p - 1):+.2f} % to a training step")
    return 100 * (w / p - 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_features", description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, help="built-in corpus folder (default: synthesise 60 utterances)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for every contender (default 1)")
    ap.add_argument("--utterances", type=int, default=None, help="use only the first N utterances")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats, best kept (default 3)")
    ap.add_argument(
        "--peer-windows", type=int, default=32, help="windows given to the slow per-window peers (default 32)"
    )
    ap.add_argument("--steps", type=int, default=20, help="training steps per variant, at most (default 20)")
    ap.add_argument("--no-step", action="store_true", help="skip the training-step measurement")
    ap.add_argument(
        "--step-budget", type=float, default=120.0, help="seconds for the timed training steps (default 120)"
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=UserWarning)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from areaser.builtin.synth import SynthConfig, synthesize

            root = Path(tmp) / "builtin"
            console.print("synthesising the built-in corpus (60 utterances) ...")
            synthesize(root, SynthConfig(n_utterances=60, seed=0), progress=False)
        windows = corpus_windows(root, args.utterances)

    console.print(
        f"torch {torch.__version__}, {args.threads} CPU thread(s), device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    mel_ratio = bench_log_mel(windows, device, args.repeats)
    vtlp = bench_vtlp(windows, device, args.repeats, args.peer_windows)
    overhead = None if args.no_step else bench_training_step(windows, device, args.steps, args.step_budget)

    summary = Table(title="summary (goals from issue #3)", title_justify="left")
    for col in ("measure", "measured", "goal", "met"):
        summary.add_column(col, justify="left" if col == "measure" else "right")
    summary.add_row("log-Mel, ours vs authors' librosa pipeline", f"{mel_ratio:.1f}x", ">= 10x", _met(mel_ratio >= 10))
    if np.isfinite(vtlp["melwarp_vs_nlpaug"]):
        v = vtlp["melwarp_vs_nlpaug"]
        summary.add_row(
            "VTLP: melwarp (log-Mel included) vs nlpaug VtlpAug alone", f"{v:,.0f}x", ">= 50x", _met(v >= 50)
        )
        v = vtlp["own_vs_nlpaug"]
        summary.add_row("VTLP: melwarp's own cost vs nlpaug VtlpAug", f"{v:,.0f}x", ">= 50x", _met(v >= 50))
        v = vtlp["melwarp_vs_nlpaug_features"]
        summary.add_row("warped log-Mel: melwarp vs nlpaug + librosa log-Mel", f"{v:,.0f}x", "", "")
        summary.add_row("VTLP: vtlp_stft resynthesis vs nlpaug VtlpAug", f"{vtlp['stft_vs_nlpaug']:.1f}x", "", "")
    if overhead is not None:
        summary.add_row(
            "melwarp cost in a paper-model training step", f"{overhead:+.2f} %", "< 5 %", _met(overhead < 5)
        )
    console.print(summary)


def _met(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


if __name__ == "__main__":
    main()

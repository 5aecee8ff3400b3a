"""``areaser demo``: the whole job on the built-in corpus, in a few minutes on a laptop CPU.

1. write the built-in SYNTHETIC corpus (:mod:`areaser.builtin.synth`) unless it is there already;
2. train the ``paper`` model with on-the-fly VTLP (``melwarp``) on sessions 1-4 (one speaker
   of session 1 is the dev split that picks the epoch): protocol ``loso``, fold 5;
3. score the held-out session 5 and write the report (JSON, Markdown, PNG);
4. classify one held-out file with :class:`areaser.serve.recognizer.Recognizer` and print its
   emotion with the class probabilities, and where the report is.

The settings in :data:`DEMO` make it finish in a few minutes on 2 CPU cores. The model is
the ``paper`` preset unchanged (same layers, 2-D multiscale area attention up to 3 x 3, Q/K/V
projections) and training follows the paper (Adam 1e-4, batch 32, 2 s windows, hop 1 s, VTLP
0.8..1.2); the log-Mel is coarser: 32 mel bands and a 50 ms hop (41 frames per window) instead
of 128 and 25 ms. The attention map shrinks from 64 x 20 to 16 x 10 positions and area
attention's cost with it (``python -m benchmarks.bench_training`` measures the training
throughput: at the paper's size by default, at the demo's with ``--set features.n_mels=32
--set features.hop_length=800``; README, Performance). 8 epochs, the epoch chosen on dev.
Scores on the synthetic corpus say the code works end to end, nothing about human speech.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from areaser.builtin.synth import SynthConfig, synthesize
from areaser.data.manifest import read_manifest
from areaser.runs.config import config_with
from areaser.serve.recognizer import Recognizer
from areaser.train.lifecycle import train

__all__ = ["DEMO", "run_demo"]

# Everything not listed is the TrainConfig default (paper features, 2 s windows, Adam 1e-4, batch 32).
DEMO: dict = {
    "protocol": "loso",
    "fold": 4,  # Ses05 held out; dev = Ses01F
    "model": "paper",
    "features": {"n_mels": 32, "hop_length": 800},
    "vtlp": {"impl": "melwarp"},
    "epochs": 8,
    "patience": None,
    "name": "demo",
}


def run_demo(
    data_dir: str | os.PathLike = "data/builtin",
    out_dir: str | os.PathLike = "runs",
    n_utterances: int = 1000,
    epochs: int | None = None,
    progress: bool = True,
    console=None,
) -> dict:
    """Run the demo; return the run's report dict (plus ``demo`` facts: times, the classified file)."""
    con = console or Console()
    say = lambda s: con.print(s, highlight=False, soft_wrap=True)  # noqa: E731
    t0 = time.perf_counter()
    say(f"[bold]1/4[/] built-in corpus ({n_utterances} synthetic utterances) in {data_dir}")
    manifest = synthesize(data_dir, SynthConfig(seed=0, n_utterances=n_utterances), progress=progress)
    t_synth = time.perf_counter() - t0

    say("[bold]2/4[/] train the paper model with VTLP on sessions 1-4 (dev: one session-1 speaker)")
    overrides = {**DEMO, **({"epochs": epochs} if epochs else {})}
    cfg = config_with(
        None, manifest=str(manifest), out_dir=str(out_dir), progress=progress, tensorboard=True, **overrides
    )
    report = train(cfg, resume=False, log=say)
    t_train = time.perf_counter() - t0 - t_synth

    run_dir = Path(out_dir) / cfg.name
    test = report["test"]
    say(
        f"[bold]3/4[/] held-out session {report['test_group']}: {test['n']} utterances, "
        f"WA {100 * test['wa']:.2f} %, UA {100 * test['ua']:.2f} % (chance 25 %; synthetic speech: this checks the "
        "pipeline, not emotion recognition, for which see docs/real-speech.md)"
    )

    split = json.loads((run_dir / "split.json").read_text())
    df = read_manifest(manifest).set_index("utt_id")
    utt = split["test"][0]
    path, label = df.loc[utt, "path"], df.loc[utt, "label"]
    rec = Recognizer.load(run_dir)
    pred = rec.predict(path)
    say(f"[bold]4/4[/] classify a held-out file: {path}")
    say(f"predicted emotion: [bold]{pred.label}[/] (reference label: {label})")
    table = Table()
    table.add_column("emotion")
    table.add_column("probability", justify="right")
    for c, p in sorted(zip(pred.classes, pred.probabilities), key=lambda cp: -cp[1]):
        table.add_row(c, f"{100 * float(p):.1f} %")
    con.print(table)
    total = time.perf_counter() - t0
    say(
        f"report: {run_dir / 'report.md'}  (corpus {t_synth:.0f} s, training + evaluation {t_train:.0f} s, "
        f"total {total:.0f} s)"
    )
    report["demo"] = {
        "file": str(path),
        "reference": label,
        "predicted": pred.label,
        "probabilities": dict(zip(pred.classes, map(float, pred.probabilities))),
        "corpus_s": round(t_synth, 1),
        "train_s": round(t_train, 1),
        "total_s": round(total, 1),
    }
    return report

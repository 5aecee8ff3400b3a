"""Temperature scaling on real speech: test ECE before / after, per fold of trained runs, training nothing.

    python -m benchmarks.calibration_real [runs/real-speech/emodb] [--model cnn] [--bins 15] [--write]

For every finished fold run of ``--model`` under the folder (``<folder>/<model>-seed*/<fold>/``, or the
folder itself when it is a cv or fold directory): load its ``best.safetensors``, recompute the window
logits of its dev and test utterances (those of its ``split.json``, read through the run's manifest by
:func:`areaser.train.testsets._run_test_set`, the helper ``areaser evaluate`` uses; the windows of the run's own
config), fit ``T`` on dev (:func:`areaser.runs.calibration.fit_record`) and measure the test part before and
after (:func:`areaser.runs.calibration.test_summary`). Prints one row per fold and the mean.

``flips`` counts the test utterances whose label would change had the window logits been divided by ``T``
*before* the ``prob`` mean instead (the calibration used leaves every label as it is). ``--write`` stores
each fold's ``calibration.json`` (then ``predict`` / ``serve`` / ``export`` of those runs are calibrated);
without it nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from areaser.data.windows import load_windows
from areaser.runs.calibration import fit_record, not_calibrated, test_summary, write_calibration
from areaser.runs.checkpoint import load_run, run_paths
from areaser.runs.config import TrainConfig
from areaser.runs.metrics import utterance_probs
from areaser.train.scoring import eval_draw_seeds, predict_windows
from areaser.train.testsets import _run_test_set

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "runs" / "real-speech" / "emodb"


def fold_dirs(root: Path, model: str) -> list[Path]:
    """Finished neural fold runs of ``model`` under ``root`` (best weights, split and report present)."""

    def finished(d: Path) -> bool:
        p = run_paths(d)
        return all(p[k].is_file() for k in ("best", "split", "config", "report_json"))

    if finished(root):
        return [root]
    cvs = [root] if (root / "cv.json").is_file() else sorted(root.glob(f"{model}-seed*"))
    out = []
    for cv in cvs:
        for d in sorted(cv.iterdir(), key=lambda p: (len(p.name), p.name)):
            if d.is_dir() and finished(d) and TrainConfig.load(d / "config.json").model == model:
                out.append(d)
    return out


def calibrate_fold(fold: Path, n_bins: int, write: bool) -> dict:
    c = TrainConfig.load(fold / "config.json").resolved()
    run = load_run(fold)
    prep = _run_test_set(fold, c, run.classes)
    sets = {}
    for part in ("dev", "test"):
        ws = load_windows(prep.parts[part], c.segments, train=False, sr=c.features.sr)
        ws.precompute(run.features)
        with torch.random.fork_rng():  # a model random at evaluation: the seeded first draw, as training does
            torch.manual_seed(eval_draw_seeds(c.seed)[0])
            sets[part] = (ws, predict_windows(run.features, run.model, ws))
    weights = {"epoch": int(run.header.get("epoch", 0)), "checksum": run.header.get("checksum")}
    (dev, dev_logits), (test, test_logits) = sets["dev"], sets["test"]
    rec = (
        not_calibrated(decision=c.decision, weights=weights)
        if c.train_on_dev
        else fit_record(dev_logits, dev, c.decision, weights)
    )
    summary = test_summary(rec, test_logits, test, c.decision, n_bins)
    base = utterance_probs(test_logits, test.utt_index, test.n_utts, c.decision).argmax(1)
    window_scaled = utterance_probs(test_logits / rec["temperature"], test.utt_index, test.n_utts, c.decision)
    y = test.utterances["y"].to_numpy()
    if write:
        write_calibration(fold, rec)
    return {
        "fold": f"{fold.parent.name}/{fold.name}",
        "n_dev": dev.n_utts,
        "n_test": test.n_utts,
        "T": rec["temperature"],
        "ece_before": summary["ece_before"],
        "ece_after": summary["ece_after"],
        "nll_before": summary["nll_before"],
        "nll_after": summary["nll_after"],
        "acc": float((base == y).mean()),
        "flips": int((window_scaled.argmax(1) != base).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", type=Path, default=DEFAULT, help="corpus folder, cv folder or fold run")
    ap.add_argument("--model", default="cnn", help="model of the fold runs to calibrate (default cnn)")
    ap.add_argument("--bins", type=int, default=15, help="ECE bins (equal width; default 15)")
    ap.add_argument("--write", action="store_true", help="store each fold's calibration.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    folds = fold_dirs(args.root, args.model)
    if not folds:
        print(f"no finished {args.model} fold runs under {args.root}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rows = [calibrate_fold(f, args.bins, args.write) for f in folds]
    head = f"{'fold':<32} {'dev':>4} {'test':>4} {'T':>6} {'ECE before %':>12} {'ECE after %':>11} "
    head += f"{'NLL before':>10} {'NLL after':>9} {'WA %':>6} {'flips':>5}"
    print(head)
    for r in rows:
        print(
            f"{r['fold']:<32} {r['n_dev']:>4} {r['n_test']:>4} {r['T']:>6.3f} {100 * r['ece_before']:>12.2f} "
            f"{100 * r['ece_after']:>11.2f} {r['nll_before']:>10.4f} {r['nll_after']:>9.4f} {100 * r['acc']:>6.2f} "
            f"{r['flips']:>5}"
        )

    def ms(k: str, scale: float = 1.0) -> str:
        v = np.array([r[k] for r in rows]) * scale
        return f"{v.mean():.2f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}"

    print(
        f"mean +- std over {len(rows)} folds: T {ms('T')}, test ECE {ms('ece_before', 100)} % -> "
        f"{ms('ece_after', 100)} %, test NLL {ms('nll_before')} -> {ms('nll_after')}; "
        f"{sum(r['flips'] for r in rows)} label flips had T scaled window logits before the mean "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Scoring windows with a trained model: logits per window, utterance scores, repeated draws."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from areaser.runs.calibration import fit_record, not_calibrated
from areaser.runs.config import TrainConfig
from areaser.runs.metrics import classification_metrics, utterance_probs


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


# ----------------------------------------------------------------------------- evaluation helpers


@torch.no_grad()
def predict_windows(features: torch.nn.Module, model: torch.nn.Module, ws, batch_size: int = 128) -> torch.Tensor:
    """Logits ``[n_windows, C]`` of a :class:`areaser.data.windows.WindowSet` (eval mode, no warp)."""
    features.eval()
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(ws), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(ws)))
        x = ws.feats[idx].to(device) if ws.feats is not None else features.raw(ws.waves(idx).to(device))
        out.append(model(features.normalize(x)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def score_windows(
    ws, logits: torch.Tensor, classes: Sequence[str], decision: str = "prob", speakers: bool = False
) -> dict:
    """Utterance metrics of window ``logits [n_windows, C]`` (:func:`~areaser.runs.metrics.classification_metrics`).

    Each utterance's decision is :func:`areaser.runs.metrics.utterance_probs` with ``decision``, the
    rule ``predict`` and the service apply to the same windows (:class:`areaser.serve.recognizer.Recognizer`).
    """
    probs = utterance_probs(logits, ws.utt_index, ws.n_utts, decision)
    y = ws.utterances["y"].to_numpy()
    spk = ws.utterances["speaker"].tolist() if speakers else None
    return classification_metrics(y, probs.argmax(1), classes, spk)


TEST_DRAWS = 10  # scorings of the test set when the model is random at evaluation


def eval_draw_seeds(seed: int, n: int = TEST_DRAWS) -> list[int]:
    """The torch seeds of the ``n`` test scorings of a run with ``seed`` (fixed: a report can be re-scored)."""
    return [_seed(seed, 0x7E57, i) for i in range(n)]


def score_draws(
    features: torch.nn.Module, model: torch.nn.Module, ws, classes: Sequence[str], decision: str, seeds: Sequence[int]
) -> list[dict]:
    """:func:`score_windows` (with speakers) once per seed, the global torch RNG seeded with it before each.

    For a model that is random at evaluation (attention dropout or area sampling kept at eval:
    ``model.stochastic_at_eval``) each scoring is one draw; the caller's RNG state is left as it was.
    """
    out = []
    with torch.random.fork_rng():
        for s in seeds:
            torch.manual_seed(int(s))
            out.append(score_windows(ws, predict_windows(features, model, ws), classes, decision, speakers=True))
    return out


def _seeded_logits(module, ws, seed: int) -> torch.Tensor:
    """:func:`predict_windows` with the global torch RNG seeded with ``seed`` (a model random at eval: one draw)."""
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        return predict_windows(module.features, module.model, ws)


def calibration_record(c: TrainConfig, module, dev_ws, weights_header: Mapping) -> dict:
    """The run's temperature (:mod:`areaser.runs.calibration`), fitted on ``dev_ws`` after training; never retrains.

    A run whose dev part is trained on (``train_on_dev``, the faithful preset) has no held-out part:
    ``T = 1``, recorded as not calibrated. A model random at evaluation is fitted on one seeded draw.
    """
    weights = {"epoch": int(weights_header.get("epoch", 0)), "checksum": weights_header.get("checksum")}
    if c.train_on_dev:
        return not_calibrated(decision=c.decision, weights=weights)
    if dev_ws.feats is None:
        dev_ws.precompute(module.features)
    return fit_record(_seeded_logits(module, dev_ws, eval_draw_seeds(c.seed)[0]), dev_ws, c.decision, weights)


def summarise_draws(scores: Sequence[Mapping], seeds: Sequence[int]) -> dict:
    """Per-draw WA / UA / macro-F1 with their mean and sample std (n - 1): a report's ``test_draws``."""
    out: dict[str, Any] = {"n": len(scores), "seeds": [int(s) for s in seeds]}
    for k in ("wa", "ua", "macro_f1"):
        v = np.array([float(m[k]) for m in scores])
        out[k] = v.tolist()
        out[f"{k}_mean"] = float(v.mean())
        out[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


def _raw_chunks(features, ws, batch: int = 256):
    for i in range(0, len(ws), batch):
        yield features.raw(ws.waves(torch.arange(i, min(i + batch, len(ws)))))

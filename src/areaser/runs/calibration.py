"""Temperature scaling: utterance probabilities whose confidence means something.

What is scaled. A run decides an utterance with :func:`areaser.runs.metrics.utterance_probs` (the one
decision rule) from its windows' logits ``z``, giving probabilities ``p`` (``prob``: the mean of
the windows' ``softmax(z)``; ``logits``: ``softmax`` of the windows' mean ``z``). Temperature
scaling divides the log of that decision by one scalar ``T > 0`` and renormalises::

    p_T = softmax(log(utterance_probs(z, decision)) / T)            (:func:`calibrated_probs`)

* ``decision="logits"``: ``log p`` is the mean window logit up to a constant, so this *is*
  dividing the window logits by ``T`` before the softmax: ``softmax(mean(z) / T)``.
* ``decision="prob"`` (the paper's): the mean of the windows' softmax outputs is taken first, at
  ``T = 1``, exactly as evaluation takes it, and its log is divided by ``T``. Dividing each
  window's logits by ``T`` *before* the mean (``mean softmax(z / T)``) was not chosen: it can change
  the label where windows disagree (windows ``[3, 0], [0, 1], [0, 1]`` decide class 1 at ``T = 1``
  and class 0 at ``T = 5``).

So the label never changes: ``x -> x / T`` keeps the order of a row's entries, and the argmax of
``p_T`` is the argmax of ``p``, the decision every reported WA / UA comes from. Only how sure the
probabilities say the model is changes.

``T`` is fitted after training on the run's **dev** part only (:func:`fit_temperature`: the
minimum dev NLL of ``p_T``, a bounded 1-D search over ``log T``); the **test** part is where the
report measures its effect (:func:`expected_calibration_error`, :func:`reliability_curve`). A
run with no held-out dev part (``train_on_dev``, the faithful preset) is not calibrated: ``T = 1``.

Where ``T`` is kept: ``RUN/calibration.json`` (:func:`write_calibration`), beside the weights
rather than inside ``best.safetensors``: the weights file is checksummed and written during
training, while ``T`` is a fact about those weights learnt afterwards; the record names the
weights it was fitted for (their checksum) and is ignored (``T = 1``) when they differ. A run
directory without the file (older runs) loads with ``T = 1``. ``areaser export`` copies ``T``
into the ONNX metadata (``calibration``), so an exported file alone scores calibrated.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from areaser.io.files import atomic_write_json, read_json
from areaser.runs.metrics import utterance_probs

__all__ = [
    "CALIBRATION_FILE",
    "BOUNDS",
    "NOT_HELD_OUT",
    "calibrate",
    "calibrated_probs",
    "nll",
    "fit_temperature",
    "expected_calibration_error",
    "reliability_curve",
    "fit_record",
    "not_calibrated",
    "test_summary",
    "write_calibration",
    "read_calibration",
    "run_temperature",
    "check_temperature",
]

CALIBRATION_FILE = "calibration.json"
FORMAT = "areaser-calibration/1"
BOUNDS = (0.05, 20.0)  # the search range of T (log-uniform); a T at a bound is reported as such
N_BINS = 15
NOT_HELD_OUT = "not calibrated: no held-out dev part"
SCALED = (
    "utterance probabilities p of the run's decision (metrics.utterance_probs) -> softmax(log(p) / T); "
    "for decision logits this is softmax(mean window logit / T); the label (argmax) never changes"
)


def check_temperature(t: Any) -> float:
    """``t`` as a float, or ValueError unless it is a finite number > 0."""
    try:
        v = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number > 0, got {t!r}") from None
    if isinstance(t, bool) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {t!r}")
    return v


def calibrate(probs, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)`` row by row (float64; probabilities floored at 1e-300): same argmax."""
    t = check_temperature(temperature)
    logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), 1e-300)) / t
    logp -= logp.max(-1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(-1, keepdims=True)


def calibrated_probs(
    window_logits, temperature: float = 1.0, utt_index=None, n_utts: int | None = None, decision: str = "prob"
) -> np.ndarray:
    """Utterance probabilities ``[n_utts, C]`` at temperature ``T``: :func:`calibrate` of ``utterance_probs``.

    ``utt_index=None``: every row of ``window_logits`` is its own utterance (then, for either
    decision, this is ``softmax(z / T)`` of each row).
    """
    return calibrate(_decide(window_logits, utt_index, n_utts, decision), temperature)


def _decide(window_logits, utt_index, n_utts, decision) -> np.ndarray:
    z = torch.as_tensor(window_logits, dtype=torch.float64)
    if utt_index is None:  # every row its own utterance
        utt_index, n_utts = torch.arange(len(z)), len(z)
    return utterance_probs(z, utt_index, n_utts, decision)


def nll(probs: np.ndarray, y) -> float:
    """Mean negative log-likelihood of labels ``y`` under ``probs [n, C]`` (probabilities floored at 1e-12)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))


def fit_temperature(
    window_logits,
    y,
    utt_index=None,
    n_utts: int | None = None,
    decision: str = "prob",
    bounds: tuple[float, float] = BOUNDS,
) -> float:
    """The ``T`` minimising the NLL of the calibrated utterance decision on held-out data (dev), in ``bounds``.

    ``window_logits [n_windows, C]`` (logits, or log-probabilities: the same decision),
    ``y [n_utts]`` the utterances' classes, ``utt_index`` / ``n_utts`` as in
    :func:`areaser.runs.metrics.utterance_probs` (``None``: one utterance per row). The objective is
    ``nll(calibrated_probs(z, T, ..., decision), y)``, minimised by ``scipy.optimize.minimize_scalar``
    (method ``bounded``) over ``log T`` in ``log(bounds)``.
    """
    p = _decide(window_logits, utt_index, n_utts, decision)  # the T = 1 decision, computed once
    y = np.asarray(y, dtype=int)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} utterances")
    if not len(y):
        raise ValueError("no utterances to fit a temperature on")
    lo, hi = (math.log(check_temperature(b)) for b in bounds)
    res = minimize_scalar(
        lambda log_t: nll(calibrate(p, math.exp(log_t)), y), bounds=(lo, hi), method="bounded", options={"xatol": 1e-5}
    )
    return float(math.exp(res.x))


def reliability_curve(probs, y, n_bins: int = N_BINS) -> dict:
    """Per confidence bin: how many utterances, their mean confidence and their accuracy.

    Confidence is the maximum probability of each row of ``probs [n, C]``, correct when its argmax
    equals ``y``. Bins are ``n_bins`` equal-width intervals ``(lo, hi]`` of ``[0, 1]`` (edges
    ``np.linspace(0, 1, n_bins + 1)``; a confidence of 0 would fall in the first). Returns
    ``{"edges", "count", "confidence", "accuracy"}`` as lists; an empty bin's confidence and
    accuracy are ``None``.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"expected probs [n, C] and y [n], got {p.shape} and {y.shape}")
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    csum = np.bincount(b, weights=conf, minlength=n_bins)
    asum = np.bincount(b, weights=correct, minlength=n_bins)
    mean = lambda s: [float(s[i] / count[i]) if count[i] else None for i in range(n_bins)]  # noqa: E731
    return {"edges": edges.tolist(), "count": count.tolist(), "confidence": mean(csum), "accuracy": mean(asum)}


def expected_calibration_error(probs, y, n_bins: int = N_BINS) -> float:
    """Expected calibration error (Guo et al. 2017), the standard definition.

    With confidence ``c_i = max_k probs[i, k]`` and ``ok_i = [argmax_k probs[i, k] == y_i]``, the
    rows are put into ``n_bins`` equal-width bins ``B_m = ((m - 1) / M, m / M]`` by ``c_i``, and

        ECE = sum_m |B_m| / n * | mean_{i in B_m} ok_i - mean_{i in B_m} c_i |

    (empty bins add nothing). 0 is perfectly calibrated; the value is a fraction in [0, 1].
    """
    curve = reliability_curve(probs, y, n_bins)
    n = sum(curve["count"])
    if not n:
        raise ValueError("no rows to measure calibration on")
    return float(
        sum(k / n * abs(a - c) for k, a, c in zip(curve["count"], curve["accuracy"], curve["confidence"]) if k)
    )


# ----------------------------------------------------------------------------- a run's record


def _labels(ws) -> np.ndarray:
    return ws.utterances["y"].to_numpy()


def fit_record(dev_logits, dev_ws, decision: str, weights: Mapping | None = None) -> dict:
    """Fit ``T`` on a run's dev windows: the record :func:`write_calibration` stores.

    ``dev_logits [n_windows, C]`` of :class:`areaser.data.windows.WindowSet` ``dev_ws``; ``weights``:
    ``{"epoch", "checksum"}`` of the weights the logits come from (``best.safetensors``' header).
    """
    y = _labels(dev_ws)
    t = fit_temperature(dev_logits, y, dev_ws.utt_index, dev_ws.n_utts, decision)
    before = calibrated_probs(dev_logits, 1.0, dev_ws.utt_index, dev_ws.n_utts, decision)
    after = calibrated_probs(dev_logits, t, dev_ws.utt_index, dev_ws.n_utts, decision)
    at_bound = min(abs(math.log(t / b)) for b in BOUNDS) < 1e-3
    return {
        "format": FORMAT,
        "calibrated": True,
        "status": f"fitted on the dev part ({dev_ws.n_utts} utterances)"
        + ("; T is at a bound of its search range" if at_bound else ""),
        "temperature": t,
        "decision": decision,
        "scaled": SCALED,
        "bounds": list(BOUNDS),
        "n_dev": int(dev_ws.n_utts),
        "dev": {
            "nll_before": nll(before, y),
            "nll_after": nll(after, y),
            "ece_before": expected_calibration_error(before, y),
            "ece_after": expected_calibration_error(after, y),
        },
        "weights": dict(weights or {}),
    }


def not_calibrated(reason: str = NOT_HELD_OUT, decision: str = "prob", weights: Mapping | None = None) -> dict:
    """The record of a run that has no held-out dev part (``train_on_dev``, the faithful preset): ``T = 1``."""
    return {
        "format": FORMAT,
        "calibrated": False,
        "status": reason,
        "temperature": 1.0,
        "decision": decision,
        "scaled": SCALED,
        "n_dev": 0,
        "weights": dict(weights or {}),
    }


def test_summary(record: Mapping, test_logits, test_ws, decision: str, n_bins: int = N_BINS) -> dict:
    """A report's ``calibration``: the record's ``T`` and its effect on the **test** part.

    ``ece_before`` / ``nll_before``: test utterances at ``T = 1``; ``ece_after`` / ``nll_after``: at the
    record's ``T``; ``reliability``: both curves (:func:`reliability_curve`), which the report draws.
    """
    t = check_temperature(record.get("temperature", 1.0))
    y = _labels(test_ws)
    before = calibrated_probs(test_logits, 1.0, test_ws.utt_index, test_ws.n_utts, decision)
    after = calibrated_probs(test_logits, t, test_ws.utt_index, test_ws.n_utts, decision)
    out = {
        "temperature": t,
        "calibrated": bool(record.get("calibrated", False)),
        "status": str(record.get("status", "")),
        "scaled": SCALED,
        "n_dev": int(record.get("n_dev", 0)),
        "n_test": int(test_ws.n_utts),
        "n_bins": int(n_bins),
        "ece_before": expected_calibration_error(before, y, n_bins),
        "ece_after": expected_calibration_error(after, y, n_bins),
        "nll_before": nll(before, y),
        "nll_after": nll(after, y),
        "reliability": {"before": reliability_curve(before, y, n_bins), "after": reliability_curve(after, y, n_bins)},
    }
    if record.get("dev"):
        out["dev"] = dict(record["dev"])
    return out


# ----------------------------------------------------------------------------- storage


def _run_dir(model: str | os.PathLike) -> Path:
    """The run directory of a run directory or of a weights file in its ``checkpoints/``."""
    p = Path(model)
    if p.suffix == ".safetensors":
        return p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return p


def write_calibration(run_dir: str | os.PathLike, record: Mapping) -> Path:
    """``RUN/calibration.json`` (atomic)."""
    return atomic_write_json(Path(run_dir) / CALIBRATION_FILE, dict(record))


def read_calibration(model: str | os.PathLike) -> dict | None:
    """The calibration record of a run directory (or of its weights file), ``None`` if it has none."""
    path = _run_dir(model) / CALIBRATION_FILE
    if not path.is_file():
        return None
    rec = read_json(path)
    if not isinstance(rec, dict):
        raise ValueError(f"{path}: corrupted: not a JSON object")
    try:
        check_temperature(rec.get("temperature"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return rec


def run_temperature(model: str | os.PathLike, header: Mapping | None = None) -> float:
    """The ``T`` a loaded run scores with: its ``calibration.json``'s, else 1.

    ``header``: the loaded weights' header; when both it and the record name a checksum and they
    differ, the record belongs to other weights (the run was trained again) and ``T = 1``.
    """
    rec = read_calibration(model)
    if rec is None:
        return 1.0
    want = (rec.get("weights") or {}).get("checksum")
    have = (header or {}).get("checksum")
    if want and have and want != have:
        return 1.0
    return check_temperature(rec["temperature"])

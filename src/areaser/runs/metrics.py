"""Scores: from window outputs to utterance decisions, then WA, UA, F1, confusion.

The model sees 2 s windows; an utterance is classified by averaging its windows'
outputs (:func:`utterance_probs`): the mean of softmax probabilities (the paper) or of
logits, then argmax. :func:`utterance_probs` is the one implementation of that rule:
training and evaluation (:func:`areaser.train.scoring.score_windows`) and ``predict`` / the
HTTP service (:class:`areaser.serve.recognizer.Recognizer`, with any backend, PyTorch or ONNX)
all decide utterances with it.

* WA (weighted accuracy) = correct utterances / utterances.
* UA (unweighted accuracy) = mean of per-class recall over the classes present in the
  reference (sklearn's balanced accuracy).
* macro-F1, per-class precision / recall / F1, per-speaker accuracy, confusion matrix
  (rows = reference class, columns = predicted class).

Everything here is a pure function on arrays; :func:`summarise` gives mean +- std over
folds or seeds (sample std, n - 1; 0 for a single value).
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

__all__ = [
    "DECISIONS",
    "utterance_probs",
    "classification_metrics",
    "summarise",
    "summarise_runs",
    "best_epoch",
    "is_better",
    "lower_is_better",
    "paper_and_honest",
]

DECISIONS = ("prob", "logits")


def utterance_probs(
    window_logits: torch.Tensor | np.ndarray,
    utt_index: torch.Tensor | np.ndarray | None = None,
    n_utts: int | None = None,
    decision: str = "prob",
) -> np.ndarray:
    """The utterance decision: average window outputs per utterance (the one implementation).

    Parameters
    ----------
    window_logits : ``[n_windows, n_classes]`` window scores: model logits, or
        log-probabilities (``log`` of the softmax outputs a backend returns). Both give the
        same result: a window's logits and log-probabilities differ by one constant, which
        the softmax cancels.
    utt_index : ``[n_windows]`` utterance index (0 .. n_utts-1) of each window, in any
        order; ``None``: all windows belong to one utterance.
    n_utts : number of utterances (default ``utt_index.max() + 1``); every one must own at
        least one window.
    decision : ``"prob"``: mean of the windows' softmax probabilities (the paper);
        ``"logits"``: softmax of the mean logit (equivalently of the mean log-probability).

    Returns
    -------
    ``[n_utts, n_classes]`` float64 probabilities (rows sum to 1); ``[n_classes]`` when
    ``utt_index`` is ``None``. The decision is the argmax of each row.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    z = torch.as_tensor(window_logits, dtype=torch.float64)
    single = utt_index is None
    if single:
        if n_utts not in (None, 1):
            raise ValueError(f"without utt_index all windows are one utterance, got n_utts={n_utts}")
        idx, n_utts = torch.zeros(z.shape[:1], dtype=torch.long), 1
    else:
        idx = torch.as_tensor(utt_index, dtype=torch.long)
        if n_utts is None:
            n_utts = int(idx.max()) + 1 if idx.numel() else 0
    if z.ndim != 2 or idx.shape != z.shape[:1]:
        raise ValueError(f"expected logits [n, C] and index [n], got {tuple(z.shape)} and {tuple(idx.shape)}")
    counts = torch.bincount(idx, minlength=n_utts).to(torch.float64)
    if len(counts) != n_utts or (counts == 0).any():
        raise ValueError("every utterance needs at least one window and indices must be < n_utts")
    x = z.softmax(-1) if decision == "prob" else z
    mean = torch.zeros(n_utts, z.shape[1], dtype=torch.float64).index_add_(0, idx, x) / counts[:, None]
    probs = mean if decision == "prob" else mean.softmax(-1)
    return probs[0].numpy() if single else probs.numpy()


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    speakers: Sequence[str] | None = None,
) -> dict:
    """All utterance-level scores as a JSON-ready dict (fractions in [0, 1]).

    Keys: ``n``, ``wa``, ``ua``, ``macro_f1``, ``per_class`` {class: precision, recall,
    f1, support}, ``confusion`` (list of rows), ``classes``, and with ``speakers``
    ``per_speaker`` {speaker: accuracy, n}. UA and macro-F1 average over the classes
    present in ``y_true`` (a class never seen in the reference has no recall).
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}")
    if not len(y_true):
        raise ValueError("no utterances to score")
    labels = list(range(len(classes)))
    present = sorted(set(y_true.tolist()))
    with warnings.catch_warnings():  # zero-division for never-predicted classes is expected
        warnings.simplefilter("ignore")
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict = {
        "n": int(len(y_true)),
        "wa": float((y_true == y_pred).mean()),
        "ua": float(np.mean([r[c] for c in present])),
        "macro_f1": float(np.mean([f[c] for c in present])),
        "classes": list(classes),
        "per_class": {
            cls: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, cls in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if speakers is not None:
        spk = np.asarray(speakers, dtype=str)
        out["per_speaker"] = {
            str(k): {"accuracy": float((y_true[spk == k] == y_pred[spk == k]).mean()), "n": int((spk == k).sum())}
            for k in sorted(set(spk.tolist()))
        }
    return out


def summarise(values: Iterable[float]) -> dict:
    """``{"mean", "std", "n", "values"}``; std is the sample std (n - 1), 0 for one value."""
    v = np.asarray(list(values), dtype=float)
    if not len(v):
        raise ValueError("nothing to summarise")
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "n": int(len(v)),
        "values": v.tolist(),
    }


def summarise_runs(results: Sequence[Mapping[str, float]], keys: Sequence[str]) -> dict:
    """Mean +- std of each of ``keys`` over a list of per-fold dicts (missing keys skipped)."""
    return {k: summarise(r[k] for r in results) for k in keys if all(k in r for r in results)}


def lower_is_better(key: str) -> bool:
    """Whether ``key`` is minimised: a loss (``dev_loss``); a score (``dev_ua``, ``test_wa``...) is maximised."""
    return key.endswith("loss")


def is_better(key: str, new: float, old: float | None) -> bool:
    """Whether value ``new`` of ``key`` beats ``old`` (``None``: nothing yet), the epoch-selection rule.

    Lower wins for a loss, higher for a score (:func:`lower_is_better`). Strict: a tie keeps
    ``old``, so the earliest epoch wins ties. A NaN never wins and is beaten by any number.
    """
    if old is None:
        return True
    if old != old:  # NaN
        return new == new
    return bool(new < old) if lower_is_better(key) else bool(new > old)


def best_epoch(history: Sequence[Mapping[str, float]], key: str) -> int:
    """Index of the best row on ``key``: the lowest loss, or the highest score (:func:`is_better`).

    The earliest epoch wins ties. The one rule that picks a run's epoch: training keeps ``best.safetensors`` by it
    (:class:`areaser.train.callbacks.RunCheckpoint`) and :func:`paper_and_honest` reads the honest epoch with it.
    """
    if not history:
        raise ValueError("empty history")
    best = 0
    for i, row in enumerate(history):
        if i and is_better(key, row[key], history[best][key]):
            best = i
    return best


def paper_and_honest(history: Sequence[Mapping[str, float]], monitor: str = "dev_ua") -> dict:
    """The two ways of reading a run whose test set was scored after every epoch.

    ``history`` rows hold ``epoch``, ``test_wa``, ``test_ua`` and ``monitor``.

    * ``paper``: what the authors' code reports: maxWA and maxUA as *separate* maxima over
      epochs of test scores (they may come from different epochs), and the checkpoint it
      keeps, picked on test WA + UA. Optimistic: the test set chooses the model.
    * ``honest``: the epoch picked on ``monitor`` (a dev score or loss) by :func:`best_epoch`, the
      rule training keeps ``best.safetensors`` by, and its test WA / UA.
    """
    wa = [row["test_wa"] for row in history]
    ua = [row["test_ua"] for row in history]
    kept = int(np.argmax(np.add(wa, ua)))
    h = best_epoch(history, monitor)
    return {
        "paper": {
            "max_wa": float(max(wa)),
            "max_wa_epoch": int(history[int(np.argmax(wa))]["epoch"]),
            "max_ua": float(max(ua)),
            "max_ua_epoch": int(history[int(np.argmax(ua))]["epoch"]),
            "kept_epoch": int(history[kept]["epoch"]),
            "kept_wa": float(wa[kept]),
            "kept_ua": float(ua[kept]),
        },
        "honest": {
            "monitor": monitor,
            "epoch": int(history[h]["epoch"]),
            "wa": float(wa[h]),
            "ua": float(ua[h]),
        },
    }

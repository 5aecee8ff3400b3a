"""Metrics: utterance decisions from windows, WA / UA / F1 against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from areaser.runs.metrics import (
    best_epoch,
    classification_metrics,
    paper_and_honest,
    summarise,
    summarise_runs,
    utterance_probs,
)

CLASSES = ("neutral", "happy", "sad", "angry")


def test_mean_of_probabilities_vs_mean_of_logits_can_disagree():
    # utterance 0: one confident window for class 0, two mild windows for class 1
    logits = torch.tensor([[10.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 3.0]])
    idx = torch.tensor([0, 0, 0, 1])
    p = utterance_probs(logits, idx, 2, "prob")
    q = utterance_probs(logits, idx, 2, "logits")
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(q.sum(1), 1.0)
    sm = torch.softmax(logits.double(), -1).numpy()
    np.testing.assert_allclose(p[0], sm[:3].mean(0))
    np.testing.assert_allclose(q[0], torch.softmax(logits[:3].double().mean(0), -1).numpy())
    assert p[0].argmax() == 1 and q[0].argmax() == 0  # the decision rule matters
    np.testing.assert_allclose(p[1], sm[3])


def test_utterance_probs_checks_its_input():
    with pytest.raises(ValueError, match="at least one window"):
        utterance_probs(torch.zeros(2, 3), torch.tensor([0, 0]), 2)
    with pytest.raises(ValueError, match="decision"):
        utterance_probs(torch.zeros(2, 3), torch.tensor([0, 1]), 2, "vote")


def test_wa_ua_f1_by_hand():
    y = np.array([0, 0, 0, 0, 1, 2, 2, 3])
    p = np.array([0, 0, 0, 1, 1, 2, 0, 0])
    m = classification_metrics(y, p, CLASSES, speakers=["a", "a", "b", "b", "a", "b", "a", "b"])
    assert m["n"] == 8
    assert m["wa"] == pytest.approx(5 / 8)
    recalls = [3 / 4, 1 / 1, 1 / 2, 0 / 1]
    assert m["ua"] == pytest.approx(np.mean(recalls))
    prec = [3 / 5, 1 / 2, 1 / 1, 0.0]
    f1 = [2 * a * b / (a + b) if a + b else 0.0 for a, b in zip(prec, recalls)]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["per_class"]["neutral"] == pytest.approx({"precision": 0.6, "recall": 0.75, "f1": f1[0], "support": 4})
    assert m["confusion"] == [[3, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]]
    assert m["per_speaker"] == {
        "a": {"accuracy": pytest.approx(3 / 4), "n": 4},
        "b": {"accuracy": pytest.approx(2 / 4), "n": 4},
    }


def test_ua_averages_only_classes_present_in_the_reference():
    m = classification_metrics([0, 0, 1], [0, 3, 1], CLASSES)
    assert m["ua"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["per_class"]["angry"]["support"] == 0


def test_summarise_uses_sample_std():
    s = summarise([0.5, 0.7, 0.9])
    assert s["mean"] == pytest.approx(0.7)
    assert s["std"] == pytest.approx(0.2)
    assert summarise([0.4])["std"] == 0.0
    agg = summarise_runs([{"wa": 0.5, "ua": 0.4}, {"wa": 0.7, "ua": 0.6}], ["wa", "ua", "f1"])
    assert set(agg) == {"wa", "ua"} and agg["ua"]["mean"] == pytest.approx(0.5)


def test_paper_way_takes_separate_maxima_honest_way_follows_dev():
    history = [
        {"epoch": 1, "dev_ua": 0.50, "test_wa": 0.60, "test_ua": 0.55},
        {"epoch": 2, "dev_ua": 0.70, "test_wa": 0.62, "test_ua": 0.58},
        {"epoch": 3, "dev_ua": 0.65, "test_wa": 0.70, "test_ua": 0.50},
        {"epoch": 4, "dev_ua": 0.70, "test_wa": 0.58, "test_ua": 0.66},
    ]
    r = paper_and_honest(history, "dev_ua")
    assert r["paper"]["max_wa"] == 0.70 and r["paper"]["max_wa_epoch"] == 3
    assert r["paper"]["max_ua"] == 0.66 and r["paper"]["max_ua_epoch"] == 4
    assert r["paper"]["kept_epoch"] == 4  # best test WA + UA: 1.24 at epoch 4
    assert r["honest"] == {"monitor": "dev_ua", "epoch": 2, "wa": 0.62, "ua": 0.58}  # first of the tied dev maxima
    assert best_epoch(history, "dev_ua") == 1

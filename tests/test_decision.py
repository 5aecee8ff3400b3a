"""The utterance decision, pinned on window outputs that differ strongly from window to window.

A random tiny model gives nearly identical windows, so the mean, the median, the first window
and the other rule all decide alike and a wrong aggregation goes unnoticed. Here a real backend
(the documented extension point of :class:`areaser.serve.recognizer.Recognizer`) returns a known
probability row for each window, looked up by the window's loudness, and a real WAV file is
made of 2 s segments of different loudness. The rows are chosen so that the mean (``prob``), the
softmax of the mean log (``logits``), the median, the maximum, the first and the last window all
pick different classes; the expected utterance probabilities are computed here by hand.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from test_service import LiveServer

from areaser.data.segments import SegmentConfig
from areaser.data.windows import load_windows
from areaser.runs.metrics import utterance_probs
from areaser.serve.recognizer import InferenceConfig, Recognizer
from areaser.serve.service import create_app
from areaser.train.scoring import score_windows

CLASSES = ("neutral", "happy", "sad", "angry")
SR = 16_000
WIN_S = 2.0

# the probability row of each loudness level (rows sum to 1)
ROWS = np.array(
    [
        [0.62, 0.20, 0.10, 0.08],
        [0.30, 0.45, 0.15, 0.10],
        [0.25, 0.10, 0.64, 0.01],
        [0.02, 0.25, 0.72, 0.01],
        [0.01, 0.08, 0.01, 0.90],
    ]
)
# RMS of each level's segment: not monotone in the row order
LEVEL_RMS = np.array([0.30, 0.05, 0.80, 0.12, 0.50]) / 8

# file A: levels 0..4, one 2 s segment each; file B: levels 3, 1, 4 (at 22.05 kHz: resampled)
LEVELS = {"a": [0, 1, 2, 3, 4], "b": [3, 1, 4]}
RATES = {"a": SR, "b": 22_050}

# by hand, from ROWS (file A):
#   mean        [0.240, 0.216, 0.324, 0.220]   -> sad      (decision "prob")
#   geo. mean   [0.204, 0.369, 0.305, 0.122]   -> happy    (decision "logits", normalised)
#   median      [0.25,  0.20,  0.15,  0.08 ]   -> neutral
#   max         [0.62,  0.45,  0.72,  0.90 ]   -> angry
#   first row -> neutral, last row -> angry
# file B: mean [0.11, 0.26, 0.293, 0.337] -> angry; geometric mean -> happy
EXPECTED_LABEL = {("a", "prob"): "sad", ("a", "logits"): "happy", ("b", "prob"): "angry", ("b", "logits"): "happy"}


def by_hand(rows: np.ndarray, decision: str) -> np.ndarray:
    """The decision from first principles: the mean of the rows, or the softmax of the mean log."""
    if decision == "prob":
        return rows.sum(0) / len(rows)
    g = np.exp(np.log(rows).sum(0) / len(rows))
    return g / g.sum()


class LoudnessTable:
    """A backend ``windows [B, N] -> probabilities [B, C]`` whose outputs are known in advance.

    Each window is looked up by its RMS level among :data:`LEVEL_RMS` and gets that level's row of
    :data:`ROWS`. A window whose level is none of them (one that straddles two segments) fails the
    test. ``seen`` records the level of every window scored, in the order they came.
    """

    name = "loudness-table"

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.batches: list[int] = []

    def levels(self, windows: np.ndarray) -> np.ndarray:
        rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=-1))
        dist = np.abs(np.log(np.maximum(rms, 1e-12)[:, None] / LEVEL_RMS[None, :]))
        assert (dist.min(1) < 0.05).all(), f"a window of no known level: RMS {rms}"
        return dist.argmin(1)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        assert windows.dtype == np.float32 and windows.ndim == 2 and windows.shape[1] == int(WIN_S * SR)
        k = self.levels(windows)
        self.seen.extend(k.tolist())
        self.batches.append(len(windows))
        return ROWS[k].astype(np.float32)


def write_levels(path: Path, levels: list[int], sr: int) -> Path:
    """A WAV file of one 2 s segment per level (16-bit PCM, as recorders write).

    Each segment is band-limited noise (60 sinusoids of random frequency in 150-3,500 Hz and random
    phase), scaled to its level's RMS exactly: its spectrum changes from frame to frame as speech does,
    so inference's not-speech check (which refuses steady tones) lets it through, and resampling from
    22.05 kHz keeps its RMS (nothing above 8 kHz).
    """
    rng = np.random.default_rng(len(levels))
    t = np.arange(int(WIN_S * sr)) / sr
    segments = []
    for k in levels:
        f, ph = rng.uniform(150, 3500, 60), rng.uniform(0, 2 * np.pi, 60)
        x = np.sin(2 * np.pi * f[:, None] * t[None, :] + ph[:, None]).sum(0)
        segments.append(x * LEVEL_RMS[k] / np.sqrt(np.mean(x**2)))
    sf.write(path, np.concatenate(segments), sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("levels")
    return {name: write_levels(d / f"{name}.wav", LEVELS[name], RATES[name]) for name in LEVELS}


def recognizer(decision: str, backend: LoudnessTable | None = None) -> Recognizer:
    # hop = window: every window is exactly one segment; batch_size 2: windows of a file (and of
    # consecutive files) go through the backend in several batches
    config = InferenceConfig(win_s=WIN_S, hop_s=WIN_S, decision=decision, batch_size=2)
    return Recognizer(backend or LoudnessTable(), CLASSES, SR, config, name="table")


def test_the_rows_tell_the_aggregations_apart() -> None:
    """The fixture bites: every wrong aggregation of file A's windows picks another class."""
    rows = ROWS[LEVELS["a"]]
    np.testing.assert_allclose(rows.sum(1), 1.0)
    right = {CLASSES[int(np.argmax(by_hand(rows, d)))] for d in ("prob", "logits")}
    assert right == {"sad", "happy"}
    wrong = [np.median(rows, 0), rows.max(0), rows[0], rows[-1]]
    assert {CLASSES[int(np.argmax(w))] for w in wrong} == {"neutral", "angry"}


@pytest.mark.parametrize("decision", ["prob", "logits"])
def test_predict_decides_by_the_rule_on_a_real_file(decision: str, wavs: dict[str, Path]) -> None:
    backend = LoudnessTable()
    pred = recognizer(decision, backend).predict(wavs["a"])
    assert backend.seen == LEVELS["a"] and len(backend.batches) == 3  # the real windows, batched 2 + 2 + 1
    assert [w.start_s for w in pred.timeline] == [0.0, 2.0, 4.0, 6.0, 8.0]
    for w, k in zip(pred.timeline, LEVELS["a"]):
        np.testing.assert_allclose(w.probabilities, ROWS[k], atol=1e-7)
    want = by_hand(ROWS[LEVELS["a"]], decision)
    np.testing.assert_allclose(pred.probabilities, want, atol=1e-6)
    assert pred.label == EXPECTED_LABEL["a", decision]
    assert pred.probabilities.sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("decision", ["prob", "logits"])
def test_predict_many_batches_across_files_and_keeps_each_decision(decision: str, wavs: dict[str, Path]) -> None:
    backend = LoudnessTable()
    got = list(recognizer(decision, backend).predict_many([wavs["a"], wavs["b"]], errors="raise"))
    assert backend.seen == LEVELS["a"] + LEVELS["b"] and backend.batches == [2, 2, 2, 2]  # one batch mixes A and B
    for pred, name in zip(got, ("a", "b")):
        assert len(pred.timeline) == len(LEVELS[name])
        np.testing.assert_allclose(pred.probabilities, by_hand(ROWS[LEVELS[name]], decision), atol=1e-6)
        assert pred.label == EXPECTED_LABEL[name, decision]


@pytest.mark.parametrize("decision", ["prob", "logits"])
def test_training_evaluation_and_predict_decide_alike(
    decision: str, wavs: dict[str, Path], rng: np.random.Generator
) -> None:
    """The evaluation path (the run's own windows of the files, window logits, ``score_windows``)
    and ``predict`` (streamed windows, backend probabilities) decide the same utterances alike."""
    rec = recognizer(decision)
    preds = [rec.predict(wavs[name]) for name in ("a", "b")]
    labels = [CLASSES.index(EXPECTED_LABEL[name, decision]) for name in ("a", "b")]
    assert [p.label for p in preds] == [CLASSES[y] for y in labels]

    df = pd.DataFrame({"path": [str(wavs["a"]), str(wavs["b"])], "y": labels, "speaker": ["s1", "s2"]})
    ws = load_windows(df, SegmentConfig(win_s=WIN_S, test_hop_s=WIN_S), train=False, sr=SR)
    levels = LoudnessTable().levels(ws.waves(torch.arange(len(ws))).numpy())
    assert levels.tolist() == LEVELS["a"] + LEVELS["b"]
    # a model's logits are its log-probabilities up to one constant per window
    logits = torch.from_numpy(np.log(ROWS[levels]) + rng.normal(0.0, 5.0, size=(len(ws), 1)))

    probs = utterance_probs(logits, ws.utt_index, ws.n_utts, decision)
    for row, pred, name in zip(probs, preds, ("a", "b")):
        np.testing.assert_allclose(row, by_hand(ROWS[LEVELS[name]], decision), atol=1e-9)
        np.testing.assert_allclose(row, pred.probabilities, atol=1e-6)
    m = score_windows(ws, logits, CLASSES, decision, speakers=True)
    assert m["wa"] == 1.0 and m["per_speaker"] == {"s1": {"accuracy": 1.0, "n": 1}, "s2": {"accuracy": 1.0, "n": 1}}
    want_confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for y in labels:
        want_confusion[y, y] += 1
    assert m["confusion"] == want_confusion.tolist()

    # windows in any order, grouped: the same decisions
    perm = rng.permutation(len(ws))
    shuffled = utterance_probs(logits[perm], ws.utt_index[perm], ws.n_utts, decision)
    np.testing.assert_allclose(shuffled, probs, atol=1e-12)


@pytest.mark.parametrize("decision", ["prob", "logits"])
def test_service_decides_as_predict(decision: str, wavs: dict[str, Path]) -> None:
    with LiveServer(create_app(recognizer(decision))) as server:
        with open(wavs["a"], "rb") as f:
            r = httpx.post(f"{server.url}/v1/predict", files={"file": ("a.wav", f, "audio/wav")}, timeout=60)
        health = httpx.get(f"{server.url}/healthz").json()
    assert r.status_code == 200, r.text
    body = r.json()
    assert health["backend"] == "loudness-table"
    assert body["label"] == EXPECTED_LABEL["a", decision] and body["windows"] == len(LEVELS["a"])
    want = by_hand(ROWS[LEVELS["a"]], decision)
    assert [body["probabilities"][c] for c in CLASSES] == pytest.approx(want.tolist(), abs=2e-6)
    assert [w["label"] for w in body["timeline"]] == ["neutral", "happy", "sad", "sad", "angry"]


def test_one_utterance_or_grouped() -> None:
    z = np.log(ROWS)
    one = utterance_probs(z, decision="logits")
    assert one.shape == (len(CLASSES),)
    np.testing.assert_allclose(one, by_hand(ROWS, "logits"), atol=1e-12)
    np.testing.assert_allclose(utterance_probs(z, np.zeros(len(z)), 1, "logits")[0], one, atol=1e-12)
    with pytest.raises(ValueError, match="one utterance"):
        utterance_probs(z, n_utts=2)

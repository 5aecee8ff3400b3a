"""How hard is the built-in corpus? A simple prosodic baseline, leave-one-session-out.

    python -m benchmarks.baseline_prosodic [--root DIR] [--jobs J]

Seven numbers per utterance, the cues the corpus renders emotions with: F0 mean and
standard deviation (``librosa.yin``, semitones, speech frames), frame energy mean,
standard deviation and maximum (dB), speaking rate (energy peaks per second of
speech) and the share of the utterance that is speech. Standardised, then
scikit-learn ``LogisticRegression`` (balanced class weights). Four classes as in
IEMOCAP practice: neutral, happy (hap + exc), sad, angry; xxx/oth left out.

Trained on four sessions, tested on the fifth (so on unseen speakers), for each
session in turn; prints UA (mean per-class recall) and WA per held-out session and
the mean. Chance UA is 25 %. The corpus is meant to be learnable but not trivial:
this baseline should land well below 100 %. Peer: the majority-class guess (its UA
is 25 % by definition); the ratio column is UA over chance.

Without ``--root`` the default corpus (``SynthConfig()``) is synthesised into a
temporary folder first. The corpus is synthetic: these scores say nothing about
human speech.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import soundfile as sf
from rich.console import Console
from rich.table import Table
from scipy.signal import find_peaks
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

console = Console()
FEATURES = ("f0_mean", "f0_std", "energy_mean", "energy_std", "energy_max", "rate", "speech_share")
HOP = 320  # 20 ms at 16 kHz


def prosodic_features(y: np.ndarray, sr: int) -> list[float]:
    """The seven numbers above for one waveform ``[N]``."""
    frame_db = librosa.amplitude_to_db(librosa.feature.rms(y=y, frame_length=1024, hop_length=HOP)[0], ref=1.0)
    f0 = librosa.yin(y, fmin=60, fmax=500, sr=sr, frame_length=1024, hop_length=HOP)
    n = min(len(f0), len(frame_db))
    f0, frame_db = f0[:n], frame_db[:n]
    speech = frame_db > frame_db.max() - 25  # frames within 25 dB of the loudest
    voiced = speech & (f0 > 65) & (f0 < 480)
    st = 12 * np.log2(f0[voiced] / 100.0) if voiced.any() else np.zeros(1)
    # syllable-rate proxy: peaks of the smoothed energy contour, per second of speech
    smooth = np.convolve(frame_db, np.ones(5) / 5, mode="same")
    peaks, _ = find_peaks(smooth, prominence=3.0, distance=5)
    speech_s = speech.sum() * HOP / sr
    return [
        float(st.mean()),
        float(st.std()),
        float(frame_db[speech].mean()),
        float(frame_db[speech].std()),
        float(frame_db.max()),
        float(np.sum(speech[peaks]) / max(speech_s, 0.1)),
        float(speech.mean()),
    ]


def load_table(root: Path) -> pd.DataFrame:
    from areaser.data.labels import get_label_set
    from areaser.data.manifest import read_manifest, select_classes

    df = select_classes(read_manifest(root / "manifest.csv"), get_label_set("4class"))
    feats = []
    for path in df["path"]:
        y, sr = sf.read(path, dtype="float32")
        feats.append(prosodic_features(y, sr))
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(feats, columns=FEATURES)], axis=1)


def evaluate(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for session in sorted(table["session"].unique()):
        train, test = table[table["session"] != session], table[table["session"] == session]
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
        model.fit(train[list(FEATURES)], train["y"])
        pred = model.predict(test[list(FEATURES)])
        rows.append(
            {
                "held-out session": session,
                "test utterances": len(test),
                "UA": balanced_accuracy_score(test["y"], pred),
                "WA": float(np.mean(pred == test["y"])),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, help="A corpus written by `areaser synth` (default: synthesise one now).")
    ap.add_argument("--jobs", type=int, default=None, help="Worker processes for synthesis.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from areaser.builtin.synth import SynthConfig, synthesize

            root = Path(tmp) / "builtin"
            t0 = time.perf_counter()
            synthesize(root, SynthConfig(), progress=True, jobs=args.jobs)
            console.print(f"synthesised the default corpus in {time.perf_counter() - t0:.1f} s", highlight=False)
        t0 = time.perf_counter()
        table = load_table(root)
        console.print(f"features of {len(table)} utterances in {time.perf_counter() - t0:.1f} s", highlight=False)
    res = evaluate(table)
    out = Table(title="prosodic baseline (7 features + logistic regression), leave-one-session-out, 4 classes")
    for col in ("held-out session", "test utterances", "UA", "WA", "UA / chance"):
        out.add_column(col, justify="right")
    for r in res.itertuples(index=False):
        out.add_row(r[0], str(r[1]), f"{100 * r[2]:.1f} %", f"{100 * r[3]:.1f} %", f"{r[2] / 0.25:.2f}x")
    out.add_row(
        "mean",
        str(int(res["test utterances"].sum())),
        f"{100 * res['UA'].mean():.1f} %",
        f"{100 * res['WA'].mean():.1f} %",
        f"{res['UA'].mean() / 0.25:.2f}x",
        style="bold",
    )
    console.print(out)
    console.print("chance (majority guess) UA = 25.0 %. Synthetic corpus: says nothing about human speech.")


if __name__ == "__main__":
    main()

"""Classical baseline: eGeMAPS-like utterance functionals + a scikit-learn classifier.

Not openSMILE (its free build is non-commercial): a small, documented set of the
same *kinds* of descriptors, computed with librosa and numpy, summarised over the
utterance:

================  ==========================================================================
group             functionals
================  ==========================================================================
pitch             F0 (pYIN, semitones re 27.5 Hz, voiced frames): mean, std, p20, p50, p80,
                  p80-p20 range, slope (semitones / s)
voicing           voiced-frame ratio, mean voicing probability (a harmonicity / HNR proxy)
loudness          frame RMS in dB (active frames): mean, std, p20, p50, p80, range
spectrum          centroid (Hz), slope (dB / kHz), flux, 85 % roll-off: mean and std each;
                  alpha ratio (dB, 50-1000 Hz over 1-5 kHz), Hammarberg index (dB)
timbre            MFCC 1-4: mean and std each
rhythm            loudness peaks / s (syllable-rate proxy), voiced segments / s,
                  mean voiced-segment length (s), duration (s)
================  ==========================================================================

Functional core: :func:`prosodic_features` maps one waveform ``[N]`` at 16 kHz to
a vector ``[len(FEATURE_NAMES)]`` (NaN where a descriptor is undefined, e.g. F0
of an unvoiced utterance). :func:`make_classifier` returns an sklearn pipeline
(median imputation -> standardisation -> logistic regression or RBF SVM, both
with balanced class weights because UA is the headline metric).
:func:`fit_predict` trains on one fold and returns test-set class probabilities,
so the baseline is scored by the same metrics code as the neural models, and
:func:`train_baseline` runs it on a :class:`areaser.runs.config.TrainConfig` fold with the
run directory and report of :func:`areaser.train.lifecycle.train`. A baseline run keeps what it
needs to score other data later (:data:`FIT_FILE`, read back by :func:`load_fitted`), e.g.
another corpus (:func:`areaser.train.crosscorpus.evaluate_on`).

Model names that select it anywhere a model name is taken: ``egemaps-lr`` and
``egemaps-svm`` (:data:`BASELINES`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Sequence

import librosa
import numpy as np
from rich.progress import Progress
from scipy.signal import find_peaks
from sklearn.calibration import CalibratedClassifierCV
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from areaser.core.registry import Registry
from areaser.io.audio import DEFAULT_SR, load_audio

_STATS6 = ("mean", "std", "p20", "p50", "p80", "range")
FEATURE_NAMES: tuple[str, ...] = (
    *(f"f0_{s}" for s in _STATS6),
    "f0_slope",
    "voiced_ratio",
    "voicing_prob",
    *(f"loud_{s}" for s in _STATS6),
    "centroid_mean",
    "centroid_std",
    "slope_mean",
    "slope_std",
    "flux_mean",
    "flux_std",
    "rolloff_mean",
    "rolloff_std",
    "alpha_ratio",
    "hammarberg",
    *(f"mfcc{i}_{s}" for i in range(1, 5) for s in ("mean", "std")),
    "peak_rate",
    "voiced_seg_rate",
    "voiced_seg_len",
    "duration",
)


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the classical baseline.

    classifier : ``"lr"`` (logistic regression) or ``"svm"`` (RBF SVM, probabilities by Platt
        scaling fitted with internal cross-validation).
    C : inverse regularisation strength of either classifier.
    f0_min, f0_max : pitch search range in Hz (covers male and female speech).
    hop_s : analysis hop in seconds (20 ms; pitch and spectra share it).
    seed : random state of the SVM's probability calibration.
    """

    classifier: str = "lr"
    C: float = 1.0
    f0_min: float = 65.0
    f0_max: float = 600.0
    hop_s: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if self.classifier not in ("lr", "svm"):
            raise ValueError(f"classifier must be 'lr' or 'svm', got {self.classifier!r}")
        if not self.C > 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        if not 0 < self.f0_min < self.f0_max:
            raise ValueError(f"need 0 < f0_min < f0_max, got {self.f0_min}, {self.f0_max}")


BASELINES: Registry[BaselineConfig] = Registry(
    "baseline",
    {
        "egemaps-lr": BaselineConfig(classifier="lr"),
        "egemaps-svm": BaselineConfig(classifier="svm"),
    },
)


def is_baseline(model: str) -> bool:
    """True if ``model`` names a classical baseline rather than a neural model."""
    return model in BASELINES


def get_baseline(name: str, **overrides: object) -> BaselineConfig:
    """Config of a baseline by name, with field overrides; an unknown name lists the names (UnknownNameError)."""
    return replace(BASELINES[name], **overrides)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- features


def _stats6(x: np.ndarray) -> list[float]:
    """mean, std, p20, p50, p80, p80-p20 of ``x`` (NaNs if ``x`` is empty)."""
    if x.size == 0:
        return [np.nan] * 6
    p20, p50, p80 = np.percentile(x, [20, 50, 80])
    return [float(x.mean()), float(x.std()), float(p20), float(p50), float(p80), float(p80 - p20)]


def _mean_std(x: np.ndarray) -> list[float]:
    return [float(x.mean()), float(x.std())] if x.size else [np.nan, np.nan]


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths (in frames) of the runs of True in a boolean ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def prosodic_features(y: np.ndarray, sr: int = DEFAULT_SR, cfg: BaselineConfig | None = None) -> np.ndarray:
    """eGeMAPS-like functionals of one utterance.

    Parameters
    ----------
    y : mono waveform ``[N]``, float in [-1, 1].
    sr : its sample rate in Hz (default 16000).
    cfg : analysis settings (only ``f0_min``, ``f0_max``, ``hop_s`` are used here).

    Returns
    -------
    np.ndarray float64 ``[len(FEATURE_NAMES)]``, in :data:`FEATURE_NAMES` order; NaN marks
    a descriptor that is undefined for this utterance (no voiced frame, no active frame).
    """
    cfg = cfg or BaselineConfig()
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected a non-empty mono waveform [N], got shape {y.shape}")
    hop = max(1, int(round(cfg.hop_s * sr)))
    n_fft = 1 << int(np.ceil(np.log2(0.064 * sr)))  # >= 64 ms: two periods of the lowest F0
    duration = y.size / sr
    if y.size < n_fft:  # too short to analyse: zero-pad (the duration feature keeps the truth)
        y = np.pad(y, (0, n_fft - y.size))

    # pitch: pYIN on a half-semitone grid (10x faster than the default 0.1, same F0 to ~3 %)
    f0, voiced, vprob = librosa.pyin(
        y, fmin=cfg.f0_min, fmax=cfg.f0_max, sr=sr, frame_length=n_fft, hop_length=hop, resolution=0.5
    )
    mag = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))  # [1 + n_fft/2, T]
    T = min(mag.shape[1], f0.shape[0])
    mag, f0, voiced, vprob = mag[:, :T], f0[:T], voiced[:T].astype(bool), vprob[:T]
    power = mag**2
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)

    st = 12.0 * np.log2(f0[voiced] / 27.5)  # semitones re 27.5 Hz, as eGeMAPS
    t = np.arange(T) * hop / sr
    slope = float(np.polyfit(t[voiced], st, 1)[0]) if st.size >= 2 else np.nan

    rms_db = librosa.amplitude_to_db(librosa.feature.rms(S=mag, frame_length=n_fft)[0], ref=1.0, top_db=None)
    active = rms_db > rms_db.max() - 40.0  # frames within 40 dB of the loudest: speech, not silence
    loud = rms_db[active]

    centroid = librosa.feature.spectral_centroid(S=mag, sr=sr)[0][active]
    rolloff = librosa.feature.spectral_rolloff(S=mag, sr=sr, roll_percent=0.85)[0][active]
    # spectral slope: least-squares line through the dB spectrum, in dB per kHz
    spec_db = 10.0 * np.log10(power + 1e-10)
    fk = freqs / 1000.0 - freqs.mean() / 1000.0
    sslope = (fk @ (spec_db - spec_db.mean(axis=0))) / (fk @ fk)
    norm = mag / (mag.sum(axis=0, keepdims=True) + 1e-10)
    flux = np.sqrt((np.diff(norm, axis=1) ** 2).sum(axis=0))
    flux = flux[active[1:]] if T > 1 else np.zeros(0)

    band = lambda lo, hi: (freqs >= lo) & (freqs < hi)  # noqa: E731
    sel = voiced if voiced.any() else active
    low, high = power[band(50, 1000)][:, sel].sum(), power[band(1000, 5000)][:, sel].sum()
    alpha = 10.0 * np.log10((low + 1e-10) / (high + 1e-10))
    mx_lo, mx_hi = power[band(0, 2000)][:, sel].max(initial=0), power[band(2000, 5000)][:, sel].max(initial=0)
    hammarberg = 10.0 * np.log10((mx_lo + 1e-10) / (mx_hi + 1e-10))

    mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=40)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=5)[1:5][:, active]  # [4, T_active]

    # rhythm: peaks of the loudness envelope at least 100 ms apart, 3 dB prominent
    peaks, _ = find_peaks(np.where(active, rms_db, rms_db.min()), distance=max(1, int(0.1 * sr / hop)), prominence=3.0)
    segs = _runs(voiced)
    feats = [
        *_stats6(st),
        slope,
        float(voiced.mean()),
        float(np.nanmean(vprob[voiced])) if voiced.any() else 0.0,
        *_stats6(loud),
        *_mean_std(centroid),
        *_mean_std(sslope[active]),
        *_mean_std(flux),
        *_mean_std(rolloff),
        float(alpha),
        float(hammarberg),
        *(v for row in mfcc for v in _mean_std(row)),
        len(peaks) / duration,
        len(segs) / duration,
        float(segs.mean() * hop / sr) if segs.size else 0.0,
        duration,
    ]
    out = np.asarray(feats, dtype=np.float64)
    assert out.shape == (len(FEATURE_NAMES),)
    return out


def extract_features(
    paths: Sequence[str | os.PathLike],
    cfg: BaselineConfig | None = None,
    sr: int = DEFAULT_SR,
    progress: bool = False,
    bar=None,
) -> np.ndarray:
    """Functionals of every file: ``[len(paths), len(FEATURE_NAMES)]`` float64.

    Files are read with :func:`areaser.io.audio.load_audio` (so a bad file raises
    ``AudioError`` naming it). Results are memoised per process on (path, size,
    mtime) so the folds of one study extract each file once. ``progress`` shows a bar;
    ``bar``, a running ``rich.progress.Progress``, draws it there instead (as cv does).
    """
    cfg = cfg or BaselineConfig()
    rows = []
    if bar is None and progress:
        with Progress(transient=True) as own:
            return extract_features(paths, cfg, sr, bar=own)
    task = bar.add_task("egemaps features", total=len(paths), info="") if bar is not None else None
    for p in paths:
        rows.append(_cached_features(str(p), cfg, sr))
        if task is not None:
            bar.advance(task)
    if task is not None:
        bar.remove_task(task)
    return np.stack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)))


_MEMO: dict[tuple, np.ndarray] = {}


def _cached_features(path: str, cfg: BaselineConfig, sr: int) -> np.ndarray:
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, cfg.f0_min, cfg.f0_max, cfg.hop_s, sr)
    if key not in _MEMO:
        _MEMO[key] = prosodic_features(load_audio(path, sr=sr), sr, cfg)
    return _MEMO[key]


# ----------------------------------------------------------------------------- classifier


def make_classifier(cfg: BaselineConfig | None = None, min_class_count: int = 5):
    """Unfitted sklearn pipeline: median imputation -> StandardScaler -> LR or RBF SVM.

    ``min_class_count`` (training utterances of the rarest class) sizes the SVM's internal
    calibration cross-validation: ``min(5, min_class_count)`` folds, at least 2.
    """
    cfg = cfg or BaselineConfig()
    if cfg.classifier == "lr":
        clf = LogisticRegression(C=cfg.C, max_iter=5000, class_weight="balanced")
    else:
        svc = SVC(C=cfg.C, kernel="rbf", class_weight="balanced", random_state=cfg.seed)
        # one SVC on all the data, a sigmoid (Platt) map fitted on its cross-validated scores
        clf = CalibratedClassifierCV(svc, method="sigmoid", cv=max(2, min(5, min_class_count)), ensemble=False)
    # keep_empty_features: a descriptor NaN on every training file stays a (constant) column
    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), clf)


@dataclass(frozen=True)
class FittedClassifier:
    """A fitted :func:`make_classifier` pipeline that answers for all ``n_classes`` classes.

    ``predict_proba(x [N, F]) -> [N, n_classes]``: a class absent from the training data gets
    probability 0 (sklearn only knows the classes it saw). ``transform(x) -> [N, F]``: the features
    as the classifier reads them (imputed, standardised): a baseline's embedding.
    """

    pipeline: object
    n_classes: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        proba = np.zeros((len(x), self.n_classes))
        if len(x):
            proba[:, self.pipeline.classes_] = self.pipeline.predict_proba(x)
        return proba

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.pipeline[:-1].transform(np.asarray(x, dtype=np.float64))


def fit_classifier(
    x_train: np.ndarray, y_train: np.ndarray, n_classes: int, cfg: BaselineConfig | None = None
) -> FittedClassifier:
    """Fit :func:`make_classifier` on one fold's training features ``[N, F]`` and class indices ``[N]``.

    ``y_train`` holds class indices in ``0..n_classes-1``; at least two classes must be present (the
    SVM also needs two utterances of each). Deterministic: the same data give the same classifier.
    """
    x_train, y_train = np.asarray(x_train, dtype=np.float64), np.asarray(y_train, dtype=np.int64)
    if x_train.ndim != 2:
        raise ValueError(f"features must be [N, F], got {x_train.shape}")
    if len(y_train) != len(x_train):
        raise ValueError(f"{len(x_train)} training rows but {len(y_train)} labels")
    seen, counts = np.unique(y_train, return_counts=True)
    if seen.size < 2:
        raise ValueError(f"the training fold holds only {seen.size} class(es); a classifier needs at least 2")
    if seen.min() < 0 or seen.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {seen.tolist()}")
    cfg = cfg or BaselineConfig()
    if cfg.classifier == "svm" and counts.min() < 2:
        raise ValueError("the SVM baseline needs at least 2 training utterances of every class it sees")
    return FittedClassifier(make_classifier(cfg, int(counts.min())).fit(x_train, y_train), n_classes)


def fit_predict(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    n_classes: int,
    cfg: BaselineConfig | None = None,
) -> np.ndarray:
    """Fit on one fold's training features, return test probabilities ``[N_test, n_classes]``.

    :func:`fit_classifier` then :meth:`FittedClassifier.predict_proba`.
    """
    x_test = np.asarray(x_test, dtype=np.float64)
    if x_test.ndim != 2 or np.ndim(x_train) != 2 or np.shape(x_train)[1] != x_test.shape[1]:
        raise ValueError(f"features must be [N, F] with equal F, got {np.shape(x_train)} and {x_test.shape}")
    return fit_classifier(x_train, y_train, n_classes, cfg).predict_proba(x_test)

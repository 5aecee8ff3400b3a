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
:func:`train_baseline` runs it on a :class:`areaser.training.TrainConfig` fold with the
run directory and report of :func:`areaser.training.train`. A baseline run keeps what it
needs to score other data later (:data:`FIT_FILE`, read back by :func:`load_fitted`), e.g.
another corpus (:func:`areaser.crossval.evaluate_on`).

Model names that select it anywhere a model name is taken: ``egemaps-lr`` and
``egemaps-svm`` (:data:`BASELINES`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np

from .audio import DEFAULT_SR, load_audio
from .determinism import environment, environment_text

__all__ = [
    "FEATURE_NAMES",
    "BaselineConfig",
    "BASELINES",
    "is_baseline",
    "get_baseline",
    "prosodic_features",
    "extract_features",
    "make_classifier",
    "fit_predict",
    "FIT_FILE",
    "FittedBaseline",
    "load_fitted",
    "train_baseline",
]

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


BASELINES: dict[str, BaselineConfig] = {
    "egemaps-lr": BaselineConfig(classifier="lr"),
    "egemaps-svm": BaselineConfig(classifier="svm"),
}


def is_baseline(model: str) -> bool:
    """True if ``model`` names a classical baseline rather than a neural model."""
    return model in BASELINES


def get_baseline(name: str, **overrides: object) -> BaselineConfig:
    """Config of a baseline by name, with field overrides; the error lists the names."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}")
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
    import librosa
    from scipy.signal import find_peaks

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

    Files are read with :func:`areaser.audio.load_audio` (so a bad file raises
    ``AudioError`` naming it). Results are memoised per process on (path, size,
    mtime) so the folds of one study extract each file once. ``progress`` shows a bar;
    ``bar``, a running ``rich.progress.Progress``, draws it there instead (as cv does).
    """
    cfg = cfg or BaselineConfig()
    rows = []
    if bar is None and progress:
        from rich.progress import Progress

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
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    cfg = cfg or BaselineConfig()
    if cfg.classifier == "lr":
        clf = LogisticRegression(C=cfg.C, max_iter=5000, class_weight="balanced")
    else:
        svc = SVC(C=cfg.C, kernel="rbf", class_weight="balanced", random_state=cfg.seed)
        # one SVC on all the data, a sigmoid (Platt) map fitted on its cross-validated scores
        clf = CalibratedClassifierCV(svc, method="sigmoid", cv=max(2, min(5, min_class_count)), ensemble=False)
    # keep_empty_features: a descriptor NaN on every training file stays a (constant) column
    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), clf)


def fit_predict(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    n_classes: int,
    cfg: BaselineConfig | None = None,
) -> np.ndarray:
    """Fit on one fold's training features, return test probabilities ``[N_test, n_classes]``.

    ``y_train`` holds class indices in ``0..n_classes-1``. A class absent from the
    training fold gets probability 0 (sklearn only knows the classes it saw).
    """
    x_train, x_test = np.asarray(x_train, dtype=np.float64), np.asarray(x_test, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=np.int64)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"features must be [N, F] with equal F, got {x_train.shape} and {x_test.shape}")
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
    model = make_classifier(cfg, int(counts.min())).fit(x_train, y_train)
    proba = np.zeros((len(x_test), n_classes))
    if len(x_test):
        proba[:, model.classes_] = model.predict_proba(x_test)
    return proba


# ----------------------------------------------------------------------------- a fitted baseline, kept

# Why training features, not the classifier: a fitted sklearn pipeline can only be saved by
# pickle (not allowed here: loading must not run code), and re-implementing the imputer,
# scaler, logistic regression and the calibrated SVM's predict_proba by hand would be a second
# implementation of sklearn's. Fitting is deterministic (lbfgs and libsvm, unshuffled
# calibration folds), so ``fit_predict`` on the stored features and labels rebuilds the very
# classifier the run scored, without the audio and without the slow pitch tracking.
FIT_FILE = "baseline.safetensors"


@dataclass
class FittedBaseline:
    """A trained baseline run, ready to score new utterances (see :data:`FIT_FILE`).

    ``x_train`` ``[N, len(FEATURE_NAMES)]`` and ``y_train`` ``[N]`` are the run's training
    features and class indices; ``classes`` its classes; ``header`` the stored JSON (``config``,
    ``fold``, ``train_ids``, ``baseline``, ``features``).
    """

    classes: tuple[str, ...]
    cfg: BaselineConfig
    sr: int
    x_train: np.ndarray
    y_train: np.ndarray
    header: dict

    def predict_proba(self, paths: Sequence[str | os.PathLike], progress: bool = False) -> np.ndarray:
        """Class probabilities ``[len(paths), len(classes)]`` of the classifier the run fitted."""
        x = extract_features(paths, self.cfg, self.sr, progress=progress)
        return fit_predict(self.x_train, self.y_train, x, len(self.classes), self.cfg)


def _save_fit(run_dir, config, prep, x_train: np.ndarray, bcfg: BaselineConfig):
    """Write :data:`FIT_FILE`: the fold's training features and labels, the config that made them."""
    import torch

    from .checkpoint import save_tree

    train = prep.parts["train"]
    tensors = {
        "x_train": torch.from_numpy(np.array(x_train, dtype=np.float64)),  # copies: writable, contiguous
        "y_train": torch.from_numpy(np.array(train["y"], dtype=np.int64)),
    }
    header = {
        "config": config.to_dict(),
        "classes": list(prep.classes),
        "fold": prep.fold.name,
        "train_ids": list(train["utt_id"]),
        "baseline": asdict(bcfg),
        "features": list(FEATURE_NAMES),
    }
    return save_tree(os.path.join(run_dir, FIT_FILE), tensors, header)


def load_fitted(run_dir: str | os.PathLike) -> FittedBaseline:
    """The fit of a baseline run directory.

    Raises :class:`areaser.checkpoint.CheckpointError` (one line, says what to do) when it is absent or was made
    with other settings or features.
    """
    from pathlib import Path

    from .checkpoint import CheckpointError, load_tree
    from .config import TrainConfig

    path = Path(run_dir) / FIT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: not found; a baseline run stores its fit since cross-corpus scoring "
            "came in: train it again (areaser train ... --restart)"
        )
    tree, header = load_tree(path)
    c = TrainConfig.from_dict(header["config"])
    bcfg = get_baseline(c.model, seed=c.seed)
    if header.get("features") != list(FEATURE_NAMES) or header.get("baseline") != asdict(bcfg):
        raise CheckpointError(
            f"{path}: fitted with other features or baseline settings than this version's; train it again (--restart)"
        )
    return FittedBaseline(
        tuple(header["classes"]), bcfg, c.features.sr, tree["x_train"].numpy(), tree["y_train"].numpy(), header
    )


# ----------------------------------------------------------------------------- a run, like a neural one


def train_baseline(config, *, log=print, bar=None, resume: bool | None = None) -> dict:
    """Train and score a baseline on one fold of a :class:`areaser.training.TrainConfig`.

    The twin of :func:`areaser.training.train` for ``config.model`` in :data:`BASELINES`
    (``train`` hands baselines here): the same fold (``prepare_fold``), the same metrics
    (``classification_metrics``), the same run directory (``config.json``, ``split.json``,
    ``report.json``, ``report.md``, ``confusion.png``) and report dict, so tables and
    cross-validation treat both alike. The classifier learns from the fold's ``train`` part (augmented copies
    included, if any); the ``dev`` part is left unused, as it only picks the epoch of a
    neural model. A run whose ``report.json`` exists with the same config is returned as it
    is, unless ``resume`` is ``False`` (``--restart``). ``bar``: an outer rich progress to
    draw into. The fit is kept (:data:`FIT_FILE`), and ``config.test_manifests`` (other corpora)
    are scored with it after the run (:func:`areaser.crossval.score_test_manifests`).
    """
    import time
    from pathlib import Path

    from .checkpoint import run_paths
    from .crossval import check_test_manifests, score_test_manifests
    from .fileio import atomic_write_json, read_json
    from .metrics import classification_metrics
    from .provenance import console_line, describe, info_rows, notes, split_text
    from .reports import write_run_report
    from .splits import split_record
    from .training import ConfigError, TrainConfig, prepare_fold

    say = log or (lambda s: None)
    c = (config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)).resolved()
    if not is_baseline(c.model):
        raise ConfigError(f"model {c.model!r} is not a classical baseline ({', '.join(BASELINES)})")
    run_dir = Path(c.out_dir) / c.name
    report_path = run_dir / "report.json"
    done = run_paths(run_dir)["done"]  # written last: a run killed while writing its report is fitted again
    if done.is_file() and report_path.is_file() and resume is not False:
        old = read_json(report_path, ConfigError)
        if old.get("config") == c.to_dict():
            say(f"{run_dir}: already finished ({done.name} exists)")
            return old
    prep = prepare_fold(c)
    check_test_manifests(c.label_set, prep.classes, c.test_manifests)  # a bad one stops before the work
    bcfg = get_baseline(c.model, seed=c.seed)
    t0 = time.perf_counter()
    train, test = prep.parts["train"], prep.parts["test"]
    paths = list(train["path"]) + list(test["path"])
    x = extract_features(paths, bcfg, c.features.sr, progress=c.progress, bar=bar)
    x_train, x_test = x[: len(train)], x[len(train) :]
    t_feat = time.perf_counter() - t0
    proba = fit_predict(x_train, train["y"].to_numpy(), x_test, len(prep.classes), bcfg)
    metrics = classification_metrics(test["y"].to_numpy(), proba.argmax(1), prep.classes, list(test["speaker"]))
    prov = describe(c.manifest, prep.parts, c.label_set, prep.classes, c.protocol)
    env = environment(c.deterministic)
    report = {
        "name": c.name,
        "classes": list(prep.classes),
        "fold": prep.fold.name,
        "test_group": prep.fold.test_group,
        "selected_epoch": None,
        "test": metrics,
        "history": [],
        "config": c.to_dict(),
        "provenance": prov,
        "notes": notes(prov),
        "info": {
            **info_rows(prov),
            "manifest": c.manifest,
            "fold": split_text(prov, prep.fold.name, prep.fold.test_group)
            + f", {prep.fold.index + 1} of {prep.n_folds}",
            "test scores": f"the test part of fold {prep.fold.name} ({prep.fold.test_group}); classifier fitted on "
            "the train part, dev part unused",
            "model": f"{c.model} ({len(FEATURE_NAMES)} eGeMAPS-like functionals, {bcfg.classifier}, C={bcfg.C:g})",
            "utterances train / dev (unused) / test": " / ".join(
                str(len(prep.parts[k])) for k in ("train", "dev", "test")
            ),
            "feature extraction + training time": f"{t_feat:.1f} s + {time.perf_counter() - t0 - t_feat:.1f} s",
            "environment": environment_text(env),
        },
        "environment": env,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    c.save(run_dir / "config.json")
    atomic_write_json(run_dir / "split.json", split_record(prep.fold, prep.parts))
    _save_fit(run_dir, c, prep, x_train, bcfg)  # before the report: a run with a report can always score again
    write_run_report(run_dir, report)
    say(console_line(report, run_dir / "report.md"))
    score_test_manifests(run_dir, c.test_manifests, log=log)
    atomic_write_json(done, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})  # every artefact exists
    return report

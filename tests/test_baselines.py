"""Classical baseline: eGeMAPS-like functionals on signals with known answers, and the classifier."""

from __future__ import annotations

import numpy as np
import pytest

from areaser.io.audio import write_audio
from areaser.models.baselines import (
    BASELINES,
    FEATURE_NAMES,
    BaselineConfig,
    extract_features,
    fit_predict,
    get_baseline,
    is_baseline,
    make_classifier,
    prosodic_features,
)

SR = 16_000


def voiced_tone(f_start: float, f_end: float, seconds: float = 2.5, am_hz: float = 4.0, seed: int = 0) -> np.ndarray:
    """Harmonic 'vowel' whose F0 glides linearly, amplitude-modulated at ``am_hz`` (syllable-like)."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = f_start + (f_end - f_start) * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(0.2 / k * np.sin(k * phase) for k in range(1, 10)) * (0.55 + 0.45 * np.sin(2 * np.pi * am_hz * t))
    return (y + 0.003 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def feats(y: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, prosodic_features(y, SR)))


def semitones(f: float) -> float:
    return 12 * np.log2(f / 27.5)


def test_pitch_loudness_rhythm_of_a_known_signal() -> None:
    f = feats(voiced_tone(150.0, 250.0, seconds=2.5, am_hz=4.0))
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == len(prosodic_features(voiced_tone(150, 150)))
    # F0 glides 150 -> 250 Hz: median near the midpoint on a log scale, slope = 8.84 st / 2.5 s
    assert f["f0_p50"] == pytest.approx(semitones(np.sqrt(150 * 250)), abs=0.8)
    assert f["f0_p20"] < f["f0_p50"] < f["f0_p80"]
    assert f["f0_slope"] == pytest.approx((semitones(250) - semitones(150)) / 2.5, rel=0.15)
    assert f["voiced_ratio"] > 0.9
    assert f["peak_rate"] == pytest.approx(4.0, abs=1.0)  # one loudness peak per AM cycle
    assert f["duration"] == pytest.approx(2.5)
    # a falling contour has a negative slope, a higher voice a higher mean
    g = feats(voiced_tone(300.0, 200.0))
    assert g["f0_slope"] < 0 and g["f0_mean"] > f["f0_mean"]


def test_louder_and_brighter_signals_move_the_right_features() -> None:
    y = voiced_tone(200.0, 200.0)
    base, loud = feats(y), feats(np.clip(4 * y, -1, 1))
    assert loud["loud_mean"] == pytest.approx(base["loud_mean"] + 20 * np.log10(4), abs=0.5)
    # emphasise high frequencies: centroid up, spectral slope up, alpha ratio and Hammarberg down
    bright = feats(np.append(y[:1], np.diff(y)).astype(np.float32) * 3)
    assert bright["centroid_mean"] > base["centroid_mean"]
    assert bright["slope_mean"] > base["slope_mean"]
    assert bright["alpha_ratio"] < base["alpha_ratio"] and bright["hammarberg"] < base["hammarberg"]


def test_noise_has_no_pitch_and_short_input_still_works() -> None:
    noise = (0.1 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32)
    f = feats(noise)
    assert f["voiced_ratio"] < 0.2
    short = prosodic_features(voiced_tone(200, 200, seconds=0.03), SR)  # shorter than one analysis frame
    assert short.shape == (len(FEATURE_NAMES),) and dict(zip(FEATURE_NAMES, short))["duration"] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="mono waveform"):
        prosodic_features(np.zeros((2, 100), np.float32))


def test_extract_features_reads_files_and_names_a_bad_one(tmp_path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    write_audio(a, voiced_tone(150, 150), SR)
    write_audio(b, voiced_tone(250, 250), SR)
    x = extract_features([a, b])
    assert x.shape == (2, len(FEATURE_NAMES))
    assert x[1, FEATURE_NAMES.index("f0_mean")] > x[0, FEATURE_NAMES.index("f0_mean")]
    np.testing.assert_array_equal(extract_features([a]), x[:1])  # memoised, same values
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    from areaser.io.audio import AudioError

    with pytest.raises(AudioError, match="bad.wav"):
        extract_features([tmp_path / "bad.wav"])


def test_classifiers_learn_pitch_classes_and_return_aligned_probabilities() -> None:
    # three 'emotions' told apart by pitch level; class 3 absent from training
    rows, ys = [], []
    for cls, f in enumerate((110.0, 180.0, 280.0)):
        for i in range(6):
            rows.append(prosodic_features(voiced_tone(f * (1 + 0.03 * i), f * (1.02 + 0.03 * i), 1.0, seed=i), SR))
            ys.append(cls)
    x, y = np.stack(rows), np.array(ys)
    train = np.arange(len(y)) % 3 != 0
    for name in BASELINES:
        p = fit_predict(x[train], y[train], x[~train], n_classes=4, cfg=get_baseline(name))
        assert p.shape == (int((~train).sum()), 4)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
        assert (p[:, 3] == 0).all()
        assert (p.argmax(1) == y[~train]).mean() >= 0.8, name


def test_config_and_input_validation() -> None:
    assert is_baseline("egemaps-lr") and is_baseline("egemaps-svm") and not is_baseline("cnn")
    assert get_baseline("egemaps-svm", C=3.0).C == 3.0
    with pytest.raises(ValueError, match="egemaps-lr"):
        get_baseline("egemaps-rf")
    with pytest.raises(ValueError, match="classifier"):
        BaselineConfig(classifier="tree")
    with pytest.raises(ValueError, match="at least 2"):
        fit_predict(np.zeros((3, 2)), np.zeros(3, int), np.zeros((1, 2)), 4)
    with pytest.raises(ValueError, match="labels must lie"):
        fit_predict(np.zeros((3, 2)), np.array([0, 1, 5]), np.zeros((1, 2)), 4)
    # NaN-only columns (an utterance set with no voiced frame) are imputed, not fatal
    x = np.random.default_rng(0).standard_normal((8, 3))
    x[:, 0] = np.nan
    make_classifier().fit(x, np.arange(8) % 2)


def test_train_baseline_on_a_fold_writes_a_run_like_a_neural_one(builtin_corpus, tmp_path) -> None:
    import json

    from areaser.runs.config import config_with
    from areaser.train.lifecycle import train

    cfg = config_with(
        None,
        manifest=str(builtin_corpus / "manifest.csv"),
        model="egemaps-lr",
        fold=1,
        out_dir=str(tmp_path),
        name="bl",
        progress=False,
    )
    report = train(cfg, log=None)
    run = tmp_path / "bl"
    for f in ("config.json", "split.json", "report.json", "report.md", "confusion.png", "done.json"):
        assert (run / f).is_file(), f
    t = report["test"]
    assert report["fold"].startswith("fold2") and t["classes"] == ["neutral", "happy", "sad", "angry"]
    assert t["n"] == sum(map(sum, t["confusion"])) > 0 and 0.0 <= t["ua"] <= 1.0
    assert set(t["per_speaker"]) == {report["test_group"] + "F", report["test_group"] + "M"}
    # a finished run is read back, not trained again
    mtime = (run / "report.json").stat().st_mtime_ns
    assert train(cfg, log=None)["test"] == json.loads((run / "report.json").read_text())["test"]
    assert (run / "report.json").stat().st_mtime_ns == mtime
    # --restart trains it again (to the same scores)
    assert train(cfg, log=None, resume=False)["test"] == report["test"]
    assert (run / "report.json").stat().st_mtime_ns != mtime


def test_cross_validate_runs_a_baseline_through_train(builtin_corpus, tmp_path) -> None:
    """`areaser cv --model egemaps-lr`: train() hands baselines to train_baseline; every fold and the
    aggregate are written as for a neural model."""
    import json

    from areaser.runs.config import config_with
    from areaser.train.crossval import cross_validate

    cfg = config_with(None, manifest=str(builtin_corpus / "manifest.csv"), model="egemaps-lr",
                      out_dir=str(tmp_path), name="cv", progress=True)  # fmt: skip
    summary = cross_validate(cfg, folds=[0, 1], log=None)
    agg = json.loads((tmp_path / "cv" / "report.json").read_text())["aggregate"]
    assert agg == summary["aggregate"] and 0.0 <= agg["ua"]["mean"] <= 1.0
    uas = [json.loads((tmp_path / "cv" / name / "report.json").read_text())["test"]["ua"]
           for name in ("fold1-Ses01", "fold2-Ses02")]  # fmt: skip
    assert agg["ua"]["mean"] == pytest.approx(sum(uas) / 2)

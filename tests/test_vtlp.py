"""VTLP with pure tones: the warp map, melwarp filterbanks, STFT resynthesis, the legacy time warp."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from scipy import stats

from areaser.dsp.features import FeatureConfig, LogMel, warped_mel_filterbank
from areaser.dsp.mel import unwarp_frequencies, warp_frequencies
from areaser.dsp.vtlp import VTLPConfig, legacy_time_warp, sample_factors, vtlp_stft

SR = 16_000


def tone(hz: float, seconds: float = 2.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spec) * SR / len(y))


# ---------------------------------------------------------------- the map


def test_warp_map_fixes_ends_is_continuous_and_increasing():
    f = np.linspace(0, SR / 2, 80_001)
    for alpha in (0.8, 0.9, 1.0, 1.1, 1.2):
        g = warp_frequencies(f, alpha, SR, 4800)
        assert g[0] == 0 and g[-1] == pytest.approx(SR / 2, abs=1e-9)
        assert np.all(np.diff(g) > 0)
        # continuity: the largest step is the slope times the grid step, no jump at the boundary
        assert np.max(np.diff(g)) < 1.5 * max(alpha, 1) * (f[1] - f[0])
        np.testing.assert_allclose(unwarp_frequencies(g, alpha, SR, 4800), f, atol=1e-6)
    assert warp_frequencies(1000.0, 0.8, SR, 4800) == pytest.approx(800.0)
    np.testing.assert_array_equal(warp_frequencies(f, 1.0, SR, 4800), f)


def test_warp_map_numpy_and_torch_agree():
    f = np.linspace(0, SR / 2, 401)
    alpha = np.array([[0.83], [1.17]])
    np.testing.assert_allclose(
        warp_frequencies(torch.from_numpy(f)[None], torch.from_numpy(alpha), SR, 4800).numpy(),
        warp_frequencies(f[None], alpha, SR, 4800),
    )
    with pytest.raises(ValueError, match="fhi"):
        warp_frequencies(f, 0.9, SR, 9000)


def test_factors_respect_range_and_are_uniform():
    cfg = VTLPConfig(factor_range=(0.8, 1.2))
    x = sample_factors(20_000, cfg, torch.Generator().manual_seed(0)).numpy()
    assert x.dtype == np.float32 and x.min() >= 0.8 and x.max() <= 1.2
    assert stats.kstest(x, stats.uniform(loc=0.8, scale=0.4).cdf).pvalue > 0.01
    again = sample_factors(20_000, cfg, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_array_equal(x, again)
    narrow = sample_factors(1000, VTLPConfig(factor_range=(0.9, 1.1)), torch.Generator().manual_seed(1))
    assert narrow.min() >= 0.9 and narrow.max() <= 1.1
    with pytest.raises(ValueError, match="factor_range"):
        VTLPConfig(factor_range=(1.2, 0.8))


# ---------------------------------------------------------------- melwarp


def test_melwarp_filterbank_at_one_is_librosas_exactly():
    for cfg in (
        FeatureConfig(),
        FeatureConfig(fmin=50.0, fmax=7000.0, n_mels=64),
        FeatureConfig(mel_norm=None, htk=True),
    ):
        ref = librosa.filters.mel(
            sr=SR, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, htk=cfg.htk, norm=cfg.mel_norm
        )
        fb = warped_mel_filterbank(torch.tensor([1.0, 0.9]), cfg)
        assert fb.shape == (2, cfg.n_mels, cfg.n_fft // 2 + 1)
        assert torch.equal(fb[0], torch.from_numpy(ref))


def test_melwarp_moves_a_1000hz_tone_to_the_800hz_band():
    lm = LogMel()
    wave = torch.from_numpy(np.stack([tone(1000), tone(800), tone(1000), tone(1200)]))
    out = lm(wave, torch.tensor([0.8, 1.0, 1.0, 1.0])).mean(2).argmax(1)
    warped_1000, plain_800, plain_1000, plain_1200 = out.tolist()
    assert abs(warped_1000 - plain_800) <= 1 and plain_800 < plain_1000
    up = lm(wave[2:3], torch.tensor([1.2])).mean(2).argmax(1).item()
    assert abs(up - plain_1200) <= 1
    # the filter whose peak sat at the 800 Hz band now peaks at warp^-1(its centre)
    bin_hz = SR / FeatureConfig().n_fft
    fb = warped_mel_filterbank(torch.tensor([0.8, 1.0]))
    centre, plain_centre = (bin_hz * fb[i, plain_800].argmax().item() for i in (0, 1))
    assert centre == pytest.approx(plain_centre / 0.8, abs=bin_hz)


# ---------------------------------------------------------------- stft resynthesis


def test_stft_vtlp_moves_a_1000hz_tone_to_800hz():
    bin_hz = SR / 2048  # the STFT vtlp_stft uses
    for alpha, expect in ((0.8, 800.0), (1.2, 1200.0), (0.9, 900.0)):
        out = vtlp_stft(tone(1000), SR, alpha, fhi=4800)
        assert out.shape == (2 * SR,)
        assert abs(peak_hz(out) - expect) <= bin_hz
        mid = out[SR // 4 : -SR // 4]
        assert 0.8 < np.sqrt(np.mean(mid**2)) / np.sqrt(np.mean(tone(1000)[SR // 4 : -SR // 4] ** 2)) < 1.2


def test_stft_vtlp_honours_fhi_and_the_upper_band():
    # above the boundary the map is the second linear piece, not alpha * f
    f = 6000.0
    expect = float(warp_frequencies(f, 0.8, SR, 4800))
    out = vtlp_stft(tone(f), SR, 0.8, fhi=4800)
    assert abs(peak_hz(out) - expect) <= SR / 2048
    assert abs(expect - 0.8 * f) > 100  # the test can tell the two pieces apart


def test_stft_vtlp_factor_one_is_the_identity():
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(SR) + tone(440, 1.0)).astype(np.float32)
    out = vtlp_stft(y, SR, 1.0)
    assert np.max(np.abs(out - y)) < 1e-4


def test_stft_vtlp_keeps_noise_energy():
    y = (0.1 * np.random.default_rng(1).standard_normal(2 * SR)).astype(np.float32)
    for alpha in (0.8, 1.2):
        ratio = np.sum(vtlp_stft(y, SR, alpha) ** 2) / np.sum(y**2)
        assert 0.7 < ratio < 1.3


def test_stft_and_melwarp_agree_on_log_mel():
    # a harmonic signal with a formant: both implementations put the energy in the same bands
    t = np.arange(2 * SR) / SR
    y = sum(np.exp(-((((h * 150) - 900) / 300) ** 2)) * np.sin(2 * np.pi * h * 150 * t) for h in range(1, 50))
    y = (0.4 * y / np.abs(y).max()).astype(np.float32)
    lm = LogMel(FeatureConfig(log="none"))
    for alpha in (0.85, 1.15):
        a = lm(torch.from_numpy(vtlp_stft(y, SR, alpha)))[0, :, 5:-5].mean(1)
        b = lm(torch.from_numpy(y), torch.tensor([alpha]))[0, :, 5:-5].mean(1)
        plain = lm(torch.from_numpy(y))[0, :, 5:-5].mean(1)
        assert abs(int(a.argmax()) - int(b.argmax())) <= 1 and a.argmax() != plain.argmax()
        db = lambda s: 10 * torch.log10(s + 1e-10)  # noqa: E731
        loud = db(b) > db(b).max() - 30
        assert (db(a) - db(b))[loud].abs().mean() < 0.3 * (db(plain) - db(b))[loud].abs().mean()


# ---------------------------------------------------------------- legacy time warp


def test_legacy_time_warp_moves_frames_not_frequencies():
    y = tone(1000)
    out = legacy_time_warp(y, SR, 0.8)
    assert abs(peak_hz(out) - 1000) <= SR / 2048  # a tone keeps its pitch: only time is warped
    assert len(out) == 512 * (librosa.stft(y).shape[1] - 1)  # istft without length, as nlpaug did
    # a click moves in time: frames are mapped through the warp over 0..sr, rescaled to T - 1
    click = np.zeros(2 * SR, np.float32)
    click[SR // 2 : SR // 2 + 64] = 1.0
    moved = legacy_time_warp(click, SR, 0.8)
    n = librosa.stft(click).shape[1]
    target = warp_frequencies(np.linspace(0, 1, n) * SR, 0.8, SR, 4800)
    target = target * (n - 1) / target.max()
    frame = round(SR // 2 / 512)
    assert abs(np.argmax(np.abs(moved)) / 512 - target[frame]) < 2.5
    assert abs(np.argmax(np.abs(moved)) / 512 - frame) > 5


def test_legacy_time_warp_matches_a_per_frame_reference():
    """The vectorised version against a plain loop written from the documented facts."""
    y = (0.1 * np.random.default_rng(2).standard_normal(SR)).astype(np.float32)
    spec = librosa.stft(y, n_fft=2048, hop_length=512, pad_mode="reflect")
    n = spec.shape[1]
    target = warp_frequencies(np.linspace(0, 1, n) * SR, 1.13, SR, 4800)
    target = target * (n - 1) / target.max()
    ref = np.zeros_like(spec)
    for i in range(n):
        if i in (0, n - 1):
            ref[:, i] += spec[:, i]
            continue
        lo = int(np.floor(target[i]))
        ref[:, lo] += (1 - (target[i] - lo)) * spec[:, i]
        ref[:, lo + 1] += (target[i] - lo) * spec[:, i]
    np.testing.assert_allclose(legacy_time_warp(y, SR, 1.13), librosa.istft(ref, hop_length=512), atol=1e-5)


def test_nlpaug_1_1_11_maps_over_0_to_sr_as_paper_md_says():
    """The peer's defect we fix (nlpaug maps bins over 0..sr and ignores fhi): 1000 Hz -> ~690 Hz."""
    naa = pytest.importorskip("nlpaug.augmenter.audio")
    aug = naa.VtlpAug(SR, zone=(0.0, 1.0), coverage=1.0, fhi=4800, factor=(0.8, 0.8))
    out = np.asarray(aug.augment(tone(1000))[0])  # nlpaug 1.1.11 returns a list
    assert 670 < peak_hz(out) < 705  # paper.md measured 688 Hz
    assert abs(peak_hz(vtlp_stft(tone(1000), SR, 0.8)) - 800) <= SR / 2048

"""Log-Mel: parity with librosa (the paper's pipeline) on real corpus audio, shapes, floor, normalisation."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from areaser.data.manifest import read_manifest
from areaser.data.segments import SegmentConfig, segment_utterances
from areaser.dsp.features import FeatureConfig, LogMel, log_mel, mel_basis, n_frames
from areaser.io.audio import load_audio

SR = 16_000


@pytest.fixture(scope="module")
def corpus_windows(builtin_corpus) -> np.ndarray:
    """Test-hop windows (0.4 s hop, pad policy) of 12 built-in corpus utterances."""
    df = read_manifest(builtin_corpus / "manifest.csv").iloc[:12]
    utts = [(r.utt_id, load_audio(r.path)) for r in df.itertuples()]
    windows, _ = segment_utterances(utts, SR, SegmentConfig(), train=False)
    return np.ascontiguousarray(windows)


def librosa_log_mel(windows: np.ndarray) -> np.ndarray:
    """The authors' features: log10 of librosa's melspectrogram, one window at a time."""
    return np.log10(np.stack([librosa.feature.melspectrogram(y=w, sr=SR, n_fft=800, hop_length=400) for w in windows]))


def test_parity_with_librosa_on_corpus_audio(corpus_windows):
    ours = log_mel(torch.from_numpy(corpus_windows)).numpy()
    with np.errstate(divide="ignore"):
        ref = librosa_log_mel(corpus_windows)
    assert ours.shape == ref.shape == (len(corpus_windows), 128, 81)
    above_floor = ref > np.log10(FeatureConfig().amin)
    assert above_floor.mean() > 0.99  # the comparison covers nearly every value
    assert np.abs(ours - ref)[above_floor].max() < 1e-3
    # the module and the functional twin are the same computation
    np.testing.assert_array_equal(LogMel()(torch.from_numpy(corpus_windows)).numpy(), ours)


def test_paper_shape_and_frames():
    x = log_mel(torch.zeros(3, 2 * SR) + 0.01)
    assert x.shape == (3, 128, 81) and x.dtype == torch.float32
    assert n_frames(2 * SR) == 81
    assert log_mel(np.zeros(SR, np.float32)).shape == (1, 128, n_frames(SR))  # [N] numpy is accepted


def test_silence_hits_the_floor_not_minus_inf():
    x = log_mel(torch.zeros(2, SR))
    assert torch.isfinite(x).all()
    assert torch.all(x == np.log10(FeatureConfig().amin))


def test_basis_is_librosas_and_follows_the_module_to_a_device():
    ref = librosa.filters.mel(sr=SR, n_fft=800, n_mels=128)
    assert torch.equal(mel_basis(), torch.from_numpy(ref))
    m = LogMel().to("meta")
    assert m.basis.device.type == "meta" and m.window.device.type == "meta"


def test_warp_factor_one_is_the_plain_transform(corpus_windows):
    w = torch.from_numpy(corpus_windows[:8])
    plain = log_mel(w)
    warped = log_mel(w, warp=torch.ones(8))
    torch.testing.assert_close(warped, plain, atol=1e-4, rtol=0)
    moved = log_mel(w, warp=torch.full((8,), 0.85))
    assert (moved - plain).abs().mean() > 0.1
    with pytest.raises(ValueError, match="one warp factor per example"):
        log_mel(w, warp=torch.ones(3))


def test_transform_is_differentiable_and_equal_with_grad(corpus_windows):
    w = torch.from_numpy(corpus_windows[:4]).clone().requires_grad_(True)
    out = LogMel()(w, torch.full((4,), 0.9))
    out.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    w2 = torch.from_numpy(corpus_windows[:4])
    torch.testing.assert_close(LogMel()(w.detach()), LogMel()(w2))
    torch.testing.assert_close(LogMel()(w).detach(), LogMel()(w2))  # the autograd path computes the same


def test_utterance_norm_pools_the_windows_of_one_utterance():
    rng = np.random.default_rng(0)
    wave = torch.from_numpy(rng.standard_normal((3, SR)).astype(np.float32)) * torch.tensor([[0.1], [1.0], [0.3]])
    cfg = FeatureConfig(norm="utterance")
    each = log_mel(wave, cfg)
    torch.testing.assert_close(each.mean(2), torch.zeros(3, 128), atol=1e-4, rtol=0)
    torch.testing.assert_close(each.std(2, unbiased=False), torch.ones(3, 128), atol=1e-3, rtol=0)
    grouped = log_mel(wave, cfg, groups=torch.tensor([7, 7, 2]))
    raw = log_mel(wave)
    pooled = torch.cat([raw[0], raw[1]], dim=1)  # utterance 7 = windows 0 and 1
    expect = (raw[0] - pooled.mean(1, keepdim=True)) / pooled.std(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(grouped[0], expect, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grouped[2], each[2], atol=1e-4, rtol=1e-4)


def test_dataset_stats_are_fitted_and_saved_with_the_module(corpus_windows):
    w = torch.from_numpy(corpus_windows[:16])
    m = LogMel(FeatureConfig(norm="dataset"))
    with pytest.raises(RuntimeError, match="fit_stats"):
        m(w)
    raw = m.raw(w)
    m.fit_stats([raw[:5], raw[5:]])  # streaming over chunks equals one pass
    torch.testing.assert_close(m.mean, raw.mean((0, 2)), atol=1e-4, rtol=0)
    out = m(w)
    torch.testing.assert_close(out.mean((0, 2)), torch.zeros(128), atol=1e-4, rtol=0)
    fresh = LogMel(FeatureConfig(norm="dataset"))
    fresh.load_state_dict(m.state_dict())
    assert set(m.state_dict()) == {"mean", "std", "fitted"}
    torch.testing.assert_close(fresh(w), out)


def test_config_round_trip_and_validation():
    cfg = FeatureConfig(norm="dataset", n_mels=64)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="amin"):
        FeatureConfig(amin=0)
    with pytest.raises(ValueError, match="norm"):
        FeatureConfig(norm="global")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    """Plain and warped log-Mel on CUDA equal the CPU values (speech-like harmonics plus noise)."""
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    f0 = rng.uniform(90, 250, (16, 1))
    voiced = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 30))
    w = torch.from_numpy((0.1 * voiced + 0.01 * rng.standard_normal((16, 2 * SR))).astype(np.float32))
    factors = torch.linspace(0.8, 1.2, 16)
    m = LogMel(FeatureConfig(norm="utterance"))
    cpu_plain, cpu_warp = m(w), m(w, factors)
    m = m.to("cuda")
    gpu_plain, gpu_warp = m(w.cuda()), m(w.cuda(), factors.cuda())
    assert gpu_plain.device.type == "cuda"
    torch.testing.assert_close(gpu_plain.cpu(), cpu_plain, atol=1e-3, rtol=0)
    torch.testing.assert_close(gpu_warp.cpu(), cpu_warp, atol=1e-3, rtol=0)
    gen = torch.Generator(device="cuda").manual_seed(0)
    from areaser.dsp.vtlp import sample_factors

    assert sample_factors(8, generator=gen, device="cuda").device.type == "cuda"

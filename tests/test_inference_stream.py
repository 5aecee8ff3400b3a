"""Streaming decode and windowing: the same samples and windows as the whole-file path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from areaser.data.segments import segment, stream_windows
from areaser.io.audio import AudioError, load_audio, stream_audio
from areaser.serve.backends import window_db


def _noise(rng: np.random.Generator, n: int, channels: int = 1) -> np.ndarray:
    y = 0.2 * rng.standard_normal((n, channels)).astype(np.float32)
    return y[:, 0] if channels == 1 else y


@pytest.mark.parametrize("sr, channels, fmt", [(44_100, 2, "wav"), (8_000, 1, "flac"), (16_000, 3, "wav")])
def test_stream_audio_equals_load_audio(
    tmp_path: Path, rng: np.random.Generator, sr: int, channels: int, fmt: str
) -> None:
    path = tmp_path / f"a.{fmt}"
    sf.write(path, _noise(rng, int(sr * 3.7) + 11, channels), sr)
    whole = load_audio(path)
    blocks = list(stream_audio(path, block_s=0.9))
    assert len(blocks) >= 4 and all(b.dtype == np.float32 and b.ndim == 1 and len(b) for b in blocks)
    # one streaming resampler over the blocks: no seams, same length and samples as one-shot soxr
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-5)


def test_stream_audio_refuses_what_load_audio_refuses(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16_000, dtype=np.float32), 16_000)
    nan = tmp_path / "nan.wav"
    y = np.full(16_000, 0.1, dtype=np.float32)
    y[12_000] = np.nan
    sf.write(nan, y, 16_000, subtype="FLOAT")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    for path, reason in [
        (silent, "silent"),
        (nan, "NaN"),
        (text, "not a readable audio file"),
        (tmp_path / "gone.wav", "file not found"),
    ]:
        with pytest.raises(AudioError) as e:
            list(stream_audio(path, block_s=0.25))
        assert str(path) in str(e.value) and reason in str(e.value)
    assert len(np.concatenate(list(stream_audio(silent, allow_silent=True)))) == 16_000
    with pytest.raises(AudioError, match="too long"):
        list(stream_audio(nan, max_seconds=0.5))


@pytest.mark.parametrize("n", [1, 700, 31_999, 32_000, 32_001, 38_400, 40_000, 97_531])
@pytest.mark.parametrize("block", [1_000, 6_400, 50_000])
def test_stream_windows_equal_segment(rng: np.random.Generator, n: int, block: int) -> None:
    y = _noise(rng, n)
    ref_w, ref_s = segment(y, 16_000, 2.0, 0.4, "pad")
    got = list(stream_windows((y[i : i + block] for i in range(0, n, block)), 16_000, 2.0, 0.4))
    assert [s for s, _ in got] == pytest.approx(list(ref_s))
    np.testing.assert_array_equal(np.stack([w for _, w in got]), ref_w)


def test_stream_windows_other_hops_and_zero_pad(rng: np.random.Generator) -> None:
    y = _noise(rng, 61_234)
    for hop_s in (0.25, 1.0, 2.0, 3.0):
        ref_w, ref_s = segment(y, 16_000, 2.0, hop_s, "pad")
        got = list(stream_windows(np.array_split(y, 7), 16_000, 2.0, hop_s))
        np.testing.assert_array_equal(np.stack([w for _, w in got]), ref_w)
    short = list(stream_windows([y[:5000]], 16_000, 2.0, 0.4, pad_mode="zero"))
    assert len(short) == 1 and np.all(short[0][1][5000:] == 0)
    assert list(stream_windows([], 16_000)) == []


def test_window_db() -> None:
    w = np.stack([np.full(100, 0.5), np.zeros(100), np.full(100, 1.0)]).astype(np.float32)
    np.testing.assert_allclose(window_db(w), [20 * np.log10(0.5), -200.0, 0.0], atol=1e-6)

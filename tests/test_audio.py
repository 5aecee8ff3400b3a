"""Audio I/O: real files of every defect a user can hand us."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from areaser.io.audio import AudioError, audio_info, load_audio, resample, write_audio


def tone(sr: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    y = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([y * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else y


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_load_formats_resample_to_16k(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"a.{fmt}"
    sf.write(path, tone(44_100, 0.5), 44_100)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 8000) <= 1
    assert np.max(np.abs(y)) <= 1.0
    # the tone survives resampling: spectral peak still at 440 Hz
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spec) * 16_000 / len(y) - 440) < 5


def test_multichannel_mixed_to_mono(tmp_path: Path) -> None:
    path = tmp_path / "six.wav"
    y6 = tone(16_000, 0.25, channels=6)
    sf.write(path, y6, 16_000, subtype="FLOAT")
    y = load_audio(path)
    np.testing.assert_allclose(y, y6.mean(axis=1), atol=1e-6)
    assert load_audio(path, mono=False).shape == (4000, 6)


def test_keep_native_rate(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, tone(22_050, 0.2), 22_050)
    assert len(load_audio(path, sr=None)) == int(22_050 * 0.2)


def _expect(path: Path, reason: str, **kw: object) -> None:
    with pytest.raises(AudioError) as e:
        load_audio(path, **kw)
    assert str(path) in str(e.value) and reason in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_inputs_name_file_and_reason(tmp_path: Path) -> None:
    _expect(tmp_path / "missing.wav", "file not found")
    _expect(tmp_path, "is a folder, not an audio file")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _expect(empty, "empty file")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 10)
    _expect(text, "not a readable audio file")
    lfs = tmp_path / "lfs.wav"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    _expect(lfs, "Git LFS pointer")
    zero_len = tmp_path / "zero.wav"
    sf.write(zero_len, np.zeros(0, np.float32), 16_000)
    _expect(zero_len, "zero length")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(1600, np.float32), 16_000)
    _expect(silent, "silent")
    assert load_audio(silent, allow_silent=True).shape == (1600,)
    nan = tmp_path / "nan.wav"
    y = tone(16_000, 0.1)
    y[10] = np.nan
    sf.write(nan, y, 16_000, subtype="FLOAT")
    _expect(nan, "NaN")
    long = tmp_path / "long.wav"
    sf.write(long, tone(16_000, 3.0), 16_000)
    _expect(long, "too long", max_seconds=2.0)


def test_audio_info_reads_header_only(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, tone(48_000, 1.5, channels=2), 48_000)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (48_000, 2, 72_000)
    assert info.duration_s == pytest.approx(1.5)


def test_write_audio_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.wav"
    write_audio(path, tone(16_000, 0.1), 16_000)
    assert sf.info(path).subtype == "PCM_16"
    before = path.read_bytes()
    with pytest.raises(Exception):
        write_audio(path, np.zeros((10, 2, 2)), 16_000)  # 3-D array: soundfile refuses it
    assert path.read_bytes() == before  # the old file survives a failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.wav"]


def test_resample_identity_and_length() -> None:
    y = tone(16_000, 0.5)
    assert resample(y, 16_000, 16_000) is y
    assert len(resample(y, 16_000, 8_000)) == 4000


def test_atomic_writes_get_normal_permissions(tmp_path: Path) -> None:
    """mkstemp's 0600 must not leak into what we write: new files follow the umask, old modes stay."""
    import os
    import stat

    from areaser.io.files import atomic_write_text

    mask = os.umask(0o022)
    try:
        new = atomic_write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        old = tmp_path / "old.txt"
        old.write_text("a")
        old.chmod(0o640)
        atomic_write_text(old, "b")
        assert stat.S_IMODE(old.stat().st_mode) == 0o640 and old.read_text() == "b"
    finally:
        os.umask(mask)

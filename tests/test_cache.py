"""Feature cache: reuse, stale configs and files never reused, crashes mid-write detected and rebuilt."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from areaser.audio import load_audio, write_audio
from areaser.cache import FeatureCache
from areaser.features import FeatureConfig, LogMel
from areaser.manifest import read_manifest
from areaser.segments import SegmentConfig, segment

SR = 16_000


@pytest.fixture
def wav(builtin_corpus, tmp_path) -> Path:
    """A private copy of one built-in corpus file (tests rewrite it)."""
    src = read_manifest(builtin_corpus / "manifest.csv").sort_values("duration_s").iloc[-1].path
    dst = tmp_path / "utt.wav"
    shutil.copy(src, dst)
    return dst


def entry_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*") if p.is_file())


def test_second_call_reads_instead_of_computing(wav, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    first = cache.get_or_compute(wav)
    assert (cache.computed, cache.hits) == (1, 0)
    second = cache.get_or_compute(wav)
    assert (cache.computed, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first, second)
    # a new instance (a new process) finds the entry on disk
    other = FeatureCache(tmp_path / "cache")
    np.testing.assert_array_equal(other.get_or_compute(wav), first)
    assert (other.computed, other.hits) == (0, 1)


def test_entry_holds_the_log_mel_of_the_windows(wav, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    entry = cache.get_entry(wav, train=False)
    y = load_audio(wav)
    windows, starts = segment(y, SR, 2.0, 0.4, "pad")
    expect = LogMel().raw(torch.from_numpy(np.ascontiguousarray(windows))).numpy()
    np.testing.assert_allclose(entry.features, expect, atol=1e-5)
    np.testing.assert_allclose(entry.starts_s, starts)
    assert entry.features.shape == (len(starts), 128, 81)
    # the training hop is another entry
    assert len(cache.get_or_compute(wav, train=True)) < len(entry.features)
    assert cache.computed == 2


def test_changed_config_is_never_served_stale(wav, tmp_path):
    d = tmp_path / "cache"
    base = FeatureCache(d).get_or_compute(wav)
    fewer = FeatureCache(d, FeatureConfig(n_mels=64))
    assert fewer.get_or_compute(wav).shape[1] == 64 and fewer.computed == 1
    dropped = FeatureCache(d, segment_config=SegmentConfig(policy="drop"))
    dropped.get_or_compute(wav)
    assert dropped.computed == 1
    # normalisation is applied after the cache: same entry, no recomputation
    normed = FeatureCache(d, FeatureConfig(norm="utterance"))
    np.testing.assert_array_equal(normed.get_or_compute(wav), base)
    assert normed.hits == 1 and normed.computed == 0


def test_changed_file_is_never_served_stale(wav, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    before = cache.get_or_compute(wav)
    y = load_audio(wav)
    write_audio(wav, 0.5 * y, SR)  # same length, same size on disk
    after = cache.get_or_compute(wav)
    assert cache.computed == 2
    assert np.abs(after - before).mean() > 0.1  # log10(0.25) = -0.6 where not floored


@pytest.mark.parametrize("damage", ["temp_file_left", "no_marker", "truncated", "bad_marker", "marker_from_other_data"])
def test_half_written_entry_is_detected_and_rebuilt(wav, tmp_path, damage):
    d = tmp_path / "cache"
    good = FeatureCache(d).get_or_compute(wav)
    data = next(p for p in entry_files(d) if p.suffix == ".safetensors")
    marker = data.with_suffix(".json")
    if damage == "temp_file_left":  # crash before the rename: the entry was never committed
        data.rename(data.parent / f".{data.name}.tmp.abc123.safetensors")
        marker.unlink()
    elif damage == "no_marker":  # crash between the data rename and the marker
        marker.unlink()
    elif damage == "truncated":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage == "bad_marker":
        marker.write_text("{not json")
    else:  # right size, wrong bytes
        blob = bytearray(data.read_bytes())
        blob[-100] ^= 0xFF
        data.write_bytes(bytes(blob))
    cache = FeatureCache(d)
    np.testing.assert_array_equal(cache.get_or_compute(wav), good)
    assert cache.computed == 1 and cache.hits == 0
    assert cache.rebuilt == (0 if damage == "temp_file_left" else 1)
    again = FeatureCache(d)
    again.get_or_compute(wav)
    assert again.hits == 1


def test_short_file_under_drop_gives_an_empty_entry(tmp_path):
    path = tmp_path / "short.wav"
    write_audio(path, 0.1 * np.sin(np.arange(SR) / 5.0), SR)
    cache = FeatureCache(tmp_path / "cache", segment_config=SegmentConfig(policy="drop"))
    assert cache.get_or_compute(path).shape == (0, 128, 81)
    assert cache.get_or_compute(path).shape == (0, 128, 81) and cache.hits == 1

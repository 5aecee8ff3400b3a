"""Segmentation: counts, edges and both short-utterance policies on real arrays."""

from __future__ import annotations

import numpy as np
import pytest

from areaser.data.segments import SegmentConfig, segment, segment_utterances, window_starts

SR = 16_000


def ramp(seconds: float) -> np.ndarray:
    """Samples equal to their own index: every window shows where it was cut."""
    return np.arange(int(round(seconds * SR)), dtype=np.float32)


def test_paper_drop_policy_counts_and_tail():
    y = ramp(5.5)
    w, s = segment(y, SR, 2.0, 1.0, "drop")
    assert w.shape == (4, 32000)  # starts 0, 1, 2, 3; the 0.5 s tail is discarded
    np.testing.assert_allclose(s, [0, 1, 2, 3])
    for row, start in zip(w, s):
        assert row[0] == start * SR and row[-1] == start * SR + 31999
    w, s = segment(y, SR, 2.0, 0.4, "drop")
    assert len(s) == int((5.5 - 2.0) // 0.4) + 1 == 9
    assert s[-1] + 2.0 <= 5.5


def test_drop_removes_utterances_of_two_seconds_or_less():
    assert segment(ramp(2.0), SR, 2.0, 1.0, "drop")[0].shape == (0, 32000)
    assert segment(ramp(1.3), SR, 2.0, 0.4, "drop")[0].shape == (0, 32000)
    assert segment(np.zeros(32001, np.float32), SR, 2.0, 1.0, "drop")[0].shape == (1, 32000)


def test_drop_windows_are_a_view_not_a_copy():
    y = ramp(6.0)
    w, _ = segment(y, SR, 2.0, 1.0, "drop")
    assert np.shares_memory(w, y)


def test_pad_keeps_short_utterance_and_repeats_it():
    y = ramp(0.5)
    w, s = segment(y, SR, 2.0, 0.4, "pad")
    assert w.shape == (1, 32000) and s.tolist() == [0.0]
    np.testing.assert_array_equal(w[0, :8000], y)
    np.testing.assert_array_equal(w[0, 8000:16000], y)  # repeat-padded, no silent block
    wz, _ = segment(y, SR, 2.0, 0.4, "pad", pad_mode="zero")
    assert np.all(wz[0, 8000:] == 0)


def test_pad_adds_a_window_aligned_to_the_end():
    y = ramp(5.5)
    w, s = segment(y, SR, 2.0, 1.0, "pad")
    np.testing.assert_allclose(s, [0, 1, 2, 3, 3.5])
    assert w[-1, -1] == len(y) - 1  # the last sample is covered
    # no extra window when the hops end exactly on the last sample
    w, s = segment(ramp(5.0), SR, 2.0, 1.0, "pad")
    np.testing.assert_allclose(s, [0, 1, 2, 3])


def test_every_sample_covered_under_pad():
    for seconds in (0.3, 2.0, 2.01, 3.77, 7.3):
        y = ramp(seconds)
        starts = window_starts(len(y), SR, 2.0, 0.4, "pad")
        covered = np.zeros(len(y), bool)
        for st in starts:
            covered[st : st + 32000] = True
        assert covered.all(), seconds


def test_min_s_and_window_starts_agree_with_segment():
    for seconds in (0.5, 1.0, 2.0, 2.5, 4.2):
        y = ramp(seconds)
        for policy in ("pad", "drop"):
            _, s = segment(y, SR, 2.0, 0.4, policy, min_s=1.0)
            np.testing.assert_allclose(s, window_starts(len(y), SR, 2.0, 0.4, policy, min_s=1.0) / SR)
            if seconds <= 1.0:
                assert len(s) == 0


def test_segment_utterances_table_traces_every_window():
    utts = [("a", ramp(5.5)), ("short", ramp(1.0)), ("b", ramp(2.0))]
    w, table = segment_utterances(utts, SR, SegmentConfig(), train=True)
    assert len(w) == len(table) == 5 + 1 + 1
    assert list(table.columns) == ["utt_id", "start_s", "end_s"]
    short = table[table.utt_id == "short"].iloc[0]
    assert short.start_s == 0 and short.end_s == pytest.approx(1.0)
    assert table.end_s.max() == pytest.approx(5.5)
    # the paper's policy drops the short and the 2.0 s utterance, from any split
    w, table = segment_utterances(utts, SR, SegmentConfig(policy="drop"), train=False)
    assert set(table.utt_id) == {"a"} and len(w) == 9


def test_bad_options_say_what_is_wrong():
    with pytest.raises(ValueError, match="policy"):
        SegmentConfig(policy="trim")
    with pytest.raises(ValueError, match="hop"):
        segment(ramp(3), SR, 2.0, 0.0)
    with pytest.raises(ValueError, match="1-D"):
        segment(np.zeros((2, 100)), SR)

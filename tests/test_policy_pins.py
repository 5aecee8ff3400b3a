"""Policy pins (issue #12): each test fails under a bug that the rest of the suite let through.

Every expected value here comes from a definition (paper.md's VTLP formula, librosa's
``power_to_db`` floor, TF's "same"/"valid" padding, the authors' 2 s rule, the macro-F1
definition, the IEMOCAP duplicate-label policy), written out by hand, never computed by the
code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from areaser.cli import app
from areaser.data.corpora import load_corpus
from areaser.data.manifest import make_manifest, read_manifest, write_manifest
from areaser.data.segments import SegmentConfig, segment, window_starts
from areaser.data.splits import get_protocol, select_utterances
from areaser.data.windows import load_windows
from areaser.dsp.features import FeatureConfig, LogMel, log_mel
from areaser.io.audio import load_audio
from areaser.models.cnn import ModelConfig, _conv_block, build_model
from areaser.runs.metrics import classification_metrics

SR = 16_000


def write_tone(path: Path, n_samples: int, hz: float = 440.0, amp: float = 0.3) -> Path:
    """``n_samples`` samples of a tone at 16 kHz, PCM 16 (the length is exact on disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(n_samples) / SR
    sf.write(str(path), amp * np.sin(2 * np.pi * hz * t), SR, subtype="PCM_16")
    assert sf.info(str(path)).frames == n_samples
    return path


# ------------------------------------------------------------------ 1. offline VTLP copies


def vtlp_by_hand(f: float, alpha: float, sr: float = SR, fhi: float = 4800.0) -> float:
    """paper.md's Jaitly & Hinton warp, written out again (not the package's function)."""
    half = sr / 2
    knee_image = fhi * min(alpha, 1.0)
    knee = knee_image / alpha
    if f <= knee:
        return alpha * f
    return half - (half - knee_image) / (half - knee) * (half - f)


def test_vtlp_by_hand_matches_worked_values():
    # hand arithmetic, so the helper itself is pinned: 1000 Hz at 0.8 -> 800 Hz (paper.md)
    assert vtlp_by_hand(1000, 0.8) == pytest.approx(800.0)
    # 6000 Hz at 0.8: knee 4800, image 3840: 8000 - 4160/3200 * 2000 = 5400
    assert vtlp_by_hand(6000, 0.8) == pytest.approx(5400.0)
    # 6000 Hz at 1.2: knee 4000, image 4800: 8000 - 3200/4000 * 2000 = 6400
    assert vtlp_by_hand(6000, 1.2) == pytest.approx(6400.0)


def peak_in(y: np.ndarray, lo: float, hi: float) -> float:
    """Frequency (Hz, 1 Hz grid) of the largest spectral peak of ``y`` between ``lo`` and ``hi``."""
    n = SR  # zero-padded to 1 s: a 1 Hz grid
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)), n=n))
    freqs = np.arange(len(spec)) * SR / n
    band = (freqs >= lo) & (freqs <= hi)
    return float(freqs[band][np.argmax(spec[band])])


def test_offline_vtlp_copies_each_get_their_own_factor_and_are_warped_by_it(tmp_path):
    """``areaser augment --copies 7``: 7 distinct factors in [0.8, 1.2], each copy's audio
    warped by the factor its manifest row records (tones below and above the knee)."""
    low_hz, high_hz = 1500.0, 6000.0
    n = SR // 2
    t = np.arange(n) / SR
    y = 0.3 * np.sin(2 * np.pi * low_hz * t) + 0.3 * np.sin(2 * np.pi * high_hz * t)
    src = tmp_path / "src" / "Ses01F_impro01_F000.wav"
    src.parent.mkdir(parents=True)
    sf.write(str(src), y, SR, subtype="FLOAT")
    manifest = make_manifest(
        [
            {
                "utt_id": "Ses01F_impro01_F000",
                "path": str(src),
                "corpus": "iemocap",
                "speaker": "Ses01F",
                "session": "Ses01",
                "gender": "F",
                "label": "neutral",
                "raw_label": "neu",
                "duration_s": n / SR,
                "improvised": True,
                "source_id": "",
            }
        ]
    )
    write_manifest(manifest, tmp_path / "m.csv")
    out = tmp_path / "aug"
    res = CliRunner().invoke(
        app, ["augment", str(tmp_path / "m.csv"), "--out", str(out), "--seed", "3", "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    copies = read_manifest(out / "manifest.csv")
    assert len(copies) == 7  # the paper's 7 copies, the command's default
    factors = np.array([float(v) for v in copies["vtlp_factor"]])
    assert len(set(np.round(factors, 4))) == 7, f"copies share a warp factor: {factors}"
    assert np.all((factors >= 0.8) & (factors <= 1.2)), factors
    # the test can tell the copies apart: factors at least 2 x tolerance apart at 1500 Hz
    gaps = np.diff(np.sort(factors))
    assert gaps.min() * low_hz > 2 * 8.0, "pick another seed: two factors too close to tell apart"
    tol = 8.0  # vtlp_stft's resolution: one bin of its 2048-point STFT is 7.8 Hz
    for row, alpha in zip(copies.itertuples(), factors):
        w = load_audio(row.path, SR)
        assert len(w) == n
        got_low = peak_in(w, 900, 2100)
        got_high = peak_in(w, 5000, 7000)
        assert abs(got_low - vtlp_by_hand(low_hz, alpha)) <= tol, (row.utt_id, alpha, got_low)
        assert abs(got_high - vtlp_by_hand(high_hz, alpha)) <= tol, (row.utt_id, alpha, got_high)
    # the written copies are distinct audio: their measured 1500 Hz images are all different
    lows = sorted(peak_in(load_audio(p, SR), 900, 2100) for p in copies["path"])
    assert min(np.diff(lows)) > 0


def test_offline_vtlp_factors_respect_a_narrow_range(tmp_path):
    """``--factor-min 0.9 --factor-max 1.1`` (Jaitly & Hinton's range): every copy inside it, all distinct."""
    src = write_tone(tmp_path / "src" / "Ses01F_impro01_F000.wav", SR // 4, hz=1000.0)
    manifest = make_manifest(
        [
            {
                "utt_id": "Ses01F_impro01_F000",
                "path": str(src),
                "corpus": "iemocap",
                "speaker": "Ses01F",
                "session": "Ses01",
                "gender": "F",
                "label": "neutral",
                "raw_label": "neu",
                "duration_s": 0.25,
                "improvised": True,
                "source_id": "",
            }
        ]
    )
    write_manifest(manifest, tmp_path / "m.csv")
    out = tmp_path / "aug"
    res = CliRunner().invoke(
        app,
        [
            "augment",
            str(tmp_path / "m.csv"),
            "--out",
            str(out),
            "--factor-min",
            "0.9",
            "--factor-max",
            "1.1",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    factors = [float(v) for v in read_manifest(out / "manifest.csv")["vtlp_factor"]]
    assert len(factors) == 7 and len(set(factors)) == 7
    assert all(0.9 <= a <= 1.1 for a in factors), factors


# ------------------------------------------------------------------ 2. the log-Mel floor


LOG10_FLOOR = -10.0  # log10(1e-10): librosa.power_to_db's amin=1e-10, in base-10 units (= -100 dB / 10)


def test_log_mel_of_digital_silence_is_the_librosa_floor():
    silence = np.zeros(2 * SR, dtype=np.float32)
    cfg = FeatureConfig()  # the defaults: log10, amin 1e-10
    assert cfg.log == "log10"
    outs = {
        "functional": log_mel(silence),
        "module": LogMel()(torch.from_numpy(silence)),
        "melwarp": LogMel()(torch.from_numpy(silence)[None], torch.tensor([0.9])),
    }
    wave = torch.zeros(1, 2 * SR, requires_grad=True)  # the autograd branch
    outs["autograd"] = LogMel()(wave).detach()
    for name, x in outs.items():
        assert x.shape == (1, 128, 81), name
        np.testing.assert_allclose(x.numpy(), LOG10_FLOOR, atol=1e-6, err_msg=name)
    # the same number in dB: 10 * log10(1e-10) = -100
    assert 10 * float(outs["functional"].max()) == pytest.approx(-100.0, abs=1e-5)


def test_log_mel_floor_only_where_a_band_has_no_power():
    """A 1 kHz tone for the first 0.5 s, then digital silence: the frames that see only the
    silent part sit exactly on the floor, the others well above it."""
    y = np.zeros(2 * SR, dtype=np.float32)
    y[: SR // 2] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(SR // 2) / SR)
    x = log_mel(y)[0]
    # centred frames of 800 samples, hop 400: frame j covers [400 j - 400, 400 j + 400)
    # frames with 400 j - 400 >= 8000 (j >= 21) see only zeros
    np.testing.assert_allclose(x[:, 21:].numpy(), LOG10_FLOOR, atol=1e-6)
    assert float(x[:, :19].max()) > LOG10_FLOOR + 5


# ------------------------------------------------------------------ 3. TF "same" / "valid" padding


def tf_same_pads(n: int, k: int, s: int = 1) -> tuple[int, int]:
    """TF SAME: total = max((ceil(n/s) - 1) * s + k - n, 0); before = total // 2, the extra after."""
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def test_tf_same_pads_by_hand():
    assert tf_same_pads(32, 10) == (4, 5)
    assert tf_same_pads(16, 2) == (0, 1)
    assert tf_same_pads(16, 8) == (3, 4)
    assert tf_same_pads(16, 4) == (1, 2)
    assert tf_same_pads(16, 3) == (1, 1)


def impulse_response(block: torch.nn.Sequential, kh: int, kw: int, h: int, w: int, r0: int, c0: int) -> np.ndarray:
    """Run ``block`` (pad + conv + BN + ReLU, 1 -> 1 channel) on a unit impulse at ``(r0, c0)``,
    with weights ``w[a, b] = 1 + a * kw + b`` (all distinct, positive) and an identity BN."""
    conv = block[1]
    with torch.no_grad():
        conv.weight.copy_((1.0 + torch.arange(kh * kw, dtype=torch.float32)).reshape(1, 1, kh, kw))
    block.eval()  # BN with its fresh running statistics (0, 1): x / sqrt(1 + eps)
    x = torch.zeros(1, 1, h, w)
    x[0, 0, r0, c0] = 1.0
    with torch.no_grad():
        y = block(x)[0, 0].numpy()
    return y * math.sqrt(1 + block[2].eps)


def expected_impulse(kh: int, kw: int, h: int, w: int, r0: int, c0: int) -> np.ndarray:
    """Cross-correlation of a unit impulse with ``w[a, b] = 1 + a * kw + b`` under TF SAME padding:
    out[i, j] = w[r0 + top - i, c0 + left - j] where that index exists."""
    top, _ = tf_same_pads(h, kh)
    left, _ = tf_same_pads(w, kw)
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            a, b = r0 + top - i, c0 + left - j
            if 0 <= a < kh and 0 <= b < kw:
                out[i, j] = 1 + a * kw + b
    return out


@pytest.mark.parametrize("kernel", [(10, 2), (2, 8), (4, 4), (3, 3)])
def test_conv_same_padding_puts_the_extra_pad_after(kernel):
    kh, kw = kernel
    h, w, r0, c0 = 32, 16, 20, 10
    got = impulse_response(_conv_block(1, 1, kernel, ModelConfig(batchnorm="batch")), kh, kw, h, w, r0, c0)
    assert got.shape == (h, w)  # "same": stride 1 keeps the size
    np.testing.assert_allclose(got, expected_impulse(kh, kw, h, w, r0, c0), rtol=1e-5, atol=1e-5)


def test_paper_conv1_kernels_impulse_by_hand():
    """The paper's conv1a k(10, 2) and conv1b k(2, 8) in the built model, positions written out."""
    model = build_model("paper", channels=(1, 1, 1, 1, 1), n_mels=32)
    h, w, r0, c0 = 32, 16, 20, 10
    a = impulse_response(model.conv1a, 10, 2, h, w, r0, c0)
    # k(10, 2): 4 rows padded above, 5 below; 0 columns left, 1 right. Impulse at (20, 10) reaches
    # rows 20 + 4 - 9 .. 20 + 4 = 15..24 and columns 10 - 1 .. 10 = 9..10
    rows, cols = np.nonzero(a)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (15, 24, 9, 10)
    assert a[20, 10] == pytest.approx(1 + 4 * 2 + 0)  # w[4, 0]
    assert a[15, 9] == pytest.approx(1 + 9 * 2 + 1)  # w[9, 1]: the last kernel row and column
    assert a[24, 10] == pytest.approx(1.0)  # w[0, 0]
    b = impulse_response(model.conv1b, 2, 8, h, w, r0, c0)
    # k(2, 8): 0 rows above, 1 below; 3 columns left, 4 right: rows 19..20, columns 6..13
    rows, cols = np.nonzero(b)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (19, 20, 6, 13)
    assert b[20, 10] == pytest.approx(1 + 0 * 8 + 3)  # w[0, 3]
    assert b[19, 6] == pytest.approx(1 + 1 * 8 + 7)  # w[1, 7]


@pytest.mark.parametrize(
    "n_mels, frames, expect",
    [
        (32, 81, (16, 20)),  # rows 64 -> 32 -> 16; columns 81 -> 40 -> 20 (same: 81 -> 41 -> 21)
        (35, 83, (17, 20)),  # rows 70 -> 35 -> 17 (same: 35 -> 18); columns 83 -> 41 -> 20 (same: 42 -> 21)
    ],
)
def test_max_pooling_is_keras_valid_not_same(n_mels, frames, expect):
    """Keras ``MaxPool2D((2, 2))`` (the authors' code) pads 'valid': floor(n / 2) at each pool;
    'same' would be ceil(n / 2). Frequency concat doubles the rows first."""
    model = build_model("cnn", channels=(2, 2, 2, 2, 3), n_mels=n_mels).eval()
    with torch.no_grad():
        fmap = model.feature_map(torch.randn(1, n_mels, frames))
    assert tuple(fmap.shape) == (1, 3, *expect)


# ------------------------------------------------------------------ 4. the 2 s boundary


# the authors' area_train.py: ``if (t * RATE >= len(wav_data)): continue`` (2 s *or less* dropped),
# then windows while ``index + t * RATE < len(wav_data)``: 32000 samples dropped, 32001 kept (one window)
AUTHORS_KEEP = {31_999: False, 32_000: False, 32_001: True}


@pytest.fixture
def boundary_tree(tmp_path) -> Path:
    """A tiny IEMOCAP tree, improvised, 4class-exc: three neutral files around 2 s, one long file per other class."""
    root = tmp_path / "iemocap"
    lines = []
    utts = [
        ("Ses01F_impro01_F000", "neu", 31_999),
        ("Ses01F_impro01_F001", "neu", 32_000),
        ("Ses01F_impro01_F002", "neu", 32_001),
        ("Ses01F_impro01_M000", "exc", 40_000),
        ("Ses01F_impro01_M001", "sad", 40_000),
        ("Ses01F_impro01_M002", "ang", 40_000),
    ]
    for i, (uid, raw, n) in enumerate(utts):
        write_tone(root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / f"{uid}.wav", n, hz=300 + 50 * i)
        lines.append(f"[{3 * i:.4f} - {3 * i + n / SR:.4f}]\t{uid}\t{raw}\t[2.5000, 2.5000, 2.5000]\n\n")
    ev = root / "Session1" / "dialog" / "EmoEvaluation"
    ev.mkdir(parents=True)
    (ev / "Ses01F_impro01.txt").write_text("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n" + "".join(lines))
    return root


def test_xu2021_drops_utterances_of_2s_or_less(boundary_tree, tmp_path):
    scan = load_corpus("iemocap", boundary_tree, progress=False)
    path = write_manifest(scan.manifest, tmp_path / "manifest.csv")  # through the CSV, as the CLI does
    df = read_manifest(path)
    kept = set(select_utterances(df, get_protocol("xu2021"))["utt_id"])
    for n, uid in zip(AUTHORS_KEEP, ("Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_F002")):
        assert (uid in kept) == AUTHORS_KEEP[n], (n, uid)
    assert {"Ses01F_impro01_M000", "Ses01F_impro01_M001", "Ses01F_impro01_M002"} <= kept


def test_drop_segments_cut_at_the_authors_2s_boundary(boundary_tree):
    wav = boundary_tree / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    for n, name in zip(AUTHORS_KEEP, ("F000", "F001", "F002")):
        y = load_audio(wav / f"Ses01F_impro01_{name}.wav", SR)
        assert len(y) == n
        want = 1 if AUTHORS_KEEP[n] else 0  # 32001 samples: one window at 0 (0 + 32000 < 32001)
        for hop in (1.0, 0.4):  # the paper's train and test hops
            windows, starts = segment(y, SR, 2.0, hop, "drop")
            assert len(windows) == want and len(starts) == want, (n, hop)
            assert list(window_starts(n, SR, 2.0, hop, "drop")) == [0] * want
    # the whole loader, from the files: the two utterances of 2 s or less give no windows
    scan = load_corpus("iemocap", boundary_tree, progress=False)
    df = scan.manifest.assign(y=0)
    for train in (True, False):
        ws = load_windows(df, SegmentConfig(policy="drop"), train=train)
        assert ws.dropped == 2
        assert not {"Ses01F_impro01_F000", "Ses01F_impro01_F001"} & set(ws.utterances["utt_id"])
        assert "Ses01F_impro01_F002" in set(ws.utterances["utt_id"])
    # 40000 samples: train hop 16000 -> starts 0 only (16000 + 32000 = 48000 > 40000);
    # test hop 6400 -> 0, 6400 (38400 < 40000)
    assert list(window_starts(40_000, SR, 2.0, 1.0, "drop")) == [0]
    assert list(window_starts(40_000, SR, 2.0, 0.4, "drop")) == [0, 6400]


# ------------------------------------------------------------------ 5. macro-F1 over present classes


def test_macro_f1_and_ua_average_over_reference_classes_only():
    # classes 0..3; class 3 is predicted once but never in the reference; class 1 is never predicted
    y_true = [0, 0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 0, 3, 0, 2, 2]
    # class 0: TP 3, FP 1 (a 1 read as 0), FN 1 (a 0 read as 3): P = R = 3/4, F1 = 3/4
    # class 1: TP 0: F1 = 0, recall 0
    # class 2: TP 1, FP 1, FN 0: P = 1/2, R = 1, F1 = 2 * 1/2 * 1 / (3/2) = 2/3
    # class 3: absent from the reference: no recall, left out of the averages
    m = classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    assert m["macro_f1"] == pytest.approx(17 / 36)  # (3/4 + 0 + 2/3) / 3
    assert m["macro_f1"] != pytest.approx(17 / 48)  # what averaging over all 4 classes would give
    assert m["ua"] == pytest.approx(7 / 12)  # (3/4 + 0 + 1) / 3
    assert m["ua"] != pytest.approx(7 / 16)
    assert m["wa"] == pytest.approx(4 / 7)
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------ 6. IEMOCAP duplicate label lines


def _line(uid: str, raw: str, start: float) -> str:
    return f"[{start:.4f} - {start + 2.1:.4f}]\t{uid}\t{raw}\t[2.5000, 2.5000, 2.5000]\nC-E1:\tNeutral;\t()\n\n"


def test_iemocap_duplicate_label_lines(tmp_path):
    """Identical repeats collapse silently; a conflicting repeat warns, naming file and utterance,
    and the FIRST label is kept."""
    root = tmp_path / "iemocap"
    wav = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    for i, uid in enumerate(("Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_F001")):
        write_tone(wav / f"{uid}.wav", SR // 5, hz=300 + 70 * i)
    ev = root / "Session1" / "dialog" / "EmoEvaluation"
    ev.mkdir(parents=True)
    (ev / "Ses01F_impro01.txt").write_text(
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        + _line("Ses01F_impro01_F000", "neu", 1.0)
        + _line("Ses01F_impro01_M000", "ang", 4.0)
        + _line("Ses01F_impro01_F000", "neu", 1.0)  # identical repeat
        + _line("Ses01F_impro01_M000", "sad", 4.0)  # conflicting repeat
        + _line("Ses01F_impro01_F001", "exc", 7.0)
    )
    scan = load_corpus("iemocap", root, progress=False)
    df = scan.manifest.set_index("utt_id")
    assert sorted(df.index) == ["Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M000"]
    assert df.loc["Ses01F_impro01_M000", "raw_label"] == "ang"  # the first label, not the last
    assert df.loc["Ses01F_impro01_M000", "label"] == "angry"
    assert df.loc["Ses01F_impro01_F000", "raw_label"] == "neu"
    assert not any("Ses01F_impro01_F000" in w for w in scan.warnings), scan.warnings  # silent
    conflict = [w for w in scan.warnings if "Ses01F_impro01_M000" in w]
    assert len(conflict) == 1, scan.warnings
    assert "Ses01F_impro01.txt" in conflict[0] and "first label kept" in conflict[0]
    assert not any("Ses01F_impro01_M000" in s.path or "labelled" in s.reason for s in scan.skipped)


def test_iemocap_conflicting_label_in_another_file_warns_and_keeps_the_first(tmp_path):
    root = tmp_path / "iemocap"
    write_tone(root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav", SR // 5)
    ev = root / "Session1" / "dialog" / "EmoEvaluation"
    ev.mkdir(parents=True)
    header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    (ev / "Ses01F_impro01.txt").write_text(header + _line("Ses01F_impro01_F000", "neu", 1.0))
    (ev / "Ses01F_impro01_b.txt").write_text(header + _line("Ses01F_impro01_F000", "sad", 1.0))  # read second
    (ev / "Ses01F_impro01_c.txt").write_text(header + _line("Ses01F_impro01_F000", "neu", 1.0))  # same: silent
    scan = load_corpus("iemocap", root, progress=False)
    assert scan.manifest.set_index("utt_id").loc["Ses01F_impro01_F000", "raw_label"] == "neu"
    conflict = [w for w in scan.warnings if "Ses01F_impro01_F000" in w]
    assert len(conflict) == 1, scan.warnings
    assert "Ses01F_impro01_b.txt" in conflict[0] and "first label kept" in conflict[0]

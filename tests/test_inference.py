"""Recognizer and `areaser predict`: real audio through the real model, streaming and batched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from areaser.cli import app
from areaser.data.segments import segment
from areaser.io.audio import AudioError, load_audio
from areaser.serve.inputs import expand_inputs
from areaser.serve.recognizer import InferenceConfig, Recognizer

CLASSES = ("neutral", "happy", "sad", "angry")


# the cnn preset, slimmed: the inference path is under test here, not the model
TINY = {"channels": [4, 8, 8, 8, 8]}


def make_random_run(run_dir: Path, model: str = "cnn", overrides: dict | None = None, seed: int = 0) -> Path:
    """A run directory in `areaser train`'s format holding a randomly initialised model."""
    from areaser.runs.checkpoint import run_paths, save_weights
    from areaser.runs.config import build_modules, config_with

    overrides = TINY if overrides is None else overrides
    cfg = config_with(model=model, model_overrides=overrides, manifest="unused.csv").to_dict()
    torch.manual_seed(seed)
    features, net = build_modules(cfg, len(CLASSES))
    state = {
        **{f"features.{k}": v for k, v in features.state_dict().items()},
        **{f"model.{k}": v for k, v in net.state_dict().items()},
    }
    save_weights(run_paths(run_dir)["best"], state, {"config": cfg, "classes": list(CLASSES)})
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_run(tmp_path_factory.mktemp("run") / "random-cnn")


@pytest.fixture(scope="module")
def rec(run_dir: Path) -> Recognizer:
    return Recognizer.load(run_dir)


@pytest.fixture(scope="module")
def files(builtin_corpus: Path) -> list[Path]:
    df = pd.read_csv(builtin_corpus / "manifest.csv")
    return [builtin_corpus / p for p in df["path"][:6]]


def _reference(run_dir: Path, y: np.ndarray, hop_s: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Window probabilities the plain way: whole signal, segment(), LogMel, model, softmax."""
    from areaser.runs.checkpoint import load_run

    run = load_run(run_dir)
    windows, starts = segment(y, 16_000, 2.0, hop_s, "pad")
    with torch.no_grad():
        p = torch.softmax(run.model(run.features(torch.from_numpy(np.ascontiguousarray(windows)))), -1).numpy()
    return p, starts


def test_load_takes_window_hop_and_classes_from_the_run(rec: Recognizer) -> None:
    assert rec.classes == CLASSES and rec.sr == 16_000
    assert (rec.config.win_s, rec.config.hop_s, rec.config.decision) == (2.0, 0.4, "prob")
    assert rec.with_config(hop_s=1.0).config.hop_s == 1.0 and rec.config.hop_s == 0.4


def test_predict_equals_whole_file_reference(rec: Recognizer, run_dir: Path, files: list[Path]) -> None:
    path = files[0]
    pred = rec.with_config(block_s=0.7, batch_size=5).predict(path)  # many blocks and batches
    ref, starts = _reference(run_dir, load_audio(path))
    assert [w.start_s for w in pred.timeline] == pytest.approx(list(starts))
    np.testing.assert_allclose(np.stack([w.probabilities for w in pred.timeline]), ref, atol=1e-5)
    np.testing.assert_allclose(pred.probabilities, ref.mean(0), atol=1e-5)
    assert pred.label == CLASSES[int(ref.mean(0).argmax())]
    assert pred.duration_s == pytest.approx(sf.info(str(path)).duration, abs=1e-4)
    assert pred.timeline[-1].end_s == pytest.approx(pred.duration_s)
    d = json.loads(json.dumps(pred.to_dict()))
    assert set(d) >= {"label", "probabilities", "timeline", "duration_s"} and len(d["timeline"]) == len(starts)


def test_the_default_paper_model(tmp_path: Path, files: list[Path]) -> None:
    """The `paper` preset (2-D area attention, which works in blocks on several threads) through the same path."""
    run = make_random_run(tmp_path / "paper", model="paper")  # slim channels, the full 2-D area attention
    y = np.resize(load_audio(files[3]), 10 * 16_000)  # 10 s: 21 windows, enough blocks for worker threads
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pred = Recognizer.load(run).predict(y)
        ref, starts = _reference(run, y)
    finally:
        torch.set_num_threads(threads)
    assert len(pred.timeline) == len(starts) == 21
    np.testing.assert_allclose(np.stack([w.probabilities for w in pred.timeline]), ref, atol=1e-5)


def test_any_rate_channels_and_arrays(rec: Recognizer, files: list[Path], tmp_path: Path) -> None:
    y = load_audio(files[1])
    base = rec.predict(y)
    stereo = np.stack([y, y], axis=1)
    sf.write(tmp_path / "stereo48k.flac", np.stack([_resample(y, 48_000)] * 2, axis=1), 48_000)
    from_file = rec.predict(tmp_path / "stereo48k.flac")
    assert from_file.label == base.label
    np.testing.assert_allclose(from_file.probabilities, base.probabilities, atol=5e-3)  # two resamplings
    np.testing.assert_allclose(rec.predict(stereo).probabilities, base.probabilities, atol=1e-6)
    pcm = (y * 32767).astype(np.int16)
    np.testing.assert_allclose(rec.predict(pcm, sample_rate=16_000).probabilities, base.probabilities, atol=1e-3)
    with pytest.raises(ValueError, match="sample_rate is for arrays"):
        rec.predict(files[1], sample_rate=16_000)
    for bad, reason in [(np.zeros(16_000), "silent"), (np.full(100, np.nan), "NaN"), (np.zeros((0,)), "shape")]:
        with pytest.raises(AudioError, match=reason):
            rec.predict(bad)


def _resample(y: np.ndarray, sr: int) -> np.ndarray:
    from areaser.io.audio import resample

    return resample(y, 16_000, sr)


def test_predict_many_batches_across_files_and_reports_bad_ones(
    rec: Recognizer, files: list[Path], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    sources = [files[0], bad, files[1], tmp_path / "missing.wav", files[2]]
    one_by_one = {str(p): rec.predict(p) for p in (files[0], files[1], files[2])}
    results = list(rec.with_config(batch_size=7).predict_many(sources))
    assert [r.source for r in results] == [str(s) for s in sources]
    assert [r.ok for r in results] == [True, False, True, False, True]
    assert str(bad) in results[1].error and "not a readable audio file" in results[1].error
    assert "file not found" in results[3].error
    for r in results:
        if r.ok:
            np.testing.assert_allclose(r.probabilities, one_by_one[r.source].probabilities, atol=1e-5)
    with pytest.raises(AudioError, match="not a readable"):
        list(rec.predict_many(sources, errors="raise"))


def test_silence_skipping(rec: Recognizer, files: list[Path], tmp_path: Path, rng: np.random.Generator) -> None:
    speech = load_audio(files[0])[: 3 * 16_000]
    hush = (1e-5 * rng.standard_normal(8 * 16_000)).astype(np.float32)  # about -100 dBFS
    y = np.concatenate([speech, hush, speech])
    full = rec.with_config(hop_s=1.0).predict(y)
    gated = rec.with_config(hop_s=1.0, silence_db=-60.0).predict(y)
    assert gated.skipped >= 5 and len(gated.timeline) + gated.skipped == len(full.timeline)
    for w in gated.timeline:  # no kept window lies wholly inside the quiet part
        assert w.start_s < 3.0 or w.end_s > 11.0
    with pytest.raises(AudioError, match="below the silence threshold of -60 dBFS"):
        rec.with_config(silence_db=-60.0).predict(hush)
    with pytest.raises(ValueError, match="negative"):
        InferenceConfig(silence_db=10)


def test_logits_decision_is_softmax_of_mean_logit(run_dir: Path, files: list[Path]) -> None:
    from areaser.runs.checkpoint import load_run

    run = load_run(run_dir)
    y = load_audio(files[2])
    windows, _ = segment(y, 16_000, 2.0, 0.4, "pad")
    with torch.no_grad():
        logits = run.model(run.features(torch.from_numpy(np.ascontiguousarray(windows))))
    want = torch.softmax(logits.mean(0), -1).numpy()
    got = Recognizer.load(run_dir, decision="logits").predict(y).probabilities
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_expand_inputs(files: list[Path], tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for i, f in enumerate(files[:3]):
        (tmp_path / "d" / ("sub" if i else "") / f"{i}.wav").write_bytes(f.read_bytes())
    (tmp_path / "d" / "notes.md").write_text("not audio")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# two files\n{files[0]}\nd/0.wav\n\n")
    got = expand_inputs([tmp_path / "d", lst, tmp_path / "nope.wav"])
    assert got == [
        tmp_path / "d" / "0.wav",
        tmp_path / "d" / "sub" / "1.wav",
        tmp_path / "d" / "sub" / "2.wav",
        files[0],
        tmp_path / "d" / "0.wav",
        tmp_path / "nope.wav",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert expand_inputs([empty]) == [empty]  # an input still: scoring it gives its error row (is a folder)


# ----------------------------------------------------------------------------- the command


def test_cli_predict_table_csv_jsonl_and_errors(
    run_dir: Path, rec: Recognizer, files: list[Path], tmp_path: Path
) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    args = ["predict", str(run_dir), str(files[0]), str(bad), str(files[1]), "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output  # some failed
    want = rec.predict(files[0])
    assert want.label in r.stdout and "2 files under" in r.stdout
    assert f"error: {bad}: not a readable audio file" in r.stderr and "1 of 3 file(s) could not be scored" in r.stderr

    out = tmp_path / "out.csv"
    r = runner.invoke(app, args + ["-o", str(out)])
    assert r.exit_code == 1 and f"wrote {out}" in r.stdout
    df = pd.read_csv(out)
    assert list(df["path"]) == [str(files[0]), str(bad), str(files[1])]
    assert df.loc[0, "label"] == want.label and df.loc[0, "p_neutral"] == pytest.approx(want.probabilities[0], abs=1e-4)
    assert pd.isna(df.loc[1, "label"]) and "not a readable audio file" in df.loc[1, "error"]
    assert pd.isna(df.loc[0, "error"]) and list(df.columns[-5:]) == [
        "duration_s",
        "windows",
        "skipped",
        "warning",
        "error",
    ]
    assert pd.isna(df.loc[0, "warning"])  # speech: no not-speech warning

    out = tmp_path / "timeline.jsonl"
    r = runner.invoke(
        app, ["predict", str(run_dir), str(files[0]), "--timeline", "--hop", "1.0", "-o", str(out), "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    (line,) = [json.loads(s) for s in out.read_text().splitlines()]
    assert line["timeline"][1]["start_s"] == 1.0 and line["label"] in CLASSES

    r = runner.invoke(app, ["predict", str(run_dir), str(files[0]), "--timeline", "--no-progress"])
    assert r.exit_code == 0 and r.stdout.count(want.label) >= 1 and "start s" in r.stdout
    r = runner.invoke(app, ["predict", str(tmp_path / "no-run"), str(files[0])])
    assert r.exit_code == 2 and "no trained model here" in r.stderr
    r = runner.invoke(app, ["predict", str(run_dir), str(files[0]), "-o", str(tmp_path / "x.txt")])
    assert r.exit_code == 2 and ".csv or .jsonl" in r.stderr


# ----------------------------------------------------------------------------- flat memory

_RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from areaser.serve.recognizer import Recognizer
    rec = Recognizer.load(sys.argv[1], hop_s=5.0, batch_size=8)
    def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    rec.predict(sys.argv[2])
    before = peak()
    p = rec.predict(sys.argv[3])
    print(before, peak(), p.duration_s, len(p.timeline))
    """
)


def _write_long(path: Path, minutes: float, sr: int = 22_050, channels: int = 2) -> None:
    """A long stereo recording written block by block (noise bursts with quiet gaps)."""
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_16") as f:
        for _ in range(int(minutes * 60 / 10)):
            block = 0.1 * rng.standard_normal((10 * sr, channels)) * (rng.random() > 0.2)
            f.write(block.astype(np.float32))


def _rss_growth(run_dir: Path, tmp_path: Path, minutes: float) -> tuple[float, float]:
    """Peak RSS growth (MiB) from scoring a 3-minute file to scoring a ``minutes`` long one."""
    from areaser.data.segments import window_starts

    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    _write_long(short, 3.0)
    _write_long(long, minutes)
    # a fixed mmap threshold: glibc's adaptive one makes the peak depend on allocation history
    # (tens of MiB either way), which would hide what is measured here
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(run_dir), str(short), str(long)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
        env=env,
    ).stdout.split()
    before, after, duration, n = map(float, out)
    assert duration == pytest.approx(minutes * 60, abs=0.01)
    assert n == len(window_starts(int(minutes * 60 * 16_000), 16_000, 2.0, 5.0))
    return after - before, long.stat().st_size / 2**20


@pytest.mark.slow  # 18 s; with the hour-long twin below
def test_memory_stays_flat_on_a_ten_minute_file(run_dir: Path, tmp_path: Path) -> None:
    growth, size_mib = _rss_growth(run_dir, tmp_path, 10.0)
    # decoding it whole would take twice its 16-bit size as float32 (about 100 MiB) before resampling
    assert growth < 20, f"peak RSS grew by {growth:.1f} MiB on a {size_mib:.0f} MiB file"


@pytest.mark.slow
def test_memory_stays_flat_on_an_hour_long_file(run_dir: Path, tmp_path: Path) -> None:
    growth, size_mib = _rss_growth(run_dir, tmp_path, 60.0)
    assert growth < 20, f"peak RSS grew by {growth:.1f} MiB on a {size_mib:.0f} MiB file"

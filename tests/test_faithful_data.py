"""The data the faithful preset trains on under ``xu2021``, as the authors' scripts made it (issue #13).

Expected values come from the authors' code as docs/paper.md and their scripts state it, never from the
code under test: ``area_train.py`` trains on its train and dev files plus one VTLP copy of each
(``.5`` of the 7 ``vtlpAug.py`` wrote, made by an nlpaug that warped time: ``legacy-time``), cuts
``while index + 32000 < n`` with hops ``int((2 - 1) * 16000)`` and ``int((2 - 1.6) * 16000) = 6399``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from areaser.data.manifest import read_manifest, write_manifest
from areaser.data.windows import load_windows
from areaser.runs.config import config_with
from areaser.train.folds import prepare_fold

SR = 16_000
# the authors' label map (LABEL_DICT1: excitement -> happy, the real 'hap' left out)
AUTHORS_MAP = {"neutral": "neutral", "excited": "happy", "sad": "sad", "angry": "angry"}
CLASSES = ("neutral", "happy", "sad", "angry")


def _own_manifest(builtin_corpus: Path, folder: Path) -> Path:
    """The built-in corpus' manifest written into ``folder`` (absolute audio paths), so copies land there."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    write_manifest(read_manifest(builtin_corpus / "manifest.csv"), path)
    return path


def _paper_selection(manifest: Path) -> pd.DataFrame:
    """By hand from the CSV: improvised, the authors' 4 labels, longer than 2 s (the xu2021 selection)."""
    raw = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    raw = raw[(raw["source_id"] == "") & (raw["improvised"] == "true") & raw["label"].isin(AUTHORS_MAP)].copy()
    raw["class"] = raw["label"].map(AUTHORS_MAP)
    raw["duration_s"] = raw["duration_s"].astype(float)
    return raw


def _faithful(manifest: Path, **overrides):
    return config_with(None, preset="faithful", manifest=str(manifest), protocol="xu2021", **overrides).resolved()


# ----------------------------------------------------------------------------- 1. one legacy-time copy


def test_faithful_trains_on_each_original_once_plus_one_legacy_time_copy(builtin_corpus: Path, tmp_path: Path) -> None:
    manifest = _own_manifest(builtin_corpus, tmp_path / "corpus")
    c = _faithful(manifest)
    assert c.vtlp.impl == "legacy-time"  # offline copies as the authors' nlpaug made them, not on-the-fly melwarp
    prep = prepare_fold(c)
    train, dev, test = (prep.parts[k] for k in ("train", "dev", "test"))
    originals = train[train["source_id"] == ""]
    copies = train[train["source_id"] != ""]
    # every original once: the fold's train and dev utterances (their dev file is read into training)
    assert originals["utt_id"].is_unique
    assert set(originals["utt_id"]) == set(prep.fold.train) | set(prep.fold.dev)
    # exactly one copy of each, tied to it by source_id
    assert len(copies) == len(originals)
    assert copies["source_id"].value_counts().eq(1).all()
    assert set(copies["source_id"]) == set(originals["utt_id"])
    # dev and test are scored on original recordings only
    assert (dev["source_id"] == "").all() and (test["source_id"] == "").all()
    # made by the preset itself, in a cache beside the manifest
    cache = tmp_path / "corpus" / "vtlp-copies"
    assert all(Path(p).resolve().is_relative_to(cache.resolve()) for p in copies["path"])
    # legacy-time: librosa.stft(n_fft 2048, hop 512, centred) has 1 + n // 512 frames and the inverse STFT
    # without a length gives 512 * (frames - 1) samples; an STFT-frequency warp keeps the length n
    src = dict(zip(originals["utt_id"], originals["path"]))
    for utt, source, path in zip(copies["utt_id"], copies["source_id"], copies["path"]):
        n = sf.info(src[source]).frames
        assert sf.info(path).frames == 512 * (n // 512), utt


def test_faithful_copies_are_cached_and_reused(builtin_corpus: Path, tmp_path: Path) -> None:
    manifest = _own_manifest(builtin_corpus, tmp_path / "corpus")
    cache = tmp_path / "corpus" / "vtlp-copies"  # the default: beside the manifest
    c = _faithful(manifest)

    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(cache)): (p.stat().st_mtime_ns, p.stat().st_ino) for p in cache.rglob("*") if p.is_file()
        }

    first = prepare_fold(c)
    made = snapshot()
    wavs = [k for k in made if k.endswith(".wav")]
    n_train = len(set(first.fold.train) | set(first.fold.dev))
    assert len(wavs) >= n_train  # copies of the selection: every fold's training part is among them
    again = prepare_fold(c)
    assert snapshot() == made  # nothing rewritten: same files, same mtimes, same inodes
    pd.testing.assert_frame_equal(again.parts["train"], first.parts["train"])
    # other settings are another cache entry; the first stays untouched
    prepare_fold(_faithful(manifest, **{"vtlp.factor_range": [0.9, 1.1]}))
    after = snapshot()
    assert {k: v for k, v in after.items() if k in made} == made
    assert len(after) > len(made)


def test_cli_train_and_cv_take_offline_copies(builtin_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import areaser.train.crossval
    import areaser.train.lifecycle
    from areaser.cli.app import app

    seen = []
    monkeypatch.setattr(areaser.train.lifecycle, "train", lambda cfg, **kw: seen.append(cfg))
    monkeypatch.setattr(areaser.train.crossval, "cross_validate", lambda cfg, *a, **kw: seen.append(cfg))
    runner = CliRunner()
    manifest = str(builtin_corpus / "manifest.csv")
    a, b = str(tmp_path / "a" / "manifest.csv"), str(tmp_path / "b" / "manifest.csv")
    for cmd in ("train", "cv"):
        seen.clear()
        args = [cmd, manifest, "--preset", "faithful", "-p", "xu2021", "--copies-manifest", a]
        r = runner.invoke(app, [*args, "--copies-manifest", b, "--copies", "2"])
        assert r.exit_code == 0, r.output
        c = seen[-1].resolved()
        assert c.extra_manifests == [a, b] and c.copies == 2 and not c.vtlp_copies  # given copies, none made
        r = runner.invoke(app, [cmd, manifest, "--copies", "3", "--set", "vtlp.impl=stft"])
        assert r.exit_code == 0, r.output
        c = seen[-1].resolved()
        assert c.vtlp_copies == 3 and c.vtlp.impl == "stft" and c.extra_manifests == []
        r = runner.invoke(app, [cmd, manifest, "--preset", "faithful", "-p", "xu2021"])
        assert r.exit_code == 0, r.output
        assert seen[-1].resolved().vtlp_copies == 1  # the preset's own copy
        r = runner.invoke(app, [cmd, manifest, "--copies", "2"])  # on-the-fly melwarp makes no copies
        assert r.exit_code == 2 and "--copies 2" in r.output


# ----------------------------------------------------------------------------- 2. dev fed back into training


def test_faithful_trains_on_train_plus_dev(builtin_corpus: Path) -> None:
    manifest = builtin_corpus / "manifest.csv"
    n = len(_paper_selection(manifest)[lambda d: d["duration_s"] > 2.0])
    # xu2021: 20 % test, dev = 10 % of the rest; the authors trained on all of the rest (80 %)
    n_test = int(round(0.2 * n))
    n_dev = int(round(0.1 * (n - n_test)))
    faithful = _faithful(manifest, **{"vtlp.impl": "none"})  # no copies: originals only
    prep = prepare_fold(faithful)
    train_ids = set(prep.parts["train"]["utt_id"])
    assert len(prep.parts["train"]) == n - n_test
    assert len(prep.parts["dev"]) == n_dev and set(prep.parts["dev"]["utt_id"]) <= train_ids  # still scored
    assert not train_ids & set(prep.parts["test"]["utt_id"])
    assert faithful.train_on_dev is True  # explicit in the config
    honest = prepare_fold(config_with(None, manifest=str(manifest), protocol="xu2021").resolved())
    assert len(honest.parts["train"]) == n - n_test - n_dev
    assert not set(honest.parts["train"]["utt_id"]) & set(honest.parts["dev"]["utt_id"])


# ----------------------------------------------------------------------------- 3. the authors' windows


LENGTHS = (32000, 32001, 44798, 48000, 48001)
# `while index + 32000 < n`, hop int((2 - 1) * 16000) = 16000 in training, int((2 - 1.6) * 16000) = 6399 at test;
# `if 32000 >= n: continue` (2 s or less: no window)
THEIR_TRAIN = {32000: [], 32001: [0], 44798: [0], 48000: [0], 48001: [0, 16000]}
THEIR_TEST = {32000: [], 32001: [0], 44798: [0, 6399], 48000: [0, 6399, 12798], 48001: [0, 6399, 12798]}


@pytest.fixture
def sized_files(tmp_path: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    rows, audio = [], {}
    for n in LENGTHS:
        y = (0.1 * rng.standard_normal(n)).astype(np.float32)
        path = tmp_path / f"u{n}.wav"
        sf.write(path, y, SR, subtype="FLOAT")
        audio[f"u{n}"] = sf.read(path, dtype="float32")[0]
        rows.append({"utt_id": f"u{n}", "path": str(path), "y": 0, "speaker": "s", "class": "neutral"})
    return pd.DataFrame(rows), audio


def _starts(df: pd.DataFrame, segments, train: bool, audio: dict[str, np.ndarray]) -> dict[int, list[int]]:
    """Window starts per utterance (samples from its first sample), checked against the audio."""
    ws = load_windows(df, segments, train=train, sr=SR)
    out = {n: [] for n in LENGTHS}
    for u, utt in enumerate(ws.utterances["utt_id"]):
        idx = np.flatnonzero(ws.utt_index.numpy() == u)
        offsets = ws.offsets.numpy()[idx]
        starts = offsets - offsets[0]
        y = audio[utt]
        for i, s in zip(idx, starts):
            np.testing.assert_array_equal(ws.waves(torch.tensor([i]))[0].numpy(), y[s : s + 32000])
        out[len(y)] = [int(s) for s in starts]
    return out


def test_faithful_windows_are_the_authors_loops(sized_files, builtin_corpus: Path) -> None:
    df, audio = sized_files
    seg = _faithful(builtin_corpus / "manifest.csv").segments
    assert (_starts(df, seg, True, audio), _starts(df, seg, False, audio)) == (THEIR_TRAIN, THEIR_TEST)


def test_default_keeps_its_own_windows(sized_files, builtin_corpus: Path) -> None:
    from areaser.data.segments import window_starts

    df, audio = sized_files
    seg = config_with(None, manifest=str(builtin_corpus / "manifest.csv")).resolved().segments
    # 'pad': hops of round(0.4 * 16000) = 6400 while the window fits (start + 32000 <= n), then one
    # window aligned to the end when the hops do not reach it; a 2 s utterance is one window
    test = _starts(df, seg, False, audio)
    assert test[44798] == [0, 6400, 12798] and test[48000] == [0, 6400, 12800, 16000] and test[32000] == [0]
    assert _starts(df, seg, True, audio)[48000] == [0, 16000]
    # the plain 'drop' policy keeps its inclusive boundary: 48000 samples at a 1 s hop give 2 windows
    assert window_starts(48000, SR, 2.0, 1.0, "drop").tolist() == [0, 16000]


# ----------------------------------------------------------------------------- 4. the selection line


def test_xu2021_on_iemocap_prints_the_selection_per_class(builtin_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    import areaser.train.lifecycle
    from areaser.train.lifecycle import train

    class Stop(Exception):
        pass

    def stop(*a, **kw):
        raise Stop

    monkeypatch.setattr(
        areaser.train.lifecycle, "load_windows", stop
    )  # everything up to loading the audio, no training
    manifest = _own_manifest(builtin_corpus, tmp_path / "corpus")  # its copies are made beside this one
    sel = _paper_selection(manifest)
    kept = sel["class"].value_counts()
    longer = sel.loc[sel["duration_s"] > 2.0, "class"].value_counts()
    lines: list[str] = []
    c = _faithful(manifest, out_dir=str(tmp_path / "runs"), progress=False)
    with pytest.raises(Stop):
        train(c, log=lines.append, resume=False)
    line = next((s for s in lines if "xu2021" in s and "IEMOCAP" in s), None)
    assert line is not None, lines
    head, tail = line.split("longer than 2 s")
    assert ", ".join(f"{k} {int(kept.get(k, 0))}" for k in CLASSES) + f" = {len(sel)} utterances" in head
    assert "2,659" in head and "1,099" in head
    assert ", ".join(f"{k} {int(longer.get(k, 0))}" for k in CLASSES) + f" = {int(longer.sum())}" in tail
    assert "2,117" in tail
    assert any("dev is not held out" in s for s in lines)  # train_on_dev said on the console

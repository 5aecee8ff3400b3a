"""`areaser augment`: copies on disk tied to their source, atomic, resumable, settings-checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from areaser.cli import app
from areaser.data.manifest import read_manifest, write_manifest
from areaser.dsp.vtlp import VTLPConfig, copy_factor
from areaser.io.audio import audio_info, load_audio

runner = CliRunner()


@pytest.fixture
def small_manifest(builtin_corpus, tmp_path) -> Path:
    df = read_manifest(builtin_corpus / "manifest.csv").sort_values("duration_s").iloc[:2]
    path = tmp_path / "two.csv"
    write_manifest(df, path)
    return path


def run(*args: str):
    return runner.invoke(app, ["augment", *args, "--no-progress"])


def test_augment_writes_copies_tied_to_their_sources(small_manifest, tmp_path):
    out = tmp_path / "aug"
    res = run(str(small_manifest), "--copies", "2", "--out", str(out), "--seed", "5")
    assert res.exit_code == 0, res.output
    assert "4 copies written" in res.output
    src = read_manifest(small_manifest).set_index("utt_id")
    copies = read_manifest(out / "manifest.csv")
    assert len(copies) == 4
    for row in copies.itertuples():
        source = src.loc[row.source_id]
        assert row.utt_id in {f"{row.source_id}__vtlp1", f"{row.source_id}__vtlp2"}
        assert (row.speaker, row.session, row.label) == (source.speaker, source.session, source.label)
        k = int(row.utt_id.rsplit("vtlp", 1)[1])
        factor = float(row.vtlp_factor)  # extra columns come back as text; 4 decimals in the CSV
        assert factor == pytest.approx(copy_factor(5, row.source_id, k, VTLPConfig()), abs=1e-4)
        assert 0.8 <= factor <= 1.2
        info = audio_info(row.path)
        assert info.sample_rate == 16_000 and info.duration_s == pytest.approx(source.duration_s, abs=1e-3)
        y, y0 = load_audio(row.path), load_audio(source.path)
        assert not np.allclose(y, y0, atol=1e-2)  # really warped
    assert not list(out.rglob(".*.tmp.*"))  # nothing half-written left behind


def test_augment_resumes_and_refuses_other_settings(small_manifest, tmp_path):
    out = tmp_path / "aug"
    assert run(str(small_manifest), "--copies", "2", "--out", str(out)).exit_code == 0
    wavs = sorted((out / "wav").glob("*.wav"))
    stamps = {p: p.stat().st_mtime_ns for p in wavs}
    wavs[0].unlink()  # as if the run had stopped before this copy
    res = run(str(small_manifest), "--copies", "2", "--out", str(out))
    assert res.exit_code == 0 and "1 copies written, 3 kept" in res.output
    assert all(p.stat().st_mtime_ns == stamps[p] for p in wavs[1:])
    res = run(str(small_manifest), "--copies", "2", "--out", str(out), "--seed", "1")
    assert res.exit_code == 2 and "other settings" in res.output
    # copies fed back in are not copied again
    res = run(str(out / "manifest.csv"), "--copies", "1", "--out", str(tmp_path / "again"))
    assert res.exit_code == 0 and "0 copies written" in res.output


def test_augment_legacy_time_and_bad_impl(small_manifest, tmp_path):
    res = run(str(small_manifest), "--copies", "1", "--out", str(tmp_path / "legacy"), "--impl", "legacy-time")
    assert res.exit_code == 0, res.output
    assert len(read_manifest(tmp_path / "legacy" / "manifest.csv")) == 2
    res = run(str(small_manifest), "--out", str(tmp_path / "x"), "--impl", "melwarp")
    assert res.exit_code == 2 and "--impl" in res.output

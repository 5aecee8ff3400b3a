"""Offline VTLP copies of a corpus: warped audio files plus a manifest (the authors' augmentation)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from areaser.data.manifest import make_manifest, write_manifest
from areaser.dsp.vtlp import VTLPConfig, copy_factor, warp_waveform
from areaser.io.audio import DEFAULT_SR, audio_info, load_audio, write_audio
from areaser.io.files import atomic_write_json

if TYPE_CHECKING:
    import pandas as pd


def copy_settings(config: VTLPConfig, seed: int = 0) -> dict:
    """What fixes the audio of an offline copy besides its source: recorded as ``augment.json``."""
    return {"impl": config.impl, "factor_range": list(config.factor_range), "fhi": config.fhi, "seed": seed}


def copies_folder(root: str | Path, config: VTLPConfig, seed: int = 0) -> Path:
    """The cache folder of copies made with these settings under ``root``: ``root/<impl>-<digest>``.

    The digest is of :func:`copy_settings`, so runs with the same settings find (and reuse) the same
    copies, and other settings never meet them. The number of copies is not part of the key: copy ``k``
    of an utterance is the same file whatever the number asked for.
    """
    key = json.dumps(copy_settings(config, seed), sort_keys=True)
    return Path(root) / f"{config.impl}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def augment_manifest(
    manifest: "pd.DataFrame",
    out_dir: str | Path,
    copies: int = 7,
    config: VTLPConfig = VTLPConfig(impl="stft"),
    seed: int = 0,
    progress: bool = False,
) -> "pd.DataFrame":
    """Write ``copies`` VTLP copies of every utterance in ``manifest`` under ``out_dir``.

    Copies are ``out_dir/wav/<utt_id>__vtlp<k>.wav`` (k = 1..copies), written atomically;
    ``out_dir/manifest.csv`` lists only the copies, each with ``source_id`` = its source's
    ``utt_id``, the source's speaker, session and label (so a split keeps copies with their
    source), and the factor in ``vtlp_factor``. Rows that are copies already are skipped.
    Idempotent: finished copies are kept, so an interrupted run resumes; settings are
    recorded in ``out_dir/augment.json`` and a run with other settings is refused. A call that
    finds everything in place leaves every file as it was (``augment.json`` and ``manifest.csv`` are
    replaced only when their content changes), so a cache folder (:func:`copies_folder`) is only read.

    Returns the manifest of the copies; ``attrs['written']`` counts the files this call wrote.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    if config.impl not in ("stft", "legacy-time"):
        raise ValueError(f"augment writes audio: impl must be 'stft' or 'legacy-time', got {config.impl!r}")
    out_dir = Path(out_dir)
    settings = copy_settings(config, seed)
    meta_path = out_dir / "augment.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != settings:
            shown = ", ".join(f"{k}={v}" for k, v in old.items())
            raise ValueError(f"{out_dir}: holds copies made with other settings ({shown}); use another output folder")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(meta_path, settings)

    sources = make_manifest(manifest)
    sources = sources[sources["source_id"] == ""]
    rows, written = [], 0
    jobs = [(r, k) for r in sources.to_dict("records") for k in range(1, copies + 1)]
    ctx = _progress(progress, len(jobs))
    with ctx as bar:
        task = bar.add_task("VTLP copies", total=len(jobs)) if bar is not None else None
        cached: tuple[str, np.ndarray] | None = None
        for row, k in jobs:
            utt_id = f"{row['utt_id']}__vtlp{k}"
            path = out_dir / "wav" / f"{utt_id}.wav"
            alpha = copy_factor(seed, row["utt_id"], k, config)
            if not path.is_file():  # atomic writes: an existing file is a finished copy
                if cached is None or cached[0] != row["utt_id"]:
                    cached = (row["utt_id"], load_audio(row["path"], DEFAULT_SR))
                y = warp_waveform(cached[1], DEFAULT_SR, alpha, config)
                peak = float(np.max(np.abs(y))) if len(y) else 0.0
                if peak > 1.0:  # rescale rather than clip
                    y = y * (0.99 / peak)
                write_audio(path, y, DEFAULT_SR)
                written += 1
            rows.append(
                {
                    **row,
                    "utt_id": utt_id,
                    "path": str(path),
                    "source_id": row["utt_id"],
                    "duration_s": _duration(path),
                    "vtlp_factor": round(alpha, 4),
                }
            )
            if bar is not None:
                bar.advance(task)
    out = make_manifest(pd.DataFrame(rows, columns=list(sources.columns) + ["vtlp_factor"]))
    target = out_dir / "manifest.csv"
    fresh = write_manifest(out, out_dir / f".manifest-{os.getpid()}-{os.urandom(4).hex()}.csv")  # workers: own name
    if target.is_file() and target.read_bytes() == fresh.read_bytes():
        fresh.unlink()  # unchanged: the cached manifest stays as it is
    else:
        os.replace(fresh, target)
    out.attrs["written"] = written
    return out


def _duration(path: Path) -> float:

    return audio_info(path).duration_s


def _progress(enabled: bool, total: int):

    if not enabled:
        return contextlib.nullcontext(None)

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
    )

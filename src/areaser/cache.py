"""On-disk cache of the log-Mel features of un-augmented windows.

Every epoch after the first would otherwise decode, cut and transform the same audio again.
An entry holds one utterance's windows, ``float32 [n_windows, n_mels, frames]`` before
normalisation (normalising is cheap and its statistics change per training split), plus the
window times, in one safetensors file.

Key: a hash of the audio file's *content* (blake2b of its bytes), the spectral fields of the
:class:`~areaser.features.FeatureConfig`, the windowing (window, hop, policy, padding) and a
format version. Content rather than ``(path, size, mtime)`` because a copy or move of the corpus
keeps its entries, and a file rewritten with the same size and a preserved mtime (``rsync -t``,
``tar x``) cannot hit a stale entry. Hashing is done once per file per process (memoised on
path, size, mtime and inode) and costs about a millisecond per second of 16 kHz audio.

Crash safety: the data file is written to a temporary name and renamed, then a JSON marker
``<key>.json`` holding the data file's size and checksum is written the same way, last. An entry
counts only if its marker exists and matches the data file; anything else (a leftover temporary
file, a truncated data file, a missing or unreadable marker) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .audio import load_audio
from .features import FeatureConfig, LogMel
from .fileio import atomic_write_bytes, atomic_write_json
from .segments import SegmentConfig, segment

__all__ = ["FeatureCache", "CachedWindows", "file_hash", "CACHE_VERSION"]

CACHE_VERSION = 1
_CHUNK = 1 << 20


def file_hash(path: str | os.PathLike) -> str:
    """blake2b (128-bit) hex digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class CachedWindows:
    """One utterance's cached windows: ``features [n, n_mels, frames]``, ``starts_s`` and ``end_s`` ``[n]``."""

    features: np.ndarray
    starts_s: np.ndarray
    end_s: np.ndarray


class FeatureCache:
    """Log-Mel features of un-augmented windows, computed once per (file content, config).

    Parameters
    ----------
    cache_dir : folder for the entries (created on first write).
    feature_config, segment_config : what to compute; normalisation fields are ignored (the
        cache stores raw log-Mel, normalise with :meth:`LogMel.normalize`).
    batch_size : windows per :class:`LogMel` call when computing.

    Counters ``computed`` (entries computed), ``hits`` (entries read back) and ``rebuilt``
    (damaged entries found and recomputed) count this instance's work.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        feature_config: FeatureConfig = FeatureConfig(),
        segment_config: SegmentConfig = SegmentConfig(),
        batch_size: int = 256,
    ):
        self.cache_dir = Path(cache_dir)
        self.feature_config = replace(feature_config, norm="none")
        self.segment_config = segment_config
        self.batch_size = batch_size
        self.computed = 0
        self.hits = 0
        self.rebuilt = 0
        self._hashes: dict[tuple, str] = {}
        self._transform = LogMel(self.feature_config)

    # ------------------------------------------------------------------ keys
    def content_hash(self, path: str | os.PathLike) -> str:
        """The content hash of ``path``, memoised per process on (path, size, mtime_ns, inode)."""
        st = os.stat(path)
        memo = (os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if memo not in self._hashes:
            self._hashes[memo] = file_hash(path)
        return self._hashes[memo]

    def key(self, path: str | os.PathLike, train: bool = False) -> str:
        """Entry key of ``path`` windowed with the train (``True``) or test hop."""
        seg = self.segment_config
        material = {
            "version": CACHE_VERSION,
            "audio": self.content_hash(path),
            "features": json.loads(self.feature_config.spectral_key()),
            "segments": {"win_s": seg.win_s, "hop_s": seg.hop_s(train), "policy": seg.policy,
                         "min_s": seg.min_s, "pad_mode": seg.pad_mode},
        }
        blob = json.dumps(material, sort_keys=True).encode("utf-8")
        return hashlib.blake2b(blob, digest_size=16).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.cache_dir / key[:2]
        return folder / f"{key}.safetensors", folder / f"{key}.json"

    # ------------------------------------------------------------------ read / write
    def get_entry(self, path: str | os.PathLike, train: bool = False) -> CachedWindows:
        """The windows of ``path`` from the cache, computing and storing them if absent or damaged."""
        key = self.key(path, train)
        data_path, marker_path = self._paths(key)
        entry = self._read(data_path, marker_path)
        if entry is not None:
            self.hits += 1
            return entry
        if data_path.exists() or marker_path.exists():
            self.rebuilt += 1
        entry = self._compute(path, train)
        self._write(entry, data_path, marker_path, path)
        self.computed += 1
        return entry

    def get_or_compute(self, path: str | os.PathLike, train: bool = False) -> np.ndarray:
        """``float32 [n_windows, n_mels, frames]`` raw log-Mel of ``path``'s windows."""
        return self.get_entry(path, train).features

    def prefetch(self, paths: Iterable[str | os.PathLike], train: bool = False, progress: bool = False) -> None:
        """Make sure every file in ``paths`` has an entry (with a rich progress bar if asked)."""
        paths = list(paths)
        if not progress:
            for p in paths:
                self.get_entry(p, train)
            return
        from rich.progress import track

        for p in track(paths, description="caching features"):
            self.get_entry(p, train)

    def _read(self, data_path: Path, marker_path: Path) -> CachedWindows | None:
        from safetensors.numpy import load

        try:
            marker = json.loads(marker_path.read_text())
            blob = data_path.read_bytes()
            if len(blob) != marker["bytes"] or hashlib.blake2b(blob, digest_size=16).hexdigest() != marker["checksum"]:
                return None
            arrays = load(blob)
            entry = CachedWindows(arrays["features"], arrays["starts_s"], arrays["end_s"])
        except Exception:  # missing marker, bad JSON, truncated or foreign file: all mean rebuild
            return None
        cfg = self.feature_config
        if entry.features.ndim != 3 or entry.features.shape[1] != cfg.n_mels:
            return None
        return entry

    def _write(self, entry: CachedWindows, data_path: Path, marker_path: Path, source: str | os.PathLike) -> None:
        from safetensors.numpy import save

        blob = save(
            {"features": entry.features, "starts_s": entry.starts_s, "end_s": entry.end_s},
            metadata={"source": os.fspath(source), "version": str(CACHE_VERSION)},
        )
        # a stale marker must never vouch for the new data file while it is being replaced
        marker_path.unlink(missing_ok=True)
        atomic_write_bytes(data_path, blob)
        atomic_write_json(
            marker_path,
            {"bytes": len(blob), "checksum": hashlib.blake2b(blob, digest_size=16).hexdigest(),
             "source": os.fspath(source), "version": CACHE_VERSION},
        )

    @torch.no_grad()
    def _compute(self, path: str | os.PathLike, train: bool) -> CachedWindows:
        cfg, seg = self.feature_config, self.segment_config
        y = load_audio(path, cfg.sr)
        windows, starts = segment(y, cfg.sr, seg.win_s, seg.hop_s(train), seg.policy,
                                  min_s=seg.min_s, pad_mode=seg.pad_mode)
        parts = [
            self._transform.raw(torch.from_numpy(np.ascontiguousarray(windows[i:i + self.batch_size])))
            for i in range(0, len(windows), self.batch_size)
        ]
        if parts:
            feats = torch.cat(parts).numpy()
        else:
            n_frames = self._transform.raw(torch.zeros(1, windows.shape[1])).shape[-1]
            feats = np.zeros((0, cfg.n_mels, n_frames), dtype=np.float32)
        end_s = np.minimum(starts + seg.win_s, len(y) / cfg.sr)
        return CachedWindows(np.ascontiguousarray(feats, dtype=np.float32), starts.astype(np.float64), end_s.astype(np.float64))

"""Training data in memory: utterances -> 2 s windows -> batches.

Audio is loaded once per utterance (:func:`areaser.io.audio.load_audio`) and cut with
:func:`areaser.data.segments.segment`. A :class:`WindowSet` keeps each utterance's samples
once and every window as an offset into them, so overlapping windows cost no memory;
a batch is gathered with one indexing op. Features are *not* computed here: the
training step computes log-Mel on the batch (so ``melwarp`` VTLP is drawn per example),
while evaluation sets are turned into log-Mel once (:meth:`WindowSet.precompute`).

:class:`SERDataModule` serves a fold to Lightning. Its training sampler is a
``DistributedSampler`` in every case (one replica without DDP): the order of an epoch is
a function of ``(seed, epoch)`` only, so a resumed run sees exactly the batches an
uninterrupted one would. Evaluation loaders are never sharded: under DDP every process
scores the whole dev set, so the metrics are those of the whole set, not of a shard.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler

from areaser.data.segments import SegmentConfig, segment
from areaser.io.audio import load_audio

__all__ = ["WindowSet", "load_windows", "SERDataModule"]


@dataclass
class WindowSet:
    """Windows of a set of utterances.

    ``audio``: float32 ``[S]`` all utterances' samples end to end; ``offsets``: int64
    ``[n]`` where each window starts in ``audio``; ``win``: window length in samples;
    ``utt_index``: int64 ``[n]`` row of ``utterances`` each window comes from; ``labels``:
    int64 ``[n]`` its class index. ``utterances`` has one row per utterance that gave at
    least one window (``utt_id``, ``speaker``, ``class``, ``y``, ...). ``feats``: raw
    log-Mel ``[n, n_mels, T]`` once :meth:`precompute` ran.
    """

    audio: torch.Tensor
    offsets: torch.Tensor
    win: int
    utt_index: torch.Tensor
    labels: torch.Tensor
    utterances: pd.DataFrame
    dropped: int = 0  # utterances that gave no window (policy 'drop')
    feats: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def n_utts(self) -> int:
        return len(self.utterances)

    def waves(self, idx: torch.Tensor) -> torch.Tensor:
        """Windows ``idx [B]`` as float32 ``[B, win]``."""
        return self.audio[self.offsets[idx, None] + torch.arange(self.win)]

    @torch.no_grad()
    def precompute(self, features: torch.nn.Module, batch_size: int = 256) -> "WindowSet":
        """Store raw (un-normalised, un-warped) log-Mel of every window: ``features.raw``."""
        device = next(iter(features.buffers())).device
        out = [
            features.raw(self.waves(torch.arange(i, min(i + batch_size, len(self)))).to(device)).cpu()
            for i in range(0, len(self), batch_size)
        ]
        self.feats = torch.cat(out) if out else torch.zeros(0)
        return self


def load_windows(df: pd.DataFrame, segments: SegmentConfig, train: bool, sr: int = 16_000, progress=None) -> WindowSet:
    """Load and cut the utterances of ``df`` (rows with ``path`` and ``y``).

    ``train`` picks the training hop (``segments.train_hop_s``) or the test hop.
    ``progress``: optional callable ``(n_done, n_total)`` called after each utterance.
    Raises :class:`areaser.io.audio.AudioError` naming the first unreadable file.
    """
    hop = segments.hop_s(train)
    win = int(round(segments.win_s * sr))
    chunks, offsets, utt_index, labels, kept = [], [], [], [], []
    pos = 0
    for i, row in enumerate(df.itertuples(index=False)):
        y = load_audio(row.path, sr)
        windows, starts_s = segment(
            y, sr, segments.win_s, hop, segments.policy, min_s=segments.min_s, pad_mode=segments.pad_mode
        )
        if progress is not None:
            progress(i + 1, len(df))
        if not len(windows):
            continue
        if len(y) < win:  # a padded window is new audio: store it instead of the utterance
            y = np.ascontiguousarray(windows[0])
            starts = np.zeros(1, dtype=np.int64)
        else:
            starts = np.round(starts_s * sr).astype(np.int64)
        chunks.append(y)
        offsets.append(pos + starts)
        utt_index.append(np.full(len(starts), len(kept), dtype=np.int64))
        labels.append(np.full(len(starts), int(row.y), dtype=np.int64))
        kept.append(i)
        pos += len(y)
    cat = lambda xs, dt: torch.from_numpy(np.concatenate(xs).astype(dt)) if xs else torch.zeros(0, dtype=torch.long)  # noqa: E731
    return WindowSet(
        audio=cat(chunks, np.float32) if chunks else torch.zeros(0),
        offsets=cat(offsets, np.int64),
        win=win,
        utt_index=cat(utt_index, np.int64),
        labels=cat(labels, np.int64),
        utterances=df.iloc[kept].reset_index(drop=True),
        dropped=len(df) - len(kept),
    )


class _TrainBatch:
    """Collate window indices into ``(waves [B, win], labels [B], idx [B])`` (picklable)."""

    def __init__(self, ws: WindowSet):
        self.ws = ws

    def __call__(self, idx: list[int]):
        i = torch.as_tensor(idx, dtype=torch.long)
        return self.ws.waves(i), self.ws.labels[i], i


class _EvalBatch:
    """Collate window indices into ``(raw log-Mel [B, n_mels, T], idx [B])``."""

    def __init__(self, ws: WindowSet):
        self.ws = ws

    def __call__(self, idx: list[int]):
        i = torch.as_tensor(idx, dtype=torch.long)
        return self.ws.feats[i], i


class SERDataModule(L.LightningDataModule):
    """One fold, in memory: ``train`` windows (waves) and ``eval_sets`` (precomputed log-Mel).

    ``eval_sets`` is an ordered dict ``{"dev": ws, "test": ws}``; the validation loop runs
    one loader per entry in that order.
    """

    def __init__(
        self,
        train: WindowSet,
        eval_sets: dict[str, WindowSet],
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        eval_batch_size: int = 128,
    ):
        super().__init__()
        self.train_set = train
        self.eval_sets = eval_sets
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        # DistributedSampler pads the last round so every replica takes the same number of steps
        sampler = DistributedSampler(
            range(len(self.train_set)), num_replicas=world, rank=rank, shuffle=True, seed=self.seed
        )
        return DataLoader(
            range(len(self.train_set)),
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=_TrainBatch(self.train_set),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader(
                range(len(ws)),
                batch_size=self.eval_batch_size,
                shuffle=False,
                collate_fn=_EvalBatch(ws),
                num_workers=self.num_workers,
            )
            for ws in self.eval_sets.values()
        ]

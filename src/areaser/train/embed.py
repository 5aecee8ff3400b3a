"""Embeddings: a trained model's pooled representation of a recording, and the cv map of them.

An utterance's embedding is the model's penultimate layer, the pooled vector its classifier reads
(:meth:`areaser.models.cnn.AreaAttentionCNN.embed`), averaged over the utterance's windows:

* of any recording: :meth:`areaser.serve.recognizer.Recognizer.embed` (the windows ``predict`` scores),
  written by ``areaser embed MODEL INPUT... -o emb.npz|emb.csv`` (:func:`write_embeddings`);
* of a run's own test utterances: :func:`embed_windows` on the windows its evaluation scores.

:func:`write_embedding_map` draws the test utterances of every fold of a cross-validation in 2-D
(t-SNE, fixed ``random_state``), coloured by label and marked by speaker: ``CV/embedding_map.png``,
linked from the cv report. Each fold's utterances are embedded by that fold's own model, so the
embeddings are standardised per fold (zero mean, unit variance per dimension) before t-SNE; the
folds' spaces are still not aligned, so the map is read within folds more than across them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.manifold import TSNE

from areaser.data.windows import load_windows
from areaser.io.files import atomic_write_bytes, atomic_write_text
from areaser.models.baselines import is_baseline
from areaser.runs.checkpoint import load_run, read_header, run_paths
from areaser.runs.config import ConfigError, TrainConfig
from areaser.runs.reports import plot_embedding_map
from areaser.train.testsets import _run_test_set

__all__ = ["embed_windows", "run_test_embeddings", "embedding_map", "write_embedding_map", "write_embeddings"]

MAP_FILE = "embedding_map.png"
RANDOM_STATE = 0


@torch.no_grad()
def embed_windows(features: torch.nn.Module, model: torch.nn.Module, ws, batch_size: int = 128) -> np.ndarray:
    """Per-utterance embeddings ``[n_utts, D]`` float32 of a :class:`areaser.data.windows.WindowSet`.

    Each window goes through ``model.embed`` as evaluation scores it (eval mode, the stored log-Mel
    normalised, or the waves through ``features``); an utterance's embedding is its windows' mean.
    """
    features.eval()
    model.eval()
    out = []
    for i in range(0, len(ws), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(ws)))
        x = ws.feats[idx] if ws.feats is not None else features.raw(ws.waves(idx))
        out.append(model.embed(features.normalize(x)).double())
    e = torch.cat(out)
    idx = torch.as_tensor(ws.utt_index, dtype=torch.long)
    counts = torch.bincount(idx, minlength=ws.n_utts).double()
    mean = torch.zeros(ws.n_utts, e.shape[1], dtype=torch.float64).index_add_(0, idx, e) / counts[:, None]
    return mean.float().numpy()


def run_test_embeddings(run_dir: str | os.PathLike, seed: int = 0):
    """``(embeddings [n, D], utterances)`` of a neural run's test utterances (those of ``split.json``).

    ``utterances``: the test rows (``utt_id``, ``speaker``, ``class``, ...) in embedding order. A model
    random at evaluation is embedded under torch seed ``seed``. Raises ConfigError as
    :func:`areaser.train.evaluate.evaluate_run` does (split, manifest or audio not usable).
    """
    run_dir = Path(run_dir)
    c = TrainConfig.load(run_paths(run_dir)["config"]).resolved()
    run = load_run(run_dir)
    prep = _run_test_set(run_dir, c, run.classes)
    ws = load_windows(prep.parts["test"], c.segments, train=False, sr=c.features.sr)
    ws.precompute(run.features)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        emb = embed_windows(run.features, run.model, ws)
    return emb, ws.utterances.reset_index(drop=True)


def embedding_map(embeddings: Sequence[np.ndarray], random_state: int = RANDOM_STATE) -> np.ndarray:
    """2-D t-SNE coordinates ``[sum n_i, 2]`` of groups of embeddings (one group per fold), each standardised."""
    parts = []
    for e in embeddings:
        e = np.asarray(e, dtype=np.float64)
        sd = e.std(0)
        parts.append((e - e.mean(0)) / np.where(sd > 0, sd, 1.0))
    x = np.concatenate(parts)
    if len(x) < 3:
        raise ValueError(f"a map needs at least 3 utterances, got {len(x)}")
    perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=random_state)
    return tsne.fit_transform(x)


def write_embedding_map(
    cv_dir: str | os.PathLike,
    fold_dirs: Sequence[str],
    random_state: int = RANDOM_STATE,
    log: Callable[[str], None] | None = None,
) -> dict | None:
    """``CV/embedding_map.png`` of every fold's test utterances; the cv summary's ``embedding_map`` entry.

    Returns ``{"file", "n", "folds", "random_state", "speakers"}``, or ``None`` (with a logged reason)
    when the folds are baselines (no embedding) or their test sets cannot be read.
    """
    cv_dir = Path(cv_dir)
    groups, labels, speakers, classes = [], [], [], None
    try:
        for d in fold_dirs:
            c = TrainConfig.load(cv_dir / d / "config.json")
            if is_baseline(c.model):
                return None
            emb, utts = run_test_embeddings(cv_dir / d, seed=c.seed)
            groups.append(emb)
            labels += utts["class"].astype(str).tolist()
            speakers += utts["speaker"].astype(str).tolist()
            classes = classes or _classes(cv_dir / d)
        xy = embedding_map(groups, random_state)
    except (ConfigError, ValueError, OSError) as e:
        if log:
            log(f"{cv_dir}: no embedding map ({' '.join(str(e).split())})")
        return None
    plot_embedding_map(
        xy,
        labels,
        speakers,
        classes,
        cv_dir / MAP_FILE,
        f"t-SNE of the test utterances of {len(fold_dirs)} fold(s), each embedded by its own model",
    )
    return {
        "file": MAP_FILE,
        "n": len(labels),
        "folds": list(fold_dirs),
        "random_state": int(random_state),
        "speakers": len(set(speakers)),
    }


def _classes(run_dir: Path) -> list[str]:

    return list(read_header(run_paths(run_dir)["best"])["classes"])


def write_embeddings(
    path: str | os.PathLike, paths: Sequence[str], vectors: np.ndarray, windows: Sequence[int], model: str = ""
) -> Path:
    """Embeddings of files, atomically: ``.npz`` or ``.csv``.

    ``.npz``: ``embeddings`` float32 ``[n, D]``, ``paths`` ``[n]`` (str), ``windows`` ``[n]``, ``dim`` (D),
    ``model``. ``.csv``: one row per file, columns ``path``, ``windows``, ``e0`` .. ``e{D-1}``.
    """
    path = Path(path)
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(paths), -1)
    if path.suffix.lower() == ".npz":
        buf = io.BytesIO()
        np.savez(
            buf,
            embeddings=vectors,
            paths=np.asarray([str(p) for p in paths], dtype=str),
            windows=np.asarray(windows, dtype=np.int64),
            dim=np.int64(vectors.shape[1]),
            model=np.asarray(str(model)),
        )
        return atomic_write_bytes(path, buf.getvalue())
    if path.suffix.lower() == ".csv":
        df = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
        df.insert(0, "windows", np.asarray(windows, dtype=np.int64))
        df.insert(0, "path", [str(p) for p in paths])
        return atomic_write_text(path, df.to_csv(index=False, float_format="%.7g"))
    raise ValueError(f"{path}: embeddings are written to a .npz or .csv file")


def _with_embedding_map(cv_dir: Path, summary: dict, log) -> None:
    """Add the t-SNE map of every fold's test utterances (:func:`write_embedding_map`) to a cv summary."""
    emb = write_embedding_map(cv_dir, [f["dir"] for f in summary["folds"]], log=log)
    if emb is not None:
        summary["embedding_map"] = emb

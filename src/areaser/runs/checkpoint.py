"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

Loading a model never executes code: a checkpoint is a ``.safetensors`` file (raw tensors)
whose header metadata holds a JSON document (config, classes, epoch, the structure of the
state); a ``.json`` sidecar repeats that document for people and tools. The safetensors
file alone is the source of truth, so one atomic rename makes a checkpoint complete.

Two kinds of file, one format:

* weights (``best.safetensors``): a flat ``state_dict`` (keys ``features.*``, ``model.*``)
  any safetensors tool can read; ``header["config"]`` rebuilds the modules.
* training state (``last.safetensors``): Lightning's whole checkpoint dict (weights, Adam
  moments, loop counters, callback states), its tensors stored under their path in the
  tree (``optimizer_states/0/state/3/exp_avg``) and its structure in the JSON.
  :class:`SafetensorsCheckpointIO` plugs this into Lightning, so resuming is Lightning's
  own restore, fed from safetensors.

Run directory layout (:func:`run_paths`)::

    runs/<name>/config.json              the TrainConfig
                split.json               utterance ids of train / dev / test
                checkpoints/last.*       state after the last completed epoch (resume)
                checkpoints/best.*       weights of the epoch chosen on dev
                metrics.csv              one row per epoch
                tensorboard/             TensorBoard event files
                report.{json,md}, confusion.png, curves.png
                done.json            written last: the run is finished (every artefact exists)
                .lock                held (``fcntl.flock``) by the process training the run

Integrity: every file records a SHA-256 of its JSON document and tensor bytes
(``header["checksum"]``, :func:`_checksum`); loading verifies it and refuses non-finite
weights, so a damaged file is a :class:`CheckpointError` naming the file, never NaN scores.
Files written before checksums existed still load (only the finiteness check applies).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from lightning.pytorch.plugins.io import CheckpointIO
from safetensors import safe_open
from safetensors.torch import save_file

from areaser.core.errors import AreaserError
from areaser.io.files import atomic_path, atomic_write_json
from areaser.models.cnn import check_classes
from areaser.runs.config import TrainConfig, build_modules

__all__ = [
    "FORMAT",
    "CheckpointError",
    "run_paths",
    "save_tree",
    "load_tree",
    "save_weights",
    "load_weights",
    "read_header",
    "SafetensorsCheckpointIO",
    "LoadedRun",
    "load_run",
]

FORMAT = "areaser-checkpoint/1"
_META_KEY = "areaser"


class CheckpointError(AreaserError, ValueError):
    """A checkpoint that cannot be read; the message names the file and the reason."""


def run_paths(run_dir: str | os.PathLike) -> dict[str, Path]:
    """Every file of a run directory, by role (see the module docstring)."""
    d = Path(run_dir)
    ck = d / "checkpoints"
    return {
        "dir": d,
        "config": d / "config.json",
        "split": d / "split.json",
        "metrics": d / "metrics.csv",
        "last": ck / "last.safetensors",
        "best": ck / "best.safetensors",
        "tensorboard": d / "tensorboard",
        "report_json": d / "report.json",
        "report_md": d / "report.md",
        "done": d / "done.json",
        "lock": d / ".lock",
    }


# ----------------------------------------------------------------------------- tree <-> (JSON, tensors)


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = path or "root"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return _encode(torch.from_numpy(np.ascontiguousarray(obj)), tensors, path)
    if isinstance(obj, (np.generic,)):
        obj = obj.item()
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{path}/{k}" if path else k) for k, v in obj.items()}
        return {
            "__dict__": [
                [_encode(k, tensors, f"{path}/key{i}"), _encode(v, tensors, f"{path}/{k}")]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot store {type(obj).__name__} at {path or 'root'!r} without pickle")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


def _checksum(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the JSON document (less ``checksum``) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    doc = {k: v for k, v in header.items() if k != "checksum"}
    h.update(json.dumps(doc, sort_keys=True, allow_nan=False).encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode("utf-8"))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _verify(path: Path, header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], weights: Mapping) -> None:
    """Raise :class:`CheckpointError` unless the checksum (where recorded) matches and ``weights`` are finite."""
    want = header.get("checksum")
    if want is not None and _checksum(header, tensors) != want:
        raise CheckpointError(f"{path}: corrupted: checksum mismatch (the file was damaged after it was written)")
    for name, t in weights.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: non-finite values (NaN or inf) in weights {name!r}: unusable model")


def _write(path: Path, tensors: dict[str, torch.Tensor], header: dict) -> Path:
    header = {"format": FORMAT, **header}
    header["checksum"] = _checksum(header, tensors)
    text = json.dumps(header, allow_nan=False)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: text})
    atomic_write_json(path.with_suffix(".json"), header)  # for people; the .safetensors is the truth
    return path


def read_header(path: str | os.PathLike) -> dict:
    """The JSON document stored in a checkpoint's safetensors header."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: not a safetensors file ({e})") from None
    if _META_KEY not in meta:
        raise CheckpointError(f"{path}: no areaser header (not written by areaser)")
    try:
        header = json.loads(meta[_META_KEY])
    except ValueError:
        raise CheckpointError(f"{path}: corrupted: the areaser header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted: the areaser header is not a JSON object")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {header.get('format')!r} (expected {FORMAT})")
    return header


def _read_tensors(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, RuntimeError, ValueError) as e:  # truncated data, bad offsets
        raise CheckpointError(f"{path}: corrupted: tensors cannot be read ({e})") from None


def save_tree(path: str | os.PathLike, tree: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> Path:
    """Store a nested dict of tensors and plain values (a Lightning checkpoint); no pickle."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(dict(tree), tensors, "")
    return _write(Path(path), tensors, {**(header or {}), "kind": "tree", "tree": skeleton})


def load_tree(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Inverse of :func:`save_tree`: ``(tree, header)``."""
    path = Path(path)
    header = read_header(path)
    if header.get("kind") != "tree":
        raise CheckpointError(f"{path}: holds weights only, not a training state")
    tensors = _read_tensors(path, map_location)
    try:
        tree = _decode(header["tree"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupted: the tree does not match the tensors ({e!r})") from None
    weights = tree.get("state_dict") if isinstance(tree, dict) else None  # optimizer / callback states may hold inf
    _verify(path, header, tensors, weights if isinstance(weights, Mapping) else {})
    header.pop("tree")
    return tree, header


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], header: Mapping[str, Any]) -> Path:
    """Store a flat ``state_dict`` with a JSON ``header`` (config, classes, epoch, scores)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    return _write(Path(path), tensors, {**header, "kind": "weights"})


def load_weights(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Inverse of :func:`save_weights`: ``(state_dict, header)``."""
    path = Path(path)
    header = read_header(path)
    if header.get("kind") != "weights":
        raise CheckpointError(f"{path}: not a weights file (kind {header.get('kind')!r})")
    tensors = _read_tensors(path, map_location)
    _verify(path, header, tensors, tensors)
    return tensors, header


def _checkpoint_io_base():

    return CheckpointIO


class SafetensorsCheckpointIO(_checkpoint_io_base()):
    """Lightning ``CheckpointIO`` that writes :func:`save_tree` files instead of pickles."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:  # noqa: D102
        save_tree(path, checkpoint, {"epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")})

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:  # noqa: D102
        tree, _ = load_tree(path, "cpu")
        return tree

    def remove_checkpoint(self, path) -> None:  # noqa: D102
        for p in (Path(path), Path(path).with_suffix(".json")):
            p.unlink(missing_ok=True)


@dataclass
class LoadedRun:
    """A trained model rebuilt from a run directory.

    ``features`` (:class:`areaser.dsp.features.LogMel`) turns waveforms ``[B, N]`` into log-Mel
    ``[B, n_mels, T]``; ``model`` turns those into logits ``[B, C]``; both in eval mode.
    """

    features: torch.nn.Module
    model: torch.nn.Module
    classes: tuple[str, ...]
    config: dict
    header: dict
    path: Path

    @property
    def sr(self) -> int:
        return int(self.features.config.sr)

    @property
    def win_s(self) -> float:
        return float(self.config["segments"]["win_s"])


def load_run(run_dir: str | os.PathLike, which: str = "best") -> LoadedRun:
    """Rebuild the model of a run directory (``which='best'`` or ``'last'``) from safetensors + JSON.

    ``run_dir`` may also be a ``.safetensors`` weights file directly. Everything read is checked
    before a module is built from it (the config's sizes against their bounds, the class list,
    then the weights' shapes against the modules): a crafted or damaged file is one
    :class:`CheckpointError` naming the file and the field.
    """
    p = Path(run_dir)
    path = p if p.suffix == ".safetensors" else run_paths(p)[which]
    if which == "last" and p.suffix != ".safetensors":
        tree, header = load_tree(path)
        state = tree.get("state_dict") if isinstance(tree, dict) else None
        # the trainer state carries no config: the best weights of the same run do (saved first, every run has them)
        best = run_paths(p)["best"]
        if not best.is_file():
            raise CheckpointError(f"{best}: missing, so the config and classes of {path} are unknown")
        run_header = read_header(best)
        _check_epoch(path, header)
        header = {
            **header,
            "config": run_header.get("config"),
            "classes": run_header.get("classes"),
            "fold": run_header.get("fold", ""),
            "epoch": int(header["epoch"]) + 1,
        }  # 1-based, as best's
        where = best  # the file the config and classes come from
    else:
        if not path.is_file():
            raise CheckpointError(f"{path}: no trained model here (is {p} a run directory of `areaser train`?)")
        state, header = load_weights(path)
        if "epoch" in header:  # files of other tools (and tests) may not say
            _check_epoch(path, header)
        where = path
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: corrupted: no state_dict of tensors")
    if not isinstance(header.get("config"), dict):
        raise CheckpointError(f"{where}: corrupted: the header holds no config object")
    try:
        classes = check_classes(header.get("classes"))
        c = TrainConfig.from_dict(header["config"])  # every size checked against its bound
        features, model = build_modules(c, len(classes))
    except ValueError as e:  # ConfigError too
        raise CheckpointError(f"{where}: {e}") from None
    sd_f = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    sd_m = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    for module, sd in ((features, sd_f), (model, sd_m)):
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as e:  # missing, unexpected or mis-shaped tensors: one line
            of = "" if where == path else f" of {where.name}"
            raise CheckpointError(f"{path}: weights do not fit the config and classes{of}: {mismatch(e)}") from None
    # the config with every default filled in: readers of ``config["segments"]`` find what the modules were built with
    return LoadedRun(features.eval(), model.eval(), classes, c.to_dict(), header, path)


def mismatch(e: RuntimeError) -> str:
    """``load_state_dict``'s error (a line per tensor) as one line: the first problem and how many more."""
    problems = [line.strip() for line in str(e).splitlines()[1:] if line.strip()] or [str(e).strip()]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0][:300] + more


def _check_epoch(path: Path, header: Mapping[str, Any]) -> None:
    e = header.get("epoch")
    if not isinstance(e, int) or isinstance(e, bool) or e < 0:
        raise CheckpointError(f"{path}: corrupted: epoch must be a count >= 0, got {e!r}")

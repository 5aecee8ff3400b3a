"""Run lifecycle under failure (#14): a run killed while writing its report is completed, a run resumed after
early stopping stops where it stopped, damaged checkpoints are refused with one clear line, two trainings of one
run directory are locked out, and temporary files a killed process left are cleaned."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TINY_PAPER
from lightning.pytorch.callbacks import Callback
from safetensors.torch import save_file

from areaser.runs.checkpoint import FORMAT, CheckpointError, load_tree, load_weights, run_paths, save_weights
from areaser.runs.config import ConfigError, TrainConfig, config_with
from areaser.train.lifecycle import train

TINY = {**TINY_PAPER, "epochs": 2}


def tiny(manifest: Path, out: Path, **overrides) -> TrainConfig:
    return config_with(None, manifest=str(manifest), out_dir=str(out), **{**TINY, **overrides})


@pytest.fixture(scope="module")
def manifest(builtin_corpus: Path) -> Path:
    return builtin_corpus / "manifest.csv"


@pytest.fixture(scope="module")
def finished(manifest: Path, tmp_path_factory) -> tuple[TrainConfig, dict]:
    """One finished 2-epoch run; tests work on copies of its directory (:func:`copy_run`)."""
    cfg = tiny(manifest, tmp_path_factory.mktemp("runs"), name="fin")
    return cfg, train(cfg, log=None)


def copy_run(finished, tmp_path: Path) -> tuple[TrainConfig, Path]:
    cfg, _ = finished
    out = tmp_path / "runs"
    shutil.copytree(Path(cfg.out_dir) / cfg.name, out / cfg.name)
    return replace(cfg, out_dir=str(out)), out / cfg.name


class NoTraining(Callback):
    """Fails the test if a single training step runs."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        raise AssertionError("trained again")


class CrashAtTrainEnd(Callback):
    """Simulates a crash after the last checkpoint of training, before the report is written."""

    def on_train_end(self, trainer, module):
        raise RuntimeError("simulated crash after training")


def _no_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_s"} for r in history]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_args(run: Path) -> list[str]:
    """``areaser train`` of the run directory ``run`` (its config.json names the directory it was copied from)."""
    return ["train", "--config", str(run / "config.json"), "--out", str(run.parent), "--name", run.name]


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    from areaser.cli import main

    monkeypatch.setattr(sys, "argv", ["areaser", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


# ----------------------------------------------------------------------------- 4: finished means every artefact


def test_finished_run_has_a_completion_marker_written_last(finished):
    cfg, report = finished
    run = Path(cfg.out_dir) / cfg.name
    done = json.loads((run / "done.json").read_text())
    assert done["epochs_run"] == len(report["history"]) and done["selected_epoch"] == report["selected_epoch"]
    for name in ("report.json", "report.md", "confusion.png", "curves.png"):  # written before the marker
        assert (run / name).stat().st_mtime_ns <= (run / "done.json").stat().st_mtime_ns, name


def test_run_killed_after_report_json_is_completed_from_its_state_without_training(finished, tmp_path):
    cfg, first = finished
    c, run = copy_run(finished, tmp_path)
    for name in ("report.md", "confusion.png", "curves.png", "done.json"):  # kill -9 right after report.json
        (run / name).unlink(missing_ok=True)
    again = train(c, callbacks=[NoTraining()], log=None)
    for name in ("report.json", "report.md", "confusion.png", "curves.png", "done.json"):
        assert (run / name).is_file(), name
    assert again["test"] == first["test"] and again["selected_epoch"] == first["selected_epoch"]
    assert again["history"] == first["history"]  # the saved history, not a new one
    assert json.loads((run / "report.json").read_text())["test"] == first["test"]
    # now it is finished: a rerun returns the report without loading anything
    assert train(c, callbacks=[NoTraining()], log=None)["test"] == first["test"]


# ----------------------------------------------------------------------------- 5: resume after early stopping


def test_resume_after_early_stopping_stops_where_the_uninterrupted_run_stopped(manifest, tmp_path):
    cfg = tiny(manifest, tmp_path, name="es", epochs=4, patience=1, monitor="dev_ua")
    ref = train(cfg, log=None)
    assert len(ref["history"]) < cfg.epochs  # precondition: early stopping ended this run
    c = replace(cfg, name="es-crashed")
    with pytest.raises(RuntimeError, match="simulated crash after training"):
        train(c, callbacks=[CrashAtTrainEnd()], log=None)
    run = run_paths(tmp_path / "es-crashed")
    assert not run["report_json"].exists()
    assert load_tree(run["last"])[1]["epoch"] == len(ref["history"]) - 1  # the stopping epoch's state is saved
    resumed = train(c, log=None)
    assert len(resumed["history"]) == len(ref["history"])
    assert _no_time(resumed["history"]) == _no_time(ref["history"])
    assert resumed["test"] == ref["test"]
    a, b = (load_tree(p["last"])[0] for p in (run_paths(tmp_path / "es"), run))
    assert _same_weights(a["state_dict"], b["state_dict"])
    assert _same_weights(load_weights(run_paths(tmp_path / "es")["best"])[0], load_weights(run["best"])[0])


# ----------------------------------------------------------------------------- 7: damaged checkpoint data


def _flip_data_bytes(path: Path, where: float = 0.5, n: int = 4) -> None:
    """Flip ``n`` bytes in the tensor data region of a safetensors file (after its JSON header)."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    assert start < len(raw)
    i = start + int((len(raw) - start) * where)
    for k in range(i, min(i + n, len(raw))):
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_a_saved_checkpoint_are_a_checksum_error(finished, tmp_path):
    _, run = copy_run(finished, tmp_path)
    paths = run_paths(run)
    load_weights(paths["best"])  # intact: loads
    load_tree(paths["last"])
    _flip_data_bytes(paths["best"])
    with pytest.raises(CheckpointError, match=r"best\.safetensors: corrupted: checksum mismatch"):
        load_weights(paths["best"])
    _flip_data_bytes(paths["last"], where=0.3)
    with pytest.raises(CheckpointError, match=r"last\.safetensors: corrupted: checksum mismatch"):
        load_tree(paths["last"])


def test_non_finite_weights_are_refused(tmp_path):
    p = save_weights(tmp_path / "best.safetensors", {"model.w": torch.tensor([float("nan"), 1.0])}, {"classes": ["a"]})
    with pytest.raises(CheckpointError, match=r"best\.safetensors: non-finite"):
        load_weights(p)
    p = save_weights(tmp_path / "inf.safetensors", {"model.w": torch.tensor([float("inf")])}, {"classes": ["a"]})
    with pytest.raises(CheckpointError, match="non-finite"):
        load_weights(p)


def test_files_without_a_checksum_still_load(tmp_path):
    header = {"format": FORMAT, "kind": "weights", "classes": ["a", "b"]}
    save_file({"model.w": torch.ones(3)}, str(tmp_path / "old.safetensors"), metadata={"areaser": json.dumps(header)})
    sd, h = load_weights(tmp_path / "old.safetensors")
    assert torch.equal(sd["model.w"], torch.ones(3)) and h["classes"] == ["a", "b"] and "checksum" not in h


# ----------------------------------------------------------------------------- 8: last cannot be resumed


@pytest.mark.parametrize("damage", ["truncated", "empty", "wrong-kind", "flipped"])
def test_train_with_an_unusable_last_checkpoint_says_so_in_one_line(finished, tmp_path, monkeypatch, capsys, damage):
    _, run = copy_run(finished, tmp_path)
    paths = run_paths(run)
    (run / "done.json").unlink(missing_ok=True)  # not finished: the next train resumes from last
    paths["report_json"].unlink()
    if damage == "truncated":
        paths["last"].write_bytes(paths["last"].read_bytes()[: paths["last"].stat().st_size // 2])
    elif damage == "empty":
        paths["last"].write_bytes(b"")
    elif damage == "wrong-kind":
        shutil.copy(paths["best"], paths["last"])
    else:
        _flip_data_bytes(paths["last"])
    code, err = _cli(_train_args(run), monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code not in (0, None) and "Traceback" not in err
    assert len(lines) == 1, err
    assert "last.safetensors" in lines[0] and "--restart" in lines[0] and "cannot resume" in lines[0]
    assert not paths["report_json"].exists()  # nothing was trained or scored


# ----------------------------------------------------------------------------- lock, stale temporaries


_HOLD = textwrap.dedent(
    """
    import fcntl, sys, time
    f = open(sys.argv[1], "a+")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    f.seek(0); f.truncate(); f.write("pid 424242 on elsewhere\\n"); f.flush()
    print("locked", flush=True)
    time.sleep(120)
    """
)


def test_a_second_train_of_a_run_being_trained_fails_fast_naming_the_other(finished, tmp_path, monkeypatch, capsys):
    c, run = copy_run(finished, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="pid 424242") as e:
            train(c, log=None)
        assert e.type.__name__ == "RunLockedError"
        code, err = _cli(_train_args(run), monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "pid 424242" in err and "Traceback" not in err
    finally:
        holder.kill()  # kill -9: the lock dies with its holder
        holder.wait()
    assert train(c, log=None)["test"] == finished[1]["test"]


def test_stale_temporary_files_of_a_killed_process_are_removed_by_the_next_run(finished, tmp_path):
    c, run = copy_run(finished, tmp_path)
    stale = [run / ".report.json.tmp.a1b2c3d_.json", run / "checkpoints" / ".last.safetensors.tmp.zz9y8x7w.safetensors"]
    kept = [run / "notes.tmp.txt", run / ".keep"]
    for p in stale + kept:
        p.write_bytes(b"half written")
    train(c, log=None)
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in kept)


def test_a_baseline_run_is_finished_only_when_its_completion_marker_is_written(manifest, tmp_path):
    """Killed after report.json but before report.md: the rerun completes it instead of calling it finished."""
    cfg = config_with(None, manifest=str(manifest), out_dir=str(tmp_path), name="b", model="egemaps-lr", progress=False)
    train(cfg, log=None)
    paths = run_paths(tmp_path / "b")
    assert paths["done"].is_file() and paths["report_md"].is_file()
    paths["done"].unlink()  # as if killed between report.json and the marker
    paths["report_md"].unlink()
    said: list[str] = []
    train(cfg, log=said.append)
    assert paths["report_md"].is_file() and paths["done"].is_file()
    assert not any("already finished" in s for s in said)
    said.clear()
    train(cfg, log=said.append)  # now finished: returned as it is
    assert any("already finished" in s for s in said)

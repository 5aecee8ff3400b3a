"""ONNX export: parity with PyTorch, int8 agreement, and `predict --backend onnx`."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from test_attention_onnx import op_types
from test_inference import CLASSES, TINY, make_random_run  # one helper for the three test files
from typer.testing import CliRunner

from areaser.cli import app
from areaser.data.segments import segment
from areaser.io.audio import load_audio
from areaser.serve.export import INPUT, OUTPUTS, OnnxBackend, export_onnx, quantize_int8, read_metadata
from areaser.serve.recognizer import Recognizer


def _quiet(fn, *args, **kw):  # noqa: ANN001, ANN202
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kw)


@pytest.fixture(scope="module")
def corpus_paths(builtin_corpus: Path) -> list[Path]:
    df = pd.read_csv(builtin_corpus / "manifest.csv")
    return [builtin_corpus / p for p in df["path"]]


@pytest.fixture(scope="module")
def random_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run = make_random_run(tmp_path_factory.mktemp("run") / "random-cnn")
    return run, _quiet(export_onnx, run, run / "model.onnx")


def _windows(paths: list[Path]) -> np.ndarray:
    return np.concatenate([segment(load_audio(p), 16_000, 2.0, 0.4, "pad")[0] for p in paths])


def test_graph_names_shapes_and_metadata(random_export: tuple[Path, Path]) -> None:
    run, path = random_export
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == [INPUT]
    assert [o.name for o in proto.graph.output] == list(OUTPUTS)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 128  # dynamic batch, 128 mel bands
    meta = read_metadata(path)
    assert meta["classes"] == list(CLASSES) and meta["segments"]["win_s"] == 2.0 and meta["int8"] is False
    assert meta["input"]["name"] == INPUT and meta["outputs"]["probabilities"] == ["batch", 4]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # any batch size
        x = np.random.default_rng(batch).standard_normal((batch, 128, 81)).astype(np.float32)
        logits, probs = session.run(list(OUTPUTS), {INPUT: x})
        assert logits.shape == probs.shape == (batch, 4)
        np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(logits), -1).numpy(), atol=1e-6)


def test_onnx_matches_pytorch_on_the_builtin_corpus(random_export: tuple[Path, Path], corpus_paths: list[Path]) -> None:
    run, path = random_export
    windows = _windows(corpus_paths[:12])
    torch_p = Recognizer.load(run).backend(windows)
    onnx_p = OnnxBackend(path)(windows)
    assert onnx_p.shape == torch_p.shape == (len(windows), 4)
    assert np.abs(onnx_p - torch_p).max() < 1e-4


def test_the_paper_models_area_attention_exports_as_blocked_loops(corpus_paths: list[Path], tmp_path: Path) -> None:
    """The `paper` preset's 2-D area attention becomes plain ONNX ops (Loops over query blocks, no custom
    domain): the graph matches PyTorch on real windows, keeps its class axis, and int8 calibration runs on it."""
    run = make_random_run(tmp_path / "paper", model="paper")
    path = _quiet(export_onnx, run, tmp_path / "paper.onnx")
    proto = onnx.load(str(path))
    ops = op_types(proto.graph)
    assert ops.count("Loop") == 2 and "If" in ops and not any("::" in op for op in ops)
    assert [d.dim_value for d in proto.graph.output[1].type.tensor_type.shape.dim][1:] == [len(CLASSES)]
    windows = _windows(corpus_paths[:3])
    want = Recognizer.load(run).backend(windows)
    got = OnnxBackend(path)(windows)
    assert np.abs(got - want).max() < 1e-5
    int8 = _quiet(quantize_int8, path, tmp_path / "paper.int8.onnx", calibration=corpus_paths[:2], max_windows=16)
    assert _is_int8(int8) and np.abs(OnnxBackend(int8)(windows) - got).max() < 0.05


def test_frames_axis_is_dynamic_when_the_model_allows_it(tmp_path: Path) -> None:
    from areaser.dsp.features import FeatureConfig, LogMel
    from areaser.serve.export import export_modules

    class Pooled(torch.nn.Module):  # global pooling: any number of frames
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x[:, None])).mean((2, 3)))

    torch.manual_seed(0)
    model = Pooled().eval()
    path = _quiet(export_modules, LogMel(FeatureConfig()), model, CLASSES, tmp_path / "pooled.onnx")
    assert read_metadata(path)["input"]["shape"] == ["batch", 128, "frames"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 128, 301)).astype(np.float32)  # 6 s of frames
    (probs,) = session.run(["probabilities"], {INPUT: x})
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x)), -1).numpy()
    assert np.abs(probs - want).max() < 1e-5


def test_cli_export_and_predict_with_onnx_backend(
    random_export: tuple[Path, Path], corpus_paths: list[Path], tmp_path: Path
) -> None:
    run, _ = random_export
    runner = CliRunner()
    out = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", str(run), "--onnx", str(out)])
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.stdout and "input  logmel" in r.stdout and "output probabilities" in r.stdout
    files = [str(p) for p in corpus_paths[:3]]
    res = tmp_path / "onnx.jsonl"
    r = runner.invoke(app, ["predict", str(out), *files, "-o", str(res), "--no-progress"])
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in res.read_text().splitlines()]
    rec = Recognizer.load(run)
    for g, f in zip(got, files):
        want = rec.predict(f)
        assert g["label"] == want.label
        assert np.abs(np.array(list(g["probabilities"].values())) - want.probabilities).max() < 1e-4
    # the .onnx file alone is a complete model
    r = runner.invoke(app, ["predict", str(out), files[0], "--no-progress"])
    assert r.exit_code == 0 and got[0]["label"] in r.stdout
    r = runner.invoke(app, ["export", str(run), "--onnx", str(tmp_path / "m.bin")])
    assert r.exit_code == 2 and "ending in .onnx" in r.stderr
    r = runner.invoke(app, ["predict", str(tmp_path), files[0], "--backend", "onnx"])
    assert r.exit_code == 2 and "areaser export" in r.stderr


# ----------------------------------------------------------------------------- int8


def _is_int8(path: Path) -> bool:
    graph = onnx.load(str(path)).graph
    return {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node} and any(
        t.data_type == onnx.TensorProto.INT8
        for t in graph.initializer  # int8 weights
    )


def test_int8_stays_close_to_fp32(random_export: tuple[Path, Path], corpus_paths: list[Path], tmp_path: Path) -> None:
    run, fp32 = random_export
    int8 = _quiet(quantize_int8, fp32, tmp_path / "int8.onnx", calibration=corpus_paths[::6])
    meta = read_metadata(int8)
    assert meta["int8"]["mode"] == "static" and meta["int8"]["calibration_windows"] > 0 and _is_int8(int8)
    windows = _windows(corpus_paths[:12])
    p32, p8 = OnnxBackend(fp32)(windows), OnnxBackend(int8)(windows)
    assert np.abs(p8 - p32).max() < 0.02
    with pytest.raises(ValueError, match="calibration audio"):
        quantize_int8(fp32, tmp_path / "x.onnx")
    # through the command: calibrated by default on utterances of the run's manifest, which this run lacks
    r = CliRunner().invoke(app, ["export", str(run), "--onnx", str(tmp_path / "c.onnx"), "--int8"])
    assert r.exit_code == 2 and "--calibrate" in r.stderr
    r = CliRunner().invoke(
        app, ["export", str(run), "--onnx", str(tmp_path / "c.onnx"), "--int8", "--calibrate", str(corpus_paths[0])]
    )
    assert r.exit_code == 0 and "static int8" in r.stdout and _is_int8(tmp_path / "c.onnx")


# ----------------------------------------------------------------------------- int8 on a trained model (slow)


@pytest.fixture(scope="module")
def trained_run(builtin_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slim model trained for a few seconds through `areaser.train.lifecycle`: it tells the classes apart
    (not one class for every window, as an untrained one does), so top-1 agreement means something."""
    from areaser.runs.config import config_with
    from areaser.train.lifecycle import train

    out = tmp_path_factory.mktemp("trained")
    cfg = config_with(
        manifest=str(builtin_corpus / "manifest.csv"),
        model="cnn",
        model_overrides=TINY,
        batch_size=8,
        epochs=4,
        lr=3e-3,
        patience=None,
        out_dir=str(out),
        name="tiny",
        progress=False,
        tensorboard=False,
        **{"vtlp.impl": "none"},
    )
    train(cfg, log=None)
    return out / "tiny"


@pytest.mark.slow  # trains a model through areaser.train.lifecycle: about 45 CPU seconds
def test_int8_agrees_with_fp32_on_the_builtin_corpus(
    trained_run: Path, corpus_paths: list[Path], tmp_path: Path
) -> None:
    fp32 = _quiet(export_onnx, trained_run, tmp_path / "fp32.onnx")
    int8 = _quiet(quantize_int8, fp32, tmp_path / "int8.onnx", calibration=corpus_paths[::2])
    assert read_metadata(int8)["int8"]["mode"] == "static" and _is_int8(int8)
    windows = _windows(corpus_paths)
    p32 = OnnxBackend(fp32)(windows)
    p8 = OnnxBackend(int8)(windows)
    assert len(set(p32.argmax(1))) >= 3  # a model that separates classes, not a constant answer
    agreement = float(np.mean(p32.argmax(1) == p8.argmax(1)))
    assert agreement >= 0.99, f"int8 top-1 agrees with fp32 on {agreement:.1%} of {len(windows)} windows"
    torch_p = Recognizer.load(trained_run).backend(windows)
    assert np.abs(p32 - torch_p).max() < 1e-4

"""ONNX export of a trained model, int8 quantisation, and the ONNX Runtime backend.

The graph takes **log-Mel in**, not waveforms: ONNX Runtime's STFT kernel is about 25x slower
than PyTorch's on one CPU core, so :class:`OnnxBackend` computes the log-Mel with the run's own
:class:`~areaser.dsp.features.LogMel` (PyTorch, the exact module the model was trained with) and
hands it to ONNX Runtime.

======================  =====================================================================
input ``logmel``        float32 ``[batch, n_mels, frames]``: log10 mel power (128 x 81 for a 2 s
                        window at 16 kHz), normalised as the run's ``LogMel`` does (``norm``)
output ``logits``       float32 ``[batch, classes]``: the model's scores before softmax
output ``probabilities``  float32 ``[batch, classes]``: softmax of ``logits``
======================  =====================================================================

``batch`` is always dynamic; ``frames`` is dynamic when the model accepts any length (global
pooling) and fixed at the window's frame count when it flattens the map into a dense layer
(the paper's model). The file's metadata (key ``areaser``) holds what a runtime needs besides
the graph: class names, the feature settings and statistics, the window and hop, which
input/outputs mean what, and the run's calibration temperature (``calibration``:
``{"temperature": T}``, :mod:`areaser.runs.calibration`; 1 for an uncalibrated run, absent in older
files: 1); :func:`read_metadata` returns it, so a ``.onnx`` file alone is a complete model. The
graph's ``probabilities`` stay the model's own softmax; the recognizer applies ``T`` to the
utterance decision (``softmax(log(p) / T)``; the label never changes), whatever the backend.

``--int8`` quantises with ONNX Runtime, statically: int8 weights per channel, int8 activations
whose ranges are calibrated on log-Mel windows of real recordings (by default utterances of the
run's own manifest).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from areaser.data.manifest import ManifestError, read_manifest
from areaser.data.segments import stream_windows
from areaser.dsp.features import FeatureConfig, LogMel, n_frames
from areaser.io.audio import stream_audio
from areaser.io.files import atomic_path
from areaser.models import attention_onnx
from areaser.models.cnn import check_classes
from areaser.runs.calibration import SCALED, check_temperature, run_temperature
from areaser.runs.checkpoint import load_run, mismatch
from areaser.runs.config import check_window
from areaser.runs.fitted import is_baseline_run
from areaser.runs.metrics import DECISIONS

__all__ = [
    "INPUT",
    "OUTPUTS",
    "export_onnx",
    "export_modules",
    "quantize_int8",
    "default_calibration",
    "read_metadata",
    "OnnxBackend",
]

INPUT = "logmel"
OUTPUTS = ("logits", "probabilities")
_META_KEY = "areaser"
_FORMAT = "areaser-onnx/1"


class _Head(nn.Module):
    """What goes into the graph: log-Mel ``[B, n_mels, T]`` -> (logits ``[B, C]``, probabilities ``[B, C]``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, logmel: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(logmel)
        return logits, torch.softmax(logits, dim=-1)


def _state_to_json(module: nn.Module) -> dict:
    return {
        k: {"dtype": str(v.dtype).removeprefix("torch."), "data": v.tolist()} for k, v in module.state_dict().items()
    }


# what _state_to_json writes for a LogMel (its statistics and the flag saying they were fitted)
_STATE_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "bool": torch.bool}


def _state_from_json(d: dict) -> dict[str, Tensor]:
    """Inverse of :func:`_state_to_json`; ValueError on an entry that is not ``{"dtype", "data"}`` of a known dtype."""
    out = {}
    for k, v in d.items():
        if not isinstance(v, dict) or v.get("dtype") not in _STATE_DTYPES or "data" not in v:
            raise ValueError(f"features_state[{k!r}]: need {{'dtype': one of {', '.join(_STATE_DTYPES)}, 'data': ...}}")
        try:
            out[k] = torch.tensor(v["data"], dtype=_STATE_DTYPES[v["dtype"]])
        except (TypeError, ValueError, RuntimeError) as e:  # ragged lists, strings
            raise ValueError(f"features_state[{k!r}]: not an array of numbers ({e})") from None
    return out


def export_modules(
    features: nn.Module,
    model: nn.Module,
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    win_s: float = 2.0,
    hop_s: float = 0.4,
    pad_mode: str = "repeat",
    decision: str = "prob",
    opset: int = 18,
    source: str = "",
    temperature: float = 1.0,
) -> Path:
    """Export ``model`` (log-Mel -> logits) to ONNX at ``path`` with the metadata a runtime needs.

    ``features`` is the run's :class:`~areaser.dsp.features.LogMel`; its config and statistics go
    into the metadata, and so does ``temperature`` (the run's calibration ``T``). The file is checked
    with ``onnx.checker`` and written atomically.
    """
    import onnx  # the [export] extra: imported where a verb needs it

    path = Path(path)
    model = model.eval()
    cfg = features.config
    frames = n_frames(int(round(win_s * cfg.sr)), cfg)
    head = _Head(model).eval()
    probe = torch.randn(3, cfg.n_mels, frames)
    with torch.no_grad():
        if not torch.equal(head(probe)[0], head(probe)[0]):
            raise ValueError(
                "the model's outputs are random at evaluation (dropout or sampling left on at eval, "
                "as the faithful preset does): an exported graph could not reproduce them"
            )
    # frames dynamic when the model takes any length; a flatten + dense model pins it
    dynamic_frames = _accepts_other_lengths(model, cfg.n_mels, frames)
    with tempfile.TemporaryDirectory() as tmp:
        proto, dynamic_frames = _export_verified(head, cfg.n_mels, frames, dynamic_frames, opset, Path(tmp))
    meta = {
        "format": _FORMAT,
        "classes": list(classes),
        "input": {
            "name": INPUT,
            "shape": ["batch", cfg.n_mels, "frames" if dynamic_frames else frames],
            "meaning": "log10 mel power of 2 s windows, normalised as features.norm says",
        },
        "outputs": {"logits": ["batch", len(classes)], "probabilities": ["batch", len(classes)]},
        "features": cfg.to_dict(),
        "features_state": _state_to_json(features),
        "segments": {"win_s": win_s, "hop_s": hop_s, "pad_mode": pad_mode, "decision": decision},
        "int8": False,
        "source": source,
        "calibration": {"temperature": check_temperature(temperature), "scaled": SCALED},
    }
    _set_metadata(proto, meta)
    proto.doc_string = "areaser: log-Mel windows [batch, n_mels, frames] -> emotion logits and probabilities"
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp_path:
        onnx.save(proto, str(tmp_path))
    return path


def _export_verified(head: nn.Module, n_mels: int, frames: int, dynamic_frames: bool, opset: int, tmp: Path):
    """Export ``head`` and check it against PyTorch; returns ``(ModelProto, frames_dynamic)``.

    Tries the TorchScript and the dynamo exporter with batch and (when the model allows) frames
    dynamic, then with batch dynamic only. Each result is run in ONNX Runtime at
    other batch sizes (and frame counts) than the one traced and kept only if its
    probabilities match PyTorch's within 1e-5: a trace that silently baked in a shape fails here.
    """
    import onnx  # the [export] extra: imported where a verb needs it

    # TorchScript first: several times faster to export, and the check below catches a trace that baked in a shape
    attempts = (
        [(False, True), (True, True), (False, False), (True, False)]
        if dynamic_frames
        else [(False, False), (True, False)]
    )
    errors = []
    for dynamo, dyn_frames in attempts:
        raw = tmp / f"model-{int(dynamo)}{int(dyn_frames)}.onnx"
        try:
            _export_once(head, n_mels, frames, dynamo, dyn_frames, opset, raw)
            worst = _max_difference(head, raw, n_mels, [frames, frames + 40] if dyn_frames else [frames])
        except Exception as e:  # exporters raise many kinds; each is a reason to try the next way
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {_first_line(e)}")
            continue
        if worst <= 1e-5:
            return onnx.load(str(raw)), dyn_frames
        errors.append(f"{'dynamo' if dynamo else 'torchscript'}: ONNX Runtime differs from PyTorch by {worst:.2g}")
    raise ValueError("this model cannot be exported to ONNX; " + "; ".join(dict.fromkeys(errors)))


def _export_once(
    head: nn.Module, n_mels: int, frames: int, dynamo: bool, dyn_frames: bool, opset: int, out: Path
) -> None:
    import onnx  # the [export] extra: imported where a verb needs it

    dummy = torch.randn(2, n_mels, frames)
    common = dict(input_names=[INPUT], output_names=list(OUTPUTS), opset_version=opset, verbose=False)
    for name in ("torch.onnx", "torch.export", "torch.fx", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    chatter = io.StringIO()  # the exporters print progress and, on failure, whole graphs
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(chatter),
        contextlib.redirect_stderr(chatter),
    ):
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {0: torch.export.Dim("batch", min=1)}
            if dyn_frames:
                dims[2] = torch.export.Dim("frames", min=8)
            torch.onnx.export(
                head,
                (dummy,),
                str(out),
                dynamo=True,
                dynamic_shapes={"logmel": dims},
                report=False,
                optimize=True,
                external_data=False,
                **common,
            )
        else:
            axes = {0: "batch", 2: "frames"} if dyn_frames else {0: "batch"}
            torch.onnx.export(
                head,
                (dummy,),
                str(out),
                dynamo=False,
                dynamic_axes={INPUT: axes, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
                **common,
            )
            proto = onnx.load(str(out))
            if attention_onnx.expand(proto):  # area attention recorded as placeholders: now blocked Loops
                # shapes after the placeholders were unknown to the exporter: infer them (the class axis)
                onnx.save(onnx.shape_inference.infer_shapes(proto), str(out))


def _max_difference(head: nn.Module, path: Path, n_mels: int, frame_counts: list[int]) -> float:
    """Largest |probability| difference between ONNX Runtime and PyTorch over a few input shapes."""
    import onnxruntime as ort  # the [export] extra: imported where a verb needs it

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in (1, 5):
        for t in frame_counts:
            x = torch.randn(batch, n_mels, t, generator=g) * 2 - 3  # about the range of log10 mel power
            (got,) = session.run(["probabilities"], {INPUT: x.numpy()})
            with torch.no_grad():
                want = head(x)[1].numpy()
            worst = max(worst, float(np.abs(got - want).max()))
    return worst


def _first_line(e: BaseException) -> str:
    """The root cause of an exporter failure, on one line."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:240]


def _accepts_other_lengths(model: nn.Module, n_mels: int, frames: int) -> bool:
    """Whether ``model`` runs on a longer window than it was built for (no flatten + dense)."""
    try:
        with torch.no_grad():
            model(torch.zeros(1, n_mels, frames + 16))
        return True
    except RuntimeError:
        return False


def _set_metadata(proto, meta: dict) -> None:
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = _META_KEY, json.dumps(meta)


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``areaser`` metadata of an exported ``.onnx`` file (classes, features, window, shapes)."""
    import onnx  # the [export] extra: imported where a verb needs it

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: ONNX model not found (write one with `areaser export MODEL --onnx {path}`)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ValueError(f"{path}: not an ONNX model ({e})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if _META_KEY not in props:
        raise ValueError(f"{path}: no areaser metadata (export it with `areaser export`)")
    try:
        meta = json.loads(props[_META_KEY])
    except ValueError:
        raise ValueError(f"{path}: corrupted: the areaser metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: corrupted: the areaser metadata is not a JSON object")
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path}: unsupported format {meta.get('format')!r} (expected {_FORMAT})")
    try:
        _check_metadata(meta, proto.graph)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return meta


def _check_metadata(meta: dict, graph) -> None:  # noqa: ANN001
    """ValueError unless the metadata a runtime builds from is sane and agrees with the graph.

    The feature settings and the window are held to the bounds a training config is
    (:class:`~areaser.dsp.features.FeatureConfig`, :func:`areaser.runs.config.check_window`), the
    class list to :func:`areaser.models.cnn.check_classes`; the graph's input must take
    ``n_mels`` bands (and the window's frames, where fixed) and its outputs one score per class.
    """
    for key, kind in (("classes", list), ("features", dict), ("features_state", dict), ("segments", dict)):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{key}: missing or not a JSON {'array' if kind is list else 'object'}")
    classes = check_classes(meta["classes"])
    try:
        features = FeatureConfig.from_dict(meta["features"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"features: {e}") from None
    seg = meta["segments"]
    try:
        check_window(seg.get("win_s"), seg.get("hop_s"), features)
    except ValueError as e:
        raise ValueError(f"segments: {e}") from None
    if seg.get("pad_mode") not in ("repeat", "zero") or seg.get("decision", "prob") not in DECISIONS:
        raise ValueError(f"segments: need pad_mode repeat or zero and decision one of {', '.join(DECISIONS)}")
    cal = meta.get("calibration", {})
    if not isinstance(cal, dict):
        raise ValueError("calibration: not a JSON object")

    try:
        check_temperature(cal.get("temperature", 1.0))
    except ValueError as e:
        raise ValueError(f"calibration: {e}") from None
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name: o for o in graph.output}
    if INPUT not in inputs or "probabilities" not in outputs:
        raise ValueError(f"the graph has no input {INPUT!r} or no output 'probabilities'")
    dims = [d.dim_value or None for d in inputs[INPUT].type.tensor_type.shape.dim]
    frames = n_frames(int(round(seg["win_s"] * features.sr)), features)
    if len(dims) != 3 or dims[1] != features.n_mels or dims[2] not in (None, frames):
        raise ValueError(f"the graph takes input {dims}; features and window give [batch, {features.n_mels}, {frames}]")
    out = [d.dim_value or None for d in outputs["probabilities"].type.tensor_type.shape.dim]
    if len(out) != 2 or out[1] != len(classes):
        raise ValueError(f"the graph scores {out[1:] or '?'} classes, the metadata names {len(classes)}")


def export_onnx(
    model_dir: str | os.PathLike,
    path: str | os.PathLike,
    *,
    int8: bool = False,
    calibration: Iterable[str | os.PathLike] | None = None,
    opset: int = 18,
) -> Path:
    """Export the trained model of a run directory to ONNX; with ``int8`` also quantise it.

    ``calibration``: audio files whose windows calibrate the int8 activation ranges (a few
    dozen utterances like those to be scored); default: 32 utterances spread over the run's
    own manifest. A classical baseline run is refused (ValueError, with the reason).
    """
    if is_baseline_run(model_dir):
        raise ValueError(
            f"{model_dir}: a classical baseline run does not export to ONNX: its features (pYIN pitch tracking, "
            "spectral functionals over the whole utterance) are no ONNX operators, and skl2onnx would export "
            "the scikit-learn classifier alone, whose input is those features, not audio; use the run itself "
            "(areaser predict / serve RUN)"
        )
    run = load_run(model_dir)
    seg = run.config["segments"]
    path = Path(path)
    if int8 and calibration is None:
        calibration = default_calibration(run.config)
    export_modules(
        run.features,
        run.model,
        run.classes,
        path,
        win_s=float(seg["win_s"]),
        hop_s=float(seg["test_hop_s"]),
        pad_mode=str(seg.get("pad_mode", "repeat")),
        decision=str(run.config.get("decision", "prob")),
        opset=opset,
        source=str(Path(model_dir)),
        temperature=run_temperature(model_dir, run.header),
    )
    if int8:
        quantize_int8(path, path, calibration=calibration)
    return path


def default_calibration(config: dict, n: int = 32) -> list[Path]:
    """``n`` utterances spread evenly over the manifest a run was trained from (calibration audio)."""
    manifest = config.get("manifest") or ""
    try:
        paths = read_manifest(manifest, check_files=False)["path"].tolist()
    except ManifestError as e:
        raise ValueError(
            f"int8 needs calibration audio and the run's manifest is not readable ({e}); "
            "pass some recordings with --calibrate"
        ) from None
    paths = [Path(p) for p in paths if Path(p).is_file()]
    if not paths:
        raise ValueError(f"int8 needs calibration audio: none of the files of {manifest} exists; pass --calibrate")
    return [paths[int(i)] for i in np.unique(np.linspace(0, len(paths) - 1, n).round())]


def quantize_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    calibration: Iterable[str | os.PathLike] | None = None,
    mode: Literal["static", "dynamic"] = "static",
    max_windows: int = 256,
) -> Path:
    """Quantise an exported model to int8; ``dst`` may equal ``src``.

    ``static`` (default, needs ``calibration`` audio): QDQ with int8 activations and per-channel
    int8 weights (S8S8), which ONNX Runtime runs as QLinearConv / integer MatMul on x86, for the
    layers with learned weights (convolutions, dense and projection layers; see
    :func:`_weight_nodes`); ranges (MinMax) from the log-Mel of up to ``max_windows`` windows of
    the calibration files.
    ``dynamic``: int8 weights, activations quantised on the fly; no calibration, but convolutions
    become ConvInteger, which ONNX Runtime runs slower than float32 (measured in
    ``benchmarks/bench_inference.py``).
    """
    import onnx  # the [export] extra: imported where a verb needs it
    from onnxruntime.quantization import (  # the [export] extra
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # the [export] extra

    src, dst = Path(src), Path(dst)
    meta = read_metadata(src)
    if mode not in ("static", "dynamic"):
        raise ValueError(f"mode must be 'static' or 'dynamic', got {mode!r}")
    files = list(calibration or [])
    if mode == "static" and not files:
        raise ValueError("static int8 needs calibration audio (a few dozen recordings like those to be scored)")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        out = Path(tmp) / "int8.onnx"
        if mode == "static":
            batches = _calibration_batches(src, files, max_windows)

            class _Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self._it = iter(batches)

                def get_next(self):
                    return next(self._it, None)

            quantize_static(
                str(pre),
                str(out),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                # uint8 activations (U8S8) saturate the 16-bit pair sums of AVX2 without VNNI: on a Zen 3
                # core, 86 % top-1 agreement with float32 against 99.6 % for S8S8 (bench_inference)
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(_WEIGHT_OPS),
                nodes_to_quantize=_weight_nodes(onnx.load(str(pre))),
            )
            meta["int8"] = {"mode": "static", "calibration_windows": sum(len(b[INPUT]) for b in batches)}
        else:
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=True)
            meta["int8"] = {"mode": "dynamic"}
        proto = onnx.load(str(out))
    _set_metadata(proto, meta)
    with atomic_path(dst) as tmp_path:
        onnx.save(proto, str(tmp_path))
    return dst


_WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def _weight_nodes(proto) -> list[str]:
    """Nodes that apply learned weights (a Conv, Gemm or MatMul with a constant operand).

    Only these are quantised: they are where int8 saves time, and their inputs are small to
    calibrate. Products of two activations (area attention's logits and weights over 10,773
    areas) stay float32: their ranges are wide, int8 there destroys the attention, and
    calibrating them would hold every area's logits of every calibration window in memory.
    """
    constants = {t.name for t in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in proto.graph.node if n.op_type in _WEIGHT_OPS and any(i in constants for i in n.input[1:])]


def _calibration_batches(model_path: Path, files: list, max_windows: int, batch: int = 16) -> list[dict]:
    """Log-Mel windows of calibration recordings, as the model's input dicts."""
    backend = OnnxBackend(model_path)
    seg = backend.meta["segments"]
    windows: list[np.ndarray] = []
    for f in files:
        for _, w in stream_windows(
            stream_audio(f, backend.sr), backend.sr, seg["win_s"], seg["hop_s"], seg["pad_mode"]
        ):
            windows.append(w)
            if len(windows) >= max_windows:
                break
        if len(windows) >= max_windows:
            break
    if not windows:
        raise ValueError("calibration files gave no windows")
    return [{INPUT: backend.features_of(np.stack(windows[i : i + batch]))} for i in range(0, len(windows), batch)]


class OnnxBackend:
    """Run an exported model with ONNX Runtime: ``windows [B, N] -> probabilities [B, C]``.

    The log-Mel is computed in PyTorch with the feature settings and statistics stored in the
    file (see the module docstring), then the graph runs in ONNX Runtime. ``threads`` sets
    ONNX Runtime's intra-op threads (default: its own choice). Thread-safe.
    """

    name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort  # the [export] extra: imported where a verb needs it

        self.path = Path(path)
        self.meta = read_metadata(self.path)  # sizes checked: building LogMel allocates little
        self.features = LogMel(FeatureConfig.from_dict(self.meta["features"]))
        try:
            state = _state_from_json(self.meta["features_state"])
            if not all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point()):
                raise ValueError("features_state: non-finite values (NaN or inf)")
            self.features.load_state_dict(state)
        except RuntimeError as e:  # missing, unexpected or mis-shaped statistics
            raise ValueError(f"{self.path}: features_state does not fit the features: {mismatch(e)}") from None
        except ValueError as e:
            raise ValueError(f"{self.path}: {e}") from None
        self.features.eval()
        self.classes = tuple(self.meta["classes"])
        self.sr = int(self.features.config.sr)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        if self.meta.get("int8"):
            self.name = "onnx-int8"

    @torch.inference_mode()
    def features_of(self, windows: np.ndarray) -> np.ndarray:
        """Log-Mel of ``windows [B, N]`` as the graph's input ``[B, n_mels, frames]``."""
        return self.features(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))).numpy()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """``windows [B, N]`` float32 -> probabilities ``[B, C]`` float32."""
        return self.session.run(["probabilities"], {INPUT: self.features_of(windows)})[0]

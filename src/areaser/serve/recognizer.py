"""Inference on any audio: a trained model applied to files of any length, format, rate and channels.

The path one file takes, in memory bounded by one decoded block whatever the file's length::

    stream_audio (decode, mix to mono, resample; blocks)  ->  stream_windows (2 s windows, hop,
    carry-over between blocks)  ->  silence skip (optional)  ->  batches of windows  ->  backend
    (log-Mel + model + softmax)  ->  timeline  ->  decision (:func:`areaser.runs.metrics.utterance_probs`)

The windows are those of :func:`areaser.data.segments.segment` with policy ``pad`` (a short file is
padded to one window, an end-aligned last window covers the tail), and the decision is the one
training and evaluation use, :func:`areaser.runs.metrics.utterance_probs` on the windows'
log-probabilities: ``prob`` (the paper's) averages the windows' softmax outputs, ``logits``
takes the softmax of their mean logit. A backend is any callable
``windows [B, N] float32 -> probabilities [B, C]``; :class:`TorchBackend` runs the PyTorch model,
:class:`areaser.serve.export.OnnxBackend` an exported ONNX graph. Backends only score windows: the
utterance decision is the recognizer's, the same whatever the backend.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence, Union

import numpy as np

from areaser.data.segments import stream_windows
from areaser.dsp.vad import MIN_VOICED_FRACTION, VoiceActivity, window_voiced
from areaser.io.audio import DEFAULT_SR, SILENCE_PEAK, AudioError, resample, stream_audio, to_mono
from areaser.runs.calibration import calibrate, check_temperature, run_temperature
from areaser.runs.checkpoint import load_run
from areaser.runs.fitted import is_baseline_run, load_fitted
from areaser.runs.metrics import DECISIONS, utterance_probs
from areaser.serve.backends import BASELINE_WINDOW_S, BaselineBackend, TorchBackend, WaveformClassifier, window_db
from areaser.serve.export import OnnxBackend
from areaser.serve.pretrained import is_pretrained, load_pretrained

Source = Union[str, os.PathLike, np.ndarray]
Backend = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class InferenceConfig:
    """How a recording is cut and scored. Times in seconds.

    ``win_s`` must be the window the model was trained on; ``hop_s`` defaults to the paper's
    test hop. ``pad_mode``: how a recording shorter than one window is filled (``repeat``, ``zero``),
    or ``none``: scored as it is, for backends that take any length (a classical baseline's).
    ``silence_db``: windows whose RMS level is below this many dB relative to full
    scale are skipped (not scored, left out of the decision and the timeline); ``None`` scores
    every window. ``decision``: ``prob`` averages the windows' probabilities (the paper),
    ``logits`` averages their logits and applies softmax after (the run's choice when loaded).
    ``batch_size`` windows go through the model at once; ``block_s`` seconds of audio are
    decoded at a time. ``min_duration_s``: shorter recordings are refused (nothing to judge an
    emotion on). ``speech_check``: what to do with sound that is not speech (a constant DC value,
    or a sound that does not change over time: a steady tone, hum, square wave): ``flag`` scores
    it and sets :attr:`Prediction.warning` (``"warning"`` in its JSON), ``refuse`` makes it a
    :class:`Failure` (what ``areaser serve`` does), ``off`` skips the check. ``temperature``: the
    run's calibration ``T`` (:mod:`areaser.runs.calibration`; :meth:`Recognizer.load` reads it from the run
    or the ONNX metadata, 1 when there is none): the utterance probabilities are
    ``softmax(log(p) / T)`` of the decision ``p``, each window's ``softmax(log(p_w) / T)``; the label
    (argmax) is the same for every ``T``. ``vad``: voice activity detection (:mod:`areaser.dsp.vad`): a
    window is scored only if at least :data:`~areaser.dsp.vad.MIN_VOICED_FRACTION` of its 30 ms frames are
    voiced speech (the others are skipped, counted in :attr:`Prediction.skipped`), and a recording with
    no voiced speech, or less than ``min_speech_s`` seconds of it, is a :class:`Failure` ("no speech
    found", "too short: ...").
    """

    win_s: float = 2.0
    hop_s: float = 0.4
    pad_mode: Literal["repeat", "zero", "none"] = "repeat"
    decision: Literal["prob", "logits"] = "prob"
    silence_db: float | None = None
    batch_size: int = 32
    block_s: float = 30.0
    min_duration_s: float = 0.25
    speech_check: Literal["flag", "refuse", "off"] = "flag"
    temperature: float = 1.0
    vad: bool = False
    min_speech_s: float = 0.5

    def __post_init__(self) -> None:

        check_temperature(self.temperature)
        if not self.win_s > 0 or not self.hop_s > 0:
            raise ValueError(
                f"win_s and hop_s must be > 0 seconds, got win_s={float(self.win_s):g}, hop_s={float(self.hop_s):g}"
            )
        if self.silence_db is not None and self.silence_db >= 0:
            raise ValueError(
                "silence_db is a level below full scale: give a negative number (e.g. -50), "
                f"got {float(self.silence_db):g}"
            )
        if self.pad_mode not in ("repeat", "zero", "none"):
            raise ValueError(f"pad_mode must be repeat, zero or none, got {str(self.pad_mode)!r}")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {str(self.decision)!r}")
        if self.speech_check not in ("flag", "refuse", "off"):
            raise ValueError(f"speech_check must be flag, refuse or off, got {str(self.speech_check)!r}")
        if not self.min_duration_s >= 0:
            raise ValueError(f"min_duration_s must be >= 0 seconds, got {float(self.min_duration_s):g}")
        if not self.min_speech_s >= 0:
            raise ValueError(f"min_speech_s must be >= 0 seconds, got {float(self.min_speech_s):g}")
        if self.batch_size < 1 or not self.block_s > 0:
            raise ValueError(
                f"batch_size must be >= 1 and block_s > 0, got {int(self.batch_size)}, {float(self.block_s):g}"
            )


@dataclass
class Window:
    """One scored window: its span in the recording (s) and the class probabilities ``[C]``."""

    start_s: float
    end_s: float
    probabilities: np.ndarray


@dataclass
class Prediction:
    """What :meth:`Recognizer.predict` says about one recording.

    ``probabilities [C]`` is the utterance decision over the scored windows
    (:func:`areaser.runs.metrics.utterance_probs` with the config's ``decision``: by default the
    mean of their probabilities) and ``label`` its argmax; ``timeline`` lists the scored
    windows in time order; ``skipped`` counts windows left out as silence; ``warning`` says why
    the sound does not look like speech (``None`` when it does, or when the check is off).
    """

    source: str
    label: str
    classes: tuple[str, ...]
    probabilities: np.ndarray
    timeline: list[Window]
    duration_s: float
    skipped: int = 0
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return True

    def to_dict(self, timeline: bool = True) -> dict:
        """JSON-ready dict (what ``POST /v1/predict`` returns and ``predict -o x.jsonl`` writes)."""
        probs = lambda p: {c: round(float(v), 6) for c, v in zip(self.classes, p)}  # noqa: E731
        d = {
            "source": self.source,
            "label": self.label,
            "probabilities": probs(self.probabilities),
            "duration_s": round(self.duration_s, 4),
            "windows": len(self.timeline),
            "skipped": self.skipped,
        }
        if self.warning:
            d["warning"] = self.warning
        if timeline:
            d["timeline"] = [
                {
                    "start_s": round(w.start_s, 4),
                    "end_s": round(w.end_s, 4),
                    "label": self.classes[int(np.argmax(w.probabilities))],
                    "probabilities": probs(w.probabilities),
                }
                for w in self.timeline
            ]
        return d


@dataclass
class Failure:
    """A recording that could not be scored: ``error`` is one line naming the file and the reason."""

    source: str
    error: str
    exception: Exception | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return False

    def raise_(self) -> None:
        raise self.exception if self.exception is not None else AudioError(None, self.error)

    def to_dict(self, timeline: bool = True) -> dict:
        return {"source": self.source, "error": self.error}


# the speech check: 64 ms frames (at 16 kHz), and the least mean change of their normalised power spectra
# (total variation, 0..1) between neighbours that a changing sound shows. Measured: steady tones, square, saw
# and pulse waves 0.000-0.025; white noise 0.50; every one of 60 synthetic, 535 EmoDB and 360 RAVDESS files
# (16 kHz) 0.43 or more.
_CHECK_FRAME_S = 0.064
_MIN_SPECTRAL_CHANGE = 0.1


class _SpeechCheck:
    """Streaming test that a recording is a sound that changes, as speech does (fed mono blocks)."""

    def __init__(self, sr: int):
        self.n = 1 << max(4, int(round(np.log2(_CHECK_FRAME_S * sr))))
        self.window = np.hanning(self.n)
        self.rest = np.zeros(0, dtype=np.float32)
        self.prev: np.ndarray | None = None  # the last frame's normalised spectrum (None: silent)
        self.frames, self.pairs, self.change, self.ac_peak = 0, 0, 0.0, 0.0

    def feed(self, block: np.ndarray) -> None:
        y = np.concatenate([self.rest, block])
        k = len(y) // self.n
        self.rest = y[k * self.n :]
        if k == 0:
            return
        frames = y[: k * self.n].reshape(k, self.n).astype(np.float64)
        frames -= frames.mean(axis=1, keepdims=True)  # a DC offset is not sound
        self.ac_peak = max(self.ac_peak, float(np.max(np.abs(frames))))
        power = np.abs(np.fft.rfft(frames * self.window, axis=1)) ** 2
        energy = power.sum(axis=1, keepdims=True)
        spectra = np.where(energy > 1e-12, power / np.maximum(energy, 1e-300), np.nan)
        if self.prev is not None:
            spectra = np.concatenate([self.prev[None], spectra])
        change = 0.5 * np.abs(np.diff(spectra, axis=0)).sum(axis=1)
        change = change[np.isfinite(change)]  # pairs with a silent frame say nothing
        self.pairs += len(change)
        self.change += float(change.sum())
        self.prev = spectra[-1]
        self.frames += k

    def verdict(self) -> str | None:
        """Why the sound is not speech, or ``None``."""
        if self.frames == 0:
            return None
        if self.ac_peak < SILENCE_PEAK:
            return "not speech: the signal is a constant value (a DC offset, no sound)"
        if self.pairs >= 2 and self.change / self.pairs < _MIN_SPECTRAL_CHANGE:
            return (
                "not speech: the sound does not change over time (a steady tone, hum or periodic wave such as "
                f"a square wave; spectral change {self.change / self.pairs:.3f}, speech shows "
                f"{_MIN_SPECTRAL_CHANGE:g} or more)"
            )
        return None


@dataclass
class _Pending:
    """Book-keeping of one source while its windows are in flight."""

    source: str
    starts: list[float] = field(default_factory=list)
    probs: list[np.ndarray | None] = field(default_factory=list)
    in_flight: int = 0
    n_samples: int = 0
    skipped: int = 0
    finished: bool = False
    error: AudioError | None = None
    check: _SpeechCheck | None = None
    vad: object | None = None  # an areaser.dsp.vad.VoiceActivity when the config's vad is on
    unvoiced: int = 0  # windows skipped for too little voiced speech (also counted in skipped)


class Recognizer:
    """Speech emotion recognition on recordings of any length, format, rate and channel count.

    Build one with :meth:`load` (a trained run directory) or from a backend. Then
    :meth:`predict` scores one file or array and :meth:`predict_many` many files, batching
    windows across files for throughput.
    """

    def __init__(
        self,
        backend: Backend,
        classes: Sequence[str],
        sr: int = DEFAULT_SR,
        config: InferenceConfig = InferenceConfig(),
        name: str = "model",
    ):
        self.backend = backend
        self.classes = tuple(classes)
        self.sr = int(sr)
        self.config = config
        self.name = name

    @classmethod
    def load(
        cls,
        model: str | os.PathLike,
        *,
        backend: Literal["torch", "onnx"] = "torch",
        onnx_path: str | os.PathLike | None = None,
        threads: int | None = None,
        **overrides,
    ) -> "Recognizer":
        """Load a trained model: a run directory of ``areaser train`` (safetensors + JSON, no pickle).

        A classical baseline run (``--model egemaps-lr`` / ``egemaps-svm``) scores windows of up to
        :data:`~areaser.serve.backends.BASELINE_WINDOW_S` seconds, unpadded, with its classifier
        (:class:`~areaser.serve.backends.BaselineBackend`; PyTorch's and ONNX's backends do not apply).
        ``model`` may also be a pretrained folder (``areaser export RUN --pretrained DIR``): see
        :meth:`from_pretrained`.

        ``backend='onnx'`` runs ``onnx_path`` (default ``model/model.onnx``, written by
        ``areaser export``) in ONNX Runtime instead of PyTorch; ``model`` may also be that
        ``.onnx`` file itself. ``threads`` sets ONNX Runtime's threads (PyTorch's are
        ``torch.set_num_threads``). ``overrides`` replace :class:`InferenceConfig` fields
        (``hop_s``, ``silence_db``, ``batch_size``, ...); the window comes from the model.
        """
        model = Path(model)
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        if is_baseline_run(model):
            if backend == "onnx":
                raise ValueError(
                    f"{model}: a classical baseline run has no ONNX graph (its pitch tracking is not an ONNX "
                    "operator); score it with the default backend"
                )
            fit = load_fitted(model)
            w = BASELINE_WINDOW_S
            config = InferenceConfig(win_s=w, hop_s=w, pad_mode="none", decision="prob")
            return cls(BaselineBackend(fit), fit.classes, fit.sr, replace(config, **overrides), model.name)
        if model.suffix == ".onnx" or backend == "onnx":
            onnx = model if model.suffix == ".onnx" else Path(onnx_path or model / "model.onnx")
            if not onnx.is_file():
                run = "RUN_DIR" if model.suffix == ".onnx" else model  # the file itself was named: its run is unknown
                raise ValueError(f"{onnx}: no ONNX model here; write it with `areaser export {run} --onnx {onnx}`")
            be = OnnxBackend(onnx, threads)
            seg = be.meta["segments"]
            config = InferenceConfig(
                win_s=seg["win_s"], hop_s=seg["hop_s"], pad_mode=seg["pad_mode"], decision=seg.get("decision", "prob"),
                temperature=(be.meta.get("calibration") or {}).get("temperature", 1.0),
            )  # fmt: skip
            return cls(be, be.classes, be.sr, replace(config, **overrides), model.stem if model.suffix else model.name)

        if is_pretrained(model):  # a folder of `areaser export RUN --pretrained DIR`
            return cls.from_pretrained(model, **overrides)
        run = load_run(model)
        seg = run.config["segments"]
        config = InferenceConfig(
            win_s=float(seg["win_s"]),
            hop_s=float(seg["test_hop_s"]),
            pad_mode=seg.get("pad_mode", "repeat"),
            decision=run.config.get("decision", "prob"),
            temperature=run_temperature(model, run.header),
        )
        backend_ = TorchBackend(WaveformClassifier(run.features, run.model))
        return cls(backend_, run.classes, run.sr, replace(config, **overrides), model.name)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> "Recognizer":
        """Load a pretrained folder (``areaser export RUN --pretrained DIR``) to run in PyTorch.

        Reads ``config.json``, ``preprocessor_config.json`` and ``model.safetensors`` only (no pickle,
        no code from the folder), each checked before a module is built
        (:func:`areaser.serve.pretrained.load_pretrained`). The window, hop, padding, decision and calibration
        temperature come from the folder; ``overrides`` replace :class:`InferenceConfig` fields
        (``hop_s``, ``silence_db``, ...). :meth:`load` recognises such a folder too.
        """
        m = load_pretrained(path)
        config = InferenceConfig(
            win_s=m.win_s, hop_s=m.hop_s, pad_mode=m.pad_mode, decision=m.decision, temperature=m.temperature
        )
        backend = TorchBackend(WaveformClassifier(m.features, m.model))
        name = Path(path).name or Path(path).resolve().name
        return cls(backend, m.classes, m.sr, replace(config, **overrides), name)

    def with_config(self, **overrides) -> "Recognizer":
        """A recognizer sharing this one's backend with some :class:`InferenceConfig` fields replaced."""
        return Recognizer(self.backend, self.classes, self.sr, replace(self.config, **overrides), self.name)

    # ------------------------------------------------------------------ predict

    def predict(self, source: Source, sample_rate: int | None = None) -> Prediction:
        """Score one recording: a path to any file soundfile reads, or an array.

        Parameters
        ----------
        source : path, or samples ``[N]`` or ``[N, C]`` (float in [-1, 1], or integer PCM).
        sample_rate : the array's rate in Hz (default: the model's, 16000); files carry their own.

        Returns
        -------
        :class:`Prediction`: label, utterance probabilities ``[C]``, per-window timeline.

        Raises
        ------
        AudioError : the file or array is not usable audio (message names it and the reason).
        """
        if sample_rate is not None and not isinstance(source, np.ndarray):
            raise ValueError("sample_rate is for arrays; a file's rate is read from the file")
        result = next(self._iter([source], sample_rate))
        if isinstance(result, Failure):
            result.raise_()
        return result

    def predict_many(
        self,
        sources: Iterable[Source],
        *,
        errors: Literal["raise", "return"] = "return",
    ) -> Iterator[Prediction | Failure]:
        """Score many recordings, batching windows across them; yields one result per source, in order.

        A source that fails yields a :class:`Failure` (``errors='return'``, default) so one bad file
        never stops a run, or raises :class:`AudioError` (``errors='raise'``). Results come as soon
        as all of a source's windows are scored, so a progress bar can follow them.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        for result in self._iter(sources, None):
            if errors == "raise" and isinstance(result, Failure):
                result.raise_()
            yield result

    # ------------------------------------------------------------------ embed

    def embed(self, sources: Iterable[Source]) -> np.ndarray:
        """Embeddings ``[n_sources, D]`` float32 of recordings, one row per source in order.

        A row is the model's pooled penultimate layer (:meth:`areaser.models.cnn.AreaAttentionCNN.embed`,
        the input of its classifier) averaged over the recording's windows (those ``predict``
        scores: same windows, hop and silence skip).

        For a classical baseline run the vector is what its classifier reads: the utterance functionals,
        imputed and standardised. Needs a run directory (the ONNX backend gives probabilities only);
        raises :class:`AudioError` for a source that cannot
        be read (:meth:`embed_many` returns a :class:`Failure` for it instead).
        """
        out = [r.vector for r in self.embed_many(sources, errors="raise")]
        return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)

    def embed_many(
        self, sources: Iterable[Source], *, errors: Literal["raise", "return"] = "return"
    ) -> Iterator["Embedding | Failure"]:
        """:meth:`embed` one source at a time: an :class:`Embedding` or a :class:`Failure` per source, in order."""
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        embed = getattr(self.backend, "embed", None)
        if embed is None:
            raise ValueError(
                f"embeddings need the model itself (a run directory); the {getattr(self.backend, 'name', '?')} "
                "backend only returns probabilities"
            )
        for result in self._iter(sources, None, embed, self._finish_embedding):
            if errors == "raise" and isinstance(result, Failure):
                result.raise_()
            yield result

    def _finish_embedding(self, entry: _Pending) -> "Embedding | Failure":
        failure, warning = self._refused(entry)
        if failure is not None:
            return failure
        vector = np.mean(np.stack(entry.probs).astype(np.float64), axis=0).astype(np.float32)
        return Embedding(entry.source, vector, len(entry.probs), entry.n_samples / self.sr, entry.skipped, warning)

    # ------------------------------------------------------------------ internals

    def _blocks(self, source: Source, sample_rate: int | None, entry: _Pending) -> Iterator[np.ndarray]:
        """Decoded mono blocks at the model rate; counts samples into ``entry``."""
        if isinstance(source, np.ndarray):
            blocks: Iterable[np.ndarray] = [_array_to_mono(source, sample_rate or self.sr, self.sr)]
        else:
            blocks = stream_audio(source, self.sr, self.config.block_s)
        for block in blocks:
            entry.n_samples += len(block)
            if entry.check is not None:
                entry.check.feed(block)
            if entry.vad is not None:
                entry.vad.feed(block)
            yield block
        if entry.vad is not None:
            entry.vad.feed(np.zeros(0, dtype=np.float32), last=True)  # flush its resampler

    def _iter(
        self, sources: Iterable[Source], sample_rate: int | None, backend: Backend | None = None, finish=None
    ) -> Iterator[Prediction | Failure]:
        """Results of ``sources``, in order; ``backend`` scores batches of windows, ``finish`` makes results."""
        cfg = self.config
        backend = backend or self.backend
        finish = finish or self._finish
        order: deque[_Pending] = deque()
        batch: list[tuple[_Pending, int, np.ndarray]] = []

        def flush() -> None:
            if not batch:
                return
            ws = [w for _, _, w in batch]  # of one length, but for a recording shorter than an unpadded window
            probs = backend(np.stack(ws) if len({len(w) for w in ws}) == 1 else ws)
            for (entry, i, _), p in zip(batch, probs):
                entry.probs[i] = p
                entry.in_flight -= 1
            batch.clear()

        def ready() -> Iterator[Prediction | Failure]:
            while order and order[0].finished and order[0].in_flight == 0:
                yield finish(order.popleft())

        for source in sources:
            entry = _Pending("<array>" if isinstance(source, np.ndarray) else str(source))
            if cfg.speech_check != "off":
                entry.check = _SpeechCheck(self.sr)
            if cfg.vad:
                entry.vad = VoiceActivity(self.sr)
            order.append(entry)
            try:
                windows = stream_windows(
                    self._blocks(source, sample_rate, entry), self.sr, cfg.win_s, cfg.hop_s, cfg.pad_mode
                )
                for start_s, w in windows:
                    if cfg.silence_db is not None and window_db(w[None])[0] < cfg.silence_db:
                        entry.skipped += 1
                        continue
                    if cfg.vad and not _window_voiced(w, self.sr):
                        entry.skipped += 1
                        entry.unvoiced += 1
                        continue
                    entry.starts.append(start_s)
                    entry.probs.append(None)
                    entry.in_flight += 1
                    batch.append((entry, len(entry.probs) - 1, w))
                    if len(batch) >= cfg.batch_size:
                        flush()
                        yield from ready()
            except AudioError as e:
                entry.error = e
            entry.finished = True
            yield from ready()
        flush()
        yield from ready()

    def _refused(self, entry: _Pending) -> tuple[Failure | None, str | None]:
        """``(failure or None, speech-check warning)`` of a source whose windows are all scored."""
        if entry.error is not None:
            return Failure(entry.source, str(entry.error), entry.error), None
        duration = entry.n_samples / self.sr
        if entry.n_samples and duration < self.config.min_duration_s:
            err = AudioError(
                entry.source,
                f"too short: {duration:.3f} s of audio ({entry.n_samples} samples at {self.sr} Hz); "
                f"at least {self.config.min_duration_s:g} s is needed",
            )
            return Failure(entry.source, str(err), err), None
        warning = entry.check.verdict() if entry.check is not None else None
        if warning is not None and self.config.speech_check == "refuse":
            err = AudioError(entry.source, warning)
            return Failure(entry.source, str(err), err), warning
        if entry.vad is not None and (reason := _vad_verdict(entry, self.config)) is not None:
            err = AudioError(entry.source, reason)
            return Failure(entry.source, str(err), err), warning
        if not entry.probs:
            reason = (
                f"every window is below the silence threshold of {self.config.silence_db:g} dBFS"
                if entry.skipped
                else "no audio samples (zero length)"
            )
            err = AudioError(entry.source, reason)
            return Failure(entry.source, str(err), err), warning
        return None, warning

    def _finish(self, entry: _Pending) -> Prediction | Failure:
        failure, warning = self._refused(entry)
        if failure is not None:
            return failure
        duration = entry.n_samples / self.sr
        probs = np.stack(entry.probs)
        # the backend gives probabilities [n, C]; the decision takes their logs (log-probabilities
        # are logits up to one constant per window), floored so an underflowed 0 stays finite
        log_probs = np.log(np.maximum(probs.astype(np.float64), 1e-30))
        decided = utterance_probs(log_probs, decision=self.config.decision).astype(np.float32)
        label = self.classes[int(np.argmax(decided))]  # the decision; calibration keeps it (argmax of the same order)
        t = self.config.temperature
        if t != 1.0:  # calibrated probabilities: softmax(log(p) / T) of the decision and of every window
            decided, probs = calibrate(decided, t).astype(np.float32), calibrate(probs, t).astype(np.float32)
        timeline = [Window(s, min(s + self.config.win_s, duration), p) for s, p in zip(entry.starts, probs)]
        return Prediction(
            entry.source,
            label,
            self.classes,
            decided,
            timeline,
            duration,
            entry.skipped,
            warning,
        )


@dataclass
class Embedding:
    """What :meth:`Recognizer.embed_many` says about one recording.

    ``vector [D]``: the mean over its ``windows`` of the model's penultimate representation.
    """

    source: str
    vector: np.ndarray
    windows: int
    duration_s: float
    skipped: int = 0
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return True


def _window_voiced(window: np.ndarray, sr: int) -> bool:

    return window_voiced(window, sr)


def _vad_verdict(entry: _Pending, cfg: InferenceConfig) -> str | None:
    """Why a recording is refused with voice activity detection on, or ``None``."""
    speech = entry.vad.speech_s
    if speech == 0:
        return "no speech found (voice activity detection: no voiced speech in the recording)"
    if not entry.probs and entry.unvoiced:  # scattered voiced-like frames (noise, clicks) but no window of speech
        return (
            f"no speech found: no {cfg.win_s:g} s window is at least {MIN_VOICED_FRACTION:.0%} voiced speech "
            f"({speech:.2f} s of voiced frames in all)"
        )
    if speech < cfg.min_speech_s:
        return f"too short: {speech:.2f} s of speech, at least {cfg.min_speech_s:g} s needed"
    return None


def _array_to_mono(y: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """Validate an in-memory recording ``[N]`` or ``[N, C]`` and bring it to mono float32 at ``sr``."""
    y = np.asarray(y)
    if y.ndim not in (1, 2) or y.size == 0:
        raise AudioError("<array>", f"expected samples [N] or [N, channels], got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer):
        y = y.astype(np.float32) / float(-np.iinfo(y.dtype).min)  # integer PCM to [-1, 1)
    elif not np.issubdtype(y.dtype, np.floating):
        raise AudioError("<array>", f"expected float or integer samples, got dtype {y.dtype}")
    y = to_mono(y.astype(np.float32, copy=False))
    if not np.isfinite(y).all():
        raise AudioError("<array>", "contains NaN or infinite samples")
    if float(np.max(np.abs(y))) < SILENCE_PEAK:
        raise AudioError("<array>", "silent: every sample is zero")
    y = resample(y, int(orig_sr), sr)
    return np.clip(y, -1.0, 1.0).astype(np.float32, copy=False)

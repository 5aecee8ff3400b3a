"""Inference backends: ``windows -> probabilities [B, C]`` behind one call, and ``embed`` for embeddings.

:class:`TorchBackend` runs a neural model (log-Mel + model + softmax), :class:`BaselineBackend` a classical
baseline run (functionals + its scikit-learn classifier); :class:`areaser.serve.export.OnnxBackend` an
exported graph (probabilities only).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from areaser.runs.fitted import FittedBaseline

# A baseline reads functionals of a whole utterance (its duration among them), so it scores windows the
# length of an acted utterance, never padded: a recording up to this long is one window as it is, a longer
# one is cut into windows of this length (the corpora here: EmoDB 1.2-9.0 s, RAVDESS 2.9-5.3 s).
BASELINE_WINDOW_S = 10.0


def window_db(windows: np.ndarray) -> np.ndarray:
    """RMS level of each window ``[B, N]`` in dB relative to full scale ``[B]`` (silence: -200)."""
    power = np.mean(np.square(windows, dtype=np.float64), axis=-1)
    return 10.0 * np.log10(np.maximum(power, 1e-20))


class WaveformClassifier(nn.Module):
    """Waveform windows to class probabilities: ``[B, N] -> [B, C]`` (log-Mel, model, softmax).

    The module :class:`TorchBackend` runs. The ONNX export (:func:`areaser.serve.export.export_modules`)
    does not use it: it exports the model alone (log-Mel in, logits and probabilities out), and
    :class:`~areaser.serve.export.OnnxBackend` computes the log-Mel with the run's own
    :class:`~areaser.dsp.features.LogMel`, as this module does.
    """

    def __init__(self, features: nn.Module, model: nn.Module):
        super().__init__()
        self.features = features
        self.model = model

    def forward(self, wave: Tensor) -> Tensor:
        return torch.softmax(self.model(self.features(wave)), dim=-1)


class TorchBackend:
    """Run a :class:`WaveformClassifier` in PyTorch (CPU, eval mode, no autograd)."""

    name = "torch"

    def __init__(self, classifier: WaveformClassifier):
        self.classifier = classifier.eval()

    # no_grad, not inference_mode: inference tensors may not be updated in place outside
    # inference mode, and the area attention updates its blocks in place in worker threads
    # (where the mode, being per thread, is off)
    @torch.no_grad()
    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """``windows [B, N]`` float32 -> probabilities ``[B, C]`` float32."""
        return self.classifier(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))).numpy()

    @torch.no_grad()
    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``windows [B, N]`` -> the model's pooled penultimate layer ``[B, D]`` float32."""
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        return self.classifier.model.embed(self.classifier.features(x)).float().numpy()


class BaselineBackend:
    """Score windows with a classical baseline run: each window's functionals, then the run's classifier.

    Windows may differ in length (a recording shorter than :data:`BASELINE_WINDOW_S` is one window, not
    padded): a sequence of mono arrays ``[N_i]`` at the run's rate, or one array ``[B, N]``.
    """

    name = "baseline"

    def __init__(self, fit: FittedBaseline):
        self.fit = fit
        self.fit.classifier  # fitted once, now, so the first request does not pay for it

    def __call__(self, windows: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Probabilities ``[B, C]`` float32."""
        return self.fit.classifier.predict_proba(self.fit.features(list(windows))).astype(np.float32)

    def embed(self, windows: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """The functionals as the classifier reads them (median-imputed, standardised) ``[B, F]`` float32."""
        return self.fit.classifier.transform(self.fit.features(list(windows))).astype(np.float32)

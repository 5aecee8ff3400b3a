"""Inference backends: a PyTorch waveform classifier (log-Mel + model) behind one call."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


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


class _EmbedBackend:
    """``windows [B, N] -> embeddings [B, D]`` with a :class:`WaveformClassifier`'s modules (eval, no grad)."""

    def __init__(self, classifier: WaveformClassifier):
        self.classifier = classifier.eval()

    @torch.no_grad()
    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        return self.classifier.model.embed(self.classifier.features(x)).float().numpy()

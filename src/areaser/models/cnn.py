"""The paper's CNN with multiscale area attention, built from one dataclass config by name.

    log-Mel [B, n_mels, T] (H = frequency, W = time)
      -> conv1a 16 k(10,2) | conv1b 16 k(2,8)   in parallel, each Conv + BN + ReLU, concatenated
      -> conv2 32 3x3 + maxpool 2 -> conv3 48 3x3 + maxpool 2 -> conv4 64 3x3 -> conv5 80 3x3
      -> area attention on the 80-channel map -> head -> logits [B, n_classes]

Presets (:data:`PRESETS`, all :class:`ModelConfig`):

* ``faithful``: what the authors' code computes. Branches concatenated on the *frequency* axis
  (256 rows, a 64 x 20 x 80 map for a 2 s window), ``rows`` layout (1-D time spans inside each
  frequency row, so "3x3" is really 1x3), no Q/K/V projections, no 1/sqrt(d) scaling, mean keys,
  sum values, attention dropout 0.5 that also runs at evaluation (``dropout_at_eval``), sample
  noise at evaluation too, flatten + dense. This preset keeps PyTorch's constants (ordinary
  BatchNorm, PyTorch's initialisation, max area 3 x 3) so benchmarks of it stay comparable; the
  ``faithful`` *training* preset (:data:`areaser.runs.config.TRAIN_PRESETS`) adds the rest of the authors'
  Keras defaults through ``model_overrides``: :data:`KERAS_OVERRIDES` (frozen BatchNorm with Keras'
  epsilon 1e-3 and momentum 0.99, Glorot-uniform weights, zero biases, biased convolutions) and max
  area 1 x 1, as their committed script ran.
* ``paper`` (default): the paper as written: 2-D areas over the whole map (10,773 areas of up to
  3 x 3 on 64 x 20), Eq. 1's Q/K/V projections and 1/sqrt(d) scaling, dropout and BatchNorm with
  proper train/eval behaviour, frequency concat as in the code (``concat="channel"`` is the
  other reading of the text).
* ``cnn``: the same convolutional stack without attention: global average pooling + linear.

Input length. Any ``T >= 4`` frames works (two 2x poolings need a map at least 1 column wide).
The paper's head flattens the 64 x 20 x 80 map into a dense layer, which ties it to 81-frame
(2 s) windows. ``paper`` therefore averages the attention output over time and flattens
frequency x channels (``head="time_pool"``): frequency position keeps its meaning as in the
flatten, while time, whose length varies between utterances, is summarised. ``faithful`` keeps
flatten + dense (``head="flatten"``) and, for inputs other than ``ref_frames`` = 81, resizes the
attention output over time to the 20 columns of the paper's map by adaptive average pooling
(the identity at 81 frames). ``cnn`` pools over both axes (``head="global_pool"``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from areaser.core.registry import Registry
from areaser.dsp.features import MAX_N_MELS, check_types
from areaser.models.areas import KEY_MODES, LAYOUTS, VALUE_MODES
from areaser.models.attention import BACKENDS
from areaser.models.layers import AreaAttention

__all__ = [
    "ModelConfig",
    "PRESETS",
    "KERAS_OVERRIDES",
    "AreaAttentionCNN",
    "FrozenBatchNorm2d",
    "build_model",
    "build_model_from_config",
    "glorot_init",
    "MIN_FRAMES",
]

MIN_FRAMES = 4  # two 2x max-poolings over time leave >= 1 column
# Bounds on the numbers that size weights and buffers, checked before a model is built: a config read from a
# file (a run directory, a checkpoint header) with a crafted size would otherwise allocate gigabytes first.
MAX_FRAMES = 2**15  # frames of one input window: 60 s at a 2 ms hop (the paper: 81)
MAX_CHANNELS = 1024  # per convolution: 13x the paper's widest (80)
MAX_KERNEL = 64  # a kernel side: 6x the paper's largest (10, conv1a)
MAX_AREA = 64  # an area side: the whole height of the paper's 64 x 20 map (its areas are <= 3 x 3)
MAX_BLOCK_ELEMENTS = 2**26  # attention logits held at once: 256 MiB of float32, 8x the largest default
MAX_PARAMETERS = 10**8  # 400 MB of float32 weights: 200x the faithful model's 0.5 M
MAX_CLASSES = 1000  # emotion sets have 4 to a dozen classes
MAX_CLASS_NAME = 100  # characters of one class name
ARCHS = ("aacnn", "cnn")
HEADS = ("time_pool", "flatten", "global_pool")
INITS = ("torch", "glorot")


@dataclass
class ModelConfig:
    """Every option of the model; ``dataclasses.asdict`` round-trips through JSON (:meth:`from_dict`).

    Architecture: ``arch`` ``"aacnn"`` (CNN + area attention) or ``"cnn"`` (no attention);
    ``channels`` = (each conv1 branch, conv2, conv3, conv4, conv5); ``concat`` of the two conv1
    branches on the ``"freq"`` axis (authors' code) or ``"channel"`` axis; ``batchnorm``
    ``"batch"`` or ``"frozen"`` (running statistics 0 / 1 forever: an affine map); ``bn_eps`` and
    ``bn_momentum`` (PyTorch's convention: the weight of the new batch, Keras' ``1 - momentum``);
    ``head`` ``"time_pool"``, ``"flatten"`` (sized for ``ref_frames`` input frames) or
    ``"global_pool"``; ``conv_bias`` (a bias in every convolution, as Keras' ``Conv2D``; redundant
    before BatchNorm but part of the authors' parametrisation); ``init`` ``"torch"`` (PyTorch's
    defaults) or ``"glorot"`` (Keras' defaults: Glorot-uniform weights of every convolution and
    linear layer, zero biases).

    Attention (see :class:`areaser.models.layers.AreaAttention`): ``key_mode``, ``value_mode``,
    ``max_area`` (h, w), ``layout`` ``"2d"`` or ``"rows"``, ``temperature``, ``top_k``, ``scale``
    (1/sqrt(d)), ``project`` (Q/K/V/output projections), ``heads``, ``dropout`` (attention
    dropout on the area weights), ``dropout_at_eval``, ``sample_at_eval``, ``block_elements``,
    ``attention_backend`` (:data:`areaser.models.attention.BACKENDS`: ``"auto"`` fuses the attention's
    blocks with ``torch.compile`` when training on a map of >= 256 positions where a compiler is
    found, except under ``--deterministic strict``; ``"eager"``; ``"compiled"``).
    """

    name: str = "paper"
    arch: str = "aacnn"
    n_classes: int = 4
    n_mels: int = 128
    channels: tuple[int, ...] = (16, 32, 48, 64, 80)
    conv1a_kernel: tuple[int, int] = (10, 2)
    conv1b_kernel: tuple[int, int] = (2, 8)
    kernel_size: int = 3
    concat: str = "freq"
    batchnorm: str = "batch"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    conv_bias: bool = False
    init: str = "torch"
    head: str = "time_pool"
    ref_frames: int = 81
    key_mode: str = "mean"
    value_mode: str = "sum"
    max_area: tuple[int, int] = (3, 3)
    layout: str = "2d"
    temperature: float = 1.0
    top_k: int = 0
    scale: bool = True
    project: bool = True
    heads: int = 1
    dropout: float = 0.5
    dropout_at_eval: bool = False
    sample_at_eval: bool = False
    block_elements: int | None = None
    attention_backend: str = "auto"

    def __post_init__(self) -> None:
        check_types(self, "model option ")
        # JSON gives lists; keep tuples so configs compare equal after a round trip
        for name in ("channels", "conv1a_kernel", "conv1b_kernel", "max_area"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        choices = {"arch": ARCHS, "concat": ("freq", "channel"), "batchnorm": ("batch", "frozen"), "head": HEADS,
                   "key_mode": KEY_MODES, "value_mode": VALUE_MODES, "layout": LAYOUTS, "init": INITS,
                   "attention_backend": BACKENDS}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"model option {name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if len(self.channels) != 5 or min(self.channels) < 1:
            raise ValueError(f"channels must be 5 positive numbers (conv1 branch, conv2..conv5), got {self.channels}")
        if len(self.max_area) != 2 or min(self.max_area) < 1:
            raise ValueError(f"max_area must be (height, width) >= (1, 1), got {self.max_area}")
        if self.n_classes < 2 or self.n_mels < MIN_FRAMES or self.ref_frames < MIN_FRAMES:
            raise ValueError(f"need n_classes >= 2, n_mels >= {MIN_FRAMES}, ref_frames >= {MIN_FRAMES}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.bn_eps > 0 or not 0.0 <= self.bn_momentum <= 1.0:
            raise ValueError(f"need bn_eps > 0 and bn_momentum in [0, 1], got {self.bn_eps}, {self.bn_momentum}")
        bounds = {"channels": (self.channels, MAX_CHANNELS), "max_area": (self.max_area, MAX_AREA),
                  "conv1a_kernel": (self.conv1a_kernel, MAX_KERNEL), "conv1b_kernel": (self.conv1b_kernel, MAX_KERNEL),
                  "kernel_size": ((self.kernel_size,), MAX_KERNEL), "n_classes": ((self.n_classes,), MAX_CLASSES),
                  "n_mels": ((self.n_mels,), MAX_N_MELS), "ref_frames": ((self.ref_frames,), MAX_FRAMES),
                  "block_elements": ((self.block_elements or 1,), MAX_BLOCK_ELEMENTS)}  # fmt: skip
        for name, (values, most) in bounds.items():
            if not all(1 <= v <= most for v in values):
                raise ValueError(f"model option {name}={getattr(self, name)} is out of range: need 1 to {most}")
        if not 1 <= self.heads <= self.channels[-1] or self.top_k < 0 or not self.temperature > 0:
            raise ValueError(
                f"need 1 <= heads <= channels[-1] ({self.channels[-1]}), top_k >= 0 and temperature > 0, "
                f"got {self.heads}, {self.top_k}, {self.temperature}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of ``dataclasses.asdict`` (also after JSON); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(d))

    @property
    def map_height(self) -> int:
        """Frequency rows of the attention map (64 for 128 mels with frequency concat)."""
        rows = 2 * self.n_mels if self.concat == "freq" else self.n_mels
        return rows // 2 // 2

    @staticmethod
    def map_width(frames: int) -> int:
        """Time columns of the attention map for an input of ``frames`` frames (81 -> 20)."""
        return frames // 2 // 2


PRESETS: Registry[ModelConfig] = Registry("model", {
    "faithful": ModelConfig(
        name="faithful", layout="rows", scale=False, project=False, head="flatten",
        dropout=0.5, dropout_at_eval=True, sample_at_eval=True,
    ),
    "paper": ModelConfig(name="paper"),
    "cnn": ModelConfig(name="cnn", arch="cnn", head="global_pool", dropout=0.0),
})  # fmt: skip

# The Keras defaults of the authors' layers (tf.keras ``Conv2D``, ``Dense``, ``BatchNormalization``),
# as model options: the ``faithful`` training preset's ``model_overrides`` (with their max area).
# Their BatchNormalization layers were called without a ``training`` flag under TF1 eager, where
# Keras' learning phase is 0: they normalised with their initial moving statistics (mean 0,
# variance 1) for good, ``gamma * x / sqrt(1 + 1e-3) + beta``, gamma and beta still trained.
KERAS_OVERRIDES: dict[str, Any] = {
    "batchnorm": "frozen",
    "bn_eps": 1e-3,  # Keras BatchNormalization epsilon
    "bn_momentum": 0.01,  # Keras momentum 0.99 = PyTorch momentum 1 - 0.99 (unused while frozen)
    "conv_bias": True,  # Conv2D(use_bias=True)
    "init": "glorot",  # kernel_initializer="glorot_uniform", bias_initializer="zeros"
}


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics and never updates them.

    With the initial statistics (mean 0, variance 1) this is ``x / sqrt(1 + eps) * weight + bias``
    (weight and bias still learn): what Keras' ``BatchNormalization`` does when called without
    ``training=True`` where the learning phase is 0 (the authors' TF1 eager loop), with Keras'
    ``eps`` 1e-3 (``bn_eps``).
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def _conv_block(c_in: int, c_out: int, kernel: int | tuple[int, int], c: ModelConfig) -> nn.Sequential:
    """Zero pad + Conv + BN + ReLU. The padding is TF's 'same': even kernels pad one more after."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    pad = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)  # left, right, top, bottom
    norm = FrozenBatchNorm2d if c.batchnorm == "frozen" else nn.BatchNorm2d
    return nn.Sequential(
        nn.ZeroPad2d(pad),
        nn.Conv2d(c_in, c_out, (kh, kw), bias=c.conv_bias),
        norm(c_out, eps=c.bn_eps, momentum=c.bn_momentum),
        nn.ReLU(inplace=True),
    )


def glorot_init(model: nn.Module) -> nn.Module:
    """Keras' default initialisation: Glorot-uniform weights of every Conv2d and Linear, zero biases.

    Glorot uniform draws from U(-a, a) with ``a = sqrt(6 / (fan_in + fan_out))``; for a convolution
    the fans count the receptive field (``in * kh * kw``, ``out * kh * kw``), as in Keras and
    :func:`torch.nn.init.xavier_uniform_`. BatchNorm keeps gamma 1, beta 0 (Keras' defaults too).
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


class AreaAttentionCNN(nn.Module):
    """The paper's CNN (+ area attention unless ``arch="cnn"``); see the module docstring.

    ``forward(x)``: log-Mel ``[B, n_mels, T]`` or ``[B, 1, n_mels, T]`` with ``T >= 4``
    -> logits ``[B, n_classes]``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        c1, c2, c3, c4, c5 = c.channels
        self.conv1a = _conv_block(1, c1, c.conv1a_kernel, c)
        self.conv1b = _conv_block(1, c1, c.conv1b_kernel, c)
        self.conv2 = _conv_block(c1 if c.concat == "freq" else 2 * c1, c2, c.kernel_size, c)
        self.conv3 = _conv_block(c2, c3, c.kernel_size, c)
        self.conv4 = _conv_block(c3, c4, c.kernel_size, c)
        self.conv5 = _conv_block(c4, c5, c.kernel_size, c)
        self.attention = None
        if c.arch == "aacnn":
            self.attention = AreaAttention(
                c5, key_mode=c.key_mode, value_mode=c.value_mode, max_area=c.max_area, layout=c.layout,
                temperature=c.temperature, top_k=c.top_k, scale=c.scale, project=c.project, heads=c.heads,
                dropout=c.dropout, dropout_at_eval=c.dropout_at_eval, sample_at_eval=c.sample_at_eval,
                block_elements=c.block_elements, backend=c.attention_backend,
            )  # fmt: skip
        features = {"flatten": c5 * c.map_height * c.map_width(c.ref_frames),
                    "time_pool": c5 * c.map_height, "global_pool": c5}[c.head]  # fmt: skip
        self.classifier = nn.Linear(features, c.n_classes)
        if c.init == "glorot":
            glorot_init(self)

    @property
    def stochastic_at_eval(self) -> bool:
        """Whether evaluation draws random numbers (attention dropout or area sampling kept at eval).

        Then every scoring of the same weights is another draw (the ``faithful`` preset, as the
        authors' code).
        """
        a = self.attention
        if a is None:
            return False
        return (a.dropout > 0 and a.dropout_at_eval) or (a.key_mode.startswith("sample") and a.sample_at_eval)

    def feature_map(self, x: Tensor) -> Tensor:
        """Input -> the (attended) map ``[B, C, H, W]`` that the head reads."""
        x = self._check(x)
        a, b = self.conv1a(x), self.conv1b(x)
        x = torch.cat([a, b], dim=2 if self.config.concat == "freq" else 1)
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.max_pool2d(self.conv3(x), 2)
        x = self.conv5(self.conv4(x))
        return self.attention(x) if self.attention is not None else x

    def embed(self, x: Tensor) -> Tensor:
        """Input -> the penultimate representation ``[B, D]``, the input of ``classifier``.

        ``forward(x) == classifier(embed(x))``. ``D``: ``channels[-1]`` (``global_pool``),
        ``channels[-1] * map_height`` (``time_pool``), the flattened map (``flatten``).
        """
        x = self.feature_map(x)
        head = self.config.head
        if head == "global_pool":
            x = x.mean(dim=(2, 3))
        elif head == "time_pool":
            x = x.mean(dim=3).flatten(1)
        else:  # flatten, resized over time to the paper's map (identity at ref_frames)
            width = self.config.map_width(self.config.ref_frames)
            if x.shape[3] != width:
                x = F.adaptive_avg_pool2d(x, (x.shape[2], width))
            x = x.flatten(1)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))

    def _check(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        n_mels = self.config.n_mels
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != n_mels:
            raise ValueError(f"expected log-Mel input [batch, {n_mels}, frames] or [batch, 1, {n_mels}, frames], "
                             f"got {tuple(x.shape)}")  # fmt: skip
        if x.shape[3] < MIN_FRAMES:
            raise ValueError(f"input has {x.shape[3]} frames; the model needs at least {MIN_FRAMES} "
                             f"(two 2x poolings over time)")  # fmt: skip
        return x


def check_classes(classes: Any) -> tuple[str, ...]:
    """``classes`` as a tuple, or ValueError: they must be 2 to :data:`MAX_CLASSES` distinct names.

    A model file's class list sizes the output layer and labels every score, so it is checked
    before anything is built from it: a list of strings, each non-empty and at most
    :data:`MAX_CLASS_NAME` characters, no name twice.
    """
    if classes is None:
        raise ValueError("classes: missing (the names of the model's outputs)")
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"classes must be a list of names, got {str(classes)[:80]}")
    if not 2 <= len(classes) <= MAX_CLASSES:
        raise ValueError(f"classes: {len(classes)} names, need 2 to {MAX_CLASSES}")
    bad = [c for c in classes if not 0 < len(c.strip()) <= MAX_CLASS_NAME]
    if bad:
        raise ValueError(f"classes: {bad[0][:MAX_CLASS_NAME]!r} is empty or over {MAX_CLASS_NAME} characters")
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:
        raise ValueError(f"classes: {', '.join(map(repr, twice))} given more than once")
    return tuple(classes)


def build_model_from_config(config: ModelConfig | Mapping[str, Any]) -> AreaAttentionCNN:
    """A model from a :class:`ModelConfig` or its dict (e.g. read back from a checkpoint).

    ValueError, before any weight is allocated, when the model would have more than
    :data:`MAX_PARAMETERS` parameters (sizes within their own bounds can still multiply up).
    """
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    with torch.device("meta"):  # shapes only: counts the parameters without allocating them
        n = sum(p.numel() for p in AreaAttentionCNN(config).parameters())
    if n > MAX_PARAMETERS:
        raise ValueError(f"the model would have {n:,} parameters, more than {MAX_PARAMETERS:,}: sizes too large")
    return AreaAttentionCNN(config)


def build_model(name: str = "paper", **overrides: Any) -> AreaAttentionCNN:
    """A model from a preset name (``faithful``, ``paper``, ``cnn``) with options overridden.

    >>> build_model("paper", max_area=(4, 4), n_classes=5).config.max_area
    (4, 4)
    """
    d = dataclasses.asdict(PRESETS.lookup(name))
    d.update(overrides)
    return build_model_from_config(ModelConfig.from_dict(d))

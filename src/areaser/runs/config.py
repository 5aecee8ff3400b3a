"""The training config: one dataclass holds everything a run needs, saved with every run.

:class:`TrainConfig` nests the feature, segment and VTLP configs (:mod:`areaser.dsp.features`,
:mod:`areaser.data.segments`, :mod:`areaser.dsp.vtlp`) and names the model preset with overrides
(:mod:`areaser.models.cnn`). ``TrainConfig.from_dict`` refuses unknown keys and wrong types
anywhere in the tree with one message naming the key, so a typo in a JSON config stops a
run before it starts. :func:`config_with` layers defaults < a training preset < a (partial)
config < overrides with dotted keys (``vtlp.impl="none"``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from areaser.core.errors import AreaserError, UnknownNameError
from areaser.core.registry import Registry
from areaser.data.labels import check_label_spec
from areaser.data.segments import SegmentConfig
from areaser.data.splits import get_protocol
from areaser.dsp.features import FeatureConfig, LogMel, n_frames
from areaser.dsp.specaug import MaskConfig
from areaser.dsp.vtlp import VTLPConfig
from areaser.io.files import atomic_write_json
from areaser.models.baselines import BASELINES, is_baseline
from areaser.models.cnn import KERAS_OVERRIDES, MAX_FRAMES, MIN_FRAMES, PRESETS, ModelConfig, build_model_from_config
from areaser.runs.metrics import DECISIONS

__all__ = ["ConfigError", "PROTOCOL_FIELDS", "TrainConfig", "TRAIN_PRESETS", "check_window", "config_with"]


class ConfigError(AreaserError, ValueError):
    """A config or input that cannot be trained on; the message says what to change."""


@dataclass
class TrainConfig:
    """Everything one training run needs. ``None`` fields take the protocol's default.

    Data: ``manifest`` (CSV), ``extra_manifests`` (e.g. ``areaser augment`` copies, merged
    before splitting; copies follow their source), ``copies`` (use at most this many copies
    per source; ``None`` = all), ``vtlp_copies`` (offline VTLP copies of every selected utterance
    the run makes itself with ``vtlp.impl`` ``stft`` or ``legacy-time``, cached in ``copies_dir``,
    default ``<manifest folder>/vtlp-copies``, under a folder keyed by the VTLP settings and
    ``seed`` and reused by every run with the same ones; ``None`` = none, and ignored (set to
    ``None``) when ``vtlp.impl`` is ``melwarp`` or ``none``), ``train_on_dev`` (train on the dev
    part too, as the authors' code did: dev is still scored every epoch but is then not held out;
    ``None`` = off), ``protocol`` / ``fold`` / ``seed`` (:mod:`areaser.data.splits`),
    ``label_set`` (``None``: the protocol's, ``4class`` for loso, ``4class-exc`` for xu2021;
    else a set name, ``all`` or a comma list of labels: :func:`areaser.data.labels.get_label_set`),
    ``test_manifests`` (other corpora on which every trained fold is also scored: cross-corpus).

    Model and features: ``model`` preset name (:data:`areaser.models.cnn.PRESETS`, or a classical
    baseline of :data:`areaser.models.baselines.BASELINES`) with ``model_overrides``: the options of
    :class:`~areaser.models.cnn.ModelConfig` that differ from the preset's, a sparse mapping so that a
    preset's, a file's and ``--set``'s compose, typed by that dataclass: :meth:`resolved` builds the
    :class:`~areaser.models.cnn.ModelConfig` (:meth:`model_config`), so an unknown option or a value of the
    wrong type or range is refused when the config is made; ``features``,
    ``segments``, ``vtlp`` as their own dataclasses (``vtlp.impl='melwarp'`` warps on the
    fly; ``'none'`` turns it off; ``'stft'`` / ``'legacy-time'`` rewrite audio and are used
    through offline copies: ``vtlp_copies`` or ``areaser augment``), ``masks`` (SpecAugment-style masking in training,
    :mod:`areaser.dsp.specaug`; off by default).

    Optimisation: Adam (``lr`` 1e-4, ``batch_size`` 32, as the paper; ``lr_schedule`` ``none``
    or ``cosine``: decay to 0 over ``epochs``; ``optimizer`` ``None`` / ``adam``, PyTorch's Adam,
    or ``keras-adam``, tf.keras' Adam: epsilon added to sqrt(v) before the bias correction;
    ``adam_eps`` ``None``: the optimizer's own, 1e-8 in PyTorch, 1e-7 in Keras; ``lr_decay``
    Keras' ``decay``, per step: ``lr / (1 + lr_decay * steps taken)``, ``None`` = off; the
    three ``None`` by default so that run directories of older configs still resume),
    ``bn_stats`` (the BatchNorm statistics used at
    evaluation: ``ema``, PyTorch's running average, or ``epoch``, an equal average over the
    epoch's batches), ``loss`` (``ce`` on
    logits, or ``softmax-nll``: the authors' probability loss), ``class_weights``
    (``none``, ``balanced`` or a list), ``epochs`` (``None``: protocol's, else 30),
    ``patience`` (early stopping on ``monitor``; ``None`` = off; off under a protocol with the paper's
    reading, e.g. ``xu2021``, unless ``track_test`` is false), ``monitor`` (``dev_ua``,
    ``dev_wa``, ``dev_f1`` or ``dev_loss``), ``decision`` (``prob``: mean of window
    probabilities, the paper; ``logits``), ``track_test`` (score test after every epoch for
    the paper's reading; ``None``: the protocol's).

    Hardware: ``accelerator`` (``cpu``, ``cuda``, ``auto``), ``devices``, ``num_nodes``,
    ``strategy`` (``auto``, ``ddp``, ...), ``num_workers``, ``threads`` (torch CPU threads per
    process; ``None`` = torch's choice), ``deterministic`` (``auto``: on for CPU; ``strict``: also
    pins threads, 1 unless ``threads`` says, and the CPU code paths: :mod:`areaser.runs.determinism`).

    Output: ``out_dir`` / ``name`` (the run directory), ``progress`` (rich bar),
    ``tensorboard``.
    """

    manifest: str = ""
    extra_manifests: list[str] = field(default_factory=list)
    copies: int | None = None
    vtlp_copies: int | None = None
    copies_dir: str | None = None
    train_on_dev: bool | None = None
    protocol: str = "loso"
    fold: int = 0
    seed: int = 0
    label_set: str | None = None
    test_manifests: list[str] = field(default_factory=list)
    preset: str = "default"
    model: str = "paper"
    model_overrides: dict = field(default_factory=dict)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    vtlp: VTLPConfig = field(default_factory=VTLPConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_schedule: str = "none"
    optimizer: str | None = None
    adam_eps: float | None = None
    lr_decay: float | None = None
    bn_stats: str = "ema"
    loss: str = "ce"
    class_weights: str | list = "none"
    monitor: str = "dev_ua"
    patience: int | None = 15
    decision: str = "prob"
    track_test: bool | None = None
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    deterministic: bool | str = "auto"
    out_dir: str = "runs"
    name: str = ""
    progress: bool = True
    tensorboard: bool = True

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (nested configs as dicts, tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. ``config.json``); unknown keys anywhere are refused by name.

        The window is checked against the features (:func:`check_window`) here, where a config
        comes in from a file, before anything is sized by it.
        """
        c = _from_dict(cls, d, "config")
        try:
            for hop_s in (c.segments.train_hop_s, c.segments.test_hop_s):
                check_window(c.segments.win_s, hop_s, c.features)
        except ValueError as e:
            raise ConfigError(f"config.segments: {e}") from None
        return c

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        """The config of a JSON or YAML (``.yaml`` / ``.yml``) file, checked as :meth:`from_dict` checks it."""
        d = cls.read_file(path)
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @staticmethod
    def read_file(path: str | os.PathLike) -> dict:
        """The mapping a config file holds: YAML for ``.yaml`` / ``.yml``, else JSON; not yet checked.

        YAML is read with PyYAML's safe loader (plain data only, no tags that build objects),
        plus YAML 1.2 floats (``1e-3`` is a number, not a string) and a refusal of keys given
        twice. ConfigError, one line naming the file (and the line of a YAML syntax error), for
        a file that cannot be read or parsed, or whose top level is not a mapping.
        """
        path = Path(path)
        yaml_file = path.suffix.lower() in (".yaml", ".yml")
        kind = "YAML" if yaml_file else "JSON"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not a readable {kind} config ({e})") from None
        if yaml_file:
            d = TrainConfig._read_yaml(path, text)
        else:
            try:
                d = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
        if not isinstance(d, dict):
            got = "nothing (it is empty)" if d is None else f"a {'list' if isinstance(d, list) else type(d).__name__}"
            want = "a YAML mapping" if yaml_file else "a JSON object"
            raise ConfigError(f"{path}: a config is {want} of keys to values; the file holds {got}")
        return d

    @staticmethod
    def _read_yaml(path: Path, text: str) -> Any:
        """``text`` parsed as YAML (see :meth:`read_file`); ConfigError naming ``path`` and the line."""

        class Loader(yaml.SafeLoader):
            """PyYAML's safe loader with YAML 1.2 floats (``1e-3``, ``1E6``) and no key given twice."""

            def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN202
                seen: set = set()
                for key_node, _ in node.value:  # before merge keys (<<) are expanded: overriding one is fine
                    key = self.construct_object(key_node, deep=True)
                    if isinstance(key, (str, int, float, bool)):
                        if key in seen:
                            raise yaml.constructor.ConstructorError(
                                None, None, f"key {key!r} given twice", key_node.start_mark
                            )
                        seen.add(key)
                return super().construct_mapping(node, deep=deep)

        Loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
            list("-+0123456789"),
        )
        try:
            return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader: plain data only)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            reason = " ".join(str(e.problem or e.context or "syntax error").split())
            if e.problem and e.context and e.context_mark is not None and e.context_mark is not mark:
                reason += f", {' '.join(str(e.context).split())} at line {e.context_mark.line + 1}"
            raise ConfigError(f"{where}: not valid YAML{at}: {reason}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None

    def model_config(self, n_classes: int = 4) -> ModelConfig:
        """The typed options of the model: its preset with ``model_overrides`` and the features' ``n_mels``.

        Raises ConfigError naming the option for an unknown one or a value of the wrong type or range,
        and for a classical baseline (it has no model options).
        """
        if is_baseline(self.model):
            raise ConfigError(f"model {self.model!r} is a classical baseline: it has no neural model options")
        if self.model not in PRESETS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of: {', '.join([*PRESETS, *BASELINES])}")
        fixed = {"name": "--model", "n_mels": "features.n_mels", "n_classes": "the label set"}
        if clash := sorted(set(self.model_overrides) & set(fixed)):
            raise ConfigError(
                f"model_overrides: {', '.join(clash)} cannot be overridden (set by "
                + ", ".join(fixed[k] for k in clash)
                + ")"
            )
        try:
            base = asdict(PRESETS.lookup(self.model))
            return ModelConfig.from_dict({**base, **self.model_overrides, "n_mels": self.features.n_mels,
                                          "n_classes": n_classes})  # fmt: skip
        except (ValueError, TypeError) as e:
            raise ConfigError(f"model {self.model!r}, model_overrides {self.model_overrides}: {e}") from None

    def resolved(self) -> "TrainConfig":
        """A copy with protocol defaults filled in and every choice checked."""
        try:
            p = get_protocol(self.protocol)
            check_label_spec(self.label_set or p.label_set)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        c = replace(
            self,
            label_set=self.label_set or p.label_set,
            epochs=self.epochs if self.epochs is not None else (p.epochs or 30),
            track_test=self.track_test if self.track_test is not None else p.paper_report,
            # the paper's reading takes maxima over every epoch's test scores: early stopping would cut it
            # short, so under such a protocol patience is off unless the test set is not tracked
            patience=None if p.paper_report and self.track_test is not False else self.patience,
            name=self.name or f"{self.model}-{self.protocol}-fold{self.fold + 1}",
        )
        if is_baseline(c.model):
            if c.model_overrides:
                raise ConfigError(
                    f"model_overrides {c.model_overrides} are options of a neural model; {c.model!r} is a "
                    "classical baseline (its settings are fixed: areaser.models.baselines.BASELINES)"
                )
        elif c.model in PRESETS:  # every option typed and in range, before anything is built or written
            c.model_config()
        # another name is refused where a model is built (build_modules): a config only used for its folds
        # may carry a peer's name (benchmarks/opensmile_peer.py)
        _check_choice("loss", c.loss, ("ce", "softmax-nll"))
        _check_choice("lr_schedule", c.lr_schedule, ("none", "cosine"))
        _check_choice("optimizer", c.optimizer or "adam", ("adam", "keras-adam"))
        if (c.adam_eps is not None and not c.adam_eps > 0) or (c.lr_decay is not None and c.lr_decay < 0):
            raise ConfigError(f"adam_eps must be > 0 and lr_decay >= 0 (got {c.adam_eps}, {c.lr_decay})")
        if c.lr_decay and c.lr_schedule != "none":
            raise ConfigError(f"lr_decay (Keras' per-step decay) and lr_schedule {c.lr_schedule!r}: choose one")
        if c.deterministic not in (True, False, "auto", "strict"):
            raise ConfigError(f"deterministic must be true, false, auto or strict; got {c.deterministic!r}")
        _check_choice("bn_stats", c.bn_stats, ("ema", "epoch"))
        _check_choice("monitor", c.monitor, ("dev_ua", "dev_wa", "dev_f1", "dev_loss"))
        _check_choice("decision", c.decision, DECISIONS)
        _check_choice("preset", c.preset, tuple(TRAIN_PRESETS))
        if isinstance(c.class_weights, str):
            _check_choice("class_weights", c.class_weights, ("none", "balanced"))
        if c.epochs < 1 or c.batch_size < 1 or not c.lr > 0:
            raise ConfigError(f"epochs and batch_size must be >= 1 and lr > 0 (got {c.epochs}, {c.batch_size}, {c.lr})")
        if c.vtlp.impl not in ("stft", "legacy-time"):  # on the fly or off: the run makes no copies
            c = replace(c, vtlp_copies=None)
        elif c.vtlp_copies is not None and c.vtlp_copies < 0:
            raise ConfigError(f"vtlp_copies must be >= 0, got {c.vtlp_copies}")
        elif not c.vtlp_copies and not c.extra_manifests:
            raise ConfigError(
                f"vtlp.impl {c.vtlp.impl!r} rewrites audio: let the run make (and cache) copies with vtlp_copies N "
                f"(--copies N), or make them with `areaser augment --impl {c.vtlp.impl}` and pass their manifest "
                "(--copies-manifest, i.e. extra_manifests); on the fly only 'melwarp' or 'none' apply"
            )
        if not c.manifest:
            raise ConfigError("no manifest given (the CSV written by `areaser scan` or `areaser synth`)")
        return c


TRAIN_PRESETS: Registry[dict] = Registry(
    "preset",
    {
        "default": {},
        # The paper's architectures (any --model) at a size two CPU cores train in minutes per EmoDB
        # fold: a quarter of the paper's mel bands at twice its hop (32 x 41 per 2 s window), and a
        # schedule that learns in 20 epochs (Adam 1e-3 decayed by a cosine to 0: on EmoDB, 3 speaker
        # folds, cnn, UA 67.7 % against 54.2 % at the paper's constant 1e-4). docs/real-speech.md.
        "cpu": {
            "features": {"n_mels": 32, "hop_length": 800, "norm": "dataset"},
            "lr": 1e-3,
            "lr_schedule": "cosine",
            "epochs": 20,
            "patience": None,
        },
        # The authors' pipeline (lessonxmk/Optimized_attention_for_SER, docs/paper.md). Their Keras constants
        # travel as model_overrides rather than in the "faithful" model preset, so `--model faithful` under
        # other presets (the CPU benchmarks) keeps its model. Max area 1 x 1 is what their committed script
        # ran (area_train.py: area_height = area_width = 1, although its log file is named area3x3): attention
        # over single cells. "faithful-3x3" is the 3 x 3 their log names (in the rows layout, 1-D spans of up
        # to 3 cells). A `--set model_overrides...` replaces this whole dict: repeat its keys (or use a preset).
        "faithful": {
            "model": "faithful",
            "model_overrides": {**KERAS_OVERRIDES, "max_area": [1, 1]},
            # librosa < 0.8 (their code calls librosa.output): center=True pads by reflection (zeros from 0.9.0)
            "features": {"pad_mode": "reflect"},
            # tf.keras.optimizers.Adam(learning_rate=1e-4, decay=1e-6): epsilon 1e-7 on sqrt(v), lr / (1 + 1e-6 * step)
            "optimizer": "keras-adam",
            "adam_eps": 1e-7,
            "lr_decay": 1e-6,
            "loss": "softmax-nll",
            # their two windowing loops: `while index + 2 * 16000 < n`, test hop int((2 - 1.6) * 16000) = 6399 samples
            "segments": {"policy": "legacy"},
            # area_train.py reads IEMOCAP_dev_<seed>.csv into training (80 %, not 72 %) and one nlpaug VTLP copy
            # (`.5` of the 7 vtlpAug.py wrote) of every training and dev file; that nlpaug warped time (legacy-time)
            "train_on_dev": True,
            "vtlp": {"impl": "legacy-time"},
            "vtlp_copies": 1,
            "patience": None,
            "track_test": True,
        },
    },
)
# the faithful preset with the max area their log file names (area3x3), everything else the same
TRAIN_PRESETS.register(
    "faithful-3x3",
    {
        **TRAIN_PRESETS["faithful"],
        "model_overrides": {**TRAIN_PRESETS["faithful"]["model_overrides"], "max_area": [3, 3]},
    },
)


# Bounds on the window, which sizes every buffer of audio and features: a crafted config or model file must not
# make one window gigabytes. Within them a window still holds far more than any real model reads.
MAX_WIN_S = 60.0  # one model input: 30x the paper's 2 s; longer speech is a recording, cut into windows
MIN_HOP_S = 0.01  # 10 ms, the floor of `predict --hop`: below it a recording becomes millions of windows
MAX_SPECTROGRAM_BINS = 2**24  # STFT frames x bins of one window: 128 MiB complex64, 500x the paper's 81 x 401


def check_window(win_s: float, hop_s: float, features: FeatureConfig) -> None:
    """ValueError unless a ``win_s`` window at hop ``hop_s`` (seconds) is a sane input for ``features``.

    Both are finite numbers, ``MIN_HOP_S <= hop_s <= MAX_WIN_S`` and ``win_s <= MAX_WIN_S``; the window
    gives between :data:`~areaser.models.cnn.MIN_FRAMES` and :data:`~areaser.models.cnn.MAX_FRAMES` frames and at
    most :data:`MAX_SPECTROGRAM_BINS` STFT values, and holds more than ``n_fft // 2`` samples where the
    STFT pads by reflection. Used for configs (:meth:`TrainConfig.from_dict`) and exported models
    (:func:`areaser.serve.export.read_metadata`).
    """
    for name, v in (("win_s", win_s), ("hop_s", hop_s)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number of seconds, got {v!r}")
    if not 0 < win_s <= MAX_WIN_S or not MIN_HOP_S <= hop_s <= MAX_WIN_S:
        raise ValueError(
            f"need 0 < win_s <= {MAX_WIN_S:g} s and {MIN_HOP_S:g} <= hop_s <= {MAX_WIN_S:g} s, got {win_s:g}, {hop_s:g}"
        )
    samples = int(round(win_s * features.sr))
    frames = n_frames(samples, features)
    if not MIN_FRAMES <= frames <= MAX_FRAMES or frames * features.n_freq > MAX_SPECTROGRAM_BINS:
        raise ValueError(
            f"a {win_s:g} s window at sr {features.sr}, hop_length {features.hop_length} gives {frames} frames x "
            f"{features.n_freq} bins: need {MIN_FRAMES} to {MAX_FRAMES} frames, {MAX_SPECTROGRAM_BINS:,} values at most"
        )
    if features.center and features.pad_mode in ("reflect", "circular") and samples <= features.n_fft // 2:
        raise ValueError(f"a {win_s:g} s window has {samples} samples, too few to pad by {features.n_fft // 2}")


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _from_dict(cls: type, d: Mapping[str, Any], where: str):
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(known)}")
    kwargs = {}
    defaults = cls()
    for k, v in d.items():
        default = getattr(defaults, k)
        if is_dataclass(default) and not is_dataclass(v):
            v = _from_dict(type(default), v, f"{where}.{k}")
        elif not _type_ok(str(known[k].type), v):
            raise ConfigError(f"{where}.{k}: expected {known[k].type}, got {v!r}")
        if isinstance(default, tuple) and isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _type_ok(annotation: str, v: Any) -> bool:
    """Whether JSON value ``v`` fits a field annotated ``annotation`` (a string, e.g. ``'int | None'``).

    Only plain types are checked; other annotations (Literal aliases) are left to the
    dataclass' own validation.
    """
    names = {t.strip() for t in annotation.replace("Optional[", "").replace("]", "").split("|")}
    checks = {
        "None": lambda x: x is None,
        "bool": lambda x: isinstance(x, bool),
        "int": lambda x: isinstance(x, int) and not isinstance(x, bool),
        "float": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
        "str": lambda x: isinstance(x, str),
        "list": lambda x: isinstance(x, list),
        "dict": lambda x: isinstance(x, dict),
    }
    plain = {n.split("[")[0] for n in names}
    if "tuple" in plain:
        return isinstance(v, (list, tuple))
    if not plain <= set(checks):
        return True
    return any(checks[n](v) for n in plain)


# Fields that ``None`` hands to the protocol (``TrainConfig.resolved``): a run's saved config holds
# the values its protocol chose, which another protocol must choose again.
PROTOCOL_FIELDS = ("label_set", "epochs", "track_test")


def config_with(base: TrainConfig | Mapping | None = None, preset: str | None = None, **overrides) -> TrainConfig:
    """Defaults < ``preset`` < ``base`` (a config or a partial dict, e.g. a JSON file) < ``overrides``.

    Override keys may be dotted (``vtlp.impl="none"``). Unknown keys are refused. A whole
    ``model_overrides`` replaces the earlier one; ``model_overrides.KEY`` sets one key and keeps the
    others (``--preset faithful --set model_overrides.max_area=[3,3]`` keeps its Keras constants). When the
    overrides change ``base``'s protocol, the base's :data:`PROTOCOL_FIELDS` go back to the
    new protocol's defaults unless the overrides set them too (a run's ``config.json`` under
    ``--protocol xu2021`` gets that protocol's label set, epochs and paper reading).
    """
    d = TrainConfig().to_dict()
    if preset is not None:
        try:
            TRAIN_PRESETS.lookup(preset)
        except UnknownNameError as e:  # a ConfigError, as every bad value of a config is
            raise ConfigError(str(e)) from None
        d = _merge(d, {**TRAIN_PRESETS[preset], "preset": preset})
    if base is not None:
        b = base.to_dict() if isinstance(base, TrainConfig) else dict(base)
        if "protocol" in overrides and overrides["protocol"] != b.get("protocol", d["protocol"]):
            b = {k: v for k, v in b.items() if k not in PROTOCOL_FIELDS}
        d = _merge(d, b)
    for k, v in overrides.items():
        if k.startswith("model_overrides."):  # one key of the preset's overrides, the others kept
            d["model_overrides"] = {**d.get("model_overrides", {}), **_dotted(k.split(".", 1)[1], v)}
        else:
            d = _merge(d, _dotted(k, v))
    return TrainConfig.from_dict(d)


def _dotted(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _merge(a: dict, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k != "model_overrides":
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ----------------------------------------------------------------------------- modules


def build_modules(config: TrainConfig | Mapping, n_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(LogMel, model)`` for a config (a :class:`TrainConfig` or its dict)."""
    c = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    features = LogMel(c.features, fhi=c.vtlp.fhi)
    try:  # the typed options (checked), then the size bound of build_model_from_config
        model = build_model_from_config(c.model_config(n_classes))
    except ValueError as e:
        raise ConfigError(f"model {c.model!r} with overrides {c.model_overrides}: {e}") from None
    attention = getattr(model, "attention", None)
    if c.deterministic == "strict" and attention is not None and attention.backend == "auto":
        attention.backend = "eager"  # compiled kernels use the CPU's widest vectors: not pinned like ATen's
    return features, model

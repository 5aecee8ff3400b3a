"""The named studies: each a list of settings (dotted config overrides) compared side by side."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from areaser.core.registry import Registry
from areaser.models.areas import LEARNED_KEY_MODES, VALUE_MODES

# ----------------------------------------------------------------------------- studies


@dataclass(frozen=True)
class Setting:
    """One point of a study.

    name : directory-safe id (``3x3-vtlp``), the row of the table.
    overrides : TrainConfig overrides, dotted keys (``{"model_overrides.max_area": [3, 3]}``).
    copies : offline VTLP copies of every training utterance (0 = none), made with ``copy_impl``.
    copy_impl : ``stft`` or ``legacy-time`` (:func:`areaser.dsp.augment.augment_manifest`).
    label : what the setting is, in words (table and plot).
    series, x : where the plot puts it: ``x`` a number on a line named ``series``;
        ``x=None`` is drawn as a horizontal reference line (line plots) or a bar group.
    """

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    copies: int = 0
    copy_impl: str = "stft"
    label: str = ""
    series: str = ""
    x: float | None = None


@dataclass(frozen=True)
class Study:
    """A named list of settings; ``quick`` names the settings a quick run keeps."""

    name: str
    title: str
    description: str
    settings: tuple[Setting, ...]
    quick: tuple[str, ...]
    xlabel: str = ""

    def select(self, quick: bool) -> tuple[Setting, ...]:
        return tuple(s for s in self.settings if s.name in self.quick) if quick else self.settings


NO_VTLP = {"vtlp.impl": "none"}
MELWARP = {"vtlp.impl": "melwarp"}
BASELINE_MODELS = ("egemaps-lr", "egemaps-svm")


# The area-size study on both layouts. The paper's figure came from the authors' code, whose areas are
# 1-D time spans inside each frequency row (``faithful``: max_area_height is ignored, "a x a" is 1 x a);
# the ``paper`` model runs the paper as written (2-D areas of up to a x a over the whole map).
AREA_SIZE_MODELS = (
    ("faithful", "faithful-", "1-D time spans up to 1x{a} (\"{a}x{a}\" in the authors' code: the paper's figure)"),
    ("paper", "", "2-D areas up to {a}x{a} (the paper as written)"),
)


def _area_size() -> Study:
    settings = []
    for model, prefix, what in AREA_SIZE_MODELS:
        for vtlp, ov in (("no VTLP", NO_VTLP), ("VTLP (melwarp)", MELWARP)):
            for a in (1, 2, 3, 4):
                tag = "vtlp" if vtlp != "no VTLP" else "novtlp"
                settings.append(
                    Setting(
                        f"{prefix}{a}x{a}-{tag}",
                        {"model": model, **ov, "model_overrides.max_area": [a, a]},
                        label=f"`{model}`: {what.format(a=a)}, {vtlp}",
                        series=f"{model}, {vtlp}",
                        x=a,
                    )
                )
    return Study(
        "area-size",
        "Max area size, with and without VTLP, on both attention layouts",
        "The paper's first figure: multiscale area attention with the largest area 1x1 (plain attention) up "
        "to 4x4, trained on original data and with VTLP. The paper found 4x4 best on original data and 3x3 "
        "best with VTLP. Its numbers came from the authors' code, whose areas are 1-D time spans inside each "
        "frequency row (max area 'a x a' is really 1 x a): the `faithful-*` settings (model `faithful`) are "
        "the reading of the paper's figure (the model's layout; like the `layout` study, every setting trains "
        "with the study's common options, not with `--preset faithful`'s Keras constants). "
        "The other settings run the `paper` model, the paper as written "
        "(2-D areas of up to a x a over the whole map, Q/K/V projections, 1/sqrt(d) scaling): what the figure "
        "would be had the code done what the text says.",
        tuple(settings),
        ("1x1-novtlp", "2x2-novtlp", "2x2-vtlp"),
        xlabel="max area (a x a; faithful: 1 x a spans)",
    )


def _vtlp_copies() -> Study:
    settings = [
        Setting(
            f"copies{k}",
            dict(NO_VTLP),
            copies=k,
            copy_impl="stft",
            label=f"{k} offline VTLP copies (stft)" if k else "no augmentation",
            series="offline copies (stft)",
            x=k,
        )
        for k in range(8)
    ]
    settings.append(
        Setting(
            "melwarp",
            dict(MELWARP),
            label="on-the-fly VTLP (melwarp), a new warp every epoch",
            series="melwarp (on the fly)",
            x=None,
        )
    )
    return Study(
        "vtlp-copies",
        "Offline VTLP copies vs on-the-fly VTLP",
        "The paper's second study: 0 to 7 VTLP-augmented copies of every training file (more copies, higher "
        "accuracy), against drawing a new warp factor per example and epoch inside the log-Mel front end.",
        tuple(settings),
        ("copies0", "copies1", "melwarp"),
        xlabel="offline VTLP copies per training utterance",
    )


def _area_features() -> Study:

    settings = [
        Setting(
            f"key-{k}-value-{v}",
            {"model_overrides.key_mode": k, "model_overrides.value_mode": v},
            label=f"key {k}, value {v}",
            series=f"value {v}",
        )
        for k in ("mean", "max", "sample")
        for v in VALUE_MODES
    ]
    settings += [
        Setting(
            f"key-{k}-value-sum",
            {"model_overrides.key_mode": k, "model_overrides.value_mode": "sum"},
            label=f"key {k} (learned), value sum",
            series="value sum",
        )
        for k in LEARNED_KEY_MODES
    ]
    return Study(
        "area-features",
        "Area key and value features",
        "The paper's third study: how an area's key is summarised (mean, max, or mean + std x noise 'sample') "
        "and how its value is (sum, mean, max); tensor2tensor's learned key modes (height / width embeddings "
        "and a 2-layer MLP) with the default sum value.",
        tuple(settings),
        ("key-max-value-mean", "key-sample-value-max", "key-sum-value-sum"),
    )


def _layout() -> Study:
    settings = (
        Setting(
            "faithful", {"model": "faithful"}, label="what the authors' code computes (1-D areas in frequency rows)"
        ),
        Setting("paper", {"model": "paper"}, label="what the paper describes (2-D areas, Q/K/V, scaling)"),
        Setting("cnn", {"model": "cnn"}, label="the same CNN without attention"),
        Setting("egemaps-lr", {"model": "egemaps-lr"}, label="eGeMAPS-like functionals + logistic regression"),
        Setting("egemaps-svm", {"model": "egemaps-svm"}, label="eGeMAPS-like functionals + RBF SVM"),
    )
    return Study(
        "layout",
        "Attention layout and baselines",
        "What the authors' code computes (`faithful`) against what the paper describes (`paper`) and against "
        "no attention at all (`cnn`), with two classical baselines on the same folds.",
        settings,
        ("faithful", "cnn", "egemaps-lr"),
    )


def _vtlp_impl() -> Study:
    settings = (
        Setting("none", dict(NO_VTLP), label="no VTLP"),
        Setting("melwarp", dict(MELWARP), label="warped mel filterbank, on the fly (default)"),
        Setting("stft", dict(NO_VTLP), copies=1, copy_impl="stft", label="1 offline copy, STFT frequency warp"),
        Setting(
            "legacy-time",
            dict(NO_VTLP),
            copies=1,
            copy_impl="legacy-time",
            label="1 offline copy, the authors' nlpaug time warp",
        ),
    )
    return Study(
        "vtlp-impl",
        "VTLP implementations",
        "VTLP as the project does it on the fly (`melwarp`), as a waveform rewrite (`stft`, one offline copy "
        "like the authors' committed script) and as the authors' nlpaug release really did it (`legacy-time`, "
        "frames warped in time).",
        settings,
        ("melwarp", "stft", "legacy-time"),
    )


STUDIES: Registry[Study] = Registry(
    "study", {s.name: s for s in (_area_size(), _vtlp_copies(), _area_features(), _layout(), _vtlp_impl())}
)


def get_study(name: str) -> Study:
    """Look up a study by name; the error lists the names."""
    return STUDIES.lookup(name)

"""Label vocabulary shared by every corpus, and the label sets a task picks.

Every corpus loader maps its raw labels into :data:`CANONICAL`; a label no spelling of
which is known (e.g. ``contempt``) is kept as its own lower-case label, never dropped. A task
then chooses a :class:`LabelSet`, which maps some labels onto its classes and drops the rest.

A label-set *spec* (``--labels``, ``TrainConfig.label_set``) is one of

* a name from :data:`LABEL_SETS`: the IEMOCAP sets (``4class``, ``4class-exc``), the basic-emotion
  sets (``6class``, ``7class``) and each corpus' native set (``emodb``: its 7 emotions with
  boredom; ``ravdess``: 8 with calm; ``cremad``: 6; ``tess`` and ``savee``: 7);
* ``all``: every label present in the manifest, in :data:`CANONICAL` order, then the others
  alphabetically;
* a comma list of labels (``neutral,happy,sad,angry``), each its own class.

>>> get_label_set("neutral,sad").classes
('neutral', 'sad')
>>> get_label_set("all", labels=["sad", "contempt", "angry", "sad"]).classes
('sad', 'angry', 'contempt')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from areaser.core.errors import UnknownNameError
from areaser.core.registry import Registry

__all__ = ["CANONICAL", "LabelSet", "LABEL_SETS", "get_label_set", "check_label_spec", "label_order"]

# One vocabulary across corpora. "excited" stays separate from "happy" because
# IEMOCAP tasks disagree on whether to merge them; "undecided" is IEMOCAP's xxx.
CANONICAL: tuple[str, ...] = (
    "neutral",
    "happy",
    "excited",
    "sad",
    "angry",
    "fear",
    "disgust",
    "surprise",
    "calm",
    "boredom",
    "frustration",
    "other",
    "undecided",
)


@dataclass(frozen=True)
class LabelSet:
    """Classes of a task and the canonical labels that map onto each.

    ``mapping`` sends a canonical label to a class name; canonical labels absent
    from it are excluded from the task.
    """

    name: str
    classes: tuple[str, ...]
    mapping: dict[str, str] = field(hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        bad = [k for k in self.mapping if not k or k != k.strip().lower()]
        if bad:
            raise ValueError(f"label set {self.name!r}: labels must be non-empty lower case, got {bad}")
        missing = sorted(set(self.mapping.values()) - set(self.classes))
        if missing:
            raise ValueError(f"label set {self.name!r}: mapped to undeclared classes {missing}")

    def map(self, label: str) -> str | None:
        """Class for a canonical ``label``, or ``None`` if the task leaves it out."""
        return self.mapping.get(label)

    def index(self, cls: str) -> int:
        return self.classes.index(cls)


def _own(name: str, classes: tuple[str, ...], description: str) -> LabelSet:
    """A set whose every class is one label, unmerged (each corpus' native set, comma lists, ``all``)."""
    return LabelSet(name, classes, {c: c for c in classes}, description)


LABEL_SETS: Registry[LabelSet] = Registry(
    "label set",
    {
        s.name: s
        for s in (
            LabelSet(
                "4class",
                ("neutral", "happy", "sad", "angry"),
                {"neutral": "neutral", "happy": "happy", "excited": "happy", "sad": "sad", "angry": "angry"},
                "neutral, happy (+ excited), sad, angry: common IEMOCAP practice (5,531 utterances)",
            ),
            LabelSet(
                "4class-exc",
                ("neutral", "happy", "sad", "angry"),
                {"neutral": "neutral", "excited": "happy", "sad": "sad", "angry": "angry"},
                "the authors' code: happy = excited only, real 'hap' left out",
            ),
            LabelSet(
                "6class",
                ("neutral", "happy", "sad", "angry", "fear", "disgust"),
                {
                    "neutral": "neutral",
                    "happy": "happy",
                    "excited": "happy",
                    "sad": "sad",
                    "angry": "angry",
                    "fear": "fear",
                    "disgust": "disgust",
                },
                "CREMA-D's six emotions",
            ),
            LabelSet(
                "7class",
                ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"),
                {
                    "neutral": "neutral",
                    "happy": "happy",
                    "excited": "happy",
                    "sad": "sad",
                    "angry": "angry",
                    "fear": "fear",
                    "disgust": "disgust",
                    "surprise": "surprise",
                },
                "the seven basic emotions (TESS, SAVEE)",
            ),
            _own(
                "emodb",
                ("neutral", "happy", "sad", "angry", "fear", "disgust", "boredom"),
                "EmoDB's seven emotions (boredom included)",
            ),
            _own(
                "ravdess",
                ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise"),
                "RAVDESS's eight emotions (calm included)",
            ),
            _own("cremad", ("neutral", "happy", "sad", "angry", "fear", "disgust"), "CREMA-D's six emotions"),
            _own(
                "tess",
                ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"),
                "TESS's seven emotions (pleasant surprise as surprise)",
            ),
            _own(
                "savee", ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"), "SAVEE's seven emotions"
            ),
        )
    },
)


def label_order(labels: Iterable[str]) -> tuple[str, ...]:
    """Distinct ``labels`` in :data:`CANONICAL` order, then the others alphabetically."""
    present = set(labels)
    rank = {c: i for i, c in enumerate(CANONICAL)}
    return tuple(sorted(present, key=lambda x: (rank.get(x, len(rank)), x)))


def _comma_list(spec: str) -> tuple[str, ...] | None:
    if "," not in spec:
        return None
    items = tuple(x.strip().lower() for x in spec.split(","))
    if any(not x for x in items) or len(set(items)) != len(items) or len(items) < 2:
        raise ValueError(f"label list {spec!r}: give at least 2 distinct, non-empty labels separated by commas")
    return items


def check_label_spec(spec: str) -> None:
    """Raise :class:`~areaser.core.errors.UnknownNameError` (a ValueError) for an unusable ``spec``.

    A usable one is a label set's name, ``all`` or a comma list of labels (see the module).
    """
    if spec != "all" and _comma_list(spec) is None and spec not in LABEL_SETS:
        raise UnknownNameError(  # the registry's error, with the two spellings that are not names
            f"unknown label set {spec!r}; choose one of: {', '.join(LABEL_SETS)}, all, "
            "or a comma list of labels (neutral,happy,sad,angry)"
        )


def get_label_set(spec: str, labels: Iterable[str] | None = None) -> LabelSet:
    """The :class:`LabelSet` of a spec: a name, ``all`` or a comma list (module docstring).

    ``labels``: the labels present in the data; needed for ``all``, and a comma list is
    checked against them (a label the data lacks is an error naming the labels it has).
    """
    check_label_spec(spec)
    items = _comma_list(spec)
    if spec == "all":
        if labels is None:
            raise ValueError("label set 'all' takes its classes from the manifest; none was given")
        classes = label_order(labels)
        if len(classes) < 2:
            raise ValueError(f"label set 'all': the manifest has {len(classes)} label(s) {list(classes)}; need >= 2")
        return _own("all", classes, "every label in the manifest")
    if items is not None:
        if labels is not None:
            have = set(labels)
            absent = [x for x in items if x not in have]
            if absent:
                raise ValueError(
                    f"label(s) {absent} of {spec!r} are not in the manifest; it has: {', '.join(label_order(have))}"
                )
        return _own(spec, items, "the labels given")
    return LABEL_SETS.lookup(spec)

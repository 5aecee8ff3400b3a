"""Label vocabulary shared by every corpus, and the label sets a task picks.

Every corpus loader maps its raw labels into :data:`CANONICAL`. A task then
chooses a :class:`LabelSet`, which maps some canonical labels onto its classes
and drops the rest. Kept as data so a new corpus or task is a dictionary entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CANONICAL", "LabelSet", "LABEL_SETS", "get_label_set"]

# One vocabulary across corpora. "excited" stays separate from "happy" because
# IEMOCAP tasks disagree on whether to merge them; "undecided" is IEMOCAP's xxx.
CANONICAL: tuple[str, ...] = (
    "neutral", "happy", "excited", "sad", "angry", "fear", "disgust", "surprise",
    "calm", "boredom", "frustration", "other", "undecided",
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
        bad = [k for k in self.mapping if k not in CANONICAL]
        if bad:
            raise ValueError(f"label set {self.name!r}: unknown canonical labels {bad}")
        missing = sorted(set(self.mapping.values()) - set(self.classes))
        if missing:
            raise ValueError(f"label set {self.name!r}: mapped to undeclared classes {missing}")

    def map(self, label: str) -> str | None:
        """Class for a canonical ``label``, or ``None`` if the task leaves it out."""
        return self.mapping.get(label)

    def index(self, cls: str) -> int:
        return self.classes.index(cls)


LABEL_SETS: dict[str, LabelSet] = {
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
            {"neutral": "neutral", "happy": "happy", "excited": "happy", "sad": "sad",
             "angry": "angry", "fear": "fear", "disgust": "disgust"},
            "CREMA-D's six emotions",
        ),
        LabelSet(
            "7class",
            ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"),
            {"neutral": "neutral", "happy": "happy", "excited": "happy", "sad": "sad", "angry": "angry",
             "fear": "fear", "disgust": "disgust", "surprise": "surprise"},
            "the seven basic emotions (TESS, SAVEE)",
        ),
    )
}


def get_label_set(name: str) -> LabelSet:
    """Look up a label set by name; the error lists the valid names."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; choose one of: {', '.join(LABEL_SETS)}") from None

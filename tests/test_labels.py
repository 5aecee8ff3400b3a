"""Label-set specs: names, each corpus' native set, ``all`` and comma lists; labels outside the vocabulary."""

from __future__ import annotations

import pytest

from areaser.data.labels import CANONICAL, LABEL_SETS, check_label_spec, get_label_set
from areaser.data.manifest import make_manifest, validate_manifest


def test_native_sets_hold_each_corpus_own_emotions():
    # the documented emotions of each corpus (../shared/docs/corpora.md), canonical spellings
    assert set(get_label_set("emodb").classes) == {"angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"}
    assert set(get_label_set("ravdess").classes) == {
        "neutral",
        "calm",
        "happy",
        "sad",
        "angry",
        "fear",
        "disgust",
        "surprise",
    }
    assert set(get_label_set("cremad").classes) == {"angry", "disgust", "fear", "happy", "neutral", "sad"}
    for name in ("tess", "savee"):
        assert set(get_label_set(name).classes) == {"angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"}
    for ls in LABEL_SETS.values():
        assert set(ls.mapping) <= set(CANONICAL)  # presets speak the shared vocabulary


def test_native_sets_keep_labels_apart_that_4class_merges():
    assert get_label_set("4class").map("excited") == "happy"
    assert get_label_set("emodb").map("excited") is None  # identity sets merge nothing
    assert get_label_set("ravdess").map("calm") == "calm" and get_label_set("4class").map("calm") is None


def test_all_takes_every_label_present_in_vocabulary_order_then_others():
    ls = get_label_set("all", labels=["sad", "contempt", "neutral", "awe", "sad"])
    assert ls.classes == ("neutral", "sad", "awe", "contempt")
    assert ls.map("contempt") == "contempt" and ls.map("happy") is None
    with pytest.raises(ValueError, match="from the manifest"):
        get_label_set("all")
    with pytest.raises(ValueError, match="need >= 2"):
        get_label_set("all", labels=["sad", "sad"])


def test_comma_list_is_its_classes_in_the_given_order_and_checked_against_the_data():
    ls = get_label_set("sad, Neutral,angry")
    assert ls.classes == ("sad", "neutral", "angry")
    assert ls.map("excited") is None
    with pytest.raises(ValueError, match=r"\['calm'\].*it has: neutral, sad"):
        get_label_set("neutral,calm", labels=["neutral", "sad"])
    for bad in ("neutral,", "sad,sad", ",x"):
        with pytest.raises(ValueError, match="at least 2 distinct"):
            get_label_set(bad)


def test_unknown_spec_lists_the_choices():
    with pytest.raises(ValueError, match="emodb, ravdess.*all, or a comma list"):
        check_label_spec("berlin")


def test_a_label_outside_the_vocabulary_is_a_valid_manifest_label():
    df = make_manifest(
        [
            {"utt_id": "a", "path": "/x/a.wav", "label": "contempt"},
            {"utt_id": "b", "path": "/x/b.wav", "label": "Contempt"},
        ]
    )
    problems = validate_manifest(df, check_files=False)
    assert len(problems) == 1 and "['Contempt']" in problems[0] and "lower case" in problems[0]

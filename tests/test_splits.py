"""Protocols: disjoint parts, held-out groups, the paper's filters, copies follow their source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from areaser.core.errors import UnknownNameError
from areaser.data.manifest import make_manifest
from areaser.data.splits import (
    PROTOCOLS,
    SplitError,
    check_fold,
    get_protocol,
    make_folds,
    select_utterances,
    split_frame,
)

RAW = {"neutral": "neu", "happy": "hap", "excited": "exc", "sad": "sad", "angry": "ang", "frustration": "fru"}


def iemocap_like(n_per_speaker: int = 20, seed: int = 0, sessions: int = 5) -> pd.DataFrame:
    """A manifest shaped like IEMOCAP (5 sessions x F/M), no audio needed for splitting."""
    rng = np.random.default_rng(seed)
    labels = list(RAW)
    rows = []
    for s in range(1, sessions + 1):
        for g in "FM":
            for i in range(n_per_speaker):
                lab = labels[i % len(labels)]
                rows.append(
                    {
                        "utt_id": f"Ses0{s}{g}_impro01_{g}{i:03d}",
                        "path": f"/x/{s}{g}{i}.wav",
                        "corpus": "iemocap",
                        "speaker": f"Ses0{s}{g}",
                        "session": f"Ses0{s}",
                        "gender": g,
                        "label": lab,
                        "raw_label": RAW[lab],
                        "duration_s": float(rng.uniform(1.0, 6.0)),
                        "improvised": bool((i // 6) % 3),
                        "source_id": "",
                    }
                )
    return make_manifest(rows)


def with_copies(df: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    copies = []
    for r in df.to_dict("records"):
        for k in range(1, n + 1):
            copies.append({**r, "utt_id": f"{r['utt_id']}__vtlp{k}", "source_id": r["utt_id"]})
    return make_manifest(pd.concat([df, pd.DataFrame(copies)], ignore_index=True))


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_parts_are_disjoint_and_cover_the_selection(name):
    sel = select_utterances(iemocap_like(), get_protocol(name))
    folds = make_folds(sel, name, seed=0)
    for f in folds:
        tr, dv, te = set(f.train), set(f.dev), set(f.test)
        assert tr and dv and te
        assert not (tr & dv) and not (tr & te) and not (dv & te)
        assert tr | dv | te == set(sel["utt_id"])


def test_loso_holds_out_each_session_and_dev_is_one_other_speaker():
    df = iemocap_like()
    sel = select_utterances(df, get_protocol("loso"))
    folds = make_folds(sel, "loso")
    assert [f.test_group for f in folds] == [f"Ses0{i}" for i in range(1, 6)]
    spk = dict(zip(sel["utt_id"], sel["speaker"]))
    for f in folds:
        test_spk = {spk[u] for u in f.test}
        dev_spk = {spk[u] for u in f.dev}
        train_spk = {spk[u] for u in f.train}
        assert test_spk == {f"{f.test_group}F", f"{f.test_group}M"}
        assert len(dev_spk) == 1 and not dev_spk & (train_spk | test_spk)  # speaker-independent dev
        assert len(train_spk) == 7


def test_lospk_and_kfold_never_share_speakers():
    sel = select_utterances(iemocap_like(), get_protocol("lospk"))
    spk = dict(zip(sel["utt_id"], sel["speaker"]))
    folds = make_folds(sel, "lospk")
    assert len(folds) == 10
    for proto in ("lospk", "kfold"):
        for f in make_folds(sel, proto, seed=3):
            groups = [{spk[u] for u in part} for part in (f.train, f.dev, f.test)]
            assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    # kfold: every utterance is tested exactly once
    tested = [u for f in make_folds(sel, "kfold", seed=3) for u in f.test]
    assert sorted(tested) == sorted(sel["utt_id"])


def test_xu2021_applies_the_papers_filters_and_five_random_splits():
    df = iemocap_like(n_per_speaker=40)
    sel = select_utterances(df, get_protocol("xu2021"))
    assert sel["improvised"].all()
    assert (sel["duration_s"] > 2.0).all()
    assert set(sel["label"]) == {"neutral", "excited", "sad", "angry"}  # real 'hap' left out, exc -> happy
    assert set(sel["class"]) == {"neutral", "happy", "sad", "angry"}
    folds = make_folds(sel, "xu2021", seed=0)
    assert [f.name for f in folds] == [f"seed{i}" for i in range(5)]
    n = len(sel)
    for f in folds:
        assert len(f.test) == round(0.2 * n)
    # different seeds give different test sets, that overlap (the paper's "5-fold" is not a partition)
    assert len({frozenset(f.test) for f in folds}) == 5
    # random utterance-level split: speakers appear in train and test
    spk = dict(zip(sel["utt_id"], sel["speaker"]))
    assert {spk[u] for u in folds[0].test} & {spk[u] for u in folds[0].train}


def test_folds_are_deterministic():
    sel = select_utterances(iemocap_like(), get_protocol("kfold"))
    assert make_folds(sel, "kfold", seed=1) == make_folds(sel, "kfold", seed=1)
    assert make_folds(sel, "kfold", seed=1) != make_folds(sel, "kfold", seed=2)


def test_copies_follow_their_source_and_only_into_training():
    df = with_copies(iemocap_like())
    sel = select_utterances(df, get_protocol("loso"))
    fold = make_folds(sel, "loso")[2]
    parts = split_frame(sel, fold)
    train = parts["train"]
    copies = train[train["source_id"] != ""]
    assert len(copies) == 2 * len(fold.train)
    assert set(copies["source_id"]) == set(fold.train)
    for part in ("dev", "test"):
        assert (parts[part]["source_id"] == "").all()
        assert set(parts[part]["utt_id"]) == set(getattr(fold, part))
    # copies never create folds or move between parts
    assert make_folds(sel, "loso") == make_folds(select_utterances(iemocap_like(), get_protocol("loso")), "loso")
    assert len(split_frame(sel, fold, use_copies=False)["train"]) == len(fold.train)


def test_xu2021_drops_copies_of_dropped_sources():
    df = with_copies(iemocap_like(n_per_speaker=40), n=1)
    sel = select_utterances(df, get_protocol("xu2021"))
    copies = sel[sel["source_id"] != ""]
    assert set(copies["source_id"]) <= set(sel.loc[sel["source_id"] == "", "utt_id"])


def test_empty_class_is_refused_with_its_name():
    df = iemocap_like()
    df = df[df["label"] != "sad"]
    with pytest.raises(SplitError, match=r"\['sad'\].*no utterances"):
        select_utterances(df, get_protocol("loso"))


def test_protocol_without_sessions_or_too_few_speakers_says_what_to_use():
    df = iemocap_like()
    df["session"] = ""
    sel = select_utterances(df, get_protocol("loso"))
    with pytest.raises(SplitError, match="lospk or kfold"):
        make_folds(sel, "loso")
    two = iemocap_like(sessions=1)
    with pytest.raises(SplitError, match="at least 3 speakers"):
        make_folds(select_utterances(two, get_protocol("lospk")), "lospk")
    with pytest.raises(SplitError, match="at least 6 speakers"):
        make_folds(select_utterances(two, get_protocol("kfold")), "kfold")


def test_xu2021_needs_improvised_flags():
    df = iemocap_like()
    df["improvised"] = pd.NA
    with pytest.raises(SplitError, match="improvised"):
        select_utterances(df, get_protocol("xu2021"))


def test_unknown_protocol_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="loso, lospk, kfold, random, xu2021"):
        get_protocol("shuffled")


def test_check_fold_refuses_empty_test_and_missing_training_class():
    sel = select_utterances(iemocap_like(), get_protocol("loso"))
    fold = make_folds(sel, "loso")[0]
    parts = split_frame(sel, fold)
    classes = ("neutral", "happy", "sad", "angry")
    check_fold(parts, classes, fold.name)
    empty = {**parts, "test": parts["test"].iloc[:0]}
    with pytest.raises(SplitError, match="no test data"):
        check_fold(empty, classes, fold.name)
    no_sad = {**parts, "train": parts["train"][parts["train"]["class"] != "sad"]}
    with pytest.raises(SplitError, match=r"\['sad'\] have no training"):
        check_fold(no_sad, classes, fold.name)


# ----------------------------------------------------------------------------- random protocol and groups


def speakerless(n_per_class: int = 12, classes=("neutral", "happy", "sad", "angry", "contempt")) -> pd.DataFrame:
    """Folder-per-label data: no speakers, no sessions; one label outside the vocabulary."""
    rows = [
        {"utt_id": f"{c}/{i:02d}", "path": f"/x/{c}{i}.wav", "label": c, "raw_label": c, "duration_s": 3.0}
        for c in classes
        for i in range(n_per_class)
    ]
    return make_manifest(rows)


def test_random_protocol_tests_every_utterance_once_stratified_without_speakers():
    df = speakerless()
    sel = select_utterances(df, get_protocol("random"), "all")
    folds = make_folds(sel, "random", seed=0)
    assert len(folds) == 5
    tested = [u for f in folds for u in f.test]
    assert sorted(tested) == sorted(sel["utt_id"])  # each utterance is tested exactly once
    cls = dict(zip(sel["utt_id"], sel["class"]))
    for f in folds:
        # 12 per class over 5 folds: every class has 2 or 3 test utterances in every fold (stratified)
        per_class = pd.Series([cls[u] for u in f.test]).value_counts()
        assert set(per_class.index) == set(sel["class"]) and per_class.between(2, 3).all()
        # dev is carved from the training part: about 10 % of it, disjoint from train and test
        n_rest = len(sel) - len(f.test)
        assert len(f.dev) == int(np.ceil(0.1 * n_rest)) and not set(f.dev) & set(f.train)


def test_random_protocol_is_flagged_speaker_dependent_and_speaker_protocols_refuse_speakerless_data():
    assert get_protocol("random").speaker_dependent and get_protocol("xu2021").speaker_dependent
    assert not any(get_protocol(n).speaker_dependent for n in ("loso", "lospk", "kfold"))
    sel = select_utterances(speakerless(), get_protocol("lospk"), "all")
    for name in ("lospk", "kfold"):
        with pytest.raises(SplitError, match="no speaker.*--protocol random"):
            make_folds(sel, name)


@pytest.mark.parametrize("name", ["random", "xu2021", "lospk", "kfold"])
def test_identical_recordings_stay_on_one_side_of_every_split(name):
    df = iemocap_like()
    # three recordings identical to the first (as the scan marks them), one of another speaker
    # rows 6-11 of a speaker are improvised (xu2021 keeps them); 46 is another speaker's row 6
    first = df["utt_id"].iloc[6]
    df["same_as"] = ""
    twins = [df["utt_id"].iloc[i] for i in (8, 9, 46)]  # not 7: a "hap", which xu2021 leaves out
    df.loc[df["utt_id"].isin(twins), "same_as"] = first
    df.loc[df["utt_id"].isin([first, *twins]), "duration_s"] = 3.0
    sel = select_utterances(df, get_protocol(name), "4class" if name != "xu2021" else None)
    group = {first, *twins} & set(sel["utt_id"])
    assert len(group) == 4
    for f in make_folds(sel, name, seed=0):
        sides = {part for part in ("train", "dev", "test") for u in getattr(f, part) if u in group}
        assert len(sides) == 1, f"fold {f.name}: identical recordings in {sides}"


def test_empty_class_message_prints_plain_numbers():
    df = iemocap_like()
    df = df[df["label"] != "sad"]
    with pytest.raises(SplitError) as e:
        select_utterances(df, get_protocol("lospk"), "4class")
    assert "np." not in str(e.value) and "neutral 40," in str(e.value)  # 4 of 20 per speaker, 10 speakers

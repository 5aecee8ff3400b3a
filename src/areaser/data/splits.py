"""Evaluation protocols: named presets that cut a manifest into train / dev / test folds.

A protocol first *selects* the utterances a task uses (label set, improvised only,
minimum duration), then cuts them into folds. Every fold has three disjoint parts:

* ``train``: what the model learns from (plus the augmented copies of these utterances);
* ``dev``: picks the epoch (model selection) and stops training early;
* ``test``: scored once, never looked at while training (except the paper's way, below).

Presets (:data:`PROTOCOLS`)

=========  ==========================================================================
``loso``   leave-one-session-out (default): test = one session, dev = one speaker of
           another session, train = the rest. Speaker-independent.
``lospk``  leave-one-speaker-out: test = one speaker, dev = the next speaker.
``kfold``  stratified k-fold grouped by speaker (corpora without sessions); dev = one
           speaker of the training part.
``random``  stratified k-fold over utterances (5 folds), dev = a stratified 10 % of the
           training part. Needs no speakers (folder-per-label data); its scores are
           **speaker-dependent** (speakers appear in train and test), and reports say so.
``xu2021`` the paper: improvised only, happy = excited (``4class-exc``), utterances of
           2 s or less dropped, random utterance-level 80/20 split for 5 seeds. Speakers
           overlap train and test. Dev = 10 % of the training part, carved out so the
           honest epoch choice exists beside the paper's best-epoch-on-test.
=========  ==========================================================================

Augmented copies (``source_id`` set) always follow their source: a copy of a test
utterance is never trained on. Only training uses copies; dev and test are scored on
original recordings. Identical recordings (the manifest's ``same_as`` column, set by the
corpus scan: RAVDESS holds one such pair) are one group: every protocol puts a group on one
side, the side of its member that is furthest from training (test, then dev).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from areaser.core.errors import AreaserError
from areaser.core.registry import Registry
from areaser.data.labels import LabelSet, get_label_set
from areaser.data.manifest import select_classes
from areaser.io.files import file_digest

__all__ = [
    "Protocol",
    "PROTOCOLS",
    "Fold",
    "SplitError",
    "get_protocol",
    "split_record",
    "resolve_label_set",
    "select_utterances",
    "make_folds",
    "split_frame",
    "check_fold",
    "XU2021_IEMOCAP_COUNTS",
    "selection_table",
    "selection_line",
]


class SplitError(AreaserError, ValueError):
    """A protocol that cannot be applied to a manifest; the message says why and what to do."""


@dataclass(frozen=True)
class Protocol:
    """How to select utterances and cut folds.

    ``min_duration_s`` is exclusive (the paper drops utterances of 2 s *or less*).
    ``epochs`` is the protocol's training length when the config leaves it unset.
    """

    name: str
    kind: str  # "session" | "speaker" | "kfold" | "random"
    description: str
    label_set: str = "4class"
    improvised_only: bool = False
    min_duration_s: float | None = None
    n_folds: int | None = None  # None: one fold per session / speaker
    test_fraction: float = 0.2
    dev_fraction: float = 0.1
    epochs: int | None = None
    paper_report: bool = False  # also report the paper's way (best epoch on test)
    stratified: bool = False  # kind "random": k stratified folds instead of n_folds repeated splits

    @property
    def speaker_dependent(self) -> bool:
        """Speakers can appear in train and test: scores say nothing about new speakers."""
        return self.kind == "random"


PROTOCOLS: Registry[Protocol] = Registry(
    "protocol",
    {
        p.name: p
        for p in (
            Protocol("loso", "session", "leave-one-session-out; dev = one speaker of another session"),
            Protocol("lospk", "speaker", "leave-one-speaker-out; dev = the next speaker"),
            Protocol("kfold", "kfold", "stratified k-fold grouped by speaker; dev = one training speaker", n_folds=5),
            Protocol(
                "random",
                "random",
                "stratified k-fold over utterances (speaker-dependent); dev = 10 % of train",
                n_folds=5,
                stratified=True,
            ),
            Protocol(
                "xu2021",
                "random",
                "the paper: improvised, happy = excited, > 2 s, random 80/20 utterance split x 5 seeds",
                label_set="4class-exc",
                improvised_only=True,
                min_duration_s=2.0,
                n_folds=5,
                epochs=100,
                paper_report=True,
            ),
        )
    },
)


def get_protocol(name: str) -> Protocol:
    """Look up a protocol by name; the error lists the valid names."""
    return PROTOCOLS.lookup(name)


@dataclass(frozen=True)
class Fold:
    """One train / dev / test cut, as utterance ids of *original* recordings (copies excluded)."""

    index: int
    name: str
    train: tuple[str, ...]
    dev: tuple[str, ...]
    test: tuple[str, ...]
    test_group: str = ""  # the held-out session / speaker / seed, for reports


def resolve_label_set(df: pd.DataFrame, spec: str) -> LabelSet:
    """The :class:`~areaser.data.labels.LabelSet` of ``spec`` on the original recordings of ``df``."""
    try:
        return get_label_set(spec, labels=df.loc[df["source_id"] == "", "label"])
    except ValueError as e:
        raise SplitError(str(e)) from None


def select_utterances(df: pd.DataFrame, protocol: Protocol, label_set: str | None = None) -> pd.DataFrame:
    """Rows a protocol uses, with ``class`` and ``y`` columns; copies kept only if their source is.

    ``label_set``: a spec (:func:`areaser.data.labels.get_label_set`; ``all`` takes every label of
    ``df``). Raises :class:`SplitError` if nothing is left or a class of the label set is empty.
    """
    ls = resolve_label_set(df, label_set or protocol.label_set)
    out = select_classes(df, ls)
    keep = pd.Series(True, index=out.index)
    if protocol.improvised_only:
        if out["improvised"].isna().all():
            raise SplitError(
                f"protocol {protocol.name!r} keeps improvised utterances only, but the manifest has no "
                "'improvised' values (IEMOCAP only); use --protocol loso, lospk or kfold"
            )
        keep &= out["improvised"].fillna(False).astype(bool)
    if protocol.min_duration_s is not None:
        keep &= out["duration_s"] > protocol.min_duration_s
    out = out[keep]
    sources = set(out.loc[out["source_id"] == "", "utt_id"])
    out = out[(out["source_id"] == "") | out["source_id"].isin(sources)].reset_index(drop=True)
    if not len(out):
        raise SplitError(f"protocol {protocol.name!r} with label set {ls.name!r} leaves no utterances")
    counts = out.loc[out["source_id"] == "", "class"].value_counts()
    empty = [c for c in ls.classes if counts.get(c, 0) == 0]
    if empty:
        raise SplitError(
            f"class(es) {empty} have no utterances after selecting label set {ls.name!r} "
            f"(protocol {protocol.name!r}); counts: {_plain(counts)}"
        )
    return out


def _plain(counts: pd.Series) -> str:
    """``neutral 79, sad 62``: counts as plain numbers (no numpy reprs in messages)."""
    return ", ".join(f"{k} {int(v)}" for k, v in counts.items()) or "none"


def _originals(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["source_id"] == ""]


def make_folds(df: pd.DataFrame, protocol: Protocol | str, seed: int = 0) -> list[Fold]:
    """Cut the selected utterances ``df`` (see :func:`select_utterances`) into folds.

    Deterministic for a given manifest and ``seed``. Raises :class:`SplitError` when the
    corpus cannot support the protocol (no sessions, too few speakers, empty parts).
    """
    p = get_protocol(protocol) if isinstance(protocol, str) else protocol
    orig = _originals(df)
    if p.kind == "session":
        folds = _session_folds(orig, p)
    elif p.kind == "speaker":
        folds = _speaker_folds(orig)
    elif p.kind == "kfold":
        folds = _kfold_folds(orig, p, seed)
    elif p.stratified:
        folds = _stratified_folds(orig, p, seed)
    else:
        folds = _random_folds(orig, p, seed)
    folds = [_keep_groups(orig, f) for f in folds]
    for f in folds:
        for part in ("train", "dev", "test"):
            if not getattr(f, part):
                raise SplitError(f"protocol {p.name!r}, fold {f.name}: no {part} data")
    return folds


def _ids(df: pd.DataFrame, mask: pd.Series | np.ndarray) -> tuple[str, ...]:
    return tuple(df.loc[mask, "utt_id"])


def _groups(df: pd.DataFrame) -> np.ndarray:
    """Group key per row: the first of a set of identical recordings (``same_as``), else the id."""
    if "same_as" not in df.columns:
        return df["utt_id"].to_numpy()
    same = df["same_as"].fillna("").astype(str)
    return np.where(same != "", same, df["utt_id"]).astype(str)


def _keep_groups(df: pd.DataFrame, fold: Fold) -> Fold:
    """Move every member of a group to the part of the member furthest from training."""
    groups = dict(zip(df["utt_id"], _groups(df)))
    if len(set(groups.values())) == len(groups):
        return fold
    side: dict[str, int] = {}
    for rank, part in enumerate(("train", "dev", "test")):
        for u in getattr(fold, part):
            side[groups[u]] = max(side.get(groups[u], 0), rank)
    parts: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for part in ("train", "dev", "test"):
        for u in getattr(fold, part):
            parts[("train", "dev", "test")[side[groups[u]]]].append(u)
    return Fold(fold.index, fold.name, *(tuple(parts[k]) for k in ("train", "dev", "test")), fold.test_group)


def _session_folds(df: pd.DataFrame, p: Protocol) -> list[Fold]:
    sessions = sorted(s for s in df["session"].unique() if s != "")
    if (df["session"] == "").any() or len(sessions) < 2:
        raise SplitError(
            f"protocol {p.name!r} needs at least 2 sessions and a session for every utterance "
            f"(found {len(sessions)}); use --protocol lospk or kfold"
        )
    folds = []
    for i, test_sess in enumerate(sessions):
        # dev: one speaker of the next session, alternating speakers across folds
        dev_sess = sessions[(i + 1) % len(sessions)]
        dev_spks = sorted(df.loc[df["session"] == dev_sess, "speaker"].unique())
        dev_spk = dev_spks[i % len(dev_spks)]
        test = df["session"] == test_sess
        dev = df["speaker"] == dev_spk
        folds.append(
            Fold(i, f"fold{i + 1}-{test_sess}", _ids(df, ~test & ~dev), _ids(df, dev), _ids(df, test), test_sess)
        )
    return folds


def _need_speakers(df: pd.DataFrame, name: str) -> None:
    n = int((df["speaker"] == "").sum())
    if n:
        raise SplitError(
            f"protocol {name!r} splits by speaker, but {n} utterance(s) have no speaker; give speakers "
            "(`areaser scan generic --speaker-regex`, or a speaker column in the CSV) or use --protocol random "
            "(speaker-dependent)"
        )


def _speaker_folds(df: pd.DataFrame) -> list[Fold]:
    _need_speakers(df, "lospk")
    speakers = sorted(df["speaker"].unique())
    if len(speakers) < 3:
        raise SplitError(f"protocol 'lospk' needs at least 3 speakers (train, dev, test); found {len(speakers)}")
    folds = []
    for i, spk in enumerate(speakers):
        dev_spk = speakers[(i + 1) % len(speakers)]
        test = df["speaker"] == spk
        dev = df["speaker"] == dev_spk
        folds.append(Fold(i, f"fold{i + 1}-{spk}", _ids(df, ~test & ~dev), _ids(df, dev), _ids(df, test), spk))
    return folds


def _kfold_folds(df: pd.DataFrame, p: Protocol, seed: int) -> list[Fold]:

    k = p.n_folds or 5
    _need_speakers(df, p.name)
    speakers = sorted(df["speaker"].unique())
    if len(speakers) < k + 1:
        raise SplitError(
            f"protocol {p.name!r} with {k} folds needs at least {k + 1} speakers (k test groups + a dev speaker); "
            f"found {len(speakers)}"
        )
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    rng = np.random.default_rng(seed)
    folds = []
    y, groups = df["class"].to_numpy(), df["speaker"].to_numpy()
    for i, (tr, te) in enumerate(cv.split(np.zeros(len(df)), y, groups)):
        train_spks = sorted(set(groups[tr]))
        dev_spk = train_spks[int(rng.integers(len(train_spks)))]
        test = np.zeros(len(df), bool)
        test[te] = True
        dev = (groups == dev_spk) & ~test
        folds.append(Fold(i, f"fold{i + 1}", _ids(df, ~test & ~dev), _ids(df, dev), _ids(df, test), f"fold{i + 1}"))
    return folds


def _stratified_folds(df: pd.DataFrame, p: Protocol, seed: int) -> list[Fold]:
    """K stratified folds over utterances (identical recordings grouped); dev: stratified share of train."""
    k = p.n_folds or 5
    y, groups = df["class"].to_numpy(), _groups(df)
    counts = pd.Series(y).value_counts()
    if counts.min() < k:
        raise SplitError(
            f"protocol {p.name!r} with {k} folds needs >= {k} utterances per class; counts: {_plain(counts)}"
        )
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for i, (tr, te) in enumerate(cv.split(np.zeros(len(df)), y, groups)):
        tr_fit, tr_dev = train_test_split(tr, test_size=p.dev_fraction, stratify=y[tr], random_state=seed + i)
        train, dev, test = (np.zeros(len(df), bool) for _ in range(3))
        train[tr_fit], dev[tr_dev], test[te] = True, True, True
        folds.append(Fold(i, f"fold{i + 1}", _ids(df, train), _ids(df, dev), _ids(df, test), f"fold{i + 1}"))
    return folds


def _random_folds(df: pd.DataFrame, p: Protocol, seed: int) -> list[Fold]:
    """Paper: utterance-level random 80/20 per seed (seeds ``seed .. seed+n-1``); dev carved from train."""
    folds = []
    n = len(df)
    for i in range(p.n_folds or 5):
        rng = np.random.default_rng(seed + i)
        perm = rng.permutation(n)
        n_test = int(round(n * p.test_fraction))
        n_dev = int(round((n - n_test) * p.dev_fraction))
        test = np.zeros(n, bool)
        test[perm[:n_test]] = True
        dev = np.zeros(n, bool)
        dev[perm[n_test : n_test + n_dev]] = True
        folds.append(
            Fold(i, f"seed{seed + i}", _ids(df, ~test & ~dev), _ids(df, dev), _ids(df, test), f"seed{seed + i}")
        )
    return folds


def split_frame(
    df: pd.DataFrame, fold: Fold, use_copies: bool = True, train_on_dev: bool = False
) -> dict[str, pd.DataFrame]:
    """Rows of ``df`` for each part of ``fold``: ``{"train", "dev", "test"}``.

    Training gets the fold's originals plus (with ``use_copies``) every augmented copy
    whose source is a training utterance; dev and test get originals only. With
    ``train_on_dev`` (the authors' code: their dev file is read into training, so they train on
    80 %, not 72 %) training also gets the dev originals and their copies, while ``dev`` still
    holds them to be scored: dev is then no held-out set.
    """
    parts = {}
    for part in ("train", "dev", "test"):
        ids = set(getattr(fold, part)) | (set(fold.dev) if part == "train" and train_on_dev else set())
        rows = df["utt_id"].isin(ids) & (df["source_id"] == "")
        if part == "train" and use_copies:
            rows |= df["source_id"].isin(ids)
        parts[part] = df[rows].reset_index(drop=True)
    return parts


def check_fold(parts: dict[str, pd.DataFrame], classes: tuple[str, ...], fold_name: str) -> None:
    """Refuse a fold that cannot be trained or scored: empty part, or a class absent from training."""
    for part in ("train", "dev", "test"):
        if not len(parts[part]):
            raise SplitError(f"fold {fold_name}: no {part} data")
    have = set(parts["train"]["class"])
    missing = [c for c in classes if c not in have]
    if missing:
        raise SplitError(f"fold {fold_name}: class(es) {missing} have no training utterances")


def split_record(fold: Fold, parts: dict[str, pd.DataFrame], base: str | os.PathLike | None = None) -> dict:
    """What a run's ``split.json`` holds: the fold, the utterance ids of each part, the test files' hashes.

    Keys: ``fold``, ``test_group``, ``train`` / ``dev`` / ``test`` (utterance ids), ``base`` (the
    folder relative manifest paths are relative to: ``base``, default the current directory, where
    training runs) and ``test_files`` ``{utt_id: {"sha1", "bytes"}}`` of each test audio file, so that
    :func:`areaser.train.evaluate.evaluate_run` refuses a test file changed since training.
    """
    test = parts["test"]
    return {
        "fold": fold.name,
        "test_group": fold.test_group,
        **{k: list(v["utt_id"]) for k, v in parts.items()},
        "base": os.path.abspath(os.getcwd() if base is None else base),
        "test_files": {
            str(u): {"sha1": file_digest(p), "bytes": os.path.getsize(p)} for u, p in zip(test["utt_id"], test["path"])
        },
    }


# Utterance counts of a complete IEMOCAP_full_release for the paper's selection (improvised sessions; the
# authors' label map 4class-exc: excited as happy, hap left out): 2,659 utterances, 2,117 longer than 2 s.
# Per class, improvised, any duration: neutral 1,099, sad 608, angry 289, excited 663 (hap 284: with it the
# improvised 4-class set is the documented 2,943, the 4class map's total). Per-class counts above 2 s are not
# published; only their total.
XU2021_IEMOCAP_COUNTS: dict[str, dict[str, int | None]] = {
    "4class-exc": {"neutral": 1099, "happy": 663, "sad": 608, "angry": 289, "total": 2659, "longer": 2117},
    "4class": {"neutral": 1099, "happy": 947, "sad": 608, "angry": 289, "total": 2943, "longer": None},
}


def selection_table(df: pd.DataFrame, protocol: Protocol | str, label_set: str | None = None) -> pd.DataFrame:
    """Per class, what ``protocol`` selects from ``df``'s originals, beside a complete IEMOCAP's counts.

    Returns one row per class and a ``total`` row, indexed by class, with columns ``kept`` (originals
    of the label set that pass the improvised filter, any duration), ``selected`` (of those, longer
    than the protocol's ``min_duration_s``: what the folds are cut from), ``expected_kept`` and
    ``expected_selected`` (a complete IEMOCAP_full_release, :data:`XU2021_IEMOCAP_COUNTS`; ``None``
    where no reference count exists).
    """
    p = get_protocol(protocol) if isinstance(protocol, str) else protocol
    spec = label_set or p.label_set
    ls = resolve_label_set(df, spec)
    orig = select_classes(_originals(df), ls)
    if p.improvised_only:
        orig = orig[orig["improvised"].fillna(False).astype(bool)]
    longer = orig if p.min_duration_s is None else orig[orig["duration_s"] > p.min_duration_s]
    ref = XU2021_IEMOCAP_COUNTS.get(spec, {})
    rows = [
        {
            "class": c,
            "kept": int((orig["class"] == c).sum()),
            "selected": int((longer["class"] == c).sum()),
            "expected_kept": ref.get(c),
            "expected_selected": None,
        }
        for c in ls.classes
    ]
    rows.append(
        {
            "class": "total",
            "kept": len(orig),
            "selected": len(longer),
            "expected_kept": ref.get("total"),
            "expected_selected": ref.get("longer"),
        }
    )
    return pd.DataFrame(rows).set_index("class")


def selection_line(table: pd.DataFrame, label_set: str, min_duration_s: float | None = 2.0) -> str:
    """One console line of a :func:`selection_table`: the selected counts against a complete copy's."""

    def n(v) -> str:
        return "?" if v is None or pd.isna(v) else f"{int(v):,}"

    classes = [c for c in table.index if c != "total"]
    tot = table.loc["total"]
    kept = ", ".join(f"{c} {n(table.at[c, 'kept'])}" for c in classes)
    ref = ", ".join(f"{c} {n(table.at[c, 'expected_kept'])}" for c in classes)
    longer = ", ".join(f"{c} {n(table.at[c, 'selected'])}" for c in classes)
    cut = f"longer than {min_duration_s:g} s" if min_duration_s is not None else "selected"
    pairs = [(table.at[c, "kept"], table.at[c, "expected_kept"]) for c in table.index]
    pairs.append((tot["selected"], tot["expected_selected"]))
    known = [(a, b) for a, b in pairs if b is not None and not pd.isna(b)]
    if not known:
        verdict = f"no reference counts for label set {label_set!r}"
    elif all(int(a) == int(b) for a, b in known):
        verdict = "as a complete copy"
    else:
        verdict = "differs from a complete copy: a partial copy or another label map?"
    return (
        f"selection ({label_set}, improvised): {kept} = {n(tot['kept'])} utterances "
        f"(complete IEMOCAP: {ref} = {n(tot['expected_kept'])}); {cut}: {longer} = {n(tot['selected'])} "
        f"(complete IEMOCAP: {n(tot['expected_selected'])}); {verdict}"
    )

"""Reports: JSON for machines, Markdown + PNG for people, written into the run directory.

``write_run_report(run_dir, report)`` writes ``report.json``, ``report.md``,
``confusion.png`` and ``curves.png`` for one training run; ``write_cv_report(cv_dir,
summary)`` does the same for a set of folds or seeds with mean +- std. The Markdown
embeds the pictures by relative path, so the folder can be moved or zipped whole.
Every file goes through :mod:`areaser.io.files` (atomic).

A run's report is one :class:`RunReport`, for neural and classical baseline runs alike; as a dict
(:meth:`RunReport.to_dict`, what :func:`areaser.train.lifecycle.train` returns) it holds: ``name``,
``classes``, ``test`` (:func:`areaser.runs.metrics.classification_metrics`), ``history`` (one
row per epoch: ``epoch``, ``train_loss``, ``dev_loss``, ``dev_wa``, ``dev_ua``, and
``test_wa`` / ``test_ua`` when the test set was tracked), ``selected_epoch``, and
optionally ``paper_and_honest`` (:func:`areaser.runs.metrics.paper_and_honest`), ``test_draws``
(several seeded scorings of a model random at evaluation: :func:`areaser.train.scoring.summarise_draws`), ``info``
(free key -> value facts shown in a table), ``notes`` (warnings shown above everything, e.g.
synthetic data or a speaker-dependent protocol: :func:`areaser.runs.provenance.notes`), ``title``
and ``test_heading`` (a cross-corpus report's own headings, instead of "Run report" and
"Test set").

A cv ``summary`` may hold ``cross_corpus`` (:func:`areaser.train.report.summarise_cross`): every
fold's model scored on other corpora, drawn as one table per corpus with mean +- std over
folds; :func:`write_cross_summary` writes that table alone (``areaser evaluate CV --manifest``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from areaser.io.files import atomic_path, atomic_write_json, atomic_write_text
from areaser.runs.provenance import overlapping_splits

__all__ = [
    "RunReport",
    "plot_confusion",
    "plot_curves",
    "plot_reliability",
    "plot_embedding_map",
    "write_run_report",
    "write_cv_report",
    "write_cross_summary",
    "pct",
]


@dataclass
class RunReport:
    """The report of one run: its schema, the same for a neural model and a classical baseline.

    ``selected_epoch`` is ``None`` and ``history`` empty for a baseline (no epochs); the last four
    fields exist only where they apply (``None``: left out of :meth:`to_dict`): ``test_draws`` for a
    model random at evaluation, ``calibration`` for a neural run's temperature, ``paper_and_honest``
    when the test set was tracked per epoch, ``ddp`` for a run trained on several processes.
    """

    name: str
    classes: list[str]
    fold: str
    test_group: str
    selected_epoch: int | None
    test: dict
    history: list[dict]
    config: dict
    provenance: dict
    notes: list[str]
    info: dict[str, Any]
    environment: dict
    test_draws: dict | None = field(default=None, kw_only=True)
    calibration: dict | None = field(default=None, kw_only=True)
    paper_and_honest: dict | None = field(default=None, kw_only=True)
    ddp: dict | None = field(default=None, kw_only=True)

    _OPTIONAL = ("test_draws", "calibration", "paper_and_honest", "ddp")

    def to_dict(self) -> dict:
        """JSON-ready dict (``report.json``): every field, the optional ones only where set."""
        d = asdict(self)
        return {k: v for k, v in d.items() if not (k in self._OPTIONAL and v is None)}


def pct(x: float) -> str:
    """0.7312 -> '73.12'."""
    return f"{100 * x:.2f}"


def _pyplot():
    # imported here, not at the top: selecting the Agg backend before pyplot loads must not change the
    # backend of a program (a notebook) that imports areaser without drawing anything
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot import
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Confusion matrix (rows = reference, columns = prediction), counts and row %; PNG at ``path``."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.3 * len(classes) + 2, 1.1 * len(classes) + 1.5), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{100 * norm[i, j]:.0f}%",
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title or "confusion matrix (utterances)")
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(
    history: Sequence[Mapping[str, float]], path: str | os.PathLike, selected_epoch: int | None = None
) -> Path:
    """Learning curves: losses (left) and dev / test WA, UA per epoch (right); PNG at ``path``."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    ep = [r["epoch"] for r in history]
    for key, style in (("train_loss", "-"), ("dev_loss", "--")):
        if history and key in history[0]:
            a1.plot(ep, [r[key] for r in history], style, marker=".", label=key.replace("_", " "))
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    for key, style in (("dev_wa", "-"), ("dev_ua", "-"), ("test_wa", ":"), ("test_ua", ":")):
        if history and key in history[0]:
            a2.plot(ep, [100 * r[key] for r in history], style, marker=".", label=key.replace("_", " ").upper())
    for a in (a1, a2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        if selected_epoch is not None:
            a.axvline(selected_epoch, color="grey", lw=0.8, ls="--")
    a2.set_xlabel("epoch")
    a2.set_ylabel("%")
    a2.legend(fontsize=8)
    fig.suptitle("learning curves" + (f" (selected epoch {selected_epoch})" if selected_epoch is not None else ""))
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(calibration: Mapping, path: str | os.PathLike, title: str = "") -> Path:
    """Reliability diagram of a report's ``calibration`` (test part): accuracy vs confidence per bin.

    Two panels, before (``T = 1``) and after temperature scaling, each with the bins' accuracy as bars,
    their mean confidence as dots, the diagonal (perfect calibration) and the ECE; PNG at ``path``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), dpi=100, sharey=True)
    t = calibration["temperature"]
    for ax, key, label in ((axes[0], "before", "before (T = 1)"), (axes[1], "after", f"after (T = {t:.3g})")):
        curve = calibration["reliability"][key]
        edges = np.asarray(curve["edges"])
        width = np.diff(edges)
        acc = [np.nan if a is None else a for a in curve["accuracy"]]
        conf = [np.nan if c is None else c for c in curve["confidence"]]
        ax.bar(edges[:-1], acc, width=width, align="edge", color="tab:blue", alpha=0.7, edgecolor="white",
               label="accuracy")  # fmt: skip
        ax.plot(edges[:-1] + width / 2, conf, "o", color="tab:orange", ms=4, label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
        for x, n in zip(edges[:-1] + width / 2, curve["count"]):
            if n:
                ax.text(x, 0.02, str(n), ha="center", va="bottom", fontsize=6, color="black")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max probability)")
        ax.set_title(f"{label}: ECE {pct(calibration[f'ece_{key}'])} %", fontsize=10)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title or f"reliability on the test part ({calibration['n_test']} utterances; counts per bin)")
    fig.tight_layout()
    return _save(fig, path)


def plot_embedding_map(
    xy: np.ndarray,
    labels: Sequence[str],
    speakers: Sequence[str],
    classes: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """A 2-D map of utterances (``xy [n, 2]``): colour = label, marker = speaker; PNG at ``path``."""
    plt = _pyplot()
    markers = "o^sDvP*Xp<>h8d"
    spk = list(dict.fromkeys(speakers))
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=100)
    labels, speakers = np.asarray(labels, dtype=str), np.asarray(speakers, dtype=str)
    for i, c in enumerate(classes):
        for j, k in enumerate(spk):
            m = (labels == c) & (speakers == k)
            if m.any():
                ax.scatter(xy[m, 0], xy[m, 1], s=18, color=colours(i), marker=markers[j % len(markers)],
                           alpha=0.8, linewidths=0)  # fmt: skip
    by_class = [Line2D([], [], ls="", marker="o", color=colours(i), label=c) for i, c in enumerate(classes)]
    by_speaker = [
        Line2D([], [], ls="", marker=markers[j % len(markers)], color="grey", label=k) for j, k in enumerate(spk)
    ]
    first = ax.legend(handles=by_class, title="label", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.add_artist(first)
    ax.legend(handles=by_speaker, title="speaker", fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0), ncol=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of the test utterances' embeddings")
    fig.tight_layout()
    return _save(fig, path)


def _calibration_md(cal: Mapping) -> list[str]:
    """The calibration section of a run report: T, test ECE / NLL before and after, the diagram."""
    rows = [
        ["test ECE % (15 equal-width bins)", pct(cal["ece_before"]), pct(cal["ece_after"])],
        ["test NLL", f"{cal['nll_before']:.4f}", f"{cal['nll_after']:.4f}"],
    ]
    if cal.get("dev"):
        d = cal["dev"]
        rows += [
            ["dev ECE % (where T was fitted)", pct(d["ece_before"]), pct(d["ece_after"])],
            ["dev NLL", f"{d['nll_before']:.4f}", f"{d['nll_after']:.4f}"],
        ]
    how = (
        f"T = {cal['temperature']:.4g}, {cal['status']}"
        if cal.get("calibrated")
        else f"{cal['status']}; T = 1 (the probabilities are the model's own)"
    )
    return [
        "## Calibration",
        "",
        f"Temperature scaling: {how}. The probabilities `predict` and the service return are "
        "softmax(log(p) / T) of the utterance decision p (for the `logits` decision: the window logits divided by "
        "T); the label (argmax) and every score above are unchanged. ECE: expected calibration error on the "
        f"{cal['n_test']} test utterances (confidence = max probability).",
        "",
        _table(["", "before (T = 1)", f"after (T = {cal['temperature']:.4g})"], rows),
        "",
        "![reliability diagram](reliability.png)",
        "",
    ]


def _save(fig, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _metrics_md(m: Mapping, draws: Mapping | None = None) -> list[str]:
    classes = m["classes"]
    if draws:  # a model random at evaluation: the first draw, then every draw's mean +- std
        n = draws["n"]
        scores = _table(
            ["scoring", "utterances", "WA %", "UA %", "macro-F1 %"],
            [
                ["draw 1 (shown below)", m["n"], pct(m["wa"]), pct(m["ua"]), pct(m["macro_f1"])],
                [f"mean +- std of {n} draws", m["n"]]
                + [f"{pct(draws[k + '_mean'])} +- {pct(draws[k + '_std'])}" for k in ("wa", "ua", "macro_f1")],
            ],
        )
        scores += (
            f"\n\nThis model is random at evaluation (attention dropout or area sampling kept at test time, as in the "
            f"authors' code), so the same weights were scored {n} times (seeded; sample std, n - 1). The paper's "
            "maxima over 100 such noisy evaluations (one per epoch) are biased upward by this noise too, besides "
            "choosing on the test set."
        )
    else:
        scores = _table(
            ["utterances", "WA %", "UA %", "macro-F1 %"], [[m["n"], pct(m["wa"]), pct(m["ua"]), pct(m["macro_f1"])]]
        )
    out = [
        scores,
        "",
        "Per class:",
        "",
        _table(
            ["class", "precision %", "recall %", "F1 %", "support"],
            [[c, pct(v["precision"]), pct(v["recall"]), pct(v["f1"]), v["support"]] for c, v in m["per_class"].items()],
        ),
        "",
        "Confusion matrix (rows = reference, columns = predicted):",
        "",
        _table([""] + list(classes), [[c] + list(row) for c, row in zip(classes, m["confusion"])]),
    ]
    if m.get("per_speaker"):
        out += [
            "",
            "Per speaker:",
            "",
            _table(
                ["speaker", "accuracy %", "utterances"],
                [[k, pct(v["accuracy"]), v["n"]] for k, v in m["per_speaker"].items()],
            ),
        ]
    return out


def _paper_honest_md(ph: Mapping, test: Mapping | None = None) -> list[str]:
    p, h = ph["paper"], ph["honest"]
    note = []
    if test is not None and (pct(test["wa"]), pct(test["ua"])) != (pct(h["wa"]), pct(h["ua"])):  # as shown
        note = [
            f"The honest row's model is the one scored at the top (epoch {h['epoch']}), yet its scores differ "
            f"(WA {pct(h['wa'])} here, {pct(test['wa'])} there; UA {pct(h['ua'])} here, {pct(test['ua'])} "
            "there): this model's evaluation is random (attention dropout or area sampling at evaluation, as in "
            "the authors' code), so every scoring of the same weights is another draw, of WA and of UA alike.",
            "",
        ]
    return [
        "## Paper's way vs honest way",
        "",
        "The test set was scored after every epoch. **Paper's way** (the authors' code): maxWA and maxUA are "
        "separate maxima over epochs of *test* scores, and the kept model is the epoch with the best test WA + UA: "
        "the test set chooses the model, so these numbers are optimistic. **Honest way**: the epoch is chosen on the "
        f"dev split (`{h['monitor']}`) and its test scores are reported.",
        "",
        _table(
            ["reading", "WA %", "UA %", "epoch(s)"],
            [
                [
                    "paper: maxWA / maxUA (separate maxima)",
                    pct(p["max_wa"]),
                    pct(p["max_ua"]),
                    f"{p['max_wa_epoch']} / {p['max_ua_epoch']}",
                ],
                ["paper: kept model (best test WA+UA)", pct(p["kept_wa"]), pct(p["kept_ua"]), p["kept_epoch"]],
                ["honest: epoch chosen on dev", pct(h["wa"]), pct(h["ua"]), h["epoch"]],
            ],
        ),
        "",
        *note,
    ]


def write_run_report(run_dir: str | os.PathLike, report: RunReport | Mapping) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``confusion.png``, ``curves.png`` into ``run_dir``.

    ``report``: a :class:`RunReport`, or a report dict (a cross-corpus report adds ``title``, ``test_heading``).
    """
    run_dir = Path(run_dir)
    if isinstance(report, RunReport):
        report = report.to_dict()
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md"}
    atomic_write_json(paths["json"], report)
    test = report["test"]
    paths["confusion"] = plot_confusion(
        test["confusion"], test["classes"], run_dir / "confusion.png", f"{report.get('name', '')} test".strip()
    )
    history = report.get("history") or []
    if history:
        paths["curves"] = plot_curves(history, run_dir / "curves.png", report.get("selected_epoch"))
    md = [f"# {report.get('title') or 'Run report: ' + report.get('name', run_dir.name)}", ""]
    md += _notes_md(report.get("notes"))
    if report.get("info"):
        md += [_table(["", ""], [[k, v] for k, v in report["info"].items()]), ""]
    sel = report.get("selected_epoch")
    heading = (
        report.get("test_heading") or f"Test set{f' (model of epoch {sel}, chosen on dev)' if sel is not None else ''}"
    )
    md += [f"## {heading}", ""]
    md += _metrics_md(test, report.get("test_draws")) + ["", "![confusion matrix](confusion.png)", ""]
    if report.get("calibration"):
        paths["reliability"] = plot_reliability(report["calibration"], run_dir / "reliability.png")
        md += _calibration_md(report["calibration"])
    if report.get("paper_and_honest"):
        md += _paper_honest_md(report["paper_and_honest"], test)
    if history:
        md += ["## Learning curves", "", "![learning curves](curves.png)", ""]
        keys = [k for k in history[0] if k != "epoch"]
        md += [_table(["epoch"] + keys, [[r["epoch"]] + [_fmt(r[k]) for k in keys] for r in history]), ""]
    atomic_write_text(paths["md"], "\n".join(md))
    return paths


def _notes_md(notes: Sequence[str] | None) -> list[str]:
    """Each warning as its own quoted paragraph, at the top where no reader misses it."""
    return [line for n in notes or () for line in (f"> **Note:** {n}", "")]


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_cv_report(cv_dir: str | os.PathLike, summary: Mapping) -> dict[str, Path]:
    """Aggregate report over folds / seeds.

    Under a protocol of overlapping random splits (``xu2021``: one 80/20 split per seed, see
    :func:`areaser.runs.provenance.overlapping_splits`) the table, its heading and its footnote say
    "random splits (seeds), overlapping, not folds" instead of calling the rows folds.

    ``summary`` holds ``name``, ``protocol``, ``classes``, ``folds`` (list of
    ``{"name", "test_group", "dir", "wa", "ua", "macro_f1", "epoch"}`` plus optional
    ``paper_max_wa`` / ``paper_max_ua``), ``aggregate`` (:func:`areaser.runs.metrics.summarise_runs`
    output), ``confusion`` (summed over folds) and optionally ``info``, ``notes`` and
    ``cross_corpus`` (see the module docstring).
    """
    cv_dir = Path(cv_dir)
    paths = {"json": cv_dir / "report.json", "md": cv_dir / "report.md"}
    atomic_write_json(paths["json"], summary)
    seeds = _random_splits(summary)
    paths["confusion"] = plot_confusion(
        summary["confusion"],
        summary["classes"],
        cv_dir / "confusion.png",
        f"test, summed over {'random splits (overlapping)' if seeds else 'folds'}",
    )
    agg = summary["aggregate"]
    paper = "paper_max_wa" in summary["folds"][0]
    md = [f"# Cross-validation report: {summary.get('name', cv_dir.name)}", ""]
    md += _notes_md(summary.get("notes"))
    if summary.get("info"):
        md += [_table(["", ""], [[k, v] for k, v in summary["info"].items()]), ""]
    unit = "random split (seed)" if seeds else "fold"
    header = [unit, "test part" if seeds else "held out", "epoch (dev)", "WA %", "UA %", "macro-F1 %"]
    if paper:
        header += ["paper maxWA %", "paper maxUA %"]
    rows = []
    for f in summary["folds"]:
        row = [
            f"[{f['name']}]({f['dir']}/report.md)",
            f["test_group"],
            f["epoch"],
            pct(f["wa"]),
            pct(f["ua"]),
            pct(f["macro_f1"]),
        ]
        if paper:
            row += [pct(f["paper_max_wa"]), pct(f["paper_max_ua"])]
        rows.append(row)
    last = ["**mean +- std**", "", "", *(_mean_std(agg, k) for k in ("wa", "ua", "macro_f1"))]
    if paper:
        last += [_mean_std(agg, "paper_max_wa"), _mean_std(agg, "paper_max_ua")]
    if seeds:
        n = len(summary["folds"])
        md += [f"## Per random split (test set): {n} random splits (seeds), overlapping, not folds", ""]
        md += [_table(header, rows + [last]), ""]
        md += [
            f"Each row is one random 80/20 utterance split, drawn by its seed: the {n} test sets overlap (an "
            "utterance can be tested in several splits and never in others), so these are not the folds of a "
            "cross-validation. Standard deviation is the sample std over the splits (n - 1); it is the spread "
            "of repeated random splits, not of a cross-validation.",
            "",
        ]
    else:
        md += ["## Per fold (test set)", "", _table(header, rows + [last]), ""]
        md += ["Standard deviation is the sample std over folds (n - 1).", ""]
    if paper:
        md += [
            f"**Labels.** *WA / UA*: honest way, the epoch is chosen on each {'split' if seeds else 'fold'}'s dev "
            "part, then scored on test. "
            "*paper maxWA / maxUA*: the paper's way, separate maxima over epochs of test scores (the test set "
            "chooses the epoch; optimistic, not comparable with honest numbers).",
            "",
        ]
    md += [
        f"## Confusion matrix (all {'random splits' if seeds else 'folds'})",
        "",
        "![confusion matrix](confusion.png)",
        "",
    ]
    if "ece_before" in agg and "ece_after" in agg:
        md += [
            "## Calibration (temperature fitted on each dev part)",
            "",
            _table(
                ["", "before (T = 1)", "after"],
                [["test ECE %, mean +- std", _mean_std(agg, "ece_before"), _mean_std(agg, "ece_after")]],
            ),
            "",
        ]
    emb = summary.get("embedding_map")
    if emb:
        md += [
            "## Embedding map (test utterances of every fold)",
            "",
            f"t-SNE (random_state {emb['random_state']}) of the pooled penultimate-layer embeddings of the "
            f"{emb['n']} test utterances, each embedded by its own fold's model (standardised per fold: the "
            "folds' embedding spaces are not aligned, so distances within a fold mean more than across folds). "
            "Colour: label; marker: speaker.",
            "",
            f"![embedding map]({emb['file']})",
            "",
        ]
    if summary.get("cross_corpus"):
        md += _cross_md(summary["cross_corpus"])
    atomic_write_text(paths["md"], "\n".join(md))
    return paths


def _random_splits(summary: Mapping) -> bool:
    """Whether a cv summary's "folds" are overlapping random splits, one per seed (``xu2021``)."""
    v = (summary.get("provenance") or {}).get("overlapping_splits")
    return bool(overlapping_splits(summary.get("protocol")) if v is None else v)


def _mean_std(agg: Mapping, k: str) -> str:
    return f"{pct(agg[k]['mean'])} +- {pct(agg[k]['std'])}" if k in agg else ""


def _cross_md(cross: Mapping[str, Mapping], base: str = "") -> list[str]:
    """One table per other corpus: every fold's model on it, then mean +- std over folds.

    ``base``: the path from the Markdown file to the cv folder (fold links are relative to it).
    """
    md = [
        "## Cross-corpus (every fold's model on another corpus)",
        "",
        "Each fold's model (the one its test scores above come from) scores every original utterance of the other "
        "corpus whose label maps to one of its classes, by name through the label set. Model classes the other "
        "corpus lacks are left out of UA and macro-F1 (they have no recall there). Standard deviation: sample "
        "std over folds (n - 1).",
        "",
    ]
    for name, e in cross.items():
        left = ", ".join(e["classes_left_out"]) or "none"
        md += [
            f"### Scored on {e.get('corpus_text', name)}",
            "",
            f"Manifest `{e['manifest']}`: {e['n']} utterances scored; classes used: {', '.join(e['classes_used'])}; "
            f"model classes absent there (left out of UA): {left}.",
            "",
        ]
        rows = [
            [f"[{f['name']}]({base}{f['dir']}/report.md)", f["n"], pct(f["wa"]), pct(f["ua"]), pct(f["macro_f1"])]
            for f in e["folds"]
        ]
        agg = e["aggregate"]
        rows.append(["**mean +- std**", "", _mean_std(agg, "wa"), _mean_std(agg, "ua"), _mean_std(agg, "macro_f1")])
        md += [_table(["fold", "utterances", "WA %", "UA %", "macro-F1 %"], rows), ""]
    return md


def write_cross_summary(out_dir: str | os.PathLike, summary: Mapping, base: str = "") -> dict[str, Path]:
    """``report.json`` and ``report.md`` of the cross-corpus scores of a cv's folds.

    ``summary`` holds ``name``, optionally ``notes`` and ``info``, and ``cross_corpus`` (as in
    :func:`write_cv_report`); ``base`` is the path from ``out_dir`` back to the cv folder.
    """
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
    atomic_write_json(paths["json"], summary)
    md = [f"# Cross-corpus report: {summary.get('name', out_dir.name)}", ""] + _notes_md(summary.get("notes"))
    if summary.get("info"):
        md += [_table(["", ""], [[k, v] for k, v in summary["info"].items()]), ""]
    md += _cross_md(summary["cross_corpus"], base)
    atomic_write_text(paths["md"], "\n".join(md))
    return paths

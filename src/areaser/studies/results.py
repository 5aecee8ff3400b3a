"""A study's results: aggregate mean +- std per setting, a table, a JSON/Markdown report, a plot."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from areaser.io.files import atomic_write_json, atomic_write_text, read_json
from areaser.runs.config import ConfigError
from areaser.runs.determinism import environment_text, machine_description
from areaser.runs.metrics import summarise_runs
from areaser.runs.reports import _pyplot, _save, pct
from areaser.studies.definitions import Setting, Study
from areaser.studies.plan import AblationConfig, _signature

# ----------------------------------------------------------------------------- aggregation and output


METRICS = ("wa", "ua", "macro_f1")


def aggregate(settings: Sequence[Setting], results: Sequence[Mapping]) -> list[dict]:
    """One row per setting: mean +- std (sample std over runs) of WA, UA, macro-F1."""
    rows = []
    for s in settings:
        rs = [r for r in results if r["setting"] == s.name]
        keys = list(METRICS) + (["paper_max_wa", "paper_max_ua"] if rs and "paper_max_wa" in rs[0] else [])
        rows.append(
            {
                "setting": s.name,
                "label": s.label,
                "series": s.series,
                "x": s.x,
                "runs": len(rs),
                "run_s": float(np.mean([r["elapsed_s"] for r in rs])) if rs else 0.0,
                **summarise_runs(rs, keys),
            }
        )
    return rows


def _pm(cell: Mapping) -> str:

    return f"{pct(cell['mean'])} +- {pct(cell['std'])}"


def results_table(rows: Sequence[Mapping]) -> str:
    """Markdown table: setting, what it is, runs, WA / UA / macro-F1 (mean +- std, %), time per run."""
    paper = any("paper_max_wa" in r for r in rows)
    header = ["setting", "what", "runs", "WA %", "UA %", "macro-F1 %"]
    header += ["paper maxWA %", "paper maxUA %"] if paper else []
    header.append("s / run")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    best = {k: max(r[k]["mean"] for r in rows) for k in METRICS}
    tied = {k: all(r[k]["mean"] == best[k] for r in rows) for k in METRICS}  # nothing to point out
    for r in rows:
        cells = [f"`{r['setting']}`", r["label"], str(r["runs"])]
        for k in METRICS:
            cell = _pm(r[k])
            cells.append(f"**{cell}**" if r[k]["mean"] == best[k] and not tied[k] else cell)
        if paper:
            cells += [_pm(r[k]) if k in r else "-" for k in ("paper_max_wa", "paper_max_ua")]  # baselines: no epochs
        cells.append(f"{r['run_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(
    study_dir: Path,
    study: Study,
    cfg: AblationConfig,
    rows: Sequence[Mapping],
    results: Sequence[Mapping],
    command: str,
    elapsed_s: float,
    executed: int,
) -> dict[str, Path]:
    """``results.md`` (table + command), ``results.json`` (everything), ``results.png`` (plot)."""
    paths = {"md": study_dir / "results.md", "json": study_dir / "results.json", "png": study_dir / "results.png"}
    c0 = results[0] if results else {}
    machine = machine_description()
    # invocations that trained something: the study's cost survives resumes
    old = read_json(paths["json"], ConfigError) if paths["json"].is_file() else {}
    invocations = [i for i in old.get("invocations", []) if i.get("study_signature") == _signature(study, cfg)]
    if executed:
        invocations.append(
            {
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "wall_s": round(elapsed_s, 1),
                "runs_trained": executed,
                "jobs": cfg.jobs or os.cpu_count(),
                "machine": machine,
                "study_signature": _signature(study, cfg),
            }
        )
    wall = sum(i["wall_s"] for i in invocations)
    meta = {
        "study": study.name,
        "title": study.title,
        "command": command,
        "protocol": cfg.protocol,
        "manifest": str(cfg.manifest),
        "folds": sorted({r["fold"] for r in results}),
        "seeds": list(cfg.seeds),
        "epochs": cfg.epochs,
        "quick": cfg.quick,
        "overrides": cfg.overrides,
        "machine": machine,
        "wall_s": round(wall, 1),
        "run_s_total": round(sum(r["elapsed_s"] for r in results), 1),
        "classes": c0.get("classes", []),
        "invocations": invocations,
    }
    atomic_write_json(paths["json"], {**meta, "rows": list(rows), "runs": list(results)})
    plot_results(rows, study, paths["png"], meta["classes"])
    n_runs = len(results)
    md = [
        f"# {study.title} (`{study.name}`, protocol `{cfg.protocol}`)",
        "",
        study.description,
        "",
        "```bash",
        command,
        "```",
        "",
        results_table(rows),
        "",
        f"Mean +- sample std over {n_runs // max(1, len(rows))} run(s) per setting (folds {', '.join(meta['folds'])}; "
        f"seeds {', '.join(map(str, cfg.seeds))}); best mean in bold; "
        f"chance is {100 / max(1, len(meta['classes'])):.0f} % UA. "
        "Test-set scores; a neural model is scored with the weights of the epoch chosen on the fold's dev split."
        + (
            " *paper maxWA / maxUA*: maxima over epochs of test scores, the paper's optimistic reading, not "
            "comparable with the honest columns."
            if any("paper_max_wa" in r for r in rows)
            else ""
        ),
        "",
        f"Time: {wall:.0f} s wall clock in {len(invocations)} invocation(s) that trained runs "
        f"({', '.join(_invocation(i) for i in invocations) or 'none'}), "
        f"{meta['run_s_total']:.0f} s summed over runs; machine: {machine}.",
        "",
        *sorted({f"Environment: {environment_text(r['environment'])}." for r in results if r.get("environment")}),
        "",
        "![results](results.png)",
        "",
    ]
    atomic_write_text(paths["md"], "\n".join(md))
    return paths


def _invocation(i: Mapping) -> str:
    return f"{i['runs_trained']} run(s) with {i['jobs']} worker(s)"


def plot_results(rows: Sequence[Mapping], study: Study, path: Path, classes: Sequence[str] = ()) -> Path:
    """Plot a study's results to a PNG at ``path``.

    Lines with error bars where settings have a numeric ``x`` (like the paper's figures), grouped bars of
    WA / UA / macro-F1 otherwise.
    """
    plt = _pyplot()
    numeric = [r for r in rows if r["x"] is not None]
    if numeric:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True)
        for ax, key, name in zip(axes, ("wa", "ua"), ("WA", "UA")):
            names = list(dict.fromkeys(r["series"] for r in numeric))
            for i, series in enumerate(names):
                pts = sorted((r for r in numeric if r["series"] == series), key=lambda r: r["x"])
                dx = 0.04 * (i - (len(names) - 1) / 2)  # side by side, so error bars do not hide each other
                ax.errorbar(
                    [r["x"] + dx for r in pts],
                    [100 * r[key]["mean"] for r in pts],
                    yerr=[100 * r[key]["std"] for r in pts],
                    marker="o",
                    capsize=3,
                    label=series,
                    color=f"C{i}",
                )
            for j, r in enumerate(r for r in rows if r["x"] is None):
                m, s = 100 * r[key]["mean"], 100 * r[key]["std"]
                color = f"C{j + 3}"
                ax.axhline(m, ls="--", color=color, label=r["series"] or r["setting"])
                ax.axhspan(m - s, m + s, color=color, alpha=0.12)
            xs = sorted({r["x"] for r in numeric})
            ax.set_xticks(xs)
            if study.name == "area-size":
                ax.set_xticklabels([f"{int(x)}x{int(x)}" for x in xs])
            ax.set_xlabel(study.xlabel)
            ax.set_title(f"{name} (mean +- std over runs)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("%")
        axes[1].legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4.2), dpi=100)
        x = np.arange(len(rows))
        w = 0.27
        for i, (key, name) in enumerate((("wa", "WA"), ("ua", "UA"), ("macro_f1", "macro-F1"))):
            ax.bar(
                x + (i - 1) * w,
                [100 * r[key]["mean"] for r in rows],
                w,
                yerr=[100 * r[key]["std"] for r in rows],
                capsize=2,
                label=name,
            )
        ax.set_xticks(
            x,
            [r["setting"] for r in rows],
            rotation=30 if len(rows) > 4 else 0,
            ha="right" if len(rows) > 4 else "center",
        )
        if classes:
            ax.axhline(100 / len(classes), ls=":", color="grey", label="chance (UA)")
        ax.set_ylabel("%")
        ax.set_title("mean +- std over runs")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{study.title}")
    fig.tight_layout()
    return _save(fig, path)

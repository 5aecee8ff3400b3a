"""Real human speech: every model on EmoDB and RAVDESS, speaker-independent; writes docs/real-speech.md.

    python -m benchmarks.real_speech [--corpora emodb,ravdess] [--models cnn,paper,faithful,egemaps-lr,...]
        [--folds N] [--epochs E] [--seeds 0,1] [--data DIR] [--out DIR] [--doc docs/real-speech.md]
        [--jobs J] [--set KEY=VALUE] [--per-speaker N] [--doc-only] [--no-progress]

Corpora (beside the project at ``../shared/data``, see its README.md): EmoDB with protocol
``lospk`` (10 folds, one per speaker; label set ``emodb``: 7 classes) and RAVDESS speech with
``kfold`` (5 speaker-grouped folds; label set ``ravdess``: 8 classes). Models: the neural
presets ``cnn``, ``paper`` and ``faithful`` trained with ``--preset cpu``; the classical
baselines ``egemaps-lr`` and ``egemaps-svm`` (:mod:`areaser.models.baselines`); and the peer
``opensmile-svm``, openSMILE's eGeMAPSv02 functionals + a linear SVM
(:mod:`benchmarks.opensmile_peer`), scored on the very same folds.

Everything goes through the package: :func:`areaser.data.corpora.load_corpus` scans each corpus into
``<out>/<corpus>/manifest.csv`` and :func:`areaser.train.crossval.cross_validate` trains and scores
each (corpus, model, seed) in ``<out>/<corpus>/<model>-seed<seed>/``. It resumes: a fold with
its report is not trained again, so an interrupted benchmark picks up where it stopped, and a
folder made with other settings is refused before anything runs (as ``areaser ablate`` does).
``--jobs J`` runs J cross-validations at once in worker processes of one torch thread each.

Output: ``docs/real-speech.md`` (UA, WA, macro-F1 as mean +- sample std over folds x seeds,
per-class recall, time per fold, the resolved settings and the commands), its confusion
matrices in ``docs/real-speech/*.png``, and every number in ``docs/real-speech.json``;
``--doc-only`` rewrites the doc from that JSON without data or training. Results of earlier
invocations made with the same ``--epochs`` / ``--set`` / ``--per-speaker`` stay in the doc, so
corpora and models can be run one at a time.

``--folds N`` runs the first N folds (a quick look; the table says how many ran).
``--per-speaker N`` keeps N utterances per speaker (classes in turn) for smoke tests; the doc
then says that its numbers come from a subset. ``--set KEY=VALUE`` overrides the neural
models' config (value read as JSON), e.g. ``--set 'model_overrides={"channels":[4,4,4,4,4]}'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from areaser.io.workers import limit_threads, process_pool
from areaser.studies.execute import quiet_lightning
from benchmarks import opensmile_peer

console = Console(width=None if sys.stdout.isatty() else 160)
REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PROG = "python -m benchmarks.real_speech"


@dataclass(frozen=True)
class Corpus:
    name: str
    title: str
    folder: str
    protocol: str
    label_set: str
    why: str


CORPORA = {
    "emodb": Corpus(
        "emodb",
        "EmoDB",
        "emodb",
        "lospk",
        "emodb",
        "Leave-one-speaker-out: 10 folds, each tests one of the 10 speakers (35-71 utterances), the "
        "next speaker is the dev speaker (epoch choice), the other 8 train. With so few speakers the "
        "spread over folds is large (the data README says so too).",
    ),
    "ravdess": Corpus(
        "ravdess",
        "RAVDESS (speech)",
        "ravdess",
        "kfold",
        "ravdess",
        "5 stratified folds grouped by speaker. With 24 actors, leave-one-speaker-out would be 24 "
        "trainings per model, each scored on 60 utterances of one actor; 5 folds keep 4-5 test actors "
        "(240-300 utterances) per fold, one dev actor and 18-19 training actors, at a fifth of the "
        "cost. No actor is in two parts of a fold; the one pair of identical recordings "
        "(Actor_07) stays on one side.",
    ),
}

NEURAL = ("cnn", "paper", "faithful")
CLASSICAL = ("egemaps-lr", "egemaps-svm")
PEER = opensmile_peer.NAME
MODELS = (*NEURAL, *CLASSICAL, PEER)
WHAT = {
    "cnn": "the convolutional stack without attention",
    "paper": "CNN + multiscale area attention, as the paper writes it",
    "faithful": "CNN + area attention as the authors' code computes it",
    "egemaps-lr": "eGeMAPS-like functionals (librosa) + logistic regression",
    "egemaps-svm": "eGeMAPS-like functionals (librosa) + RBF SVM",
    PEER: "openSMILE eGeMAPSv02 functionals + linear SVM (peer)",
}
SETTING_KEYS = (
    "preset",
    "model_overrides",
    "features",
    "segments",
    "vtlp",
    "lr",
    "weight_decay",
    "batch_size",
    "epochs",
    "patience",
    "loss",
    "class_weights",
    "monitor",
    "decision",
)
VOLATILE = ("progress", "threads", "out_dir", "name", "fold")  # may change between invocations of one run


# ----------------------------------------------------------------------------- planning


def _csv(text: str, choices: tuple[str, ...], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in choices]
    if bad or not items:
        raise SystemExit(
            f"real_speech: unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(choices)}"
        )
    return list(dict.fromkeys(items))


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"real_speech: --set wants KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def subset_per_speaker(df, n: int):
    """At most ``n`` utterances per speaker, taking the classes in turn, each speaker starting at
    the next class (so every class is kept somewhere even when ``n`` < classes); deterministic."""
    df = df.sort_values("utt_id")
    labels = sorted(set(df["label"]))
    speakers = {s: i for i, s in enumerate(sorted(set(df["speaker"])))}
    turn = [(labels.index(lab) - speakers[spk]) % len(labels) for lab, spk in zip(df["label"], df["speaker"])]
    out = df.assign(_rank=df.groupby(["speaker", "label"]).cumcount(), _turn=turn)
    out = out.sort_values(["speaker", "_rank", "_turn"]).groupby("speaker").head(n)
    out = out.drop(columns=["_rank", "_turn"]).sort_values("utt_id").reset_index(drop=True)
    if "same_as" in out.columns:  # an identical twin left out: nothing to keep together
        out.loc[~out["same_as"].isin(set(out["utt_id"])), "same_as"] = ""
    return out


def corpus_manifest(corpus: Corpus, data: Path, work: Path, per_speaker: int | None) -> Path:
    """Scan the corpus with its areaser loader and write ``work/manifest.csv``."""
    from areaser.data.corpora import load_corpus
    from areaser.data.manifest import write_manifest

    scan = load_corpus(corpus.name, data / corpus.folder, progress=False)
    df = scan.manifest
    if df.empty:
        why = f" (first skip: {scan.skipped[0]})" if scan.skipped else ""
        raise SystemExit(f"real_speech: the {corpus.name} loader found no usable audio in {data / corpus.folder}{why}")
    for w in scan.warnings:
        console.print(f"[yellow]{corpus.name}: {w}[/yellow]", highlight=False)
    if per_speaker:
        df = subset_per_speaker(df, per_speaker)
    return write_manifest(df, work / "manifest.csv")


def job_config(
    corpus: Corpus,
    model: str,
    seed: int,
    manifest: Path,
    work: Path,
    epochs: int | None,
    overrides: dict,
    progress: bool,
):
    """The :class:`areaser.runs.config.TrainConfig` of one cross-validation."""
    from areaser.runs.config import config_with

    common = dict(
        manifest=str(manifest),
        protocol=corpus.protocol,
        label_set=corpus.label_set,
        model=model,
        seed=seed,
        out_dir=str(work),
        name=f"{model}-seed{seed}",
        tensorboard=False,
    )
    if model in NEURAL:
        extra = dict(overrides, **({"epochs": epochs} if epochs is not None else {}))
        return config_with(None, preset="cpu", progress=progress, **common, **extra)
    # classical models and the peer ignore neural settings; progress off in their config, as a
    # baseline's resume compares whole configs (its bar is drawn by the job's "progress" instead)
    return config_with(None, progress=False, **common)


def settings_of(config) -> dict:
    """What a row's numbers were made with (the resolved config, or the classifier's settings)."""
    from areaser.models.baselines import FEATURE_NAMES, get_baseline

    c = config.resolved()
    if c.model in NEURAL:
        d = c.to_dict()
        return {k: d[k] for k in SETTING_KEYS}
    if c.model in CLASSICAL:
        return {
            "features": f"{len(FEATURE_NAMES)} eGeMAPS-like functionals",
            **asdict(get_baseline(c.model, seed=c.seed)),
        }
    return {
        "features": f"openSMILE {opensmile_peer.opensmile_version()} {opensmile_peer.FEATURE_SET} functionals",
        "classifier": f"StandardScaler + SVC(kernel={opensmile_peer.KERNEL!r}, C={opensmile_peer.C:g}, "
        "class_weight='balanced')",
    }


def _check_folder(config) -> tuple[Path, dict]:
    """Refuse a cv folder made with other settings (else finished folds would be reused wrongly);
    return the folder's ``bench.json`` and what to write there once every folder passed."""
    cv_dir = Path(config.out_dir) / config.name
    sig = {k: v for k, v in config.to_dict().items() if k not in VOLATILE}
    meta = cv_dir / "bench.json"
    if meta.is_file():
        old = json.loads(meta.read_text())
        diff = sorted(k for k in set(old) | set(sig) if old.get(k) != sig.get(k))
        if diff:
            raise SystemExit(
                f"real_speech: {cv_dir} holds runs made with another {', '.join(diff)}; "
                "use another --out or delete that folder"
            )
    return meta, sig


# ----------------------------------------------------------------------------- running


def fold_seconds(report: dict) -> float | None:
    """Seconds a fold cost, from its report: a neural run's fit time, a classical run's features + fit."""
    info = report.get("info", {})
    for key in ("training time", "feature extraction + training time"):
        if key in info:
            return float(sum(float(x) for x in re.findall(r"\d+(?:\.\d+)?", str(info[key]))))
    return None


def run_job(job: dict) -> dict:
    """One cross-validation (top-level, so worker processes can import it); its result entry."""
    from areaser.runs.config import TrainConfig
    from areaser.train.crossval import cross_validate

    c = TrainConfig.from_dict(job["config"])
    say = print if job["log"] else None
    t0, started = time.perf_counter(), time.time()
    with quiet_lightning():
        if c.model == PEER:
            summary = opensmile_peer.cross_validate(
                c, job["folds"], cache=Path(job["cache"]), progress=job["progress"], log=say
            )
        else:
            summary = cross_validate(c, folds=job["folds"], log=say)
    wall = time.perf_counter() - t0
    cv_dir = Path(c.out_dir) / c.name
    folds, trained = [], 0
    for row in summary["folds"]:
        path = cv_dir / row["dir"] / "report.json"
        trained += path.stat().st_mtime >= started
        rep = json.loads(path.read_text())
        t = rep["test"]
        folds.append(
            {
                "name": row["name"],
                "test_group": row["test_group"],
                "n": t["n"],
                "wa": t["wa"],
                "ua": t["ua"],
                "macro_f1": t["macro_f1"],
                "epoch": row["epoch"],
                "seconds": fold_seconds(rep),
                "confusion": t["confusion"],
            }
        )
    return {
        "corpus": job["corpus"],
        "model": c.model,
        "seed": c.seed,
        "protocol": c.protocol,
        "label_set": c.resolved().label_set,
        "classes": list(summary["classes"]),
        "n_folds": job["n_folds"],
        "manifest": c.manifest,
        "cv_dir": str(cv_dir),
        "folds": folds,
        "settings": job["settings"],
        "wall_s": round(wall, 1),
        "trained": trained,
    }


def run_jobs(jobs: list[dict], workers: int, progress: bool) -> list[dict]:
    """Run the cross-validations one after the other, or ``workers`` at once (one thread each)."""
    results = []

    def done(e: dict) -> None:
        results.append(e)
        ua, wa = (np.mean([f[k] for f in e["folds"]]) for k in ("ua", "wa"))
        console.print(
            f"{e['corpus']} / {e['model']} / seed {e['seed']}: UA {100 * ua:.2f} %, WA {100 * wa:.2f} % "
            f"over {len(e['folds'])} fold(s), {e['trained']} trained now ({e['wall_s']:.0f} s)",
            highlight=False,
        )

    if workers <= 1:
        for j in jobs:
            done(run_job(j))
        return results
    import librosa  # noqa: F401  (compile and cache numba kernels once, before workers race to)

    if any(j["config"]["model"] in CLASSICAL for j in jobs):
        from areaser.models.baselines import prosodic_features

        prosodic_features(np.sin(np.linspace(0, 2000, 8000)).astype(np.float32))
    from areaser.train.callbacks import make_progress

    bar = make_progress() if progress else None
    task = bar.add_task("cross-validations", total=len(jobs), info="") if bar is not None else None
    try:
        if bar is not None:
            bar.start()
        with process_pool(workers, limit_threads, (1,)) as pool:
            futures = {
                pool.submit(
                    run_job, {**j, "log": False, "progress": False, "config": {**j["config"], "progress": False}}
                ): j
                for j in jobs
            }
            for fut in as_completed(futures):
                try:
                    e = fut.result()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)  # running ones finish and keep their folds
                    j = futures[fut]
                    console.print(
                        f"{j['corpus']} / {j['config']['model']} / seed {j['config']['seed']} failed; "
                        "finished folds are kept",
                        highlight=False,
                    )
                    raise
                done(e)
                if bar is not None:
                    bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return results


# ----------------------------------------------------------------------------- provenance


def git_commit() -> str:
    """Short commit of the checkout, noting uncommitted changes (read-only git calls)."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "-C", str(REPO), "diff-index", "--quiet", "HEAD", "--"], capture_output=True, timeout=20
            ).returncode
            != 0
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + (" with uncommitted changes" if sha and dirty else "")


def machine() -> dict:
    import torch

    from areaser.runs.determinism import machine_description

    return {
        "processor": platform.processor() or platform.machine(),
        "cpu": machine_description(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------- the document


def _pm(values: list[float]) -> tuple[float, float, str]:
    from areaser.runs.metrics import summarise

    s = summarise(values)
    return s["mean"], s["std"], f"{100 * s['mean']:.2f} +- {100 * s['std']:.2f}"


def rows_of(entries: list[dict], corpus: str) -> list[dict]:
    """One row per model of ``corpus``: every fold of every seed is one value of the spread."""
    rows = []
    for model in MODELS:
        es = sorted((e for e in entries if e["corpus"] == corpus and e["model"] == model), key=lambda e: e["seed"])
        if not es:
            continue
        folds = [f for e in es for f in e["folds"]]
        secs = [f["seconds"] for f in folds if f["seconds"] is not None]
        conf = np.sum([np.asarray(f["confusion"]) for f in folds], axis=0)
        rows.append(
            {
                "model": model,
                "seeds": [e["seed"] for e in es],
                "folds": len(folds) // len(es),
                "n_folds": es[0]["n_folds"],
                "entries": len(folds),
                "classes": es[0]["classes"],
                "protocol": es[0]["protocol"],
                "label_set": es[0]["label_set"],
                **{k: _pm([f[k] for f in folds]) for k in ("ua", "wa", "macro_f1")},
                "s_fold": float(np.mean(secs)) if secs else None,
                "s_total": float(np.sum(secs)) if secs else None,
                "confusion": conf.tolist(),
                "settings": es[0]["settings"],
            }
        )
    return rows


def _folds_cell(r: dict) -> str:
    cell = f"{r['folds']}" + (f" of {r['n_folds']}" if r["folds"] != r["n_folds"] else "")
    return cell + (f" x {len(r['seeds'])} seeds" if len(r["seeds"]) > 1 else "")


def _recall(confusion: list[list[int]]) -> list[float | None]:
    cm = np.asarray(confusion, dtype=float)
    return [cm[i, i] / cm[i].sum() if cm[i].sum() else None for i in range(len(cm))]


def score_table(rows: list[dict]) -> str:
    header = ["model", "what", "UA %", "WA %", "macro-F1 %", "folds", "s / fold", "total s"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    best = {k: max(r[k][0] for r in rows) for k in ("ua", "wa", "macro_f1")}
    for r in rows:
        cells = [f"`{r['model']}`", WHAT[r["model"]]]
        for k in ("ua", "wa", "macro_f1"):
            cells.append(f"**{r[k][2]}**" if len(rows) > 1 and r[k][0] == best[k] else r[k][2])
        cells += [
            _folds_cell(r),
            "-" if r["s_fold"] is None else f"{r['s_fold']:.1f}",
            "-" if r["s_total"] is None else f"{r['s_total']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recall_table(rows: list[dict]) -> str:
    classes = rows[0]["classes"]
    lines = ["| model | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for r in rows:
        rec = _recall(r["confusion"])
        lines.append(f"| `{r['model']}` | " + " | ".join("-" if x is None else f"{100 * x:.1f}" for x in rec) + " |")
    return "\n".join(lines)


def live_settings(store: dict) -> dict:
    """What ``--preset cpu`` resolves to in the code now, with the stored invocation's overrides."""
    sig = store.get("signature", {})
    c = job_config(
        CORPORA["emodb"], "cnn", 0, Path("manifest.csv"), Path("."), sig.get("epochs"), sig.get("overrides", {}), False
    )
    return settings_of(c)


def _settings_block(settings: dict) -> list[str]:
    return ["```", *(f"{k} = {json.dumps(v)}" for k, v in settings.items()), "```", ""]


def write_doc(doc: Path, store: dict) -> Path:
    """``doc`` (Markdown) and its confusion PNGs in ``doc.parent / doc.stem``, from ``store``."""
    from areaser.io.files import atomic_write_text
    from areaser.runs.reports import plot_confusion

    entries = list(store["runs"].values())
    sig = store.get("signature", {})
    png_dir = doc.parent / doc.stem
    inv = store.get("invocations", [])
    md = [
        "# Real speech: EmoDB and RAVDESS, speaker-independent",
        "",
        f"Written by `{PROG}` ([benchmarks/real_speech.py](../benchmarks/real_speech.py)); every number is also "
        f"in [{doc.stem}.json]({doc.stem}.json), from which `{PROG} --doc-only` rewrites this page without "
        "training. Runs resume: the same command again trains only what is missing.",
        "",
    ]
    if sig.get("per_speaker"):
        md += [
            f"> **Subset.** Only {sig['per_speaker']} utterances per speaker (`--per-speaker`): a smoke test; "
            "these numbers say little about the corpora.",
            "",
        ]
    if sig.get("epochs") is not None or sig.get("overrides"):
        md += [
            "> **Settings changed from `--preset cpu`:** "
            + ", ".join(
                [f"epochs {sig['epochs']}"] * (sig.get("epochs") is not None)
                + [f"`{k}={json.dumps(v)}`" for k, v in sig.get("overrides", {}).items()]
            )
            + " (neural models only).",
            "",
        ]
    md += ["Made by these invocations (the last one wrote this page):", ""]
    for i in inv:
        m = i["machine"]
        md += [
            f"- {i['date']}, commit `{i['commit']}`, {m['cpu']} (`platform.processor()`: "
            f"`{m['processor']}`), torch {m['torch']} with {i['torch_threads']} thread(s) per run, "
            f"{i['jobs']} worker process(es), {i['wall_s']:.0f} s wall clock, "
            f"{i['trained']} fold(s) trained in {i['cvs']} cross-validation(s):",
            "",
            "  ```bash",
            f"  {i['command']}",
            "  ```",
            "",
        ]
    md += [
        "Scores are test-set scores of speaker-independent folds (no test speaker is trained on or chooses "
        "the epoch), in %: **UA** = unweighted accuracy (mean per-class recall, the headline), **WA** = "
        "accuracy over utterances, **macro-F1**; mean +- sample std (n - 1) over folds (and seeds: each "
        "fold of each seed is one value). Neural models are scored with the weights of the epoch chosen on "
        "the fold's dev speaker(s) by dev UA. *s / fold*: a neural fold's Lightning fit time (report "
        "*training time*; audio loading not included); a classical fold's feature extraction + fit, where "
        "each file's extraction is counted once per cross-validation, in the first fold that uses it. "
        "Best mean per column in bold.",
        "",
    ]
    for name, corpus in CORPORA.items():
        rows = rows_of(entries, name)
        if not rows:
            md += [
                f"## {corpus.title}, protocol `{corpus.protocol}`, label set `{corpus.label_set}`",
                "",
                corpus.why,
                "",
                f"Not run in this page yet (`{PROG} --corpora {name}`).",
                "",
            ]
            continue
        protocol, label_set, classes = rows[0]["protocol"], rows[0]["label_set"], rows[0]["classes"]
        where = f"{corpus.title}, protocol `{protocol}`, label set `{label_set}`"
        md += [
            f"## {where} ({len(classes)} classes)",
            "",
            corpus.why,
            "",
            f"Classes: {', '.join(classes)}; chance UA {100 / len(classes):.1f} %.",
            "",
            f"Scores ({where}):",
            "",
            score_table(rows),
            "",
            f"Per-class recall ({where}; %, pooled over folds: the rows of the summed confusion matrix):",
            "",
            recall_table(rows),
            "",
            f"Confusion matrices ({where}; test utterances summed over folds"
            + (" and seeds" if any(len(r["seeds"]) > 1 for r in rows) else "")
            + "):",
            "",
        ]
        for r in rows:
            png = png_dir / f"{name}-{r['model']}.png"
            plot_confusion(
                r["confusion"],
                classes,
                png,
                f"{r['model']}: {corpus.title}, {protocol}, label set {label_set} ({_folds_cell(r)} folds)",
            )
            md.append(f"![{r['model']} on {corpus.title}]({doc.stem}/{png.name})")
        md.append("")
    md += ["## What the settings are", ""]
    neural = {json.dumps(e["settings"], sort_keys=True) for e in entries if e["model"] in NEURAL}
    live = live_settings(store)
    if neural:
        md += [
            "The neural models (`cnn`, `paper`, `faithful`; model presets in `src/areaser/models.py`) were "
            'trained with the resolved config below (`config_with(None, preset="cpu", ...).resolved()`, '
            "read from the runs themselves):",
            "",
        ]
        for s in sorted(neural):
            md += _settings_block(json.loads(s))
        if neural != {json.dumps(live, sort_keys=True)}:
            md += [
                "**The code now resolves `--preset cpu` differently** (below): run the benchmark again "
                "in a fresh `--out` to bring this page up to date.",
                "",
                *_settings_block(live),
            ]
        else:
            md += ["This is what `--preset cpu` resolves to at the commit that wrote this page.", ""]
    else:
        md += ["No neural model in this page yet; `--preset cpu` resolves to:", "", *_settings_block(live)]
    for model in (*CLASSICAL, PEER):
        es = [e for e in entries if e["model"] == model]
        if es:
            md.append(f"- `{model}`: " + ", ".join(f"{k} {v}" for k, v in es[0]["settings"].items()))
    md += [
        "",
        "The classical models use each fold's train part only (the dev part picks a neural model's "
        "epoch and is unused here). openSMILE is free for research and non-commercial use only: it is a "
        "benchmark peer (the `bench` extra), never imported by the package.",
        "",
    ]
    md += [
        "## Published reference points",
        "",
        "For orientation only (other preprocessing; from `../shared/data/README.md`): EmoDB, 7 classes, "
        "leave-one-speaker-out: openSMILE ComParE 2016 functionals + SVM about 77 % UAR; wav2vec2 embeddings "
        "+ SVM above 93 % UAR; a 3-D attention CRNN on log-Mel 82.8 % UAR (Chen et al., IEEE SPL 2018).",
        "",
    ]
    return atomic_write_text(doc, "\n".join(md))


def print_tables(store: dict) -> None:
    entries = list(store["runs"].values())
    for name, corpus in CORPORA.items():
        rows = rows_of(entries, name)
        if not rows:
            continue
        t = Table(
            title=f"{corpus.title}, protocol {rows[0]['protocol']}, label set {rows[0]['label_set']}: "
            "mean +- std over folds, %",
            title_justify="left",
        )
        for col in ("model", "UA %", "WA %", "macro-F1 %", "folds", "s / fold"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for r in rows:
            t.add_row(
                r["model"],
                r["ua"][2],
                r["wa"][2],
                r["macro_f1"][2],
                _folds_cell(r),
                "-" if r["s_fold"] is None else f"{r['s_fold']:.1f}",
            )
        console.print(t)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (or only rewrite the doc); return the stored results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default=",".join(CORPORA), help="comma list of: " + ", ".join(CORPORA))
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of: " + ", ".join(MODELS))
    ap.add_argument("--folds", type=int, default=None, help="run only the first N folds of each protocol")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the neural models (default: --preset cpu's)")
    ap.add_argument("--seeds", default="0", help="comma list; each seed is a separate cross-validation")
    ap.add_argument("--data", type=Path, default=DATA, help=f"the real corpora (default {DATA})")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "real-speech", help="work folder (manifests, runs)")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "real-speech.md", help="the page to write")
    ap.add_argument("--jobs", type=int, default=1, help="cross-validations at once, in processes (1 torch thread each)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig override of the neural models, value read as JSON",
    )
    ap.add_argument("--per-speaker", type=int, default=None, help="keep N utterances per speaker (smoke tests)")
    ap.add_argument("--doc-only", action="store_true", help="rewrite the doc from its JSON; train nothing")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    argv = list(argv) if argv is not None else sys.argv[1:]
    doc = args.doc.resolve()
    store_path = doc.with_suffix(".json")

    if args.doc_only:
        if not store_path.is_file():
            raise SystemExit(f"real_speech: no results at {store_path}; run without --doc-only first")
        store = json.loads(store_path.read_text())
        write_doc(doc, store)
        print_tables(store)
        console.print(f"rewrote {doc} from {store_path}", highlight=False)
        return store

    from areaser.io.files import atomic_write_json
    from areaser.train.folds import prepare_fold

    corpora = [CORPORA[c] for c in _csv(args.corpora, tuple(CORPORA), "corpus")]
    models = _csv(args.models, MODELS, "model")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"real_speech: --seeds wants a comma list of integers, got {args.seeds!r}") from None
    if not seeds:
        raise SystemExit("real_speech: --seeds is empty")
    data = args.data.resolve()
    if not data.is_dir():
        raise SystemExit(
            f"real_speech: data folder {data} not found (the real corpora beside the project, "
            "see ../shared/data/README.md); pass --data DIR"
        )
    for c in corpora:
        if not (data / c.folder).is_dir():
            raise SystemExit(
                f"real_speech: {data / c.folder} not found: no {c.title} in the data folder; pass --data DIR"
            )
    if (
        args.folds is not None
        and args.folds < 1
        or args.jobs < 1
        or (args.per_speaker is not None and args.per_speaker < 1)
    ):
        raise SystemExit("real_speech: --folds, --jobs and --per-speaker must be >= 1")
    if PEER in models:
        try:
            import opensmile  # noqa: F401
        except ImportError:
            raise SystemExit(f"real_speech: {PEER} needs the opensmile package: pip install -e '.[bench]'") from None
    overrides = _overrides(args.set)
    sig = {"epochs": args.epochs, "overrides": overrides, "per_speaker": args.per_speaker}
    progress = not args.no_progress
    out = args.out.resolve()

    jobs, metas = [], []
    for corpus in corpora:
        work = out / (corpus.name + (f"-per-speaker{args.per_speaker}" if args.per_speaker else ""))
        manifest = corpus_manifest(corpus, data, work, args.per_speaker)
        n_folds = None
        for model in models:
            for seed in seeds:
                cfg = job_config(corpus, model, seed, manifest, work, args.epochs, overrides, progress)
                if n_folds is None:
                    n_folds = prepare_fold(cfg.resolved()).n_folds
                    if args.folds is not None and args.folds > n_folds:
                        console.print(
                            f"{corpus.name}: protocol {corpus.protocol} has {n_folds} folds; running all",
                            highlight=False,
                        )
                metas.append(_check_folder(cfg))
                jobs.append(
                    {
                        "corpus": corpus.name,
                        "config": cfg.to_dict(),
                        "n_folds": n_folds,
                        "log": True,
                        "progress": progress,
                        "folds": None if args.folds is None else list(range(min(args.folds, n_folds))),
                        "cache": str(work / f"opensmile-{opensmile_peer.FEATURE_SET}.csv"),
                        "settings": settings_of(cfg),
                    }
                )
    for meta, sig_ in metas:
        atomic_write_json(meta, sig_)
    console.print(f"{len(jobs)} cross-validation(s) in {out}", highlight=False)
    import torch

    t0 = time.perf_counter()
    entries = run_jobs(jobs, min(args.jobs, len(jobs)), progress)
    wall = time.perf_counter() - t0

    store = json.loads(store_path.read_text()) if store_path.is_file() else {}
    if store and store.get("signature") != sig:
        console.print(
            f"{store_path}: dropping results made with other settings ({store.get('signature')})", highlight=False
        )
        store = {}
    store = {"signature": sig, "runs": store.get("runs", {}), "invocations": store.get("invocations", [])}
    for e in entries:
        store["runs"][f"{e['corpus']}/{e['model']}/seed{e['seed']}"] = e
    trained = sum(e["trained"] for e in entries)
    if trained or not store["invocations"]:  # an invocation that only reused finished folds made nothing
        store["invocations"].append(
            {
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": f"{PROG} {shlex.join(argv)}".strip(),
                "commit": git_commit(),
                "machine": machine(),
                "torch_threads": torch.get_num_threads() if min(args.jobs, len(jobs)) == 1 else 1,
                "jobs": min(args.jobs, len(jobs)),
                "wall_s": round(wall, 1),
                "cvs": len(entries),
                "trained": trained,
            }
        )
    doc.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(store_path, store)
    write_doc(doc, store)
    print_tables(store)
    console.print(f"wrote {doc}, {store_path} and {doc.parent / doc.stem}/*.png", highlight=False)
    return store


if __name__ == "__main__":
    main()

"""Data verbs: scan a corpus into a manifest, synthesise the built-in corpus, write VTLP copies."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from areaser.cli.app import app, console, fail
from areaser.cli.options import _OUT_SHORT, out_folder

# ----------------------------------------------------------------------------- data


def _print_counts(tab: "pandas.DataFrame", title: str) -> None:  # noqa: F821 (imported lazily)
    """Print a ``count_table`` as a compact rich table, the longer axis down the rows."""
    from rich import box
    from rich.table import Table

    if tab.shape[0] < tab.shape[1]:  # keeps the table narrow enough for an 80-column terminal
        tab = tab.T
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    table.add_column(str(tab.index.name))  # the title names both axes
    for col in tab.columns:
        table.add_column(str(col) or '""', justify="right")
    for idx, row in tab.iterrows():
        table.add_row(str(idx) or '""', *(f"{v:,}" for v in row))
    console.print(table)
    console.print()


@app.command("scan")
def scan_cmd(
    corpus: str = typer.Argument(..., help="Loader: iemocap, ravdess, cremad, emodb, tess, savee or generic."),
    root: Path = typer.Argument(
        ..., help="The corpus folder; for generic a folder per label, or a CSV of path,label[,speaker]."
    ),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Write the manifest CSV here (atomically). Without it the scan only prints."
    ),
    show_skipped: int = typer.Option(10, "--show-skipped", min=0, help="How many skipped files to list by name."),
    check_silent: bool = typer.Option(
        True, "--check-silent/--no-check-silent", help="Skip digitally silent files (reads until the first sound)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    speaker_regex: Optional[str] = typer.Option(
        None,
        "--speaker-regex",
        help="generic folder layout only: regex searched in each file's path under ROOT; its group "
        "'speaker' (or group 1) is the speaker, e.g. '(?P<speaker>spk\\d+)'. Files it misses are skipped.",
    ),
) -> None:
    """Scan a local copy of a corpus into a manifest; print counts per label, speaker and session."""
    from collections import Counter

    from areaser.data.corpora import load_corpus
    from areaser.data.manifest import count_table, write_manifest
    from areaser.io.files import check_output_file

    # Only generic needs it: every other loader reads speakers from the corpus' own names.
    if speaker_regex is not None and corpus.lower() != "generic":
        raise fail(f"--speaker-regex is only for the generic loader; {corpus} reads speakers from its file names")
    options = {} if speaker_regex is None else {"speaker_regex": speaker_regex}
    try:
        if output is not None:  # before the scan: a bad -o must not cost it
            check_output_file(output)
        result = load_corpus(corpus, root, progress=progress, check_silent=check_silent, **options)
    except ValueError as e:  # unknown corpus name, missing root, wrong layout
        raise fail(str(e)) from None
    df = result.manifest
    if len(df):
        secs = float(df["duration_s"].sum())
        console.print(
            f"[bold]{corpus}[/]: {len(df):,} utterances, {df['speaker'].nunique()} speakers, "
            + (f"{secs / 3600:.2f} h" if secs >= 3600 else f"{secs / 60:.1f} min")
            + f" of audio, {len(result.skipped):,} files skipped",
            highlight=False,
        )
        _print_counts(count_table(df, "speaker"), "utterances per label and speaker")
        if (df["session"] != "").any():
            _print_counts(count_table(df, "session"), "utterances per label and session")
    if result.skipped:
        console.print(f"[bold]skipped {len(result.skipped):,} file(s)[/], by reason:", highlight=False)
        by_reason = Counter(s.reason for s in result.skipped).most_common()
        for reason, n in by_reason[:10]:
            console.print(f"  {n:>6,}  {reason}", highlight=False, soft_wrap=True)
        if len(by_reason) > 10:
            console.print(f"  {sum(n for _, n in by_reason[10:]):>6,}  {len(by_reason) - 10} other reasons")
        cwd = Path.cwd()
        for s in result.skipped[:show_skipped]:
            shown = Path(s.path).relative_to(cwd) if Path(s.path).is_relative_to(cwd) else s.path
            console.print(f"  {shown}: {s.reason}", highlight=False, soft_wrap=True)
        if len(result.skipped) > show_skipped:
            console.print(f"  ... and {len(result.skipped) - show_skipped:,} more", highlight=False)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    if not len(df):
        raise fail(f"{root}: no usable utterances ({len(result.skipped):,} files skipped, reasons above)")
    if output is not None:
        write_manifest(df, output)
        console.print(f"wrote {output} ({len(df):,} rows)", highlight=False)


@app.command("synth")
def synth_cmd(
    out_dir: Path = typer.Argument(..., help="New or empty folder (or an older synthetic corpus, which is replaced)."),
    n: int = typer.Option(1000, "--n", min=2, help="Number of utterances over all sessions."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same bytes."),
    classes: str = typer.Option(
        "neutral,happy,sad,angry",
        "--classes",
        help="Comma-separated emotions to render: neutral, happy, sad, angry, fear, surprise, disgust, frustration.",
    ),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", min=1, help="Worker processes (default: 1 up to 200 utterances, else all cores)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write the built-in SYNTHETIC acted-emotion corpus (espeak-ng) in the IEMOCAP layout.

    For demos and tests only: scores on it say nothing about accuracy on human speech.
    """
    import time

    from areaser.builtin.synth import SynthConfig, SynthError, same_corpus, synthesize
    from areaser.data.manifest import count_table, read_manifest

    t0 = time.perf_counter()
    try:
        cfg = SynthConfig(seed=seed, n_utterances=n, classes=tuple(c.strip() for c in classes.split(",") if c.strip()))
        unchanged = same_corpus(out_dir, cfg)
        manifest = synthesize(out_dir, cfg, progress=progress, jobs=jobs)
    except SynthError as e:
        raise fail(str(e)) from None
    df = read_manifest(manifest)
    _print_counts(count_table(df, "session", "raw_label"), "utterances per raw label and session")
    secs = float(df["duration_s"].sum())
    console.print(
        f"{'kept the existing' if unchanged else 'wrote a'} synthetic corpus of {len(df):,} utterances, "
        f"{secs / 3600:.2f} h of audio, in {time.perf_counter() - t0:.1f} s: {manifest}",
        highlight=False,
        soft_wrap=True,
    )


# ----------------------------------------------------------------------------- features


@app.command(
    "augment",
    help="Write VTLP-augmented copies of every utterance, and a manifest tying each copy to its source.\n\n"
    "Copies keep their source's speaker, session and label and carry source_id, so a split never puts a copy on "
    "another side than its source. Re-running resumes: finished copies are kept.",
)
def augment_cmd(
    manifest: Path = typer.Argument(
        ..., help="Manifest CSV of the utterances to copy (rows that are copies already are skipped)."
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", show_default=False, help="Folder for the copies (wav/) and their manifest.csv; required."
    ),
    out_short: Optional[Path] = _OUT_SHORT,
    copies: int = typer.Option(7, "--copies", min=1, help="Augmented copies per utterance (the paper: up to 7)."),
    impl: str = typer.Option(
        "stft", "--impl", help="stft (correct VTLP) or legacy-time (the authors' nlpaug time warp)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the warp factors (one per utterance and copy)."),
    factor_min: float = typer.Option(0.8, "--factor-min", help="Smallest warp factor."),
    factor_max: float = typer.Option(1.2, "--factor-max", help="Largest warp factor."),
    fhi: float = typer.Option(4800.0, "--fhi", help="VTLP boundary frequency in Hz."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    import time

    from areaser.data.manifest import read_manifest
    from areaser.dsp.augment import augment_manifest
    from areaser.dsp.vtlp import VTLPConfig

    out_dir = out_folder(out_dir, out_short)
    if out_dir is None:
        raise fail("missing --out DIR: the folder for the copies and their manifest.csv")
    if impl not in ("stft", "legacy-time"):
        raise fail(f"--impl must be stft or legacy-time, got {impl!r} (melwarp needs no copies: it runs in training)")
    t0 = time.perf_counter()
    df = read_manifest(manifest)
    try:
        cfg = VTLPConfig(impl=impl, factor_range=(factor_min, factor_max), fhi=fhi)
        out = augment_manifest(df, out_dir, copies=copies, config=cfg, seed=seed, progress=progress)
    except ValueError as e:
        raise fail(str(e)) from None
    secs = float(out["duration_s"].sum())
    console.print(
        f"{out.attrs['written']:,} copies written, {len(out) - out.attrs['written']:,} kept from an earlier run: "
        f"{len(out):,} copies of {out['source_id'].nunique():,} utterances ({secs / 3600:.2f} h) "
        f"in {time.perf_counter() - t0:.1f} s -> {out_dir / 'manifest.csv'}",
        highlight=False,
        soft_wrap=True,
    )

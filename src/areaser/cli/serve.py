"""Verbs that use a trained model: predict, embed, export, listen and serve."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import typer

from areaser.cli.app import app, console, err_console, fail, printable
from areaser.cli.options import _MODEL_HELP, deprecated
from areaser.core.extras import require

# --onnx is the file `export` writes; predict, listen and serve read a .onnx file given as MODEL. Their
# --onnx input of earlier releases is hidden and still works (with a deprecation line).
_ONNX_INPUT = typer.Option(None, "--onnx", hidden=True, help="Deprecated: give the .onnx file as MODEL.")
_BACKEND_HELP = "torch (PyTorch) or onnx (ONNX Runtime: MODEL/model.onnx, see `areaser export`); a .onnx MODEL is onnx."

# ----------------------------------------------------------------------------- inference


def _recognizer(  # noqa: ANN202
    verb: str, model: Path, backend: str, onnx: Optional[Path], threads: Optional[int], **overrides
):
    """Load MODEL for ``verb``; a user error becomes one line.

    ``onnx`` is the hidden ``--onnx FILE`` of earlier releases (the ONNX file to run with ``--backend
    onnx`` instead of ``MODEL/model.onnx``): still honoured, with its deprecation line. A ``.onnx``
    MODEL, or ``--backend onnx``, needs ONNX Runtime: the ``export`` extra.
    """
    if backend not in ("torch", "onnx"):
        raise fail(f"--backend must be torch or onnx, got {backend!r}")
    if onnx is not None:
        deprecated("--onnx", f"in {verb}", "give the .onnx file as MODEL")
    if backend == "onnx" or model.suffix == ".onnx":
        require("onnxruntime", "export", f"areaser {verb} on an ONNX model")
    from areaser.runs.checkpoint import CheckpointError
    from areaser.serve.recognizer import Recognizer

    try:
        return Recognizer.load(model, backend=backend, onnx_path=onnx, threads=threads, **overrides)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None


def _prediction_rows(result, classes: tuple[str, ...], timeline: bool) -> list[dict]:  # noqa: ANN001
    """Flat rows for CSV and the screen table: one per file, or one per window with ``timeline``."""
    if not result.ok:
        return [{"path": result.source, "error": result.error}]
    probs = lambda p: {f"p_{c}": round(float(v), 4) for c, v in zip(classes, p)}  # noqa: E731
    if timeline:
        return [
            {
                "path": result.source,
                "start_s": round(w.start_s, 3),
                "end_s": round(w.end_s, 3),
                "label": classes[int(w.probabilities.argmax())],
                **probs(w.probabilities),
                "error": "",
            }
            for w in result.timeline
        ]
    return [
        {
            "path": result.source,
            "label": result.label,
            **probs(result.probabilities),
            "duration_s": round(result.duration_s, 3),
            "windows": len(result.timeline),
            "skipped": result.skipped,
            "warning": result.warning or "",
            "error": "",
        }
    ]


def _print_predictions(results: list, rows: list[dict], classes: tuple[str, ...], timeline: bool) -> None:
    """Screen table of the scored files (probabilities in %), then one error line per failure."""
    import os

    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    scored = [r.source for r in results if r.ok]
    one = len(scored) == 1  # a single file goes in the title, not in a column
    base = os.path.commonpath([os.path.abspath(p) for p in scored]) if len(scored) > 1 else ""
    base = base if base and os.path.isdir(base) else ""
    name = (lambda p: printable(os.path.relpath(os.path.abspath(p), base))) if base else printable  # noqa: E731
    title = (
        printable(scored[0])
        if one
        else f"{len(scored)} files" + (f" under {printable(os.path.relpath(base))}" if base else "")
    )
    if one and timeline:
        r = next(r for r in results if r.ok)
        title += f": {r.label} overall, {len(r.timeline)} windows" + (
            f", {r.skipped} skipped as silence" if r.skipped else ""
        )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    if not one:
        table.add_column("file", overflow="fold", min_width=12)
    if timeline:
        table.add_column("start s", justify="right", no_wrap=True)
        table.add_column("end s", justify="right", no_wrap=True)
    table.add_column("emotion", no_wrap=True)
    for c in classes:
        table.add_column(c, justify="right", no_wrap=True)
    if not timeline:
        table.add_column("dur s", justify="right", no_wrap=True)
        table.add_column("win", justify="right", no_wrap=True)
    last = None
    for row in rows:
        if row["error"]:
            continue
        cells = [] if one else [name(row["path"]) if row["path"] != last else ""]
        last = row["path"]
        if timeline:
            cells += [f"{row['start_s']:.1f}", f"{row['end_s']:.1f}"]
        cells += [row["label"]] + [f"{100 * row[f'p_{c}']:.1f}" for c in classes]
        if not timeline:
            cells += [f"{row['duration_s']:.1f}", str(row["windows"])]
        table.add_row(*cells)
    if scored:
        console.print(f"{title}; probabilities in %", highlight=False, soft_wrap=True)
        # many classes need more than the terminal's width: render the table whole (the terminal wraps its
        # lines) rather than let rich drop the file column and cut numbers
        need = Measurement.get(console, console.options.update_width(10_000), table).maximum
        width = console.width
        console.width = max(width, need)  # print() caps a width argument at the console's: widen it meanwhile
        try:
            console.print(table)
        finally:
            console.width = width
    for r in results:
        if r.ok and r.warning:
            err_console.print(
                f"[yellow]warning:[/] {printable(f'{r.source}: {r.warning}')}", highlight=False, soft_wrap=True
            )
        if not r.ok:
            err_console.print(f"[red]error:[/] {printable(r.error)}", highlight=False, soft_wrap=True)


@app.command(
    "predict",
    help="Recognise the emotion in recordings; long ones are streamed in blocks (flat memory).\n\n"
    "Every file gets a result: one that cannot be read gets its error line and the run goes on. Exit code 0 if all "
    "files were scored, 1 if some failed.",
)
def predict_cmd(
    model: Path = typer.Argument(..., help=_MODEL_HELP),
    inputs: list[Path] = typer.Argument(
        ...,
        help="Audio files (any format soundfile reads, any rate and channels), folders (searched "
        "recursively), lists of paths (.txt, one a line) or manifests (.csv).",
    ),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Write results to a .csv or .jsonl file (atomically) instead of the screen table."
    ),
    timeline: bool = typer.Option(
        False, "--timeline", help="One row per window (start, end, probabilities) instead of one per file."
    ),
    hop: Optional[float] = typer.Option(
        None, "--hop", min=0.01, help="Hop between 2 s windows in seconds (default: the model's test hop, 0.4)."
    ),
    silence_db: Optional[float] = typer.Option(
        None,
        "--silence-db",
        max=-1.0,
        help="Skip windows quieter than this RMS level in dBFS (e.g. -50); default: score all.",
    ),
    backend: str = typer.Option("torch", "--backend", help=_BACKEND_HELP),
    onnx: Optional[Path] = _ONNX_INPUT,
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Windows scored at once (across files)."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads for inference (default: all cores)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over files on stderr."),
    vad: bool = typer.Option(
        False,
        "--vad",
        help="Voice activity detection: score only windows with enough voiced speech; a file without speech (a "
        "tone, a beep, noise) gets an error row 'no speech found', one with less than --min-speech gets 'too short'.",
    ),
    min_speech: float = typer.Option(
        0.5, "--min-speech", min=0.0, help="With --vad: seconds of voiced speech a file needs to be scored."
    ),
) -> None:
    import json

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from areaser.io.files import atomic_write_text, check_output_file
    from areaser.serve.inputs import expand_inputs

    if output is not None and output.suffix.lower() not in (".csv", ".jsonl"):
        raise fail(f"{output}: -o takes a .csv or .jsonl file")
    try:  # before any scoring: a bad -o must not cost the work
        output = None if output is None else check_output_file(output)
    except ValueError as e:
        raise fail(str(e)) from None
    if model.suffix == ".onnx":
        backend = "onnx"  # Recognizer.load runs the .onnx MODEL itself
    if threads:
        torch.set_num_threads(threads)
    overrides = {"batch_size": batch_size, "silence_db": silence_db}
    if hop is not None:
        overrides["hop_s"] = hop
    if vad:
        overrides.update(vad=True, min_speech_s=min_speech)
    rec = _recognizer("predict", model, backend, onnx, threads, **overrides)
    try:
        paths = expand_inputs(inputs)
    except ValueError as e:
        raise fail(str(e)) from None
    results = []
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not progress or not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("files", total=len(paths))
        for result in rec.predict_many(paths):
            results.append(result)
            bar.advance(task)
    failed = sum(not r.ok for r in results)
    rows = [row for r in results for row in _prediction_rows(r, rec.classes, timeline)]
    if output is None:
        _print_predictions(results, rows, rec.classes, timeline)
    elif output.suffix.lower() == ".jsonl":
        atomic_write_text(output, "".join(json.dumps(r.to_dict(timeline=timeline)) + "\n" for r in results))
    else:
        import pandas as pd

        columns = ["path"] + (["start_s", "end_s"] if timeline else []) + ["label"] + [f"p_{c}" for c in rec.classes]
        columns += ([] if timeline else ["duration_s", "windows", "skipped", "warning"]) + ["error"]
        atomic_write_text(output, pd.DataFrame(rows, columns=columns).to_csv(index=False))
    if output is not None:
        console.print(f"wrote {output}: {len(results)} file(s), {failed} failed", highlight=False)
    if failed:
        err_console.print(f"[yellow]{failed} of {len(results)} file(s) could not be scored[/]", highlight=False)
        raise typer.Exit(1)


def _export_pretrained(model: Path, out: Path, license_: Optional[str]) -> None:
    """``export --pretrained``: write the folder, then list its files; a user error is one line."""
    from areaser.runs.checkpoint import CheckpointError
    from areaser.serve.pretrained import export_pretrained, load_pretrained

    try:
        export_pretrained(model, out, license=license_)
        loaded = load_pretrained(out)
    except (CheckpointError, ValueError) as e:
        raise fail(str(e)) from None
    prov = (loaded.config.get("training") or {}).get("provenance") or {}
    console.print(
        f"wrote {out}: {len(loaded.classes)} classes ({', '.join(loaded.classes)}), "
        f"{loaded.win_s:g} s windows at {loaded.sr} Hz, trained on {prov.get('corpus', 'an unknown corpus')}"
        + (" (SYNTHETIC: its scores do not measure emotion recognition)" if prov.get("synthetic") else ""),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    for f in sorted(out.iterdir()):
        size = f.stat().st_size
        console.print(
            f"  {f.name:<25} {size / 2**20:8.2f} MiB" if size >= 2**20 else f"  {f.name:<25} {size:>8,} B",
            highlight=False,
            markup=False,
        )


@app.command(
    "embed",
    help="Write each recording's embedding: the model's pooled penultimate layer (the vector its classifier reads), "
    "averaged over the recording's 2 s windows (those `predict` scores).\n\n"
    "-o emb.npz holds embeddings [n, D], paths, windows and dim; -o emb.csv one row per file (path, windows, "
    "e0..e{D-1}). A file that cannot be read gets its error line and is left out. Exit code 0 if all files were "
    "embedded, 1 if some failed.",
)
def embed_cmd(
    model: Path = typer.Argument(..., help="Run directory of `areaser train` (the PyTorch model)."),
    inputs: list[Path] = typer.Argument(
        ..., help="Audio files, folders (searched recursively), lists of paths (.txt) or manifests (.csv)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write them: a .npz or .csv file (atomically)."),
    hop: Optional[float] = typer.Option(
        None, "--hop", min=0.01, help="Hop between 2 s windows in seconds (default: the model's test hop)."
    ),
    silence_db: Optional[float] = typer.Option(
        None, "--silence-db", max=-1.0, help="Leave out windows quieter than this RMS level in dBFS (e.g. -50)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Windows through the model at once."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: all cores)."),
) -> None:
    import torch

    from areaser.io.files import check_output_file
    from areaser.serve.inputs import expand_inputs
    from areaser.train.embed import write_embeddings

    if output.suffix.lower() not in (".npz", ".csv"):
        raise fail(f"{output}: -o takes a .npz or .csv file")
    try:  # before any work: a bad -o must not cost it
        output = check_output_file(output)
    except ValueError as e:
        raise fail(str(e)) from None
    if threads:
        torch.set_num_threads(threads)
    overrides = {"batch_size": batch_size, "silence_db": silence_db}
    if hop is not None:
        overrides["hop_s"] = hop
    rec = _recognizer("embed", model, "torch", None, threads, **overrides)
    try:
        paths = expand_inputs(inputs)
        results = list(rec.embed_many(paths))
    except ValueError as e:
        raise fail(str(e)) from None
    done = [r for r in results if r.ok]
    for r in results:
        if not r.ok:
            err_console.print(f"[red]error:[/] {printable(r.error)}", highlight=False, soft_wrap=True)
    if not done:
        raise fail("no file could be embedded; nothing written", 1)
    import numpy as np

    write_embeddings(
        output, [r.source for r in done], np.stack([r.vector for r in done]), [r.windows for r in done], str(model)
    )
    failed = len(results) - len(done)
    more = f", {failed} failed" if failed else ""
    console.print(f"wrote {output}: {len(done)} file(s) x {done[0].vector.shape[0]} dims{more}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="Run directory of `areaser train`."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="Where to write the ONNX model (atomically)."),
    pretrained: Optional[Path] = typer.Option(
        None,
        "--pretrained",
        help="Write a model folder (config.json, model.safetensors, preprocessor_config.json, README.md model "
        "card; the Hugging Face layout) that predict, serve and Recognizer.from_pretrained load; atomically. "
        "A new, empty or earlier pretrained folder.",
    ),
    license_: Optional[str] = typer.Option(
        None,
        "--license",
        help="Licence id for the --pretrained model card (mit, cc-by-nc-4.0, other, ...); default unknown: "
        "the training corpus' terms bind its weights.",
    ),
    int8: bool = typer.Option(False, "--int8", help="Quantise to int8 with ONNX Runtime (smaller, faster on CPU)."),
    calibrate: Optional[list[Path]] = typer.Option(
        None,
        "--calibrate",
        help="Audio (files, folders, lists) to calibrate int8 (default: 32 utterances of the run's manifest).",
    ),
) -> None:
    """Export a trained model: to ONNX (--onnx), to a model folder other tools load (--pretrained), or both.

    The ONNX graph takes log-Mel (batch x n_mels x frames) and gives logits and probabilities; the folder holds
    config.json, model.safetensors, preprocessor_config.json and a README.md model card.
    """
    import logging
    import warnings

    if onnx is None and pretrained is None:
        raise fail("give --onnx FILE.onnx, --pretrained DIR, or both")
    if onnx is None and (int8 or calibrate):
        raise fail("--int8 and --calibrate apply to --onnx")
    if license_ is not None and pretrained is None:
        raise fail("--license applies to --pretrained (it goes into the model card)")
    if onnx is not None and onnx.suffix != ".onnx":
        raise fail(f"{onnx}: --onnx takes a path ending in .onnx")
    if calibrate and not int8:
        raise fail("--calibrate only applies with --int8")
    if onnx is not None:  # before anything is written: one line naming the extra
        for module in ("onnx", "onnxruntime"):
            require(module, "export", "areaser export --onnx")
    from areaser.runs.checkpoint import CheckpointError
    from areaser.serve.export import export_onnx, read_metadata
    from areaser.serve.inputs import expand_inputs

    if pretrained is not None:
        _export_pretrained(model, pretrained, license_)
    if onnx is None:
        return
    try:
        cal = expand_inputs(calibrate) if calibrate else None
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, onnx, int8=int8, calibration=cal)
    except (CheckpointError, ValueError) as e:
        raise fail(str(e)) from None
    meta = read_metadata(onnx)
    shape = lambda s: "[" + ", ".join(map(str, s)) + "]"  # noqa: E731
    mode = "float32"
    if meta["int8"]:
        mode = f"{meta['int8']['mode']} int8" + (
            f", calibrated on {meta['int8']['calibration_windows']} windows"
            if meta["int8"].get("calibration_windows")
            else ""
        )
    console.print(
        f"wrote {onnx} ({onnx.stat().st_size / 2**20:.2f} MiB, {mode}, {len(meta['classes'])} classes: "
        f"{', '.join(meta['classes'])})",
        highlight=False,
    )
    console.print(
        f"  input  {meta['input']['name']:<13} float32 {shape(meta['input']['shape'])}  log10 mel power",
        highlight=False,
        markup=False,
    )
    for name, s in meta["outputs"].items():
        console.print(f"  output {name:<13} float32 {shape(s)}", highlight=False, markup=False)


def _pcm_chunks(stream, rate: int, sr: int, chunk_bytes: int = 4096):  # noqa: ANN001, ANN202
    """Raw 16-bit little-endian mono PCM from a binary stream as float32 chunks at ``sr`` (as they arrive)."""
    import numpy as np

    resampler = None
    if rate != sr:
        import soxr

        resampler = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
    read = getattr(stream, "read1", stream.read)  # read1: whatever has arrived, without waiting for a full chunk
    rest = b""
    while True:
        data = read(chunk_bytes)
        last = not data
        data = rest + data
        cut = len(data) - len(data) % 2
        rest = data[cut:]
        y = np.frombuffer(data[:cut], dtype="<i2").astype(np.float32) / 32768.0
        if resampler is not None:
            y = resampler.resample_chunk(y, last=last)
        if len(y) or last:
            yield y
        if last:
            return


def _file_chunks(path: Path, sr: int, block_s: float = 0.1):  # noqa: ANN202
    """A file decoded as mono float32 blocks of ``block_s`` seconds at ``sr``."""
    from areaser.io.audio import stream_audio

    yield from stream_audio(path, sr, block_s)


def _listen_line(update, classes: Sequence[str]) -> str:  # noqa: ANN001
    if not update.voiced:
        return f"{update.time_s:8.2f} s  (no speech)"
    probs = "  ".join(f"{c} {100 * update.probabilities[c]:5.1f}" for c in classes)
    return f"{update.time_s:8.2f} s  {update.label:<10} {probs}"


def _listen_summary(summary: dict, latencies: list[float], as_json: bool, stopped: bool) -> str:
    import json

    lat = {
        "mean": round(1000 * sum(latencies) / len(latencies), 3) if latencies else None,
        "max": round(1000 * max(latencies), 3) if latencies else None,
    }
    if as_json:
        return json.dumps({"summary": {**summary, "latency_ms": lat, "interrupted": stopped}})
    overall = "no speech"
    if summary["label"] is not None:
        probs = ", ".join(f"{c} {100 * p:.1f}" for c, p in summary["probabilities"].items())
        overall = f"{summary['label']} overall ({probs} %)"
    timing = f"; latency per update mean {lat['mean']:.1f} ms, max {lat['max']:.1f} ms" if latencies else ""
    return (
        f"summary{' (interrupted)' if stopped else ''}: {summary['duration_s']:.2f} s of audio, "
        f"{summary['updates']} updates ({summary['voiced_updates']} with speech): {overall}{timing}"
    )


@app.command(
    "listen",
    help="Live emotion: read audio as it comes and print the rolling emotion every --every seconds.\n\n"
    "SOURCE '-' reads raw 16-bit little-endian mono PCM at --rate from stdin, e.g. `arecord -q -f S16_LE -r 16000 "
    "-c 1 | areaser listen MODEL -` or `ffmpeg -i in.mp3 -f s16le -ac 1 -ar 16000 - | areaser listen MODEL -`; a "
    "file is played at real-time pace (--fast: as fast as it can be scored). Each line: the time, the label and "
    "the probabilities (%) over the last --window seconds, smoothed over updates; '(no speech)' when the window "
    "holds too little voiced speech. At the end (or Ctrl-C, exit code 130) one summary line.",
)
def listen_cmd(
    model: Path = typer.Argument(..., help=_MODEL_HELP),
    source: str = typer.Argument(..., help="'-' for raw PCM on stdin, or an audio file (any format soundfile reads)."),
    rate: int = typer.Option(16000, "--rate", min=1000, max=384000, help="Sample rate of the PCM on stdin, Hz."),
    every: float = typer.Option(0.5, "--every", min=0.01, help="Seconds of audio between lines."),
    window: Optional[float] = typer.Option(
        None, "--window", min=0.05, help="Seconds scored at each line (default: the model's window, 2 s)."
    ),
    smoothing: float = typer.Option(
        0.5,
        "--smoothing",
        min=0.0,
        max=0.99,
        help="Exponential moving average of the probabilities over lines: weight of the past (0: none).",
    ),
    vad: bool = typer.Option(True, "--vad/--no-vad", help="Gate lines by voice activity ('(no speech)')."),
    fast: bool = typer.Option(False, "--fast", help="A file: do not wait for real time (stdin is read as it comes)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line (and a final {'summary': ...})."),
    backend: str = typer.Option("torch", "--backend", help=_BACKEND_HELP),
    onnx: Optional[Path] = _ONNX_INPUT,
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for inference."),
) -> None:
    import json
    import time

    import torch

    from areaser.io.audio import AudioError
    from areaser.serve.live import Listener

    if source == "-" and sys.stdin.isatty():
        raise fail(
            "stdin is a terminal: pipe raw 16-bit mono PCM into it, e.g. "
            "arecord -q -f S16_LE -r 16000 -c 1 | areaser listen MODEL -"
        )
    if source != "-" and not Path(source).exists():
        raise fail(f"{source}: file not found")
    if model.suffix == ".onnx":
        backend = "onnx"  # Recognizer.load runs the .onnx MODEL itself
    if threads:
        torch.set_num_threads(threads)
    rec = _recognizer("listen", model, backend, onnx, threads)
    try:
        live = Listener(rec, every_s=every, window_s=window, smoothing=smoothing, vad=vad)
    except ValueError as e:
        raise fail(str(e)) from None
    chunks = _pcm_chunks(sys.stdin.buffer, rate, rec.sr) if source == "-" else _file_chunks(Path(source), rec.sr)
    out = sys.stdout
    latencies: list[float] = []
    t0 = time.perf_counter()
    stopped = False
    try:
        for chunk in chunks:
            if source != "-" and not fast:  # real-time pace: a block is there once it has been "recorded"
                wait = t0 + (live.n + len(chunk)) / rec.sr - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            arrived = time.perf_counter()
            for update in live.feed(chunk):
                out.write((json.dumps(update.to_dict()) if as_json else _listen_line(update, rec.classes)) + "\n")
                out.flush()
                latencies.append(time.perf_counter() - arrived)
    except KeyboardInterrupt:
        stopped = True
    except AudioError as e:
        raise fail(str(e)) from None
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        raise typer.Exit(0) from None
    out.write(_listen_summary(live.summary(), latencies, as_json, stopped) + "\n")
    out.flush()
    if stopped:
        raise typer.Exit(130)


@app.command("serve")
def serve_cmd(
    model: Path = typer.Argument(..., help=_MODEL_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    backend: str = typer.Option("torch", "--backend", help=_BACKEND_HELP),
    onnx: Optional[Path] = _ONNX_INPUT,
    max_upload_mb: float = typer.Option(
        25.0, "--max-upload-mb", min=0.001, help="Largest upload accepted (413 above)."
    ),
    max_duration_s: float = typer.Option(
        600.0, "--max-duration-s", min=0.1, help="Longest audio accepted (422 above)."
    ),
    workers: int = typer.Option(
        2, "--workers", min=1, help="Recordings scored at the same time; more requests wait in line."
    ),
    vad: bool = typer.Option(
        False,
        "--vad",
        help="Voice activity detection by default for POST /v1/predict (a request's ?vad=false|true overrides it): "
        "no speech is 422 'no speech found', less than --min-speech is 422 'too short'.",
    ),
    min_speech: float = typer.Option(
        0.5, "--min-speech", min=0.0, help="With voice activity detection: seconds of voiced speech a file needs."
    ),
    max_streams: int = typer.Option(4, "--max-streams", min=1, help="Live streams (WS /v1/listen) open at once."),
    max_stream_s: float = typer.Option(
        600.0, "--max-stream-s", min=1.0, help="Longest live stream, in audio received and in wall-clock time."
    ),
) -> None:
    """Serve the model over HTTP: a web page at /, POST /v1/predict, WS /v1/listen, GET /v1/model, GET /healthz."""
    for module in ("fastapi", "uvicorn"):  # before service imports fastapi: one line naming the extra
        require(module, "serve", "areaser serve")
    from areaser.serve.service import ServiceLimits
    from areaser.serve.service import serve as serve_app

    if model.suffix == ".onnx":
        backend = "onnx"  # Recognizer.load runs the .onnx MODEL itself
    limits = ServiceLimits(
        int(max_upload_mb * 2**20), max_duration_s, workers, max_streams=max_streams, max_stream_s=max_stream_s
    )
    rec = _recognizer("serve", model, backend, onnx, None, vad=vad, min_speech_s=min_speech)
    console.print(
        f"serving {model} ({rec.backend.name}, classes {', '.join(rec.classes)}) on http://{host}:{port}/",
        highlight=False,
    )
    serve_app(rec, host, port, limits, run_dir=model)  # the page names what the model was trained on

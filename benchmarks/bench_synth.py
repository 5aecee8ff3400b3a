"""Speed of the built-in corpus generator against bare espeak-ng.

    python -m benchmarks.bench_synth [--n 300]

Peer: espeak-ng alone, in this process, speaking the same sentences with the same voices
(no emotion rendering, no noise, no forks, nothing written). Ours: ``synthesize`` end to
end (plan, espeak-ng in fresh forks, signal processing, 16-bit wav files, label files,
manifest) with 1 and with 2 worker processes. Speed is seconds of audio written per
second: per wall-clock second (real-time factor) and per CPU second (user + system, all
processes: robust when other jobs share the machine); the ratio column compares the
CPU-based speed with the peer's. The default corpus (``--n 1000``) must take under 30 s
on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


def _cpu() -> float:
    """CPU seconds (user + system) of this process and of every finished child process."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _bare_espeak(texts: list[tuple[str, str]]) -> tuple[float, float, float]:
    """Speak each (text, voice) in this process; return (audio s, wall s, CPU s)."""
    from areaser.builtin.espeak import Espeak

    tts = Espeak.get()
    t0, c0 = time.perf_counter(), _cpu()
    samples = sum(len(tts.say(text, voice=voice)) for text, voice in texts)
    return samples / tts.sr, time.perf_counter() - t0, _cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="Utterances (default 300; the default corpus is 1000).")
    args = ap.parse_args()

    from areaser.builtin.synth import SynthConfig, plan, synthesize
    from areaser.data.manifest import read_manifest

    cfg = SynthConfig(n_utterances=args.n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, 2):
            t0, c0 = time.perf_counter(), _cpu()
            manifest = synthesize(Path(tmp) / f"jobs{jobs}", cfg, progress=False, jobs=jobs)
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            audio = float(read_manifest(manifest)["duration_s"].sum())
            rows.append((f"areaser synthesize, {jobs} worker(s)", audio, wall, cpu))
        # the same sentences and voices, spoken bare (text from the transcriptions just written)
        voice = {u.utt_id: u.speaker.voice for u in plan(cfg)}
        texts = []
        for p in sorted((Path(tmp) / "jobs1").glob("Session*/dialog/transcriptions/*.txt")):
            for line in p.read_text().splitlines():
                utt, text = line.split(" ", 1)[0], line.split("]: ", 1)[1]
                texts.append((text, voice[utt]))
        rows.insert(0, ("peer: espeak-ng alone", *_bare_espeak(texts)))

    peer = rows[0][1] / rows[0][3]
    table = Table(title=f"corpus generation, {args.n} utterances (peer: the same texts and voices, bare)")
    for col in ("what", "audio s", "wall s", "CPU s", "audio s / wall s", "audio s / CPU s", "vs peer"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for what, audio, wall, cpu in rows:
        table.add_row(
            what,
            f"{audio:.0f}",
            f"{wall:.1f}",
            f"{cpu:.1f}",
            f"{audio / wall:.0f}",
            f"{audio / cpu:.0f}",
            f"{audio / cpu / peer:.2f}",
        )
    console.print(table)
    console.print(
        f"load average during the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(1, 5, 15 min; the machine has {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()

"""Reproducibility (#14 item 12): every run records where it ran, and ``--deterministic strict`` makes two runs
match whatever the machine's thread settings say (the tiny model's weights differ between 1 and 2 threads
without it: checked once, see the closing note of #14)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_PAPER
from safetensors.torch import load_file

from areaser.runs.checkpoint import run_paths
from areaser.runs.config import ConfigError, config_with
from areaser.train.lifecycle import train

# the strict mode chooses the threads itself
TINY = {k: v for k, v in TINY_PAPER.items() if k != "threads"}
AREASER = [str(Path(sys.executable).parent / "areaser")]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_paths(run_dir)["best"]))


def _strict_cli_run(manifest: Path, out: Path, name: str, omp_threads: int) -> subprocess.Popen:
    """``areaser train -c FILE --deterministic strict`` started in a fresh process asking for ``omp_threads``."""
    cfg = out / f"{name}.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({**TINY, "manifest": str(manifest), "out_dir": str(out), "name": name}))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    env.update(OMP_NUM_THREADS=str(omp_threads), MKL_NUM_THREADS=str(omp_threads), PYTHONPATH=src)
    return subprocess.Popen(
        [*AREASER, "train", "-c", str(cfg), "--deterministic", "strict", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def strict_runs(builtin_corpus: Path, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("strict")
    manifest = builtin_corpus / "manifest.csv"
    procs = [_strict_cli_run(manifest, out, name, n) for name, n in (("one", 1), ("two", 2))]  # side by side
    for p in procs:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output
    return out / "one", out / "two"


def test_two_strict_runs_match_bit_for_bit_whatever_the_thread_settings(strict_runs) -> None:
    one, two = (_weights(r) for r in strict_runs)
    assert one.keys() == two.keys()
    different = [k for k in one if not torch.equal(one[k], two[k])]
    assert different == [], f"weights differ between OMP_NUM_THREADS=1 and 2 under strict: {different[:3]}"
    r1, r2 = (json.loads(run_paths(r)["report_json"].read_text()) for r in strict_runs)
    assert r1["test"]["confusion"] == r2["test"]["confusion"]


def test_a_strict_run_records_its_pinned_threads_and_code_paths(strict_runs) -> None:
    report = json.loads(run_paths(strict_runs[1])["report_json"].read_text())
    env = report["environment"]
    assert env["deterministic"] == "strict" and env["threads"] == 1  # asked for 2, pinned to 1
    assert env["env"]["OMP_NUM_THREADS"] == "1"
    assert env["versions"]["torch"] == torch.__version__
    assert env["machine"] and env["python"] == platform.python_version()
    assert env["fused_attention"] == "off (strict)"  # compiled kernels pick the widest vectors: not pinned
    if platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkl.is_available():
        intel = "GenuineIntel" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else True
        assert env["mkl_code_path"] == ("AVX2,STRICT" if intel else "COMPATIBLE,STRICT")  # MKL: AVX2 on Intel only
        assert env["aten_cpu_capability"] in ("AVX2", "DEFAULT")  # DEFAULT: a processor without AVX2
    md = run_paths(strict_runs[1])["report_md"].read_text()
    assert "deterministic strict" in md and "1 thread(s)" in md and f"torch {env['versions']['torch']}" in md


def test_every_run_records_threads_cpu_and_versions(builtin_corpus: Path, tmp_path: Path) -> None:
    """A plain (not strict) run and a classical baseline run say how many threads they had and on what."""
    for model in ("cnn", "egemaps-lr"):
        torch.set_num_threads(2)  # the cnn run asks for 1 thread, the baseline leaves torch's count as it is
        cfg = config_with(
            None,
            manifest=str(builtin_corpus / "manifest.csv"),
            out_dir=str(tmp_path),
            name=model,
            model=model,
            **({**TINY, "threads": 1, "epochs": 1} if model == "cnn" else {"progress": False}),
        )
        env = train(cfg, log=None)["environment"]
        assert env["deterministic"] == "auto" and env["threads"] == (1 if model == "cnn" else 2)
        assert env["versions"]["numpy"] and env["versions"]["lightning"] and env["machine"]
        # whether the fused attention kernels (their own dropout masks) could train here: a C++ compiler
        if shutil.which("g++") or shutil.which("c++"):
            assert env["fused_attention"] == "available"
        else:
            assert env["fused_attention"].startswith("unavailable: ")
        assert "environment" in json.loads(run_paths(tmp_path / model)["report_json"].read_text())


def test_strict_in_a_process_that_already_computed_otherwise_is_refused_naming_the_fix(
    builtin_corpus: Path, tmp_path: Path
) -> None:
    torch.ones(64) + 1  # this process has run ATen kernels already
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT"):
        pytest.skip("this processor's widest ATen path is AVX2 already: nothing to refuse")
    cfg = config_with(
        None, manifest=str(builtin_corpus / "manifest.csv"), out_dir=str(tmp_path), deterministic="strict", **TINY
    )
    with pytest.raises(ConfigError, match="ATEN_CPU_CAPABILITY=avx2") as e:
        train(cfg, log=None)
    assert "--deterministic strict" in str(e.value) and list(tmp_path.iterdir()) == []  # refused before writing


def test_deterministic_takes_only_its_four_values(builtin_corpus: Path) -> None:
    cfg = config_with(None, manifest=str(builtin_corpus / "manifest.csv"), deterministic="very")
    with pytest.raises(ConfigError, match="deterministic must be true, false, auto or strict"):
        cfg.resolved()


@pytest.mark.skipif(
    not Path("/proc/cpuinfo").exists() or "cpu family" not in Path("/proc/cpuinfo").read_text(),
    reason="no x86 /proc/cpuinfo here",
)
def test_the_machine_description_names_the_core_generation() -> None:
    """Virtual machines show one model name ("AMD EPYC") for cores of very different speed: family and
    model tell Zen 1 from its successors, so timings name them."""
    from areaser.runs.determinism import cpu_model, machine_description

    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    field = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in first.splitlines()))
    assert cpu_model() == f"{field['model name']} (family {field['cpu family']}, model {field['model']})"
    assert machine_description() == f"{cpu_model()}, {os.cpu_count()} CPU core(s)"

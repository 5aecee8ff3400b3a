"""The console script itself: help, version, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import areaser

AREASER = [str(Path(sys.executable).parent / "areaser")]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(AREASER + list(args), capture_output=True, text=True, timeout=120)


def test_version_and_help() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"areaser {areaser.__version__}"
    r = run("--help")
    assert r.returncode == 0 and "Usage" in r.stdout


def test_python_dash_m_is_the_same_command_line() -> None:
    as_module = [sys.executable, "-m", "areaser"]
    r = subprocess.run([*as_module, "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"areaser {areaser.__version__}"
    r = subprocess.run([*as_module, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Usage: python -m areaser" in r.stdout and "train" in r.stdout
    r = subprocess.run([*as_module, "scan", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Usage: python -m areaser scan" in r.stdout

"""Where a run ran, recorded with it, and the strict mode that makes its numbers reproducible elsewhere.

Seeds fix the data order and the initial weights, and ``deterministic`` (Lightning's) picks
deterministic kernels; what is left is the machine. On CPU the float sums of a matrix product
or a convolution are ordered by the code path the libraries pick for the processor (ATen's
vector width, oneDNN's ISA, MKL's branch) and by the number of threads that split them:
MKL's thread count alone changed the ``paper`` model's weights (test UA 63.61 -> 66.11 %
between 1 and 2 threads). So every run records :func:`environment` (threads, CPU,
code paths, library versions) and ``deterministic="strict"`` pins what can be pinned
(:func:`pin_strict`):

* threads: 1 unless the config sets ``threads``;
* ATen's CPU capability ``avx2`` (``ATEN_CPU_CAPABILITY``), oneDNN's ISA ``AVX2``
  (``ONEDNN_MAX_CPU_ISA``), both read when the first operation runs;
* MKL's code path ``AVX2,STRICT`` (Conditional Numerical Reproducibility: the AVX2 branch on
  every processor that has it, and results independent of the thread count), set through
  MKL's service API and exported as ``MKL_CBWR`` for child processes; MKL offers that branch on
  Intel processors only, so elsewhere (AMD EPYC here) ``COMPATIBLE,STRICT``, its branch for any x86.

AVX2 is the widest path common to x86 processors of the last decade; a processor without it
runs its own path (recorded). The pins take effect only in a process that has not computed yet:
``areaser train`` is one; under the Python API, :func:`pin_strict` refuses, naming the variables
to export, when the process already computed with other settings. Scope measured: two strict
runs on one machine match bit for bit whatever ``OMP_NUM_THREADS`` says (tests); another CPU
model was not available to measure.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

from areaser.core.errors import AreaserError
from areaser.models.attention_fused import available

__all__ = [
    "STRICT_ENV",
    "DeterminismError",
    "cpu_model",
    "machine_description",
    "mkl_code_path",
    "pin_strict",
    "environment",
    "environment_text",
]

STRICT_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT"}
# the environment that decides threads and code paths, recorded as it was
_RECORDED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *STRICT_ENV, "CUBLAS_WORKSPACE_CONFIG", "CXX")
_VERSIONS = ("areaser", "torch", "lightning", "numpy", "scipy", "librosa", "soundfile", "scikit-learn")

# MKL's Conditional Numerical Reproducibility constants (mkl_service.h)
_CBWR_ALL = -1
_CBWR_STRICT = 0x10000
_CBWR_AVX2 = 10
_CBWR_COMPATIBLE = 3
_CBWR_UNSUPPORTED_BRANCH = -3  # mkl_cbwr_set's answer for a branch this processor is not offered
_CBWR_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2"}
_CBWR_BRANCHES.update({9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"})


class DeterminismError(AreaserError, RuntimeError):
    """Strict determinism cannot be had in this process (it computed already with other code paths)."""


def cpu_model() -> str:
    """``"<CPU model> (family F, model M)"`` from /proc/cpuinfo where Linux tells it, else the platform's name.

    Family and model name the core generation where a virtual machine shows only ``AMD EPYC``: the
    same name covers Zen 1 (family 23, model 1: 128-bit vector units, half the AVX2 throughput of
    later cores), so timings from two such machines are comparable only with them.
    """
    cpu, fields = platform.processor() or platform.machine(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor's block is enough
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = fields.get("model name", cpu)
    if "cpu family" in fields and "model" in fields:
        cpu += f" (family {fields['cpu family']}, model {fields['model']})"
    return cpu


def machine_description() -> str:
    """``"<CPU model> (family F, model M), <n> CPU core(s)"``: :func:`cpu_model` and the core count."""
    return f"{cpu_model()}, {os.cpu_count()} CPU core(s)"


def _mkl():
    """Torch's MKL service functions ``(get, set)``, or ``None`` (a build without MKL, another OS)."""
    if not torch.backends.mkl.is_available():
        return None
    lib_dir = Path(torch.__file__).parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        try:
            lib = ctypes.CDLL(str(lib_dir / name))
            get, set_ = lib.mkl_serv_cbwr_get, lib.mkl_serv_cbwr_set
        except (OSError, AttributeError):
            continue
        get.restype = set_.restype = ctypes.c_int
        get.argtypes = set_.argtypes = [ctypes.c_int]
        return get, set_
    return None


def _cbwr_text(value: int) -> str:
    text = _CBWR_BRANCHES.get(value & 0xFFFF, str(value & 0xFFFF))
    return f"{text},STRICT" if value & _CBWR_STRICT else text


def mkl_code_path() -> str | None:
    """MKL's code path in this process (``"AUTO"``, ``"AVX2,STRICT"``, ...); ``None`` without MKL."""
    mkl = _mkl()
    return None if mkl is None else _cbwr_text(mkl[0](_CBWR_ALL))


def pin_strict(threads: int) -> None:
    """Pin threads and code paths (module docstring); :class:`DeterminismError` if it is too late.

    Parameters
    ----------
    threads : torch's intra-op threads, and the thread count recorded for MKL and OpenMP.
    """
    fix = (
        f"start a fresh process with {' '.join(f'{k}={v}' for k, v in STRICT_ENV.items())} "
        "exported (as `areaser train --deterministic strict` does)"
    )
    saved = {k: os.environ.get(k) for k in STRICT_ENV}
    os.environ.update(STRICT_ENV)  # ATen and oneDNN read theirs at the first computation; workers inherit them
    try:
        capability = torch.backends.cpu.get_cpu_capability()
        if platform.machine().lower() in ("x86_64", "amd64") and capability not in ("AVX2", "DEFAULT"):
            raise DeterminismError(
                f"strict determinism: ATen runs its {capability} kernels in this process already; {fix}"
            )
        mkl = _mkl()
        wanted = _CBWR_AVX2 | _CBWR_STRICT
        code = 0 if mkl is None or mkl[0](_CBWR_ALL) == wanted else mkl[1](wanted)
        if code == _CBWR_UNSUPPORTED_BRANCH:  # MKL offers its AVX2 branch on Intel processors only (AMD: -3)
            wanted = _CBWR_COMPATIBLE | _CBWR_STRICT
            code = 0 if mkl[0](_CBWR_ALL) == wanted else mkl[1](wanted)
            os.environ["MKL_CBWR"] = "COMPATIBLE,STRICT"  # what child processes then need too
        if code != 0:
            path = _cbwr_text(mkl[0](_CBWR_ALL))
            raise DeterminismError(
                f"strict determinism: MKL computed in this process already, on code path {path}; {fix}"
            )
    except DeterminismError:  # nothing pinned: the process is left as it was
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        raise
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def environment(deterministic: bool | str) -> dict:
    """What decides a run's floating-point results beyond its config: JSON-ready, saved with every run.

    ``fused_attention`` says whether area attention's fused kernels can run here (they train maps of
    >= 256 positions, with their own dropout masks, where a compiler is found; strict mode turns them off).
    """
    can, why = available(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    fused = "off (strict)" if deterministic == "strict" else ("available" if can else f"unavailable: {why}")
    versions = {}
    for name in _VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "deterministic": deterministic,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "machine": machine_description(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_code_path": mkl_code_path(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "fused_attention": fused,
        "versions": versions,
        "env": {k: os.environ[k] for k in _RECORDED_ENV if k in os.environ},
    }


def environment_text(env: dict) -> str:
    """One line for a report: libraries, threads, CPU, code paths (``ATen AVX2, MKL AVX2,STRICT``), mode."""
    v = env.get("versions", {})
    libs = ", ".join(f"{k} {v[k]}" for k in ("areaser", "torch", "lightning", "numpy", "librosa") if v.get(k))
    paths = f"ATen {env.get('aten_cpu_capability')}" + (
        f", MKL {env['mkl_code_path']}" if env.get("mkl_code_path") else ""
    )
    gpu = f"; GPU {env['cuda']}" if env.get("cuda") else ""
    fused = f"; fused attention {env['fused_attention']}" if env.get("fused_attention") else ""
    return (
        f"{libs}; {env.get('threads')} thread(s); {env.get('machine')}{gpu}; {paths}{fused}; "
        f"deterministic {env.get('deterministic')}"
    )

"""The house rules that hold the package together: one registry, one error base, extras, layers."""

import ast
import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import areaser
from areaser.core.errors import AreaserError, UnknownNameError
from areaser.core.registry import Registry

ROOT = Path(__file__).resolve().parents[1]

# every family of named things, with its names written out here (not read from the code under test)
FAMILIES = {
    ("areaser.models.cnn", "PRESETS"): ["faithful", "paper", "cnn"],
    ("areaser.runs.config", "TRAIN_PRESETS"): None,  # names checked through config_with below
    ("areaser.data.splits", "PROTOCOLS"): ["loso", "lospk", "kfold", "random", "xu2021"],
    ("areaser.data.corpora", "CORPORA"): ["iemocap", "ravdess", "cremad", "emodb", "tess", "savee", "generic"],
    ("areaser.studies.definitions", "STUDIES"): ["area-size", "vtlp-copies", "area-features", "layout", "vtlp-impl"],
}


@pytest.mark.parametrize("where", list(FAMILIES), ids=lambda w: w[1])
def test_every_family_is_one_registry_whose_unknown_name_lists_the_choices(where) -> None:
    reg = getattr(importlib.import_module(where[0]), where[1])
    assert isinstance(reg, Registry)
    names = FAMILIES[where]
    if names is not None:
        assert list(reg) == names
    with pytest.raises(UnknownNameError) as e:
        reg["no-such-name"]
    assert str(e.value) == f"unknown {reg.kind} 'no-such-name'; choose one of: {', '.join(reg)}"
    assert isinstance(e.value, AreaserError) and isinstance(e.value, KeyError) and isinstance(e.value, ValueError)


def test_the_lookups_by_name_all_fail_through_the_registry() -> None:
    from areaser.data.corpora import load_corpus
    from areaser.data.labels import get_label_set
    from areaser.data.splits import get_protocol
    from areaser.models.cnn import build_model
    from areaser.runs.config import ConfigError, config_with
    from areaser.studies.definitions import get_study

    for call, kind in (
        (lambda: build_model("nope"), "model"),
        (lambda: get_protocol("nope"), "protocol"),
        (lambda: get_study("nope"), "study"),
        (lambda: load_corpus("nope", "."), "corpus"),
        (lambda: get_label_set("nope"), "label set"),
    ):
        with pytest.raises(UnknownNameError, match=f"^unknown {kind} 'nope'; choose one of: "):
            call()
    with pytest.raises(
        ConfigError, match="^unknown preset 'nope'; choose one of: default, cpu, faithful, faithful-3x3$"
    ):
        config_with(preset="nope")


def test_a_registry_never_replaces_an_entry_silently() -> None:
    reg = Registry("thing", {"a": 1})
    with pytest.raises(ValueError, match="'a' is registered already"):
        reg.register("a", 2)
    assert reg["a"] == 1
    assert reg.register("b")(3) == 3 and list(reg) == ["a", "b"]  # the decorator form


def _package_modules() -> list[str]:
    names = []
    for m in pkgutil.walk_packages(areaser.__path__, "areaser."):
        if m.name != "areaser.__main__":
            names.append(m.name)
    return names


def test_every_error_the_package_defines_derives_from_one_base() -> None:
    offenders = []
    for name in _package_modules():
        tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                cls = getattr(importlib.import_module(name), node.name)
                if not issubclass(cls, AreaserError):
                    offenders.append(f"{name}.{node.name}")
    assert offenders == []


def test_the_core_install_needs_no_extra() -> None:
    """No module but the service imports an extra's package at its top; a missing extra is named."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["optional-dependencies"]) >= {"serve", "export", "synth", "all", "dev", "bench"}
    core = " ".join(project["dependencies"])
    for package in ("fastapi", "uvicorn", "onnx", "onnxruntime", "espeakng"):
        assert package not in core
    extras = {"fastapi", "starlette", "uvicorn", "onnx", "onnxruntime", "onnxscript", "espeakng_loader"}
    at_top = []
    for name in _package_modules():
        tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text())
        for node in tree.body:
            roots = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            roots += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            at_top += [f"{name}: {r}" for r in roots if r.split(".")[0] in extras]
    assert all(t.startswith("areaser.serve.service: ") for t in at_top), at_top
    script = (
        "import sys\nsys.modules['espeakng_loader'] = None  # as if the synth extra were not installed\n"
        "from areaser.builtin.espeak import Espeak\n"
        "try:\n    Espeak()\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MissingExtraError" in done.stdout and "pip install 'areaser[synth]'" in done.stdout

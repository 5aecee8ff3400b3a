"""One meaning per flag: the shared train/cv options, the renamed flags and their deprecated spellings.

Every renamed flag is run twice through the real command line: the new spelling works and prints no
note; the old one (hidden) still works and prints one ``note: ... is deprecated ...`` line on stderr.
The paths chosen are the cheap ones that still show where the value went (``--print-config``, an
error that names the file, a study folder that is checked before anything is trained).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from areaser.cli import app
from areaser.data.manifest import read_manifest, write_manifest

runner = CliRunner()
WIDE = {"COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}  # help rows on one line each


def cli(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args], env=WIDE)


def notes(result) -> list[str]:  # noqa: ANN001
    return [line for line in result.stderr.splitlines() if line.startswith("note:")]


def renamed_ok(result, spelling: str, note: str) -> None:  # noqa: ANN001
    """The new spelling: no note; the old one: exactly ``note``."""
    assert notes(result) == ([] if spelling == "new" else [note]), result.stderr


@pytest.fixture(scope="module")
def manifest(builtin_corpus: Path) -> Path:
    return builtin_corpus / "manifest.csv"


# ----------------------------------------------------------------------------- train and cv share one set

# written out here, not read from the code: what `areaser train --help` and `areaser cv --help` list
SHARED = {
    "--protocol", "-p", "--labels", "-l", "--preset", "--model", "-m", "--epochs", "--batch-size", "--lr",
    "--vtlp", "--seed", "--config", "-c", "--set", "--name", "--out", "--devices", "--num-nodes", "--strategy",
    "--accelerator", "--resume", "--restart", "--test-manifest", "--copies-manifest", "--copies", "--progress",
    "--no-progress", "--deterministic", "--print-config", "--help", "-h",
}  # fmt: skip
OWN = {"train": {"--fold", "-f"}, "cv": {"--folds"}}


def _listed(help_text: str) -> set[str]:
    """The flags of the option rows of a rich ``--help``.

    A row's flags sit in the first columns (a flag with no long name, such as a bare ``-o``, in the
    second one); a wrapped line of help text starts at the help column, further right.
    """
    flags = set()
    for line in help_text.splitlines():
        m = re.match(r"│( *)(?:\* +)?(-.*)", line)
        if m and len(m.group(1)) < 30:
            for token in re.split(r" {2,}", m.group(2)):
                if not token.startswith("-"):
                    break
                flags.add(token)
    return flags


@pytest.mark.parametrize("verb", ["train", "cv"])
def test_train_and_cv_list_the_same_shared_options_with_help(verb: str) -> None:
    r = cli(verb, "--help")
    assert r.exit_code == 0, r.output
    assert _listed(r.stdout) == SHARED | OWN[verb]  # -o (a folder) is hidden
    assert "Manifest CSV" in r.stdout  # the shared MANIFEST argument
    command = typer.main.get_command(app).commands[verb]
    shown = [p for p in command.params if not getattr(p, "hidden", False)]
    assert shown and all(p.help for p in shown), [p.name for p in shown if not p.help]


def test_verb_functions_are_named_after_their_verbs() -> None:
    from areaser.cli.data import augment_cmd, scan_cmd, synth_cmd
    from areaser.cli.serve import embed_cmd, export_cmd, listen_cmd, predict_cmd, serve_cmd
    from areaser.cli.train import ablate_cmd, cv_cmd, demo_cmd, evaluate_cmd, train_cmd

    functions = [scan_cmd, synth_cmd, augment_cmd, train_cmd, cv_cmd, evaluate_cmd, demo_cmd, ablate_cmd]
    functions += [predict_cmd, embed_cmd, export_cmd, listen_cmd, serve_cmd]
    verbs = typer.main.get_command(app).commands
    assert {f.__name__ for f in functions} == {f"{v}_cmd" for v in verbs}
    for v, command in verbs.items():
        assert command.callback.__name__ == f"{v}_cmd"


# ----------------------------------------------------------------------------- -o is a file; --out DIR a folder

O_NOTE = "note: -o is deprecated for folders; use --out"


@pytest.mark.parametrize("spelling", ["new", "old"])
@pytest.mark.parametrize("verb", ["train", "cv"])
def test_train_and_cv_out_folder(verb: str, spelling: str, manifest: Path, tmp_path: Path) -> None:
    flag = "--out" if spelling == "new" else "-o"
    r = cli(verb, manifest, flag, tmp_path / "runs", "--print-config")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["out_dir"] == str(tmp_path / "runs")
    renamed_ok(r, spelling, O_NOTE)


def test_both_spellings_at_once_are_refused(manifest: Path, tmp_path: Path) -> None:
    r = cli("train", manifest, "--out", tmp_path / "a", "-o", tmp_path / "b", "--print-config")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [O_NOTE, "error: -o and --out are the same option; give --out only"]


@pytest.mark.parametrize("spelling", ["new", "old"])
def test_augment_out_folder(spelling: str, builtin_corpus: Path, tmp_path: Path) -> None:
    two = tmp_path / "two.csv"
    write_manifest(read_manifest(builtin_corpus / "manifest.csv").sort_values("duration_s").iloc[:2], two)
    out = tmp_path / "copies"
    r = cli("augment", two, "--copies", "1", "--out" if spelling == "new" else "-o", out, "--no-progress")
    assert r.exit_code == 0, r.output
    assert len(read_manifest(out / "manifest.csv")) == 2
    renamed_ok(r, spelling, O_NOTE)


def test_augment_without_out_is_one_line(manifest: Path) -> None:
    r = cli("augment", manifest, "--copies", "1")
    assert r.exit_code == 2 and r.stderr.splitlines() == [
        "error: missing --out DIR: the folder for the copies and their manifest.csv"
    ]


@pytest.mark.parametrize("spelling", ["new", "old"])
def test_ablate_out_folder(spelling: str, manifest: Path, tmp_path: Path) -> None:
    # a study folder of another study is refused before anything is planned: the message names the folder
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({"study": "another"}))
    r = cli("ablate", "area-size", manifest, "--quick", "--out" if spelling == "new" else "-o", study)
    assert r.exit_code == 2
    assert f"error: {study} holds study runs made with another" in r.stderr
    renamed_ok(r, spelling, O_NOTE)


@pytest.mark.parametrize("spelling", ["new", "old"])
def test_demo_out_folder(spelling: str, tmp_path: Path) -> None:
    # a --data that is a file fails at once (a SynthError, which main() prints), before any training; the
    # folder option is read before it
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = cli("demo", "--data", blocker, "--out" if spelling == "new" else "-o", tmp_path / "runs", "--no-progress")
    assert "is not a folder" in str(r.exception)
    renamed_ok(r, spelling, O_NOTE)
    r = cli("demo", "--data", blocker, "--out", tmp_path / "a", "-o", tmp_path / "b")
    assert r.exit_code == 2 and "give --out only" in r.stderr


# ----------------------------------------------------------------------------- -m is --model; ablate MANIFEST


@pytest.mark.parametrize("spelling", ["new", "--manifest", "-m"])
def test_ablate_manifest_is_positional(spelling: str, tmp_path: Path) -> None:
    missing = tmp_path / "none.csv"
    args = [missing] if spelling == "new" else [spelling, missing]
    r = cli("ablate", "area-size", *args)
    assert r.exit_code == 2
    assert r.stderr.splitlines()[-1].startswith(f"error: {missing}: manifest not found")
    note = "note: --manifest (-m) is deprecated in ablate; give the manifest after STUDY: areaser ablate STUDY MANIFEST"
    renamed_ok(r, "new" if spelling == "new" else "old", note)


def test_ablate_without_manifest_is_one_line() -> None:
    r = cli("ablate", "area-size")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["error: missing MANIFEST: areaser ablate STUDY MANIFEST (a corpus manifest CSV)"]


# ----------------------------------------------------------------------------- --folds is a list of folds


@pytest.mark.parametrize("spelling", ["new", "old"])
def test_ablate_first_folds_is_a_count(spelling: str, manifest: Path, tmp_path: Path) -> None:
    # 99 of the corpus' 5 folds: refused while planning, before anything is trained
    flag = "--first-folds" if spelling == "new" else "--folds"
    r = cli("ablate", "area-size", manifest, "--quick", flag, "99", "--out", tmp_path / "study")
    assert r.exit_code == 2
    assert re.search(r"error: .*99.* has 5 fold\(s\)", r.stderr), r.stderr
    renamed_ok(r, spelling, "note: --folds N is deprecated in ablate; use --first-folds")


def test_ablate_help_shows_only_the_new_spellings() -> None:
    r = cli("ablate", "--help")
    flags = _listed(r.stdout)
    assert {"--first-folds", "--out"} <= flags and not {"--folds", "--manifest", "-m", "-o"} & flags


# ----------------------------------------------------------------------------- evaluate --test-manifest


@pytest.mark.parametrize("spelling", ["--test-manifest", "--manifest", "-m"])
def test_evaluate_test_manifest(spelling: str, tiny_run: Path, manifest: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # the session's run is shared: scored in a copy
    r = cli("evaluate", run, spelling, manifest)
    assert r.exit_code == 0, r.output
    assert (run / "cross" / "iemocap" / "report.md").is_file()
    note = "note: --manifest (-m) is deprecated in evaluate; use --test-manifest"
    renamed_ok(r, "new" if spelling == "--test-manifest" else "old", note)


# ----------------------------------------------------------------------------- --onnx is the file export writes


@pytest.fixture(scope="module")
def onnx_model(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    r = cli("export", tiny_run, "--onnx", out)
    assert r.exit_code == 0 and notes(r) == [], r.output
    return out


@pytest.fixture(scope="module")
def wav(manifest: Path) -> Path:
    return Path(read_manifest(manifest).sort_values("duration_s")["path"].iloc[0])


def _onnx_args(spelling: str, tiny_run: Path, onnx: Path) -> list[object]:
    """MODEL given as the .onnx file, or the run plus the old --onnx input."""
    return [onnx] if spelling == "new" else [tiny_run, "--backend", "onnx", "--onnx", onnx]


def _onnx_note(verb: str) -> str:
    return f"note: --onnx is deprecated in {verb}; give the .onnx file as MODEL"


@pytest.mark.parametrize("spelling", ["new", "old"])
def test_predict_onnx_model(spelling: str, tiny_run: Path, onnx_model: Path, wav: Path, tmp_path: Path) -> None:
    model, *rest = _onnx_args(spelling, tiny_run, onnx_model)
    out = tmp_path / "p.jsonl"
    r = cli("predict", model, wav, *rest, "-o", out, "--no-progress")
    assert r.exit_code == 0, r.output
    [got] = [json.loads(line) for line in out.read_text().splitlines()]
    assert got["label"] in ("neutral", "happy", "sad", "angry")
    renamed_ok(r, spelling, _onnx_note("predict"))


@pytest.mark.parametrize("spelling", ["new", "old"])
def test_listen_onnx_model(spelling: str, tiny_run: Path, onnx_model: Path, wav: Path) -> None:
    model, *rest = _onnx_args(spelling, tiny_run, onnx_model)
    r = cli("listen", model, wav, *rest, "--fast")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1].startswith("summary:")
    renamed_ok(r, spelling, _onnx_note("listen"))


@pytest.mark.parametrize("spelling", ["new", "old"])
def test_serve_onnx_model(spelling: str, tiny_run: Path, tmp_path: Path) -> None:
    # a missing .onnx file: refused while loading, before the server starts; the message names the file
    missing = tmp_path / "none.onnx"
    model, *rest = _onnx_args(spelling, tiny_run, missing)
    r = cli("serve", model, *rest)
    assert r.exit_code == 2
    assert r.stderr.splitlines()[-1].startswith(f"error: {missing}: no ONNX model here")
    assert f"export {missing} " not in r.stderr  # never advises exporting the missing file onto itself
    renamed_ok(r, spelling, _onnx_note("serve"))


def test_inference_help_hides_the_onnx_input() -> None:
    for verb in ("predict", "listen", "serve"):
        assert "--onnx" not in _listed(cli(verb, "--help").stdout), verb
    assert "--onnx" in _listed(cli("export", "--help").stdout)


# ----------------------------------------------------------------------------- main(): one line, exit 2


def _main(*args: str, before: str = "") -> subprocess.CompletedProcess[str]:
    """``areaser ARGS`` through :func:`areaser.cli.main` in a fresh interpreter, after the Python ``before``."""
    code = f"{before}\nfrom areaser.cli import main\nmain()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_an_areaser_error_escaping_a_verb_is_one_line_and_exit_2() -> None:
    verb = (
        "from areaser.cli.app import app\n"
        "from areaser.core.errors import AreaserError\n"
        "@app.command('boom')\n"
        "def boom_cmd():\n"
        "    raise AreaserError('bad [bold]input[/bold]\\nsecond line')\n"
    )
    r = _main("boom", before=verb)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == ["error: bad [bold]input[/bold]\\nsecond line"]  # markup and newline as text


# a missing optional dependency, as a fresh install without the extra has it: its import fails
_MISSING = "import sys\nsys.modules[{!r}] = None"


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("fastapi", ["serve", "no-such-run"], "serve"),
        ("uvicorn", ["serve", "no-such-run"], "serve"),
        ("onnx", ["export", "no-such-run", "--onnx", "m.onnx"], "export"),
        ("onnxruntime", ["listen", "m.onnx", "-"], "export"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(module: str, args: list[str], extra: str) -> None:
    r = _main(*args, before=_MISSING.format(module))
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith(f"error: areaser {args[0]}") and f"pip install 'areaser[{extra}]'" in line
    assert f"{module} is not installed" in line

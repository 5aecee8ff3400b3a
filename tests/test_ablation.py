"""Studies end to end on the built-in corpus: every study, quick size, real training, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from areaser.runs.config import ConfigError
from areaser.studies.definitions import STUDIES, get_study
from areaser.studies.execute import run_study
from areaser.studies.plan import AblationConfig, plan_runs


def quick(builtin_corpus: Path, out: Path, **kw) -> AblationConfig:
    return AblationConfig(manifest=str(builtin_corpus / "manifest.csv"), out=str(out), quick=True, jobs=1, **kw)


def result_files(study_dir: Path) -> list[Path]:
    return sorted((study_dir / "runs").glob("*/*/seed*/result.json"))


def test_study_definitions_match_the_paper() -> None:
    from areaser.models.areas import KEY_MODES, VALUE_MODES

    assert list(STUDIES) == ["area-size", "vtlp-copies", "area-features", "layout", "vtlp-impl"]
    for study in STUDIES.values():
        names = [s.name for s in study.settings]
        assert len(names) == len(set(names)) and set(study.quick) <= set(names), study.name
    area = get_study("area-size")
    assert sorted({s.x for s in area.settings}) == [1, 2, 3, 4]
    assert {s.overrides["vtlp.impl"] for s in area.settings} == {"none", "melwarp"}
    assert {tuple(s.overrides["model_overrides.max_area"]) for s in area.settings} == {(a, a) for a in range(1, 5)}
    copies = get_study("vtlp-copies")
    assert [s.copies for s in copies.settings] == [0, 1, 2, 3, 4, 5, 6, 7, 0]
    assert copies.settings[-1].overrides["vtlp.impl"] == "melwarp"
    feats = get_study("area-features")
    pairs = {
        (s.overrides["model_overrides.key_mode"], s.overrides["model_overrides.value_mode"]) for s in feats.settings
    }
    assert {(k, v) for k in ("mean", "max", "sample") for v in VALUE_MODES} <= pairs
    assert {k for k, _ in pairs} == set(KEY_MODES)
    assert [s.name for s in get_study("layout").settings][:3] == ["faithful", "paper", "cnn"]
    impl = {s.name: s for s in get_study("vtlp-impl").settings}
    assert impl["legacy-time"].copy_impl == "legacy-time" and impl["stft"].copies == 1
    with pytest.raises(ValueError, match="area-size"):
        get_study("nope")


# The default suite runs the cheapest study (area-size, through the worker processes); the other four take 15-30 s
# each on 2 cores and run with ``make test-slow`` (offline VTLP copies: tests/test_vtlp_augment.py by default).
_DEFAULT_STUDIES = ("area-size",)


@pytest.mark.parametrize(
    "name", [n if n in _DEFAULT_STUDIES else pytest.param(n, marks=pytest.mark.slow) for n in STUDIES]
)
def test_every_study_runs_end_to_end_and_resumes(name: str, builtin_corpus: Path, tmp_path: Path) -> None:
    cfg = quick(builtin_corpus, tmp_path / name)
    if name == "area-size":
        cfg.jobs = 2  # one study through the worker processes (spawn), the others in-process
    res = run_study(name, cfg, progress=False, log=None)
    settings = get_study(name).select(True)
    assert res.executed == len(settings) and res.skipped == 0
    assert len(result_files(res.study_dir)) == len(settings)
    md = (res.study_dir / "results.md").read_text()
    assert "areaser ablate " + name in md
    for s in settings:
        assert f"| `{s.name}` |" in md
    for row in res.rows:
        for k in ("wa", "ua", "macro_f1"):
            assert 0.0 <= row[k]["mean"] <= 1.0 and row[k]["n"] == 1
    assert (res.study_dir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((res.study_dir / "results.json").read_text())
    assert [r["setting"] for r in saved["rows"]] == [s.name for s in settings]
    # offline copies were made once and used by the runs that asked for them
    for s in settings:
        if s.copies:
            run = next(r for r in plan_runs(get_study(name), cfg) if r.setting.name == s.name)
            assert run.config["copies"] == s.copies
            assert (res.study_dir / "augment" / s.copy_impl / "manifest.csv").is_file()

    # second invocation: nothing trained again, same table
    again = run_study(name, cfg, progress=False, log=None)
    assert again.executed == 0 and again.skipped == len(settings)
    assert [r["ua"] for r in again.rows] == [r["ua"] for r in res.rows]


def test_more_seeds_reuse_finished_runs_and_resume_is_guarded(builtin_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    cfg = quick(builtin_corpus, out, settings=("1x1-novtlp",))
    assert run_study("area-size", cfg, progress=False, log=None).executed == 1
    # more seeds: only the new run is trained, the table averages both
    cfg.seeds = (0, 1)
    res = run_study("area-size", cfg, progress=False, log=None)
    assert (res.executed, res.skipped) == (1, 1)
    assert res.rows[0]["runs"] == 2 and len(result_files(out)) == 2
    # the same directory with another training setup is refused, nothing is touched
    with pytest.raises(ConfigError, match="another epochs"):
        run_study("area-size", quick(builtin_corpus, out, epochs=3), progress=False, log=None)
    assert len(result_files(out)) == 2
    with pytest.raises(ValueError, match="no setting"):
        plan_runs(get_study("area-size"), quick(builtin_corpus, tmp_path / "x", settings=("9x9",)))
    with pytest.raises(ConfigError, match="fold"):
        plan_runs(get_study("area-size"), quick(builtin_corpus, tmp_path / "y", folds=99))
    # a bad model option is found while planning, before any worker starts or any file is written
    with pytest.raises(ConfigError, match="value_mode"):
        run_study(
            "area-size",
            quick(builtin_corpus, tmp_path / "z", overrides={"model_overrides.value_mode": "x"}),
            progress=False,
            log=None,
        )
    assert not (tmp_path / "z").exists()


def test_cli_lists_studies_and_reports_bad_input(builtin_corpus: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from areaser.cli.app import app

    runner = CliRunner()
    r = runner.invoke(app, ["ablate", "--help"])
    assert r.exit_code == 0
    for name in STUDIES:
        assert name in r.output
    r = runner.invoke(app, ["ablate", "nope", str(builtin_corpus / "manifest.csv")])
    assert r.exit_code == 2 and "unknown study" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["ablate", "layout", str(tmp_path / "none.csv")])
    assert r.exit_code == 2 and "none.csv" in r.output
    r = runner.invoke(app, ["ablate", "layout", str(builtin_corpus / "manifest.csv"), "--set", "nokey"])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output

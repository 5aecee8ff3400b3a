"""Pretrained model folders: a trained run as a Hugging Face-style folder that other tools load.

:func:`export_pretrained` writes one (``areaser export RUN --pretrained DIR``), :func:`load_pretrained`
reads it back (:meth:`areaser.serve.recognizer.Recognizer.from_pretrained`, ``areaser predict DIR``,
``areaser serve DIR``)::

    DIR/config.json               what the model is: architecture, model options, classes (id2label,
                                  label2id), feature settings, window and hop, decision rule, areaser
                                  and format version, a checksum of the weights, the training facts
        model.safetensors         the weights: features.* (log-Mel statistics), model.* (the network)
        preprocessor_config.json  the feature extractor: sampling rate, n_fft, hop, n_mels,
                                  normalisation statistics, window seconds
        README.md                 the model card: YAML front matter (library_name: areaser, tags,
                                  license, datasets, metrics), then corpus, protocol, classes, scores

The names and roles are those of the Hugging Face Hub (``config.json`` with ``architectures`` and
``id2label``, weights in ``model.safetensors``, ``preprocessor_config.json``, a ``README.md`` model
card), so the Hub shows the card and any safetensors or JSON tool reads the rest; nothing in the
folder needs ``huggingface_hub`` or ``transformers``.

Loading executes nothing from the folder: JSON and safetensors only. Every value is checked against
the bounds a training config is held to (:class:`~areaser.dsp.features.FeatureConfig`,
:class:`~areaser.models.cnn.ModelConfig`, :func:`~areaser.models.cnn.check_classes`,
:func:`~areaser.runs.config.check_window`) before a module is built, the two JSON files must agree, and the
weights must match their checksum and fit the modules exactly; anything else is one
:class:`PretrainedError` naming the file and the field.

Writing is atomic: the folder is written and loaded back in a hidden sibling, then renamed onto
``DIR``. ``DIR`` may be new, empty or an earlier pretrained folder; any other folder is left alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save

from areaser import __version__
from areaser.dsp.features import FeatureConfig, LogMel
from areaser.io.files import _umask as umask
from areaser.io.files import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from areaser.models.cnn import ModelConfig, build_model_from_config, check_classes
from areaser.runs.calibration import SCALED, check_temperature, run_temperature
from areaser.runs.checkpoint import CheckpointError, _checksum, _read_tensors, _verify, load_run, mismatch
from areaser.runs.config import check_window
from areaser.runs.fitted import is_baseline_run
from areaser.runs.metrics import DECISIONS
from areaser.runs.provenance import SYNTHETIC_NOTE, label_set_text, protocol_text, split_text

__all__ = [
    "FORMAT",
    "ARCHITECTURE",
    "FILES",
    "PretrainedError",
    "PretrainedModel",
    "is_pretrained",
    "export_pretrained",
    "load_pretrained",
    "model_card",
]

FORMAT = "areaser-pretrained/1"
ARCHITECTURE = "AreaAttentionCNN"  # the one architecture areaser builds (every --model preset is one)
CONFIG, WEIGHTS, PREPROCESSOR, CARD = "config.json", "model.safetensors", "preprocessor_config.json", "README.md"
FILES = (CONFIG, WEIGHTS, PREPROCESSOR, CARD)
_MAX_JSON_BYTES = 4 * 2**20  # the JSON files hold settings and two n_mels-long lists: kilobytes
_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")  # a Hub licence id: mit, apache-2.0, cc-by-nc-4.0, other
_HOP_KEYS = {"window_seconds": "win_s", "hop_seconds": "hop_s"}


class PretrainedError(CheckpointError):
    """A pretrained folder that cannot be written or read; the message names the file and the reason."""


@dataclass
class PretrainedModel:
    """A model rebuilt from a pretrained folder, ready for :class:`~areaser.serve.recognizer.Recognizer`.

    ``features`` (:class:`~areaser.dsp.features.LogMel`) turns waveforms ``[B, N]`` at ``sr`` into log-Mel
    ``[B, n_mels, T]``, ``model`` those into logits ``[B, C]`` (both in eval mode); ``win_s``, ``hop_s``,
    ``pad_mode`` and ``decision`` are how recordings are cut and decided, ``temperature`` the run's
    calibration ``T`` (:mod:`areaser.runs.calibration`; 1: none); ``config`` is ``config.json``.
    """

    features: torch.nn.Module
    model: torch.nn.Module
    classes: tuple[str, ...]
    sr: int
    win_s: float
    hop_s: float
    pad_mode: str
    decision: str
    temperature: float
    config: dict
    path: Path


def is_pretrained(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder meant as a pretrained folder (so that loading it reports its problems).

    That is a folder holding ``model.safetensors`` or ``preprocessor_config.json``, or a ``config.json``
    that declares a pretrained format, and not a run directory of ``areaser train`` (whose
    ``config.json`` is a training config).
    """
    d = Path(path)
    if not d.is_dir() or (d / "checkpoints" / "best.safetensors").is_file():
        return False
    return (d / WEIGHTS).is_file() or (d / PREPROCESSOR).is_file() or _declares_format(d / CONFIG)


# ----------------------------------------------------------------------------- writing


def export_pretrained(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, license: str | None = None) -> Path:
    """Write the trained model of a run directory as a pretrained folder ``out_dir`` (atomically).

    Parameters
    ----------
    run_dir : a run directory of ``areaser train`` with a neural model (its best weights).
    out_dir : the folder to write: new, empty, or an earlier pretrained folder (replaced whole).
    license : the licence id for the model card (``mit``, ``cc-by-nc-4.0``, ``other``, ...);
        default ``unknown``: the terms of the training corpus bind weights trained on it.

    Returns
    -------
    Path : ``out_dir``.

    Raises
    ------
    PretrainedError : one line with the reason: a classical baseline run (a scikit-learn classifier,
        not weights), a run that does not load, ``out_dir`` a file or a folder that is neither empty
        nor a pretrained folder, or a written folder that would not reproduce the run's outputs.
    """
    run_dir, out = Path(run_dir), Path(out_dir)
    if license is not None and not _LICENSE.match(license):
        raise PretrainedError(f"license {license!r}: give a Hub licence id in lower case (mit, apache-2.0, other)")
    _refuse_baseline(run_dir)
    run = load_run(run_dir)
    if type(run.model).__name__ != ARCHITECTURE or not hasattr(run.model, "config"):
        raise PretrainedError(f"{run.path}: holds a {type(run.model).__name__}, not an {ARCHITECTURE}")
    replace_old = _check_destination(out)
    report = _read_report(run_dir)
    state = {f"features.{k}": v for k, v in run.features.state_dict().items()}
    state |= {f"model.{k}": v for k, v in run.model.state_dict().items()}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    config = _config_json(run, tensors, report, run_dir.resolve().name, _temperature(run_dir, run.header))
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp.", dir=out.parent))
    try:
        _write_folder(staged, run, tensors, config, report, license or "unknown")
        _check_same_outputs(run, load_pretrained(staged), staged)
        os.chmod(staged, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the folder from other users
        _swap_in(staged, out, replace_old)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out


def _write_folder(d: Path, run, tensors: dict, config: dict, report: dict | None, license: str) -> None:  # noqa: ANN001

    atomic_write_bytes(d / WEIGHTS, save(tensors, metadata={"format": "pt"}))  # "pt": the Hub's convention
    atomic_write_json(d / CONFIG, config)
    atomic_write_json(d / PREPROCESSOR, _preprocessor_json(run.features, config["window"]))
    atomic_write_text(d / CARD, model_card(config, report, license=license))


def _refuse_baseline(run_dir: Path) -> None:
    if is_baseline_run(run_dir):
        cfg = read_json(run_dir / "config.json", PretrainedError) if (run_dir / "config.json").is_file() else {}
        model = cfg.get("model") if isinstance(cfg, dict) else None
        raise PretrainedError(
            f"{run_dir}: a classical baseline run ({model or 'egemaps'}): its classifier is refitted with "
            "scikit-learn from the stored training features, not weights a pretrained folder can hold; "
            "only runs of a neural --model export"
        )


def _check_destination(out: Path) -> bool:
    """PretrainedError unless ``out`` may be written; True when it is an earlier pretrained folder to replace."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise PretrainedError(f"{out}: exists and is not a folder; give a folder for --pretrained")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not _declares_format(out / CONFIG):
        raise PretrainedError(
            f"{out}: not empty and not an areaser pretrained folder (no {CONFIG} of format {FORMAT}): "
            "not overwritten; give a new or empty folder"
        )
    extra = sorted(p.name for p in out.iterdir() if p.name not in FILES)
    if extra:
        raise PretrainedError(
            f"{out}: holds {extra[0]!r}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
            + ", which an export does not write: not replaced (move it out, or give a new folder)"
        )  # fmt: skip
    return True


def _swap_in(staged: Path, out: Path, replace_old: bool) -> None:
    """Rename the complete ``staged`` folder onto ``out`` (an earlier pretrained folder there is removed)."""
    try:
        if not replace_old:
            os.replace(staged, out)  # POSIX: onto a missing or an empty folder in one step
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old)
            try:
                os.replace(staged, out)
            except OSError:
                os.replace(old, out)  # put the earlier folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:  # a file appeared there meanwhile, permissions
        raise PretrainedError(f"{out}: cannot put the written folder in place ({e.strerror or e})") from None
    try:  # the renames themselves durable
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _check_same_outputs(run, loaded: PretrainedModel, where: Path) -> None:  # noqa: ANN001
    """PretrainedError unless the folder's modules give exactly the run's probabilities on a probe batch.

    The same seed before each: a model random at evaluation (``faithful``) must draw the same numbers.
    """
    g = torch.Generator().manual_seed(0)
    wave = 0.1 * torch.randn(3, int(round(loaded.win_s * loaded.sr)), generator=g)
    outs = []
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for features, model in ((run.features, run.model), (loaded.features, loaded.model)):
            torch.manual_seed(0)
            outs.append(torch.softmax(model(features(wave)), dim=-1))
    if not torch.equal(*outs):
        raise PretrainedError(f"{where}: the written folder does not reproduce the run's outputs (not exported)")


def _temperature(run_dir: Path, header: Mapping) -> float:
    """The calibration ``T`` the run scores with (:func:`areaser.runs.calibration.run_temperature`)."""
    try:
        return run_temperature(run_dir, header)
    except ValueError as e:  # a damaged calibration.json
        raise PretrainedError(str(e)) from None


def _config_json(run, tensors: Mapping, report: dict | None, run_name: str, temperature: float) -> dict:  # noqa: ANN001

    seg = run.config["segments"]
    classes = list(run.classes)
    header = run.header
    return {
        "format": FORMAT,
        "areaser_version": __version__,
        "architectures": [ARCHITECTURE],
        "model_type": "areaser",
        "model_preset": run.config.get("model"),
        "model_options": json.loads(json.dumps(dataclasses.asdict(run.model.config))),
        "torch_dtype": "float32",
        "num_labels": len(classes),
        "id2label": {str(i): c for i, c in enumerate(classes)},
        "label2id": {c: i for i, c in enumerate(classes)},
        "features": run.features.config.to_dict(),
        "vtlp_fhi": float(run.features.fhi),
        "window": {
            "win_s": float(seg["win_s"]),
            "hop_s": float(seg["test_hop_s"]),
            "pad_mode": str(seg.get("pad_mode", "repeat")),
        },
        "decision": str(run.config.get("decision", "prob")),
        "calibration": {"temperature": temperature, "scaled": SCALED},
        "stochastic_at_eval": bool(getattr(run.model, "stochastic_at_eval", False)),
        "weights_checksum": _checksum({}, tensors),
        "training": _training_facts(run_name, header, report),
    }


def _training_facts(run_name: str, header: Mapping, report: dict | None) -> dict:
    """Where the weights come from, for people and model hubs (not read back): run, corpus, protocol, scores.

    The manifest's path is left out: it names folders of the training machine.
    """
    r = report or {}
    prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else None
    test = r.get("test") if isinstance(r.get("test"), dict) else {}
    out: dict[str, Any] = {
        "run": run_name,
        "fold": r.get("fold", header.get("fold")),
        "test_group": r.get("test_group"),
        "selected_epoch": r.get("selected_epoch", header.get("epoch")),
        "provenance": {k: v for k, v in prov.items() if k != "manifest"} if prov else None,
        "test": {k: test[k] for k in ("n", "wa", "ua", "macro_f1") if isinstance(test.get(k), (int, float))},
    }
    if isinstance(r.get("test_draws"), dict):
        out["test_draws"] = {k: v for k, v in r["test_draws"].items() if k.endswith(("_mean", "_std")) or k == "n"}
    return out


def _preprocessor_json(features, window: Mapping) -> dict:  # noqa: ANN001
    """``preprocessor_config.json``: the feature settings under the Hub's names, the statistics, the window."""
    cfg = features.config.to_dict()
    sr = cfg.pop("sr")
    fitted = cfg["norm"] == "dataset" and bool(features.fitted)
    return {
        "feature_extractor_type": "AreaserLogMelFeatureExtractor",
        "format": FORMAT,
        "sampling_rate": sr,
        "feature_size": cfg["n_mels"],
        **cfg,
        # the dataset statistics the log-Mel is normalised with (norm "dataset"): (x - mean) / std per band
        "mean": features.mean.tolist() if fitted else None,
        "std": features.std.tolist() if fitted else None,
        "window_seconds": window["win_s"],
        "hop_seconds": window["hop_s"],
        "window_pad_mode": window["pad_mode"],
        "return_attention_mask": False,
    }


def _read_report(run_dir: Path) -> dict | None:

    path = run_dir / "report.json"
    try:
        r = read_json(path) if path.is_file() else None
    except ValueError:
        return None
    return r if isinstance(r, dict) else None


# ----------------------------------------------------------------------------- the model card


def model_card(config: Mapping, report: Mapping | None, *, license: str = "unknown") -> str:
    """The ``README.md`` of a pretrained folder: YAML front matter, then what a user must know.

    The training corpus (in bold when it is the built-in synthetic one: its scores do not measure emotion
    recognition), protocol, label set and classes, the test scores with their protocol and fold, how the
    model reads audio, the environment of the run, how to load it and the licence.
    """
    r = report or {}
    prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else None
    test = r.get("test") if isinstance(r.get("test"), dict) else {}
    info = r.get("info") if isinstance(r.get("info"), dict) else {}
    classes = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    synthetic = bool(prov and prov.get("synthetic"))
    corpora = [str(c) for c in (prov or {}).get("corpus_names") or []]
    name = config["training"]["run"]
    f, w, opts = config["features"], config["window"], config["model_options"]

    tags = ["audio-classification", "speech-emotion-recognition", "area-attention", "areaser"]
    front = ["library_name: areaser", f"license: {license}", "pipeline_tag: audio-classification", "tags:"]
    front += [f"- {t}" for t in tags + (["synthetic-data"] if synthetic else [])]
    if corpora and not synthetic:  # the synthetic corpus borrows a real one's layout and name: not that dataset
        front += ["datasets:"] + [f"- {json.dumps(c)}" for c in corpora]
    if test:
        front += ["metrics:", "- accuracy", "- recall", "- f1"]

    lines = ["---", *front, "---", "", f"# {_md(name)}: speech emotion recognition (areaser)", ""]
    if synthetic:
        lines += [
            f"> **Trained on the built-in SYNTHETIC corpus ({_md(prov['corpus'])} layout, espeak-ng voices): "
            "its scores do not measure emotion recognition.** They show that the code runs. Do not use this "
            "model on human speech.",
            "",
        ]
    elif prov is None:
        lines += ["> The run had no readable `report.json`: its training corpus and scores are unknown.", ""]
    if config.get("stochastic_at_eval"):
        lines += [
            "> The model is random at evaluation (attention dropout or area sampling kept on, as the authors' "
            "code): every scoring of a recording is another draw.",
            "",
        ]
    lines += [
        f"{_ARCHS.get(opts['arch'], opts['arch'])} (`{_md(config.get('model_preset'))}` preset, class "
        f"{ARCHITECTURE}) trained with areaser {_md(config['areaser_version'])}: speech emotion recognition "
        "with multiscale area attention and VTLP (Xu et al., ICASSP 2021).",
        "",
        "| | |",
        "|---|---|",
    ]
    rows: list[tuple[str, str]] = []
    if prov:
        corpus = prov["corpus"] + (f": {SYNTHETIC_NOTE}" if synthetic else "")
        rows += [("training corpus", f"**{corpus}**" if synthetic else corpus)]
        rows += [("label set", label_set_text(prov.get("label_set"), classes))]
        if prov.get("protocol"):
            rows += [("protocol", protocol_text(prov))]
        if r.get("fold"):
            rows += [("fold", info.get("fold") or split_text(prov, r["fold"], r.get("test_group") or "?"))]
    rows += [("classes", ", ".join(f"{i} {c}" for i, c in enumerate(classes)))]
    rows += [
        (
            "input",
            f"mono audio at {f['sr']} Hz, in {w['win_s']:g} s windows every {w['hop_s']:g} s ({w['pad_mode']} "
            f"padding); {f['n_mels']} log-Mel bands (n_fft {f['n_fft']}, hop {f['hop_length']}, "
            f"normalisation {f['norm']})",
        ),
        ("decision", _DECISIONS.get(config["decision"], config["decision"])),
    ]
    t = (config.get("calibration") or {}).get("temperature", 1.0)
    if t != 1.0:
        rows += [("calibration", f"temperature {t:.4g}, fitted on the dev part: probabilities softmax(log p / T)")]
    if info.get("environment"):
        rows += [("environment", str(info["environment"]))]
    rows += [("format", f"{FORMAT}: {CONFIG}, {WEIGHTS}, {PREPROCESSOR}")]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in rows] + [""]

    lines += ["## Test scores", ""]
    if test:
        where = (
            f"the test part of {split_text(prov, r['fold'], r.get('test_group') or '?')}"
            if prov and r.get("fold")
            else "the run's test part"
        )
        protocol = f", protocol {protocol_text(prov)}" if prov and prov.get("protocol") else ""
        chosen = f", model of epoch {r['selected_epoch']} chosen on dev" if r.get("selected_epoch") else ""
        lines += [
            f"On {_md(where)}{_md(protocol)}{_md(chosen)}" + (" (synthetic speech)" if synthetic else "") + ":",
            "",
            "| utterances | WA % (accuracy) | UA % (mean class recall) | macro-F1 % |",
            "|---|---|---|---|",
            "| " + " | ".join([str(test.get("n", "?"))] + [_pct(test.get(k)) for k in ("wa", "ua", "macro_f1")]) + " |",
            "",
        ]
        draws = r.get("test_draws") if isinstance(r.get("test_draws"), dict) else None
        if draws and isinstance(draws.get("ua_mean"), (int, float)):
            lines += [
                f"Over {draws.get('n')} draws (the model is random at evaluation): UA {_pct(draws['ua_mean'])} "
                f"± {_pct(draws.get('ua_std'))} %, WA {_pct(draws.get('wa_mean'))} ± {_pct(draws.get('wa_std'))} %.",
                "",
            ]
        if synthetic:
            lines += ["**These scores are on synthetic speech: they do not measure emotion recognition.**", ""]
    else:
        lines += ["None recorded (the run has no readable `report.json`).", ""]

    lines += [
        "## Use",
        "",
        "```python",
        "from areaser import Recognizer",
        "",
        'rec = Recognizer.from_pretrained("path/to/this/folder")',
        'print(rec.predict("speech.wav").label)  # any length, format, rate, channels',
        "```",
        "",
        "or `areaser predict path/to/this/folder speech.wav`, `areaser serve path/to/this/folder`. Loading reads",
        f"JSON and safetensors only (no pickle, no code from the folder); `{WEIGHTS}` opens in any safetensors tool.",
        "",
        "## Licence",
        "",
        f"`{license}`."
        + (
            " Weights trained on a corpus are bound by its terms: check them before sharing this model."
            if license == "unknown"
            else ""
        ),
        "",
    ]
    return "\n".join(lines)


_ARCHS = {"aacnn": "A CNN with multiscale area attention", "cnn": "A CNN without attention"}
_DECISIONS = {
    "prob": "prob: the mean of the windows' probabilities (the paper)",
    "logits": "logits: softmax of the windows' mean logits",
}


def _md(text: object) -> str:
    """``text`` for one Markdown table cell or line: no line breaks, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _pct(v: object) -> str:
    return f"{100 * float(v):.2f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"


# ----------------------------------------------------------------------------- reading


def load_pretrained(path: str | os.PathLike) -> PretrainedModel:
    """Rebuild the model of a pretrained folder from its JSON files and ``model.safetensors``.

    Parameters
    ----------
    path : a folder written by :func:`export_pretrained` (``areaser export RUN --pretrained DIR``).

    Returns
    -------
    PretrainedModel : the log-Mel and model modules (eval mode), classes, rate, window, decision.

    Raises
    ------
    PretrainedError : one line naming the file and the field: a missing file, an unknown format or
        architecture, a setting out of its bounds, the two JSON files disagreeing, weights that do not
        match their checksum or do not fit the config.
    """
    d = Path(path)
    if not d.is_dir():
        raise PretrainedError(f"{d}: not a folder (a pretrained folder of `areaser export RUN --pretrained DIR`)")
    cfg_path, pre_path, w_path = d / CONFIG, d / PREPROCESSOR, d / WEIGHTS
    cfg = _read_json(cfg_path)
    if cfg.get("format") != FORMAT:
        raise PretrainedError(f"{cfg_path}: unsupported format {cfg.get('format')!r} (expected {FORMAT})")
    try:
        if cfg.get("architectures") != [ARCHITECTURE]:
            raise ValueError(f"architectures: unknown {cfg.get('architectures')!r}; areaser builds [{ARCHITECTURE!r}]")
        classes = _classes(cfg)
        fc = _section(cfg, "features", FeatureConfig.from_dict)
        mc = _section(cfg, "model_options", ModelConfig.from_dict)
        if mc.n_classes != len(classes) or mc.n_mels != fc.n_mels:
            raise ValueError(
                f"model_options: n_classes {mc.n_classes} and n_mels {mc.n_mels}, but id2label names "
                f"{len(classes)} classes and features give {fc.n_mels} mel bands"
            )
        win = cfg.get("window")
        if not isinstance(win, dict):
            raise ValueError("window: missing or not a JSON object")
        try:
            check_window(win.get("win_s"), win.get("hop_s"), fc)
        except ValueError as e:
            raise ValueError(f"window: {e}") from None
        if win.get("pad_mode") not in ("repeat", "zero") or cfg.get("decision") not in DECISIONS:
            raise ValueError(f"need window.pad_mode repeat or zero and decision one of {', '.join(DECISIONS)}")
        cal = cfg.get("calibration", {})
        if not isinstance(cal, dict):
            raise ValueError("calibration: not a JSON object")
        try:
            temperature = check_temperature(cal.get("temperature", 1.0))
        except ValueError as e:
            raise ValueError(f"calibration: {e}") from None
        fhi = cfg.get("vtlp_fhi", 4800.0)
        if not _number(fhi) or not 0 < fhi <= fc.sr / 2:
            raise ValueError(f"vtlp_fhi must be a frequency in (0, sr/2] Hz, got {fhi!r}")
        features = LogMel(fc, fhi=float(fhi))
        model = build_model_from_config(mc)  # refuses a parameter count beyond its bound before allocating
    except (TypeError, ValueError) as e:
        raise PretrainedError(f"{cfg_path}: {' '.join(str(e).split())}") from None
    pre = _read_json(pre_path)
    _check_preprocessor(pre_path, pre, fc, win)
    if not w_path.is_file():
        raise PretrainedError(f"{w_path}: missing (the weights of the model)")
    try:
        tensors = _read_tensors(w_path)
        _verify(w_path, {"checksum": cfg.get("weights_checksum")}, tensors, tensors)  # checksum, finite values
    except CheckpointError as e:
        raise PretrainedError(str(e)) from None
    for module, prefix in ((features, "features."), (model, "model.")):
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
            raise PretrainedError(f"{w_path}: weights do not fit {CONFIG}: {mismatch(e)}") from None
    stray = sorted(k for k in tensors if not k.startswith(("features.", "model.")))
    if stray:
        raise PretrainedError(f"{w_path}: tensor {stray[0]!r} belongs to neither features.* nor model.*")
    _check_statistics(pre_path, pre, features)
    return PretrainedModel(
        features.eval(),
        model.eval(),
        classes,
        int(fc.sr),
        float(win["win_s"]),
        float(win["hop_s"]),
        str(win["pad_mode"]),
        str(cfg["decision"]),
        temperature,
        cfg,
        d,
    )


def _read_json(path: Path) -> dict:

    if not path.is_file():
        raise PretrainedError(f"{path}: missing (a pretrained folder holds {', '.join(FILES)})")
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise PretrainedError(f"{path}: {path.stat().st_size:,} bytes, too large for settings")
    d = read_json(path, PretrainedError)
    if not isinstance(d, dict):
        raise PretrainedError(f"{path}: not a JSON object")
    return d


def _declares_format(path: Path) -> bool:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_JSON_BYTES:
            return False
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(d, dict) and isinstance(d.get("format"), str) and d["format"].startswith("areaser-pretrained/")


def _section(cfg: Mapping, key: str, build):  # noqa: ANN001, ANN202
    if not isinstance(cfg.get(key), dict):
        raise ValueError(f"{key}: missing or not a JSON object")
    try:
        return build(cfg[key])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key}: {e}") from None


def _classes(cfg: Mapping) -> tuple[str, ...]:
    """The class names of ``id2label`` (keys ``"0"`` to ``"C-1"``), checked, and ``label2id`` / ``num_labels``."""
    id2label = cfg.get("id2label")
    if not isinstance(id2label, dict):
        raise ValueError("id2label: missing or not a JSON object of index -> class name")
    keys = [str(i) for i in range(len(id2label))]
    if sorted(id2label) != sorted(keys):
        raise ValueError(f"id2label: keys must be the indices 0 to {len(id2label) - 1}, got {sorted(id2label)[:5]}")
    try:
        classes = check_classes([id2label[k] for k in keys])
    except ValueError as e:
        raise ValueError(f"id2label: {e}") from None
    if cfg.get("label2id") is not None and cfg["label2id"] != {c: i for i, c in enumerate(classes)}:
        raise ValueError("label2id: does not mirror id2label")
    if cfg.get("num_labels") is not None and cfg["num_labels"] != len(classes):
        raise ValueError(f"num_labels: {cfg['num_labels']!r}, but id2label names {len(classes)} classes")
    return classes


def _check_preprocessor(path: Path, pre: Mapping, features, window: Mapping) -> None:  # noqa: ANN001
    """PretrainedError unless ``preprocessor_config.json`` says what ``config.json`` says."""
    if pre.get("format") not in (None, FORMAT):
        raise PretrainedError(f"{path}: unsupported format {pre.get('format')!r} (expected {FORMAT})")
    want = {**features.to_dict(), "feature_size": features.n_mels}
    want["sampling_rate"] = want.pop("sr")
    want |= {k: window[v] for k, v in _HOP_KEYS.items()}
    want["window_pad_mode"] = window["pad_mode"]
    for key in ("sampling_rate", "n_fft", "hop_length", "n_mels", "window_seconds"):
        if key not in pre:
            raise PretrainedError(f"{path}: missing {key}")
    for key, value in want.items():
        if key in pre and not _same(pre[key], value):
            raise PretrainedError(f"{path}: {key} {pre[key]!r} disagrees with {CONFIG} ({value!r})")


def _check_statistics(path: Path, pre: Mapping, features) -> None:  # noqa: ANN001
    """PretrainedError unless the statistics listed in ``preprocessor_config.json`` are the weights' own."""
    fitted = features.config.norm == "dataset" and bool(features.fitted)
    for key in ("mean", "std"):
        listed, own = pre.get(key), getattr(features, key)
        if listed is None and not fitted:
            continue
        try:
            same = listed is not None and fitted and torch.equal(torch.tensor(listed, dtype=own.dtype), own)
        except (TypeError, ValueError, RuntimeError):
            same = False
        if not same:
            raise PretrainedError(
                f"{path}: {key} is not the normalisation statistics in {WEIGHTS}"
                + ("" if fitted else " (the model is not normalised with dataset statistics: give null)")
            )


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if _number(a) and _number(b):
        return float(a) == float(b)
    return a == b


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _umask() -> int:

    return umask()

"""The ``faithful`` training preset holds the constants of the authors' Keras / TF1 / librosa code (issue #13).

Every expected value is written here from the libraries' definitions (Keras BatchNormalization in
inference mode, Glorot uniform, tf.keras Adam with ``decay``, librosa < 0.8's reflect padding,
WA / UA), never taken from the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from areaser.data.manifest import read_manifest
from areaser.io.audio import load_audio
from areaser.models.cnn import build_model
from areaser.runs.config import TRAIN_PRESETS, build_modules, config_with

SR = 16_000


pytestmark = pytest.mark.usefixtures("one_thread")


def faithful(**overrides):
    return config_with(None, preset="faithful", manifest="unused.csv", **overrides)


def faithful_model(**overrides) -> torch.nn.Module:
    """The faithful preset's model at 32 mel bands (the layers are the same; cheaper)."""
    torch.manual_seed(0)
    return build_modules(faithful(**{"features.n_mels": 32, **overrides}), 4)[1]


def batchnorms(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


# ----------------------------------------------------------------------------- 1. BatchNorm


def test_batchnorm_is_keras_inference_mode_an_affine_map_that_never_updates():
    """Keras BatchNormalization called without ``training`` under TF1 eager (learning phase 0) normalises
    with its initial moving statistics, mean 0 and variance 1: ``gamma * x / sqrt(1 + 1e-3) + beta``."""
    model = faithful_model()
    bns = batchnorms(model)
    assert len(bns) == 6  # conv1a, conv1b, conv2 .. conv5
    for bn in bns:
        assert bn.eps == 1e-3 and bn.momentum == pytest.approx(1 - 0.99)  # Keras epsilon; momentum 0.99
    bn = model.conv2[2]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
    x = 3 + 2 * torch.randn(4, bn.num_features, 5, 6, generator=g)  # batch statistics far from 0 / 1
    gamma, beta = bn.weight.detach()[None, :, None, None], bn.bias.detach()[None, :, None, None]
    expected = gamma * (x - 0.0) / math.sqrt(1.0 + 1e-3) + beta
    for mode in (True, False):  # the same map in training and in evaluation
        bn.train(mode)
        torch.testing.assert_close(bn(x), expected, rtol=1e-6, atol=1e-6)
    # a training-mode forward of the whole model leaves every statistic at its initial value
    model.train()
    model(torch.randn(2, 32, 81, generator=g)).sum().backward()
    for bn in bns:
        assert torch.equal(bn.running_mean, torch.zeros(bn.num_features))
        assert torch.equal(bn.running_var, torch.ones(bn.num_features))
        assert int(bn.num_batches_tracked) == 0
        assert bn.weight.grad is not None and bn.bias.grad is not None  # gamma and beta still train, as in Keras


def test_the_model_preset_itself_is_unchanged_for_other_training_presets():
    """The Keras constants come with the training preset, so ``--preset cpu --model faithful`` keeps its model."""
    plain = build_model("faithful")
    assert all(type(bn) is torch.nn.BatchNorm2d and bn.eps == 1e-5 for bn in batchnorms(plain))
    assert plain.conv2[1].bias is None and plain.config.max_area == (3, 3)


# ----------------------------------------------------------------------------- 2. STFT padding


def librosa_reflect_log_mel(y: np.ndarray, pad_mode: str) -> np.ndarray:
    """The authors' features: log10(melspectrogram(sr=16000, n_fft=800, hop_length=400)); librosa < 0.8
    padded by reflection (its default until 0.9.0), the installed librosa by zeros unless told."""
    return np.log10(librosa.feature.melspectrogram(y=y, sr=SR, n_fft=800, hop_length=400, pad_mode=pad_mode))


def test_features_pad_by_reflection_as_the_authors_librosa(builtin_corpus):
    cfg = faithful()
    assert cfg.features.pad_mode == "reflect" and cfg.features.center
    features = build_modules(cfg, 4)[0]
    y = load_audio(read_manifest(builtin_corpus / "manifest.csv").iloc[0].path)
    w = np.ascontiguousarray(y[SR // 2 : SR // 2 + 2 * SR], dtype=np.float32)  # 2 s from inside the speech
    assert len(w) == 2 * SR
    with torch.no_grad():
        ours = features(torch.from_numpy(w)[None])[0].numpy()
    reflect, zeros = librosa_reflect_log_mel(w, "reflect"), librosa_reflect_log_mel(w, "constant")
    assert ours.shape == reflect.shape == (128, 81)
    edges = [0, 80]  # frames whose 800 samples reach into the 400 padded ones
    assert np.abs(ours[:, edges] - reflect[:, edges]).max() < 1e-3
    assert np.abs(ours[:, edges] - zeros[:, edges]).max() > 0.1  # the padding shows there
    assert np.abs(ours[:, 1:80] - reflect[:, 1:80]).max() < 1e-3  # and nowhere else


# ----------------------------------------------------------------------------- 3. init, Adam, max area


def glorot_bound(weight: torch.Tensor) -> float:
    """Keras glorot_uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); a conv's fans count its kernel."""
    out_ch, in_ch, *kernel = weight.shape
    field = int(np.prod(kernel)) if kernel else 1
    return math.sqrt(6.0 / (in_ch * field + out_ch * field))


def test_weights_are_glorot_uniform_and_biases_zero():
    model = faithful_model()
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 7  # six convolutions and the dense layer
    for m in layers:
        a = glorot_bound(m.weight)
        w = m.weight.detach().double()
        assert w.abs().max() <= a
        assert m.bias is not None and torch.equal(m.bias, torch.zeros_like(m.bias))  # Keras use_bias, zeros
        if w.numel() >= 4000:  # the variance of U(-a, a) is a^2 / 3, to sampling error
            assert w.var().item() == pytest.approx(a * a / 3, rel=0.1), m


def configured_optimizer(**overrides):
    from areaser.train.module import SERModule

    torch.manual_seed(0)
    module = SERModule(faithful(**overrides), ("a", "b", "c", "d"), None, {}, 1)
    ret = module.configure_optimizers()
    return module, ret if isinstance(ret, torch.optim.Optimizer) else ret["optimizer"], ret


def test_adam_is_tf_keras_adam_epsilon_and_per_step_decay():
    """tf.keras.optimizers.Adam(learning_rate=1e-4, decay=1e-6): epsilon 1e-7 added to sqrt(v) before the
    bias correction, and step k (from 0) taken with lr / (1 + decay * k)."""
    module, opt, ret = configured_optimizer(lr_decay=0.1)  # a decay large enough to read
    assert opt.param_groups[0]["eps"] == 1e-7 and faithful().adam_eps == 1e-7 and faithful().lr_decay == 1e-6
    assert ret["lr_scheduler"]["interval"] == "step"
    sched = ret["lr_scheduler"]["scheduler"]
    p = module.model.classifier.bias
    w = p.detach().double().clone()
    m = v = torch.zeros_like(w)
    b1, b2, eps, lr, decay = 0.9, 0.999, 1e-7, 1e-4, 0.1
    for k in range(4):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr / (1 + decay * k), rel=1e-12)
        g = torch.tensor([1e-6, -2e-6, 5e-7, 1e-5], dtype=torch.float64) * (k + 1)  # small: epsilon matters
        opt.zero_grad(set_to_none=True)
        p.grad = g.float()
        opt.step()
        sched.step()
        t = k + 1  # Keras: lr_t = lr_k * sqrt(1 - b2^t) / (1 - b1^t); w -= lr_t * m / (sqrt(v) + eps)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr / (1 + decay * k) * math.sqrt(1 - b2**t) / (1 - b1**t)
        w = w - lr_t * m / (v.sqrt() + eps)
        torch.testing.assert_close(p.detach().double(), w, rtol=0, atol=1e-9)
    assert opt.param_groups[0]["eps"] == 1e-7  # the configured epsilon is what the state holds


def test_max_area_is_the_committed_scripts_1x1_and_3x3_is_a_named_variant():
    """area_train.py sets area_height = area_width = 1 (its log is named area3x3)."""
    assert faithful_model().attention.max_area == (1, 1)
    three = config_with(None, preset="faithful-3x3", manifest="unused.csv")
    assert build_modules(three, 4)[1].attention.max_area == (3, 3)
    same = {k: v for k, v in three.model_overrides.items() if k != "max_area"}
    assert same == {k: v for k, v in faithful().model_overrides.items() if k != "max_area"}
    assert {**three.to_dict(), "model_overrides": {}, "preset": ""} == {
        **faithful().to_dict(),
        "model_overrides": {},
        "preset": "",
    }


# ----------------------------------------------------------------------------- 4. test draws

TINY_CHANNELS = [4, 4, 8, 8, 8]


def tiny_run(manifest: Path, out: Path, name: str, **overrides) -> tuple[dict, Path]:
    from areaser.train.lifecycle import train

    tiny = {
        "features": {"n_mels": 32, "hop_length": 800},
        "epochs": 2,
        "batch_size": 16,
        "lr": 3e-3,
        "progress": False,
        "tensorboard": False,
        "threads": 1,
        "vtlp": {"impl": "none"},  # no offline VTLP copies: this is about evaluation
    }
    cfg = config_with(
        None, preset="faithful", manifest=str(manifest), out_dir=str(out), name=name, **{**tiny, **overrides}
    )
    return train(cfg, log=None), out / name


def wa_ua(probs: np.ndarray, utt: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """WA = correct utterances / utterances; UA = mean recall over the classes present. An utterance's
    decision: the argmax of its windows' mean softmax."""
    pred = np.array([probs[utt == u].mean(0).argmax() for u in range(len(y))])
    recalls = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    return float(np.mean(pred == y)), float(np.mean(recalls))


@pytest.fixture(scope="module")
def faithful_run(builtin_corpus, tmp_path_factory):
    """A 2-epoch run of the faithful preset, smaller channels (model_overrides is replaced whole: repeat its keys)."""
    overrides = {**TRAIN_PRESETS["faithful"].get("model_overrides", {}), "channels": TINY_CHANNELS}
    return tiny_run(builtin_corpus / "manifest.csv", tmp_path_factory.mktemp("runs"), "f", model_overrides=overrides)


def test_a_random_model_is_scored_ten_times_and_the_report_says_so(faithful_run):
    from areaser.data.windows import load_windows
    from areaser.runs.checkpoint import load_run
    from areaser.runs.config import TrainConfig
    from areaser.train.folds import prepare_fold
    from areaser.train.scoring import predict_windows

    report, run_dir = faithful_run
    d = report["test_draws"]
    assert d["n"] >= 10 and len(d["seeds"]) == len(set(d["seeds"])) == d["n"]
    # re-score the chosen weights myself, seeding torch with each stored seed
    c = TrainConfig.load(run_dir / "config.json").resolved()
    run = load_run(run_dir)
    ws = load_windows(prepare_fold(c).parts["test"], c.segments, train=False, sr=c.features.sr)
    ws.precompute(run.features)
    y, utt = ws.utterances["y"].to_numpy(), ws.utt_index.numpy()
    probs, was, uas = [], [], []
    for s in d["seeds"]:
        torch.manual_seed(s)
        p = predict_windows(run.features, run.model, ws).softmax(-1).numpy()
        wa, ua = wa_ua(p, utt, y)
        probs.append(p)
        was.append(wa)
        uas.append(ua)
    assert not np.allclose(probs[0], probs[1])  # the draws differ
    torch.manual_seed(d["seeds"][0])
    np.testing.assert_array_equal(predict_windows(run.features, run.model, ws).softmax(-1).numpy(), probs[0])
    np.testing.assert_allclose(d["wa"], was, atol=1e-12)
    np.testing.assert_allclose(d["ua"], uas, atol=1e-12)
    assert d["wa_mean"] == pytest.approx(np.mean(was)) and d["ua_mean"] == pytest.approx(np.mean(uas))
    assert d["wa_std"] == pytest.approx(np.std(was, ddof=1)) and d["ua_std"] == pytest.approx(np.std(uas, ddof=1))
    assert d["macro_f1_mean"] == pytest.approx(np.mean(d["macro_f1"]))
    assert (report["test"]["wa"], report["test"]["ua"]) == (d["wa"][0], d["ua"][0])  # the table's row is draw 1
    assert json.loads((run_dir / "report.json").read_text())["test_draws"] == d
    md = (run_dir / "report.md").read_text()
    mean_row = f"| mean +- std of {d['n']} draws | {report['test']['n']} | {100 * d['wa_mean']:.2f} +- "
    assert mean_row in md and "biased upward" in md


def test_lr_decays_per_step_in_a_real_run(faithful_run):
    """Keras' decay=1e-6: epoch 2 starts after ceil(windows / 16) steps, at lr / (1 + 1e-6 * steps)."""
    report, _ = faithful_run
    steps = math.ceil(report["info"]["train windows per epoch"] / 16)
    assert report["history"][0]["lr"] == pytest.approx(3e-3, rel=1e-13)
    assert report["history"][1]["lr"] == pytest.approx(3e-3 / (1 + 1e-6 * steps), rel=1e-13)
    assert report["history"][1]["lr"] != pytest.approx(3e-3, rel=1e-8)  # the decay is visible at this precision


def test_a_deterministic_model_reports_no_draws(builtin_corpus, tmp_path):
    report, run_dir = tiny_run(
        builtin_corpus / "manifest.csv",
        tmp_path,
        "c",
        model="cnn",
        model_overrides={"channels": TINY_CHANNELS},
        epochs=1,
    )
    assert "test_draws" not in report and "draws" not in (run_dir / "report.md").read_text()


def test_one_model_override_keeps_the_presets_others():
    """``model_overrides.KEY`` changes one key: the faithful preset's Keras constants stay."""
    preset = dict(TRAIN_PRESETS["faithful"]["model_overrides"])
    c = config_with(None, preset="faithful", **{"model_overrides.max_area": [3, 3]})
    assert c.model_overrides == {**preset, "max_area": [3, 3]}
    assert preset.get("batchnorm") == "frozen" and c.model_overrides["batchnorm"] == "frozen"
    whole = config_with(None, preset="faithful", model_overrides={"max_area": [3, 3]})
    assert whole.model_overrides == {"max_area": [3, 3]}  # a whole dict still replaces

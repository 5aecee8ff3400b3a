"""The built-in synthetic corpus: determinism, IEMOCAP layout, sane audio, intended acoustics."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from areaser.builtin.synth import SynthConfig, SynthError, same_corpus, synthesize
from areaser.data.manifest import read_manifest

LABEL_LINE = re.compile(r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(\S+)\t(\w{3})\t\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$")
TRANSCRIPT_LINE = re.compile(r"^(\S+) \[(\d{3}\.\d{4})-(\d{3}\.\d{4})\]: (.+)$")
DIALOG = re.compile(r"^Ses(\d\d)([FM])_(impro\d\d|script\d\d_\d)$")
RAW = {"neu", "hap", "exc", "sad", "ang", "xxx", "oth"}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _label_files(root: Path) -> dict[str, list[str]]:
    return {p.stem: p.read_text().split("\n") for p in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt"))}


@pytest.fixture(scope="module")
def manifest(builtin_corpus: Path) -> pd.DataFrame:
    return read_manifest(builtin_corpus / "manifest.csv")


# ----------------------------------------------------------------------------- determinism


@pytest.mark.slow  # a second 60-utterance corpus through two worker processes: 10 s
def test_same_seed_same_bytes_whatever_the_jobs(builtin_corpus: Path, tmp_path: Path) -> None:
    # the fixture ran with one worker; two workers must write the very same bytes
    synthesize(tmp_path / "again", SynthConfig(n_utterances=60, seed=0), progress=False, jobs=2)
    first, second = _files(builtin_corpus), _files(tmp_path / "again")
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_other_seed_replaces_corpus_with_different_audio(builtin_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(builtin_corpus, out)
    synthesize(out, SynthConfig(n_utterances=20, seed=1), progress=False)
    new = read_manifest(out / "manifest.csv")
    assert len(new) == 20
    # the older, larger corpus is gone entirely: no stale wav or label file survives
    on_disk = {p.stem for p in out.glob("Session*/sentences/wav/*/*.wav")}
    assert on_disk == set(new["utt_id"])
    assert {p.stem for p in out.glob("Session*/dialog/EmoEvaluation/*.txt")} == {u.rsplit("_", 1)[0] for u in on_disk}
    old = _files(builtin_corpus)
    changed = [k for k, v in _files(out).items() if k.endswith(".wav") and old.get(k) != v]
    assert len(changed) == 20


def test_same_config_is_kept_not_rewritten(builtin_corpus: Path) -> None:
    cfg = SynthConfig(n_utterances=60, seed=0)
    assert same_corpus(builtin_corpus, cfg)
    wav = next(builtin_corpus.glob("Session1/sentences/wav/*/*.wav"))
    before = wav.stat().st_mtime_ns
    synthesize(builtin_corpus, cfg, progress=False)
    assert wav.stat().st_mtime_ns == before
    assert not same_corpus(builtin_corpus, SynthConfig(n_utterances=60, seed=1))


def test_refuses_a_foreign_folder_and_leaves_it_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match="not empty"):
        synthesize(tmp_path, SynthConfig(n_utterances=10), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": ("neutral", "joy")}, "classes"),
        ({"n_utterances": 3}, "n_utterances"),
        ({"duration_s": (5.0, 2.0)}, "duration_s"),
        ({"excited_share": 1.5}, "excited_share"),
    ],
)
def test_bad_config_says_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(SynthError, match=message):
        SynthConfig(**kwargs)


# ----------------------------------------------------------------------------- layout


def test_every_wav_has_a_label_line_and_vice_versa(builtin_corpus: Path, manifest: pd.DataFrame) -> None:
    wavs = {p.stem: p for p in builtin_corpus.glob("Session*/sentences/wav/*/*.wav")}
    labelled = {}
    for dialog, lines in _label_files(builtin_corpus).items():
        for line in lines:
            if m := LABEL_LINE.match(line):
                labelled[m[3]] = (dialog, m[4])
    assert set(wavs) == set(labelled) == set(manifest["utt_id"])
    for uid, (dialog, raw) in labelled.items():
        assert wavs[uid].parent.name == dialog and uid.startswith(dialog + "_")
        assert re.fullmatch(dialog + r"_[FM]\d{3}", uid)
        assert wavs[uid].parts[-5] == f"Session{int(uid[3:5])}"


def test_label_files_have_the_real_line_format(builtin_corpus: Path) -> None:
    for dialog, lines in _label_files(builtin_corpus).items():
        assert DIALOG.match(dialog)
        assert lines[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
        last_end = 0.0
        for i, line in enumerate(lines[1:], 1):
            if not line:
                continue
            if line.startswith("["):
                m = LABEL_LINE.match(line)
                assert m, line
                assert lines[i - 1] == ""  # a blank line before every turn
                start, end = float(m[1]), float(m[2])
                assert last_end < start < end
                last_end = end
                assert m[4] in RAW
                assert all(1.0 <= float(m[k]) <= 5.0 for k in (5, 6, 7))
            else:  # annotator lines
                assert re.match(r"^C-E\d:\t[A-Z][a-z]+;\t\(\)$", line) or re.match(
                    r"^A-E\d:\tval [1-5]; act [1-5]; dom  [1-5];\t\(\)$", line
                ), line


def test_times_match_audio_and_transcriptions(builtin_corpus: Path, manifest: pd.DataFrame) -> None:
    dur = dict(zip(manifest["utt_id"], manifest["duration_s"]))
    n_lines = 0
    for dialog, lines in _label_files(builtin_corpus).items():
        spans = {m[3]: (float(m[1]), float(m[2])) for m in map(LABEL_LINE.match, lines) if m}
        session = int(dialog[3:5])
        text = (builtin_corpus / f"Session{session}/dialog/transcriptions/{dialog}.txt").read_text().splitlines()
        for line in text:
            m = TRANSCRIPT_LINE.match(line)
            assert m, line
            assert (float(m[2]), float(m[3])) == spans[m[1]]
            assert spans[m[1]][1] - spans[m[1]][0] == pytest.approx(dur[m[1]], abs=2e-4)
            n_lines += 1
    assert n_lines == len(manifest)


def test_sessions_speakers_dialogs_and_labels(manifest: pd.DataFrame) -> None:
    assert sorted(manifest["session"].unique()) == [f"Ses0{s}" for s in range(1, 6)]
    assert sorted(manifest["speaker"].unique()) == [f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"]
    assert (manifest["speaker"].str[-1] == manifest["gender"]).all()
    # the speaker letter is the one before the number, not the dialog leader's
    assert (manifest["utt_id"].str[-4] == manifest["gender"]).all()
    dialogs = manifest["utt_id"].str.rsplit("_", n=1).str[0]
    assert (dialogs.str.contains("impro") == manifest["improvised"]).all()
    assert (manifest.groupby(dialogs)["gender"].nunique() == 2).all()  # both speakers in every dialog
    for _, d in manifest.assign(dialog=dialogs).groupby("session"):
        assert d["improvised"].any() and (~d["improvised"]).any()  # both kinds in every session
        assert d["gender"].nunique() == 2
    assert set(manifest["raw_label"]) <= RAW
    assert {"neu", "hap", "exc", "sad", "ang"} <= set(manifest["raw_label"])
    canonical = {
        "neu": "neutral",
        "hap": "happy",
        "exc": "excited",
        "sad": "sad",
        "ang": "angry",
        "xxx": "undecided",
        "oth": "other",
    }
    assert (manifest["raw_label"].map(canonical) == manifest["label"]).all()
    assert (manifest["corpus"] == "iemocap").all()


def test_readme_and_config_say_synthetic(builtin_corpus: Path) -> None:
    assert "SYNTHETIC" in (builtin_corpus / "README.txt").read_text()
    assert '"generator": "areaser.synth"' in (builtin_corpus / "synth_config.json").read_text()


# ----------------------------------------------------------------------------- audio


def test_audio_is_sane(manifest: pd.DataFrame) -> None:
    cfg = SynthConfig()
    for path, dur in zip(manifest["path"], manifest["duration_s"]):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.duration == pytest.approx(dur, abs=1e-3)
        y, _ = sf.read(path, dtype="float32")
        assert np.sqrt(np.mean(y**2)) > 10 ** (-50 / 20), f"{path}: (near) silent"
        assert np.abs(y).max() < 0.98, f"{path}: clipped"
    durations = manifest["duration_s"]
    assert durations.between(cfg.short_duration_s[0], cfg.duration_s[1]).all()
    short = (durations <= 2.0).mean()
    assert 0.0 < short < 0.2  # a few short ones for the "drop <= 2 s" policy


def _features(manifest: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in manifest.itertuples():
        y, sr = sf.read(r.path, dtype="float32")
        f0 = librosa.yin(y, fmin=60, fmax=500, sr=sr, frame_length=1024, hop_length=320)
        rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=320)[0]
        n = min(len(f0), len(rms))
        f0, rms = f0[:n], rms[:n]
        loud = rms[rms > rms.max() * 0.1]
        f0 = f0[(rms > rms.max() * 0.1) & (f0 > 65) & (f0 < 480)]  # speech frames, F0 not at a bound
        st = 12 * np.log2(f0) if len(f0) else np.full(1, np.nan)
        st = st[np.abs(st - np.median(st)) < 7]  # drop octave errors of the tracker
        rows.append(
            {
                "utt_id": r.utt_id,
                "speaker": r.speaker,
                "label": r.label,
                "gender": r.gender,
                "f0_st": np.median(st) if len(st) else np.nan,
                "f0_range_st": np.subtract(*np.percentile(st, [75, 25])) if len(st) > 5 else np.nan,
                "level_db": 20 * np.log10(np.sqrt(np.mean(loud**2))),
            }
        )
    df = pd.DataFrame(rows)
    # relative to each speaker's own mean, as a listener hears emotion against a voice
    df["f0_rel"] = df["f0_st"] - df.groupby("speaker")["f0_st"].transform("mean")
    df["level_rel"] = df["level_db"] - df.groupby("speaker")["level_db"].transform("mean")
    return df


@pytest.fixture(scope="module")
def acoustics(builtin_corpus: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    df = _features(manifest[manifest["label"].isin(["neutral", "sad", "angry", "happy", "excited"])])
    # speaking rate: characters of the transcription per second of audio
    text = {}
    for p in builtin_corpus.glob("Session*/dialog/transcriptions/*.txt"):
        text.update((m[1], m[4]) for m in map(TRANSCRIPT_LINE.match, p.read_text().splitlines()))
    dur = dict(zip(manifest["utt_id"], manifest["duration_s"]))
    df["chars_per_s"] = [len(text[u]) / dur[u] for u in df["utt_id"]]
    return df


def test_emotions_differ_in_the_intended_direction(acoustics: pd.DataFrame) -> None:
    cols = ["f0_rel", "f0_range_st", "level_rel", "chars_per_s"]
    m = acoustics.replace({"label": {"excited": "happy"}}).groupby("label")[cols].mean()
    # anger louder than neutral, louder than sadness; anger and happiness higher F0 than sadness
    assert m.loc["angry", "level_rel"] > m.loc["neutral", "level_rel"] > m.loc["sad", "level_rel"]
    assert m.loc["angry", "level_rel"] - m.loc["sad", "level_rel"] > 6.0
    assert m.loc["angry", "f0_rel"] > m.loc["sad", "f0_rel"] + 1.5
    assert m.loc["happy", "f0_rel"] > m.loc["neutral", "f0_rel"] > m.loc["sad", "f0_rel"]
    # sadness is monotonous (narrow F0 range), anger and happiness are not
    assert m.loc["sad", "f0_range_st"] + 0.5 < min(m.loc[c, "f0_range_st"] for c in ("neutral", "happy", "angry"))
    # sadness slow, anger fast
    assert m.loc["sad", "chars_per_s"] < m.loc["neutral", "chars_per_s"] < m.loc["angry", "chars_per_s"]


def test_classes_overlap(acoustics: pd.DataFrame) -> None:
    # not trivially separable: some sad utterances are louder than some angry ones of the same speaker
    sad = acoustics[acoustics["label"] == "sad"]["level_rel"]
    angry = acoustics[acoustics["label"] == "angry"]["level_rel"]
    assert sad.max() > angry.min()


def test_speakers_differ(acoustics: pd.DataFrame) -> None:
    per_speaker = acoustics.groupby(["speaker", "gender"])["f0_st"].mean().reset_index()
    female = per_speaker[per_speaker["gender"] == "F"]["f0_st"]
    male = per_speaker[per_speaker["gender"] == "M"]["f0_st"]
    assert female.min() > male.max()  # every woman's voice higher than every man's
    assert per_speaker.groupby("gender")["f0_st"].std().min() > 1.0  # and voices differ within a gender


# ----------------------------------------------------------------------------- espeak


def test_espeak_fresh_engine_is_byte_identical() -> None:
    from areaser.builtin.espeak import Espeak, Prosody, in_fresh_engine

    def say(text: str, voice: str, pitch: int) -> np.ndarray:
        return Espeak.get().say(text, voice=voice, prosody=Prosody(pitch=pitch))

    a = in_fresh_engine(say, "The meeting was moved.", "en-us+f3", 50)
    in_fresh_engine(say, "Something else entirely.", "en+m3", 80)
    b = in_fresh_engine(say, "The meeting was moved.", "en-us+f3", 50)
    low = in_fresh_engine(say, "The meeting was moved.", "en-us+f3", 10)
    assert a.dtype == np.float32 and len(a) > Espeak.get().sr  # over a second at 22050 Hz
    assert np.array_equal(a, b)
    f0 = [np.nanmedian(librosa.yin(x, fmin=60, fmax=500, sr=22050)) for x in (a, low)]
    assert f0[0] > f0[1] * 1.2


def test_espeak_unknown_voice_is_one_clear_error() -> None:
    from areaser.builtin.espeak import Espeak, EspeakError, in_fresh_engine

    def say() -> np.ndarray:
        return Espeak.get().say("hello", voice="xx-nonexistent")

    with pytest.raises(EspeakError, match="unknown espeak-ng voice"):
        in_fresh_engine(say)


def test_the_emotion_profiles_cannot_be_changed_by_a_caller():
    """Every synthesis reads PROFILES: a caller's change would alter corpora said to be byte-identical."""
    from areaser.builtin.synth import PROFILES, EmotionProfile

    with pytest.raises(TypeError):
        PROFILES["angry"] = EmotionProfile()  # type: ignore[index]
    with pytest.raises(TypeError):
        del PROFILES["sad"]  # type: ignore[attr-defined]
    assert "angry" in PROFILES and PROFILES["neutral"] == EmotionProfile()

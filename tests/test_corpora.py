"""Corpus loaders on fixture trees that copy each real layout and naming, defects included.

Every audio file is real audio (0.2 s of a tone written with soundfile, its pitch taken
from the path so no two files are byte-identical unless a test copies one) unless it
plays a defect: a Git LFS pointer, an unreadable file, a silent file, an empty file.
"""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from areaser.cli import app
from areaser.data.corpora import CORPORA, base, load_corpus
from areaser.data.corpora.base import APPLEDOUBLE, DUPLICATE, SILENT, CorpusError, find_audio
from areaser.data.labels import CANONICAL
from areaser.data.manifest import COLUMNS, read_manifest, write_manifest

LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 123456\n"


def tone(path: Path, sr: int = 16000, seconds: float = 0.2, silent: bool = False, hz: float | None = None) -> Path:
    """A tone whose pitch comes from ``path`` (unless ``hz``): distinct files have distinct bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    hz = 200 + zlib.crc32(str(path).encode()) % 60000 / 100 if hz is None else hz  # 0.01 Hz apart: other bytes
    y = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * hz * t)
    sf.write(str(path), y, sr, subtype="PCM_16" if path.suffix.lower() in (".wav", ".flac") else None)
    return path


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def reasons(scan) -> dict[str, str]:
    """``{file name: reason}`` of the skipped files."""
    return {Path(s.path).name: s.reason for s in scan.skipped}


def check_manifest(df: pd.DataFrame, canonical: bool = True) -> None:
    """The manifest columns plus ``same_as``; no identical files unless the test made them."""
    assert tuple(df.columns) == COLUMNS + ("same_as",)
    assert set(df["label"]) <= set(CANONICAL) if canonical else all(x == x.strip().lower() for x in df["label"])
    assert df["utt_id"].is_unique
    assert all(Path(p).is_file() for p in df["path"])
    assert set(df["same_as"]) <= {""}


# ----------------------------------------------------------------------------- IEMOCAP

EVAL_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def label_block(start: float, uid: str, raw: str) -> str:
    return (
        f"[{start:.4f} - {start + 2.1:.4f}]\t{uid}\t{raw}\t[2.5000, 3.0000, 2.5000]\n"
        "C-E2:\tNeutral;\t()\nC-E3:\tNeutral;\tFrustration;\t()\nC-F1:\tNeutral;\t(calm)\n"
        "A-E3:\tval 3; act 2; dom  2;\t()\nA-F1:\tval 3; act 3; dom  3;\t()\n\n"
    )


# dialog -> [(utterance, raw label)]: both speakers of a session in every dialog
IEMOCAP_DIALOGS = {
    "Ses01F_impro01": [
        ("Ses01F_impro01_F000", "neu"),
        ("Ses01F_impro01_M000", "ang"),
        ("Ses01F_impro01_F001", "hap"),
        ("Ses01F_impro01_M001", "xxx"),
    ],
    "Ses01M_script01_1": [
        ("Ses01M_script01_1_F000", "exc"),
        ("Ses01M_script01_1_M000", "sad"),
        ("Ses01M_script01_1_M001", "fru"),
    ],
    "Ses02F_impro02": [
        ("Ses02F_impro02_F000", "sad"),
        ("Ses02F_impro02_M000", "neu"),
        ("Ses02F_impro02_F001", "oth"),
        ("Ses02F_impro02_M001", "ang"),
    ],
}


def make_iemocap(root: Path) -> Path:
    """Two sessions of IEMOCAP_full_release with the defects real copies have."""
    for dialog, utts in IEMOCAP_DIALOGS.items():
        sess = root / f"Session{int(dialog[3:5])}"
        text = EVAL_HEADER + "".join(label_block(1.5 + 3 * i, u, raw) for i, (u, raw) in enumerate(utts))
        put(sess / "dialog" / "EmoEvaluation" / f"{dialog}.txt", text.encode())
        put(
            sess / "dialog" / "transcriptions" / f"{dialog}.txt",
            "".join(f"{u} [001.5000-003.6000]: Hello.\n" for u, _ in utts).encode(),
        )
        tone(sess / "dialog" / "wav" / f"{dialog}.wav")  # the whole dialogue: not an utterance
        for u, _ in utts:
            tone(sess / "sentences" / "wav" / dialog / f"{u}.wav")
    s1, s2 = root / "Session1", root / "Session2"
    wav1 = s1 / "sentences" / "wav" / "Ses01F_impro01"
    # defects
    put(s1 / "dialog" / "EmoEvaluation" / "._Ses01F_impro01.txt", b"\x00\x05\x16\x07Mac OS X")
    put(
        s1 / "dialog" / "EmoEvaluation" / "Attribute" / "Ses01F_impro01_atr.txt",
        b"[1.0 - 2.0]\tSes01F_impro01_F099\tang\t[1.0, 1.0, 1.0]\n",
    )  # must not be read
    put(
        s1 / "dialog" / "EmoEvaluation" / "Categorical" / "Ses01F_impro01_e2_cat.txt",
        b"Ses01F_impro01_F000 :Neutral state; ()\n",
    )
    tone(wav1 / "Ses01F_impro01_F099.wav")  # wav without a label line
    put(wav1 / "._Ses01F_impro01_F000.wav", b"\x00\x05\x16\x07Mac OS X")
    tone(wav1 / "Ses01F_impro01_F000 (copy).wav")  # unparseable name
    tone(wav1 / "Ses01F_impro01_M001.wav", silent=True)  # overwrite: silent
    put(s1 / "sentences" / "wav" / "Ses01M_script01_1" / "Ses01M_script01_1_M001.wav", LFS)
    put(s2 / "sentences" / "wav" / "Ses02F_impro02" / "Ses02F_impro02_F001.wav", b"RIFF\x00\x00garbage" * 10)
    (s2 / "sentences" / "wav" / "Ses02F_impro02" / "Ses02F_impro02_M001.wav").unlink()  # labelled, wav missing
    with open(s2 / "dialog" / "EmoEvaluation" / "Ses02F_impro02.txt", "a") as f:
        f.write("[9.0 - oops]\tSes02F_impro02_F009\tneu\t[2.0, 2.0, 2.0]\n")  # malformed label line
    return root


def test_iemocap_reads_labels_and_reports_every_defect(tmp_path: Path) -> None:
    scan = load_corpus("iemocap", make_iemocap(tmp_path), progress=False)
    df = scan.manifest.set_index("utt_id")
    check_manifest(scan.manifest)
    assert sorted(df.index) == sorted(
        [
            "Ses01F_impro01_F000",
            "Ses01F_impro01_M000",
            "Ses01F_impro01_F001",
            "Ses01M_script01_1_F000",
            "Ses01M_script01_1_M000",
            "Ses02F_impro02_F000",
            "Ses02F_impro02_M000",
        ]
    )
    row = df.loc["Ses01F_impro01_M000"]  # the utterance's letter, not the dialog's, is the speaker
    assert (row.speaker, row.session, row.gender, row.label, row.raw_label) == ("Ses01M", "Ses01", "M", "angry", "ang")
    assert bool(row.improvised) and not bool(df.loc["Ses01M_script01_1_F000"].improvised)
    assert df.loc["Ses01M_script01_1_F000"].label == "excited" and df.loc["Ses01F_impro01_F001"].label == "happy"
    assert df.loc["Ses01M_script01_1_F000"].speaker == "Ses01F"
    assert np.allclose(df["duration_s"], 0.2)
    why = reasons(scan)
    assert why["._Ses01F_impro01.txt"] == APPLEDOUBLE and why["._Ses01F_impro01_F000.wav"] == APPLEDOUBLE
    assert why["Ses01F_impro01_F099.wav"] == "no label line in EmoEvaluation"  # Attribute/ was not read
    assert why["Ses01F_impro01_F000 (copy).wav"].startswith("unparseable name")
    assert why["Ses01F_impro01_M001.wav"] == SILENT
    assert "LFS pointer" in why["Ses01M_script01_1_M001.wav"]
    assert "not a readable audio file" in why["Ses02F_impro02_F001.wav"]
    assert why["Ses02F_impro02_M001.wav"].startswith("wav missing")
    assert len(scan.skipped) == 8
    assert any("malformed label line" in w and "Ses02F_impro02.txt:" in w for w in scan.warnings)
    assert any("a complete copy has total 5,531" in w for w in scan.warnings)  # a subset: warned, not refused


def test_iemocap_maps_every_raw_label(tmp_path: Path) -> None:
    raws = ["neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea", "dis", "oth", "xxx"]
    utts = [(f"Ses03M_impro05a_{'FM'[i % 2]}{i:03d}", raw) for i, raw in enumerate(raws)]
    text = EVAL_HEADER + "".join(label_block(i, u, raw) for i, (u, raw) in enumerate(utts))
    put(tmp_path / "Session3" / "dialog" / "EmoEvaluation" / "Ses03M_impro05a.txt", text.encode())
    for u, _ in utts:
        tone(tmp_path / "Session3" / "sentences" / "wav" / "Ses03M_impro05a" / f"{u}.wav")
    df = load_corpus("iemocap", tmp_path, progress=False, check_silent=False).manifest
    assert dict(zip(df["raw_label"], df["label"])) == {
        "neu": "neutral",
        "hap": "happy",
        "exc": "excited",
        "sad": "sad",
        "ang": "angry",
        "fru": "frustration",
        "sur": "surprise",
        "fea": "fear",
        "dis": "disgust",
        "oth": "other",
        "xxx": "undecided",
    }


def test_iemocap_wrong_roots(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus("iemocap", tmp_path / "nope")
    tone(tmp_path / "a" / "x.wav")
    with pytest.raises(CorpusError, match="no Session\\* folders"):
        load_corpus("iemocap", tmp_path / "a")
    tone(tmp_path / "b" / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav")
    with pytest.raises(CorpusError, match="no label lines"):
        load_corpus("iemocap", tmp_path / "b", progress=False)
    # the folder above IEMOCAP_full_release is accepted
    make_iemocap(tmp_path / "c" / "IEMOCAP_full_release")
    assert len(load_corpus("iemocap", tmp_path / "c", progress=False).manifest) == 7


# ----------------------------------------------------------------------------- name-based corpora


def test_ravdess(tmp_path: Path) -> None:
    actors = tmp_path / "Audio_Speech_Actors_01-24"
    for name in ("03-01-01-01-01-01-01", "03-01-05-02-01-02-01", "03-01-02-01-02-01-02", "03-01-08-02-02-02-24"):
        tone(actors / f"Actor_{name[-2:]}" / f"{name}.wav", sr=48000)
    tone(actors / "Actor_01" / "03-02-03-01-01-01-01.wav", sr=48000)  # song
    tone(actors / "Actor_01" / "03-01-09-01-01-01-01.wav", sr=48000)  # no emotion 09
    put(actors / "Actor_02" / "03-01-04-01-01-01-02.wav", LFS)
    put(actors / "Actor_02" / "._03-01-02-01-02-01-02.wav", b"\x00\x05\x16\x07")
    scan = load_corpus("ravdess", tmp_path, progress=False)
    df = scan.manifest.set_index("utt_id")
    check_manifest(scan.manifest)
    assert list(df.index) == [
        "03-01-01-01-01-01-01",
        "03-01-05-02-01-02-01",
        "03-01-02-01-02-01-02",
        "03-01-08-02-02-02-24",
    ]
    assert list(df["label"]) == ["neutral", "angry", "calm", "surprise"]
    assert list(df["speaker"]) == ["ravdess_01", "ravdess_01", "ravdess_02", "ravdess_24"]
    assert list(df["gender"]) == ["M", "M", "F", "F"] and set(df["session"]) == {""}
    assert df["improvised"].isna().all() and np.allclose(df["duration_s"], 0.2)
    why = reasons(scan)
    assert why["03-02-03-01-01-01-01.wav"].startswith("song")
    assert why["03-01-09-01-01-01-01.wav"].startswith("unparseable name")
    assert "LFS pointer" in why["03-01-04-01-01-01-02.wav"] and why["._03-01-02-01-02-01-02.wav"] == APPLEDOUBLE
    assert len(scan.warnings) == 1 and "files 6" in scan.warnings[0] and "files 1,440" in scan.warnings[0]


def test_cremad_known_defects(tmp_path: Path) -> None:
    wav = tmp_path / "AudioWAV"
    for name in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1091_TIE_NEU_LO", "1050_WSI_FEA_MD", "1002_ITS_DIS_XX"):
        tone(wav / f"{name}.wav")
    tone(wav / "1040_ITH_SAD_X.wav")  # misnamed in circulating copies
    tone(wav / "1076_MTI_SAD_XX.wav", silent=True)
    put(wav / "1003_DFA_SAD_XX.wav", LFS)
    put(wav / "1004_DFA_SAD_XX.wav", tone(tmp_path / "t.wav").read_bytes()[:40])  # truncated header
    put(wav / "._1001_DFA_ANG_XX.wav", b"\x00\x05\x16\x07")
    scan = load_corpus("crema-d", wav, progress=False)
    df = scan.manifest
    check_manifest(df)
    assert list(df["utt_id"]) == [
        "1001_DFA_ANG_XX",
        "1001_IEO_HAP_HI",
        "1002_ITS_DIS_XX",
        "1050_WSI_FEA_MD",
        "1091_TIE_NEU_LO",
    ]
    assert list(df["label"]) == ["angry", "happy", "disgust", "fear", "neutral"]
    assert list(df["speaker"])[:3] == ["cremad_1001", "cremad_1001", "cremad_1002"]
    assert set(df["gender"]) == {""} and set(df["session"]) == {""}
    why = reasons(scan)
    assert why["1040_ITH_SAD_X.wav"].startswith("misnamed") and why["1076_MTI_SAD_XX.wav"] == SILENT
    assert "LFS pointer" in why["1003_DFA_SAD_XX.wav"] and "not a readable" in why["1004_DFA_SAD_XX.wav"]
    assert why["._1001_DFA_ANG_XX.wav"] == APPLEDOUBLE and len(scan.skipped) == 5
    # the silent file is used when asked not to check (cheap check, but optional)
    assert "1076_MTI_SAD_XX" in set(load_corpus("cremad", wav, progress=False, check_silent=False).manifest["utt_id"])


def test_emodb(tmp_path: Path) -> None:
    for name in ("03a01Fa", "08b02Tb", "16a07Lc", "11b10Wa", "13a05Ea", "14b09Ab", "15a02Nc"):
        tone(tmp_path / "wav" / f"{name}.wav")
    tone(tmp_path / "wav" / "99a01Fa.wav")  # no speaker 99
    tone(tmp_path / "wav" / "03a01Xa.wav")  # no emotion X
    put(tmp_path / "wav" / "10a01Wa.wav", b"")
    scan = load_corpus("emodb", tmp_path, progress=False)
    df = scan.manifest.set_index("utt_id")
    check_manifest(scan.manifest)
    assert dict(df["label"]) == {
        "03a01Fa": "happy",
        "08b02Tb": "sad",
        "11b10Wa": "angry",
        "13a05Ea": "disgust",
        "14b09Ab": "fear",
        "15a02Nc": "neutral",
        "16a07Lc": "boredom",
    }
    assert dict(df["gender"]) == {
        "03a01Fa": "M",
        "08b02Tb": "F",
        "11b10Wa": "M",
        "13a05Ea": "F",
        "14b09Ab": "F",
        "15a02Nc": "M",
        "16a07Lc": "F",
    }
    assert df.loc["03a01Fa", "speaker"] == "emodb_03" and df.loc["03a01Fa", "raw_label"] == "F"
    why = reasons(scan)
    assert why["99a01Fa.wav"].startswith("unparseable") and why["03a01Xa.wav"].startswith("unparseable")
    assert "empty file" in why["10a01Wa.wav"]


def test_tess_labels_from_names_and_duplicates(tmp_path: Path) -> None:
    data = tmp_path / "TESS Toronto emotional speech set data"
    tone(data / "OAF_angry" / "OAF_back_angry.wav", sr=24414)
    tone(data / "OAF_neutral" / "OAF_back_neutral.wav", sr=24414)
    tone(data / "YAF_pleasant_surprise" / "YAF_bean_ps.wav", sr=24414)
    tone(data / "YAF_angry" / "YAF_dog_sad.wav", sr=24414)  # folder says angry, name says sad
    tone(data / "OAF_Fear" / "OAF_neat_Fear.wav", sr=24414)
    tone(data / "OAF_angry" / "OAF_back.wav", sr=24414)  # no emotion
    # Some copies hold the whole set twice in a nested folder.
    nested = tmp_path / "tess toronto emotional speech set data" / data.name
    tone(nested / "OAF_angry" / "OAF_back_angry.wav", sr=24414)
    put(data / "YAF_angry" / "YAF_dog_angry.wav", LFS)  # broken in the first copy, fine in the second
    tone(nested / "YAF_angry" / "YAF_dog_angry.wav", sr=24414)
    scan = load_corpus("tess", tmp_path, progress=False)
    df = scan.manifest.set_index("utt_id")
    check_manifest(scan.manifest)
    assert dict(df["label"]) == {
        "OAF_back_angry": "angry",
        "OAF_back_neutral": "neutral",
        "YAF_bean_ps": "surprise",
        "YAF_dog_sad": "sad",
        "OAF_neat_fear": "fear",
        "YAF_dog_angry": "angry",
    }
    assert set(df["gender"]) == {"F"} and set(df["speaker"]) == {"tess_OAF", "tess_YAF"}
    assert df.loc["OAF_back_angry", "path"] == str(data / "OAF_angry" / "OAF_back_angry.wav")
    assert df.loc["YAF_dog_angry", "path"] == str(nested / "YAF_angry" / "YAF_dog_angry.wav")
    why = {s.path: s.reason for s in scan.skipped}
    assert why == {
        str(nested / "OAF_angry" / "OAF_back_angry.wav"): DUPLICATE,
        str(data / "YAF_angry" / "YAF_dog_angry.wav"): why[str(data / "YAF_angry" / "YAF_dog_angry.wav")],
        str(data / "OAF_angry" / "OAF_back.wav"): why[str(data / "OAF_angry" / "OAF_back.wav")],
    }
    assert "LFS pointer" in why[str(data / "YAF_angry" / "YAF_dog_angry.wav")]
    assert reasons(scan)["OAF_back.wav"].startswith("unparseable")


def test_savee_both_layouts(tmp_path: Path) -> None:
    audio = tmp_path / "AudioData"
    for spk, name in (("DC", "a01"), ("DC", "sa02"), ("JE", "su15"), ("JK", "n30"), ("DC", "x01")):
        tone(audio / spk / f"{name}.wav", sr=44100)
    tone(audio / "XX" / "a01.wav", sr=44100)  # unknown speaker folder
    tone(tmp_path / "KL_h03.wav", sr=44100)  # flat layout
    tone(tmp_path / "DC_a01.wav", sr=44100)  # same utterance as AudioData/DC/a01.wav
    scan = load_corpus("savee", tmp_path, progress=False)
    df = scan.manifest.set_index("utt_id")
    check_manifest(scan.manifest)
    assert dict(df["label"]) == {
        "DC_a01": "angry",
        "DC_sa02": "sad",
        "JE_su15": "surprise",
        "JK_n30": "neutral",
        "KL_h03": "happy",
    }
    assert set(df["gender"]) == {"M"} and df.loc["JE_su15", "speaker"] == "savee_JE"
    why = {str(Path(s.path).relative_to(tmp_path)): s.reason.split(":")[0] for s in scan.skipped}
    assert why == {
        "DC_a01.wav": DUPLICATE,
        "AudioData/DC/x01.wav": "unparseable name",
        "AudioData/XX/a01.wav": "unparseable name",
    }


@pytest.mark.parametrize("name", ["ravdess", "cremad", "emodb", "tess", "savee"])
def test_name_loaders_refuse_wrong_roots(tmp_path: Path, name: str) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(name, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no audio files"):
        load_corpus(name, tmp_path / "empty")
    tone(tmp_path / "other" / "Ses01F_impro01_F000.wav")  # some other corpus
    with pytest.raises(CorpusError, match=f"is a {name} utterance"):
        load_corpus(name, tmp_path / "other", progress=False)


def test_unknown_corpus_lists_the_names() -> None:
    with pytest.raises(ValueError, match="iemocap, ravdess, cremad, emodb, tess, savee, generic"):
        load_corpus("msp-podcast", ".")
    assert set(CORPORA) == {"iemocap", "ravdess", "cremad", "emodb", "tess", "savee", "generic"}


# ----------------------------------------------------------------------------- any audio format


def test_find_audio_finds_every_format_soundfile_reads_in_any_case(tmp_path: Path) -> None:
    names = ["a.wav", "b.WAV", "c.flac", "d.Flac", "e.ogg", "sub/f.OGG", "sub/g.aiff"]
    for name in names:
        tone(tmp_path / name)
    put(tmp_path / "notes.txt", b"not audio")
    put(tmp_path / "h.wav.txt", b"not audio")
    (tmp_path / "dir.wav").mkdir()  # a folder, not a file
    assert [p.relative_to(tmp_path).as_posix() for p in find_audio(tmp_path)] == names
    assert find_audio(tmp_path, pattern="*/*") == [tmp_path / "sub" / "f.OGG", tmp_path / "sub" / "g.aiff"]
    assert find_audio(tmp_path / "sub" / "none") == []  # no layout given: an empty list, no error
    with pytest.raises(CorpusError, match="no audio files .* expected ROOT/x"):
        find_audio(tmp_path / "sub" / "none", "ROOT/x")


NAMES = {  # loader -> (a file named as the corpus names an angry one, a neutral one)
    "ravdess": ("Actor_01/03-01-05-01-02-01-01", "Actor_01/03-01-01-01-01-01-01"),
    "cremad": ("AudioWAV/1001_DFA_ANG_XX", "AudioWAV/1001_DFA_NEU_XX"),
    "emodb": ("wav/03a01Wa", "wav/03a01Nc"),
    "tess": ("OAF_angry/OAF_back_angry", "OAF_neutral/OAF_back_neutral"),
    "savee": ("AudioData/DC/a01", "AudioData/DC/n01"),
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_name_loaders_read_flac_ogg_and_upper_case_extensions(tmp_path: Path, name: str) -> None:
    angry, neutral = NAMES[name]
    tone(tmp_path / f"{angry}.FLAC")
    tone(tmp_path / f"{neutral}.ogg")
    scan = load_corpus(name, tmp_path, progress=False)
    check_manifest(scan.manifest)
    assert sorted(scan.manifest["label"]) == ["angry", "neutral"] and scan.skipped == []
    assert sorted(Path(p).suffix for p in scan.manifest["path"]) == [".FLAC", ".ogg"]


def test_ravdess_flac_copy(tmp_path: Path) -> None:
    """The 16 kHz FLAC copy of RAVDESS (as in ../shared/data) scans like the wav original."""
    for name in ("03-01-01-01-01-01-01", "03-01-05-02-01-02-01", "03-01-08-02-02-02-24"):
        tone(tmp_path / f"Actor_{name[-2:]}" / f"{name}.flac")
    df = load_corpus("ravdess", tmp_path, progress=False).manifest
    assert list(df["label"]) == ["neutral", "angry", "surprise"]
    assert list(df["speaker"]) == ["ravdess_01", "ravdess_01", "ravdess_24"]


def test_iemocap_reads_any_audio_extension(tmp_path: Path) -> None:
    utts = [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "ang"), ("Ses01F_impro01_F001", "sad")]
    put(
        tmp_path / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt",
        (EVAL_HEADER + "".join(label_block(3 * i, u, raw) for i, (u, raw) in enumerate(utts))).encode(),
    )
    wav = tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    tone(wav / "Ses01F_impro01_F000.WAV")
    tone(wav / "Ses01F_impro01_M000.Wav")
    put(wav / "Ses01F_impro01_F001.flac", LFS)  # the first of the utterance's two files is unusable,
    tone(wav / "Ses01F_impro01_F001.wav")  # so the second is used
    tone(wav / "Ses01F_impro01_F000.flac")  # a second usable file of F000: a duplicate
    scan = load_corpus("iemocap", tmp_path, progress=False)
    check_manifest(scan.manifest)
    assert {u: Path(p).name for u, p in zip(scan.manifest["utt_id"], scan.manifest["path"])} == {
        "Ses01F_impro01_F000": "Ses01F_impro01_F000.WAV",
        "Ses01F_impro01_M000": "Ses01F_impro01_M000.Wav",
        "Ses01F_impro01_F001": "Ses01F_impro01_F001.wav",
    }
    why = reasons(scan)
    assert why.pop("Ses01F_impro01_F000.flac") == DUPLICATE and "LFS pointer" in why.pop("Ses01F_impro01_F001.flac")
    assert why == {}


# ----------------------------------------------------------------------------- identical recordings


def test_same_as_names_the_earlier_identical_file(tmp_path: Path) -> None:
    actor = tmp_path / "Actor_07"
    first = tone(actor / "03-01-03-01-02-01-07.flac")
    (tmp_path / "A_songs").mkdir()
    shutil.copy(first, actor / "03-01-03-01-02-02-07.flac")  # the real RAVDESS pair
    shutil.copy(first, actor / "03-01-04-01-02-02-07.flac")  # a third copy names the first, not the second
    shutil.copy(first, tmp_path / "A_songs" / "03-02-03-01-02-01-07.flac")  # scanned first, but a song: never named
    tone(actor / "03-01-01-01-01-01-07.flac", hz=300)  # same size as the next, other bytes
    tone(actor / "03-01-01-01-01-02-07.flac", hz=300.5)
    tone(actor / "03-01-02-01-01-01-07.flac", seconds=0.3)
    scan = load_corpus("ravdess", tmp_path, progress=False)
    assert dict(zip(scan.manifest["utt_id"], scan.manifest["same_as"])) == {
        "03-01-01-01-01-01-07": "",
        "03-01-01-01-01-02-07": "",
        "03-01-02-01-01-01-07": "",
        "03-01-03-01-02-01-07": "",
        "03-01-03-01-02-02-07": "03-01-03-01-02-01-07",
        "03-01-04-01-02-02-07": "03-01-03-01-02-01-07",
    }
    assert reasons(scan)["03-02-03-01-02-01-07.flac"].startswith("song")
    assert not any("same" in w or "identical" in w for w in scan.warnings)  # a quirk of the data, not a defect


def test_same_as_hashes_only_files_that_share_a_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i, seconds in enumerate((0.2, 0.2, 0.3, 0.4, 0.5)):  # 16-bit wav: the size follows the length
        tone(tmp_path / "wav" / f"03a0{[1, 2, 4, 5, 7][i]}Wa.wav", seconds=seconds)
    hashed: list[str] = []
    digest = base.file_digest
    monkeypatch.setattr(base, "file_digest", lambda path: hashed.append(Path(path).name) or digest(path))
    df = load_corpus("emodb", tmp_path, progress=False).manifest
    assert sorted(hashed) == ["03a01Wa.wav", "03a02Wa.wav"] and set(df["same_as"]) == {""}


def test_same_as_survives_the_manifest_csv_round_trip(tmp_path: Path) -> None:
    first = tone(tmp_path / "wav" / "03a01Wa.wav")
    shutil.copy(first, tmp_path / "wav" / "03a01Wb.wav")
    tone(tmp_path / "wav" / "08a01Wa.wav")
    df = load_corpus("emodb", tmp_path, progress=False).manifest
    write_manifest(df, tmp_path / "m.csv")
    back = read_manifest(tmp_path / "m.csv")
    assert back["same_as"].tolist() == ["", "03a01Wa", ""]  # "" stays "", never NaN
    assert back["same_as"].map(type).eq(str).all()


def test_iemocap_marks_identical_recordings(tmp_path: Path) -> None:
    utts = [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "ang")]
    put(
        tmp_path / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt",
        (EVAL_HEADER + "".join(label_block(3 * i, u, raw) for i, (u, raw) in enumerate(utts))).encode(),
    )
    wav = tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    shutil.copy(tone(wav / "Ses01F_impro01_F000.wav"), wav / "Ses01F_impro01_M000.wav")
    df = load_corpus("iemocap", tmp_path, progress=False).manifest
    assert df["same_as"].tolist() == ["", "Ses01F_impro01_F000"]


# ----------------------------------------------------------------------------- generic


def test_generic_folder_per_label(tmp_path: Path) -> None:
    tone(tmp_path / "Anger" / "a.wav")
    tone(tmp_path / "happiness" / "b.wav")
    tone(tmp_path / "neutral" / "spk1" / "a.wav")
    tone(tmp_path / "pleasant surprise" / "c.wav")
    tone(tmp_path / "loose.wav")
    scan = load_corpus("generic", tmp_path, progress=False)
    df = scan.manifest.set_index("utt_id")
    check_manifest(scan.manifest)
    assert dict(df["label"]) == {
        "Anger/a": "angry",
        "happiness/b": "happy",
        "neutral/spk1/a": "neutral",
        "pleasant surprise/c": "surprise",
    }
    assert df.loc["Anger/a", "raw_label"] == "Anger" and set(df["speaker"]) == {""}
    assert reasons(scan) == {"loose.wav": "not inside a label folder"} and scan.warnings == []


def test_generic_keeps_labels_the_vocabulary_lacks(tmp_path: Path) -> None:
    tone(tmp_path / "Anger" / "a.wav")
    tone(tmp_path / "Contempt" / "b.wav")
    tone(tmp_path / "Contempt" / "c.wav")
    tone(tmp_path / "shame" / "d.wav")
    scan = load_corpus("generic", tmp_path, progress=False)
    df = scan.manifest.set_index("utt_id")
    check_manifest(scan.manifest, canonical=False)
    assert dict(df["label"]) == {
        "Anger/a": "angry",
        "Contempt/b": "contempt",
        "Contempt/c": "contempt",
        "shame/d": "shame",
    }
    assert df.loc["Contempt/b", "raw_label"] == "Contempt" and scan.skipped == []
    assert len(scan.warnings) == 1  # one warning for the scan, not one per file
    assert "not in the vocabulary" in scan.warnings[0] and "contempt 2, shame 1" in scan.warnings[0]
    assert "np." not in scan.warnings[0]  # plain numbers, not numpy reprs


def test_generic_csv(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "e"):
        tone(tmp_path / "audio" / f"{name}.wav")
    csv = put(
        tmp_path / "labels.csv",
        b"audio/a.wav,ang,spk1\naudio/b.wav,joy,spk2\naudio/c.wav,Contempt,spk1\n"
        b"audio/missing.wav,sad,spk2\naudio/e.wav, ,spk2\n",
    )
    scan = load_corpus("generic", csv, progress=False)
    check_manifest(scan.manifest, canonical=False)
    assert list(scan.manifest["utt_id"]) == ["audio/a", "audio/b", "audio/c"]
    assert list(scan.manifest["label"]) == ["angry", "happy", "contempt"]
    assert list(scan.manifest["raw_label"]) == ["ang", "joy", "Contempt"]
    assert list(scan.manifest["speaker"]) == ["spk1", "spk2", "spk1"]
    assert reasons(scan) == {"missing.wav": "file not found", "e.wav": "empty label"}
    assert len(scan.warnings) == 1 and "contempt 1" in scan.warnings[0]
    # with a header, extra columns are read by name
    put(tmp_path / "h.csv", b"path,label,speaker,gender\naudio/e.wav,Sadness,s9,female\n")
    df = load_corpus("generic", tmp_path / "h.csv").manifest  # with the (rich, stderr) progress bar
    assert (df.loc[0, "label"], df.loc[0, "speaker"], df.loc[0, "gender"]) == ("sad", "s9", "F")
    put(tmp_path / "bad.csv", b"a,b,c,d,e\n")
    with pytest.raises(CorpusError, match="5 columns"):
        load_corpus("generic", tmp_path / "bad.csv")


def test_generic_csv_reads_the_speaker_column_by_its_header_name(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        tone(tmp_path / "audio" / f"{name}.wav")
    put(
        tmp_path / "h.csv",
        b"path,session,speaker,label\naudio/a.wav,s1,spk7,sad\naudio/b.wav,s2,spk8,ang\naudio/c.wav,s2,,neu\n",
    )
    df = load_corpus("generic", tmp_path / "h.csv", progress=False).manifest
    assert list(df["speaker"]) == ["spk7", "spk8", ""] and list(df["session"]) == ["s1", "s2", "s2"]
    assert list(df["label"]) == ["sad", "angry", "neutral"]


def test_generic_speaker_regex(tmp_path: Path) -> None:
    tone(tmp_path / "angry" / "spk01_a.wav")
    tone(tmp_path / "angry" / "spk02" / "take3.wav")
    tone(tmp_path / "sad" / "spk01_b.flac")
    tone(tmp_path / "sad" / "nobody.wav")
    scan = load_corpus("generic", tmp_path, progress=False, speaker_regex=r"(?P<speaker>spk\d+)")
    check_manifest(scan.manifest)
    assert dict(zip(scan.manifest["utt_id"], scan.manifest["speaker"])) == {
        "angry/spk01_a": "spk01",
        "angry/spk02/take3": "spk02",
        "sad/spk01_b": "spk01",
    }
    assert reasons(scan) == {"nobody.wav": "no speaker: the path does not match speaker regex '(?P<speaker>spk\\\\d+)'"}
    # without a named group, group 1; searched in the path under the root, label folder included
    df = load_corpus("generic", tmp_path, progress=False, speaker_regex=r"^(\w+)/").manifest
    assert set(df["speaker"]) == {"angry", "sad"} and len(df) == 4
    with pytest.raises(ValueError, match="has no group"):
        load_corpus("generic", tmp_path, speaker_regex=r"spk\d+")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        load_corpus("generic", tmp_path, speaker_regex=r"(spk")
    put(tmp_path / "l.csv", b"angry/spk01_a.wav,angry\n")
    with pytest.raises(ValueError, match="folder layout"):
        load_corpus("generic", tmp_path / "l.csv", speaker_regex=r"(spk\d+)")


# ----------------------------------------------------------------------------- areaser scan


def test_scan_cli_writes_manifest_and_prints_counts(tmp_path: Path) -> None:
    root = make_iemocap(tmp_path / "iemocap")
    out = tmp_path / "out" / "manifest.csv"
    res = CliRunner().invoke(
        app, ["scan", "iemocap", str(root), "-o", str(out), "--no-progress", "--show-skipped", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "7 utterances, 4 speakers" in res.output
    assert "utterances per label and speaker" in res.output and "utterances per label and session" in res.output
    assert "skipped 8 file(s)" in res.output and "... and 5 more" in res.output
    assert "warning:" in res.output
    back = read_manifest(out)
    assert len(back) == 7 and set(back["speaker"]) == {"Ses01F", "Ses01M", "Ses02F", "Ses02M"}


def test_scan_cli_bad_root_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["scan", "iemocap", str(tmp_path), "-o", str(tmp_path / "m.csv")])
    assert res.exit_code == 2
    assert "no Session* folders" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "m.csv").exists()
    res = CliRunner().invoke(app, ["scan", "nosuch", str(tmp_path)])
    assert res.exit_code == 2 and "choose one of" in res.output


def test_scan_builtin_corpus_reads_back_what_the_generator_wrote(builtin_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "scanned.csv"
    res = CliRunner().invoke(app, ["scan", "iemocap", str(builtin_corpus), "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    written = read_manifest(builtin_corpus / "manifest.csv").set_index("utt_id").sort_index()
    scanned = read_manifest(out).set_index("utt_id").sort_index()
    assert list(scanned.index) == list(written.index)
    for col in ("path", "speaker", "session", "gender", "label", "raw_label", "improvised"):
        assert scanned[col].tolist() == written[col].tolist(), col
    assert np.allclose(scanned["duration_s"], written["duration_s"], atol=1e-3)
    assert "0 files skipped" in res.output and "by reason" not in res.output


def test_scan_cli_speaker_regex(tmp_path: Path) -> None:
    tone(tmp_path / "data" / "angry" / "spk01_a.wav")
    tone(tmp_path / "data" / "sad" / "spk02_b.ogg")
    tone(tmp_path / "data" / "sad" / "nobody.wav")
    out = tmp_path / "m.csv"
    res = CliRunner().invoke(
        app,
        [
            "scan",
            "generic",
            str(tmp_path / "data"),
            "-o",
            str(out),
            "--no-progress",
            "--speaker-regex",
            r"(?P<speaker>spk\d+)_",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "2 utterances, 2 speakers" in res.output and "does not match speaker regex" in res.output
    assert dict(zip(read_manifest(out)["utt_id"], read_manifest(out)["speaker"])) == {
        "angry/spk01_a": "spk01",
        "sad/spk02_b": "spk02",
    }


@pytest.mark.parametrize("args", [["emodb", "--speaker-regex", "(x)"], ["generic", "--speaker-regex", "x"]])
def test_scan_cli_speaker_regex_errors_are_one_line(tmp_path: Path, args: list[str]) -> None:
    tone(tmp_path / "angry" / "a.wav")
    res = CliRunner().invoke(app, ["scan", args[0], str(tmp_path), *args[1:], "--no-progress"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert ("only for the generic loader" if args[0] == "emodb" else "has no group") in res.output


def test_nan_audio_is_skipped_as_nan_not_as_silent(tmp_path: Path) -> None:
    tone(tmp_path / "wav" / "03a01Wa.wav")
    y = np.zeros(3200, dtype=np.float32)
    y[100] = np.nan  # the rest is digital silence: "silent" would be the wrong reason
    (tmp_path / "wav").mkdir(exist_ok=True)
    sf.write(str(tmp_path / "wav" / "03a01Wb.wav"), y, 16000, subtype="FLOAT")
    scan = load_corpus("emodb", tmp_path, progress=False)
    why = {Path(s.path).name: s.reason for s in scan.skipped}
    assert why == {"03a01Wb.wav": "contains NaN or infinite samples"}
    assert list(scan.manifest["utt_id"]) == ["03a01Wa"]

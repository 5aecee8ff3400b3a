"""Corpus loaders on defective copies found by a red-team pass (issue #14): nothing vanishes silently.

Each test builds a tiny tree of real audio (short tones written with soundfile, pitch taken from
the path so no two files share bytes), plays one defect, and checks the exact skipped reason or
warning. Expected values come from the layout documentation (docs/corpora.md), never from a scan.
"""

from __future__ import annotations

import codecs
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from areaser.data.corpora import load_corpus
from areaser.data.corpora.base import CorpusError

BROKEN_LINK = "broken symbolic link (its target does not exist)"
LINK_LOOP = "symbolic link loop (it leads back to itself or to a folder above it), not followed"
NOT_A_SESSION = "not one of Session1..Session5 (a copy?), not read"
SONG = "song (vocal channel 02), not part of the speech corpus"


def tone(path: Path, sr: int = 16000, seconds: float = 0.05) -> Path:
    """A short tone whose pitch comes from ``path``: distinct files have distinct bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    hz = 200 + zlib.crc32(str(path).encode()) % 60000 / 100
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * hz * t), sr, subtype="PCM_16", format="WAV")
    return path


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def link(path: Path, target: str | Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


def reasons(scan, root: Path) -> dict[str, str]:
    """``{path under root: reason}`` of the skipped entries (``CSV:LINE`` entries keep their suffix)."""
    return {os.path.relpath(s.path, root): s.reason for s in scan.skipped}


def label_line(uid: str, raw: str, start: float = 1.0) -> str:
    """One IEMOCAP EmoEvaluation summary line (the documented tab-separated form)."""
    return f"[{start:.4f} - {start + 2:.4f}]\t{uid}\t{raw}\t[2.5000, 3.0000, 2.5000]\n"


def iemocap_utterance(session: Path, uid: str, raw: str, encode=str.encode) -> None:
    """``uid``'s audio and a one-utterance EmoEvaluation file of its dialog under ``session``."""
    dialog = uid.rsplit("_", 1)[0]
    text = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n" + label_line(uid, raw)
    put(session / "dialog" / "EmoEvaluation" / f"{dialog}.txt", encode(text))
    tone(session / "sentences" / "wav" / dialog / f"{uid}.wav")


# ----------------------------------------------------------------------------- 1. IEMOCAP session folders


def test_iemocap_reads_only_session1_to_session5(tmp_path: Path) -> None:
    iemocap_utterance(tmp_path / "Session1", "Ses01F_impro01_F000", "neu")
    # a copy of Session1 holding one more utterance, a stray Session6 and a lower-case twin
    iemocap_utterance(tmp_path / "Session1 (copy)", "Ses01F_impro01_F000", "neu")
    iemocap_utterance(tmp_path / "Session1 (copy)", "Ses01F_impro02_M000", "ang")
    iemocap_utterance(tmp_path / "Session6", "Ses06F_impro01_F000", "sad")
    iemocap_utterance(tmp_path / "session2", "Ses02F_impro01_F000", "sad")
    scan = load_corpus("iemocap", tmp_path, progress=False)
    assert dict(zip(scan.manifest["utt_id"], scan.manifest["path"])) == {
        "Ses01F_impro01_F000": str(tmp_path / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    }
    assert reasons(scan, tmp_path) == {
        "Session1 (copy)": NOT_A_SESSION,
        "Session6": NOT_A_SESSION,
        "session2": NOT_A_SESSION,
    }


def test_iemocap_with_only_copies_of_sessions_is_refused_naming_them(tmp_path: Path) -> None:
    iemocap_utterance(tmp_path / "Session1 (copy)", "Ses01F_impro01_F000", "neu")
    with pytest.raises(CorpusError, match=r"no Session1\.\.Session5 folder \(only Session1 \(copy\), not read\)"):
        load_corpus("iemocap", tmp_path, progress=False)


# ----------------------------------------------------------------------------- 2. label file encodings


def test_iemocap_label_files_are_decoded_by_their_byte_order_mark(tmp_path: Path) -> None:
    s1 = tmp_path / "Session1"
    encodings = {
        "Ses01F_impro01_F000": lambda t: codecs.BOM_UTF8 + t.encode(),  # BOM right before a label line
        "Ses01F_impro02_F000": lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"),
        "Ses01F_impro03_F000": lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"),
        "Ses01F_impro04_F000": lambda t: t.encode("utf-16-le"),  # no BOM at all
        "Ses01F_impro05_F000": lambda t: t.replace("TURN_NAME", "TURN_NAME caf\xe9").encode("latin-1"),
        "Ses01F_impro06_F000": str.encode,  # plain UTF-8: no warning
    }
    for uid, encode in encodings.items():
        iemocap_utterance(s1, uid, "neu", encode)
    # the BOM first: its label line starts with U+FEFF, not "[", when read as plain UTF-8
    put(
        s1 / "dialog/EmoEvaluation/Ses01F_impro01.txt",
        codecs.BOM_UTF8 + label_line("Ses01F_impro01_F000", "neu").encode(),
    )
    scan = load_corpus("iemocap", tmp_path, progress=False)
    assert sorted(scan.manifest["utt_id"]) == sorted(encodings) and scan.skipped == []
    ev = s1 / "dialog" / "EmoEvaluation"
    assert scan.warnings[:-1] == [  # the last one is the subset's count warning
        f"{ev}/Ses01F_impro01.txt: read as UTF-8 with a byte-order mark, not plain UTF-8",
        f"{ev}/Ses01F_impro02.txt: read as UTF-16 LE, not plain UTF-8",
        f"{ev}/Ses01F_impro03.txt: read as UTF-16 BE, not plain UTF-8",
        f"{ev}/Ses01F_impro04.txt: read as UTF-16 LE without a byte-order mark (guessed from its NUL bytes), "
        "not plain UTF-8",
        f"{ev}/Ses01F_impro05.txt: not valid UTF-8: undecodable bytes (the first at byte 39) read as U+FFFD, "
        "lines holding them may be ignored",
    ]
    assert "a complete copy has total 5,531" in scan.warnings[-1]


# ----------------------------------------------------------------------------- 3. links and other files


def test_generic_lists_links_unreadable_audio_and_other_files(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    tone(root / "angry" / "a.wav")
    put(root / "angry" / "b.m4a", b"\x00\x00\x00\x20ftypM4A " + bytes(200))  # audio soundfile cannot read
    put(root / "angry" / "c.xyz", b"what is this")
    put(root / "angry" / "notes.txt", b"a transcript")  # companions and hidden files: not listed
    put(root / "angry" / "meta.json", b"{}")
    put(root / "angry" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    put(root / "labels.csv", b"angry/a.wav,angry\n")
    link(root / "angry" / "d.wav", "gone.wav")  # broken, with an audio name
    link(root / "angry" / "e", "gone")  # broken, any name
    link(root / "angry" / "l1.wav", "l2.wav")  # a loop of two file links
    link(root / "angry" / "l2.wav", "l1.wav")
    link(root / "sad" / "up", "..")  # a folder link to its grandparent: followed, it never ends
    tone(root / "sad" / "s.wav")
    tone(tmp_path / "elsewhere" / "n.wav")
    link(root / "neutral", tmp_path / "elsewhere")  # a linked label folder is read
    scan = load_corpus("generic", root, progress=False)
    assert sorted(scan.manifest["utt_id"]) == ["angry/a", "neutral/n", "sad/s"]
    assert reasons(scan, root) == {
        "angry/b.m4a": "audio format soundfile cannot read (.m4a): convert it, e.g. to .flac",
        "angry/c.xyz": "not an audio file extension (.xyz)",
        "angry/d.wav": BROKEN_LINK,
        "angry/e": BROKEN_LINK,
        "angry/l1.wav": LINK_LOOP,
        "angry/l2.wav": LINK_LOOP,
        "sad/up": LINK_LOOP,
    }


def test_name_loaders_list_broken_links_and_count_audio_named_ones(tmp_path: Path) -> None:
    actor = tmp_path / "Actor_01"
    tone(actor / "03-01-05-01-02-01-01.wav")
    link(actor / "03-01-01-01-01-01-01.wav", "gone.wav")  # a corpus file whose link is broken
    link(actor / "README", "gone.txt")
    put(actor / "info.txt", b"companion files of a named corpus are not listed")
    scan = load_corpus("ravdess", tmp_path, progress=False)
    assert list(scan.manifest["utt_id"]) == ["03-01-05-01-02-01-01"]
    assert reasons(scan, tmp_path) == {"Actor_01/03-01-01-01-01-01-01.wav": BROKEN_LINK, "Actor_01/README": BROKEN_LINK}
    assert "found files 2, 01 1," in scan.warnings[0]  # the broken file is one of the corpus' files


def test_iemocap_broken_audio_and_label_links(tmp_path: Path) -> None:
    s1 = tmp_path / "Session1"
    iemocap_utterance(s1, "Ses01F_impro01_F000", "neu")
    put(s1 / "dialog/EmoEvaluation/Ses01F_impro02.txt", label_line("Ses01F_impro02_F000", "ang").encode())
    link(s1 / "sentences/wav/Ses01F_impro02/Ses01F_impro02_F000.wav", "gone.wav")
    link(s1 / "dialog/EmoEvaluation/Ses01F_impro03.txt", "gone.txt")  # its labels are missing, not a crash
    scan = load_corpus("iemocap", tmp_path, progress=False)
    assert list(scan.manifest["utt_id"]) == ["Ses01F_impro01_F000"]
    assert reasons(scan, tmp_path) == {
        "Session1/dialog/EmoEvaluation/Ses01F_impro03.txt": BROKEN_LINK,
        "Session1/sentences/wav/Ses01F_impro02/Ses01F_impro02_F000.wav": BROKEN_LINK,
    }


def test_find_audio_reports_what_it_does_not_return(tmp_path: Path) -> None:
    from areaser.data.corpora.base import find_audio

    tone(tmp_path / "x" / "a.wav")
    link(tmp_path / "x" / "b.flac", "gone.flac")
    link(tmp_path / "x" / "c", "gone")
    put(tmp_path / "x" / "d.bin", b"\x01")
    skipped: list = []
    assert find_audio(tmp_path, pattern="*/*", skipped=skipped) == [tmp_path / "x" / "a.wav", tmp_path / "x" / "b.flac"]
    assert [(Path(s.path).name, s.reason) for s in skipped] == [("c", BROKEN_LINK)]  # d.bin: only with list_other


# ----------------------------------------------------------------------------- 4. CSV rows


def test_generic_csv_row_errors_name_the_csv_and_line(tmp_path: Path) -> None:
    tone(tmp_path / "a.wav")
    tone(tmp_path / "b.wav")
    csv = put(tmp_path / "l.csv", b"a.wav,angry\n\n,sad\nb.wav,neutral,spk1,extra\nb.wav,neutral\n")
    scan = load_corpus("generic", csv, progress=False)
    assert list(scan.manifest["utt_id"]) == ["a", "b"]
    assert [(s.path, s.reason) for s in scan.skipped] == [
        (f"{csv}:3", "empty path cell"),  # line 2 is blank
        (f"{csv}:4", "4 cells; expected 2 (path,label)"),
    ]


def test_generic_unreadable_csv_names_the_line(tmp_path: Path) -> None:
    csv = put(tmp_path / "l.csv", b'a.wav,angry\nb.wav,"sad\n')  # a quote never closed
    with pytest.raises(CorpusError, match=r"l\.csv: line 2: not a readable CSV"):
        load_corpus("generic", csv, progress=False)


def test_generic_csv_in_utf16_with_a_bom(tmp_path: Path) -> None:
    tone(tmp_path / "a.wav")
    csv = put(tmp_path / "l.csv", codecs.BOM_UTF16_LE + "path,label\na.wav,angry\n".encode("utf-16-le"))
    scan = load_corpus("generic", csv, progress=False)
    assert list(scan.manifest["label"]) == ["angry"]
    assert scan.warnings == [f"{csv}: read as UTF-16 LE, not plain UTF-8"]


# ----------------------------------------------------------------------------- 5. RAVDESS songs


def test_ravdess_songs_are_not_counted_against_a_complete_speech_copy(tmp_path: Path) -> None:
    # the documented complete speech set: 24 actors x 60 (neutral: 1 intensity x 2 statements x 2
    # repetitions; seven emotions x 2 intensities x 2 x 2), and one song per actor beside it
    for actor in range(1, 25):
        for emo in range(1, 9):
            for intensity in (1,) if emo == 1 else (1, 2):
                for statement in (1, 2):
                    for rep in (1, 2):
                        name = f"03-01-{emo:02d}-{intensity:02d}-{statement:02d}-{rep:02d}-{actor:02d}.wav"
                        tone(tmp_path / f"Actor_{actor:02d}" / name, sr=8000, seconds=0.01)
        tone(tmp_path / "songs" / f"Actor_{actor:02d}" / f"03-02-03-01-01-01-{actor:02d}.wav", sr=8000, seconds=0.01)
    scan = load_corpus("ravdess", tmp_path, progress=False)
    assert len(scan.manifest) == 1440 and scan.warnings == []
    assert [s.reason for s in scan.skipped] == [SONG] * 24


def test_not_in_corpus_reason_is_listed_but_not_counted(tmp_path: Path) -> None:
    from areaser.data.corpora.base import NotInCorpus, scan_files

    for name in ("take_angry", "extra_sad", "garbled"):
        tone(tmp_path / f"{name}.wav")

    def parse(path: Path):
        if path.stem == "extra_sad":
            return NotInCorpus("outside this corpus")
        if path.stem == "garbled":
            return "unparseable name"
        return {"utt_id": path.stem, "label": "angry", "raw_label": "angry"}

    scan = scan_files(tmp_path, "toy", parse, {"files": 2}, "toy layout", progress=False)
    assert sorted(s.reason for s in scan.skipped) == ["outside this corpus", "unparseable name"]
    assert scan.warnings == []  # one utterance + one unparseable file = the 2 expected; the extra is not counted
    assert all(type(s.reason) is str for s in scan.skipped)


# ----------------------------------------------------------------------------- 6. metadata errors name the field


def test_iemocap_malformed_label_lines_name_file_line_and_field(tmp_path: Path) -> None:
    s1 = tmp_path / "Session1"
    iemocap_utterance(s1, "Ses01F_impro01_F000", "neu")
    txt = s1 / "dialog/EmoEvaluation/Ses01F_impro01.txt"
    with open(txt, "a") as f:
        f.write("[9.0 - oops]\tSes01F_impro01_F001\tneu\t[2.0, 2.0, 2.0]\n")  # line 4
        f.write("[9.0 - 9.5]\tSes01F_impro01_F002\tneu\n")  # line 5: no V/A/D
        f.write("[9.0 - 9.5]\tSes01F_impro01_F003\t[2.0, 2.0, 2.0]\n")  # line 6: no label
        f.write("[9.0 - 9.5]\tSes01F_impro01_F004\tneu\t2.0, 2.0, 2.0\n")  # line 7: V/A/D unbracketed
    scan = load_corpus("iemocap", tmp_path, progress=False, check_silent=False)
    assert scan.warnings[:-1] == [
        f"{txt}:4: malformed label line ignored: field 'start - end time' is '[9.0 - oops]', "
        "not [<start> - <end>] in seconds",
        f"{txt}:5: malformed label line ignored: field 'V/A/D' is missing",
        f"{txt}:6: malformed label line ignored: field 'label' is missing (after utterance id 'Ses01F_impro01_F003')",
        f"{txt}:7: malformed label line ignored: field 'V/A/D' is '2.0, 2.0, 2.0', not [<V>, <A>, <D>]",
    ]


def test_generic_csv_metadata_cells_name_file_line_and_column(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        tone(tmp_path / f"{name}.wav")
    csv = put(
        tmp_path / "l.csv", b"path,label,gender,spekaer\na.wav,angry,female,s1\nb.wav,sad,unknown,s2\nc.wav,sad,M,s3\n"
    )
    scan = load_corpus("generic", csv, progress=False)
    assert list(scan.manifest["gender"]) == ["F", "", "M"]  # "unknown" is not read as "U"
    assert scan.warnings == [
        f"{csv}:1: column(s) 'spekaer' not read (areaser reads path, label, speaker, session, gender, utt_id)",
        f"{csv}:3: gender cell 'unknown' is not F, M, female or male; left empty",
    ]


@pytest.mark.parametrize(
    "corpus, name, reason",
    [
        ("ravdess", "Actor_01/03-01-09-01-01-01-01", "unparseable name: emotion field '09' is not 01-08;"),
        ("ravdess", "Actor_25/03-01-01-01-01-01-25", "unparseable name: actor field '25' is not 01-24;"),
        ("ravdess", "Actor_01/03-03-01-01-01-01-01", "unparseable name: vocal channel field '03' is not 01-02;"),
        ("emodb", "wav/99a01Fa", "unparseable name: speaker field '99' is not one of 03 08 09 10 11 12 13 14 15 16;"),
        ("emodb", "wav/03a01Xa", "unparseable name: emotion field 'X' is not one of W L E A F T N;"),
        (
            "cremad",
            "AudioWAV/1001_DFA_XYZ_XX",
            "unparseable name: emotion field 'XYZ' is not one of ANG DIS FEA HAP NEU SAD;",
        ),
        (
            "tess",
            "OAF_back_bored",
            "unparseable name: emotion field 'bored' is not one of angry disgust fear happy neutral ps sad;",
        ),
    ],
)
def test_unparseable_names_say_which_field(tmp_path: Path, corpus: str, name: str, reason: str) -> None:
    good = {"ravdess": "Actor_01/03-01-05-01-02-01-01", "emodb": "wav/03a01Wa", "cremad": "AudioWAV/1001_DFA_ANG_XX"}
    tone(tmp_path / f"{good.get(corpus, 'OAF_back_angry')}.wav")
    tone(tmp_path / f"{name}.wav")
    scan = load_corpus(corpus, tmp_path, progress=False)
    assert len(scan.skipped) == 1 and scan.skipped[0].reason.startswith(reason)

"""Issue #14: uploads bounded while they stream, audio headers bounded before decoding, non-speech refused."""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
from test_inference import CLASSES, make_random_run
from test_service import LiveServer

import areaser.io.audio as audio_mod
from areaser.io.audio import AudioError, audio_info, load_audio, stream_audio
from areaser.serve.recognizer import InferenceConfig, Recognizer
from areaser.serve.service import ServiceLimits, create_app

SR = 16_000
SHARED = Path("/work/shared/data")


def uniform(windows: np.ndarray) -> np.ndarray:
    """A backend that scores nothing: the checks under test are the recognizer's, not the model's."""
    return np.full((len(windows), len(CLASSES)), 1.0 / len(CLASSES), dtype=np.float32)


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory: pytest.TempPathFactory) -> Recognizer:
    return Recognizer.load(make_random_run(tmp_path_factory.mktemp("run") / "random-cnn"))


def tone(seconds: float, hz: float = 440.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# ----------------------------------------------------------------------------- 2: upload bounded on disk


class DiskWatch:
    """Samples, every millisecond, the bytes of the files under ``folder`` (open but deleted ones too)."""

    def __init__(self, folder: Path):
        self.folder, self.peak, self._stop = str(folder), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _size(self) -> int:
        seen: dict[tuple[int, int], int] = {}
        for root, _, names in os.walk(self.folder):
            for n in names:
                try:
                    st = os.stat(os.path.join(root, n))
                except OSError:
                    continue
                seen[(st.st_dev, st.st_ino)] = st.st_size
        for fd in os.listdir("/proc/self/fd"):  # spooled temp files are unlinked (or O_TMPFILE) while open
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith(self.folder):
                    st = os.stat(f"/proc/self/fd/{fd}")
                    seen[(st.st_dev, st.st_ino)] = st.st_size
            except OSError:
                continue
        return sum(seen.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._size())
            time.sleep(0.001)

    def __enter__(self) -> "DiskWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self._size())


def test_chunked_upload_without_length_is_stopped_at_the_limit(
    recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    limit = 256 * 1024
    sent = {"bytes": 0}
    boundary = "areaser-test-boundary"

    def body() -> Iterator[bytes]:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        yield head
        chunk = b"\x01" * 65536
        for _ in range(8 * limit // len(chunk)):  # 8x the limit, 2 MiB
            sent["bytes"] += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    with LiveServer(create_app(recognizer, ServiceLimits(max_upload_bytes=limit))) as s:
        host, port = s.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        with DiskWatch(spool) as watch:
            # an iterable body and no Content-Length: http.client sends it chunked
            conn.request(
                "POST",
                "/v1/predict",
                body=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            r = conn.getresponse()
            payload = r.read().decode()
        conn.close()
    assert r.status == 413, payload
    assert "limit" in payload and "0.2 MiB" in payload
    assert watch.peak <= limit + 64 * 1024, f"{watch.peak} bytes reached the temp folder for a {limit} byte limit"
    assert list(spool.iterdir()) == []  # nothing left behind


def test_uploads_under_the_limit_still_work_chunked(recognizer: Recognizer, tmp_path: Path) -> None:
    path = tmp_path / "speechlike.wav"
    rng = np.random.default_rng(0)
    sf.write(path, 0.1 * rng.standard_normal(SR * 2), SR)
    boundary = "b0undary"
    data = path.read_bytes()
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="other"\r\n\r\nignored\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="../../x.wav"\r\n\r\n'.encode(),
        data[:1000],
        data[1000:],
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    with LiveServer(create_app(recognizer, ServiceLimits(max_upload_bytes=len(data) + 10))) as s:
        host, port = s.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request(
            "POST",
            "/v1/predict",
            body=iter(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        r = conn.getresponse()
        got = json.loads(r.read())
        conn.close()
    assert r.status == 200, got
    assert got["source"] == "x.wav" and got["label"] in recognizer.classes
    assert got == recognizer.predict(path).to_dict() | {"source": "x.wav"}


# ----------------------------------------------------------------------------- 3: headers bounded before decoding


def patch_bytes(path: Path, offset: int, new: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(new)] = new
    path.write_bytes(bytes(raw))


def test_absurd_headers_are_refused_before_decoding(tmp_path: Path) -> None:
    many = tmp_path / "many.wav"
    sf.write(many, np.zeros((100, 40), np.float32) + 0.1, SR)
    fast = tmp_path / "fast.wav"
    sf.write(fast, 0.1 * np.ones(1000, np.float32), 768_000)
    slow = tmp_path / "slow.wav"
    sf.write(slow, 0.1 * np.ones(100, np.float32), SR, subtype="PCM_16")
    patch_bytes(slow, 24, (1).to_bytes(4, "little") + (2).to_bytes(4, "little"))  # 1 Hz, 2 bytes/s
    assert sf.info(str(slow)).samplerate == 1
    unknown = tmp_path / "unknown.flac"
    sf.write(unknown, tone(1.0), SR)
    raw = bytearray(unknown.read_bytes())
    assert raw[:4] == b"fLaC" and raw[4] & 0x7F == 0  # STREAMINFO first
    raw[8 + 13] &= 0xF0  # total samples: 4 bits of byte 13 and bytes 14..17 of STREAMINFO
    raw[8 + 14 : 8 + 18] = b"\0\0\0\0"
    unknown.write_bytes(bytes(raw))
    assert sf.info(str(unknown)).frames > 10**15  # what libsndfile makes of "length unknown"
    for path, words in [
        (many, "40 channels"),
        (fast, "768000 Hz"),
        (slow, "1 Hz"),
        (unknown, "implausible length"),
    ]:
        for read in (audio_info, load_audio, lambda p: list(stream_audio(p))):
            with pytest.raises(AudioError) as e:
                read(path)
            msg = str(e.value)
            assert words in msg and str(path) in msg and "\n" not in msg, msg
            assert "576460752303423" not in msg


def test_decoded_samples_are_bounded(recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide = tmp_path / "wide.wav"
    sf.write(wide, 0.1 * np.random.default_rng(1).standard_normal((SR, 8)), SR)  # 8 channels, 1 s
    with pytest.raises(AudioError, match="too many samples"):
        load_audio(wide, max_samples=100_000)
    # a block is bounded in samples, not only in seconds: 8 channels x 30 s at 384 kHz would be 368 MB of float32
    monkeypatch.setattr(audio_mod, "MAX_BLOCK_SAMPLES", 8 * 1000, raising=False)
    blocks = list(stream_audio(wide, sr=None, block_s=30.0))
    assert [len(b) for b in blocks] == [1000] * 16
    monkeypatch.undo()
    limits = ServiceLimits(max_samples=100_000)
    with LiveServer(create_app(recognizer, limits)) as s:
        import httpx

        with open(wide, "rb") as f:
            r = httpx.post(f"{s.url}/v1/predict", files={"file": ("wide.wav", f)}, timeout=60)
    assert r.status_code == 422 and "too many samples" in r.json()["error"], r.text
    assert "wide.wav" in r.json()["error"]


# ----------------------------------------------------------------------------- 11: not speech


def not_speech_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    t = np.arange(2 * SR) / SR
    cases = {
        "one_sample": (np.array([0.5], np.float32), "too short"),
        "tone_50ms": (tone(0.05), "too short"),
        "dc": (np.full(2 * SR, 0.3, np.float32), "constant"),
        "square": ((0.5 * np.sign(np.sin(2 * np.pi * 200 * t + 0.1))).astype(np.float32), "does not change"),
        "tone": (tone(2.0), "does not change"),
        "hum": (tone(3.0, 50.0) + 0.01 * np.random.default_rng(0).standard_normal(3 * SR), "does not change"),
    }
    out = {}
    for name, (y, words) in cases.items():
        path = tmp_path / f"{name}.wav"
        sf.write(path, y, SR, subtype="PCM_16")
        out[name] = (path, words)
    return out


def test_not_speech_is_refused_or_flagged(tmp_path: Path) -> None:
    refuse = Recognizer(uniform, CLASSES, SR, InferenceConfig(speech_check="refuse"))
    flag = Recognizer(uniform, CLASSES, SR)
    for name, (path, words) in not_speech_cases(tmp_path).items():
        with pytest.raises(AudioError) as e:
            refuse.predict(path)
        assert words in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value), name
        if words == "too short":  # refused whatever the speech check
            assert not flag.predict_many([path]).__next__().ok
        else:
            p = flag.predict(path)
            assert p.warning and words in p.warning and p.to_dict()["warning"] == p.warning, name
    # arrays go through the same checks
    with pytest.raises(AudioError, match="too short"):
        refuse.predict(np.array([0.5], np.float32))
    with pytest.raises(AudioError, match="constant"):
        refuse.predict(np.full(SR, 0.2, np.float32))


def test_service_refuses_not_speech(recognizer: Recognizer, tmp_path: Path) -> None:
    import httpx

    cases = not_speech_cases(tmp_path)
    with LiveServer(create_app(recognizer)) as s:
        for name, (path, words) in cases.items():
            with open(path, "rb") as f:
                r = httpx.post(f"{s.url}/v1/predict", files={"file": (path.name, f)}, timeout=60)
            assert r.status_code == 422, (name, r.text)
            err = r.json()["error"]
            assert words in err and err.startswith(path.name) and str(tmp_path) not in err, err


def test_synthetic_speech_passes_the_check(builtin_corpus: Path) -> None:
    import pandas as pd

    rec = Recognizer(uniform, CLASSES, SR, InferenceConfig(speech_check="refuse"))
    paths = [builtin_corpus / p for p in pd.read_csv(builtin_corpus / "manifest.csv")["path"]]
    assert len(paths) == 60
    failed = [r.error for r in rec.predict_many(paths) if not r.ok]
    assert failed == []


def real_files() -> list[Path]:
    emodb = sorted((SHARED / "emodb" / "wav").glob("*.wav"))
    ravdess = sorted((SHARED / "ravdess").rglob("*.flac"))
    # spread over speakers and emotions: every k-th file
    return emodb[:: max(1, len(emodb) // 20)][:20] + ravdess[:: max(1, len(ravdess) // 20)][:20]


@pytest.mark.skipif(not SHARED.is_dir(), reason="real corpora not present (/work/shared/data is absent)")
def test_real_speech_passes_the_check() -> None:
    paths = real_files()
    if len(paths) < 40:
        pytest.skip(f"only {len(paths)} real files under {SHARED}")
    rec = Recognizer(uniform, CLASSES, SR, InferenceConfig(speech_check="refuse"))
    results = list(rec.predict_many(paths))
    assert [r.error for r in results if not r.ok] == []
    assert all(r.warning is None for r in results)


# ----------------------------------------------------------------------------- low items


def test_nan_is_reported_as_nan_not_silent(recognizer: Recognizer, tmp_path: Path) -> None:
    import httpx

    path = tmp_path / "nan.wav"
    sf.write(path, np.full(2 * SR, np.nan, np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        recognizer.predict(path)
    with LiveServer(create_app(recognizer)) as s:
        with open(path, "rb") as f:
            r = httpx.post(f"{s.url}/v1/predict", files={"file": (path.name, f)}, timeout=60)
    assert r.status_code == 422 and "NaN or infinite" in r.json()["error"] and "silent" not in r.json()["error"]


def test_messages_print_plain_numbers() -> None:
    with pytest.raises(ValueError) as e:
        ServiceLimits(max_upload_bytes=np.int64(0), max_duration_s=np.float64(2.5), max_workers=np.int64(1))
    assert "np." not in str(e.value) and "max_duration_s=2.5" in str(e.value)
    for bad in [
        {"decision": np.str_("median")},
        {"win_s": np.float64(0.0)},
        {"silence_db": np.float64(3.0)},
        {"batch_size": np.int64(0)},
    ]:
        with pytest.raises(ValueError) as e:
            InferenceConfig(**bad)
        assert "np." not in str(e.value), str(e.value)


def test_cli_predict_shows_the_not_speech_warning_on_screen_and_in_the_csv(tiny_run: Path, tmp_path: Path) -> None:
    """``areaser predict`` scores a steady tone (``speech_check="flag"``) but says so: stderr and the CSV."""
    import pandas as pd
    from typer.testing import CliRunner

    from areaser.cli.app import app

    t = np.arange(32000) / 16000
    tone = tmp_path / "tone.wav"
    sf.write(str(tone), 0.3 * np.sin(2 * np.pi * 440 * t), 16000, subtype="PCM_16")
    runner = CliRunner()
    r = runner.invoke(app, ["predict", str(tiny_run), str(tone), "--no-progress"])
    assert r.exit_code == 0 and "warning:" in r.stderr and "not speech" in r.stderr
    out = tmp_path / "out.csv"
    r = runner.invoke(app, ["predict", str(tiny_run), str(tone), "-o", str(out), "--no-progress"])
    assert r.exit_code == 0
    assert str(pd.read_csv(out).loc[0, "warning"]).startswith("not speech")

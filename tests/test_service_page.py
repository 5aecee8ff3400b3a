"""The page tells the truth (#16): the model and its training corpus, the timeline as window spans over the whole
file, live emotion over a WebSocket (``/v1/listen``), in starlette's test client and in headless Chromium."""

from __future__ import annotations

import base64
import gc
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from test_service import CHROMIUM, Chromium, LiveServer  # the page's DevTools driver and the uvicorn thread

from areaser.serve.recognizer import Recognizer
from areaser.serve.service import ServiceLimits, create_app

# Screenshots go to the test's folder; `AREASER_SCREENSHOTS=docs pytest tests/test_service_page.py` writes the
# README's (docs/serve-page.png, docs/serve-page-phone.png) instead: a test run never changes the repository.
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _shots(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("AREASER_SCREENSHOTS") == "docs" else tmp_path


EMODB = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb" / "wav"
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (/usr/bin/chromium): apt-get install chromium"
)


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> Path:
    return tiny_run


@pytest.fixture(scope="module")
def recognizer(model: Path) -> Recognizer:
    return Recognizer.load(model)


@pytest.fixture(scope="module")
def speech(builtin_corpus: Path) -> np.ndarray:
    """About 10 s of the built-in corpus's speech, 16 kHz int16."""
    df = pd.read_csv(builtin_corpus / "manifest.csv")
    parts = [sf.read(str(builtin_corpus / p), dtype="int16")[0] for p in df["path"][:2]]
    return np.concatenate(parts)


def _frames(x: np.ndarray, n: int = 1600):
    for i in range(0, len(x), n):
        yield x[i : i + n].astype("<i2").tobytes()


# ----------------------------------------------------------------------------- /v1/model and /v1/listen


def test_model_endpoint_names_the_training_corpus(model: Path, recognizer: Recognizer) -> None:
    with TestClient(create_app(model)) as client:
        m = client.get("/v1/model").json()
        assert m["model"] == "m" and m["classes"] == list(recognizer.classes) and m["sample_rate"] == 16000
        assert m["corpus"] == "iemocap (synthetic)" and m["synthetic"] is True
        assert m["provenance"]["protocol"] and "manifest" not in m["provenance"]  # no server paths
        assert any("synthetic" in n for n in m["notes"])
        assert client.get("/healthz").json()["live_streams"] == 0
    # a Recognizer without its run directory: the page says "unknown", it does not guess
    with TestClient(create_app(recognizer)) as client:
        m = client.get("/v1/model").json()
        assert m["corpus"] is None and m["synthetic"] is None and m["provenance"] is None


@pytest.mark.slow  # a served process and an exported folder: 15 s
def test_the_served_command_and_a_pretrained_folder_name_the_training_corpus(model: Path, tmp_path: Path) -> None:
    """`areaser serve RUN` (the command, a real process) and a pretrained folder say what the model learnt from."""
    import socket
    import subprocess
    import sys

    from areaser.serve.pretrained import export_pretrained

    folder = export_pretrained(model, tmp_path / "hub")
    with TestClient(create_app(folder)) as client:  # no report.json there: config.json's training facts
        m = client.get("/v1/model").json()
        assert m["corpus"] == "iemocap (synthetic)" and m["synthetic"] is True and "manifest" not in m["provenance"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    areaser = str(Path(sys.executable).parent / "areaser")
    proc = subprocess.Popen(
        [areaser, "serve", str(model), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                m = httpx.get(f"http://127.0.0.1:{port}/v1/model", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert m["corpus"] == "iemocap (synthetic)" and m["synthetic"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_listen_turns_pcm_frames_into_json_updates(recognizer: Recognizer, speech: np.ndarray) -> None:
    from areaser.serve.live import Listener

    app = create_app(recognizer)
    audio = np.concatenate([speech[: 2 * 16000], np.zeros(int(2.5 * 16000), np.int16)])  # speech, then silence
    want = Listener(recognizer, every_s=0.5).feed(audio)
    got = []
    with TestClient(app) as client:
        with client.websocket_connect("/v1/listen") as ws:
            assert app.state.live_streams == 1 and len(app.state.listeners) == 1
            for frame in _frames(audio):
                ws.send_bytes(frame)
            while len(got) < len(want):
                got.append(ws.receive_json())
        deadline = time.monotonic() + 10
        while app.state.live_streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.live_streams == 0
    assert [u["time_s"] for u in got] == [0.5 * k for k in range(1, 10)]
    assert got == [u.to_dict() for u in want]  # the same updates as the Listener fed directly
    assert got[1]["voiced"] and not got[-1]["voiced"]  # the last window is all silence: no speech, no label
    for u in got:
        assert (u["label"] in recognizer.classes) if u["voiced"] else (u["label"] is None)
    gc.collect()
    assert len(app.state.listeners) == 0  # no Listener (nor its buffers) outlives its stream


def test_listen_limits_streams_duration_and_frames(recognizer: Recognizer, speech: np.ndarray) -> None:
    app = create_app(recognizer, ServiceLimits(max_streams=1, max_stream_s=1.0))
    with TestClient(app) as client:
        with client.websocket_connect("/v1/listen") as first:
            with client.websocket_connect("/v1/listen") as extra:
                with pytest.raises(WebSocketDisconnect) as refused:
                    extra.receive_json()
            assert refused.value.code == 1013 and "too many live streams" in refused.value.reason
            for frame in _frames(speech[: 2 * 16000]):  # 2 s > the 1 s a stream may last
                first.send_bytes(frame)
            assert [first.receive_json()["time_s"] for _ in range(2)] == [0.5, 1.0]
            with pytest.raises(WebSocketDisconnect) as ended:
                first.receive_json()
            assert ended.value.code == 1000 and "limit of 1 s" in ended.value.reason
        for send, code in [(lambda ws: ws.send_text("hello"), 1003), (lambda ws: ws.send_bytes(b"abc"), 1007)]:
            with client.websocket_connect("/v1/listen") as ws:
                send(ws)
                with pytest.raises(WebSocketDisconnect) as bad:
                    ws.receive_json()
                assert bad.value.code == code and bad.value.reason
        # a client that sends nothing holds its slot no longer than the stream limit, in wall-clock time
        with client.websocket_connect("/v1/listen") as idle:
            t0 = time.monotonic()
            with pytest.raises(WebSocketDisconnect) as quiet:
                idle.receive_json()
            assert quiet.value.code == 1000 and 0.8 < time.monotonic() - t0 < 5
        deadline = time.monotonic() + 10
        while app.state.live_streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.live_streams == 0


# ----------------------------------------------------------------------------- the page in Chromium


def _speech_wav(builtin_corpus: Path, path: Path, seconds: float = 12.0) -> Path:
    """Real speech (EmoDB) when ../shared/data has it, else the built-in corpus: ``seconds`` of it, 16 kHz."""
    files = sorted(EMODB.glob("*.wav"))[:8] if EMODB.is_dir() else []
    if not files:
        df = pd.read_csv(builtin_corpus / "manifest.csv")
        files = [builtin_corpus / p for p in df["path"][:4]]
    parts = [sf.read(str(f), dtype="float32")[0] for f in files]
    y = np.concatenate(parts)[: int(seconds * 16000)]
    sf.write(str(path), y, 16000, subtype="PCM_16")
    return path


class _Page:
    """One tab of a Chromium (fed ``audio`` as its microphone) on ``url``."""

    def __init__(self, tmp: Path, audio: Path, url: str):
        flags = (*Chromium.FLAGS, f"--use-file-for-fake-audio-capture={audio}")
        self.browser = type("FileMicChromium", (Chromium,), {"FLAGS": flags})(CHROMIUM, tmp / "profile")
        target = self.browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.sid = self.browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.width(1280)
        self.send("Page.navigate", {"url": url})
        self.wait("document.readyState === 'complete' && document.getElementById('model-name').textContent !== '…'")

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.sid)

    def js(self, expr: str):  # noqa: ANN201
        reply = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")

    def wait(self, expr: str, timeout: float = 30):  # noqa: ANN201
        deadline = time.monotonic() + timeout
        while not (value := self.js(expr)):
            assert time.monotonic() < deadline, f"timed out waiting for {expr}"
            time.sleep(0.05)
        return value

    def width(self, px: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": px, "height": 900, "deviceScaleFactor": 1, "mobile": px < 600},
        )
        time.sleep(0.3)  # the page redraws its plots for the new width

    def screenshot(self, path: Path) -> None:
        h = self.js("document.documentElement.scrollHeight")
        w = self.js("document.documentElement.clientWidth")
        shot = self.send(
            "Page.captureScreenshot",
            {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}},
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.browser.close()


def _layout_is_readable(page: _Page, width: int) -> None:
    assert page.js("document.documentElement.scrollWidth") <= width  # nothing sticks out sideways
    # each value (a probability, a class name) on one line
    lines = page.js("[...document.querySelectorAll('#bars span')].map((e) => e.getClientRects().length)")
    heights = page.js("[...document.querySelectorAll('#bars span')].map((e) => e.getBoundingClientRect().height)")
    assert lines and set(lines) == {1} and max(heights) < 30, heights
    # the plot is drawn at its own pixel size, so its 11 px text is 11 px on the screen
    vb, cw = page.js("((t) => [t.viewBox.baseVal.width, t.clientWidth])(document.getElementById('timeline'))")
    assert abs(vb - cw) <= 1 and cw <= width


@needs_chromium
def test_page_shows_the_model_spans_and_a_fresh_recording(
    model: Path, recognizer: Recognizer, builtin_corpus: Path, tmp_path: Path
) -> None:
    # speech, 4 s of silence, speech: with "skip silence" the windows in the middle are not scored; 10.16 s: the
    # last window is pulled back to end at the file's end, off the hop grid
    sr = 16000
    y = sf.read(str(_speech_wav(builtin_corpus, tmp_path / "speech.wav", 8.0)), dtype="float32")[0]
    upload = tmp_path / "speech-pause-speech.wav"
    sf.write(str(upload), np.concatenate([y[: 3 * sr], np.zeros(4 * sr, np.float32), y[3 * sr : 6 * sr + 2500]]), sr)
    want = recognizer.with_config(silence_db=-50).predict(upload)
    assert want.skipped > 0
    with LiveServer(create_app(model)) as server:
        page = _Page(tmp_path, tmp_path / "speech.wav", f"{server.url}/")
        try:
            # the model card: name, classes, corpus, and the synthetic warning in plain sight
            assert page.js("document.getElementById('model-name').textContent") == "m"
            assert page.js("document.getElementById('model-classes').textContent") == ", ".join(recognizer.classes)
            assert "iemocap (synthetic)" in page.js("document.getElementById('model-corpus').textContent")
            note = page.js(
                "(({ hidden, textContent, offsetHeight }) => [hidden, textContent, offsetHeight])"
                "(document.getElementById('synthetic-note'))"
            )
            assert note[0] is False and "say nothing about real emotion" in " ".join(note[1].split()) and note[2] > 0

            page.js("document.getElementById('send').click()")  # no file yet: an error to be cleared later
            assert "Choose an audio file" in page.js("document.getElementById('status').textContent")
            root = page.send("DOM.getDocument")["root"]["nodeId"]
            node = page.send("DOM.querySelector", {"nodeId": root, "selector": "#file"})["nodeId"]
            page.send("DOM.setFileInputFiles", {"files": [str(upload)], "nodeId": node})
            page.js("document.getElementById('skip-silence').checked = true; document.getElementById('send').click()")
            page.wait("!document.getElementById('result').hidden")
            assert page.js("document.getElementById('status').textContent") == ""
            assert page.js("document.getElementById('emotion').textContent") == want.label
            assert page.js("document.getElementById('source').textContent") == upload.name
            # one span per scored window, over the whole file: x is seconds from 0 to the file's duration
            spans = page.js("[...document.querySelectorAll('#timeline rect.window title')].map((t) => t.textContent)")
            assert len(spans) == len(want.timeline)
            assert spans[0].startswith("0.0-2.0 s") and spans[-1].startswith(f"{want.timeline[-1].start_s:.1f}-")
            assert "silence" in page.js("[...document.querySelectorAll('#timeline text')].map((t) => t.textContent)")
            ticks = page.js("[...document.querySelectorAll('#timeline text')].map((t) => t.textContent)")
            assert "0 s" in ticks and any(t.startswith("10") for t in ticks)  # 10 s: the file is 10 s long
            # the curves break at the skipped stretch: two runs per class
            assert page.js("document.querySelectorAll('#timeline polyline').length") == 2 * len(recognizer.classes)
            _layout_is_readable(page, 1280)
            page.screenshot(_shots(tmp_path) / "serve-page.png")
            page.width(375)
            _layout_is_readable(page, 375)
            page.screenshot(_shots(tmp_path) / "serve-page-phone.png")
            page.width(1280)

            # a recording: the old result, file name and errors go at once; it is named "recording (N s)"
            page.js("document.getElementById('record').click()")
            page.wait("document.getElementById('record').textContent === 'Stop'")
            stale = "['result', 'file', 'emotion', 'status', 'source'].map((id) => document.getElementById(id))"
            assert page.js(
                f"(([r, f, e, s, n]) => [r.hidden, f.value, e.textContent, s.textContent, n.textContent])({stale})"
            ) == [True, "", "", "", ""]
            time.sleep(2.2)
            page.js("document.getElementById('record').click()")
            page.wait("!document.getElementById('result').hidden || document.getElementById('status').className")
            source = page.js("document.getElementById('source').textContent")
            assert source.startswith("recording (") and source.endswith(" s)"), source
            assert page.js("document.getElementById('emotion').textContent") in recognizer.classes
        finally:
            page.close()


@needs_chromium
def test_live_page_streams_the_microphone(model: Path, recognizer: Recognizer, builtin_corpus: Path, tmp_path):
    # the fake microphone: 2.5 s of speech, 2.5 s of silence, speech
    y = sf.read(str(_speech_wav(builtin_corpus, tmp_path / "speech.wav")), dtype="float32")[0]
    audio = tmp_path / "mic.wav"
    sf.write(str(audio), np.concatenate([y[:40000], np.zeros(40000, np.float32), y[40000:]]), 16000)
    app = create_app(model)
    with LiveServer(app) as server:
        page = _Page(tmp_path, audio, f"{server.url}/")
        try:
            page.js("document.getElementById('live').click()")
            page.wait("document.getElementById('live-status').textContent.includes('updates')")
            assert httpx.get(f"{server.url}/healthz").json()["live_streams"] == 1
            labels, sizes = set(), []
            t0 = time.monotonic()
            while time.monotonic() - t0 < 5.0:
                labels.add(page.js("document.getElementById('live-label').textContent"))
                sizes.append(page.js("document.querySelectorAll('#live-timeline rect').length"))
                time.sleep(0.25)
            assert labels <= {*recognizer.classes, "(no speech)", "…"}, labels
            assert labels & set(recognizer.classes), labels  # speech was heard and labelled
            assert "(no speech)" in labels, labels  # and the silence was said to be silence
            assert sizes[-1] > sizes[0] >= 0  # the running timeline grows
            n = page.js("live.updates.length")
            assert 8 <= n <= 16, n  # an update every 0.5 s of audio (about 6 s listened)
            page.screenshot(tmp_path / "live.png")
            page.width(375)
            page.screenshot(tmp_path / "live-phone.png")
            page.width(1280)
            page.js("document.getElementById('live').click()")  # stop
            assert page.js("document.getElementById('live').textContent") == "Live"
            deadline = time.monotonic() + 10
            while app.state.live_streams and time.monotonic() < deadline:
                time.sleep(0.05)
            assert app.state.live_streams == 0  # the stop closed the socket
            gc.collect()
            assert len(app.state.listeners) == 0
            assert page.js("document.getElementById('live-status').textContent") == "stopped"
        finally:
            page.close()

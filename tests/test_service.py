"""The HTTP service on a real uvicorn server on a loopback port, and its web page in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import uvicorn
from test_inference import make_random_run  # one helper for the three test files

from areaser.serve.recognizer import Recognizer
from areaser.serve.service import ServiceLimits, create_app

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 at an ephemeral port, in a thread."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory: pytest.TempPathFactory) -> Recognizer:
    return Recognizer.load(make_random_run(tmp_path_factory.mktemp("run") / "random-cnn"))


@pytest.fixture(scope="module")
def server(recognizer: Recognizer):
    with LiveServer(create_app(recognizer)) as s:
        yield s


@pytest.fixture(scope="module")
def corpus_files(builtin_corpus: Path) -> list[Path]:
    df = pd.read_csv(builtin_corpus / "manifest.csv")
    return [builtin_corpus / p for p in df["path"][:8]]


def test_healthz_and_page(server: LiveServer, recognizer: Recognizer) -> None:
    r = httpx.get(f"{server.url}/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["classes"] == list(recognizer.classes)
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="emotion"' in page.text and "v1/predict" in page.text and "MediaRecorder" in page.text
    assert "http://" not in page.text.replace('"http://www.w3.org/2000/svg"', "")  # no CDN: works offline
    missing = httpx.get(f"{server.url}/nope")
    assert missing.status_code == 404 and "error" in missing.json()


def test_predict_matches_python_api(server: LiveServer, recognizer: Recognizer, corpus_files: list[Path]) -> None:
    path = corpus_files[0]
    with open(path, "rb") as f:
        r = httpx.post(f"{server.url}/v1/predict", files={"file": (path.name, f, "audio/wav")}, timeout=60)
    assert r.status_code == 200, r.text
    got, want = r.json(), recognizer.predict(path).to_dict()
    assert got["source"] == path.name
    assert got["label"] == want["label"] and got["label"] in recognizer.classes
    assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert len(got["timeline"]) == len(want["timeline"]) >= 1
    assert got["timeline"][-1]["end_s"] == pytest.approx(sf.info(str(path)).duration, abs=1e-3)
    with open(path, "rb") as f:
        short = httpx.post(f"{server.url}/v1/predict?timeline=false", files={"file": (path.name, f)}, timeout=60)
    assert short.status_code == 200 and "timeline" not in short.json()
    with open(path, "rb") as f:
        hop = httpx.post(
            f"{server.url}/v1/predict?hop_s=1.0&silence_db=-90", files={"file": (path.name, f)}, timeout=60
        )
    assert hop.status_code == 200
    assert hop.json() == recognizer.with_config(hop_s=1.0, silence_db=-90).predict(path).to_dict() | {
        "source": path.name
    }
    with open(path, "rb") as f:
        bad = httpx.post(f"{server.url}/v1/predict?hop_s=0&silence_db=3", files={"file": (path.name, f)}, timeout=60)
    assert bad.status_code == 422 and "hop_s" in bad.json()["error"] and "silence_db" in bad.json()["error"]


def test_refusals_are_4xx_with_one_line_json(recognizer: Recognizer, tmp_path: Path, rng: np.random.Generator) -> None:
    limits = ServiceLimits(max_upload_bytes=100_000, max_duration_s=2.5, max_workers=1)
    sr = 8_000
    ok = tmp_path / "ok.wav"
    sf.write(ok, 0.1 * rng.standard_normal(sr * 2), sr)  # 2 s, 32 kB
    big = tmp_path / "big.wav"
    sf.write(big, 0.1 * rng.standard_normal(sr * 30), sr)  # 480 kB: refused from Content-Length
    just_over = tmp_path / "just_over.wav"
    sf.write(just_over, 0.1 * rng.standard_normal(60_000), sr)  # 120 kB: refused after reading
    long = tmp_path / "long.flac"
    sf.write(long, 0.1 * rng.standard_normal(sr * 4), sr)  # small file, 4 s > 2.5 s
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(sr), sr)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with LiveServer(create_app(recognizer, limits)) as s:

        def post(path: Path) -> httpx.Response:
            with open(path, "rb") as f:
                return httpx.post(f"{s.url}/v1/predict", files={"file": (path.name, f)}, timeout=60)

        assert post(ok).status_code == 200
        for path, status, words in [
            (big, 413, "limit"),
            (just_over, 413, "limit"),
            (text, 415, "not a readable audio file"),
            (long, 422, "4.0 s long"),
            (silent, 422, "silent"),
        ]:
            r = post(path)
            assert r.status_code == status, (path.name, r.text)
            err = r.json()["error"]
            assert words in err and "\n" not in err and str(tmp_path) not in err
        no_file = httpx.post(f"{s.url}/v1/predict", files={"other": ("a.wav", b"x")})
        assert no_file.status_code == 422 and "field 'file'" in no_file.json()["error"]
        raw = httpx.post(f"{s.url}/v1/predict", content=ok.read_bytes(), headers={"content-type": "audio/wav"})
        assert raw.status_code == 415 and "multipart" in raw.json()["error"]


def test_concurrent_requests_do_not_block_the_loop(server: LiveServer, corpus_files: list[Path]) -> None:
    """Eight uploads at once all come back right, and /healthz answers while they are scored."""
    sequential = []
    for path in corpus_files:
        with open(path, "rb") as f:
            sequential.append(httpx.post(f"{server.url}/v1/predict", files={"file": (path.name, f)}, timeout=60).json())

    async def run() -> tuple[list[dict], list[str]]:
        finished: list[str] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:

            async def predict(path: Path) -> dict:
                r = await client.post("/v1/predict", files={"file": (path.name, path.read_bytes())})
                finished.append("predict")
                return r.json()

            async def health() -> None:
                await asyncio.sleep(0.05)  # let the uploads go first
                assert (await client.get("/healthz")).status_code == 200
                finished.append("healthz")

            results = await asyncio.gather(*(predict(p) for p in corpus_files), health())
        return list(results[:-1]), finished

    results, finished = asyncio.run(run())
    assert [r["label"] for r in results] == [r["label"] for r in sequential]
    for got, want in zip(results, sequential):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    # with a blocked event loop /healthz could only finish after the last upload was scored
    assert finished.index("healthz") < len(finished) - 1


# ----------------------------------------------------------------------------- the page in Chromium


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``)."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--remote-debugging-pipe",
        # a synthetic microphone (a beep), granted without a prompt: the recording path runs too
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
    )

    def __init__(self, exe: str, user_data_dir: Path):
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def child_fds() -> None:  # the browser reads commands on fd 3 and writes replies on fd 4
            a, b = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, *self.FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._id, self._buf = 0, b""

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._id += 1
        msg: dict = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:  # skip events until our reply
            while b"\0" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._r], [], [], left)[0]:
                    raise TimeoutError(f"Chromium did not answer {method}")
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (/usr/bin/chromium): apt-get install chromium")
def test_page_uploads_a_file_and_records_from_the_microphone(
    server: LiveServer, recognizer: Recognizer, corpus_files: list[Path], tmp_path: Path
) -> None:
    path = corpus_files[1]
    want = recognizer.predict(path)
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

        def js(expr: str):  # noqa: ANN202
            return browser.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, sid)["result"].get(
                "value"
            )

        def shown() -> tuple[str, str, str, int]:
            deadline = time.monotonic() + 60
            while True:
                emotion, status, summary, lines = js(
                    "[document.getElementById('emotion').textContent, document.getElementById('status').textContent,"
                    " document.getElementById('summary').textContent,"
                    " document.querySelectorAll('#timeline polyline').length]"
                )
                if (
                    (emotion and not js("document.getElementById('result').hidden"))
                    or "error" in status.lower()
                    or time.monotonic() > deadline
                ):
                    return emotion, status, summary, lines
                time.sleep(0.1)

        browser.send("Page.navigate", {"url": f"{server.url}/"}, sid)
        deadline = time.monotonic() + 30
        while js("document.readyState") != "complete" or js("!!document.getElementById('send')") is not True:
            assert time.monotonic() < deadline, "page did not load"
            time.sleep(0.05)

        # upload a corpus file: the page shows what the API says
        root = browser.send("DOM.getDocument", {}, sid)["root"]["nodeId"]
        node = browser.send("DOM.querySelector", {"nodeId": root, "selector": "#file"}, sid)["nodeId"]
        browser.send("DOM.setFileInputFiles", {"files": [str(path)], "nodeId": node}, sid)
        js("document.getElementById('send').click()")
        emotion, status, summary, lines = shown()
        assert emotion == want.label, f"page shows {emotion!r}, status {status!r}"
        assert lines == len(recognizer.classes)  # one timeline curve per class
        assert f"{len(want.timeline)} windows" in summary

        # record about 2.5 s from the (fake) microphone: encoded as WAV in the page, scored by the server
        js("document.getElementById('emotion').textContent = ''")  # forget the upload's answer
        js("document.getElementById('record').click()")
        time.sleep(2.5)
        assert js("document.getElementById('record').textContent") == "Stop"
        js("document.getElementById('record').click()")
        emotion, status, summary, lines = shown()
        assert emotion in recognizer.classes, f"status {status!r}"
        assert 1.5 < float(summary.split(" s of audio")[0]) < 10
        shot = browser.send("Page.captureScreenshot", {}, sid)["data"]
        (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
    finally:
        browser.close()

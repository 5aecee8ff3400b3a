"""HTTP service: the recognizer behind a small FastAPI app with a web page.

``create_app(model_dir)`` builds the app; ``areaser serve MODEL`` runs it with uvicorn.

=================  ===========================================================================
``GET /``          a page to upload a file or record from the microphone; shows the emotion,
                   the probabilities and a timeline plot (``web/index.html``, no CDN)
``GET /healthz``   ``{"status": "ok", "model": ..., "classes": [...], "live_streams": n, ...}``
``GET /v1/model``  what the model is: name, classes, window, and where it was trained (the
                   ``provenance`` of the run's ``report.json``: corpus, synthetic or not, label
                   set, protocol; ``null`` when no report is beside the model) with its ``notes``
``POST /v1/predict``  multipart form, audio file in field ``file`` -> the JSON of
                   :meth:`areaser.serve.recognizer.Prediction.to_dict`; query options
                   ``timeline=false`` (leave the per-window timeline out), ``hop_s`` (0.1-10),
                   ``silence_db`` (skip windows below this level, e.g. -50), ``vad=true|false``
                   (voice activity detection; default ``areaser serve --vad``)
``WS /v1/listen``  live emotion: the client sends binary frames of **16-bit little-endian mono PCM
                   at the model's rate** (``sample_rate`` of ``/v1/model``, 16000; whole samples,
                   at most 5 s a frame); the server answers one JSON text frame per update, every
                   0.5 s of audio: :meth:`areaser.serve.live.Update.to_dict` (``time_s``, ``voiced``,
                   ``label``/``probabilities`` smoothed over the last updates, ``null`` while no
                   speech is heard). At most ``max_streams`` at once: one more is closed with code
                   1013; a stream ends after ``max_stream_s`` (audio or wall-clock time, code 1000
                   with a reason); a text frame is closed with 1003, an odd-sized frame with 1007,
                   a too large one with 1009
=================  ===========================================================================

Every refusal is a 4xx answer with ``{"error": "<one line>"}``: 413 upload too large (counted while
the body streams in, with or without Content-Length: no more than the limit ever reaches the disk),
415 not audio, a damaged header (absurd channels, rate or length) or not a multipart upload, 422
audio the model cannot score (too long, too many samples to decode, shorter than 0.25 s, silent,
NaN/infinite, or not speech: a constant value, a steady tone or periodic wave; with voice activity
detection: no speech found, or less voiced speech than ``min_speech_s``).
Decoding and inference run in worker threads (at most ``max_workers`` at once, the rest wait
in line), so the event loop keeps answering while recordings are scored.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import weakref
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from areaser import __version__
from areaser.core.errors import AreaserError
from areaser.io.audio import AudioError, audio_info, check_limits
from areaser.runs.provenance import corpus_text, notes
from areaser.serve.live import Listener
from areaser.serve.pretrained import is_pretrained
from areaser.serve.recognizer import Recognizer

__all__ = ["ServiceLimits", "create_app", "serve"]

# multipart framing around the file (boundaries, part headers) tolerated on top of the file limit
_MULTIPART_SLACK = 64 * 1024
# the longest binary frame /v1/listen takes, in seconds of audio (a client sends ~0.1 s at a time)
_MAX_FRAME_S = 5.0
_LIVE_EVERY_S = 0.5


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask.

    ``max_upload_bytes``: the uploaded file's size (413 above it); ``max_duration_s``: the audio's duration from
    its header (422 above it); ``max_samples``: samples to decode, frames x channels from the header (422 above it;
    the default is 600 s of 48 kHz stereo); ``max_workers``: recordings scored at the same time (more requests wait
    in line, the loop stays free); ``max_streams``: live microphone streams (``/v1/listen``) open at once (one
    more is closed with code 1013); ``max_stream_s``: how long one live stream may last, in audio received and in
    wall-clock time (then it is closed with code 1000 and a reason saying so).
    """

    max_upload_bytes: int = 25 * 1024 * 1024
    max_duration_s: float = 600.0
    max_workers: int = 2
    max_samples: int = 600 * 48_000 * 2
    max_streams: int = 4
    max_stream_s: float = 600.0

    def __post_init__(self) -> None:
        if (
            self.max_upload_bytes < 1
            or not self.max_duration_s > 0
            or self.max_workers < 1
            or self.max_samples < 1
            or self.max_streams < 1
            or not self.max_stream_s > 0
        ):
            plain = ", ".join(f"{k}={float(v):g}" for k, v in asdict(self).items())
            raise ValueError(f"limits must be positive, got {plain}")


class ApiError(AreaserError):
    """A refusal: HTTP ``status`` and a one-line ``message`` for ``{"error": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(
    model: str | os.PathLike | Recognizer,
    limits: ServiceLimits = ServiceLimits(),
    *,
    backend: Literal["torch", "onnx"] = "torch",
    onnx_path: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
) -> FastAPI:
    """Build the FastAPI app for a run directory (or a ready :class:`Recognizer`).

    ``run_dir``: the run directory whose ``report.json`` says what the model was trained on (``GET /v1/model``
    and the page show it); by default ``model`` itself when it is a path.
    """
    recognizer = (
        model if isinstance(model, Recognizer) else Recognizer.load(model, backend=backend, onnx_path=onnx_path)
    )
    if run_dir is None and not isinstance(model, Recognizer):
        run_dir = model
    about = _model_info(recognizer, run_dir)
    workers = anyio.CapacityLimiter(limits.max_workers)
    page = resources.files("areaser.serve").joinpath("web/index.html").read_text(encoding="utf-8")
    app = FastAPI(title="areaser", version=__version__, summary="Speech emotion recognition")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = []
        for err in e.errors():
            where = err.get("loc", ())
            if where[:1] == ("body",):
                if not request.headers.get("content-type", "").startswith("multipart/form-data"):
                    return JSONResponse(
                        {"error": "send the audio as multipart/form-data in field 'file'"}, status_code=415
                    )
                problems.append("no audio file: put it in the form field 'file'")
            else:
                problems.append(f"{where[-1]}: {err.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(dict.fromkeys(problems))}, status_code=422)

    @app.middleware("http")
    async def _refuse_large_bodies(request: Request, call_next):
        # answer 413 from the header, before a large body is received and spooled
        length = request.headers.get("content-length", "")
        if (
            request.url.path == "/v1/predict"
            and length.isdigit()
            and int(length) > limits.max_upload_bytes + _MULTIPART_SLACK
        ):
            return JSONResponse({"error": _too_large(int(length), limits)}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {
            "status": "ok",
            "model": recognizer.name,
            "backend": getattr(recognizer.backend, "name", type(recognizer.backend).__name__),
            "classes": list(recognizer.classes),
            "sample_rate": recognizer.sr,
            "limits": asdict(limits),
            "live_streams": app.state.live_streams,
            "version": __version__,
        }

    @app.get("/v1/model")
    async def model_info() -> dict:
        return about

    live_workers = anyio.CapacityLimiter(limits.max_streams)

    @app.websocket("/v1/listen")
    async def listen(websocket: WebSocket) -> None:

        await websocket.accept()
        if app.state.live_streams >= limits.max_streams:
            await _close(websocket, 1013, f"too many live streams: the limit is {limits.max_streams}, try again later")
            return
        app.state.live_streams += 1
        listener = None
        try:
            listener = Listener(recognizer, every_s=_LIVE_EVERY_S)
            app.state.listeners.add(listener)
            await _stream(websocket, listener, recognizer.sr, limits, live_workers)
        finally:
            app.state.live_streams -= 1
            listener = None  # the listener and its ring buffer go with the connection

    @app.post("/v1/predict", openapi_extra=_UPLOAD_SCHEMA)
    async def predict(
        request: Request,
        timeline: bool = Query(True, description="include the per-window timeline"),
        hop_s: Optional[float] = Query(
            None, ge=0.1, le=10.0, description="hop between 2 s windows (default: the model's)"
        ),
        silence_db: Optional[float] = Query(
            None, ge=-120.0, lt=0.0, description="skip windows below this RMS level, dBFS"
        ),
        vad: Optional[bool] = Query(
            None,
            description="voice activity detection: 422 'no speech found' / 'too short' without enough voiced "
            "speech, unvoiced windows skipped (default: the server's, `areaser serve --vad`)",
        ),
    ) -> dict:
        rec = recognizer.with_config(
            hop_s=hop_s or recognizer.config.hop_s,
            silence_db=silence_db,
            speech_check="refuse",
            vad=recognizer.config.vad if vad is None else vad,
        )
        with tempfile.TemporaryDirectory(prefix="areaser-upload-") as tmp:
            # the body is read here, counted as it streams in, and only the file's bytes reach the disk
            path, name = await _receive_upload(request, Path(tmp), limits)
            # decoding and scoring run in a worker thread
            return await anyio.to_thread.run_sync(_score, rec, path, name, limits, timeline, limiter=workers)

    app.state.recognizer = recognizer
    app.state.limits = limits
    app.state.live_streams = 0
    app.state.listeners = weakref.WeakSet()  # the live streams' Listener objects, for tests: none outlive a stream
    return app


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code, reason)
    except (RuntimeError, OSError, WebSocketDisconnect):  # the client has gone already
        pass


async def _stream(
    websocket: WebSocket,
    listener,
    sr: int,
    limits: ServiceLimits,
    workers: anyio.CapacityLimiter,  # noqa: ANN001
) -> None:
    """Feed a live stream's PCM frames to ``listener``, answering each update as a JSON text frame."""
    max_samples = int(limits.max_stream_s * sr)
    limit = f"the stream reached its limit of {float(limits.max_stream_s):g} s"
    deadline = anyio.current_time() + limits.max_stream_s
    try:
        while True:
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as scope:
                msg = await websocket.receive()
            if scope.cancelled_caught:
                return await _close(websocket, 1000, limit)
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes")
            if data is None:
                return await _close(websocket, 1003, "send binary frames of 16-bit little-endian mono PCM")
            if len(data) > 2 * _MAX_FRAME_S * sr:
                return await _close(websocket, 1009, f"a frame holds more than {_MAX_FRAME_S:g} s of audio")
            if len(data) % 2:
                return await _close(websocket, 1007, "a frame of an odd number of bytes is not 16-bit PCM")
            samples = np.frombuffer(data, dtype="<i2")[: max(0, max_samples - listener.n)]
            updates = await anyio.to_thread.run_sync(listener.feed, samples, limiter=workers)
            for u in updates:
                await websocket.send_text(json.dumps(u.to_dict()))
            if listener.n >= max_samples:
                return await _close(websocket, 1000, limit)
    except WebSocketDisconnect:
        return


def _model_info(recognizer: Recognizer, run_dir: str | os.PathLike | None) -> dict:
    """What ``GET /v1/model`` says: the model, its classes and window, and its run's provenance and notes.

    The provenance is the ``provenance`` of ``run_dir/report.json`` (for an ONNX file: of the ``report.json`` in
    its folder, when that report names the same classes); ``None`` when there is none to read.
    """
    report: dict = {}
    if run_dir is not None:
        where = Path(run_dir)
        path = where / "report.json" if where.is_dir() else where.parent / "report.json"
        try:
            report = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            report = {}
        if not isinstance(report, dict) or (not where.is_dir() and report.get("classes") != list(recognizer.classes)):
            report = {}
        if not report and where.is_dir():  # a pretrained folder: its config.json carries the run's facts
            try:
                training = json.loads((where / "config.json").read_text(encoding="utf-8"))["training"]
                report = training if is_pretrained(where) and isinstance(training, dict) else {}
            except (OSError, ValueError, KeyError, TypeError):
                report = {}
    prov = report.get("provenance") if isinstance(report.get("provenance"), dict) else None
    test = report.get("test") if isinstance(report.get("test"), dict) else {}
    try:
        corpus = corpus_text(prov) if prov else None
        warn = notes(prov) if prov else []
    except (KeyError, TypeError):
        corpus, warn = None, []
    return {
        "model": recognizer.name,
        "classes": list(recognizer.classes),
        "sample_rate": recognizer.sr,
        "window_s": recognizer.config.win_s,
        "hop_s": recognizer.config.hop_s,
        "corpus": corpus,
        "synthetic": bool(prov.get("synthetic")) if prov else None,
        # the manifest's path names the training machine's folders: not for the public
        "provenance": {k: v for k, v in prov.items() if k != "manifest"} if prov else None,
        "notes": warn,
        "test": {k: test[k] for k in ("wa", "ua", "macro_f1") if isinstance(test.get(k), (int, float))},
    }


def _too_large(size: int, limits: ServiceLimits, more: bool = False) -> str:
    return (
        f"upload is {'more than ' if more else ''}{size / 2**20:.1f} MiB; "
        f"the limit is {limits.max_upload_bytes / 2**20:.1f} MiB"
    )


# the OpenAPI page still documents the form field that the endpoint parses itself
_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "audio file (wav, flac, ...)"}
                    },
                }
            }
        },
    }
}
# after a refusal the rest of a body is read and dropped (not stored) up to this much, so that the client,
# still sending, gets the 413 instead of a reset connection; beyond it the connection is closed
_DRAIN_BYTES = 64 * 1024 * 1024


async def _receive_upload(request: Request, folder: Path, limits: ServiceLimits) -> tuple[Path, str]:
    """Stream the multipart body, writing the part ``file`` into ``folder``; ``(path, client's file name)``.

    Bytes are counted as they arrive, whatever Content-Length says (or whether it is sent at all): past
    ``max_upload_bytes`` (plus the multipart framing) the request is refused with 413 and nothing more is
    written, so the disk holds at most the limit.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(415, "send the audio as multipart/form-data in field 'file'")
    state: dict = {"headers": {}, "field": b"", "value": b"", "is_file": False, "seen": False, "name": "upload"}
    out = {"file": None, "size": 0}
    path = folder / "upload"

    def on_part_begin() -> None:
        state["headers"], state["is_file"] = {}, False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if disp.get(b"name") == b"file" and not state["seen"]:
            state["is_file"] = state["seen"] = True
            name = Path(disp.get(b"filename", b"upload").decode("utf-8", "replace") or "upload").name
            state["name"] = name
            suffix = re.sub(r"[^A-Za-z0-9.]", "", Path(name).suffix)[:10]
            nonlocal path
            path = folder / f"upload{suffix}"
            out["file"] = open(path, "wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["is_file"]:
            out["size"] += end - start
            if out["size"] > limits.max_upload_bytes:
                raise ApiError(413, _too_large(limits.max_upload_bytes, limits, more=True))
            out["file"].write(data[start:end])

    def on_part_end() -> None:
        if state["is_file"]:
            out["file"].close()
            state["is_file"] = False

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    stream = request.stream()
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > limits.max_upload_bytes + _MULTIPART_SLACK:
                raise ApiError(413, _too_large(limits.max_upload_bytes, limits, more=True))
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        await _drain(stream, received)
        raise
    except MultipartParseError as e:
        raise ApiError(400, f"malformed multipart body ({e})") from None
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected before the upload was complete") from None
    finally:
        if out["file"] is not None:
            out["file"].close()
    if not state["seen"]:
        raise ApiError(422, "no audio file: put it in the form field 'file'")
    return path, state["name"]


async def _drain(stream, received: int) -> None:  # noqa: ANN001
    """Read and drop what the client still sends of a refused body, up to :data:`_DRAIN_BYTES`."""
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > _DRAIN_BYTES:
                return
    except ClientDisconnect:
        return


def _score(recognizer: Recognizer, path: Path, name: str, limits: ServiceLimits, timeline: bool) -> dict:
    """Check the uploaded file's header against the limits, then score it (runs in a worker thread)."""
    try:
        info = audio_info(path)
    except AudioError as e:
        raise ApiError(415, f"{name}: {e.reason}") from None
    if info.duration_s > limits.max_duration_s:
        raise ApiError(
            422, f"{name}: audio is {info.duration_s:.1f} s long; the limit is {float(limits.max_duration_s):g} s"
        )
    try:
        check_limits(name, info, max_samples=limits.max_samples)
        result = recognizer.predict(path)
    except AudioError as e:
        raise ApiError(422, f"{name}: {e.reason}") from None
    out = result.to_dict(timeline=timeline)
    out["source"] = name
    return out


def serve(
    model: str | os.PathLike | Recognizer,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServiceLimits = ServiceLimits(),
    *,
    backend: Literal["torch", "onnx"] = "torch",
    onnx_path: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    log_level: str = "info",
) -> None:
    """Run the app for a run directory (or a :class:`Recognizer`) with uvicorn until interrupted.

    ``run_dir``: where ``GET /v1/model`` reads what the model was trained on (default: ``model`` if it is a path).
    """
    import uvicorn  # the [serve] extra: needed only to run the server

    app = create_app(model, limits, backend=backend, onnx_path=onnx_path, run_dir=run_dir)
    uvicorn.run(app, host=host, port=port, log_level=log_level)

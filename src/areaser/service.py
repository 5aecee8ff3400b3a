"""HTTP service: the recognizer behind a small FastAPI app with a web page.

``create_app(model_dir)`` builds the app; ``areaser serve MODEL`` runs it with uvicorn.

=================  ===========================================================================
``GET /``          a page to upload a file or record from the microphone; shows the emotion,
                   the probabilities and a timeline plot (``web/index.html``, no CDN)
``GET /healthz``   ``{"status": "ok", "model": ..., "classes": [...], ...}``
``POST /v1/predict``  multipart form, audio file in field ``file`` -> the JSON of
                   :meth:`areaser.inference.Prediction.to_dict`; query options
                   ``timeline=false`` (leave the per-window timeline out), ``hop_s`` (0.1-10),
                   ``silence_db`` (skip windows below this level, e.g. -50)
=================  ===========================================================================

Every refusal is a 4xx answer with ``{"error": "<one line>"}``: 413 upload too large, 415 not
audio (or not a multipart upload), 422 audio the model cannot score (too long, silent, NaN).
Decoding and inference run in worker threads (at most ``max_workers`` at once, the rest wait
in line), so the event loop keeps answering while recordings are scored.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

import anyio
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .audio import AudioError, audio_info
from .inference import Recognizer

__all__ = ["ServiceLimits", "create_app", "serve"]

# multipart framing around the file (boundaries, part headers) tolerated on top of the file limit
_MULTIPART_SLACK = 64 * 1024


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask.

    ``max_upload_bytes``: the uploaded file's size (413 above it); ``max_duration_s``: the audio's duration from
    its header (422 above it); ``max_workers``: recordings scored at the same time (more requests wait in line,
    the loop stays free).
    """

    max_upload_bytes: int = 25 * 1024 * 1024
    max_duration_s: float = 600.0
    max_workers: int = 2

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or not self.max_duration_s > 0 or self.max_workers < 1:
            raise ValueError(f"limits must be positive, got {self}")


class ApiError(Exception):
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
) -> FastAPI:
    """Build the FastAPI app for a run directory (or a ready :class:`Recognizer`)."""
    recognizer = (
        model if isinstance(model, Recognizer) else Recognizer.load(model, backend=backend, onnx_path=onnx_path)
    )
    workers = anyio.CapacityLimiter(limits.max_workers)
    page = resources.files("areaser").joinpath("web/index.html").read_text(encoding="utf-8")
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
            "version": __version__,
        }

    @app.post("/v1/predict")
    async def predict(
        file: UploadFile = File(..., description="audio file (wav, flac, ogg, ...)"),
        timeline: bool = Query(True, description="include the per-window timeline"),
        hop_s: Optional[float] = Query(
            None, ge=0.1, le=10.0, description="hop between 2 s windows (default: the model's)"
        ),
        silence_db: Optional[float] = Query(
            None, ge=-120.0, lt=0.0, description="skip windows below this RMS level, dBFS"
        ),
    ) -> dict:
        name = Path(file.filename or "upload").name
        rec = recognizer
        if hop_s is not None or silence_db is not None:
            rec = recognizer.with_config(hop_s=hop_s or recognizer.config.hop_s, silence_db=silence_db)
        # the upload is already spooled; copying, decoding and scoring run in a worker thread
        return await anyio.to_thread.run_sync(_score, rec, file, name, limits, timeline, limiter=workers)

    app.state.recognizer = recognizer
    app.state.limits = limits
    return app


def _too_large(size: int, limits: ServiceLimits) -> str:
    return f"upload is {size / 2**20:.1f} MiB; the limit is {limits.max_upload_bytes / 2**20:.1f} MiB"


def _score(recognizer: Recognizer, file: UploadFile, name: str, limits: ServiceLimits, timeline: bool) -> dict:
    """Copy the upload to a temporary file, check it, score it (runs in a worker thread)."""
    suffix = re.sub(r"[^A-Za-z0-9.]", "", Path(name).suffix)[:10]
    with tempfile.TemporaryDirectory(prefix="areaser-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        file.file.seek(0)
        with open(path, "wb") as out:
            shutil.copyfileobj(file.file, out, 1 << 20)
        size = path.stat().st_size
        if size > limits.max_upload_bytes:  # a body sent without Content-Length
            raise ApiError(413, _too_large(size, limits))
        try:
            info = audio_info(path)
        except AudioError as e:
            raise ApiError(415, f"{name}: {e.reason}") from None
        if info.duration_s > limits.max_duration_s:
            raise ApiError(
                422, f"{name}: audio is {info.duration_s:.1f} s long; the limit is {limits.max_duration_s:g} s"
            )
        try:
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
    log_level: str = "info",
) -> None:
    """Run the app for a run directory (or a :class:`Recognizer`) with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(model, limits, backend=backend, onnx_path=onnx_path), host=host, port=port, log_level=log_level
    )

"""The HTTP API and the drawing page: a FastAPI app around one :class:`~digitlab.predict.Predictor`.

Endpoints answer JSON in the contract of ``digitlab predict --json``; every error is
``{"error": "..."}`` with 408, 409, 413, 415 or 422 for bad requests, never 500. The predictor runs
in the thread pool (ONNX Runtime and most of NumPy release the GIL), so the event loop stays
free to read other requests. Nothing here imports torch unless ``backend="torch"``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from digitlab.errors import DigitlabError
from digitlab.predict import input_error
from digitlab.preprocess import ImageTooLarge
from digitlab.serve.collect import LABELS, CollectRefused, SampleStore, Saved
from digitlab.serve.middleware import Guard, Metrics, RequestRejected, log, process_metrics
from digitlab.system import cpu_cores
from digitlab.version import __version__

STATIC = Path(__file__).resolve().parent / "static"
SETTINGS_ENV = "DIGITLAB_SERVE_SETTINGS"


@dataclass
class Settings:
    """What ``digitlab serve`` passes to each worker (as JSON in an environment variable)."""

    model: str | None = None
    backend: str = "onnx"
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_batch: int = 64
    request_timeout: float = 10.0
    threads: int = 0  # predictions running at once; 0: one per core
    collect_dir: str | None = None  # --collect: where the page saves the user's samples
    collect_max: int = 10_000  # most samples in collect_dir

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Settings:
        return cls(**json.loads(os.environ.get(SETTINGS_ENV, "{}")))


# ----------------------------------------------------------------------------- schemas (docs)


class DigitResult(BaseModel):
    digit: int | None = Field(description="The digit, or null when the input is not a digit")
    confidence: float
    probabilities: list[float] = Field(description="Ten calibrated probabilities, 0 to 9")
    is_digit: bool
    input: str | None = Field(None, description="With explain=1: base64 PNG of the 28x28 seen")


class NumberDigit(BaseModel):
    digit: int | None = Field(
        description="null only when the line is not a number and this piece is not a digit either"
    )
    confidence: float
    is_digit: bool = Field(description="Whether this piece alone passes the rejection threshold")
    box: list[int] = Field(description="x, y, w, h of the digit in the input's pixels")
    input: str | None = None


class NumberResult(BaseModel):
    number: str | None = Field(
        description="The digits read left to right; null when their mean confidence is below "
        "the model's rejection threshold (not a number)"
    )
    digits: list[NumberDigit]


class BatchResult(BaseModel):
    results: list[dict[str, Any]] = Field(
        description="One result per image, in order; an unreadable image gives {index, error}"
    )


class ErrorBody(BaseModel):
    error: str


class CollectCounts(BaseModel):
    counts: dict[str, int] = Field(description="Samples per label: 0 to 9 and none")
    total: int
    max_files: int = Field(description="The most samples the folder may hold (--collect-max)")
    finetune: str = Field(description="The command that personalises the model with them")


class CollectSaved(CollectCounts):
    label: str
    file: str = Field(description="The sample's path inside the collect folder")
    duplicate: bool = Field(description="The same drawing was already saved (no new file)")


ERRORS = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        408: "The request body arrived too slowly",
        413: "Body, image or batch too large",
        415: "Unsupported Content-Type",
        422: "Unreadable image, bad base64 or bad parameters",
    }.items()
}


def _body_doc(many: bool) -> dict[str, Any]:
    field = "images" if many else "image"
    binary = {"type": "string", "format": "binary"}
    b64 = {"type": "string", "description": "base64 or a data: URL"}
    one_or_many = {"type": "array", "items": binary} if many else binary
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {field: one_or_many},
                        "required": [field],
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {field: {"type": "array", "items": b64} if many else b64},
                        "required": [field],
                    }
                },
                **({} if many else {"image/*": {"schema": binary}}),
            },
        }
    }


# ----------------------------------------------------------------------------- request bodies


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_images(request: Request, many: bool, max_batch: int) -> list[bytes | str]:
    """The encoded images of a request; a string in the list is that image's decoding error.

    Multipart (field ``image``, or ``images`` for a batch), JSON (``{"image": b64}`` or
    ``{"images": [...]}``) or, for one image, a raw ``image/*`` body.
    """
    media = _media_type(request)
    if media == "multipart/form-data":
        items = await _multipart_images(request, many, max_batch)
    elif media == "application/json" or media.endswith("+json"):
        items = await _json_images(request, many)
    elif not many and (media.startswith("image/") or media == "application/octet-stream"):
        items = [await request.body()]
    else:
        accepted = "multipart/form-data or application/json" + ("" if many else " or image/*")
        shown = media or "none"
        raise HTTPException(415, f"unsupported Content-Type {shown}; send {accepted}")
    if not items:
        raise HTTPException(422, "no image in the request")
    if len(items) > max_batch:
        raise HTTPException(413, f"{len(items)} images in one request; at most {max_batch}")
    return items


async def _multipart_images(request: Request, many: bool, max_batch: int) -> list[bytes | str]:
    try:
        form = await request.form(max_files=max_batch + 1, max_fields=max_batch + 16)
    except HTTPException as exc:  # Starlette's reply to a malformed body
        raise HTTPException(422, f"malformed multipart body: {exc.detail}") from None
    try:
        fields = ("images", "image") if many else ("image",)
        values = [v for name in fields for v in form.getlist(name)]
        if not values:
            raise HTTPException(422, f"multipart field {fields[0]!r} is missing")
        if not many and len(values) > 1:
            raise HTTPException(422, "several 'image' fields; use /v1/predict/batch")
        return [await v.read() if hasattr(v, "read") else _from_base64(v) for v in values]
    finally:
        await form.close()


async def _json_images(request: Request, many: bool) -> list[bytes | str]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise HTTPException(422, "body is not valid JSON") from None
    key = "images" if many else "image"
    value = body.get(key) if isinstance(body, dict) else None
    if many and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [_from_base64(v) for v in value]
    if not many and isinstance(value, str):
        return [_from_base64(value)]
    shape = '{"images": ["<base64>", ...]}' if many else '{"image": "<base64 or data URL>"}'
    raise HTTPException(422, f"JSON body must be {shape}")


def _from_base64(text: str) -> bytes | str:
    """Decoded bytes, or the error message (a batch reports it for that image only)."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            return "data URL is not base64-encoded (data:image/png;base64,...)"
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return "image is not valid base64"
    return data or "image is empty"


# ----------------------------------------------------------------------------- the app


def create_app(predictor: Any, settings: Settings | None = None) -> Guard:
    """The ASGI application for ``predictor`` (a :class:`~digitlab.predict.Predictor`)."""
    settings = settings or Settings()
    predictor.max_pixels = settings.max_pixels  # the deployment's one limit, on every path
    metrics = process_metrics()
    app = _fastapi(
        title="digitlab",
        version=__version__,
        description="Handwritten-digit recognition. The drawing page is at `/`.",
    )
    _add_error_handlers(app)
    _warm_up(predictor)
    model_info = _model_info(predictor, settings)
    limiter = anyio.CapacityLimiter(settings.threads or cpu_cores())

    async def in_pool(fn: Callable[..., Any], *args: Any) -> Any:
        # As many predictions at once as cores: more threads only fight over the GIL and
        # stretch the tail latency; waiting requests queue in order on the event loop.
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    def predict_one(data: bytes | str, number: bool, explain: bool) -> dict[str, Any]:
        if isinstance(data, str):
            raise DigitlabError(data)
        start = time.perf_counter()
        result = predictor.predict_image(data, number=number, explain=explain)
        mode = "number" if number else "digit"
        metrics.inference.labels(mode).observe(time.perf_counter() - start)
        metrics.images.labels(mode).inc()
        return result

    def predict_many(items: list[bytes | str], number: bool, explain: bool) -> list[dict]:
        results = []
        for i, data in enumerate(items):
            try:
                results.append({"index": i, **predict_one(data, number, explain)})
            except Exception as exc:  # noqa: BLE001 - one image's failure is its own entry
                if not isinstance(exc, DigitlabError):
                    log.exception("image %d of a batch failed", i)
                results.append({"index": i, "error": input_error(exc)})
        return results

    @app.post(
        "/v1/predict",
        response_model=DigitResult | NumberResult,
        responses=ERRORS,
        openapi_extra=_body_doc(many=False),
        summary="Predict the digit (or the number) in one image",
    )
    async def predict(
        request: Request,
        mode: Literal["digit", "number"] = Query("digit", description="number: several digits"),
        explain: bool = Query(False, description="Add the 28x28 input(s) as base64 PNG"),
    ) -> Response:
        (data,) = await read_images(request, many=False, max_batch=1)
        result = await in_pool(predict_one, data, mode == "number", explain)
        return JSONResponse(result)

    @app.post(
        "/v1/predict/batch",
        response_model=BatchResult,
        responses=ERRORS,
        openapi_extra=_body_doc(many=True),
        summary=f"Predict many images in one request (at most {settings.max_batch})",
    )
    async def predict_batch(
        request: Request,
        mode: Literal["digit", "number"] = Query("digit"),
        explain: bool = Query(False),
    ) -> Response:
        items = await read_images(request, many=True, max_batch=settings.max_batch)
        results = await in_pool(predict_many, items, mode == "number", explain)
        return JSONResponse({"results": results})

    @app.get("/v1/models", summary="The loaded model's metadata and metrics")
    async def models() -> Response:
        return JSONResponse({"models": [model_info]})

    @app.get("/healthz", summary="Liveness and readiness")
    async def healthz() -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": model_info["id"],
                "backend": settings.backend,
                "torch_imported": "torch" in sys.modules,
                "pid": os.getpid(),
            }
        )

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def prometheus() -> Response:
        body, content_type = Metrics.exposition()
        return Response(body, media_type=content_type)

    if settings.collect_dir is None:

        @app.get("/", include_in_schema=False)
        async def page() -> Response:
            return FileResponse(STATIC / "index.html")

    else:
        _add_collect(
            app,
            SampleStore(settings.collect_dir, settings.collect_max, settings.max_pixels),
            in_pool,
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return Guard(app, max_body=settings.max_upload_bytes, body_timeout=settings.request_timeout)


def _add_collect(app: FastAPI, store: SampleStore, in_pool: Callable[..., Any]) -> None:
    """The endpoints of ``--collect`` and the page with its collect mode switched on."""
    page_html = (STATIC / "index.html").read_text().replace("<body>", "<body data-collect>", 1)

    def summary() -> dict[str, Any]:
        counts = store.counts()
        return {
            "counts": counts,
            "total": sum(counts.values()),
            "max_files": store.max_files,
            "finetune": store.finetune_command(),
        }

    def save(label: str, data: bytes | str) -> tuple[Saved, dict[str, Any]]:
        if isinstance(data, str):
            raise DigitlabError(data)
        saved = store.save(label, data)
        return saved, summary()

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return HTMLResponse(page_html)

    @app.get("/v1/collect", response_model=CollectCounts, summary="Samples collected so far")
    async def collect_counts() -> Response:
        return JSONResponse(await in_pool(summary))

    @app.post(
        "/v1/collect",
        status_code=201,
        response_model=CollectSaved,
        responses={**ERRORS, 409: {"model": ErrorBody, "description": "The folder is full"}},
        openapi_extra=_body_doc(many=False),
        summary="Save one drawn sample of a digit (or of 'none') in the collect folder",
    )
    async def collect_sample(
        request: Request,
        label: Literal[LABELS] = Query(description="What the sample shows: 0-9 or none"),  # type: ignore[valid-type]
    ) -> Response:
        (data,) = await read_images(request, many=False, max_batch=1)
        saved, counts = await in_pool(save, label, data)
        body = {"label": saved.label, "file": saved.file, "duplicate": saved.duplicate, **counts}
        return JSONResponse(body, status_code=200 if saved.duplicate else 201)


def _fastapi(**kwargs: Any) -> FastAPI:
    """FastAPI whose /docs page serves Swagger UI's files itself when fastapi-offline is
    installed (the page then works without internet); otherwise they come from a CDN."""
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:
        return FastAPI(**kwargs)
    return FastAPIOffline(static_url="/docs-assets", **kwargs)


def app_from_env() -> Guard:
    """The app of one worker process (``--workers N``), from ``$DIGITLAB_SERVE_SETTINGS``."""
    from digitlab.predict import Predictor

    settings = Settings.from_env()
    return create_app(Predictor(settings.model, backend=settings.backend), settings)


def _model_info(predictor: Any, settings: Settings) -> dict[str, Any]:
    meta = predictor.meta
    return {
        "id": Path(predictor.folder).name,
        "backend": settings.backend,
        **meta.model_dump(mode="json", exclude={"recipe"}, exclude_none=True),
        "recipe": (meta.recipe or {}).get("name"),
        "rejection": predictor.rejection.model_dump(mode="json"),
    }


def _warm_up(predictor: Any) -> None:
    """Predict once at start-up: the first user should not wait for lazy imports and
    ONNX Runtime's first run (about 0.2 s)."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(img).line([(32, 8), (30, 56)], fill=0, width=6)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    predictor.predict_image(buf.getvalue(), explain=True)
    predictor.predict_image(buf.getvalue(), number=True)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is ``{"error": "..."}``; user mistakes are 4xx, never 500."""

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.url.path}"
        return error(exc.status_code, detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(DigitlabError)
    async def bad_image(request: Request, exc: DigitlabError) -> Response:
        return error(422, str(exc))

    @app.exception_handler(ImageTooLarge)
    async def too_many_pixels(request: Request, exc: ImageTooLarge) -> Response:
        return error(413, str(exc))

    @app.exception_handler(RequestRejected)
    async def rejected(request: Request, exc: RequestRejected) -> Response:
        return error(exc.status, exc.message)

    @app.exception_handler(CollectRefused)
    async def refused(request: Request, exc: CollectRefused) -> Response:
        return error(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        return error(500, "internal server error")

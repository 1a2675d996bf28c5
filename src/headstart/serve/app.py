"""The HTTP API (FastAPI): predict, list, report, reload, health, Prometheus metrics, and the page.

A request's way: the body is read with a size cap (413 past it), each image is decoded and prepared
in a thread pool (400 with the reason when it is not a readable image, bombs included), its rows
join the batcher's bounded queue (429 when full), and the answer names the top classes and, when
the model has a detector, whether the image looks like none of them. Every error is JSON
``{"error": "one line"}``. Request values are only ever looked up (a model's name in a dict): no
path is built from one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from .._version import __version__
from ..data.decode import UnreadableImage
from ..errors import DataError, one_line
from .batching import Batcher, QueueFull
from .models import SERVE_MAX_PIXELS, ServedModel, load_served

MB = 1024 * 1024
log = logging.getLogger("headstart")


@dataclass(frozen=True)
class Settings:
    token: str | None = None  # bearer token every /v1 call must carry; None on loopback by default
    max_upload: int = 20 * MB  # bytes per request
    max_pixels: int = SERVE_MAX_PIXELS
    max_images: int = 64  # per request
    timeout: float = 30.0  # seconds per request, queueing included
    max_batch: int = 32
    max_wait: float = 0.005  # seconds a batch waits for more images
    max_queue: int = 256  # images waiting or running
    device: str = "auto"
    decode_threads: int = max(1, min(8, os.cpu_count() or 1))

    def __post_init__(self):
        """Each value checked once, for Python and the command line alike: a zero or negative
        size or wait would refuse or time out every request instead of failing here."""
        for name, (allowed, words, flag) in _LIMITS.items():
            value = getattr(self, name)
            if not allowed(value):
                shown = f"{value:g}" if isinstance(value, float) else value
                raise DataError(f"serve setting {name} must be {words}{flag}, got {shown}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise DataError(f"serve setting device must be 'auto', 'cpu' or 'cuda' (--device), got {self.device!r}.")


# Each setting's bounds in words, and the flag of `headstart serve` that sets it (in its own unit).
_LIMITS = {
    "max_upload": (lambda v: v > 0, "above 0 bytes", " (--max-upload-mb, in MB)"),
    "max_pixels": (lambda v: v > 0, "above 0", ""),
    "max_images": (lambda v: v >= 1, "at least 1", ""),
    "timeout": (lambda v: v > 0, "above 0 seconds", " (--timeout)"),
    "max_batch": (lambda v: v >= 1, "at least 1", " (--batch-size)"),
    "max_wait": (lambda v: 0 <= v <= 10, "0 to 10 seconds", " (--max-wait-ms, in ms)"),
    "max_queue": (lambda v: v >= 1, "at least 1", " (--queue)"),
    "decode_threads": (lambda v: v >= 1, "at least 1", ""),
}


# The body predict reads itself (raw, or multipart), described for /docs, whose "Try it out" then
# offers a file chooser.
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "image/jpeg": _BINARY, "image/png": _BINARY, "application/octet-stream": _BINARY,
    "multipart/form-data": {"schema": {"type": "object", "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
}}}


class _Metrics:
    """Prometheus series, in a registry of this app's own (two apps in one process stay apart)."""

    def __init__(self, batcher: Batcher):
        self.registry = CollectorRegistry()
        self.requests = Counter("headstart_http_requests", "HTTP requests answered", ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "headstart_http_request_duration_seconds", "time from request to response", ["path"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.images = Counter("headstart_images_predicted", "images answered", ["model"], registry=self.registry)
        self.batch_size = Histogram("headstart_batch_size", "images per model run", registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        Gauge("headstart_queue_images", "images waiting or running", registry=self.registry).set_function(lambda: batcher.pending)


class _Measured:
    """ASGI middleware: every HTTP request counted and timed by its route (not its raw path, which
    would let a client create series without bound)."""

    def __init__(self, app, metrics: _Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


class _Serving:
    """What the routes share: the models by name (each replaced whole on reload), the batcher, the
    decoding threads and the metrics."""

    def __init__(self, models: dict[str, ServedModel], settings: Settings):
        self.models, self.settings = models, settings
        self.batcher = Batcher(max_batch=settings.max_batch, max_wait=settings.max_wait, max_queue=settings.max_queue)
        self.metrics = _Metrics(self.batcher)
        self.batcher.on_batch = self.metrics.batch_size.observe
        self.decoding = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="headstart-decode")
        self.reloading = asyncio.Lock()

    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise HTTPException(404, f"no model named {name!r}; GET /v1/models lists them")
        return self.models[name]

    async def predict(self, name: str, request: Request, top_k: int) -> dict:
        model, settings = self.model(name), self.settings
        try:
            async with asyncio.timeout(settings.timeout):
                with self.batcher.coming():
                    images = await _images(request, settings)
                    rows = await asyncio.gather(*(_prepared(model, data, filename, self.decoding, settings) for filename, data in images))
                answers = await self.batcher.submit(model, list(rows))  # no await between: never counted as neither
        except QueueFull as exc:
            raise HTTPException(429, f"busy: {exc}", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise HTTPException(503, f"timed out after {settings.timeout:g} s (the server is overloaded); retry later", headers={"Retry-After": "5"}) from None
        self.metrics.images.labels(name).inc(len(answers))
        return {"model": name, "predictions": [_prediction(model, filename, *answer, top_k) for (filename, _), answer in zip(images, answers)]}

    async def reload(self, name: str) -> ServedModel:
        async with self.reloading:
            old = self.model(name)
            try:
                new = await asyncio.get_running_loop().run_in_executor(None, load_served, old.run, name, self.settings.device)
            except Exception as exc:
                raise HTTPException(409, f"could not reload {name!r} from {old.run}: {one_line(exc)}; still serving the model loaded before") from None
            self.models[name] = new  # one assignment: a request sees the old model or the new, never a mix
            return new

    async def reload_all(self) -> None:
        for name in list(self.models):
            try:
                await self.reload(name)
            except HTTPException as exc:
                log.warning("%s", exc.detail)  # the old model keeps serving

    @asynccontextmanager
    async def lifespan(self, app):
        self.batcher.start()
        _on_sighup(lambda: asyncio.ensure_future(self.reload_all()))
        yield
        await self.batcher.stop()  # uvicorn has drained the requests by now
        self.decoding.shutdown(wait=False, cancel_futures=True)


def create_app(models: dict[str, ServedModel], settings: Settings = Settings()) -> FastAPI:
    """The ASGI app serving ``models`` (name -> model); run it with uvicorn."""
    serving = _Serving(models, settings)
    # /docs served from files in the package: FastAPI's own page fetches Swagger UI from a CDN,
    # blank on a machine without internet
    app = FastAPIOffline(title="headstart", version=__version__, lifespan=serving.lifespan, description="Image classifiers fitted by headstart, served.")
    app.add_middleware(_Measured, metrics=serving.metrics)
    app.add_exception_handler(HTTPException, _error_response)
    app.add_exception_handler(RequestValidationError, _validation_response)
    authorised = [Depends(_bearer(settings.token))]
    page = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return page

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "models": sorted(models), "queue": serving.batcher.pending}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus():
        return Response(generate_latest(serving.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=authorised)
    async def list_models():
        return {"models": [_about(model) for model in models.values()]}

    @app.get("/v1/models/{name}", dependencies=authorised)
    async def one_model(name: str):
        return _about(serving.model(name))

    @app.get("/v1/models/{name}/report", response_class=HTMLResponse, dependencies=authorised)
    async def report(name: str):
        path = serving.model(name).report
        if path is None:
            raise HTTPException(404, f"model {name!r} has no report.html (headstart report RUN writes one)")
        return HTMLResponse(path.read_text(encoding="utf-8"))

    @app.post("/v1/models/{name}/reload", dependencies=authorised)
    async def reload_model(name: str):
        new = await serving.reload(name)
        return {"model": name, "reloaded": True, "loaded_at": new.loaded_at}

    @app.post("/v1/models/{name}/predict", dependencies=authorised, openapi_extra=_PREDICT_BODY)
    async def predict(name: str, request: Request, top_k: int = Query(5, ge=1, description="classes to return per image")):
        """One image as the raw body (any Content-Type but multipart), or several as multipart files."""
        return await serving.predict(name, request, top_k)

    return app


def _bearer(token: str | None):
    """A dependency that admits requests carrying ``Authorization: Bearer <token>`` (all, without one)."""

    async def check(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token: send the header 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})

    return check


async def _images(request: Request, settings: Settings) -> list[tuple[str | None, bytes]]:
    """(file name, bytes) of every image in the request: the raw body, or multipart's files."""
    body = await _capped_body(request, settings.max_upload)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):  # as other model servers take base64 images
        raise HTTPException(415, "a JSON body is not read: send the image file itself as the body (curl --data-binary @FILE) or images as multipart files (curl -F files=@FILE)")
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise HTTPException(400, "empty request: send an image file as the body, or images as multipart files")
        return [(None, body)]

    async def once():
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=settings.max_images, max_part_size=settings.max_upload).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"bad multipart body: {exc.message}") from None
    try:
        files = [(value.filename, await value.read()) for _, value in form.multi_items() if not isinstance(value, str)]
    finally:
        await form.close()  # each file part is a SpooledTemporaryFile
    if not files:
        raise HTTPException(400, "the multipart body holds no file: send each image as a file field")
    return files


async def _capped_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the request is {int(declared):,} bytes, over the {limit / MB:g} MB limit (serve --max-upload-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the request is over the {limit / MB:g} MB limit (serve --max-upload-mb)")  # chunked: no length said
        chunks.append(chunk)
    return b"".join(chunks)


async def _prepared(model: ServedModel, data: bytes, filename: str | None, pool: ThreadPoolExecutor, settings: Settings) -> np.ndarray:
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, model.image_array, data, settings.max_pixels)
    except UnreadableImage as exc:
        raise HTTPException(400, f"{filename or 'the image'} is unreadable: {exc}") from None


def _prediction(model: ServedModel, filename: str | None, probabilities: np.ndarray, novelty: float | None, top_k: int) -> dict:
    order = np.argsort(-probabilities)[:top_k]
    classes = model.classes
    nearest = classes[order[0]]
    answer = {"file": filename} if filename is not None else {}
    answer |= {"label": nearest, "probability": float(probabilities[order[0]])}
    if novelty is not None and model.threshold is not None:
        unknown = novelty > model.threshold
        answer |= {"label": None if unknown else nearest, "unknown": bool(unknown), "nearest": nearest, "novelty": novelty, "threshold": model.threshold}
    answer["top"] = [{"label": classes[k], "probability": float(probabilities[k])} for k in order]
    return answer


def _about(model: ServedModel) -> dict:
    return {
        "name": model.name, **model.description, "engine": model.engine, "loaded_at": model.loaded_at,
        "report": f"/v1/models/{model.name}/report" if model.report is not None else None,
    }


async def _error_response(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": one_line(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body"))
    return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)


def _on_sighup(reload) -> None:
    """SIGHUP reloads every model, as daemons do; only where the loop can take signals (the main
    thread on POSIX)."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    except (AttributeError, NotImplementedError, RuntimeError, ValueError):
        pass

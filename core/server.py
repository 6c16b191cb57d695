"""`vecguard serve`: the engine over HTTP, ready only when it is right.

    vecguard serve --config C [--host 127.0.0.1] [--port 8000]
    # or mount it in your own ASGI app:
    from vecguard.server import create_app
    app = create_app("vecguard.toml")

The port opens at once; the collection is opened, guarded, and the encoder
warmed with a real encode in a background thread. ``/healthz`` answers
immediately. ``/readyz`` returns 503 with the reason until the collection is
open, the version guard has passed, the encoder is warm and the index holds
documents. A collection the guard refuses never serves, and ``/readyz`` keeps
saying why.

Searches run side by side. A write encodes its documents beside them and holds
the collection alone only to store a batch, so a search sees a batch either
whole or not at all and never waits for the encoder. ``/healthz``, ``/readyz``
and ``/metrics`` run on the event loop, so no queue of searches delays them.

Writes need the bearer token of ``write_token_env``; without one they are
refused (403) unless ``open_writes = true`` says in so many words that anyone
who reaches the port may write, and ``serve`` refuses to bind beyond loopback
with open writes. Limits come from ``[server]``. Every error is JSON naming the
field (``{"detail": [{"loc": [...], "msg": ...}]}``); there are no stack traces,
and a storage failure tells the client only that it happened (paths and
exception text go to the server log). Metrics are Prometheus text at
``/metrics``, one registry per app. Spans go through the OpenTelemetry API,
which is a no-op unless the application configures an SDK.
"""

import hmac
import ipaddress
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

from .config import Config, load_config
from .errors import (
    CompatibilityError,
    ConfigError,
    DocumentError,
    FilterError,
    MissingExtraError,
    StorageError,
    VecguardError,
)
from .evaluate import folder_bytes

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COSINE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(-4, 21))
QUERY_STAGES = ("encode", "dense", "keyword", "fuse")


def _imports() -> tuple[Any, Any, Any]:
    try:
        import fastapi
        import prometheus_client
        from opentelemetry import trace
    except ImportError as exc:
        raise MissingExtraError(
            f"vecguard serve needs the server extra ({exc.name} is missing): pip install 'vecguard[server]'"
        ) from exc
    return fastapi, prometheus_client, trace


class ReadWriteLock:
    """Many readers or one writer; a waiting writer keeps new readers out so writes are not starved."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            self._condition.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self, prometheus: Any) -> None:
        self.registry = prometheus.CollectorRegistry()
        r = self.registry
        self.query_seconds = prometheus.Histogram(
            "vecguard_query_duration_seconds",
            "Search latency by stage (encode, dense, keyword, fuse, total) and mode",
            ["stage", "mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_encode_seconds = prometheus.Histogram(
            "vecguard_ingest_encode_duration_seconds",
            "Encoder time per ingested batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.top1_cosine = prometheus.Histogram(
            "vecguard_top1_cosine",
            "Best dense cosine of each query (its shift is the earliest sign of drift)",
            ["mode"],
            buckets=COSINE_BUCKETS,
            registry=r,
        )
        self.queries = prometheus.Counter("vecguard_queries", "Searches answered", ["mode"], registry=r)
        self.empty_results = prometheus.Counter(
            "vecguard_empty_results",
            "Searches that returned nothing (min_score left no hit, or no match)",
            ["mode"],
            registry=r,
        )
        self.guard_refusals = prometheus.Counter(
            "vecguard_guard_refusals", "Collections the version guard refused to serve", registry=r
        )
        self.errors = prometheus.Counter("vecguard_errors", "Requests that failed, by error type", ["type"], registry=r)
        self.ready = prometheus.Gauge("vecguard_ready", "1 when /readyz answers 200", registry=r)
        self.documents = prometheus.Gauge("vecguard_documents", "Documents in the collection", registry=r)
        self.chunks = prometheus.Gauge("vecguard_chunks", "Chunks (vectors) in the collection", registry=r)
        self.index_bytes = prometheus.Gauge(
            "vecguard_index_bytes", "Bytes the collection's folder holds on disk", registry=r
        )
        self.recall = prometheus.Gauge(
            "vecguard_recall_at_k",
            "Last measured recall@k of the ANN index against exact search (from the manifest)",
            registry=r,
        )


class _Instrument:
    """Turns engine stages into histogram observations and child spans of the request's span."""

    def __init__(self, metrics: Metrics, tracer: Any) -> None:
        self._metrics = metrics
        self._tracer = tracer
        self._local = threading.local()

    @contextmanager
    def query(self, mode: str) -> Iterator[None]:
        self._local.mode = mode
        started = time.perf_counter()
        try:
            yield
        finally:
            self._metrics.query_seconds.labels("total", mode).observe(time.perf_counter() - started)
            self._local.mode = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        with self._tracer.start_as_current_span(f"vecguard.{name}"):
            yield
        elapsed = time.perf_counter() - started
        if name == "ingest_encode":
            self._metrics.ingest_encode_seconds.observe(elapsed)
        else:
            self._metrics.query_seconds.labels(name, getattr(self._local, "mode", None) or "unknown").observe(elapsed)

    def observe(self, name: str, value: float) -> None:
        if name == "top1_cosine":
            self._metrics.top1_cosine.labels(getattr(self._local, "mode", None) or "unknown").observe(value)


class Service:
    """One collection behind the HTTP API: opened in the background, guarded, warmed, then served."""

    def __init__(self, config: Config, metrics: Metrics, tracer: Any) -> None:
        self.config = config
        self.settings = config.tables["server"]
        self.metrics = metrics
        self.tracer = tracer
        self.instrument = _Instrument(metrics, tracer)
        self.lock = ReadWriteLock()
        self.engine: Any = None
        self.reason = "starting: the collection is not open yet"
        self.refused = False
        token_env = self.settings["write_token_env"]
        self.write_token: bytes | None = None
        if token_env:
            token = os.environ.get(token_env)
            if not token:
                raise VecguardError(
                    f"{config.source}: [server] write_token_env names {token_env!r}, but that environment variable is "
                    f"empty; set it to the bearer token that writes must present, or remove write_token_env"
                )
            self.write_token = token.encode("utf-8")  # compared with the header's bytes: a UTF-8 token works as sent
        metrics.index_bytes.set_function(self._index_bytes)

    def open(self) -> None:
        from .engine import Engine

        try:
            self.reason = "opening the collection and running the version guard"
            engine = Engine(self.config)
            self.reason = "warming the encoder"
            engine.encoder.encode_queries(["vecguard warm-up query"])
            engine.instrument = self.instrument
            engine.write_lock = self.lock.writing
            recall = ((engine.manifest.get("measurements") or {}).get("recall") or {}).get("value")
            if isinstance(recall, (int, float)):
                self.metrics.recall.set(recall)
            with self.lock.writing():
                self.engine = engine
                self._after_write()
        except CompatibilityError as exc:
            self.refused = True
            self.metrics.guard_refusals.inc()
            # Clients get the reasons (what changed); the message, with paths and the fix, goes to the log.
            reasons = getattr(exc, "reasons", None) or [type(exc).__name__]
            self.reason = f"the version guard refused the collection: {'; '.join(reasons)}"
            log.error("vecguard serve: the version guard refused the collection: %s", exc)
        except Exception as exc:  # shown on /readyz; the process stays up to say why
            self.reason = f"the collection could not be opened ({type(exc).__name__}); the server log says why"
            log.exception("vecguard serve: could not open the collection")

    def write_refusal(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, str] | None:
        """Why a write with these raw request headers is refused, as (status, message); None lets it through.

        The header's bytes are compared, not Starlette's Latin-1 reading of them: a client sends a non-ASCII
        token as UTF-8."""
        if self.write_token is None:
            if self.settings["open_writes"]:
                return None
            return 403, (
                "writes are off: this server has no write token; set [server] write_token_env to the "
                "environment variable holding one, or open_writes = true to let any client write"
            )
        given = next((value for name, value in headers if name == b"authorization"), b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.write_token):
            return 401, "writes need 'Authorization: Bearer <token>' with the configured token"
        return None

    def _after_write(self) -> None:
        """Refresh the gauges and readiness; still under the write lock."""
        documents = self.engine.count()
        if documents:
            # Indexes built lazily on the next search (an HNSW graph, the BM25 scorer) are built here, under
            # the write lock, so concurrent readers never race to build them.
            instrument, self.engine.instrument = self.engine.instrument, None
            try:
                self.engine.search("vecguard warm-up query", k=1)
            finally:
                self.engine.instrument = instrument
        self.metrics.documents.set(documents)
        self.metrics.chunks.set(self.engine.count_chunks())
        self.reason = None if documents else "the collection is empty; add documents with POST /documents"
        self.metrics.ready.set(1 if self.reason is None else 0)

    def _index_bytes(self) -> float:
        size = folder_bytes(self.config)
        return math.nan if size is None else float(size)

    def close(self) -> None:
        with self.lock.writing():
            if self.engine is not None:
                self.engine.close()
                self.engine = None
                self.reason = "shutting down"
                self.metrics.ready.set(0)


def create_app(config: str | Path | Mapping[str, Any] | Config) -> Any:
    """The ASGI app for a config; the collection opens in the background once the app starts."""
    fastapi, prometheus, trace = _imports()
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    config = load_config(config)
    limits = config.tables["server"]
    metrics = Metrics(prometheus)
    tracer = trace.get_tracer("vecguard.server")
    service = Service(config, metrics, tracer)

    Scalar = str | int | float | bool

    # Strict: "5" is not a k and "yes" not a bool; a JSON number is still a float where one is wanted.
    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        query: str = Field(min_length=1, max_length=limits["max_query_chars"])
        k: int = Field(10, ge=1, le=limits["max_k"])
        mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
        filter: dict[str, Any] | None = None
        min_score: float | None = Field(None, ge=-1.0, le=1.0)
        chunks: bool = False

    class DocumentIn(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        id: str = Field(min_length=1)
        text: str = Field(min_length=1)
        metadata: dict[str, Scalar] = Field(default_factory=dict)

    class AddRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        documents: list[DocumentIn] = Field(min_length=1, max_length=limits["max_documents"])

    class DeleteRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        ids: list[str] | None = Field(None, min_length=1)
        filter: dict[str, Any] | None = None

    def problem(status: int, loc: list[Any], message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": loc, "msg": message}]}, status_code=status, headers=headers or None)

    class FieldError(Exception):
        def __init__(self, status: int, loc: list[Any], message: str) -> None:
            self.status, self.loc, self.message = status, loc, message

    def engine_or_503() -> Any:
        if service.engine is None:
            raise FieldError(503, [], service.reason or "not ready")
        return service.engine

    def require_write_token(request: Request) -> None:
        if refusal := service.write_refusal(request.scope["headers"]):
            status, message = refusal
            raise FieldError(status, ["header", "authorization"] if status == 401 else [], message)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        thread = threading.Thread(target=service.open, name="vecguard-open", daemon=True)
        thread.start()
        yield
        thread.join()
        service.close()

    app = FastAPI(title="vecguard", version=_version(), lifespan=lifespan)
    app.state.service = service
    app.add_middleware(
        _LimitAndTrace,
        limit=limits["max_request_bytes"],
        tracer=tracer,
        span_kind=trace.SpanKind.SERVER,
        metrics=metrics,
    )

    @app.exception_handler(VecguardError)
    async def _refused(request: Request, exc: VecguardError) -> JSONResponse:
        metrics.errors.labels(type(exc).__name__).inc()
        if isinstance(exc, StorageError):  # names files and paths: for the log, not for anonymous clients
            incident = uuid.uuid4().hex[:12]
            log.error("vecguard serve: %s %s: %s (incident %s)", request.method, request.url.path, exc, incident)
            return problem(
                503,
                [],
                f"the collection could not be read or written ({type(exc).__name__}); "
                f"the server log has the details under incident {incident}",
            )
        return problem(422, [], str(exc))

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        metrics.errors.labels("validation").inc()
        return problem(422, ["body"], "the request body nests too deeply (a filter nests at most 32 levels)")

    @app.exception_handler(FieldError)
    async def _field_error(request: Request, exc: FieldError) -> JSONResponse:
        metrics.errors.labels(f"http_{exc.status}").inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return problem(exc.status, exc.loc, exc.message, **headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("validation").inc()
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": details}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        metrics.errors.labels(f"http_{exc.status_code}").inc()
        return problem(exc.status_code, [], str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        metrics.errors.labels(type(exc).__name__).inc()
        log.exception("vecguard serve: %s %s failed", request.method, request.url.path)
        return problem(500, [], f"internal error ({type(exc).__name__}); the server log has the details")

    # On the event loop, not in the thread pool that searches and writes queue for: a probe always answers.
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if service.engine is not None and service.reason is None:
            return JSONResponse(
                {
                    "ready": True,
                    "documents": service.engine.count(),
                    "chunks": service.engine.count_chunks(),
                    "manifest_id": service.engine.manifest.get("id"),
                }
            )
        return JSONResponse({"ready": False, "reason": service.reason, "refused": service.refused}, status_code=503)

    @app.get("/metrics")
    async def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(
            prometheus.generate_latest(metrics.registry), media_type=prometheus.CONTENT_TYPE_LATEST
        )

    @app.post("/search", response_class=JSONResponse)
    def search(body: SearchRequest) -> JSONResponse:
        if body.min_score is not None and body.mode == "keyword":
            raise FieldError(
                422, ["body", "min_score"], "min_score is a floor on the dense cosine; keyword mode has no cosine"
            )
        with service.lock.reading():
            engine = engine_or_503()
            started = time.perf_counter()
            with service.instrument.query(body.mode):
                try:
                    hits = engine.search(
                        body.query,
                        k=body.k,
                        mode=body.mode,
                        filter=body.filter,
                        min_score=body.min_score,
                        chunks=body.chunks,
                    )
                except FilterError as exc:
                    raise FieldError(422, ["body", "filter"], str(exc)) from exc
            elapsed_ms = (time.perf_counter() - started) * 1000
        metrics.queries.labels(body.mode).inc()
        if not hits:
            metrics.empty_results.labels(body.mode).inc()
        # A JSONResponse skips FastAPI's re-validation of a plain dict, about a millisecond per search.
        # Server-Timing carries what the engine took, so a client can tell the HTTP layer from the search.
        return JSONResponse(
            {
                "hits": [
                    {
                        "id": h.id,
                        "score": h.score,
                        "text": h.text,
                        "metadata": h.metadata,
                        "chunk": h.chunk,
                        "start": h.start,
                        "end": h.end,
                        "signals": {name: {"rank": e.rank, "score": e.score} for name, e in h.signals.items()},
                    }
                    for h in hits
                ]
            },
            headers={"Server-Timing": f"search;dur={elapsed_ms:.3f}"},
        )

    @app.post("/documents", dependencies=[Depends(require_write_token)])
    def add_documents(body: AddRequest) -> dict[str, Any]:
        from .engine import validate_document
        from .protocols import Document

        documents = [Document(d.id, d.text, dict(d.metadata)) for d in body.documents]
        for position, document in enumerate(documents):
            try:
                validate_document(document, f"documents[{position}]")
            except DocumentError as exc:
                raise FieldError(422, ["body", "documents", position], str(exc)) from exc
        if len({d.id for d in documents}) != len(documents):
            raise FieldError(
                422, ["body", "documents"], "the same id appears twice in one request; send each document once"
            )
        engine = engine_or_503()
        written = engine.add(documents)  # encodes beside the searches; holds the write lock only to store
        with service.lock.writing():
            service._after_write()
            return {"written": written, "documents": engine.count(), "chunks": engine.count_chunks()}

    @app.api_route("/documents", methods=["DELETE"], dependencies=[Depends(require_write_token)])
    def delete_documents(body: DeleteRequest) -> dict[str, Any]:
        if (body.ids is None) == (body.filter is None):
            raise FieldError(422, ["body"], "give exactly one of 'ids' (a list of document ids) or 'filter'")
        engine = engine_or_503()
        try:
            deleted = engine.delete(body.ids) if body.ids is not None else engine.delete_matching(body.filter or {})
        except FilterError as exc:
            raise FieldError(422, ["body", "filter"], str(exc)) from exc
        with service.lock.writing():
            service._after_write()
            return {"deleted": deleted, "documents": engine.count()}

    @app.get("/documents/{doc_id:path}")
    def get_document(doc_id: str) -> dict[str, Any]:
        with service.lock.reading():
            found = engine_or_503().get([doc_id])
        if not found:
            raise FieldError(404, ["path", "doc_id"], f"no document with id {doc_id!r}")
        return {"id": found[0].id, "text": found[0].text, "metadata": found[0].metadata}

    return app


class _BodyTooLarge(Exception):
    pass


class _LimitAndTrace:
    """Pure ASGI (no per-request task): refuses bodies over the limit with 413, and opens the request's span."""

    def __init__(self, app: Any, *, limit: int, tracer: Any, span_kind: Any, metrics: Metrics) -> None:
        self.app, self.limit, self.tracer, self.span_kind, self.metrics = app, limit, tracer, span_kind, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(send)
            return
        received = 0
        too_large = False
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if too_large:
                return  # the app's own answer to the aborted read is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            if message["type"] == "http.response.start":
                span.set_attribute("http.response.status_code", message["status"])
            await send(message)

        path = scope.get("path", "")
        route = "/documents/{id}" if path.startswith("/documents/") else path
        with self.tracer.start_as_current_span(f"{scope.get('method')} {route}", kind=self.span_kind) as span:
            try:
                await self.app(scope, limited_receive, guarded_send)
            except _BodyTooLarge:
                pass
            if too_large and not started:
                await self._too_large(send)

    async def _too_large(self, send: Any) -> None:
        self.metrics.errors.labels("http_413").inc()
        message = f"request body over {self.limit} bytes ([server] max_request_bytes)"
        body = json.dumps({"detail": [{"loc": ["body"], "msg": message}]}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("vecguard")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def serve(config: str | Path, host: str | None = None, port: int | None = None) -> None:
    """Run the app on uvicorn (what `vecguard serve` does); host and port default to [server].

    Refuses to bind beyond loopback when anyone could write (``open_writes`` without a token).
    """
    loaded = load_config(config)
    settings = loaded.tables["server"]
    host = host or settings["host"]
    tokenless = not settings["write_token_env"]
    if not _loopback(host):
        if tokenless and settings["open_writes"]:
            raise ConfigError(
                f"{loaded.source}: serving {host} with open_writes = true and no write token would let anyone who reaches "
                f"the port add and erase documents; set [server] write_token_env, or bind 127.0.0.1"
            )
        log.warning(
            "vecguard serve: searches on %s are open to anyone who reaches the port%s",
            host,
            "; writes are off (no write token)" if tokenless else "",
        )
    app = create_app(loaded)
    import uvicorn

    from .connections import guarded_protocol

    # No uvicorn connection limit: the protocol caps connections by closing the slowest instead of refusing everyone.
    uvicorn.run(
        app,
        host=host,
        port=port or settings["port"],
        log_level="info",
        timeout_graceful_shutdown=10,
        http=guarded_protocol(
            header_timeout=settings["header_timeout"],
            max_header_bytes=settings["max_header_bytes"],
            max_connections=settings["max_connections"],
        ),
        h11_max_incomplete_event_size=settings["max_header_bytes"] + 1024,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

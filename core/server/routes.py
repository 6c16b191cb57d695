"""The HTTP API's handlers, as named functions that reach the service through FastAPI dependencies.

``/healthz``, ``/readyz`` and ``/metrics`` are coroutines, run on the event loop rather than in the thread pool
that searches and writes queue for, so a probe always answers. Searches and writes are plain functions, run
in the pool side by side. Errors rise as they come; ``problems`` turns each kind into its response.
"""

import functools
import inspect
import time
from collections.abc import Callable
from typing import Annotated, Any

import prometheus_client
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from .problems import RequestRefused
from .schemas import DeleteRequest, RequestModels, hit_body
from .service import Service


async def current_service(request: Request) -> Service:
    return request.app.state.service


CurrentService = Annotated[Service, Depends(current_service)]


def engine_or_503(service: Service) -> Any:
    if service.engine is None:
        raise RequestRefused(503, [], service.reason or "not ready")
    return service.engine


def require_write_token(request: Request) -> None:
    if refusal := request.app.state.service.write_refusal(request.scope["headers"]):
        status, message = refusal
        raise RequestRefused(status, ["header", "authorization"] if status == 401 else [], message)


async def healthz() -> dict[str, str]:
    return {"status": "alive"}


async def readyz(service: CurrentService) -> JSONResponse:
    if service.engine is not None and service.reason is None:
        return JSONResponse(
            {
                "ready": True,
                "documents": service.documents,
                "chunks": service.chunks,
                "manifest_id": service.engine.manifest.get("id"),
            }
        )
    return JSONResponse({"ready": False, "reason": service.reason, "refused": service.refused}, status_code=503)


async def metrics_text(service: CurrentService) -> PlainTextResponse:
    return PlainTextResponse(
        prometheus_client.generate_latest(service.metrics.registry), media_type=prometheus_client.CONTENT_TYPE_LATEST
    )


def search(body: Any, service: CurrentService) -> JSONResponse:
    # body: the app's SearchRequest (schemas.request_models). No docstring: it would become the OpenAPI description.
    if body.min_score is not None and body.mode == "keyword":
        raise RequestRefused(
            422, ["body", "min_score"], "min_score is a floor on the dense cosine; keyword mode has no cosine"
        )
    service.refresh()
    with service.lock.reading():
        engine = engine_or_503(service)
        started = time.perf_counter()
        with service.instrument.query(body.mode):
            hits = engine.search(
                body.query, k=body.k, mode=body.mode, filter=body.filter, min_score=body.min_score, chunks=body.chunks
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
    service.metrics.queries.labels(body.mode).inc()
    if not hits:
        service.metrics.empty_results.labels(body.mode).inc()
    # A JSONResponse skips FastAPI's re-validation of a plain dict, about a millisecond per search.
    # Server-Timing carries what the engine took, so a client can tell the HTTP layer from the search.
    return JSONResponse(
        {"hits": [hit_body(h) for h in hits]}, headers={"Server-Timing": f"search;dur={elapsed_ms:.3f}"}
    )


def add_documents(body: Any, service: CurrentService) -> dict[str, Any]:
    # body: the app's AddRequest (schemas.request_models)
    from ..ingest import validate_document  # the engine loads with the collection, not before the port opens
    from ..protocols import Document

    documents = [Document(d.id, d.text, dict(d.metadata)) for d in body.documents]
    for position, document in enumerate(documents):
        validate_document(document, f"documents[{position}]", position=position)
    if len({d.id for d in documents}) != len(documents):
        raise RequestRefused(
            422, ["body", "documents"], "the same id appears twice in one request; send each document once"
        )
    service.refresh()
    engine = engine_or_503(service)
    written = engine.add(documents)  # encodes beside the searches; holds the write lock only to store
    with service.lock.writing():
        service.after_write()
        return {"written": written, "documents": service.documents, "chunks": service.chunks}


def delete_documents(body: DeleteRequest, service: CurrentService) -> dict[str, Any]:
    if (body.ids is None) == (body.filter is None):
        raise RequestRefused(422, ["body"], "give exactly one of 'ids' (a list of document ids) or 'filter'")
    service.refresh()
    engine = engine_or_503(service)
    deleted = engine.delete(body.ids) if body.ids is not None else engine.delete_matching(body.filter or {})
    with service.lock.writing():
        service.after_write()
        return {"deleted": deleted, "documents": service.documents}


def get_document(doc_id: str, service: CurrentService) -> dict[str, Any]:
    service.refresh()
    with service.lock.reading():
        found = engine_or_503(service).get([doc_id])
    if not found:
        raise RequestRefused(404, ["path", "doc_id"], f"no document with id {doc_id!r}")
    return {"id": found[0].id, "text": found[0].text, "metadata": found[0].metadata}


def with_body_model(handler: Callable[..., Any], model: type) -> Callable[..., Any]:
    """``handler`` as FastAPI should see it: its ``body`` parameter typed as ``model``.

    FastAPI reads an endpoint's signature to parse, validate and document the body; the handler itself stays
    one module function for every app."""
    endpoint = functools.update_wrapper(functools.partial(handler), handler)
    signature = inspect.signature(handler)
    endpoint.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(annotation=model) if p.name == "body" else p for p in signature.parameters.values()]
    )
    return endpoint


def add_routes(app: FastAPI, models: RequestModels) -> None:
    """Every route of the API, in the order the OpenAPI document lists them."""
    writer = [Depends(require_write_token)]
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/readyz", readyz, methods=["GET"])
    app.add_api_route("/metrics", metrics_text, methods=["GET"])
    app.add_api_route("/search", with_body_model(search, models.search), methods=["POST"], response_class=JSONResponse)
    app.add_api_route(
        "/documents",
        with_body_model(add_documents, models.add),
        methods=["POST"],
        dependencies=writer,
    )
    app.add_api_route("/documents", delete_documents, methods=["DELETE"], dependencies=writer)
    app.add_api_route("/documents/{doc_id:path}", get_document, methods=["GET"])

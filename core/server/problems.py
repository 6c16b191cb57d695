"""How the HTTP API says no: every error is ``{"detail": [{"loc": [...], "msg": ...}]}``, one handler per kind.

Errors that name a place carry it as data, and the handlers here turn it into ``loc``: a ``FilterError`` points
into the request's ``filter`` (``["body", "filter", "$and", 0, "year"]``), a ``DocumentError`` at a document
(``["body", "documents", 2]``). Routes let them rise as they come. A ``StorageError`` names files and paths,
which are for the server log, not for anonymous clients: it answers 503 with an incident id the log repeats.
Each answer is counted in ``vecguard_errors``: by exception type, or as ``http_<status>`` for the refusals
counted that way before the handlers were split (a route's own, a malformed filter or document).
"""

import logging
import uuid
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    CollectionBusyError,
    DocumentError,
    FilterError,
    InvalidArgumentError,
    StorageError,
    VecguardError,
)

log = logging.getLogger(__name__)


class RequestRefused(Exception):
    """A refusal a route decides itself: not ready (503), no token (401, 403), no such document (404), or
    arguments that each pass but not together (422)."""

    def __init__(self, status: int, loc: list[Any], message: str) -> None:
        super().__init__(message)
        self.status, self.loc, self.message = status, loc, message


def problem(status: int, loc: list[Any], message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": message}]}, status_code=status, headers=headers or None)


def _count(request: Request, error_type: str) -> None:
    request.app.state.service.metrics.errors.labels(error_type).inc()


async def refused(request: Request, exc: RequestRefused) -> JSONResponse:
    _count(request, f"http_{exc.status}")
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    return problem(exc.status, exc.loc, exc.message, **headers)


async def filter_refused(request: Request, exc: FilterError) -> JSONResponse:
    # Every route that takes a filter takes it as the body's "filter" field.
    _count(request, "http_422")
    return problem(422, ["body", "filter", *exc.path], str(exc))


async def document_refused(request: Request, exc: DocumentError) -> JSONResponse:
    _count(request, "http_422")
    loc = ["body", "documents"] if exc.position is None else ["body", "documents", exc.position]
    return problem(422, loc, str(exc))


async def unprocessable(request: Request, exc: VecguardError) -> JSONResponse:
    """A caller's mistake the library named (an ``InvalidArgumentError`` such as a bad k, or any other)."""
    _count(request, type(exc).__name__)
    return problem(422, [], str(exc))


async def storage_failed(request: Request, exc: StorageError) -> JSONResponse:
    if isinstance(exc, InvalidArgumentError):  # a caller's mistake, whatever else it is: never "unavailable"
        return await unprocessable(request, exc)
    _count(request, type(exc).__name__)
    incident = uuid.uuid4().hex[:12]
    log.error("vecguard serve: %s %s: %s (incident %s)", request.method, request.url.path, exc, incident)
    return problem(
        503,
        [],
        f"the collection could not be read or written ({type(exc).__name__}); "
        f"the server log has the details under incident {incident}",
    )


async def collection_busy(request: Request, exc: CollectionBusyError) -> JSONResponse:
    """Another process (an indexer, a reindex, a replica) held the collection's write lock past lock_timeout."""
    _count(request, type(exc).__name__)
    log.warning("vecguard serve: %s %s: %s", request.method, request.url.path, exc)
    return problem(
        503,
        [],
        "another process is writing the collection; retry the request later (what it stored is skipped unchanged)",
        **{"Retry-After": "5"},
    )


async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
    _count(request, "validation")
    return problem(422, ["body"], "the request body nests too deeply (a filter nests at most 32 levels)")


async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    _count(request, "validation")
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
    ]
    return JSONResponse({"detail": details}, status_code=422)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    _count(request, f"http_{exc.status_code}")
    return problem(exc.status_code, [], str(exc.detail))


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    _count(request, type(exc).__name__)
    log.exception("vecguard serve: %s %s failed", request.method, request.url.path)
    return problem(500, [], f"internal error ({type(exc).__name__}); the server log has the details")


# Starlette answers with the handler of the nearest class in the exception's MRO.
EXCEPTION_HANDLERS: dict[Any, Any] = {
    RequestRefused: refused,
    FilterError: filter_refused,
    DocumentError: document_refused,
    InvalidArgumentError: unprocessable,
    CollectionBusyError: collection_busy,
    StorageError: storage_failed,
    VecguardError: unprocessable,
    RecursionError: too_deep,
    RequestValidationError: invalid_body,
    StarletteHTTPException: http_error,
    Exception: unexpected,
}

"""The ASGI middleware in front of the app: a body-size limit that holds for chunked bodies too, and the span
each request runs in."""

import json
from typing import Any

from .metrics import Metrics


class _BodyTooLarge(Exception):
    pass


class LimitAndTrace:
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

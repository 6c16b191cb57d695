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

The package, by concern: ``service`` (the collection, its readiness, its lock, who may write), ``metrics``,
``schemas`` (request models), ``routes`` (handlers), ``problems`` (errors as responses), ``middleware``
(body limit and request span), ``app`` (``create_app``) and ``launch`` (``serve``). Import from
``vecguard.server``; FastAPI and friends are imported only when an app is built.
"""

from .app import create_app
from .launch import serve
from .metrics import COSINE_BUCKETS, LATENCY_BUCKETS, QUERY_STAGES, Metrics
from .service import ReadWriteLock, Service

__all__ = [
    "COSINE_BUCKETS",
    "LATENCY_BUCKETS",
    "QUERY_STAGES",
    "Metrics",
    "ReadWriteLock",
    "Service",
    "create_app",
    "serve",
]

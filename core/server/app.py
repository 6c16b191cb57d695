"""``create_app``: the service, its middleware, its error handlers and its routes, assembled for one config."""

import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..errors import MissingExtraError
from .metrics import Metrics
from .service import Service


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


@asynccontextmanager
async def _open_in_background(app: Any) -> AsyncIterator[None]:
    service: Service = app.state.service
    thread = threading.Thread(target=service.open, name="vecguard-open", daemon=True)
    thread.start()
    yield
    thread.join()
    service.close()


def create_app(config: str | Path | Mapping[str, Any] | Config) -> Any:
    """The ASGI app for a config; the collection opens in the background once the app starts."""
    fastapi, prometheus, trace = _imports()
    from .middleware import LimitAndTrace
    from .problems import EXCEPTION_HANDLERS
    from .routes import add_routes
    from .schemas import request_models

    config = load_config(config)
    limits = config.tables["server"]
    metrics = Metrics(prometheus)
    tracer = trace.get_tracer("vecguard.server")
    app = fastapi.FastAPI(
        title="vecguard", version=_version(), lifespan=_open_in_background, exception_handlers=EXCEPTION_HANDLERS
    )
    app.state.service = Service(config, metrics, tracer)
    app.add_middleware(
        LimitAndTrace,
        limit=limits["max_request_bytes"],
        tracer=tracer,
        span_kind=trace.SpanKind.SERVER,
        metrics=metrics,
    )
    add_routes(app, request_models(limits))
    return app


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("vecguard")
    except importlib.metadata.PackageNotFoundError:
        return "0"

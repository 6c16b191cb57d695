"""``serve``: the app on uvicorn behind the connection guard, refusing to bind where anyone could write."""

import ipaddress
import logging
from pathlib import Path

from ..config import load_config
from ..errors import ConfigError
from .app import create_app

log = logging.getLogger(__name__)


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
                f"{loaded.source}: serving {host} with open_writes = true and no write token would let anyone who "
                f"reaches the port add and erase documents; set [server] write_token_env, or bind 127.0.0.1"
            )
        log.warning(
            "vecguard serve: searches on %s are open to anyone who reaches the port%s",
            host,
            "; writes are off (no write token)" if tokenless else "",
        )
    app = create_app(loaded)
    import uvicorn

    from ..connections import guarded_protocol

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

"""One collection behind the HTTP API: the engine holder, its readiness, its lock and who may write.

Nothing here knows HTTP: routes ask the service and turn its answers into responses.
"""

import hmac
import logging
import math
import os
import threading
from typing import Any

from ..config import Config
from ..errors import CollectionReplacedError, CompatibilityError, VecguardError
from ..evaluate import folder_bytes
from ..read_write_lock import ReadWriteLock
from .metrics import Metrics, StageInstrument

log = logging.getLogger(__name__)


WARM_UP_QUERY = "vecguard warm-up query"


class Service:
    """One collection behind the HTTP API: opened in the background, guarded, warmed, then served.

    ``engine`` is None until the collection is open; ``reason`` says why the service is not ready (None when it
    is), and ``refused`` is true once the version guard has refused the collection.
    """

    def __init__(self, config: Config, metrics: Metrics, tracer: Any) -> None:
        self.config = config
        self.settings = config.tables["server"]
        self.metrics = metrics
        self.instrument = StageInstrument(metrics, tracer)
        self.lock = ReadWriteLock()
        self._reopening = threading.Lock()
        self.engine: Any = None
        self.reason: str | None = "starting: the collection is not open yet"
        self.documents = self.chunks = 0  # as the last write left them (after_write): /readyz reads no store
        self._warm_up_vector: Any = None
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
        metrics.recall.set_function(lambda: self._recall("value"))
        metrics.recall_queries.set_function(lambda: self._recall("queries"))

    def open(self) -> None:
        from ..engine import Engine

        try:
            self.reason = "opening the collection and running the version guard"
            engine = Engine(self.config)
            self.reason = "warming the encoder"
            self._warm_up_vector = engine.encoder.encode_queries([WARM_UP_QUERY])[0]
            engine.instrument = self.instrument
            engine.write_lock = self.lock.writing
            engine.refresh_before_reads = False  # refresh() runs before the read lock is taken
            with self.lock.writing():
                self.engine = engine
                self.after_write()
        except CompatibilityError as exc:
            self.refused = True
            self.metrics.guard_refusals.inc()
            # Clients get the reasons (what changed); the message, with paths and the fix, goes to the log.
            reasons = exc.reasons or [type(exc).__name__]
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

    def refresh(self) -> None:
        """Catch up with what other processes (a CLI, another replica) committed, before a read takes the read
        lock: catching up takes the write side. One cheap read when nothing changed."""
        engine = self.engine
        if engine is None:
            return
        try:
            changed = engine.refresh()
        except CollectionReplacedError as exc:
            self._reopen(engine, exc)
            return
        if changed:
            with self.lock.writing():
                self.after_write()

    def _reopen(self, replaced: Any, why: Exception) -> None:
        """The collection was replaced on disk (a reindex): serve the new one (503 while it opens)."""
        with self._reopening:
            if self.engine is not replaced:
                return  # another request reopened it
            log.warning("vecguard serve: %s", why)
            with self.lock.writing():
                self.engine = None
                self.reason = "reopening the collection, which was replaced (vecguard reindex)"
                self.metrics.ready.set(0)
            try:
                replaced.close()
            except Exception:  # the retired copy: nothing of it is kept
                log.exception("vecguard serve: closing the replaced collection failed")
            self.open()

    def after_write(self) -> None:
        """Refresh the gauges and readiness after the collection changed; the caller holds the write lock."""
        documents = self.documents = self.engine.count()
        if documents:
            # Indexes built lazily at the next search (an ANN index, the BM25 scorer) are built here, so the first
            # search after a write does not pay for them; with the vector encoded at open, not a new encode.
            self.engine.store.search(self._warm_up_vector, 1)
            self.engine.keyword.search(WARM_UP_QUERY, 1)
        self.chunks = self.engine.count_chunks()
        self.metrics.documents.set(documents)
        self.metrics.chunks.set(self.chunks)
        self.reason = None if documents else "the collection is empty; add documents with POST /documents"
        self.metrics.ready.set(1 if self.reason is None else 0)

    def _recall(self, key: str) -> float:
        """The index's last measured recall (or the queries it was measured on), read when /metrics is scraped."""
        engine = self.engine
        measured = engine.recall() if engine is not None else None
        value = (measured or {}).get(key)
        return float(value) if isinstance(value, (int, float)) else math.nan

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

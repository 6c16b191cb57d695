"""The query vectors a collection served, sampled beside it, so that its ANN index is tuned and its recall measured
on what users ask rather than on what it stores.

A ring of the newest ``capacity`` query vectors: vectors only, never a query's text, and nothing else about who
asked. On disk it is queries.sqlite3 in the collection's folder, which every process serving the collection adds to
(its own connection, WAL, a short transaction per FLUSH_EVERY queries, written from the caller's background thread);
a process killed loses the few it had not written, which a sample can spare. ``recorded`` counts every query any
process added, so each one knows how many arrived since it last measured. In memory (a store without a folder) the
ring is this process's alone.

A sample that cannot be written (a read-only folder, a damaged file) is logged once and switched off: searches never
fail because of it.

``ServedQueries`` is what a store holds: the sample, and the one background measure on it at a time. The store
decides from its own state whether a measure is due (``measure_due``) and takes it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger("vecguard.backends.query_sample")
FILE = "queries.sqlite3"
MIN_SERVED = 100  # served queries in the sample before they, not query-like probes, tune and measure an index
MEASURED = 500  # the newest served queries a measure (or a build) uses
QUERY_PROBES = 400  # stored chunks sampled for query-like probes before any query was served
MIN_PROBES = 50  # fewer distinct probes than this (a small collection): measured on stored vectors instead
FLUSH_EVERY = 16  # queries buffered in memory before they are written
BUFFER_LIMIT = 1024  # queries buffered at most while a write is pending: the rest of a burst is not sampled
_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (slot INTEGER PRIMARY KEY, seq INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def measure_due(recorded: int, measured_at: int, *, grown: bool = False) -> bool:
    """Whether the served queries are due a measure, ``recorded`` having arrived in all and ``measured_at`` at the
    last one: at MIN_SERVED, then each time half as many again arrived (MIN_SERVED at least, MEASURED at most), so
    a new collection is measured within a few hundred queries and a busy one a few times a thousand; whenever there
    are MIN_SERVED once the collection has ``grown``."""
    if grown:
        return recorded >= MIN_SERVED
    return recorded >= MIN_SERVED and recorded - measured_at >= max(MIN_SERVED, min(measured_at // 2, MEASURED))


class ServedQueries:
    """A store's served-query sample and its background measure, one at a time: ``record`` buffers a query's vector
    and, once a batch is waiting, writes it in a thread and calls ``measure(recorded, grown)``, which measures when
    the store finds it due. A measure that fails is logged: the index in service is left as it is."""

    def __init__(self, folder: Path | None, capacity: int, measure: Callable[[int, bool], None], name: str) -> None:
        self.sample = QuerySample(folder, capacity)
        self._measure, self._name = measure, name
        self._thread: threading.Thread | None = None
        self._measuring = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def record(self, vector: np.ndarray) -> None:
        if self.sample.add(vector):
            self.start()

    def start(self, *, grown: bool = False) -> None:
        """Write the waiting queries and measure if due, in a thread (none when one runs already)."""
        if not self.busy:
            self._thread = threading.Thread(
                target=self.check, kwargs={"grown": grown}, name="vecguard-served-queries", daemon=True
            )
            self._thread.start()

    def check(self, *, grown: bool = False) -> None:
        """Write the waiting queries, then measure if due, in this thread (skipped while another measure runs)."""
        if not self._measuring.acquire(blocking=False):
            return
        try:
            self.sample.flush()
            self._measure(self.sample.recorded(), grown)
        except Exception as exc:
            log.warning("%s: measuring recall on served queries failed (%s); the index keeps serving", self._name, exc)
        finally:
            self._measuring.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running measure is done, then write what is still buffered and measure now if that makes
        one due; False when ``timeout`` seconds passed first."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        self.check()
        return True

    def close(self) -> None:
        self.sample.close()


class QuerySample:
    """A bounded ring of served query vectors, in ``folder`` (None: in memory); ``capacity`` 0 keeps none."""

    def __init__(self, folder: Path | None, capacity: int) -> None:
        self.capacity = capacity
        self._path = folder / FILE if folder is not None else None
        self._lock = threading.Lock()  # the buffer, the connection and the in-memory ring
        self._buffer: list[np.ndarray] = []
        # Opened at the first write (or a read of a file that exists): a collection never searched gets no file.
        self._db: sqlite3.Connection | None = None
        self._ring: deque[np.ndarray] = deque(maxlen=max(capacity, 1))  # in memory only
        self._recorded = 0  # in memory only; on disk the count is in the file
        self._broken = capacity == 0

    def add(self, vector: np.ndarray) -> bool:
        """Buffer one query vector; True when FLUSH_EVERY are waiting to be written (``flush``)."""
        if self._broken:
            return False
        with self._lock:
            if len(self._buffer) < BUFFER_LIMIT:
                self._buffer.append(np.asarray(vector, dtype="<f4").ravel())
            return len(self._buffer) >= FLUSH_EVERY

    def flush(self) -> None:
        """Write the buffered vectors into the ring (the oldest ones give way)."""
        with self._lock:
            waiting, self._buffer = self._buffer, []
            if not waiting or self._broken:
                return
            if self._path is None:
                self._ring.extend(waiting)
                self._recorded += len(waiting)
                return
            try:
                db = self._connection()
                db.execute("BEGIN IMMEDIATE")
                try:
                    recorded = self._count(db)
                    db.executemany(
                        "INSERT OR REPLACE INTO queries (slot, seq, vector) VALUES (?, ?, ?)",
                        [((recorded + i) % self.capacity, recorded + i, v.tobytes()) for i, v in enumerate(waiting)],
                    )
                    db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('recorded', ?)", (recorded + len(waiting),)
                    )
                    db.execute("DELETE FROM queries WHERE slot >= ?", (self.capacity,))  # a smaller capacity now
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._switch_off(exc)

    def recorded(self) -> int:
        """How many query vectors were ever added to the ring (by every process)."""
        with self._lock:
            if self._path is None or self._broken:
                return self._recorded
            if self._db is None and not self._path.exists():  # nothing was ever written: no file is made to say so
                return 0
            try:
                return self._count(self._connection())
            except sqlite3.Error as exc:
                self._switch_off(exc)
                return 0

    def newest(self, limit: int, dimension: int) -> np.ndarray:
        """Up to ``limit`` of the newest query vectors in the ring, newest first, of ``dimension`` (others are
        skipped)."""
        with self._lock:
            if self._path is None or self._broken:
                rows = list(self._ring)[-limit:][::-1]
            elif self._db is None and not self._path.exists():
                rows = []
            else:
                try:
                    found = self._connection().execute("SELECT vector FROM queries ORDER BY seq DESC LIMIT ?", (limit,))
                    rows = [np.frombuffer(blob, dtype="<f4") for (blob,) in found]
                except sqlite3.Error as exc:
                    self._switch_off(exc)
                    rows = []
        kept = [row for row in rows if row.shape == (dimension,)]
        return np.array(kept, dtype=np.float32).reshape(len(kept), dimension)

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False, timeout=5)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    @staticmethod
    def _count(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'recorded'").fetchone()
        return int(row[0]) if row else 0

    def _switch_off(self, exc: sqlite3.Error) -> None:
        log.warning(
            "%s: the served-query sample cannot be kept (%s); the index is tuned without it until the collection "
            "is opened again",
            self._path,
            exc,
        )
        self._broken = True
        self._buffer = []

"""FaissStore: the VectorStore over the parts of this package, wiring them in the order a write or a search needs.

Inner product on normalised vectors; ids, vectors and payloads in SQLite (``points``), the FAISS index derived from
it (``live_index``, ``index_file``), payloads and filters cached in memory (``records``, ``filter_cache``). The
store writes no state of its own besides the parts it holds; it creates the one lock they share.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from vecguard.backends.base import BaseVectorStore
from vecguard.errors import CollectionBusyError, CollectionReplacedError
from vecguard.file_lock import ThreadLock, describe_this_process, hold_file_lock
from vecguard.protocols import Payload, RankedList

from . import records, search
from .filter_cache import FilterCache
from .live_index import IndexState, LiveIndex
from .options import FaissOptions
from .points import PointTable


def _import_faiss() -> Any:
    import faiss

    return faiss


def _sqlite_errors(method: Any) -> Any:
    """Turn SQLite's errors inside a store method into vecguard's, naming the database file (the seam, as httpx maps
    its transport's errors); a damaged page is a CorruptCollectionError."""

    @functools.wraps(method)
    def mapped(self: FaissStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise self._points.storage_error(exc) from exc

    return mapped


class FaissStore(BaseVectorStore):
    """A VectorStore on FAISS and SQLite, in ``path`` (None: in memory only); the keywords are the ``[store] faiss``
    options, the fields of ``FaissOptions`` (checked by ``options.parse`` when built from a config)."""

    def __init__(self, path: Path | None, **options: Any) -> None:
        faiss = _import_faiss()
        chosen = FaissOptions(**options)
        self._lock = threading.RLock()  # shared by the parts: their critical sections exclude one another
        self._points = PointTable(path)
        self._records = records.PayloadRecords(self._points, self._lock, on_disk_payload=chosen.on_disk_payload)
        self._filters = FilterCache(faiss, self._points, self._lock)
        # What the records, filters and live index reflect: every write up to this generation, every point up to
        # this num (the parts built later read SQLite as it is then, which is newer).
        self._synced, self._synced_num = self._points.generation, self._points.highest_num()
        self._points.others_committed()
        self._live = LiveIndex(faiss, self._points, chosen, self._lock)
        self._thread_lock = ThreadLock("the in-memory FAISS store") if path is None else None

    # ------------------------------------------------------------ reports

    @property
    def index_state(self) -> IndexState:
        """The index in service, read-only: its spec, what it was trained on, its tuning, whether it is pending."""
        return self._live.state

    @property
    def kept_filters(self) -> tuple[dict[str, Any], ...]:
        """The filters whose allowed points are kept between searches, least recently used first."""
        return self._filters.kept

    @property
    def payloads_in_memory(self) -> bool:
        """Whether every point's id and payload are held in memory now (built at the first search)."""
        return self._records.held

    @property
    def exact_search(self) -> bool:
        """True while searches scan every vector (a Flat index): results equal brute force."""
        return self._live.exact_search()

    @_sqlite_errors
    def index_report(self) -> dict[str, Any] | None:
        """What the index measured about itself (the tuned nprobe and its recall), building anything pending
        first when the store is kept on disk (closing would build it anyway)."""
        if not self._points.is_open:
            return None
        self._sync()
        if self._points.path is not None:
            self._live.ready()
        return self._live.report()

    @_sqlite_errors
    def optimize(self) -> dict[str, Any]:
        """Rebuild (train, tune) the index from every stored vector now and save it; returns what was built."""
        self._sync()
        return self._live.optimize(self._save_index)

    def raw_search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The FAISS call alone on the index in service, at its tuned setting: (scores, nums) as ``index.search``
        returns them, nums not mapped to ids and no payload read. What benchmarks compare ``search`` with."""
        self._sync()
        index = self._live.ready()
        return index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k, params=self._live.params(k))

    def wait_for_index(self, timeout: float | None = None) -> bool:
        """Block until recall measures and a retraining running aside are done (or ``timeout`` seconds); True when
        none is left."""
        return self._live.wait(timeout)

    # ------------------------------------------------------------ tuned on queries (TunesOnQueries)

    def probe_with(self, make_probes: Callable[[Sequence[Payload]], np.ndarray]) -> None:
        self._live.probe_with(make_probes)

    def record_query(self, vector: np.ndarray) -> None:
        self._live.record_query(vector)

    def served_recall(self) -> dict[str, Any] | None:
        return self._live.served_recall()

    # ------------------------------------------------------------ several processes (SharesCollection)

    def lock_writes(self, timeout: float, holder: str) -> AbstractContextManager[None]:
        """``write.lock`` in the folder (flock: released by the kernel when the holder dies); in memory, a lock
        between threads."""
        if self._thread_lock is not None:
            return self._thread_lock.hold(timeout, holder)
        return self._holding_file_lock(timeout, holder)

    @contextmanager
    def _holding_file_lock(self, timeout: float, holder: str) -> Iterator[None]:
        with hold_file_lock(self._points.path, timeout, holder, where=str(self._points.path)):
            self._refuse_if_replaced()  # a writer that waited through a reindex must not write the retired copy
            yield

    def _refuse_if_replaced(self) -> None:
        if self._points.replaced():
            raise CollectionReplacedError(
                f"{self._points.path} was replaced by another collection (vecguard reindex, or a restore) since this "
                f"process opened it; open it again",
                location=str(self._points.path),
            )

    @_sqlite_errors
    def change_token(self) -> int:
        """SQLite's write generation, which every upsert, delete and manifest write commits (refused once the
        folder holds another collection than the one opened)."""
        self._refuse_if_replaced()
        return self._points.generation

    @_sqlite_errors
    def changes_since(self, token: int) -> list[str] | None:
        return self._points.changed_ids(token)

    def _sync(self, *, wrote: bool = False) -> None:
        """Bring the records, the kept filters and the live index up to date with what other processes (or this
        one, ``wrote``) committed since they were: in proportion to the change, from the change feed. Checking
        costs one PRAGMA when nothing changed."""
        if not self._points.others_committed() and not wrote:
            return
        with self._lock:
            delta = self._points.delta(self._synced, self._synced_num)
            if delta is None:  # the feed no longer reaches back: everything is read again when next needed
                self._records.forget()
                self._filters.forget()
                self._live.forget()
                self._synced, self._synced_num = self._points.generation, self._points.highest_num()
                return
            if self._filters.active:  # the metadata is held: the new points' payloads keep it current
                payloads = [self._points.payload(key, text) for key, text in zip(delta.ids, delta.texts)]
                self._filters.update(delta.removed, delta.nums, payloads)
            self._records.drop(delta.removed)
            if delta.nums:
                self._records.put(delta.nums, delta.ids, delta.texts, [])
            self._live.apply(delta.removed, delta.nums, delta.vectors)
            self._synced = delta.generation
            self._synced_num = max(self._synced_num, delta.nums[-1] if delta.nums else 0)

    def _save_index(self) -> None:
        """Save the live index as reflecting the generation it was caught up to, under the collection's write
        lock: a process saving what it holds can then never label an older index as current. Skipped (the next
        open catches up or rebuilds) while another process holds the lock."""
        try:
            with self.lock_writes(0, describe_this_process()):
                self._sync()
                self._live.save(self._synced)
        except (CollectionBusyError, CollectionReplacedError):
            pass

    # ------------------------------------------------------------ VectorStore (BaseVectorStore checks the input)

    def dimension(self) -> int | None:
        return self._points.dimension

    @_sqlite_errors
    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[Payload]) -> None:
        with self._lock:  # the connection is shared: a search's catch-up must not read inside this transaction
            self._points.write(ids, vectors, payloads)  # the durable truth, committed
            self._sync(wrote=True)

    @_sqlite_errors
    def _delete(self, ids: list[str]) -> None:
        with self._lock:
            if self._points.delete(ids):
                self._sync(wrote=True)

    @_sqlite_errors
    def _get(self, ids: list[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        return self._points.get(ids)

    @_sqlite_errors
    def _search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None) -> RankedList:
        self._sync()
        nums, scores = search.search_nums(self._live, self._filters, self._points, vector, k, filter)
        return records.names(self._records.ready(), self._points, nums, scores) if nums else []

    @_sqlite_errors
    def _search_with_payloads(
        self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[str, float, Payload]]:
        self._sync()
        nums, scores = search.search_nums(self._live, self._filters, self._points, vector, k, filter)
        return records.hits(self._records.ready(), self._points, nums, scores) if nums else []

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        return self._points.scan(batch_size)

    @_sqlite_errors
    def count(self) -> int:
        return self._points.count()

    def check_integrity(self) -> list[str]:
        """SQLite's own integrity check, every vector's size and every payload's JSON, and what opening found wrong
        with the index files (each line names the file or the point)."""
        return [*self._live.load_problems, *self._points.check_integrity()]

    @_sqlite_errors
    def read_manifest(self) -> dict[str, Any] | None:
        return self._points.read_manifest()

    @_sqlite_errors
    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        with self._lock:
            self._points.write_manifest(manifest)
            self._sync(wrote=True)

    @_sqlite_errors
    def close(self) -> None:
        if not self._points.is_open:
            return
        self._sync()
        self._live.close(self._save_index)
        self._points.close()

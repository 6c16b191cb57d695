"""The index in service: kept in step with every write, rebuilt when it no longer fits, saved beside SQLite.

Queries: a build is tuned on query vectors (``tuning``): the served queries once the sample holds MIN_SERVED of
them, else query-like probes the engine makes of sampled stored chunks (``probe_with``). Each query the engine
serves is added to the sample (``record_query``); as they arrive (``query_sample.measure_due``), the index in service
is measured on them in a background thread and its nprobe / efSearch moved to the smallest value that reaches the
aim (a setting: nothing is rebuilt). Only an index that no setting brings to the aim, and that was not already built
on served queries, is retrained. ``served_recall()`` is that measure.

Growth: an "auto" index is retrained when ``policy`` says it no longer fits, or when its recall, measured on new
vectors (``tuning.recall_on_new``), falls below ``target_recall``. The new index is built in a background thread
from a snapshot while the current one keeps answering; writes made meanwhile go to both (journaled, then replayed
onto the new one), and the new index is swapped in under the store's lock. ``optimize()`` (`vecguard optimize`)
rebuilds now; ``wait()`` waits for a background build. The report records how many vectors the index was trained
on, how long the build took, what set it off and the last recall measure.

Deletes: IVF and Flat remove ids; HNSW cannot, so a deleted point stays in the graph (searches skip it through an
id selector, kept with the index file) until a tenth of the graph is deleted, when the index is rebuilt aside.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from vecguard.backends import query_sample, recall_target
from vecguard.protocols import Payload

from . import build, index_file, kinds, policy, tuning
from .options import FaissOptions
from .points import PointTable
from .snapshot import Snapshot, take_snapshot

log = logging.getLogger("vecguard.backends.faiss")
MEASURE_BATCH = 32  # served queries searched per hold of the store's lock while measuring: a search waits for no more
TuningQueries = Callable[[], "tuple[np.ndarray, str] | None"]


@dataclass(frozen=True)
class IndexState:
    """A read-only account of the index in service, for tests, benchmarks and reports."""

    spec: str | None  # the factory string it was built from (None: none built yet)
    trained_on: int  # vectors in the collection when it was built
    tuning: dict[str, Any] | None  # its tuning report (None: not tuned)
    vectors: int  # vectors it holds, deleted HNSW nodes included
    deleted: int  # deleted points an HNSW graph still holds (and searches skip)
    needs_build: bool  # the next search (or close) builds it from SQLite first


class LiveIndex:
    """The only writer of the index, its report and its background work; every critical section holds ``lock``,
    the store's one RLock."""

    def __init__(self, faiss: Any, points: PointTable, options: FaissOptions, lock: threading.RLock) -> None:
        self._faiss = faiss
        self._points = points
        self._options = options
        self._lock = lock  # in-place writes to the live index, and the swap of a retrained one
        self._index: Any = None
        self._spec: str | None = None
        self._tuning: dict[str, Any] | None = None
        self._built_on = 0  # vectors in the collection when the index was last built
        self._dirty = True  # the index does not reflect SQLite: built from it at the next use
        self._deleted: set[int] | None = None  # an HNSW index's deleted nodes (None: the index removes ids itself)
        self._plain = _PlainParams(faiss)
        self._aside: threading.Thread | None = None  # a retraining running in the background
        self._checking: threading.Thread | None = None  # a recall measure running in the background
        self._wanted: str | None = None  # why a recall measure wants a retraining, started by the next write or search
        self._aside_token = 0  # bumped by every build: a background one that was superseded is dropped
        # Writes made while a retraining runs aside: (nums, their vectors), vectors None for a delete.
        self._journal: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._checked_at = 0  # vectors when the recall was last measured (or the index built)
        self._checked_after = 0  # the highest num then: vectors added since have higher nums
        # The highest num the index holds: nums only grow, so a write (this process's or another's, caught up
        # from the change feed) adds only nums above it, and adding one twice is skipped.
        self._highest = 0
        self._files = index_file.IndexFiles(faiss, points, options.index)
        self._served = query_sample.ServedQueries(points.path, options.query_sample, self._measure_served, "FAISS")
        self._make_probes: Callable[[Sequence[Payload]], np.ndarray] | None = None
        self._load()

    # ------------------------------------------------------------ reading it

    @property
    def state(self) -> IndexState:
        with self._lock:
            return IndexState(
                spec=self._spec,
                trained_on=self._built_on,
                tuning=dict(self._tuning) if self._tuning is not None else None,
                vectors=int(self._index.ntotal) if self._index is not None else 0,
                deleted=len(self._deleted or ()),
                needs_build=self._dirty,
            )

    @property
    def spec(self) -> str | None:
        return self._spec

    def report(self) -> dict[str, Any] | None:
        """What the index measured about itself (None: not tuned, or not built)."""
        return dict(self._tuning) if self._tuning and not self._dirty else None

    def exact_search(self) -> bool:
        """True while searches scan every vector (a Flat index): results equal brute force."""
        if not self._dirty and self._spec:
            return self._spec == "Flat"
        return policy.candidates(self._options, self._points.count()) == ["Flat"]

    def ready(self) -> Any:
        """The index to search, built first when SQLite has changed under it (None: nothing stored)."""
        if self._dirty:
            self._rebuild()
        elif self._wanted is not None:
            self._start_wanted()
        return self._index

    def params(self, k: int) -> Any:
        """The FAISS search parameters a plain search of ``k`` uses (None: the defaults); deleted HNSW nodes skipped."""
        return self._plain.get(k, self._spec or "", self._deleted, self.filtered_params)

    def filtered_params(self, k: int, selector: Any, widen: float = 1.0) -> Any:
        """The search parameters through ``selector`` (a filter's holds stored points only, so no deleted one),
        the knob widened ``widen`` times."""
        return kinds.search_parameters(
            self._faiss,
            self._spec,
            self._index,
            self._tuning,
            k,
            nprobe=self._options.nprobe,
            ef_search=self._options.ef_search,
            selector=selector,
            widen=widen,
        )

    # ------------------------------------------------------------ writes

    def apply(self, removed: list[int], added: list[int] | None = None, vectors: np.ndarray | None = None) -> None:
        """Committed writes: ``removed`` nums out of the live index and ``added`` in, in place, or built later.
        Removing a num the index does not hold, or adding one it holds, changes nothing."""
        if self._dirty or self._index is None or not self._index.is_trained:  # an untrained index is built lazily
            self._dirty = True
            return
        with self._lock:
            if removed:
                self._drop(np.asarray(removed, dtype=np.int64))
            id_array = np.asarray(added or [], dtype=np.int64)
            new = id_array > self._highest
            if new.any():
                id_array, vectors = id_array[new], np.ascontiguousarray(vectors[new])
                self._index.add_with_ids(vectors, id_array)
                self._highest = int(id_array.max())
                if self._journal is not None:
                    self._journal.append((id_array, np.array(vectors, dtype=np.float32)))
        self._after_change()

    def forget(self) -> None:
        """The index no longer follows SQLite (the change feed did not reach back): built again at the next use."""
        with self._lock:
            self._aside_token += 1
            self._dirty = True

    def _drop(self, nums: np.ndarray) -> None:
        """Take deleted nums out of the live index (under the lock); an HNSW graph keeps them, skipped."""
        if self._deleted is None:
            self._index.remove_ids(nums)
        else:
            self._deleted.update(nums.tolist())
            self._plain.clear()
        if self._journal is not None:
            self._journal.append((nums, None))

    def _outgrown(self, n: int) -> str | None:
        if self._dirty or self._index is None:
            return None
        return policy.outgrown(self._options, self._spec, self._built_on, n)

    def _after_change(self) -> None:
        """Retrain aside when the live index has outgrown the collection, holds too many deleted nodes, or is due
        a recall measure."""
        with self._lock:  # decided on the index as it is: a retraining swapped in meanwhile would make it stale
            deleted = len(self._deleted or ())
            live = int(self._index.ntotal) - deleted
            reason = self._outgrown(live) or policy.too_many_deleted(deleted, int(self._index.ntotal))
            if reason is not None or self._wanted is not None:
                reason, self._wanted = reason or self._wanted, None
                self._rebuild_aside(reason)
            elif not self._dirty and policy.recall_check_due(self._options, self._spec, self._checked_at, live):
                self._measure_recall_aside()

    # ------------------------------------------------------------ building

    def optimize(self, save: Callable[[], None]) -> dict[str, Any]:
        """Rebuild (train, tune) the index from every stored vector now, then ``save``; returns what was built."""
        self._dirty = True
        self.ready()
        save()
        return {"spec": self._spec, "vectors": self._built_on, **(self._tuning or {})}

    def _rebuild(self) -> None:
        """Build the index from every vector in SQLite, now (a build running aside is superseded)."""
        self._aside_token += 1
        snapshot = take_snapshot(self._points)
        try:
            queries = self._tuning_queries(snapshot)
            built = build.build_best(self._faiss, snapshot, self._options, queries=queries())
            self._install(built, len(snapshot), deleted=set(), highest=int(snapshot.nums[-1]) if len(snapshot) else 0)
        finally:
            snapshot.close()

    def _install(
        self, built: build.Built, built_on: int, *, deleted: set[int], highest: int, checked_after: int | None = None
    ) -> None:
        report = built.tuning
        if report is not None and report.get("tuned_on") == recall_target.SERVED:
            served = {key: report[key] for key in ("recall_at_10", "queries", "nprobe", "ef_search") if key in report}
            report = dict(report, served={**served, "recorded": self._served.sample.recorded(), "measured_at": _now()})
        with self._lock:
            self._index, self._spec, self._tuning, self._built_on = built.index, built.spec, report, built_on
            self._highest = max(self._highest, highest) if built.index is not None else 0
            self._dirty = False
            self._files.outdated()  # a new index: the file on disk is the old one's, whatever generation it reflects
            self._deleted = deleted if kinds.is_hnsw(built.spec) else None
            self._wanted = None
            self._checked_at = built_on
            self._checked_after = checked_after if checked_after is not None else self._points.highest_num()
            self._plain.clear()

    def _rebuild_aside(self, reason: str) -> None:
        """Retrain in a thread while the current index keeps answering; writes made meanwhile are journaled and
        replayed onto the new index before it is swapped in."""
        with self._lock:  # searches in several threads may ask for it at once
            if self._aside is not None and self._aside.is_alive():
                return
            self._aside_token += 1
            token = self._aside_token
            self._journal = []  # started before the snapshot: a write in both is replayed, which leaves it single
            snapshot = take_snapshot(self._points)
            newest = int(snapshot.nums[-1]) if len(snapshot) else 0
            queries = self._tuning_queries(snapshot)

        def run() -> None:
            try:
                built = build.build_best(self._faiss, snapshot, self._options, reason, queries())
            except Exception as exc:  # the old index keeps serving; a later growth or optimize() tries again
                log.warning("retraining the FAISS index aside failed (%s); the current index keeps serving", exc)
                with self._lock:
                    self._journal = None
                return
            finally:
                snapshot.close()
            with self._lock:
                journal, self._journal = self._journal, None
                if token != self._aside_token or built.index is None or journal is None:
                    return  # superseded by a rebuild made in the meantime
                deleted = _replay(journal, built, snapshot)
                self._install(built, len(snapshot), deleted=deleted, highest=newest, checked_after=newest)

        self._aside = threading.Thread(target=run, name="vecguard-faiss-retrain", daemon=True)
        self._aside.start()

    def _measure_recall_aside(self) -> None:
        """The collection grew: measure the live index's recall@10 in a thread, on the served queries once the sample
        holds MIN_SERVED (and retune), else on the vectors stored since the last measure, recorded in the tuning
        report; retrain aside (at the next write or search) when it is below target_recall."""
        if self._served.busy or any(
            thread is not None and thread.is_alive() for thread in (self._aside, self._checking)
        ):
            return
        if self._served.sample.recorded() >= query_sample.MIN_SERVED:  # what users ask is the better measure
            self._checked_at = self._points.count()
            self._served.start(grown=True)
            return
        snapshot = take_snapshot(self._points)
        after, self._checked_after = self._checked_after, int(snapshot.nums[-1]) if len(snapshot) else 0
        self._checked_at = len(snapshot)
        token, target, searched = self._aside_token, self._options.target_recall, []

        def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            with self._lock:
                searched.append(self._index)
                return self._index.search(queries, k, params=self.params(k))

        def run() -> None:
            try:
                measured = tuning.recall_on_new(self._faiss, snapshot, after, search)
            except Exception as exc:
                log.warning("measuring the FAISS index's recall failed (%s); it keeps serving", exc)
                return
            finally:
                snapshot.close()
            if measured is None:
                return
            recall, queries = measured
            with self._lock:
                if token == self._aside_token and self._index is searched[0] and self._tuning is not None:
                    check = {"vectors": len(snapshot), "queries": queries, "recall_at_10": round(recall, 4)}
                    self._tuning = dict(self._tuning, last_check=check)
                    self._files.outdated()  # the report changed: write the state again
            log.info(
                "FAISS index %s: recall@10 %.3f on %d vectors added since the last measure (%d stored)",
                self._spec,
                recall,
                queries,
                len(snapshot),
            )
            if recall < target and token == self._aside_token:
                # Started from the caller's thread: an in-memory store's snapshot reads the store's own connection.
                self._wanted = (
                    f"recall@10 {recall:.3f} on vectors stored since the last measure, below target_recall {target}"
                )

        self._checking = threading.Thread(target=run, name="vecguard-faiss-recall", daemon=True)
        self._checking.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a retraining running aside has been swapped in (or ``timeout`` seconds); True when none is
        left. Recall measures are waited for first: they may want a retraining."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._served.wait(timeout):
            return False
        if not _join(self._checking, deadline):
            return False
        self._start_wanted()
        return _join(self._aside, deadline)

    def _start_wanted(self) -> None:
        if self._wanted is not None and not self._dirty:
            reason, self._wanted = self._wanted, None
            self._rebuild_aside(reason)

    # ------------------------------------------------------------ queries

    def probe_with(self, make_probes: Callable[[Sequence[Payload]], np.ndarray]) -> None:
        """Builds from now on are tuned on ``make_probes(payloads of sampled stored chunks)`` until served queries
        take over (the engine's query-like probes)."""
        self._make_probes = make_probes

    def record_query(self, vector: np.ndarray) -> None:
        """Add a served query's vector to the sample; measure and retune on the sample in the background when due."""
        self._served.record(vector)

    def served_recall(self) -> dict[str, Any] | None:
        """The last measure on served queries: recall@10 at the setting in service, how many queries, when."""
        with self._lock:
            served = (self._tuning or {}).get("served")
            return dict(served) if served else None

    def _tuning_queries(self, snapshot: Snapshot) -> TuningQueries:
        """What a build of ``snapshot`` is tuned on, made when called (in the build's thread): the newest served
        queries once the sample holds MIN_SERVED, else query-like probes of sampled stored chunks (read here, in the
        caller's thread, which owns the store's connection), else None: held-out stored vectors."""
        fixed = self._options.nprobe is not None and self._options.ef_search is not None
        specs = policy.candidates(self._options, len(snapshot))
        if fixed or not any(kinds.is_approximate(spec) for spec in specs):
            return lambda: None
        sample, dimension = self._served.sample, snapshot.dimension
        if sample.recorded() >= query_sample.MIN_SERVED:
            return lambda: (sample.newest(query_sample.MEASURED, dimension), recall_target.SERVED)
        make = self._make_probes
        if make is None or len(snapshot) < query_sample.MIN_PROBES:
            return lambda: None
        rows = np.random.default_rng(len(snapshot)).choice(
            len(snapshot), min(query_sample.QUERY_PROBES, len(snapshot)), replace=False
        )
        found = self._points.rows(snapshot.nums[np.sort(rows)].tolist())
        payloads = [self._points.payload(key, text) for key, text in found.values()]

        def made() -> tuple[np.ndarray, str] | None:
            try:
                vectors = np.asarray(make(payloads), dtype=np.float32)
            except Exception as exc:  # the engine's encoder failed: the build still tunes, on stored vectors
                log.warning("query-like probes could not be made (%s); tuning on held-out stored vectors", exc)
                return None
            return (vectors, recall_target.QUERY_LIKE) if len(vectors) >= query_sample.MIN_PROBES else None

        return made

    def _measure_served(self, recorded: int, grown: bool) -> None:
        """When a measure is due (or the collection ``grown`` since the last one), measure the index in service on
        the newest served queries and move its knob to the smallest value that reaches the aim (``ServedQueries``'
        thread)."""
        with self._lock:
            index, spec, report, token = self._index, self._spec, self._tuning, self._aside_token
            measured_at = ((report or {}).get("served") or {}).get("recorded", 0)
            due = query_sample.measure_due(recorded, measured_at, grown=grown)
            if self._dirty or index is None or not kinds.is_approximate(spec) or _alive(self._aside) or not due:
                return
            selector = self._plain.skipping(self._deleted)
            # In memory the snapshot reads the store's own connection; on disk it opens one of its own.
            snapshot = take_snapshot(self._points) if self._points.path is None else None
        snapshot = snapshot or take_snapshot(self._points)
        try:
            self._retune(index, spec, token, snapshot, selector, recorded)
        finally:
            snapshot.close()

    def _retune(self, index: Any, spec: str, token: int, snapshot: Snapshot, selector: Any, recorded: int) -> None:
        queries = self._served.sample.newest(query_sample.MEASURED, snapshot.dimension)
        if len(queries) < query_sample.MIN_SERVED or not len(snapshot):
            return
        probes = tuning.probes_of(self._faiss, queries, recall_target.SERVED, snapshot)
        knob = "nprobe" if kinds.is_ivf(spec) else "ef_search"
        fixed = getattr(self._options, knob)
        current = kinds.knob_value(
            self._faiss, spec, index, self._tuning, nprobe=self._options.nprobe, ef_search=self._options.ef_search
        )

        def search(vectors: np.ndarray, k: int, params: Any) -> np.ndarray:
            found = []
            for start in range(0, len(vectors), MEASURE_BATCH):
                with self._lock:  # the index takes in-place writes: searched between them, and searches between
                    if self._index is not index:
                        raise _Superseded
                    found.append(index.search(vectors[start : start + MEASURE_BATCH], k, params=params)[1])
            return np.concatenate(found)

        try:
            retuned, before = tuning.retune(
                self._faiss,
                spec,
                index,
                snapshot,
                probes,
                self._options.target_recall,
                search,
                selector.selector if selector is not None else None,
                current,
                fixed=fixed is not None,
            )
        except _Superseded:
            return
        served = {
            "recall_at_10": retuned["recall_at_10"],
            "queries": len(queries),
            "recorded": recorded,
            knob: retuned[knob],
            "before": round(before, 4),
            "measured_at": _now(),
        }
        with self._lock:
            if self._index is not index or token != self._aside_token:
                return
            if fixed is not None or self._tuning is None:
                self._tuning = dict(self._tuning or {}, served=served)
            else:
                retuned.pop("tuned_on")
                self._tuning = {**self._tuning, **retuned, "retuned_on": recall_target.SERVED, "served": served}
                self._plain.clear()
                if not recall_target.reached(retuned) and self._tuning.get("tuned_on") != recall_target.SERVED:
                    self._wanted = (
                        f"recall@10 {retuned['recall_at_10']:.3f} on {len(queries)} served queries at {knob} "
                        f"{retuned[knob]}, short of target_recall {self._options.target_recall}"
                    )
            self._files.outdated()
        log.info(
            "FAISS index %s: recall@10 %.3f on %d served queries at %s %d, %.3f at %s %d before",
            spec,
            served["recall_at_10"],
            len(queries),
            knob,
            retuned[knob],
            before,
            knob,
            current,
        )

    # ------------------------------------------------------------ the files

    @property
    def load_problems(self) -> list[str]:
        """What opening found wrong with the index files and repaired (`vecguard check` reports it)."""
        return self._files.problems

    def _load(self) -> None:
        """The saved index, caught up from the change feed when other writes were committed after it was saved."""
        saved = self._files.load()
        if saved is None:
            return
        self._index, self._spec, self._tuning, self._built_on = saved.index, saved.spec, saved.tuning, saved.built_on
        self._deleted = saved.deleted
        self._checked_at = saved.checked_at
        self._checked_after = saved.checked_after if saved.checked_after is not None else self._points.highest_num()
        self._highest = saved.highest_num if saved.highest_num is not None else self._points.highest_num()
        self._dirty = False
        if saved.generation == self._points.generation:
            return
        delta = self._points.delta(saved.generation, self._highest)
        if delta is not None:
            self.apply(delta.removed, delta.nums, delta.vectors)
        stored, held = self._points.count(), int(self._index.ntotal) - len(self._deleted or ())
        if delta is None or held != stored:
            self._files.problem(
                f"the saved index caught up from generation {saved.generation} holds {held} vectors, "
                f"the database {stored}"
            )
            self._index, self._dirty, self._highest = None, True, 0

    def save(self, generation: int) -> None:
        """Write the index files (on disk only), as reflecting SQLite's ``generation`` (at least), unless nothing
        changed since they were written."""
        if self._dirty or self._index is None:
            return
        self._files.save(
            self._index,
            {
                "spec": self._spec,
                "tuning": self._tuning,
                "built_on": self._built_on,
                "deleted": sorted(self._deleted) if self._deleted is not None else None,
                "checked_at": self._checked_at,
                "checked_after": self._checked_after,
                "highest_num": self._highest,
            },
            generation,
        )

    def close(self, save: Callable[[], None]) -> None:
        """Write the sampled queries, wait for background work and build what is pending or outgrown; then ``save``
        (on disk only: the store saves under the collection's write lock, after catching up)."""
        self.wait()
        if self._points.path is not None:
            if self._outgrown(self._points.count()):
                self._dirty = True
            self.ready()
            save()
        self._served.close()


class _PlainParams:
    """Search parameters without a filter, one SWIG object per (spec, k) rather than one per query, and the
    selector that skips an HNSW graph's deleted nodes; cleared when the index or its deleted set changes."""

    def __init__(self, faiss: Any) -> None:
        self._faiss = faiss
        self._by_spec_and_k: dict[tuple[str, int], Any] = {}
        self._skip_deleted: tuple[Any, ...] | None = None  # the id selector, and the batch it points into

    def get(self, k: int, spec: str, deleted: set[int] | None, build: Callable[[int, Any], Any]) -> Any:
        if (spec, k) in self._by_spec_and_k:
            return self._by_spec_and_k[spec, k]
        selector = None
        if deleted:
            if self._skip_deleted is None:
                batch = self._faiss.IDSelectorBatch(np.fromiter(deleted, np.int64, len(deleted)))
                self._skip_deleted = (self._faiss.IDSelectorNot(batch), batch)  # the Not points into the batch
            selector = self._skip_deleted[0]
        params = self._by_spec_and_k[spec, k] = build(k, selector)
        return params

    def skipping(self, deleted: set[int] | None) -> Any:
        """The selector that skips ``deleted`` (None: nothing to skip), kept alive with what it points into."""
        if not deleted:
            return None
        batch = self._faiss.IDSelectorBatch(np.fromiter(deleted, np.int64, len(deleted)))
        return _Keeping(self._faiss.IDSelectorNot(batch), batch)

    def clear(self) -> None:
        self._by_spec_and_k.clear()
        self._skip_deleted = None


class _Keeping:
    """A FAISS selector and the objects it points into (SWIG does not keep them alive)."""

    def __init__(self, selector: Any, *kept: Any) -> None:
        self.selector, self._kept = selector, kept


class _Superseded(Exception):
    """The index being measured was replaced (a retraining swapped in) before the measure finished."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _alive(thread: threading.Thread | None) -> bool:
    return thread is not None and thread.is_alive()


def _join(thread: threading.Thread | None, deadline: float | None) -> bool:
    if thread is not None:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return False
    return True


def _replay(journal: list[tuple[np.ndarray, np.ndarray | None]], built: build.Built, snapshot: Snapshot) -> set[int]:
    """Apply the writes journaled during a build to the new index; the deleted nodes an HNSW graph now holds."""
    deleted: set[int] = set()
    for nums, vectors in journal:
        if vectors is None:
            if kinds.is_hnsw(built.spec):
                deleted.update(nums.tolist())
            else:
                built.index.remove_ids(nums)
        else:  # a num names one vector for good: one the snapshot holds is in the index already
            fresh = ~np.isin(nums, snapshot.nums)
            if fresh.any():
                built.index.add_with_ids(vectors[fresh], nums[fresh])
    return deleted

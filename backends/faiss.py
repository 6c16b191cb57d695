"""FAISS store: inner product on normalised vectors; ids, vectors and payloads in SQLite.

Options (``[store]``):
    path           folder (none: in memory only)
    index          "auto" (exact Flat while small; once ``ivf_threshold`` vectors make an ANN
                   index worthwhile, IVF or HNSW32, whichever reaches the recall target at the
                   lower latency) or any FAISS factory string ("HNSW32", "IVF256,SQ8")
    auto_candidates  the ANN kinds "auto" builds and compares: ["IVF", "HNSW"] (default), or one
                   of them (["IVF"] halves the build: HNSW32 took as long as IVF at 1M)
    nprobe         IVF cells searched (default: tuned to ``target_recall`` when the index is built)
    target_recall  recall@10 against exact search that the tuned nprobe must reach (default 0.95)
    ef_search      HNSW search breadth (default: tuned to ``target_recall`` when the index is built)
    ivf_threshold  vectors at which "auto" switches from Flat to an ANN index (default 50000)
    on_disk_payload  false (default): every point's id and payload are also held in memory,
                   as one compact JSON record each, built at the first search, so a
                   search reads its hits without touching SQLite (Qdrant's default too);
                   true: each search reads its hits from SQLite (less memory, slower)

Growth: an "auto" index is retrained when the collection crosses
``ivf_threshold``, has grown or shrunk 4x since the index was trained, or
when its recall, measured each time the collection grows by a quarter, falls
below ``target_recall`` (200 of the vectors added since the last measure are
searched through the index and exactly; a stored vector's own hit is left out).
The new index is built in a background thread from a snapshot (a SQLite read
transaction on a connection of its own, read in blocks: no copy of the
collection in memory) while the current one keeps answering; writes made meanwhile go to both (journaled, then
replayed onto the new one), and the new index is swapped in under a lock.
``optimize()`` (`vecguard optimize`) rebuilds now; ``wait_for_index()`` waits
for a background build. The report records how many vectors the index was
trained on, how long the build took, what set it off and the last recall measure.

The choice: "auto" builds each candidate (IVF, HNSW32) from the same snapshot,
tunes each to the recall target on the same held-out vectors, then times them
one query at a time at their tuned settings (two rounds, each candidate in turn
over all queries, the order reversed in the second), and keeps the one
with the lower median, HNSW only when at least 10% faster (it costs more memory
and cannot remove a vector). Both candidates exist while they are compared.

Deletes: IVF and Flat remove ids; HNSW cannot, so a deleted point stays in the
graph (searches skip it through an id selector, kept with the index file) until
a tenth of the graph is deleted, when the index is rebuilt aside. A replaced
point gets a new row number, so a number always names the same vector.

Tuning: when an IVF index is built without a fixed nprobe (or an HNSW index
without a fixed ef_search), 200 stored vectors (fixed seed; a quarter of a
small collection) are held out of the index, searched exactly against the rest
and through the index at nprobe 1, 2, 4, ... nlist (efSearch 16, 32, ... 1024),
then bisected, and added afterwards; the smallest value whose recall@10 (ties at
the 10th score counted as found) reaches halfway from ``target_recall`` to 1 is
kept with the index, and ``index_report()`` hands the measurement to the
engine's manifest.

SQLite (stdlib) is the durable truth: every upsert and delete commits there
with a generation number. The FAISS index is derived from it and saved
atomically (temp file, fsync, rename) with the generation it reflects, its
CRC-32 and the collection's id (kept in SQLite); on open a missing, stale,
damaged or foreign index is rebuilt from SQLite (with a warning, and a line for
`check_integrity`), so a crash or a stray copy never leaves a half-written or
out-of-step index. SQLite's errors are mapped to vecguard's at every method
(a damaged page or payload is a CorruptCollectionError naming the file and point),
and a manifest.json without its points.sqlite3 (deleted or emptied) is refused. String ids map to SQLite row numbers used
as FAISS int64 ids (IVF indexes hold them natively, others through IndexIDMap2).
Filtered search restricts FAISS with an id selector instead of over-fetching. On
an IVF or HNSW index a selective filter would leave the tuned nprobe (efSearch)
with few or none of the allowed points (measured: 0.14 of 10 hits when 20 of
20,000 points matched): up to FILTER_EXACT_MAX allowed points are scored
exactly from SQLite; beyond it the search widens by the inverse of the share
allowed, and falls back to exact when it still comes back short.

Payloads in memory: reading 10 random hits from SQLite took 36 us at 100k
points (one B-tree walk per hit) and JSON-decoding them 25 us, against 40 to
130 us for the FAISS call itself; from the in-memory records, decoded by
orjson, they cost about 7 us. The records are a cache of SQLite, updated by
every write once built, and cost the payload's JSON size plus ~40 bytes a point.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from vecguard import filters
from vecguard.atomic import canonical_json, fsync_directory, write_json_atomically
from vecguard.config import is_positive_int, resolve_path, take_options
from vecguard.errors import ConfigError, CorruptCollectionError, StorageError
from vecguard.protocols import Payload, RankedList, check_batch, check_query
from vecguard.registry import Part, hookimpl

try:
    import orjson
except ImportError:  # the faiss extra installs it; json reads the same records, 3x slower
    orjson = None

log = logging.getLogger(__name__)
SQL_BATCH = 500
RETRAIN_GROWTH = 4  # an "auto" IVF index is retrained once the collection is this many times larger (or smaller)
MMAP_BYTES = 1 << 31  # SQLite's own ceiling unless compiled otherwise
# orjson reads an integer beyond 64 bits as a float, where json keeps it: a record that might hold one is kept as
# str and read by json (a run of 19 digits inside a string sends it there too, which only costs speed).
_LONG_DIGITS = re.compile(r"\d{19}")
ADD_BLOCK = 1 << 16  # vectors per add_with_ids call while the tuning sample is held out
TUNING_QUERIES = 200
HNSW_CANDIDATE = "HNSW32"
HNSW_MARGIN = 0.9  # "auto" keeps HNSW only at <= 90% of IVF's latency: it holds more memory and cannot remove ids
DELETED_SHARE = 0.1  # an HNSW index is rebuilt once this share of its nodes are deleted points
RECALL_CHECK_GROWTH = (
    1.25  # an "auto" index measures its recall on new vectors each time the collection grows this much
)
DEFAULT_EF_SEARCH = 128  # an HNSW index loaded without a tuning (written by an earlier version)
HNSW_MAX_EF_SEARCH = 1024
FILTER_MAX_EF_SEARCH = 4096  # the widest a filtered HNSW search goes before it is answered exactly
# A filter letting at most this many points through is answered exactly from SQLite when the index is approximate
# (Qdrant's full_scan_threshold is the same idea): an IVF or HNSW search restricted to a few points finds few of them.
FILTER_EXACT_MAX = 2_000
ALLOWED_CACHE = 32  # filters whose allowed points are kept between searches,
ALLOWED_KEPT = 2_000_000  # as long as they hold this many points in all (sets: about 40 bytes a point)
TUNING_K = 10
_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    vector BLOB NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
DATABASE = "points.sqlite3"
RESTORE = "restore the folder from a backup, or delete it and index again"


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
            raise self._storage_error(exc) from exc

    return mapped


class FaissStore:
    def __init__(
        self,
        path: Path | None,
        *,
        index: str = "auto",
        nprobe: int | None = None,
        target_recall: float = 0.95,
        ef_search: int | None = None,
        ivf_threshold: int = 50_000,
        on_disk_payload: bool = False,
        auto_candidates: Sequence[str] = ("IVF", "HNSW"),
    ) -> None:
        self._faiss = _import_faiss()
        self._path = path
        self._spec = index
        self._nprobe = nprobe
        self._target_recall = target_recall
        self._tuning: dict[str, Any] | None = None
        self._built_on = 0  # vectors in the collection when the index was last built
        self._lock = threading.RLock()  # in-place writes to the live index, and the swap of a retrained one
        self._aside: threading.Thread | None = None  # a retraining running in the background
        self._checking: threading.Thread | None = None  # a recall measure running in the background
        self._wanted: str | None = None  # why a recall measure wants a retraining, started by the next write or search
        self._aside_token = 0  # bumped by every build: a background one that was superseded is dropped
        # Writes made while a retraining runs aside: (nums, their vectors), vectors None for a delete.
        self._journal: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._ef_search = ef_search
        self._ivf_threshold = ivf_threshold
        self._auto_candidates = tuple(auto_candidates)
        self._deleted: set[int] | None = None  # an HNSW index's deleted nodes (None: the index removes ids itself)
        self._skip_deleted: tuple[Any, ...] | None = None  # the id selector over them, and what it holds on to
        self._checked_at = 0  # vectors when the recall was last measured (or the index built)
        self._checked_after = 0  # the highest num then: vectors added since have higher nums
        self._database = str(path / DATABASE) if path is not None else ":memory:"
        # What opening found wrong with the derived index files and repaired (`vecguard check` reports it).
        self._load_problems: list[str] = []
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            if (path / "manifest.json").exists() and not (path / DATABASE).exists():
                raise CorruptCollectionError(
                    f"{path / DATABASE} is missing, and with it every vector and payload of the collection whose "
                    f"manifest.json is beside it; {RESTORE}"
                )
        try:
            self._db = sqlite3.connect(self._database, isolation_level=None, check_same_thread=False)
            if path is not None:
                if (path / "manifest.json").exists() and not self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'points'"
                ).fetchone():
                    self._db.close()
                    raise CorruptCollectionError(
                        f"{self._database} holds no points table (emptied or replaced), though manifest.json beside "
                        f"it describes a collection; {RESTORE}"
                    )
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                # Reads through a memory map skip a copy per page: reading 10 hits' ids and payloads
                # from a 1M-point collection took 46 us without it, 29 us with it (measured).
                self._db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            self._db.executescript(_SCHEMA)
            # Names this collection in its index files, so that one copied from another collection is not taken.
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) SELECT 'collection', ? WHERE NOT EXISTS "
                "(SELECT 1 FROM points)",
                (uuid.uuid4().hex,),
            )
        except sqlite3.DatabaseError as exc:
            raise CorruptCollectionError(
                f"{self._database} is not a readable SQLite database ({exc}); it holds the collection's vectors and "
                f"payloads: {RESTORE}"
            ) from exc
        self._index: Any = None
        self._index_spec: str | None = None
        self._dirty = True
        self._saved: tuple[int, str | None] | None = None  # (generation, spec) of the index file on disk
        self._metadata: dict[int, dict[str, Any]] | None = None
        self._allowed: OrderedDict[str, tuple[filters.Predicate, set[int]]] = OrderedDict()  # see _allowed_nums
        self._allowed_arrays: dict[str, _Allowed] = {}  # the kept sets as arrays, with their selectors
        self._on_disk_payload = on_disk_payload
        self._records: list[bytes | str | None] | None = None  # by num: [id, payload] as JSON; see _ready_records
        self._params: dict[tuple[str, int], Any] = {}  # search parameters without a selector, by (index spec, k)
        dim = self._meta("dimension")
        self._dimension: int | None = int(dim) if dim is not None else None
        self._load_saved_index()

    # ------------------------------------------------------------ sqlite

    def _storage_error(self, exc: sqlite3.DatabaseError) -> StorageError:
        text = str(exc)
        if "malformed" in text or "not a database" in text:
            return CorruptCollectionError(f"{self._database} is damaged ({text}); run `vecguard check`, then {RESTORE}")
        if "full" in text:
            return StorageError(
                f"{self._database}: the disk is full ({text}); everything committed before is kept: "
                f"free some space and run the same command again"
            )
        return StorageError(f"{self._database}: {text}")

    def _payload(self, key: Any, text: str) -> Payload:
        """A stored payload, decoded; a record that is not a JSON object is named."""
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise CorruptCollectionError(
                f"{self._database}: the payload of point {key!r} is not valid JSON ({exc}); {RESTORE}"
            ) from exc
        if not isinstance(payload, dict):
            raise CorruptCollectionError(
                f"{self._database}: the payload of point {key!r} is {type(payload).__name__}, not an object; {RESTORE}"
            )
        return payload

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def _generation(self) -> int:
        return int(self._meta("generation") or 0)

    def _bump_generation(self) -> None:
        self._set_meta("generation", str(self._generation + 1))

    # ------------------------------------------------------------ the FAISS index

    def _index_files(self) -> tuple[Path, Path] | None:
        if self._path is None:
            return None
        return self._path / "index.faiss", self._path / "index.json"

    def _index_problem(self, problem: str) -> None:
        """A saved index file that cannot be used: logged, kept for `vecguard check`, and rebuilt from SQLite."""
        self._load_problems.append(f"{problem}; rebuilt from {DATABASE}")
        log.warning("%s; rebuilding the index from %s", problem, DATABASE)

    def _load_saved_index(self) -> None:
        files = self._index_files()
        if files is None or not files[0].exists() or not files[1].exists():
            return
        try:
            state = json.loads(files[1].read_text(encoding="utf-8"))
            if not isinstance(state, dict) or not isinstance(state.get("generation"), int):
                raise ValueError(f"a {type(state).__name__} without a whole-number generation")
        except (OSError, ValueError) as exc:
            self._index_problem(f"{files[1]} is unreadable ({exc})")
            return
        if state.get("generation") != self._generation or state.get("requested") != self._spec:
            return  # stale: rebuilt from SQLite on first use
        if "collection" in state and state["collection"] != self._meta("collection"):  # earlier versions named none
            self._index_problem(
                f"{files[0]} belongs to another collection (index.json names {state.get('collection')!r})"
            )
            return
        # Checked before FAISS parses the file: a damaged header can ask it for any amount of memory.
        if "crc32" in state and state["crc32"] != _file_crc32(files[0]):
            self._index_problem(
                f"{files[0]} does not match the checksum index.json recorded for it (damaged or replaced)"
            )
            return
        try:
            index = self._faiss.read_index(str(files[0]))
        except RuntimeError as exc:
            self._index_problem(f"{files[0]} is unreadable ({str(exc).splitlines()[0]})")
            return
        if isinstance(index, self._faiss.IndexIDMap) and _holds_its_own_ids(
            self._faiss, self._faiss.downcast_index(index.index)
        ):
            self._index_problem(
                f"{files[0]} wraps an IVF index in an id map, which earlier vecguard versions wrote and "
                f"which answers with wrong ids after a delete"
            )
            return
        deleted = state.get("deleted") if isinstance(state.get("deleted"), list) else []
        if index.ntotal != self.count() + (len(deleted) if "HNSW" in str(state.get("spec")) else 0):
            self._index_problem(f"{files[0]} holds {index.ntotal} vectors, {DATABASE} {self.count()}")
            return
        self._index = index
        self._index_spec = state.get("spec")
        self._tuning = state.get("tuning")
        self._built_on = int(state.get("built_on") or self._index.ntotal)
        self._deleted = set(deleted) if "HNSW" in (self._index_spec or "") else None
        self._checked_at = int(state.get("checked_at") or self._built_on)
        self._checked_after = int(state["checked_after"]) if "checked_after" in state else self._highest_num()
        self._dirty = False
        self._saved = (self._generation, self._index_spec)

    def _candidates(self, n: int) -> list[str]:
        """The index specs worth building for ``n`` vectors: the one asked for, or "auto"'s choice(s)."""
        if self._spec != "auto":
            return [self._spec]
        if n < self._ivf_threshold:
            return ["Flat"]
        # 4*sqrt(n) cells, but at least 39 training points per cell (FAISS's own floor for sound k-means).
        nlist = max(16, min(int(4 * math.sqrt(n)), n // 39))
        specs = {"IVF": f"IVF{nlist},Flat", "HNSW": HNSW_CANDIDATE}
        return [specs[kind] for kind in self._auto_candidates]

    def _outgrown(self, n: int) -> str | None:
        """Why an "auto" index no longer fits the collection, if it does not: Flat past ivf_threshold (or an ANN
        index below it), or an ANN index trained on a collection 4x smaller or larger."""
        if self._spec != "auto" or self._dirty or self._index is None:
            return None
        flat_now, flat_wanted = self._index_spec == "Flat", self._candidates(n) == ["Flat"]
        if flat_now != flat_wanted:
            return f"the collection ({n} vectors) crossed ivf_threshold ({self._ivf_threshold})"
        built = self._built_on
        if not flat_now and built > 0 and (n >= RETRAIN_GROWTH * built or n * RETRAIN_GROWTH <= built):
            return (
                f"the collection changed {RETRAIN_GROWTH}x in size since the index was trained ({built} -> {n} vectors)"
            )
        return None

    def _recall_check_due(self, n: int) -> bool:
        return (
            self._spec == "auto"
            and not self._dirty
            and self._index_spec not in (None, "Flat")
            and self._checked_at > 0
            and n >= RECALL_CHECK_GROWTH * self._checked_at
        )

    @_sqlite_errors
    def optimize(self) -> dict[str, Any]:
        """Rebuild (train, tune) the index from every stored vector now and save it; returns what was built."""
        self._dirty = True
        self._ready_index()
        self._save_index()
        return {"spec": self._index_spec, "vectors": self._built_on, **(self._tuning or {})}

    def _rebuild(self) -> None:
        """Build the index from every vector in SQLite, now (a build running aside is superseded)."""
        self._aside_token += 1
        snapshot = self._snapshot()
        try:
            self._install(*self._build_best(snapshot), deleted=set())
        finally:
            snapshot.close()

    def _snapshot(self) -> _Snapshot:
        """The stored vectors as of now. On disk they are read from a SQLite read transaction of their own, in
        blocks, while writes go on: a copy of the collection in memory beside the old index and the new one
        would make a retraining hold three copies of every vector."""
        if self._dimension is None:  # nothing was ever written
            return _Snapshot(0, nums=np.zeros(0, np.int64), vectors=np.zeros((0, 0), np.float32))
        if self._path is None:
            nums, vectors = self._all_vectors()
            return _Snapshot(self._dimension, nums=nums, vectors=vectors)
        return _Snapshot(self._dimension, database=self._path / "points.sqlite3")

    def _build_best(
        self, snapshot: _Snapshot, reason: str | None = None
    ) -> tuple[Any, str, dict[str, Any] | None, int]:
        """(index, spec, tuning, vectors built on): each candidate built and tuned, the fastest at the aim kept."""
        started = time.perf_counter()
        built = [self._build_index(spec, snapshot) for spec in self._candidates(len(snapshot))]
        index, spec, tuning, held = built[0] if len(built) == 1 else self._fastest(built, snapshot)
        if len(held):
            index.add_with_ids(snapshot.take(held), snapshot.nums[held])
        if tuning is not None:
            tuning["build_s"] = round(time.perf_counter() - started, 2)
            if reason:
                tuning["reason"] = reason
        return index, spec, tuning, len(snapshot)

    def _build_index(self, spec: str, snapshot: _Snapshot) -> tuple[Any, str, dict[str, Any] | None, np.ndarray]:
        """(index, spec, tuning, held) from a snapshot: the rows in ``held`` tuned the index and are not in it
        yet. Touches no state, so it can run in a thread."""
        faiss = self._faiss
        started = time.perf_counter()
        nums = snapshot.nums
        n = len(nums)
        nothing = np.zeros(0, np.int64)
        if not snapshot.dimension:
            return None, spec, None, nothing
        try:
            base = faiss.index_factory(snapshot.dimension, spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(f"[store] faiss index {spec!r} is not a valid FAISS factory string: {exc}") from exc
        index = base if _holds_its_own_ids(faiss, base) else faiss.IndexIDMap2(base)
        if not base.is_trained:
            if n < 1:
                return None, spec, None, nothing
            try:
                index.train(self._training_sample(base, snapshot))
            except RuntimeError as exc:
                raise StorageError(
                    f'FAISS index {spec!r} cannot be trained on {n} vectors ({exc}); add more documents or use index = "auto"'
                ) from exc
        tunable = ("IVF" in spec and self._nprobe is None) or ("HNSW" in spec and self._ef_search is None)
        held = (
            np.sort(np.random.default_rng(0).choice(n, size=min(TUNING_QUERIES, n // 4), replace=False))
            if tunable
            else nothing
        )
        if not len(held):
            for start, block in snapshot.blocks():
                index.add_with_ids(block, nums[start : start + len(block)])
            return index, spec, None, nothing
        # Tuned on stored vectors kept out of the index until it is tuned: a vector already in the index finds
        # its neighbours far more easily than a new query (an HNSW node is linked to them).
        rest = np.ones(n, dtype=bool)
        rest[held] = False
        for start, block in snapshot.blocks():
            keep = rest[start : start + len(block)]
            index.add_with_ids(block[keep], nums[start : start + len(block)][keep])
        tuning = self._tune(index, spec, snapshot, held)
        tuning["build_s"] = round(time.perf_counter() - started, 2)
        return index, spec, tuning, held

    def _fastest(
        self,
        built: list[tuple[Any, str, dict[str, Any] | None, np.ndarray]],
        snapshot: _Snapshot,
    ) -> tuple[Any, str, dict[str, Any] | None, np.ndarray]:
        """The candidate that reaches the aim at the lowest median latency over the held-out queries, one at a time.
        Timed in two rounds, every query on one candidate and then on the other, the order reversed in the second:
        a candidate keeps its own data in cache as it would serving, and a noisy machine slows both alike.
        With none at the aim, the best recall."""
        queries = snapshot.take(built[0][3])
        params = [self._params_for(spec, index, tuning, TUNING_K) for index, spec, tuning, _ in built]
        times: list[list[float]] = [[] for _ in built]
        order = list(range(len(built)))
        for turn in (order, order[::-1]):
            for i in turn:
                index = built[i][0]
                for query in queries:
                    started = time.perf_counter()
                    index.search(query.reshape(1, -1), TUNING_K, params=params[i])
                    times[i].append(time.perf_counter() - started)
        p50s = [float(np.median(t)) * 1000 for t in times]
        # HNSW has to be clearly faster: it holds more memory, cannot remove a vector and adds more slowly.
        costs = [p50 / HNSW_MARGIN if "HNSW" in spec else p50 for p50, (_, spec, _, _) in zip(p50s, built)]
        reached = [
            i for i, (_, _, tuning, _) in enumerate(built) if tuning and tuning["recall_at_10"] >= tuning["aimed_at"]
        ]
        if reached:
            best = min(reached, key=lambda i: costs[i])
        else:
            best = max(range(len(built)), key=lambda i: (built[i][2] or {}).get("recall_at_10", 0.0))
        compared = {}
        for (_, spec, tuning, _), p50 in zip(built, p50s):
            knob = {key: tuning[key] for key in ("nprobe", "ef_search") if key in tuning} if tuning else {}
            compared[spec] = {
                **knob,
                "recall_at_10": (tuning or {}).get("recall_at_10"),
                "p50_ms": round(p50, 4),
                "build_s": (tuning or {}).get("build_s"),
            }
        index, spec, tuning, held = built[best]
        tuning = dict(tuning or {}, candidates=compared)
        log.info("FAISS auto index: kept %s of %s", spec, compared)
        return index, spec, tuning, held

    def _install(
        self,
        index: Any,
        spec: str,
        tuning: dict[str, Any] | None,
        built_on: int,
        *,
        deleted: set[int],
        checked_after: int | None = None,
    ) -> None:
        with self._lock:
            self._index, self._index_spec, self._tuning, self._built_on, self._dirty = (
                index,
                spec,
                tuning,
                built_on,
                False,
            )
            self._saved = None  # a new index: the file on disk is the old one's, whatever generation it reflects
            self._deleted = deleted if "HNSW" in spec else None
            self._skip_deleted = None
            self._wanted = None
            self._checked_at = built_on
            self._checked_after = checked_after if checked_after is not None else self._highest_num()
            self._params.clear()

    def _highest_num(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(num), 0) FROM points").fetchone()[0])

    def _rebuild_aside(self, reason: str) -> None:
        """Retrain in a thread while the current index keeps answering; writes made meanwhile are journaled and
        replayed onto the new index before it is swapped in."""
        with self._lock:  # searches in several threads may ask for it at once
            if self._aside is not None and self._aside.is_alive():
                return
            self._aside_token += 1
            token = self._aside_token
            self._journal = []  # started before the snapshot: a write in both is replayed, which leaves it single
            snapshot = self._snapshot()
            newest = int(snapshot.nums[-1]) if len(snapshot) else 0

        def build() -> None:
            try:
                built = self._build_best(snapshot, reason)
            except Exception as exc:  # the old index keeps serving; a later growth or optimize() tries again
                log.warning("retraining the FAISS index aside failed (%s); the current index keeps serving", exc)
                with self._lock:
                    self._journal = None
                return
            finally:
                snapshot.close()
            with self._lock:
                journal, self._journal = self._journal, None
                if token != self._aside_token or built[0] is None or journal is None:
                    return  # superseded by a rebuild made in the meantime
                index, spec = built[0], built[1]
                deleted: set[int] = set()
                for nums, vectors in journal:
                    if vectors is None:
                        if "HNSW" in spec:
                            deleted.update(nums.tolist())
                        else:
                            index.remove_ids(nums)
                    else:  # a num names one vector for good: one the snapshot holds is in the index already
                        fresh = ~np.isin(nums, snapshot.nums)
                        if fresh.any():
                            index.add_with_ids(vectors[fresh], nums[fresh])
                self._install(*built, deleted=deleted, checked_after=newest)

        self._aside = threading.Thread(target=build, name="vecguard-faiss-retrain", daemon=True)
        self._aside.start()

    def _measure_recall_aside(self) -> None:
        """Measure the live index's recall on the vectors stored since the last measure, in a thread; retrain aside
        when it is below target_recall."""
        if any(thread is not None and thread.is_alive() for thread in (self._aside, self._checking)):
            return
        snapshot = self._snapshot()
        after, self._checked_after = self._checked_after, int(snapshot.nums[-1]) if len(snapshot) else 0
        self._checked_at = len(snapshot)
        token = self._aside_token

        def measure() -> None:
            try:
                recall = self._measure_recall(snapshot, after, token)
            except Exception as exc:
                log.warning("measuring the FAISS index's recall failed (%s); it keeps serving", exc)
                return
            finally:
                snapshot.close()
            if recall is not None and recall < self._target_recall and token == self._aside_token:
                # Started from the caller's thread: an in-memory store's snapshot reads the store's own connection.
                self._wanted = (
                    f"recall@10 {recall:.3f} on vectors stored since the last measure, below "
                    f"target_recall {self._target_recall}"
                )

        self._checking = threading.Thread(target=measure, name="vecguard-faiss-recall", daemon=True)
        self._checking.start()

    def _measure_recall(self, snapshot: _Snapshot, after_num: int, token: int) -> float | None:
        """Recall@10 of the live index for up to 200 of the snapshot's vectors with nums above ``after_num`` (stored
        since the last measure), each query's own hit left out on both sides; recorded in the tuning report."""
        fresh = np.flatnonzero(snapshot.nums > after_num)
        k = min(TUNING_K, len(snapshot) - 1)
        if not len(fresh) or k < 1:
            return None
        rows = np.sort(
            np.random.default_rng(len(snapshot)).choice(fresh, size=min(TUNING_QUERIES, len(fresh)), replace=False)
        )
        queries, own = snapshot.take(rows), snapshot.nums[rows]
        last_true = self._exact_kth(queries, snapshot, k, own=own)
        with self._lock:
            index, params = self._index, self.search_params(k + 1)
            scores, found = index.search(queries, k + 1, params=params)
        answer = (found >= 0) & (found != own[:, None])
        answer &= np.cumsum(answer, axis=1) <= k  # the first k hits besides the query's own
        recall = float(np.count_nonzero(answer & (scores >= last_true[:, None])) / (k * len(rows)))
        with self._lock:
            if token == self._aside_token and self._index is index and self._tuning is not None:
                self._tuning = dict(
                    self._tuning,
                    last_check={"vectors": len(snapshot), "queries": len(rows), "recall_at_10": round(recall, 4)},
                )
                self._saved = None  # the report changed: write the state again
        log.info(
            "FAISS index %s: recall@10 %.3f on %d vectors added since the last measure (%d stored)",
            self._index_spec,
            recall,
            len(rows),
            len(snapshot),
        )
        return recall

    def wait_for_index(self, timeout: float | None = None) -> bool:
        """Block until a retraining running aside has been swapped in (or ``timeout`` seconds); True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for name in ("_checking", "_aside"):  # a recall measure may want a retraining
            if name == "_aside":
                self._start_wanted()
            thread = getattr(self, name)
            if thread is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    return False
        return True

    def _start_wanted(self) -> None:
        if self._wanted is not None and not self._dirty:
            reason, self._wanted = self._wanted, None
            self._rebuild_aside(reason)

    def _training_sample(self, base: Any, snapshot: _Snapshot) -> np.ndarray:
        """At most 64 vectors per IVF cell (FAISS asks for 39): k-means over every vector of a large
        collection costs minutes and buys nothing measurable."""
        n = len(snapshot)
        ivf = self._faiss.try_extract_index_ivf(base)
        limit = 64 * ivf.nlist if ivf is not None else n
        rows = np.arange(n) if n <= limit else np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))
        return snapshot.take(rows)

    def _exact_kth(
        self,
        queries: np.ndarray,
        snapshot: _Snapshot,
        k: int,
        *,
        left_out: np.ndarray | None = None,
        own: np.ndarray | None = None,
    ) -> np.ndarray:
        """Each query's k-th best exact score over the snapshot (less a rounding allowance), read block by block,
        without the rows marked in ``left_out`` and without each query's ``own`` num."""
        faiss = self._faiss
        best = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        for start, block in snapshot.blocks():
            block_nums = snapshot.nums[start : start + len(block)]
            if left_out is not None:
                keep = ~left_out[start : start + len(block)]
                block, block_nums = block[keep], block_nums[keep]
            if not len(block):
                continue
            scores, rows = faiss.knn(
                queries, block, min(k + (own is not None), len(block)), metric=faiss.METRIC_INNER_PRODUCT
            )
            if own is not None:
                scores[block_nums[rows] == own[:, None]] = -np.inf
            best = -np.sort(-np.hstack([best, scores]), axis=1)[:, :k]
        return best[:, k - 1] - 1e-6

    def _tune(self, index: Any, spec: str, snapshot: _Snapshot, held: np.ndarray) -> dict[str, Any]:
        """The smallest nprobe (IVF) or efSearch (HNSW) whose recall@10 for the ``held`` rows (not in the index yet)
        against exact search over the other rows (the index's contents) reaches the aim (see below)."""
        faiss = self._faiss
        nums = snapshot.nums
        queries = snapshot.take(held)
        k = min(TUNING_K, len(nums) - len(held))
        if "IVF" in spec:
            nlist = faiss.extract_index_ivf(index).nlist
            knob, described, floor, ceiling = "nprobe", {"nlist": nlist}, 0, nlist
            candidates = sorted({min(nlist, 2**i) for i in range(int(math.log2(nlist)) + 2)})

            def params(value: int) -> Any:
                return faiss.SearchParametersIVF(nprobe=value)
        else:
            knob, described, floor, ceiling = "ef_search", {}, k - 1, HNSW_MAX_EF_SEARCH
            candidates = [2**i for i in range(4, int(math.log2(HNSW_MAX_EF_SEARCH)) + 1)]

            def params(value: int) -> Any:
                return faiss.SearchParametersHNSW(efSearch=max(value, k))

        def report(value: int, recall: float, aim: float) -> dict[str, Any]:
            return {
                knob: value,
                "recall_at_10": round(recall, 4),
                "aimed_at": round(aim, 4),
                "target_recall": self._target_recall,
                "queries": len(queries),
                **described,
                "vectors": len(nums),
            }

        is_held = np.zeros(len(nums), dtype=bool)
        is_held[held] = True
        last_true = self._exact_kth(queries, snapshot, k, left_out=is_held)

        stored: dict[int, np.ndarray] = {}  # the vectors of nums found so far, read once across every knob value

        def recall_at(value: int) -> float:
            _, found = index.search(queries, k, params=params(value))
            # Scored against the stored vectors: an index that codes its vectors (SQ8, PQ) reports approximate scores.
            wanted = np.setdiff1d(found[found >= 0], np.fromiter(stored, np.int64, len(stored)))
            stored.update(zip(wanted.tolist(), snapshot.take(np.searchsorted(nums, wanted))))
            hits = 0
            for row, numbers in enumerate(found):
                scores = np.array([stored[number] @ queries[row] for number in numbers[numbers >= 0].tolist()])
                hits += min(k, int(np.count_nonzero(scores >= last_true[row])))
            return hits / (k * len(queries))

        # 200 queries measure recall to about +-0.015, and new queries are not the stored ones: aim halfway
        # between the target and 1. Double the knob until the aim is met, then bisect down.
        aim = self._target_recall + (1 - self._target_recall) / 2
        measured: dict[int, float] = {}
        low, high = floor, ceiling
        for value in candidates:
            measured[value] = recall_at(value)
            if measured[value] >= aim:
                high = value
                break
            low = value
        while high - low > 1 and measured.get(high, 0.0) >= aim:
            middle = (low + high) // 2
            measured[middle] = recall_at(middle)
            low, high = (low, middle) if measured[middle] >= aim else (middle, high)
        chosen = high if measured.get(high, 0.0) >= aim else max(measured, key=lambda v: (measured[v], -v))
        if measured[chosen] < aim:
            log.warning(
                "FAISS index %s reaches recall@10 %.3f at most on held-out stored vectors (%s %d), short of %.3f "
                "(target_recall %.2f plus margin)",
                spec,
                measured[chosen],
                knob,
                chosen,
                aim,
                self._target_recall,
            )
        return report(chosen, measured[chosen], aim)

    @_sqlite_errors
    def index_report(self) -> dict[str, Any] | None:
        """What the index measured about itself (the tuned nprobe and its recall), building anything pending
        first when the store is kept on disk (closing would build it anyway)."""
        if self._db is None:
            return None
        if self._path is not None:
            self._ready_index()
        return dict(self._tuning) if self._tuning and not self._dirty else None

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector in one array (the in-memory store's snapshot, and scans)."""
        # Row by row into arrays sized up front: fetchall() would hold every blob as well (1.5 GB more at 1M vectors).
        n = self.count()
        nums = np.empty(n, dtype=np.int64)
        vectors = np.empty((n, self._dimension or 0), dtype=np.float32)
        for i, (num, blob) in enumerate(self._db.execute("SELECT num, vector FROM points ORDER BY num")):
            nums[i] = num
            vectors[i] = np.frombuffer(blob, dtype="<f4")
        return nums, vectors

    def _ready_index(self) -> Any:
        if self._dirty:
            self._rebuild()
        elif self._wanted is not None:
            self._start_wanted()
        return self._index

    def _can_update_in_place(self) -> bool:
        # An untrained index cannot take vectors: it is built lazily.
        return not self._dirty and self._index is not None and self._index.is_trained

    def _save_index(self) -> None:
        files = self._index_files()
        if files is None or self._dirty or self._index is None or self._saved == (self._generation, self._index_spec):
            return  # nothing changed since the file was written: a read-only open writes nothing
        index_file, state_file = files
        tmp = index_file.with_name(f".{index_file.name}.tmp")
        try:
            checksum = 0
            with open(tmp, "wb") as f:

                def write(block: bytes) -> int:  # FAISS writes through this: the checksum costs no second read
                    nonlocal checksum
                    checksum = zlib.crc32(block, checksum)
                    return f.write(block)

                self._faiss.write_index(self._index, self._faiss.PyCallbackIOWriter(write))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, index_file)
            fsync_directory(index_file.parent)
            write_json_atomically(
                state_file,
                {
                    "generation": self._generation,
                    "spec": self._index_spec,
                    "requested": self._spec,
                    "tuning": self._tuning,
                    "built_on": self._built_on,
                    "deleted": sorted(self._deleted) if self._deleted is not None else None,
                    "checked_at": self._checked_at,
                    "checked_after": self._checked_after,
                    "collection": self._meta("collection"),
                    "crc32": checksum,
                },
            )
        except (OSError, RuntimeError) as exc:  # derived data: the next open rebuilds it from SQLite
            tmp.unlink(missing_ok=True)
            log.warning(
                "could not save the FAISS index to %s (%s); the next open rebuilds it from %s",
                index_file,
                str(exc).splitlines()[0],
                DATABASE,
            )
            return
        self._saved = (self._generation, self._index_spec)

    # ------------------------------------------------------------ VectorStore

    @property
    def exact_search(self) -> bool:
        """True while searches scan every vector (a Flat index): results equal brute force."""
        if not self._dirty and self._index_spec:
            return self._index_spec == "Flat"
        return self._candidates(self.count()) == ["Flat"]

    @_sqlite_errors
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload]) -> None:
        vectors = check_batch(ids, vectors, payloads, self._dimension)
        if not len(ids):
            return
        blobs = [v.astype("<f4").tobytes() for v in vectors]
        texts = [canonical_json(p) for p in payloads]
        nums: list[int] = []
        replaced: list[int] = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._dimension is None:
                self._set_meta("dimension", str(vectors.shape[1]))
            existing = self._nums(ids)
            for key, blob, text in zip(ids, blobs, texts):
                if key in existing:  # a new num: an HNSW graph cannot change or drop a node, only skip it
                    db.execute("DELETE FROM points WHERE num = ?", (existing[key],))
                    replaced.append(existing[key])
                nums.append(
                    db.execute("INSERT INTO points (id, vector, payload) VALUES (?, ?, ?)", (key, blob, text)).lastrowid
                )
            self._bump_generation()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back itself (a full disk)
                db.execute("ROLLBACK")
            raise
        self._dimension = vectors.shape[1]
        with self._lock:
            if self._metadata is not None:
                for num in replaced:
                    del self._metadata[num]
                for num, payload in zip(nums, payloads):
                    self._metadata[num] = dict(payload.get("metadata", {}))
                self._update_allowed(replaced, nums, payloads)
            if self._records is not None:
                records = self._records
                records.extend([None] * (max(nums) + 1 - len(records)))
                for num in replaced:
                    records[num] = None
                for num, key, text in zip(nums, ids, texts):
                    records[num] = _record(key, text)
        if self._can_update_in_place():
            id_array = np.asarray(nums, dtype=np.int64)
            with self._lock:
                if replaced:
                    self._drop(np.asarray(replaced, dtype=np.int64))
                self._index.add_with_ids(vectors, id_array)
                if self._journal is not None:
                    self._journal.append((id_array, np.array(vectors, dtype=np.float32)))
            self._after_change()
        else:
            self._dirty = True

    def _drop(self, nums: np.ndarray) -> None:
        """Take deleted nums out of the live index (under the lock); an HNSW graph keeps them, skipped."""
        if self._deleted is None:
            self._index.remove_ids(nums)
        else:
            self._deleted.update(nums.tolist())
            self._skip_deleted = None
            self._params.clear()
        if self._journal is not None:
            self._journal.append((nums, None))

    def _after_change(self) -> None:
        """Retrain aside when the live index has outgrown the collection, holds too many deleted nodes, or is due
        a recall measure."""
        with self._lock:  # decided on the index as it is: a retraining swapped in meanwhile would make it stale
            deleted = len(self._deleted or ())
            live = int(self._index.ntotal) - deleted
            reason = self._outgrown(live)
            if reason is None and deleted > DELETED_SHARE * self._index.ntotal:
                reason = f"{deleted} of the HNSW graph's {self._index.ntotal} nodes are deleted points"
            if reason is not None or self._wanted is not None:
                reason, self._wanted = reason or self._wanted, None
                self._rebuild_aside(reason)
            elif self._recall_check_due(live):
                self._measure_recall_aside()

    def _nums(self, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(ids), SQL_BATCH):
            part = list(ids[start : start + SQL_BATCH])
            marks = ",".join("?" * len(part))
            found.update(self._db.execute(f"SELECT id, num FROM points WHERE id IN ({marks})", part).fetchall())
        return found

    @_sqlite_errors
    def delete(self, ids: Sequence[str]) -> None:
        existing = self._nums(list(ids))
        if not existing:
            return
        nums = list(existing.values())
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(nums), SQL_BATCH):
                part = nums[start : start + SQL_BATCH]
                db.execute(f"DELETE FROM points WHERE num IN ({','.join('?' * len(part))})", part)
            self._bump_generation()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back itself (a full disk)
                db.execute("ROLLBACK")
            raise
        with self._lock:
            if self._metadata is not None:
                for num in nums:
                    self._metadata.pop(num, None)
                self._update_allowed(nums, (), ())
            if self._records is not None:
                for num in nums:
                    self._records[num] = None
        if self._can_update_in_place():
            with self._lock:
                self._drop(np.asarray(nums, dtype=np.int64))
            self._after_change()
        else:
            self._dirty = True

    @_sqlite_errors
    def get(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        found: dict[str, tuple[np.ndarray, Payload]] = {}
        for start in range(0, len(ids), SQL_BATCH):
            part = list(ids[start : start + SQL_BATCH])
            rows = self._db.execute(
                f"SELECT id, vector, payload FROM points WHERE id IN ({','.join('?' * len(part))})", part
            ).fetchall()
            for key, blob, text in rows:
                found[key] = (np.frombuffer(blob, dtype="<f4").copy(), self._payload(key, text))
        return found

    def _allowed_nums(self, filter: Mapping[str, Any]) -> _Allowed:
        """The nums whose metadata the filter lets through. Testing every point's metadata in Python costs about
        1.3 us a point (130 ms at 100k): the sets of the last filters used are kept (ALLOWED_CACHE, ALLOWED_KEPT),
        and every write keeps them current by testing only the points it wrote."""
        key = json.dumps(filter, sort_keys=True, separators=(",", ":"))  # Infinity allowed: a bound may be one
        with self._lock:
            if self._metadata is None:
                self._metadata = {
                    num: self._payload(key, text).get("metadata") or {}
                    for num, key, text in self._db.execute("SELECT num, id, payload FROM points")
                }
            if key in self._allowed:
                self._allowed.move_to_end(key)
            else:
                kept = filters.compile(json.loads(key))  # from the key: the caller may change its filter afterwards
                self._allowed[key] = (kept, {num for num, metadata in self._metadata.items() if kept(metadata)})
                while len(self._allowed) > 1 and (
                    len(self._allowed) > ALLOWED_CACHE
                    or sum(len(nums) for _, nums in self._allowed.values()) > ALLOWED_KEPT
                ):
                    self._allowed_arrays.pop(self._allowed.popitem(last=False)[0], None)
            if key not in self._allowed_arrays:
                nums = self._allowed[key][1]
                self._allowed_arrays[key] = _Allowed(self._faiss, np.fromiter(nums, dtype=np.int64, count=len(nums)))
            return self._allowed_arrays[key]

    def _update_allowed(self, removed: Sequence[int], added: Sequence[int], payloads: Sequence[Payload]) -> None:
        """Keep the kept filters' sets current through a write (under the lock)."""
        for kept, nums in self._allowed.values():
            nums.difference_update(removed)
            nums.update(num for num, payload in zip(added, payloads) if kept(payload.get("metadata", {})))
        self._allowed_arrays.clear()

    def search_params(self, k: int, selector: Any = None) -> Any:
        """The FAISS search parameters a search of ``k`` uses on the built index (None: the defaults)."""
        spec = self._index_spec or ""
        if selector is None and (spec, k) in self._params:
            return self._params[spec, k]  # one SWIG object per (spec, k), not one per query
        if selector is None and self._deleted:
            if self._skip_deleted is None:
                deleted = self._faiss.IDSelectorBatch(np.fromiter(self._deleted, np.int64, len(self._deleted)))
                self._skip_deleted = (self._faiss.IDSelectorNot(deleted), deleted)  # the Not points into the batch
            params = self._params_for(spec, self._index, self._tuning, k, self._skip_deleted[0])
        else:  # a filter's selector holds stored points only, so no deleted one
            params = self._params_for(spec, self._index, self._tuning, k, selector)
        if selector is None:
            self._params[spec, k] = params
        return params

    def _params_for(
        self, spec: str, index: Any, tuning: dict[str, Any] | None, k: int, selector: Any = None, widen: float = 1.0
    ) -> Any:
        faiss = self._faiss
        kwargs: dict[str, Any] = {} if selector is None else {"sel": selector}
        if "IVF" in spec:
            nlist = faiss.extract_index_ivf(index).nlist
            nprobe = self._nprobe or (tuning or {}).get("nprobe") or min(nlist, max(16, nlist // 8))
            return faiss.SearchParametersIVF(nprobe=min(nlist, math.ceil(nprobe * widen)), **kwargs)
        if "HNSW" in spec:
            ef_search = max(self._ef_search or (tuning or {}).get("ef_search") or DEFAULT_EF_SEARCH, k)
            widened = min(max(ef_search, FILTER_MAX_EF_SEARCH), math.ceil(ef_search * widen))
            return faiss.SearchParametersHNSW(efSearch=widened, **kwargs)
        return faiss.SearchParameters(**kwargs) if kwargs else None

    def _search_nums(
        self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None
    ) -> tuple[list[int], list[float]]:
        """The index's answer as (nums, scores); a num of -1 fills a list shorter than k."""
        vector = check_query(vector, k, self._dimension)
        if filter:
            filters.validate(filter)
        index = self._ready_index()
        total = index.ntotal if index is not None else 0
        if total == 0:
            return [], []
        if not filter:
            scores, nums = index.search(vector.reshape(1, -1), min(k, total), params=self.search_params(k))
            return nums[0].tolist(), scores[0].tolist()
        kept = self._allowed_nums(filter)
        allowed = kept.nums
        if not len(allowed):
            return [], []
        spec = self._index_spec or ""
        approximate = "IVF" in spec or "HNSW" in spec
        if approximate and len(allowed) <= FILTER_EXACT_MAX:
            return self._exact_among(vector, allowed, k)
        # A filter that lets a share f of the points through leaves about f of what the tuned nprobe (efSearch)
        # reaches: search 1/f as wide, and answer exactly if that still comes back short.
        params = self._params_for(spec, index, self._tuning, k, kept.selector(), widen=total / len(allowed))
        scores, nums = index.search(vector.reshape(1, -1), min(k, total), params=params)
        if approximate and np.count_nonzero(nums[0] >= 0) < min(k, len(allowed)):
            return self._exact_among(vector, allowed, k)
        return nums[0].tolist(), scores[0].tolist()

    def _exact_among(self, vector: np.ndarray, allowed: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        """The best k of the ``allowed`` nums by exact inner product, their vectors read from SQLite."""
        rows = list(_vector_rows(self._db, allowed.tolist()))
        nums = np.fromiter((num for num, _ in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f4").reshape(
            len(rows), self._dimension or 0
        )
        scores = vectors @ vector
        top = np.argsort(-scores, kind="stable")[:k]
        return nums[top].tolist(), scores[top].tolist()

    @_sqlite_errors
    def search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None) -> RankedList:
        nums, scores = self._search_nums(vector, k, filter)
        if not nums:
            return []
        if self._ready_records() is not None:
            return [(key, score) for key, score, _ in self._hits(nums, scores)]
        found = [n for n in nums if n >= 0]
        names = dict(
            self._db.execute(
                f"SELECT num, id FROM points WHERE num IN ({','.join('?' * len(found))})", found
            ).fetchall()
        )
        return [(names[n], s) for n, s in zip(nums, scores) if n in names]

    @_sqlite_errors
    def search_with_payloads(
        self,
        vector: np.ndarray,
        k: int,
        filter: Mapping[str, Any] | None = None,
    ) -> list[tuple[str, float, Payload]]:
        nums, scores = self._search_nums(vector, k, filter)
        return self._hits(nums, scores) if nums else []

    def _hits(self, nums: list[int], scores: list[float]) -> list[tuple[str, float, Payload]]:
        """(id, score, payload) of each num still stored, in order."""
        records = self._ready_records()
        if records is None:
            found = [n for n in nums if n >= 0]
            rows = {
                num: (key, text)
                for num, key, text in self._db.execute(
                    f"SELECT num, id, payload FROM points WHERE num IN ({','.join('?' * len(found))})", found
                )
            }
            return [(rows[n][0], s, self._payload(rows[n][0], rows[n][1])) for n, s in zip(nums, scores) if n in rows]
        if orjson is not None and min(nums) >= 0:
            # The usual answer: k stored points, all plain records. One C-level lookup and one decode for all of
            # them: right after the FAISS call the interpreter runs from cold caches, so each Python step costs more.
            try:
                found = itemgetter(*nums)(records) if len(nums) > 1 else (records[nums[0]],)
                flat = orjson.loads(b"[" + b",".join(found) + b"]")  # id, payload, id, payload, ...
            except (TypeError, IndexError, ValueError):  # a point deleted since (None), a record json must read (str),
                pass  # or one that does not decode (named below)
            else:
                return list(zip(flat[::2], scores, flat[1::2]))
        size, hits = len(records), []
        for num, score in zip(nums, scores):
            # None: deleted after the index answered; str: a record that json must read (long digits)
            if 0 <= num < size and (record := records[num]) is not None:
                try:
                    if type(record) is bytes and orjson is not None:
                        key, payload = orjson.loads(b"[" + record + b"]")
                    else:
                        key, payload = json.loads(f"[{record if type(record) is str else record.decode()}]")
                except ValueError:  # only a damaged payload: the id was written by json.dumps
                    row = self._db.execute("SELECT id, payload FROM points WHERE num = ?", (num,)).fetchone()
                    key, payload = row[0], self._payload(row[0], row[1])
                hits.append((key, score, payload))
        return hits

    def _ready_records(self) -> list[bytes | str | None] | None:
        """Every point's [id, payload] record by num, read from SQLite once (None with on_disk_payload)."""
        if self._on_disk_payload:
            return None
        if self._records is None:
            with self._lock:
                if self._records is None:
                    records: list[bytes | str | None] = []
                    for num, key, text in self._db.execute("SELECT num, id, payload FROM points ORDER BY num"):
                        records.extend([None] * (num + 1 - len(records)))
                        records[num] = _record(key, text)
                    self._records = records
        return self._records

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        last = -1
        while True:
            try:
                rows = self._db.execute(
                    "SELECT num, id, vector, payload FROM points WHERE num > ? ORDER BY num LIMIT ?", (last, batch_size)
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._storage_error(exc) from exc
            if not rows:
                return
            last = rows[-1][0]
            dimension = self._dimension or len(rows[0][2]) // 4
            if any(len(r[2]) != 4 * dimension for r in rows):
                bad = next(r[1] for r in rows if len(r[2]) != 4 * dimension)
                raise CorruptCollectionError(
                    f"{self._database}: the vector of point {bad!r} is not {dimension} floats; {RESTORE}"
                )
            vectors = np.stack([np.frombuffer(r[2], dtype="<f4") for r in rows]).astype(np.float32)
            yield [r[1] for r in rows], vectors, [self._payload(r[1], r[3]) for r in rows]

    @_sqlite_errors
    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM points").fetchone()[0])

    def check_integrity(self) -> list[str]:
        """SQLite's own integrity check, every vector's size and every payload's JSON, and what opening found wrong
        with the index files (each line names the file or the point)."""
        problems = list(self._load_problems)
        try:
            pages = [row[0] for row in self._db.execute("PRAGMA integrity_check(10)")]
            if pages != ["ok"]:
                return [*problems, f"{self._database} is damaged: {'; '.join(pages)}; {RESTORE}"]
            # Read by SQLite's own JSON functions, without decoding every payload in Python.
            for key, size, json_ok in self._db.execute(
                "SELECT id, length(vector), json_valid(payload) AND CASE WHEN json_valid(payload) "
                "THEN json_type(payload) = 'object' END FROM points WHERE length(vector) != ? OR NOT json_valid(payload) "
                "OR CASE WHEN json_valid(payload) THEN json_type(payload) != 'object' END LIMIT 20",
                (4 * (self._dimension or 0),),
            ):
                if self._dimension and size != 4 * self._dimension:
                    problems.append(
                        f"{self._database}: the vector of point {key!r} is {size} bytes, not {self._dimension} floats"
                    )
                if not json_ok:
                    problems.append(f"{self._database}: the payload of point {key!r} is not a JSON object; {RESTORE}")
        except sqlite3.DatabaseError as exc:
            problems.append(str(self._storage_error(exc)))
        return problems

    def _manifest_file(self) -> Path | None:
        return self._path / "manifest.json" if self._path is not None else None

    @_sqlite_errors
    def read_manifest(self) -> dict[str, Any] | None:
        path = self._manifest_file()
        if path is None:
            text = self._meta("manifest")
            return json.loads(text) if text else None
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptCollectionError(
                f"manifest {path} is unreadable ({exc}); restore it from a backup or rebuild the collection"
            ) from exc

    @_sqlite_errors
    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        path = self._manifest_file()
        if path is None:
            self._set_meta("manifest", canonical_json(dict(manifest)))
            return
        try:
            write_json_atomically(path, dict(manifest))
        except OSError as exc:
            raise StorageError(
                f"cannot write {path} ({exc.strerror or exc}); everything committed before is kept: "
                f"fix the cause and run the same command again"
            ) from exc

    @_sqlite_errors
    def close(self) -> None:
        if self._db is None:
            return
        self.wait_for_index()
        if self._path is not None:
            if self._outgrown(self.count()):
                self._dirty = True
            self._ready_index()
            self._save_index()
        self._db.close()
        self._db = None  # type: ignore[assignment]


class _Snapshot:
    """The stored vectors at one moment, by row (ascending num): an array, or a SQLite read transaction on a
    connection of its own (WAL keeps what it sees fixed while the store's connection goes on writing)."""

    def __init__(
        self,
        dimension: int,
        *,
        nums: np.ndarray | None = None,
        vectors: np.ndarray | None = None,
        database: Path | None = None,
    ) -> None:
        self.dimension = dimension
        self._vectors = vectors
        self._db: sqlite3.Connection | None = None
        if database is not None:
            self._db = sqlite3.connect(str(database), isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            self._db.execute("BEGIN")  # the first read below fixes what this transaction sees
            count = self._db.execute("SELECT COUNT(*) FROM points").fetchone()[0]
            nums = np.fromiter(
                (num for (num,) in self._db.execute("SELECT num FROM points ORDER BY num")), np.int64, count
            )
        self.nums = nums if nums is not None else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.nums)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given row positions, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._vectors is not None:
            return self._vectors[rows]
        out = np.empty((len(rows), self.dimension), dtype=np.float32)
        where = {int(num): i for i, num in enumerate(self.nums[rows])}
        for num, blob in _vector_rows(self._db, list(where)):
            out[where[num]] = np.frombuffer(blob, dtype="<f4")
        return out

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, vectors) of ADD_BLOCK rows at a time, every row once."""
        if self._vectors is not None:
            for start in range(0, len(self.nums), ADD_BLOCK):
                yield start, self._vectors[start : start + ADD_BLOCK]
            return
        for start in range(0, len(self.nums), ADD_BLOCK):
            part = self.nums[start : start + ADD_BLOCK]
            block = np.empty((len(part), self.dimension), dtype=np.float32)
            query = "SELECT vector FROM points WHERE num BETWEEN ? AND ? ORDER BY num"
            for i, (blob,) in enumerate(self._db.execute(query, (int(part[0]), int(part[-1])))):
                block[i] = np.frombuffer(blob, dtype="<f4")
            yield start, block

    def close(self) -> None:
        if self._db is not None:
            self._db.execute("COMMIT")
            self._db.close()
            self._db = None


class _Allowed:
    """A kept filter's points, and the FAISS selector over them once a search asks for it (building one over 50,000
    ids costs about a millisecond)."""

    def __init__(self, faiss: Any, nums: np.ndarray) -> None:
        self._faiss = faiss
        self.nums = nums
        self._selector: Any = None

    def selector(self) -> Any:
        if self._selector is None:
            self._selector = self._faiss.IDSelectorBatch(self.nums)
        return self._selector


def _file_crc32(path: Path) -> int:
    """CRC-32 of a file, read in 16 MiB blocks (an index file can hold gigabytes)."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


def _vector_rows(db: sqlite3.Connection, nums: list[int]) -> Iterator[tuple[int, bytes]]:
    """(num, vector blob) of the stored points among ``nums``, in SQL_BATCH reads."""
    for start in range(0, len(nums), SQL_BATCH):
        part = nums[start : start + SQL_BATCH]
        yield from db.execute(f"SELECT num, vector FROM points WHERE num IN ({','.join('?' * len(part))})", part)


def _record(key: str, text: str) -> bytes | str:
    """``"id",{payload}``: the records of a search's hits, joined by commas inside brackets, decode in one call."""
    record = f"{json.dumps(key, ensure_ascii=False)},{text}"
    return record if _LONG_DIGITS.search(text) else record.encode()


def _holds_its_own_ids(faiss: Any, index: Any) -> bool:
    """IVF indexes store our ids in their lists and remove by id. IndexIDMap must not wrap them: it renumbers on
    removal the way a flat index shifts its rows, which an IVF index does not, so every id after a deleted one
    would answer for its neighbour."""
    return faiss.try_extract_index_ivf(index) is not None


def _build(options: dict[str, Any], base_dir: Path) -> FaissStore:
    opts = take_options(
        "[store] faiss",
        options,
        {
            "path": None,
            "index": "auto",
            "nprobe": None,
            "target_recall": 0.95,
            "ef_search": None,
            "ivf_threshold": 50_000,
            "on_disk_payload": False,
            "auto_candidates": ["IVF", "HNSW"],
        },
    )
    if not isinstance(opts["index"], str) or not opts["index"]:
        raise ConfigError(f'[store] faiss index must be "auto" or a FAISS factory string, got {opts["index"]!r}')
    for key in ("nprobe", "ef_search", "ivf_threshold"):
        value = opts[key]
        if value is not None and not is_positive_int(value):
            raise ConfigError(f"[store] faiss {key} must be a whole number >= 1, got {value!r}")
    if not isinstance(opts["on_disk_payload"], bool):
        raise ConfigError(f"[store] faiss on_disk_payload must be true or false, got {opts['on_disk_payload']!r}")
    kinds = opts["auto_candidates"]
    if (
        not isinstance(kinds, list)
        or not kinds
        or len(set(kinds)) != len(kinds)
        or not all(kind in ("IVF", "HNSW") for kind in kinds)
    ):
        raise ConfigError(
            f'[store] faiss auto_candidates must list "IVF", "HNSW" or both, like ["IVF", "HNSW"], got {kinds!r}'
        )
    target = opts["target_recall"]
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target <= 1:
        raise ConfigError(
            f"[store] faiss target_recall must be a number in (0, 1], like 0.95 (recall@10 against exact search), got {target!r}"
        )
    return FaissStore(
        resolve_path(opts["path"], base_dir, "[store] faiss"),
        index=opts["index"],
        nprobe=opts["nprobe"],
        target_recall=float(target),
        ef_search=opts["ef_search"],
        ivf_threshold=opts["ivf_threshold"],
        on_disk_payload=opts["on_disk_payload"],
        auto_candidates=kinds,
    )


@hookimpl
def vecguard_parts() -> list[Part]:
    return [Part("store", "faiss", _build, extra="faiss", description="FAISS inner product + SQLite payloads")]

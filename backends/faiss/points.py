"""SQLite, the durable truth: every point's id, vector and payload, and the collection's meta.

SQLite (stdlib) is the durable truth: every upsert and delete commits there with a generation number. The FAISS
index is derived from it (see ``index_file``). SQLite's errors are mapped to vecguard's at every store method (a
damaged page or payload is a CorruptCollectionError naming the file and point), and a manifest.json without its
points.sqlite3 (deleted or emptied) is refused. String ids map to SQLite row numbers ("nums"), used as FAISS int64
ids. A replaced point gets a new num, so a num always names the same vector.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from vecguard.atomic import canonical_json, write_json_atomically
from vecguard.errors import CorruptCollectionError, StorageError
from vecguard.protocols import Payload

SQL_BATCH = 500
MMAP_BYTES = 1 << 31  # SQLite's own ceiling unless compiled otherwise
_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    vector BLOB NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (generation INTEGER NOT NULL, id TEXT NOT NULL, removed_num INTEGER);
CREATE INDEX IF NOT EXISTS changes_by_generation ON changes (generation);
"""
CHANGES_KEPT = 200_000  # rows of the change feed kept: a process further behind rereads everything
TRIM_EVERY = 64  # generations between trims of the change feed
DATABASE = "points.sqlite3"
RESTORE = "restore the folder from a backup, or delete it and index again"


@dataclass(frozen=True)
class Written:
    """What an upsert committed: the new nums (in the order of the ids), the nums they replaced, the payloads' JSON."""

    nums: list[int]
    replaced: list[int]
    texts: list[str]


@dataclass(frozen=True)
class Delta:
    """What other writes (and this process's) committed after a generation: the nums they removed (a replaced
    point's old num included) and every stored point with a num above a given one, in num order. Read without a
    transaction, so it may hold some of a later generation as well: applying it twice is harmless."""

    generation: int  # at least this generation is reflected
    removed: list[int]
    nums: list[int]
    ids: list[str]
    vectors: np.ndarray
    texts: list[str]


def in_batches(db: sqlite3.Connection, sql: str, values: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` run on ``values`` SQL_BATCH at a time; ``{marks}`` in it stands for the batch's ``?``s."""
    for start in range(0, len(values), SQL_BATCH):
        part = list(values[start : start + SQL_BATCH])
        # Fetched whole: a caller that stops early (a damaged payload) leaves no cursor open on the connection.
        yield from db.execute(sql.format(marks=",".join("?" * len(part))), part).fetchall()


def vector_rows(db: sqlite3.Connection, nums: list[int]) -> Iterator[tuple[int, bytes]]:
    """(num, vector blob) of the stored points among ``nums``, in SQL_BATCH reads."""
    return in_batches(db, "SELECT num, vector FROM points WHERE num IN ({marks})", nums)


class PointTable:
    """points.sqlite3 (or an in-memory database): the only code that reads or writes it through the store's
    connection. The dimension is fixed by the first write."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.database = str(path / DATABASE) if path is not None else ":memory:"
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            if (path / "manifest.json").exists() and not (path / DATABASE).exists():
                raise CorruptCollectionError(
                    f"{path / DATABASE} is missing, and with it every vector and payload of the collection whose "
                    f"manifest.json is beside it; {RESTORE}"
                )
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.database, isolation_level=None, check_same_thread=False
            )
            db = self._db
            if path is not None:
                if (path / "manifest.json").exists() and not db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'points'"
                ).fetchone():
                    db.close()
                    raise CorruptCollectionError(
                        f"{self.database} holds no points table (emptied or replaced), though manifest.json beside "
                        f"it describes a collection; {RESTORE}"
                    )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")  # reads through a memory map skip a copy per page
            db.executescript(_SCHEMA)
            # The change feed is complete from here on (a collection written before it existed starts it now).
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) SELECT 'changes_from', "
                "COALESCE((SELECT value FROM meta WHERE key = 'generation'), '0')"
            )
            # Names this collection in its index files, so that one copied from another collection is not taken.
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) SELECT 'collection', ? WHERE NOT EXISTS "
                "(SELECT 1 FROM points)",
                (uuid.uuid4().hex,),
            )
        except sqlite3.DatabaseError as exc:
            raise CorruptCollectionError(
                f"{self.database} is not a readable SQLite database ({exc}); it holds the collection's vectors and "
                f"payloads: {RESTORE}"
            ) from exc
        self._dimension: int | None = None
        self._seen_data_version = -1
        self._identity = self._file_identity()

    @property
    def dimension(self) -> int | None:
        """Fixed by the first write, this process's or another's (read again until then)."""
        if self._dimension is None:
            dim = self.meta("dimension")
            self._dimension = int(dim) if dim is not None else None
        return self._dimension

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the store is closed"
        return self._db

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def storage_error(self, exc: sqlite3.DatabaseError) -> StorageError:
        """SQLite's error as vecguard's, naming the database file; a damaged page is a CorruptCollectionError."""
        text = str(exc)
        if "malformed" in text or "not a database" in text:
            return CorruptCollectionError(f"{self.database} is damaged ({text}); run `vecguard check`, then {RESTORE}")
        if "full" in text:
            return StorageError(
                f"{self.database}: the disk is full ({text}); everything committed before is kept: "
                f"free some space and run the same command again"
            )
        return StorageError(f"{self.database}: {text}")

    def payload(self, key: Any, text: str) -> Payload:
        """A stored payload, decoded; a record that is not a JSON object is named."""
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise CorruptCollectionError(
                f"{self.database}: the payload of point {key!r} is not valid JSON ({exc}); {RESTORE}"
            ) from exc
        if not isinstance(payload, dict):
            raise CorruptCollectionError(
                f"{self.database}: the payload of point {key!r} is {type(payload).__name__}, not an object; {RESTORE}"
            )
        return payload

    # ------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        return int(self.meta("generation") or 0)

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            found = (self.path / DATABASE).stat() if self.path is not None else None
        except OSError:
            return None
        return (found.st_dev, found.st_ino) if found is not None else None

    def replaced(self) -> bool:
        """Whether the database file at the path is no longer the one this connection opened (a reindex swapped
        the folder, or it was restored from a backup): one stat."""
        return self.path is not None and self._file_identity() != self._identity

    def others_committed(self) -> bool:
        """True when another connection (another process, or a snapshot) committed since the last call: SQLite's
        data_version, a few microseconds."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        moved, self._seen_data_version = version != self._seen_data_version, version
        return moved

    # ------------------------------------------------------------ the change feed

    def changed_ids(self, generation: int) -> list[str] | None:
        """The ids written or deleted after ``generation``, each once; None when the feed no longer reaches back."""
        if generation < int(self.meta("changes_from") or 0):
            return None
        return [
            key for (key,) in self.db.execute("SELECT DISTINCT id FROM changes WHERE generation > ?", (generation,))
        ]

    def delta(self, generation: int, above_num: int) -> Delta | None:
        """What was committed after ``generation``: removed nums, and the points stored with a num above
        ``above_num`` (nums only grow, so those are every point added since). None when the feed no longer reaches
        back that far."""
        current = self.generation  # read first: whatever is read after it is at least as new
        if generation < int(self.meta("changes_from") or 0):
            return None
        removed = [
            num
            for (num,) in self.db.execute(
                "SELECT removed_num FROM changes WHERE generation > ? AND removed_num IS NOT NULL", (generation,)
            )
        ]
        rows = self.db.execute(
            "SELECT num, id, vector, payload FROM points WHERE num > ? ORDER BY num", (above_num,)
        ).fetchall()
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), self.dimension or 0)
        return Delta(current, removed, [r[0] for r in rows], [r[1] for r in rows], vectors, [r[3] for r in rows])

    def changes_after(self, generation: int) -> int:
        """How many point changes (writes and deletes) the feed lists after ``generation``."""
        return int(self.db.execute("SELECT COUNT(*) FROM changes WHERE generation > ?", (generation,)).fetchone()[0])

    def _trim_changes(self, generation: int) -> None:
        """Keep the last CHANGES_KEPT rows of the feed (every TRIM_EVERY generations, inside a write)."""
        if generation % TRIM_EVERY:
            return
        row = self.db.execute(
            "SELECT generation FROM changes ORDER BY generation DESC LIMIT 1 OFFSET ?", (CHANGES_KEPT,)
        ).fetchone()
        if row is not None:
            self.db.execute("DELETE FROM changes WHERE generation <= ?", (row[0],))
            self.set_meta("changes_from", str(row[0]))

    # ------------------------------------------------------------ writes

    @contextmanager
    def _write_transaction(self) -> Iterator[list[tuple[str, int | None]]]:
        """One write: committed with the next generation and its changes (the list it yields: (id, removed num)),
        or rolled back whole."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            changes: list[tuple[str, int | None]] = []
            yield changes
            generation = self.generation + 1
            self.set_meta("generation", str(generation))
            db.executemany(
                "INSERT INTO changes (generation, id, removed_num) VALUES (?, ?, ?)",
                [(generation, key, num) for key, num in changes],
            )
            self._trim_changes(generation)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back itself (a full disk)
                db.execute("ROLLBACK")
            raise

    def write(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload]) -> Written:
        """Insert or replace a checked, non-empty batch in one transaction."""
        blobs = [v.astype("<f4").tobytes() for v in vectors]
        texts = [canonical_json(p) for p in payloads]
        nums: list[int] = []
        replaced: list[int] = []
        db = self.db
        with self._write_transaction() as changes:
            if self.dimension is None:
                self.set_meta("dimension", str(vectors.shape[1]))
            existing = self.nums(ids)
            for key, blob, text in zip(ids, blobs, texts):
                changes.append((key, existing.get(key)))
                if key in existing:  # a new num: an HNSW graph cannot change or drop a node, only skip it
                    db.execute("DELETE FROM points WHERE num = ?", (existing[key],))
                    replaced.append(existing[key])
                nums.append(
                    db.execute("INSERT INTO points (id, vector, payload) VALUES (?, ?, ?)", (key, blob, text)).lastrowid
                )
        self._dimension = vectors.shape[1]
        return Written(nums, replaced, texts)

    def delete(self, ids: Sequence[str]) -> list[int]:
        """Delete the stored ones among ``ids`` in one transaction; their nums (none: nothing was written)."""
        stored = self.nums(list(ids))
        nums = list(stored.values())
        if not nums:
            return nums
        with self._write_transaction() as changes:
            changes.extend(stored.items())
            for start in range(0, len(nums), SQL_BATCH):
                part = nums[start : start + SQL_BATCH]
                self.db.execute(f"DELETE FROM points WHERE num IN ({','.join('?' * len(part))})", part)
        return nums

    # ------------------------------------------------------------ reads

    def nums(self, ids: Sequence[str]) -> dict[str, int]:
        return dict(in_batches(self.db, "SELECT id, num FROM points WHERE id IN ({marks})", ids))

    def get(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        rows = in_batches(self.db, "SELECT id, vector, payload FROM points WHERE id IN ({marks})", ids)
        return {key: (np.frombuffer(blob, dtype="<f4").copy(), self.payload(key, text)) for key, blob, text in rows}

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM points").fetchone()[0])

    def highest_num(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(num), 0) FROM points").fetchone()[0])

    def each_row(self) -> Iterator[tuple[int, str, str]]:
        """(num, id, payload JSON) of every point, by num."""
        return self.db.execute("SELECT num, id, payload FROM points ORDER BY num")

    def each_record(self) -> Iterator[tuple[int, bytes]]:
        """(num, ``"id",{payload}`` as UTF-8) of every point, by num, joined by SQLite rather than in Python (what
        the payload records in memory are built from, at the first search after an open: 3.3 s at 1M points,
        results/shared_writes.md)."""
        return self.db.execute("SELECT num, CAST(json_quote(id) || ',' || payload AS BLOB) FROM points ORDER BY num")

    def rows(self, nums: list[int]) -> dict[int, tuple[str, str]]:
        """num -> (id, payload JSON) of the stored points among ``nums`` (-1 fills a short answer: skipped)."""
        found = [n for n in nums if n >= 0]
        return {
            num: (key, text)
            for num, key, text in self.db.execute(
                f"SELECT num, id, payload FROM points WHERE num IN ({','.join('?' * len(found))})", found
            )
        }

    def names(self, nums: list[int]) -> dict[int, str]:
        """num -> id of the stored points among ``nums``."""
        found = [n for n in nums if n >= 0]
        return dict(
            self.db.execute(f"SELECT num, id FROM points WHERE num IN ({','.join('?' * len(found))})", found).fetchall()
        )

    def row(self, num: int) -> tuple[str, Payload]:
        key, text = self.db.execute("SELECT id, payload FROM points WHERE num = ?", (num,)).fetchone()
        return key, self.payload(key, text)

    def vectors(self, nums: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(nums, vectors) of the stored points among ``nums``."""
        rows = list(vector_rows(self.db, nums))
        found = np.fromiter((num for num, _ in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f4").reshape(len(rows), self.dimension or 0)
        return found, vectors

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector in one array, by num (the in-memory store's snapshot)."""
        # Row by row into arrays sized up front: fetchall() would hold every blob as well.
        n = self.count()
        nums = np.empty(n, dtype=np.int64)
        vectors = np.empty((n, self.dimension or 0), dtype=np.float32)
        for i, (num, blob) in enumerate(self.db.execute("SELECT num, vector FROM points ORDER BY num")):
            nums[i] = num
            vectors[i] = np.frombuffer(blob, dtype="<f4")
        return nums, vectors

    def scan(self, batch_size: int) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        last = -1
        while True:
            try:
                rows = self.db.execute(
                    "SELECT num, id, vector, payload FROM points WHERE num > ? ORDER BY num LIMIT ?", (last, batch_size)
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self.storage_error(exc) from exc
            if not rows:
                return
            last = rows[-1][0]
            dimension = self.dimension or len(rows[0][2]) // 4
            if any(len(r[2]) != 4 * dimension for r in rows):
                bad = next(r[1] for r in rows if len(r[2]) != 4 * dimension)
                raise CorruptCollectionError(
                    f"{self.database}: the vector of point {bad!r} is not {dimension} floats; {RESTORE}"
                )
            vectors = np.stack([np.frombuffer(r[2], dtype="<f4") for r in rows]).astype(np.float32)
            yield [r[1] for r in rows], vectors, [self.payload(r[1], r[3]) for r in rows]

    def check_integrity(self) -> list[str]:
        """SQLite's own integrity check, every vector's size and every payload's JSON (each line names the file or
        the point)."""
        problems: list[str] = []
        try:
            pages = [row[0] for row in self.db.execute("PRAGMA integrity_check(10)")]
            if pages != ["ok"]:
                return [f"{self.database} is damaged: {'; '.join(pages)}; {RESTORE}"]
            # Read by SQLite's own JSON functions, without decoding every payload in Python.
            for key, size, json_ok in self.db.execute(
                "SELECT id, length(vector), json_valid(payload) AND CASE WHEN json_valid(payload) "
                "THEN json_type(payload) = 'object' END FROM points "
                "WHERE length(vector) != ? OR NOT json_valid(payload) "
                "OR CASE WHEN json_valid(payload) THEN json_type(payload) != 'object' END LIMIT 20",
                (4 * (self.dimension or 0),),
            ):
                if self.dimension and size != 4 * self.dimension:
                    problems.append(
                        f"{self.database}: the vector of point {key!r} is {size} bytes, not {self.dimension} floats"
                    )
                if not json_ok:
                    problems.append(f"{self.database}: the payload of point {key!r} is not a JSON object; {RESTORE}")
        except sqlite3.DatabaseError as exc:
            problems.append(str(self.storage_error(exc)))
        return problems

    # ------------------------------------------------------------ manifest

    def _manifest_file(self) -> Path | None:
        return self.path / "manifest.json" if self.path is not None else None

    def read_manifest(self) -> dict[str, Any] | None:
        """manifest.json beside the database, or the meta row of an in-memory store."""
        path = self._manifest_file()
        if path is None:
            text = self.meta("manifest")
            return json.loads(text) if text else None
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptCollectionError(
                f"manifest {path} is unreadable ({exc}); restore it from a backup or rebuild the collection"
            ) from exc

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Write the manifest, then commit a generation for it: a process that sees the generation move reads it."""
        path = self._manifest_file()
        if path is None:
            with self._write_transaction():
                self.set_meta("manifest", canonical_json(dict(manifest)))
            return
        try:
            write_json_atomically(path, dict(manifest))
        except OSError as exc:
            raise StorageError(
                f"cannot write {path} ({exc.strerror or exc}); everything committed before is kept: "
                f"fix the cause and run the same command again"
            ) from exc
        with self._write_transaction():
            pass

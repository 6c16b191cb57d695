"""The stored vectors at one moment, which a build reads while writes go on.

On disk a snapshot is a SQLite read transaction on a connection of its own, read in blocks (WAL keeps what it sees
fixed while the store's connection goes on writing): a copy of the collection in memory beside the old index and
the new one would make a retraining hold three copies of every vector. In memory it is one array.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .points import DATABASE, MMAP_BYTES, PointTable, vector_rows

ADD_BLOCK = 1 << 16  # vectors per add_with_ids call while the tuning sample is held out


class Snapshot:
    """The stored vectors at one moment, by row (ascending num): an array, or a SQLite read transaction on a
    connection of its own."""

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
        assert self._db is not None
        out = np.empty((len(rows), self.dimension), dtype=np.float32)
        where = {int(num): i for i, num in enumerate(self.nums[rows])}
        for num, blob in vector_rows(self._db, list(where)):
            out[where[num]] = np.frombuffer(blob, dtype="<f4")
        return out

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, vectors) of ADD_BLOCK rows at a time, every row once."""
        if self._vectors is not None:
            for start in range(0, len(self.nums), ADD_BLOCK):
                yield start, self._vectors[start : start + ADD_BLOCK]
            return
        assert self._db is not None
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


def take_snapshot(points: PointTable) -> Snapshot:
    """The stored vectors as of now: read from a transaction of its own on disk, copied into an array in memory."""
    if points.dimension is None:  # nothing was ever written
        return Snapshot(0, nums=np.zeros(0, np.int64), vectors=np.zeros((0, 0), np.float32))
    if points.path is None:
        nums, vectors = points.all_vectors()
        return Snapshot(points.dimension, nums=nums, vectors=vectors)
    return Snapshot(points.dimension, database=points.path / DATABASE)

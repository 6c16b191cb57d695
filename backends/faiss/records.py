"""Payloads in memory: every point's ``"id",{payload}`` JSON record by num, and the decoding of a search's hits.

The records are a cache of SQLite, built at the first search and updated by every write after it; they cost the
payload's JSON size and a list slot a point. A search then reads its hits without touching SQLite:
benchmarks/results/faiss_indexes.md measured vecguard's search with payloads at 0.72x (100k vectors) and 0.66x (1M)
of the raw FAISS call followed by one SQLite read of the hits' payloads. ``on_disk_payload = true`` keeps none and
reads each search's hits from SQLite.

The hot path (``hits``) is a module function with explicit arguments: right after the FAISS call the interpreter
runs from cold caches, so each attribute lookup costs more.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from operator import itemgetter

from vecguard.protocols import Payload

from .points import PointTable

try:
    import orjson
except ImportError:  # the faiss extra installs it; json reads the same records, more slowly
    orjson = None

Records = list[bytes | str | None]

# orjson reads an integer beyond 64 bits as a float, where json keeps it: a record that might hold one is kept as
# str and read by json (a run of 19 digits inside a string sends it there too, which only costs speed). Found by
# mapping every digit to "0" and looking for 19 of them, which scans a record in C.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def as_record(joined: bytes) -> bytes | str:
    """A record as kept: bytes, or str when it may hold an integer orjson cannot read."""
    return joined.decode() if _LONG_DIGITS in joined.translate(_DIGITS_AS_ZERO) else joined


def record(key: str, text: str) -> bytes | str:
    """``"id",{payload}``: the records of a search's hits, joined by commas inside brackets, decode in one call."""
    return as_record(f"{json.dumps(key, ensure_ascii=False)},{text}".encode())


class PayloadRecords:
    """The records by num (None with ``on_disk_payload``, or until the first search asks for them)."""

    def __init__(self, points: PointTable, lock: threading.RLock, *, on_disk_payload: bool) -> None:
        self._points = points
        self._lock = lock
        self._on_disk_payload = on_disk_payload
        self._records: Records | None = None

    @property
    def held(self) -> bool:
        """Whether every point's record is held in memory now."""
        return self._records is not None

    def ready(self) -> Records | None:
        """Every point's record by num, read from SQLite once (None with on_disk_payload)."""
        if self._on_disk_payload:
            return None
        if self._records is None:
            with self._lock:
                if self._records is None:
                    records: Records = [None] * (self._points.highest_num() + 1)
                    for num, joined in self._points.each_record():
                        if num >= len(records):  # written by another process since
                            records.extend([None] * (num + 1 - len(records)))
                        records[num] = as_record(joined)
                    self._records = records
        return self._records

    def put(self, nums: Sequence[int], ids: Sequence[str], texts: Sequence[str], replaced: Sequence[int]) -> None:
        """Keep the records current through an upsert (under the lock)."""
        records = self._records
        if records is None:
            return
        records.extend([None] * (max(nums) + 1 - len(records)))
        for num in replaced:
            records[num] = None
        for num, key, text in zip(nums, ids, texts):
            records[num] = record(key, text)

    def drop(self, nums: Sequence[int]) -> None:
        """Keep the records current through a delete (under the lock)."""
        if self._records is not None:
            size = len(self._records)
            for num in nums:
                if num < size:  # another process may have added and removed it before this one looked
                    self._records[num] = None

    def forget(self) -> None:
        """Drop the records: read again from SQLite when next needed (under the lock)."""
        self._records = None


def hits(
    records: Records | None, points: PointTable, nums: list[int], scores: list[float]
) -> list[tuple[str, float, Payload]]:
    """(id, score, payload) of each num still stored, in order; from SQLite when ``records`` is None."""
    if records is None:
        rows = points.rows(nums)
        return [(rows[n][0], s, points.payload(rows[n][0], rows[n][1])) for n, s in zip(nums, scores) if n in rows]
    if orjson is not None and min(nums) >= 0:
        # The usual answer: k stored points, all plain records. One C-level lookup and one decode for all of them.
        try:
            found = itemgetter(*nums)(records) if len(nums) > 1 else (records[nums[0]],)
            flat = orjson.loads(b"[" + b",".join(found) + b"]")  # id, payload, id, payload, ...
        except (TypeError, IndexError, ValueError):  # a point deleted since (None), a record json must read (str),
            pass  # or one that does not decode (named below)
        else:
            return list(zip(flat[::2], scores, flat[1::2]))
    size, found_hits = len(records), []
    for num, score in zip(nums, scores):
        # None: deleted after the index answered; str: a record that json must read (long digits)
        if 0 <= num < size and (kept := records[num]) is not None:
            try:
                if type(kept) is bytes and orjson is not None:
                    key, payload = orjson.loads(b"[" + kept + b"]")
                else:
                    key, payload = json.loads(f"[{kept if type(kept) is str else kept.decode()}]")
            except ValueError:  # only a damaged payload: the id was written by json.dumps
                key, payload = points.row(num)
            found_hits.append((key, score, payload))
    return found_hits


def names(records: Records | None, points: PointTable, nums: list[int], scores: list[float]) -> list[tuple[str, float]]:
    """(id, score) of each num still stored, in order."""
    if records is not None:
        return [(key, score) for key, score, _ in hits(records, points, nums, scores)]
    found = points.names(nums)
    return [(found[n], s) for n, s in zip(nums, scores) if n in found]

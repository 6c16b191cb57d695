"""Kept filters: every point's metadata by num, and the points each recently used filter lets through.

Testing every point's metadata in Python is what a filter costs the first time (130 to 428 ms at 100,000 points:
``first ms`` in benchmarks/results/filtered_search.md); the sets of the last filters used are kept (ALLOWED_CACHE
filters, ALLOWED_KEPT points in all), and every write keeps them current by testing only the points it wrote.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from vecguard import filters
from vecguard.protocols import Payload

from .points import PointTable

ALLOWED_CACHE = 32  # filters whose allowed points are kept between searches,
ALLOWED_KEPT = 2_000_000  # as long as they hold this many points in all (a set entry a point)


class Allowed:
    """A kept filter's points as an array, and the FAISS selector over them once a search asks for it."""

    def __init__(self, faiss: Any, nums: np.ndarray) -> None:
        self._faiss = faiss
        self.nums = nums
        self._selector: Any = None

    def selector(self) -> Any:
        if self._selector is None:
            self._selector = self._faiss.IDSelectorBatch(self.nums)
        return self._selector


class _Kept:
    __slots__ = ("allowed", "nums", "predicate")

    def __init__(self, predicate: filters.Predicate, nums: set[int]) -> None:
        self.predicate = predicate
        self.nums = nums
        self.allowed: Allowed | None = None  # built from ``nums`` when a search asks; dropped by every write


class FilterCache:
    """The metadata of every point (read at the first filtered search) and the kept filters, least recently used
    first; ALLOWED_CACHE and ALLOWED_KEPT are read when a filter is added, so a test may patch them."""

    def __init__(self, faiss: Any, points: PointTable, lock: threading.RLock) -> None:
        self._faiss = faiss
        self._points = points
        self._lock = lock
        self._metadata: dict[int, dict[str, Any]] | None = None
        self._kept: OrderedDict[str, _Kept] = OrderedDict()

    @property
    def kept(self) -> tuple[dict[str, Any], ...]:
        """The kept filters, least recently used first."""
        with self._lock:
            return tuple(json.loads(key) for key in self._kept)

    def allowed(self, filter: Mapping[str, Any]) -> Allowed:
        """The nums whose metadata the filter lets through."""
        key = json.dumps(filter, sort_keys=True, separators=(",", ":"))  # Infinity allowed: a bound may be one
        with self._lock:
            if self._metadata is None:
                self._metadata = {
                    num: self._points.payload(name, text).get("metadata") or {}
                    for num, name, text in self._points.each_row()
                }
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
            else:
                predicate = filters.compile(json.loads(key))  # from the key: the caller may change its filter later
                kept = self._kept[key] = _Kept(
                    predicate, {num for num, metadata in self._metadata.items() if predicate(metadata)}
                )
                while len(self._kept) > 1 and (
                    len(self._kept) > ALLOWED_CACHE or sum(len(k.nums) for k in self._kept.values()) > ALLOWED_KEPT
                ):
                    self._kept.popitem(last=False)
            if kept.allowed is None:
                kept.allowed = Allowed(self._faiss, np.fromiter(kept.nums, dtype=np.int64, count=len(kept.nums)))
            return kept.allowed

    @property
    def active(self) -> bool:
        """Whether the metadata is held (a write's payloads are then needed to keep it current)."""
        return self._metadata is not None

    def forget(self) -> None:
        """Drop the metadata and the kept filters: read again from SQLite when next needed (under the lock)."""
        self._metadata = None
        self._kept.clear()

    def update(self, removed: Sequence[int], added: Sequence[int], payloads: Sequence[Payload]) -> None:
        """Keep the metadata and the kept filters' sets current through a write (under the lock)."""
        if self._metadata is None:
            return
        for num in removed:
            self._metadata.pop(num, None)
        for num, payload in zip(added, payloads):
            self._metadata[num] = dict(payload.get("metadata", {}))
        for kept in self._kept.values():
            kept.nums.difference_update(removed)
            kept.nums.update(
                num for num, payload in zip(added, payloads) if kept.predicate(payload.get("metadata", {}))
            )
            kept.allowed = None

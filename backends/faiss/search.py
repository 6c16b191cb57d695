"""Which nums answer a query: the index searched plainly, through a filter's selector, or exactly.

Filtered search restricts FAISS with an id selector instead of over-fetching. On an IVF or HNSW index a selective
filter would leave the tuned nprobe (efSearch) with few or none of the allowed points (measured: HNSW32 at its
tuned efSearch returned 0.14 of 10 hits when 10 of 100,000 points matched, IVF 1.44; benchmarks/results/
filtered_search.md): up to FILTER_EXACT_MAX allowed points are scored exactly from SQLite; beyond it the search
widens by the inverse of the share allowed (an HNSW search twice that), and falls back to exact when it still comes
back short.

Module functions with explicit arguments: they are the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import kinds
from .filter_cache import FilterCache
from .live_index import LiveIndex
from .points import PointTable

# A filter letting at most this many points through is answered exactly from SQLite when the index is approximate
# (Qdrant's full_scan_threshold is the same idea): an IVF or HNSW search restricted to a few points finds few of them.
FILTER_EXACT_MAX = 2_000


def search_nums(
    live: LiveIndex,
    kept: FilterCache,
    points: PointTable,
    vector: np.ndarray,
    k: int,
    filter: Mapping[str, Any] | None,
) -> tuple[list[int], list[float]]:
    """The answer to a checked query as (nums, scores); a num of -1 fills a list shorter than k."""
    index = live.ready()
    total = index.ntotal if index is not None else 0
    if total == 0:
        return [], []
    if not filter:
        scores, nums = index.search(vector.reshape(1, -1), min(k, total), params=live.params(k))
        return nums[0].tolist(), scores[0].tolist()
    allowed = kept.allowed(filter)
    if not len(allowed.nums):
        return [], []
    approximate = kinds.is_approximate(live.spec)
    if approximate and len(allowed.nums) <= FILTER_EXACT_MAX:
        return exact_among(points, vector, allowed.nums, k)
    # A filter that lets a share f of the points through leaves about f of what the tuned nprobe (efSearch)
    # reaches: search 1/f as wide (HNSW twice that: kinds.HNSW_FILTER_SLACK), and answer exactly if that still
    # comes back short.
    params = live.filtered_params(k, allowed.selector(), widen=total / len(allowed.nums))
    scores, nums = index.search(vector.reshape(1, -1), min(k, total), params=params)
    if approximate and np.count_nonzero(nums[0] >= 0) < min(k, len(allowed.nums)):
        return exact_among(points, vector, allowed.nums, k)
    return nums[0].tolist(), scores[0].tolist()


def exact_among(points: PointTable, vector: np.ndarray, allowed: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """The best k of the ``allowed`` nums by exact inner product, their vectors read from SQLite."""
    nums, vectors = points.vectors(allowed.tolist())
    scores = vectors @ vector
    top = np.argsort(-scores, kind="stable")[:k]
    return nums[top].tolist(), scores[top].tolist()

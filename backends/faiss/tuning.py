"""Tuning an ANN index to the recall target, choosing between "auto"'s candidates, and measuring recall later.

Tuning: when an IVF index is built without a fixed nprobe (or an HNSW index without a fixed ef_search),
TUNING_QUERIES stored vectors (fixed seed; a quarter of a small collection) are held out of the index, searched
exactly against the rest and through the index at nprobe 1, 2, 4, ... nlist (efSearch 16, 32, ...
HNSW_MAX_EF_SEARCH), then bisected, and added afterwards; the smallest value whose recall@10 (ties at the 10th
score counted as found) reaches halfway from ``target_recall`` to 1 is kept with the index, and
``index_report()`` hands the measurement to the engine's manifest.

The choice: "auto" builds each candidate (IVF, HNSW32) from the same snapshot, tunes each to the recall target on
the same held-out vectors, then times them one query at a time at their tuned settings (two rounds, each candidate
in turn over all queries, the order reversed in the second), and keeps the one with the lower median, HNSW only
when at least 10% faster (HNSW_MARGIN: it costs more memory and cannot remove a vector). Both candidates exist
while they are compared.

Recall later: each time an "auto" index's collection grows by RECALL_CHECK_GROWTH (``policy``), up to
TUNING_QUERIES of the vectors added since the last measure are searched through the index and exactly; a stored
vector's own hit is left out.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from . import kinds
from .options import FaissOptions
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .build import Built

log = logging.getLogger("vecguard.backends.faiss")
TUNING_QUERIES = 200
TUNING_K = 10
HNSW_MAX_EF_SEARCH = 1024
HNSW_MARGIN = 0.9  # "auto" keeps HNSW only at <= 90% of IVF's latency: it holds more memory and cannot remove ids


def exact_kth(
    faiss: Any,
    queries: np.ndarray,
    snapshot: Snapshot,
    k: int,
    *,
    left_out: np.ndarray | None = None,
    own: np.ndarray | None = None,
) -> np.ndarray:
    """Each query's k-th best exact score over the snapshot (less a rounding allowance), read block by block,
    without the rows marked in ``left_out`` and without each query's ``own`` num."""
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


def tune(
    faiss: Any, index: Any, spec: str, snapshot: Snapshot, held: np.ndarray, target_recall: float
) -> dict[str, Any]:
    """The smallest nprobe (IVF) or efSearch (HNSW) whose recall@10 for the ``held`` rows (not in the index yet)
    against exact search over the other rows (the index's contents) reaches the aim, as the tuning report."""
    nums = snapshot.nums
    queries = snapshot.take(held)
    k = min(TUNING_K, len(nums) - len(held))
    if kinds.is_ivf(spec):
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

    is_held = np.zeros(len(nums), dtype=bool)
    is_held[held] = True
    last_true = exact_kth(faiss, queries, snapshot, k, left_out=is_held)

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

    # TUNING_QUERIES queries measure recall with some noise, and new queries are not the stored ones: aim halfway
    # between the target and 1. Double the knob until the aim is met, then bisect down.
    aim = target_recall + (1 - target_recall) / 2
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
            target_recall,
        )
    return {
        knob: chosen,
        "recall_at_10": round(measured[chosen], 4),
        "aimed_at": round(aim, 4),
        "target_recall": target_recall,
        "queries": len(queries),
        **described,
        "vectors": len(nums),
    }


def fastest(faiss: Any, built: list[Built], snapshot: Snapshot, options: FaissOptions) -> Built:
    """The candidate that reaches the aim at the lowest median latency over the held-out queries, one at a time.
    Timed in two rounds, every query on one candidate and then on the other, the order reversed in the second:
    a candidate keeps its own data in cache as it would serving, and a noisy machine slows both alike.
    With none at the aim, the best recall. Its tuning report lists every candidate's measures."""
    queries = snapshot.take(built[0].held)
    params = [
        kinds.search_parameters(
            faiss, b.spec, b.index, b.tuning, TUNING_K, nprobe=options.nprobe, ef_search=options.ef_search
        )
        for b in built
    ]
    times: list[list[float]] = [[] for _ in built]
    order = list(range(len(built)))
    for turn in (order, order[::-1]):
        for i in turn:
            index = built[i].index
            for query in queries:
                started = time.perf_counter()
                index.search(query.reshape(1, -1), TUNING_K, params=params[i])
                times[i].append(time.perf_counter() - started)
    p50s = [float(np.median(t)) * 1000 for t in times]
    # HNSW has to be clearly faster: it holds more memory, cannot remove a vector and adds more slowly.
    costs = [p50 / HNSW_MARGIN if kinds.is_hnsw(b.spec) else p50 for p50, b in zip(p50s, built)]
    reached = [i for i, b in enumerate(built) if b.tuning and b.tuning["recall_at_10"] >= b.tuning["aimed_at"]]
    if reached:
        best = min(reached, key=lambda i: costs[i])
    else:
        best = max(range(len(built)), key=lambda i: (built[i].tuning or {}).get("recall_at_10", 0.0))
    compared = {}
    for b, p50 in zip(built, p50s):
        tuning = b.tuning
        knob = {key: tuning[key] for key in ("nprobe", "ef_search") if key in tuning} if tuning else {}
        compared[b.spec] = {
            **knob,
            "recall_at_10": (tuning or {}).get("recall_at_10"),
            "p50_ms": round(p50, 4),
            "build_s": (tuning or {}).get("build_s"),
        }
    kept = built[best]
    log.info("FAISS auto index: kept %s of %s", kept.spec, compared)
    return dataclasses.replace(kept, tuning=dict(kept.tuning or {}, candidates=compared))


def recall_on_new(
    faiss: Any, snapshot: Snapshot, after_num: int, search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
) -> tuple[float, int] | None:
    """(recall@10, queries) of ``search(queries, k)`` (the live index) for up to TUNING_QUERIES of the snapshot's
    vectors with nums above ``after_num``, each query's own hit left out on both sides; None with nothing to measure."""
    fresh = np.flatnonzero(snapshot.nums > after_num)
    k = min(TUNING_K, len(snapshot) - 1)
    if not len(fresh) or k < 1:
        return None
    rows = np.sort(
        np.random.default_rng(len(snapshot)).choice(fresh, size=min(TUNING_QUERIES, len(fresh)), replace=False)
    )
    queries, own = snapshot.take(rows), snapshot.nums[rows]
    last_true = exact_kth(faiss, queries, snapshot, k, own=own)
    scores, found = search(queries, k + 1)
    answer = (found >= 0) & (found != own[:, None])
    answer &= np.cumsum(answer, axis=1) <= k  # the first k hits besides the query's own
    return float(np.count_nonzero(answer & (scores >= last_true[:, None])) / (k * len(rows))), len(rows)

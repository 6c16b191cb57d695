"""Tuning an ANN index to the recall target, choosing between "auto"'s candidates, and measuring recall later.

What tunes it: query vectors that are not stored in the index (``Probes``), best first:
- SERVED: the newest query vectors the collection served (``QuerySample``), once it holds MIN_SERVED;
- QUERY_LIKE: a few words of stored texts encoded as queries (the engine's ``query_like_probes``), before that;
- HELD_OUT: TUNING_QUERIES stored vectors (fixed seed; a quarter of a small collection) kept out of the index until
  it is tuned, for a store used without an engine.
Stored vectors flatter an index: on ICD-10-CM (74,731 codes, the publisher's synonyms as queries) IVF1093 reached
recall@10 0.98 at nprobe 6 on stored vectors and 0.84 on real queries (benchmarks/results/query_recall-before.md);
query-like probes read at or below real queries and reached 0.95 at the same nprobe
(benchmarks/results/query_recall.md).

The rule (``recall_target``): the smallest nprobe (IVF, 1, 2, 4, ... nlist) or efSearch (HNSW, 16 ...
HNSW_MAX_EF_SEARCH), doubled then bisected, at which the probes' recall@10 against exact search (ties at the 10th
score counted as found) reaches the aim: a 95% interval's lower end at ``target_recall`` for query vectors, halfway
from it to 1 for held-out stored vectors. ``index_report()`` hands the measurement to the engine's manifest.

The choice: "auto" builds each candidate (IVF, HNSW32) from the same snapshot, tunes each on the same probes, then
times them one query at a time at their tuned settings (two rounds, each candidate in turn over all queries, the
order reversed in the second), and keeps the one with the lower median, HNSW only when at least 10% faster
(HNSW_MARGIN: it costs more memory and cannot remove a vector). Both candidates exist while they are compared.

Recall later: ``retune`` measures the live index on the served queries and moves its knob to the smallest value that
reaches the aim (a setting, no rebuild); without served queries, each time an "auto" index's collection grows by
RECALL_CHECK_GROWTH (``policy``), up to TUNING_QUERIES of the vectors added since the last measure are searched
through the index and exactly; a stored vector's own hit is left out.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from vecguard.backends.recall_target import (
    aim_of,
    measured_level,
    reached,
    report_of,
    smallest_reaching,
)

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


@dataclass(frozen=True)
class Probes:
    """Query vectors that tune or measure an index (none of them a point it holds), what they are, and each one's
    10th best exact score over the snapshot it is measured against (less a rounding allowance)."""

    vectors: np.ndarray
    source: str
    kth: np.ndarray


@dataclass(frozen=True)
class Knob:
    """The search setting an index is tuned by: its name, the values tried first, the bounds of the bisection."""

    name: str
    candidates: list[int]
    floor: int
    ceiling: int
    params: Callable[[int], Any]
    described: dict[str, Any]


def knob_of(faiss: Any, index: Any, spec: str, k: int, selector: Any = None) -> Knob:
    """nprobe for an IVF index, efSearch for HNSW; searches through ``selector`` when given (deleted nodes)."""
    extra = {} if selector is None else {"sel": selector}
    if kinds.is_ivf(spec):
        nlist = faiss.extract_index_ivf(index).nlist
        return Knob(
            "nprobe",
            sorted({min(nlist, 2**i) for i in range(int(math.log2(nlist)) + 2)}),
            0,
            nlist,
            lambda value: faiss.SearchParametersIVF(nprobe=value, **extra),
            {"nlist": nlist},
        )
    return Knob(
        "ef_search",
        [2**i for i in range(4, int(math.log2(HNSW_MAX_EF_SEARCH)) + 1)],
        k - 1,
        HNSW_MAX_EF_SEARCH,
        lambda value: faiss.SearchParametersHNSW(efSearch=max(value, k), **extra),
        {},
    )


def probes_of(
    faiss: Any, vectors: np.ndarray, source: str, snapshot: Snapshot, left_out: np.ndarray | None = None
) -> Probes:
    """Query vectors with their exact 10th best score over the snapshot, less the rows marked ``left_out`` (the
    held-out ones themselves, which are not in the index yet)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    k = min(TUNING_K, len(snapshot) - (int(np.count_nonzero(left_out)) if left_out is not None else 0))
    return Probes(vectors, source, exact_kth(faiss, vectors, snapshot, k, left_out=left_out))


def recalls_at(
    search: Callable[[np.ndarray, int, Any], np.ndarray],
    knob: Knob,
    value: int,
    probes: Probes,
    snapshot: Snapshot,
    stored: dict[int, np.ndarray],
    k: int,
) -> np.ndarray:
    """Each probe's recall@k through ``search(queries, k, params)`` (found nums) at ``value``, its hits scored
    against the stored vectors (an index that codes its vectors, SQ8 or PQ, reports approximate scores); a num the
    snapshot does not hold (written since) counts as missed. ``stored`` caches vectors across calls."""
    found = search(probes.vectors, k, knob.params(value))
    wanted = np.setdiff1d(found[found >= 0], np.fromiter(stored, np.int64, len(stored)))
    rows = np.searchsorted(snapshot.nums, wanted)
    known = rows < len(snapshot.nums)
    known[known] = snapshot.nums[rows[known]] == wanted[known]
    stored.update(zip(wanted[known].tolist(), snapshot.take(rows[known])))
    recalls = np.zeros(len(probes.vectors))
    for row, numbers in enumerate(found):
        scores = [stored[n] @ probes.vectors[row] for n in numbers[numbers >= 0].tolist() if n in stored]
        recalls[row] = min(k, int(np.count_nonzero(np.array(scores) >= probes.kth[row]))) / k
    return recalls


def tune(faiss: Any, index: Any, spec: str, snapshot: Snapshot, probes: Probes, target_recall: float) -> dict[str, Any]:
    """The smallest nprobe (IVF) or efSearch (HNSW) at which ``probes`` (none of them in the index) reach the aim,
    as the tuning report."""
    k = min(TUNING_K, index.ntotal)
    knob = knob_of(faiss, index, spec, k)
    stored: dict[int, np.ndarray] = {}  # the vectors of nums found so far, read once across every knob value

    def search(queries: np.ndarray, depth: int, params: Any) -> np.ndarray:
        return index.search(queries, depth, params=params)[1]

    aim = aim_of(probes.source, target_recall)
    chosen, measured = smallest_reaching(
        lambda value: recalls_at(search, knob, value, probes, snapshot, stored, k), knob, probes.source, aim
    )
    report = report_of(knob.name, chosen, measured[chosen], probes.source, len(probes.vectors), aim, target_recall)
    if not reached(report):
        log.warning(
            "FAISS index %s reaches recall@10 %.3f at most on %d %s (%s %d), short of %.3f (target_recall %.2f)",
            spec,
            measured[chosen][0],
            len(probes.vectors),
            probes.source,
            knob.name,
            chosen,
            aim,
            target_recall,
        )
    return {**report, **knob.described, "vectors": len(snapshot)}


def retune(
    faiss: Any,
    spec: str,
    index: Any,
    snapshot: Snapshot,
    probes: Probes,
    target_recall: float,
    search: Callable[[np.ndarray, int, Any], np.ndarray],
    selector: Any,
    current: int,
    *,
    fixed: bool = False,
) -> tuple[dict[str, Any], float]:
    """The live index measured on ``probes`` (served queries) at its ``current`` knob, and the smallest knob value
    that reaches the aim on them (``current`` itself when the user ``fixed`` it): (the tuning report's knob and
    measures, the recall at ``current``). ``search(queries, k, params)`` searches the live index."""
    k = min(TUNING_K, len(snapshot))
    knob = knob_of(faiss, index, spec, k, selector)
    stored: dict[int, np.ndarray] = {}

    def recall_of(value: int) -> np.ndarray:
        return recalls_at(search, knob, value, probes, snapshot, stored, k)

    at_current = recall_of(current)
    aim = aim_of(probes.source, target_recall)
    if fixed:
        chosen, measured = current, {current: (float(np.mean(at_current)), measured_level(at_current, probes.source))}
    else:
        chosen, measured = smallest_reaching(recall_of, knob, probes.source, aim)
    report = report_of(knob.name, chosen, measured[chosen], probes.source, len(probes.vectors), aim, target_recall)
    return report, float(np.mean(at_current))


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


def fastest(faiss: Any, built: list[Built], queries: np.ndarray, options: FaissOptions) -> Built:
    """The candidate that reaches the aim at the lowest median latency over the probes that tuned them, one at a time.
    Timed in two rounds, every query on one candidate and then on the other, the order reversed in the second:
    a candidate keeps its own data in cache as it would serving, and a noisy machine slows both alike.
    With none at the aim, the best recall. Its tuning report lists every candidate's measures."""
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
    at_aim = [i for i, b in enumerate(built) if b.tuning and reached(b.tuning)]
    if at_aim:
        best = min(at_aim, key=lambda i: costs[i])
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

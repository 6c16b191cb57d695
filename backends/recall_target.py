"""The rule every ANN index here is tuned by: the smallest search setting at which query vectors reach
``target_recall``, measured against exact search.

What measures it (``source``), best first: the queries the collection SERVED (``query_sample``), QUERY_LIKE probes
the engine makes of stored chunks before any were served, and stored vectors (HELD_OUT of a FAISS index until it is
tuned, or sampled from an embedded Qdrant shard) when no engine makes probes. Stored vectors flatter an index (a
stored vector sits where its own neighbours are densest), so their aim is halfway from ``target_recall`` to 1; for
query vectors it is that the lower end of a 95% interval around the mean recall (mean - 2 standard errors over the
queries) reaches ``target_recall``, since a few hundred queries measure recall with some noise.

The search: the ladder's candidates in turn (rising) until one reaches the aim, then bisection down to the smallest
value that does. FAISS tunes nprobe or efSearch by it (``faiss/tuning.py``), the embedded Qdrant ``hnsw_ef``
(``qdrant/edge.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

SERVED = "served queries"
QUERY_LIKE = "query-like probes"
HELD_OUT = "held-out stored vectors"
CONFIDENCE_Z = 2.0  # the aim on query vectors: mean recall less this many standard errors reaches target_recall


class Ladder(Protocol):
    """The values a search setting is tried at: ``candidates`` (rising) first, then bisected between ``floor`` (a
    value known not to reach the aim) and ``ceiling``."""

    @property
    def candidates(self) -> list[int]: ...

    @property
    def floor(self) -> int: ...

    @property
    def ceiling(self) -> int: ...


def stored_vectors(source: str) -> bool:
    """Whether ``source`` names stored vectors (any but SERVED and QUERY_LIKE), which flatter an index."""
    return source not in (SERVED, QUERY_LIKE)


def aim_of(source: str, target_recall: float) -> float:
    return target_recall + (1 - target_recall) / 2 if stored_vectors(source) else target_recall


def measured_level(recalls: np.ndarray, source: str) -> float:
    """What is compared with the aim: the mean recall for stored vectors; for query vectors, the lower end of a 95%
    interval around it."""
    mean = float(np.mean(recalls))
    if stored_vectors(source) or len(recalls) < 2:
        return mean
    return mean - CONFIDENCE_Z * float(np.std(recalls, ddof=1)) / math.sqrt(len(recalls))


def reached(report: dict[str, Any]) -> bool:
    """Whether a tuning report says its index reached its aim."""
    return report.get("lower_bound", report["recall_at_10"]) >= report["aimed_at"]


def smallest_reaching(
    recall_of: Callable[[int], np.ndarray], ladder: Ladder, source: str, aim: float
) -> tuple[int, dict[int, tuple[float, float]]]:
    """The smallest value whose measured level reaches ``aim`` (else the best one), and every value measured:
    value -> (mean recall, level). ``recall_of(value)`` is each query's recall@k at that value."""
    measured: dict[int, tuple[float, float]] = {}

    def measure(value: int) -> bool:
        recalls = recall_of(value)
        measured[value] = (float(np.mean(recalls)), measured_level(recalls, source))
        return measured[value][1] >= aim

    low, high = ladder.floor, ladder.ceiling
    for value in ladder.candidates:
        if measure(value):
            high = value
            break
        low = value
    while high - low > 1 and high in measured and measured[high][1] >= aim:
        middle = (low + high) // 2
        low, high = (low, middle) if measure(middle) else (middle, high)
    if high in measured and measured[high][1] >= aim:
        return high, measured
    return max(measured, key=lambda v: (measured[v][1], -v)), measured


def report_of(
    knob: str, value: int, measured: tuple[float, float], source: str, queries: int, aim: float, target: float
) -> dict[str, Any]:
    """A tuning report: the setting chosen, its mean recall@10 (and the interval's lower end on query vectors), the
    aim, and what measured it."""
    mean, level = measured
    bound = {} if stored_vectors(source) else {"lower_bound": round(level, 4)}
    return {
        knob: value,
        "recall_at_10": round(mean, 4),
        **bound,
        "aimed_at": round(aim, 4),
        "target_recall": target,
        "queries": queries,
        "tuned_on": source,
    }

"""Building an index from a snapshot: each candidate trained, filled and tuned, the best one kept.

Pure functions of their arguments (they touch no store state), so a build can run in a background thread while
the live index keeps answering.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from vecguard.backends import recall_target
from vecguard.errors import ConfigError, StorageError

from . import kinds, policy, tuning
from .options import FaissOptions
from .snapshot import Snapshot

_NOTHING = np.zeros(0, np.int64)


@dataclass(frozen=True)
class Built:
    """A built index (None: nothing to build it from), the spec it was built from, its tuning report (None: not
    tuned), the snapshot rows that tuned it and are not in it yet (held-out stored vectors), and the query vectors
    that tuned it."""

    index: Any
    spec: str
    tuning: dict[str, Any] | None
    held: np.ndarray
    probes: tuning.Probes | None = None


def training_sample(faiss: Any, base: Any, snapshot: Snapshot) -> np.ndarray:
    """At most 64 vectors per IVF cell (FAISS asks for 39): k-means over every vector of a large collection
    costs far longer and buys nothing measurable."""
    n = len(snapshot)
    ivf = faiss.try_extract_index_ivf(base)
    limit = 64 * ivf.nlist if ivf is not None else n
    rows = np.arange(n) if n <= limit else np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))
    return snapshot.take(rows)


def build_index(
    faiss: Any, spec: str, snapshot: Snapshot, options: FaissOptions, probes: tuning.Probes | None = None
) -> Built:
    """One index of ``spec`` from a snapshot, trained, filled and (unless its knob is fixed) tuned: on ``probes``
    (query vectors, measured against every stored vector), else on held-out stored vectors, which are not in the
    index yet (``held``)."""
    started = time.perf_counter()
    nums = snapshot.nums
    n = len(nums)
    if not snapshot.dimension:
        return Built(None, spec, None, _NOTHING)
    try:
        base = faiss.index_factory(snapshot.dimension, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"[store] faiss index {spec!r} is not a valid FAISS factory string: {exc}") from exc
    index = base if kinds.holds_its_own_ids(faiss, base) else faiss.IndexIDMap2(base)
    if not base.is_trained:
        if n < 1:
            return Built(None, spec, None, _NOTHING)
        try:
            index.train(training_sample(faiss, base, snapshot))
        except RuntimeError as exc:
            raise StorageError(
                f"FAISS index {spec!r} cannot be trained on {n} vectors ({exc}); "
                'add more documents or use index = "auto"'
            ) from exc
    tunable = (kinds.is_ivf(spec) and options.nprobe is None) or (kinds.is_hnsw(spec) and options.ef_search is None)
    held = _NOTHING
    if tunable and probes is None:
        held = np.sort(np.random.default_rng(0).choice(n, size=min(tuning.TUNING_QUERIES, n // 4), replace=False))
    if not tunable or (probes is None and not len(held)):
        for start, block in snapshot.blocks():
            index.add_with_ids(block, nums[start : start + len(block)])
        return Built(index, spec, None, _NOTHING)
    # Held-out stored vectors stay out of the index until it is tuned: a vector already in the index finds its
    # neighbours far more easily than a new query (an HNSW node is linked to them).
    rest = np.ones(n, dtype=bool)
    rest[held] = False
    for start, block in snapshot.blocks():
        keep = rest[start : start + len(block)]
        index.add_with_ids(block[keep], nums[start : start + len(block)][keep])
    if probes is None:
        probes = tuning.probes_of(faiss, snapshot.take(held), recall_target.HELD_OUT, snapshot, left_out=~rest)
    report = tuning.tune(faiss, index, spec, snapshot, probes, options.target_recall)
    report["build_s"] = round(time.perf_counter() - started, 2)
    return Built(index, spec, report, held, probes)


def build_best(
    faiss: Any,
    snapshot: Snapshot,
    options: FaissOptions,
    reason: str | None = None,
    queries: tuple[np.ndarray, str] | None = None,
) -> Built:
    """Every candidate for the snapshot built and tuned (on ``queries``, (vectors, what they are), when given), the
    fastest at the aim kept, its held rows added back; ``held`` of the result is empty."""
    started = time.perf_counter()
    specs = policy.candidates(options, len(snapshot))
    probes = None
    if queries is not None and len(queries[0]) and any(kinds.is_approximate(spec) for spec in specs):
        probes = tuning.probes_of(faiss, queries[0], queries[1], snapshot)  # measured once for every candidate
    built = [build_index(faiss, spec, snapshot, options, probes) for spec in specs]
    if len(built) == 1:
        best = built[0]
    else:
        timed = built[0].probes.vectors if built[0].probes is not None else np.zeros((0, snapshot.dimension))
        best = tuning.fastest(faiss, built, timed, options)
    if len(best.held):
        best.index.add_with_ids(snapshot.take(best.held), snapshot.nums[best.held])
    report = best.tuning
    if report is not None:
        report["build_s"] = round(time.perf_counter() - started, 2)
        if reason:
            report["reason"] = reason
    return Built(best.index, best.spec, report, _NOTHING)

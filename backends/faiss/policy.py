"""The "auto" rules, as functions of counts: which index fits a collection, and when to retrain it.

An "auto" index is exact Flat below ``ivf_threshold`` vectors and an ANN index (IVF, HNSW32 or both, compared: see
``tuning``) above it. It is retrained when the collection crosses ``ivf_threshold``, has grown or shrunk
RETRAIN_GROWTH times since the index was trained, or when its recall, measured each time the collection grows by
RECALL_CHECK_GROWTH, falls below ``target_recall``. An HNSW graph (any spec) is rebuilt once DELETED_SHARE of its
nodes are deleted points.
"""

from __future__ import annotations

import math

from .options import FaissOptions

HNSW_CANDIDATE = "HNSW32"
RETRAIN_GROWTH = 4  # an "auto" ANN index is retrained once the collection is this many times larger (or smaller)
RECALL_CHECK_GROWTH = (
    1.25  # an "auto" index measures its recall on new vectors each time the collection grows this much
)
DELETED_SHARE = 0.1  # an HNSW index is rebuilt once this share of its nodes are deleted points
# The saved index files of the build in service are rewritten at close only once this many points changed since
# they were saved (a share of the collection, at least SAVE_AFTER_CHANGES): an open catches up from the change feed
# (which keeps 200,000 rows, more than this at any size the feed holds), so a process that adds one document to 1M
# chunks does not rewrite a 1.5 GB file when it closes.
SAVE_AFTER_SHARE = 0.01
SAVE_AFTER_CHANGES = 1000


def candidates(options: FaissOptions, n: int) -> list[str]:
    """The index specs worth building for ``n`` vectors: the one asked for, or "auto"'s choice(s)."""
    if options.index != "auto":
        return [options.index]
    if n < options.ivf_threshold:
        return ["Flat"]
    # 4*sqrt(n) cells, but at least 39 training points per cell (FAISS's own floor for sound k-means).
    nlist = max(16, min(int(4 * math.sqrt(n)), n // 39))
    specs = {"IVF": f"IVF{nlist},Flat", "HNSW": HNSW_CANDIDATE}
    return [specs[kind] for kind in options.auto_candidates]


def outgrown(options: FaissOptions, spec: str | None, trained_on: int, n: int) -> str | None:
    """Why an "auto" index built as ``spec`` on ``trained_on`` vectors no longer fits ``n``, if it does not: Flat
    past ivf_threshold (or an ANN index below it), or an ANN index trained on a collection RETRAIN_GROWTH times
    smaller or larger."""
    if options.index != "auto":
        return None
    flat_now, flat_wanted = spec == "Flat", candidates(options, n) == ["Flat"]
    if flat_now != flat_wanted:
        return f"the collection ({n} vectors) crossed ivf_threshold ({options.ivf_threshold})"
    if not flat_now and trained_on > 0 and (n >= RETRAIN_GROWTH * trained_on or n * RETRAIN_GROWTH <= trained_on):
        return (
            f"the collection changed {RETRAIN_GROWTH}x in size since the index was trained "
            f"({trained_on} -> {n} vectors)"
        )
    return None


def recall_check_due(options: FaissOptions, spec: str | None, checked_at: int, n: int) -> bool:
    """Whether an "auto" ANN index last measured at ``checked_at`` vectors is due a recall measure at ``n``."""
    return (
        options.index == "auto"
        and spec not in (None, "Flat")
        and checked_at > 0
        and n >= RECALL_CHECK_GROWTH * checked_at
    )


def too_many_deleted(deleted: int, nodes: int) -> str | None:
    """Why an HNSW graph of ``nodes`` holding ``deleted`` deleted points should be rebuilt, if it should."""
    if deleted > DELETED_SHARE * nodes:
        return f"{deleted} of the HNSW graph's {nodes} nodes are deleted points"
    return None


def save_due(changed_since_saved: int, stored: int) -> bool:
    """Whether the index files of the build in service are worth rewriting, ``changed_since_saved`` point changes
    behind it."""
    return changed_since_saved > max(SAVE_AFTER_CHANGES, SAVE_AFTER_SHARE * stored)

"""What a FAISS factory string means to the store: IVF, HNSW or exact, who holds the ids, how it is searched.

String ids map to SQLite row numbers used as FAISS int64 ids: IVF indexes hold them natively, others through
IndexIDMap2. IVF and Flat remove ids; HNSW cannot, so a deleted point stays in the graph and searches skip it
through an id selector.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_EF_SEARCH = 128  # an HNSW index loaded without a tuning (written by an earlier version)
FILTER_MAX_EF_SEARCH = 4096  # the widest a filtered HNSW search goes before it is answered exactly
# How much wider than 1/share a filtered HNSW search goes. Through an id selector, HNSW32's efSearch widened by
# 1/share alone read recall@10 0.944 / 0.944 / 0.953 for filters letting 10 / 20 / 50% of 100k clustered points
# through; twice that read 0.981 / 0.975 / 0.974, for 1.4-1.8x the time: benchmarks/results/
# filtered_search-clustered.md.
HNSW_FILTER_SLACK = 2.0


def is_ivf(spec: str | None) -> bool:
    return "IVF" in (spec or "")


def is_hnsw(spec: str | None) -> bool:
    """An HNSW graph cannot remove a node: deleted points are kept and skipped."""
    return "HNSW" in (spec or "")


def is_approximate(spec: str | None) -> bool:
    return is_ivf(spec) or is_hnsw(spec)


def holds_its_own_ids(faiss: Any, index: Any) -> bool:
    """IVF indexes store our ids in their lists and remove by id. IndexIDMap must not wrap them: it renumbers on
    removal the way a flat index shifts its rows, which an IVF index does not, so every id after a deleted one
    would answer for its neighbour."""
    return faiss.try_extract_index_ivf(index) is not None


def knob_value(
    faiss: Any,
    spec: str | None,
    index: Any,
    tuning: dict[str, Any] | None,
    *,
    nprobe: int | None,
    ef_search: int | None,
) -> int:
    """The nprobe (IVF) or efSearch (HNSW) a plain search uses: the fixed one if set, else the tuned one."""
    if is_ivf(spec):
        nlist = faiss.extract_index_ivf(index).nlist
        return min(nlist, nprobe or (tuning or {}).get("nprobe") or max(16, nlist // 8))
    return ef_search or (tuning or {}).get("ef_search") or DEFAULT_EF_SEARCH


def search_parameters(
    faiss: Any,
    spec: str | None,
    index: Any,
    tuning: dict[str, Any] | None,
    k: int,
    *,
    nprobe: int | None = None,
    ef_search: int | None = None,
    selector: Any = None,
    widen: float = 1.0,
) -> Any:
    """The FAISS search parameters for a search of ``k`` on ``index`` (None: FAISS's defaults): the fixed
    ``nprobe`` / ``ef_search`` if set, else the tuned one, widened ``widen`` times (a filtered search)."""
    kwargs: dict[str, Any] = {} if selector is None else {"sel": selector}
    if is_ivf(spec):
        nlist = faiss.extract_index_ivf(index).nlist
        probes = knob_value(faiss, spec, index, tuning, nprobe=nprobe, ef_search=ef_search)
        return faiss.SearchParametersIVF(nprobe=min(nlist, math.ceil(probes * widen)), **kwargs)
    if is_hnsw(spec):
        breadth = max(knob_value(faiss, spec, index, tuning, nprobe=nprobe, ef_search=ef_search), k)
        slack = HNSW_FILTER_SLACK if widen > 1 else 1.0
        widened = min(max(breadth, FILTER_MAX_EF_SEARCH), math.ceil(breadth * widen * slack))
        return faiss.SearchParametersHNSW(efSearch=widened, **kwargs)
    return faiss.SearchParameters(**kwargs) if kwargs else None

"""The keyword index of a collection whose store keeps the keyword signal itself (``HoldsKeywords``: Qdrant).

``StoreKeywords`` stands where a keyword index stands, so the engine's seams stay the same: the settings, the
tokenizer and the term weights are the configured keyword index's, the postings are the store's. Adds and deletes
cost nothing here (the store weighs each chunk in the same write as its point), nothing is saved or loaded, and
another process's writes need no catching up. ``Query`` asks the store for both signals in one call with the
filter applied inside (``search_signals``); ``search`` and ``exact_matches`` serve everything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .protocols import HoldsKeywords, KeywordIndex, KeywordVectors, RankedList, SparseWeights


def keyword_signal(store: Any, keyword: KeywordIndex) -> KeywordIndex:
    """``keyword`` itself, or ``StoreKeywords`` when the store keeps this collection's keyword signal."""
    if isinstance(store, HoldsKeywords) and isinstance(keyword, KeywordVectors):
        weights = keyword.sparse_weights()
        if store.hold_keywords(weights):
            return StoreKeywords(store, keyword, weights)
    return keyword


class StoreKeywords:
    """A ``KeywordIndex`` over the store's sparse vectors, weighed like ``keyword`` (whose settings it reports)."""

    def __init__(self, store: HoldsKeywords, keyword: KeywordIndex, weights: SparseWeights) -> None:
        self.store, self.weights = store, weights
        self._settings = keyword.settings()

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Nothing to do: the store weighed the chunks when they were written."""

    def delete(self, ids: Sequence[str]) -> None:
        """Nothing to do: deleting the points deleted their weights."""

    def count(self) -> int:
        return self.store.count()  # type: ignore[attr-defined]

    def save(self, directory: Path) -> None:
        """Nothing to save: the store holds it."""

    def load(self, directory: Path) -> bool:
        return True

    def search(self, query: str, k: int, allowed_ids: Iterable[str] | None = None) -> RankedList:
        return self.ranked(query, k, None, list(allowed_ids) if allowed_ids is not None else None)

    def ranked(
        self, query: str, k: int, filter: Mapping[str, Any] | None, ids: Sequence[str] | None = None
    ) -> RankedList:
        terms = self.weights.query(query)
        if not terms[0] or (ids is not None and not ids):
            return []
        hits = self.store.search_signals(None, terms, k, filter, ids)["keyword"]
        return sorted(((key, score) for key, score, _ in hits), key=lambda pair: (-pair[1], pair[0]))

    def exact_matches(self, query: str, k: int, filter: Mapping[str, Any] | None = None) -> RankedList:
        """Chunks holding an identifier-shaped term of the query that few chunks hold, best BM25 first (as
        ``BM25Index.exact_matches``: an "identifier" most of the corpus holds identifies nothing)."""
        identifiers = self.weights.identifiers(query)
        if not identifiers:
            return []
        rare = max(10, int(0.01 * self.count()))
        holders: set[str] = set()
        for term in identifiers:
            if self.store.term_holders(term, rare + 1) <= rare:
                found = self.store.search_signals(None, ([term], [1.0]), rare, None)["keyword"]
                holders.update(key for key, _, _ in found)
        if not holders:
            return []
        # Every holder shares a term with the query, so each scores above 0 unless the filter drops it.
        return self.ranked(query, min(k, len(holders)), filter, sorted(holders))

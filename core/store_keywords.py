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
from .routing import CITATION_RARE, IDENTIFIER_RARE, rarity_bar, term_weight

COUNTED_HOLDERS = 1000


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
        """Chunks holding an identifier-shaped term of the query that few chunks hold, or every term of a citation
        whose rarest term few chunks hold, best BM25 first (as ``BM25Index.exact_matches``: an "identifier" most
        of the corpus holds identifies nothing)."""
        identifiers, citation = self.weights.identifiers(query), self.weights.citation(query)
        if not identifiers and not citation:
            return []
        live = self.count()
        rare = rarity_bar(IDENTIFIER_RARE, live)
        holders: set[str] = set()
        for term in identifiers:
            if self.store.term_holders(term, rare + 1) <= rare:
                holders.update(self._holders(term, rare))
        if citation:
            holders.update(self._holders_of_all(citation, rarity_bar(CITATION_RARE, live)))
        if not holders:
            return []
        # Every holder shares a term with the query, so each scores above 0 unless the filter drops it.
        return self.ranked(query, min(k, len(holders)), filter, sorted(holders))

    def coverage(self, query: str, ids: Sequence[str]) -> list[float]:
        """Each id's share of the query's term weight (``MeasuresCoverage``, ``routing.term_weight``), each term's
        holders counted up to ``COUNTED_HOLDERS``: the store has no document frequencies to read, only holders to
        count, so in a collection of more than twice as many chunks a term held more often weighs as one held that
        often (more than ``BM25Index.coverage`` gives it). Every share is 1 when no term weighs anything."""
        indices, _ = self.weights.query(query)
        live = self.count()
        weights = {term: term_weight(self.store.term_holders(term, COUNTED_HOLDERS), live) for term in indices}
        total = sum(weights.values())
        if total <= 0:
            return [1.0] * len(ids)
        held = dict.fromkeys(ids, 0.0)
        for term, weight in weights.items():
            if weight > 0:
                for key in self._holders(term, len(held), list(held)):
                    held[key] += weight
        return [held[key] / total for key in ids]

    def _holders(self, term: int, limit: int, among: Sequence[str] | None = None) -> set[str]:
        found = self.store.search_signals(None, ([term], [1.0]), limit, None, among)["keyword"]
        return {key for key, _, _ in found}

    def _holders_of_all(self, terms: list[int], rare: int) -> set[str]:
        """The chunks holding every one of ``terms``, when the rarest is held by at most ``rare``; else none."""
        counts = {term: self.store.term_holders(term, rare + 1) for term in terms}
        rarest = min(terms, key=counts.__getitem__)
        if counts[rarest] > rare:
            return set()
        together = self._holders(rarest, rare)
        for term in terms:
            if term != rarest and together:
                together = self._holders(term, len(together), sorted(together))
        return together

"""BM25 as sparse vectors, for a store that keeps the keyword signal itself (Qdrant, ``HoldsKeywords``).

A chunk's vector holds, per term, BM25Okapi's term-frequency part ``tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl))``;
the store multiplies in the inverse document frequency over what it holds (Qdrant's IDF modifier), so no document
frequency is kept outside it. A query's vector holds each of its terms' count: the score is BM25's sum over the
query's terms. ``avgdl`` is fixed per collection when its first batch is written (a later change would need every
stored vector reweighed); the store records it.

A term's index is the first 4 bytes of its BLAKE2b digest (Qdrant's sparse indices are 32-bit): no vocabulary to
keep or share. Two terms of a collection share an index with probability about n^2 / 2^33 (0.1 at 30,000 terms);
such a pair scores as one term.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable

from vecguard.routing import is_citation

SparseVector = tuple[list[int], list[float]]


def term_index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


class SparseBM25:
    """The ``SparseWeights`` of a BM25 keyword index: its tokenizer and its k1 and b."""

    def __init__(
        self, tokenize: Callable[[str], list[str]], identifiers: Callable[[str], list[str]], k1: float, b: float
    ):
        self._tokenize, self._identifiers, self._k1, self._b = tokenize, identifiers, k1, b

    def length(self, text: str) -> int:
        """A chunk's length in BM25 terms (what ``average_length`` averages)."""
        return len(self._tokenize(text))

    def document(self, text: str, average_length: float) -> SparseVector:
        terms = self._tokenize(text)
        norm = self._k1 * (1 - self._b + self._b * len(terms) / max(average_length, 1e-9))
        return _vector({term: tf * (self._k1 + 1) / (tf + norm) for term, tf in Counter(terms).items()})

    def query(self, text: str) -> SparseVector:
        return _vector({term: float(count) for term, count in Counter(self._tokenize(text)).items()})

    def identifiers(self, text: str) -> list[int]:
        """The indices of the query's identifier-shaped terms (CVE-2022-24045, 21A)."""
        return sorted({term_index(term) for term in self._identifiers(text)})

    def citation(self, text: str) -> list[int]:
        """The indices of the query's terms when it is a citation (``routing.is_citation`` on these terms)."""
        terms = self._tokenize(text)
        return sorted({term_index(term) for term in terms}) if is_citation(text, terms) else []


def _vector(weights: dict[str, float]) -> SparseVector:
    merged: dict[int, float] = {}
    for term, weight in weights.items():
        index = term_index(term)
        merged[index] = merged.get(index, 0.0) + weight
    indices = sorted(merged)
    return indices, [merged[i] for i in indices]

"""One ``Engine.search``: the dense list, the keyword lists under a filter, routing, fusion, hits.

Hybrid mode fuses the top ``depth`` candidates of each signal, a short query's
keyword hits weighed by the share of the query each holds (``MeasuresCoverage``).
Chunks that hold a citation query verbatim rank first (a ``verbatim`` signal),
then chunks that hold a rare identifier of the query or every term of a
citation (an ``identifier`` signal), each group in fused order: neither fusion
keeps an exact hit first on its own (``routing``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import filters as portable_filters
from . import integrity, routing
from .collection import Collection
from .errors import InvalidArgumentError
from .protocols import (
    Encoder,
    Fuser,
    Hit,
    Instrument,
    Payload,
    RankedList,
    SignalEvidence,
    stage,
    unicode_problem,
)
from .store_keywords import StoreKeywords

MODES = ("hybrid", "dense", "keyword")


def check_arguments(query: Any, k: Any, mode: Any, min_score: Any, filter: Any) -> None:
    """Raise InvalidArgumentError (or FilterError) naming the first argument of a search that is wrong."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgumentError("query must be a non-empty string")
    if problem := unicode_problem(query):
        raise InvalidArgumentError(f"query {problem}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidArgumentError(f"k must be a whole number >= 1, got {k!r}")
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if min_score is not None:
        if mode == "keyword":
            raise InvalidArgumentError(
                "min_score is a floor on the dense cosine; keyword mode has no cosine to compare"
            )
        if not isinstance(min_score, (int, float)) or isinstance(min_score, bool) or math.isnan(min_score):
            raise InvalidArgumentError(f"min_score must be a cosine similarity like 0.3, got {min_score!r}")
    if filter:
        portable_filters.validate(filter)


class Query:
    """Searches one collection with the engine's encoder and fuser; one instance serves many searches."""

    def __init__(
        self,
        collection: Collection,
        encoder: Encoder,
        fuser: Fuser,
        *,
        depth: int,
        weights: Mapping[str, float],
        instrument: Instrument | None = None,
    ) -> None:
        self.collection, self.encoder, self.fuser = collection, encoder, fuser
        self.depth, self.weights, self.instrument = depth, weights, instrument
        self._fuser_takes_shares = fuser_takes_shares(fuser)

    def __call__(
        self,
        query: str,
        k: int,
        mode: str,
        filter: Mapping[str, Any] | None,
        min_score: float | None,
        chunks: bool,
    ) -> list[Hit]:
        check_arguments(query, k, mode, min_score, filter)
        depth = max(k, self.depth)
        payloads: dict[str, Payload] = {}
        ranked = self._ranked_lists(query, depth, mode, filter or None, min_score, payloads)
        try:
            return self._hits(query, ranked, payloads, mode, k, chunks)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A stored payload of the wrong shape, named; anything else is a bug and goes through as it is.
            raise integrity.malformed_payload(self.collection.where, payloads) or exc from exc

    def _ranked_lists(
        self,
        query: str,
        depth: int,
        mode: str,
        filter: Mapping[str, Any] | None,
        min_score: float | None,
        payloads: dict[str, Payload],
    ) -> dict[str, RankedList]:
        if self.collection.keyword_in_store:
            return self._ranked_in_store(query, depth, mode, filter, min_score, payloads)
        ranked: dict[str, RankedList] = {}
        if mode in ("hybrid", "dense"):
            vector = self._encode(query)
            with stage(self.instrument, "dense"):
                dense = self._dense(vector, depth, filter, payloads)
            ranked["dense"] = self._above(dense, min_score)
        keyword = self.collection.keyword
        matches = portable_filters.compile(filter) if filter else None
        with stage(self.instrument, "keyword"):
            if mode == "hybrid":
                ranked["identifier"] = self._keyword(query, depth, matches, keyword.exact_matches, payloads)
            if mode in ("hybrid", "keyword"):
                ranked["keyword"] = self._keyword(query, depth, matches, keyword.search, payloads)
        return ranked

    def _ranked_in_store(
        self,
        query: str,
        depth: int,
        mode: str,
        filter: Mapping[str, Any] | None,
        min_score: float | None,
        payloads: dict[str, Payload],
    ) -> dict[str, RankedList]:
        """Both signals from the store in one call, the filter applied inside it (``HoldsKeywords``)."""
        keyword: StoreKeywords = self.collection.keyword  # type: ignore[assignment]
        vector, terms = None, None
        if mode in ("hybrid", "dense"):
            vector = self._encode(query)
        if mode in ("hybrid", "keyword"):
            terms = keyword.weights.query(query)
        with stage(self.instrument, "signals"):
            found = keyword.store.search_signals(vector, terms if terms and terms[0] else None, depth, filter)
        ranked: dict[str, RankedList] = {}
        for signal in [name for name, asked in (("dense", vector), ("keyword", terms)) if asked is not None]:
            hits = found.get(signal, [])
            payloads.update((key, payload) for key, _, payload in hits)
            # Identical chunks tie exactly; break ties by id so every backend ranks them alike.
            ranked[signal] = sorted(((key, score) for key, score, _ in hits), key=lambda pair: (-pair[1], pair[0]))
        if "dense" in ranked:
            ranked["dense"] = self._above(ranked["dense"], min_score)
        if mode == "hybrid":
            with stage(self.instrument, "keyword"):
                ranked["identifier"] = keyword.exact_matches(query, depth, filter)
        return ranked

    def _encode(self, query: str) -> np.ndarray:
        """The query's vector, handed to a store that tunes its index on the queries it serves."""
        with stage(self.instrument, "encode"):
            vector = self.encoder.encode_queries([query])[0]
        if self.collection.tunes_on_queries:
            self.collection.store.record_query(vector)  # type: ignore[attr-defined]
        return vector

    def _above(self, dense: RankedList, min_score: float | None) -> RankedList:
        """The dense list (its best cosine observed: the drift signal) without chunks under ``min_score``."""
        if dense and self.instrument is not None:
            self.instrument.observe("top1_cosine", dense[0][1])
        return dense if min_score is None else [(i, s) for i, s in dense if s >= min_score]

    def _dense(
        self, vector: np.ndarray, depth: int, filter: Mapping[str, Any] | None, payloads: dict[str, Payload]
    ) -> RankedList:
        """The store's best ``depth`` chunks, collecting their payloads when the store returns them in the same call."""
        store = self.collection.store
        if not self.collection.searches_with_payloads:
            hits = store.search(vector, depth, filter)
        else:
            hits = []
            for key, score, payload in store.search_with_payloads(vector, depth, filter):
                hits.append((key, score))
                payloads[key] = payload
        # Identical chunks tie exactly; break ties by id so every backend ranks them alike.
        return sorted(hits, key=lambda pair: (-pair[1], pair[0]))

    def _keyword(
        self,
        query: str,
        depth: int,
        matches: Callable[[Mapping[str, Any]], bool] | None,
        search: Callable[[str, int], RankedList],
        payloads: dict[str, Payload],
    ) -> RankedList:
        """``search``'s best ``depth`` chunks whose metadata ``matches`` (checked on stored payloads, which are kept
        in ``payloads`` for the hits)."""
        if matches is None:
            return search(query, depth)
        wanted = depth * 4
        while True:
            candidates = search(query, wanted)
            payloads.update(self.collection.payloads([i for i, _ in candidates if i not in payloads]))
            try:
                kept = [(i, s) for i, s in candidates if i in payloads and matches(payloads[i]["metadata"])]
            except (KeyError, TypeError, AttributeError) as exc:
                raise integrity.malformed_payload(self.collection.where, payloads) or exc from exc
            if len(kept) >= depth or len(candidates) < wanted:
                return kept[:depth]
            wanted *= 4

    def _hits(
        self,
        query: str,
        ranked: dict[str, RankedList],
        payloads: dict[str, Payload],
        mode: str,
        k: int,
        chunks: bool,
    ) -> list[Hit]:
        with stage(self.instrument, "fuse"):
            # Keyword candidates first: a verbatim holder's rank is its keyword rank among the holders.
            order = ("keyword", "identifier", "dense")
            candidates = list(dict.fromkeys(i for signal in order for i, _ in ranked.get(signal, [])))
            payloads.update(self.collection.payloads([i for i in candidates if i not in payloads]))
            shares: dict[str, dict[str, float]] = {}
            if mode == "hybrid":
                texts = ((key, payloads[key]["text"]) for key in candidates if key in payloads)
                ranked = {"verbatim": [(key, 1.0) for key in routing.verbatim(query, texts)], **ranked}
                shares = self._keyword_shares(query, ranked.get("keyword", []))
            # In document mode a document shows the chunk holding the citation or the identifier, else its best dense
            # chunk, else its best keyword chunk: the first list that names it, in this order.
            representative: dict[str, str] = {}
            if not chunks:
                shares = {signal: first_by_document(by_chunk, payloads) for signal, by_chunk in shares.items()}
                shown_first = sorted(ranked, key=lambda signal: signal not in ("verbatim", "identifier"))
                ranked = {signal: collapse(ranked[signal], payloads, representative) for signal in shown_first}
            scored = self._fuse(ranked, mode, shares)
        results = []
        for key, score, signals in scored[:k]:
            payload = payloads[representative.get(key, key)]
            results.append(
                Hit(
                    id=payload["doc_id"] if not chunks else key,
                    score=float(score),
                    text=payload["text"],
                    metadata=dict(payload["metadata"]),
                    signals=dict(signals),
                    chunk=payload["chunk"],
                    start=payload["start"],
                    end=payload["end"],
                )
            )
        return results

    def _keyword_shares(self, query: str, keyword: RankedList) -> dict[str, dict[str, float]]:
        """A short query's keyword hits weighed by the share of the query's term weight each holds, where the index
        measures it (``MeasuresCoverage``): a chunk matching one common word of six does not count as one matching
        all six. In a long query every chunk misses most words (often names the collection never saw), so its hits
        count whole."""
        if not keyword or not self._fuser_takes_shares or not self.collection.keyword_measures_coverage:
            return {}
        if len(set(routing.words(query))) > routing.SHORT_QUERY:
            return {}
        ids = [key for key, _ in keyword]
        return {"keyword": dict(zip(ids, self.collection.keyword.coverage(query, ids)))}  # type: ignore[attr-defined]

    def _fuse(
        self, ranked: dict[str, RankedList], mode: str, shares: Mapping[str, Mapping[str, float]]
    ) -> list[tuple[str, float, dict[str, SignalEvidence]]]:
        """The fused list; in hybrid mode verbatim citation holders first, then identifier holders (``routing``)."""
        if mode != "hybrid":
            ((signal, hits),) = ranked.items()
            return [(i, s, {signal: SignalEvidence(r, s)}) for r, (i, s) in enumerate(hits, start=1)]
        exact = {
            signal: {key: SignalEvidence(rank, score) for rank, (key, score) in enumerate(ranked.pop(signal), start=1)}
            for signal in ("verbatim", "identifier")
        }
        groups: tuple[list, list, list] = ([], [], [])
        # A fuser written before shares existed is called as it was.
        fused = (
            self.fuser.fuse(ranked, self.weights, shares=shares) if shares else self.fuser.fuse(ranked, self.weights)
        )
        for hit in fused:
            signals = {**hit.signals, **{name: held[hit.id] for name, held in exact.items() if hit.id in held}}
            group = 0 if "verbatim" in signals else 1 if "identifier" in signals else 2
            groups[group].append((hit.id, hit.score, signals))
        return [hit for group in groups for hit in group]


def fuser_takes_shares(fuser: Fuser) -> bool:
    """Whether ``fuser.fuse`` takes ``shares`` (by name, or any keyword argument); one written before it did not."""
    parameters = inspect.signature(fuser.fuse).parameters.values()
    return any(p.name == "shares" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def first_by_document(by_chunk: Mapping[str, float], payloads: Mapping[str, Payload]) -> dict[str, float]:
    """Chunk values (in their list's order, best first) -> each document's value: its best chunk's."""
    by_document: dict[str, float] = {}
    for key, value in by_chunk.items():
        by_document.setdefault(payloads[key]["doc_id"], value)
    return by_document


def collapse(hits: RankedList, payloads: Mapping[str, Payload], representative: dict[str, str]) -> RankedList:
    """Chunk hits -> document hits, best chunk first; records each document's first-seen chunk."""
    seen: set[str] = set()
    collapsed = []
    for key, score in hits:
        doc_id = payloads[key]["doc_id"]
        if doc_id not in seen:
            seen.add(doc_id)
            collapsed.append((doc_id, score))
            representative.setdefault(doc_id, key)
    return collapsed

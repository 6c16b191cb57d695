"""BM25Index: the keyword index of the ``bm25`` plugin, its settings, search and saves."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from vecguard.errors import ConfigError, StorageError
from vecguard.protocols import RankedList
from vecguard.routing import CITATION_RARE, IDENTIFIER_RARE, is_citation, rarity_bar, term_weight

from .files import SegmentFiles
from .postings import Postings
from .segment import Segment
from .sparse import SparseBM25
from .tokenizer import ENGLISH_STOPWORDS, TOKENIZER_VERSION, identifier_terms, tokenize

IMPLEMENTATIONS = ("postings", "rank-bm25")


class BM25Index:
    """BM25Okapi over token lists, scored from postings (default) or by rank-bm25 (the reference)."""

    def __init__(
        self,
        *,
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        lowercase: bool = True,
        stopwords: str = "english",
        implementation: str = "postings",
        plugin: str = "bm25",
    ) -> None:
        if implementation not in IMPLEMENTATIONS:
            raise ConfigError(
                "[keyword] bm25 implementation must be one of "
                f"{', '.join(map(repr, IMPLEMENTATIONS))} (same scores), got {implementation!r}"
            )
        if stopwords not in ("english", "none"):
            raise ConfigError(f'[keyword] {plugin} stopwords must be "english" or "none", got {stopwords!r}')
        for name, value in (("k1", k1), ("b", b), ("epsilon", epsilon)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"[keyword] {plugin} {name} must be a number >= 0, got {value!r}")
        self._settings = {
            "plugin": "bm25",
            "scorer": "rank-bm25 BM25Okapi",
            "tokenizer": TOKENIZER_VERSION,
            "k1": float(k1),
            "b": float(b),
            "epsilon": float(epsilon),
            "lowercase": bool(lowercase),
            "stopwords": stopwords,
        }
        self._stopwords = ENGLISH_STOPWORDS if stopwords == "english" else frozenset()
        self._parameters = (float(k1), float(b), float(epsilon))
        self._postings = self._new_postings()
        self._reference = implementation == "rank-bm25"
        self._scorer: Any = None  # the reference's scorer object, rebuilt lazily after a change
        self._scorer_slots = np.zeros(0, dtype=np.int64)
        self._files: SegmentFiles | None = None  # the folder last saved to or loaded from

    def _new_postings(self, segments: Sequence[Segment] = (), dead: Sequence[int] = ()) -> Postings:
        return Postings(*self._parameters, segments, dead)

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, lowercase=self._settings["lowercase"], stopwords=self._stopwords)

    def sparse_weights(self) -> SparseBM25:
        """This index's scores as sparse vectors, for a store that keeps the keyword signal (``KeywordVectors``)."""
        k1, b, _ = self._parameters
        lowercase = self._settings["lowercase"]
        return SparseBM25(self.tokenize, lambda text: identifier_terms(text, lowercase=lowercase), k1, b)

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        ids, texts = list(ids), list(texts)
        if len(ids) != len(texts):
            raise StorageError(f"keyword add needs as many ids as texts: got {len(ids)} ids, {len(texts)} texts")
        latest = dict(zip(ids, texts))  # an id given twice: its last text
        self.delete(list(latest))
        for key, text in latest.items():
            # Interned: a term is held once however many chunks hold it (measured: 1.7 KB -> 0.96 KB per short chunk).
            self._postings.add(key, list(map(sys.intern, self.tokenize(text))))
        self._scorer = None

    def delete(self, ids: Sequence[str]) -> None:
        self._postings.remove(list(ids))
        self._scorer = None

    def count(self) -> int:
        return self._postings.live

    def ids(self) -> set[str]:
        """The chunk ids held (`vecguard check` compares them with the store's)."""
        return self._postings.ids()

    @property
    def slots(self) -> int:
        """Document slots the postings hold, deleted ones included until compacted away (chunks added since the
        load) or saved away (chunks in loaded files: the next complete ``save``)."""
        return self._postings.slots

    # ------------------------------------------------------------------ search

    def _scores(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(slots, scores) of the chunks that may score above 0."""
        if not self._reference:
            return self._postings.scores(terms)
        if self._scorer is None:
            self._scorer_slots, corpus = self._postings.token_lists()
            self._scorer = self._build_scorer(corpus)
        return self._scorer_slots, np.asarray(self._scorer.get_scores(terms), dtype=np.float64)

    def _build_scorer(self, corpus: list[list[str]]) -> Any:
        """The reference scorer of ``corpus`` (each chunk's tokens; an empty chunk holds one empty token)."""
        from rank_bm25 import BM25Okapi

        k1, b, epsilon = self._parameters
        return BM25Okapi(corpus, k1=k1, b=b, epsilon=epsilon)

    def _ranked(self, terms: list[str], k: int, allowed: np.ndarray | None = None) -> list[tuple[int, str, float]]:
        """The best ``k`` (slot, id, score) with a positive score, among ``allowed`` slots when given; ties by id."""
        slots, scores = self._scores(terms)
        if allowed is not None:
            keep = np.isin(slots, allowed)
            slots, scores = slots[keep], scores[keep]
        positive = scores > 0
        slots, scores = slots[positive], scores[positive]
        if len(scores) > k:
            # Keep every tie of the k-th score so the cut is made by id, the same in every process.
            kth = -np.partition(-scores, k - 1)[k - 1]
            slots, scores = slots[scores >= kth], scores[scores >= kth]
        hits = zip(slots.tolist(), self._postings.ids_of(slots), scores.tolist())
        return sorted(hits, key=lambda hit: (-hit[2], hit[1]))[:k]

    def search(self, query: str, k: int, allowed_ids: Iterable[str] | None = None) -> RankedList:
        terms = self.tokenize(query)
        if not terms or not self.count():
            return []
        allowed = None
        if allowed_ids is not None:
            allowed = self._postings.slots_of(list(allowed_ids))
            allowed = allowed[allowed >= 0]
        return [(key, score) for _, key, score in self._ranked(terms, k, allowed)]

    def exact_matches(self, query: str, k: int) -> RankedList:
        """Ids holding an identifier-shaped term of the query (CVE-2022-24045, 21A) or, for a citation ("GDPR Article
        39"), every term of it, best BM25 first (the rarity bars: ``vecguard.routing``)."""
        query_terms = self.tokenize(query)
        live = self.count()
        # An "identifier" most of the corpus holds (e.g., "e.g") identifies nothing.
        rare = rarity_bar(IDENTIFIER_RARE, live)
        holders = [np.zeros(0, dtype=np.int64)]
        for term in identifier_terms(query, lowercase=self._settings["lowercase"]):
            df, slots = self._postings.holders(term)
            if df <= rare:
                holders.append(slots)
        if is_citation(query, query_terms):
            holders.append(self._holders_of_all(set(query_terms), rarity_bar(CITATION_RARE, live)))
        held = np.unique(np.concatenate(holders))
        if not len(held):
            return []
        scored = self._ranked(query_terms, len(held), held) if query_terms else []
        # In a tiny corpus BM25's idf of a term half the documents hold is 0: a holder is still a match.
        unscored = sorted(self._postings.ids_of(np.setdiff1d(held, [slot for slot, _, _ in scored])))
        return ([(key, score) for _, key, score in scored] + [(key, 0.0) for key in unscored])[:k]

    def _holders_of_all(self, terms: set[str], rare: int) -> np.ndarray:
        """The live slots holding every one of ``terms``, when the rarest is held by at most ``rare``; else none
        (the same rule a store that keeps the keyword signal can afford: ``StoreKeywords``)."""
        frequencies = self._postings.vocabulary_df(sorted(terms))
        if min(frequencies.values()) > rare:
            return np.zeros(0, dtype=np.int64)
        rarest, *others = sorted(terms, key=frequencies.__getitem__)
        together = self._postings.holders(rarest)[1]
        for term in others:
            together = together[np.isin(together, self._postings.holders(term)[1])]
        return together

    def coverage(self, query: str, ids: Sequence[str]) -> list[float]:
        """Each id's share of the query's term weight (``MeasuresCoverage``, ``routing.term_weight``); every share
        is 1 when no term weighs anything (all of them held by half the chunks or more: nothing to weigh by)."""
        live = self.count()
        weights = {
            term: term_weight(df, live) for term, df in self._postings.vocabulary_df(self.tokenize(query)).items()
        }
        total = sum(weights.values())
        if total <= 0:
            return [1.0] * len(ids)
        slots = self._postings.slots_of(list(ids))
        held = np.zeros(len(slots))
        for term, weight in weights.items():
            if weight > 0:
                held += weight * np.isin(slots, self._postings.holders(term)[1])
        return (np.where(slots >= 0, held, 0.0) / total).tolist()

    # ------------------------------------------------------------------ files

    def _files_in(self, directory: Path) -> SegmentFiles:
        if self._files is None or self._files.directory != Path(directory):
            self._files = SegmentFiles(Path(directory))
        return self._files

    def save(self, directory: Path) -> None:
        """Save the whole index as one segment, replacing whatever ``directory`` held; no store change is recorded
        (``saved_token`` is None until ``save_changes``). The index then reads its chunks from that file."""
        whole = self._postings.as_segment()
        published = self._files_in(directory).replace([whole] if whole is not None else [], self._settings, None)
        self._postings = self._new_postings(published, [0] * len(published))
        self._scorer = None

    def save_changes(self, directory: Path, ids: Iterable[str], token: int) -> None:
        """Save the current state of ``ids`` (held: their terms; not held: deleted) as a new segment and record that
        the files reflect store change ``token``. Costs in proportion to ``ids``, apart from the merges it may run
        (tiered: see the ``merge`` module). Writes a complete save instead where nothing usable is saved yet. Killed
        at any point, it leaves the previous save loadable (the ``files`` module); a merge that finds a file damaged
        raises StorageError naming it."""
        keys = list(dict.fromkeys(ids))
        slots = self._postings.slots_of(keys)
        documents = {key: self._postings.document(slot) for key, slot in zip(keys, slots.tolist()) if slot >= 0}
        deleted = [key for key, slot in zip(keys, slots.tolist()) if slot < 0]
        self._files_in(directory).save_changes(documents, deleted, self._settings, token, self._postings.as_segment)

    def saved_token(self, directory: Path) -> int | None:
        """The store change the files in ``directory`` reflect, read from their manifest alone; None when nothing is
        saved there with these settings, or the last save was a complete ``save``. StorageError naming the manifest
        when it is damaged."""
        manifest = self._files_in(directory).manifest()
        return manifest.token if manifest is not None and manifest.settings == self._settings else None

    def load(self, directory: Path) -> bool:
        """Load the latest complete save in ``directory``: its segments are memory-mapped, nothing is re-tokenised.

        False when nothing is saved there, or it was saved with other settings, or only in the single ``bm25.json``
        of earlier versions (the engine then rebuilds it once, from the stored texts). StorageError naming the file
        when a file is damaged.
        """
        loaded = self._files_in(directory).load(self._settings)
        if loaded is None:
            return False
        manifest, segments = loaded
        self._postings = self._new_postings(segments, [entry.dead for entry in manifest.segments])
        self._scorer = None
        return True

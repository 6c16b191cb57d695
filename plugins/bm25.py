"""BM25 keyword index (rank-bm25's BM25Okapi scores) with an identifier-aware tokenizer.

Two implementations give the same scores: ``postings`` (the default) keeps an
inverted index that add and delete update in place and scores a query with
numpy over the postings of its terms; ``rank-bm25`` scores every document in
Python with rank-bm25 itself, the reference, rebuilt after each change. The
implementation is not part of the manifest: scores do not depend on it.

The tokenizer emits every alphanumeric word piece and, for a token shaped like
an identifier (``ORD-2024-00017``, ``CVE-2022-24045``, ``2013/34/EU``,
``J45.909``, ``U.S.C.``), the whole identifier as well, so an exact identifier
query matches the exact string far more strongly than its common pieces.
Saved as JSON (never pickle); the tokenizer settings go into the manifest.
"""

from __future__ import annotations

import json
import math
import re
import sys
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from vecguard.atomic import write_json_atomically
from vecguard.config import take_options
from vecguard.errors import ConfigError, StorageError
from vecguard.protocols import RankedList
from vecguard.registry import Part, hookimpl

TOKENIZER_VERSION = "identifier-aware-v1"
IMPLEMENTATIONS = ("postings", "rank-bm25")
FILE_NAME = "bm25.json"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_EDGE_PUNCTUATION = "\"'`()[]{}<>,;:!?.«»“”‘’"
_IDENTIFIER_JOINERS = set("-_/.:#§+")
# A small, fixed list: removing it changes scores, so it is part of the settings.
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his i if in into is it its me my no not of on or our "
    "she so such than that the their them then there these they this to was we were what when where which who "
    "will with you your".split()
)


def is_identifier(whole: str, pieces: list[str]) -> bool:
    """Joined pieces (ORD-2024-00017, 2013/34/EU, U.S.C) or letters mixed with digits (21A, J45)."""
    if len(pieces) > 1:
        return not _IDENTIFIER_JOINERS.isdisjoint(whole)
    if len(pieces) != 1 or whole.isalpha():  # most tokens are plain words: answered without a scan
        return False
    return any(map(str.isdigit, whole)) and any(map(str.isalpha, whole))


def tokenize(text: str, *, lowercase: bool = True, stopwords: frozenset[str] = ENGLISH_STOPWORDS) -> list[str]:
    tokens: list[str] = []
    for raw in text.split():
        if lowercase:
            raw = raw.lower()
        if raw.isalpha():  # most tokens: a plain word is its own one piece and never an identifier
            if raw not in stopwords:
                tokens.append(raw)
            continue
        pieces = _WORD.findall(raw)
        tokens.extend(p for p in pieces if p not in stopwords)
        whole = raw.strip(_EDGE_PUNCTUATION)
        if whole and is_identifier(whole, pieces) and whole not in pieces:
            tokens.append(whole)
    return tokens


def identifier_terms(text: str, *, lowercase: bool = True) -> list[str]:
    """The identifier-shaped tokens of ``text``, whole, as ``tokenize`` emits them."""
    terms = []
    for raw in text.split():
        if lowercase:
            raw = raw.lower()
        whole = raw.strip(_EDGE_PUNCTUATION)
        if whole and is_identifier(whole, _WORD.findall(raw)):
            terms.append(whole)
    return terms


def identifier_tokens(tokens: Iterable[str]) -> set[str]:
    """``identifier_terms`` of ``tokenize``'s output (no lowercasing, no split), not looking twice at plain words."""
    return {t for t in tokens if not t.isalpha() and is_identifier(t, _WORD.findall(t))}


class _Postings:
    """BM25Okapi exactly as rank-bm25 computes it, from an inverted index updated in place.

    rank-bm25's idf is ``log(N - df + 0.5) - log(df + 0.5)``, and a negative idf is
    replaced by ``epsilon`` times the mean idf over the whole vocabulary; N, the
    mean document length and that mean are recomputed lazily after a change (a
    pass over the document frequencies, not over the documents).
    """

    def __init__(self, k1: float, b: float, epsilon: float) -> None:
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self.slot_of: dict[str, int] = {}
        self.ids: list[str] = []
        self.lengths = np.zeros(0, dtype=np.float64)
        self.alive = np.zeros(0, dtype=bool)
        # term -> (slots, term frequencies), compact 4-byte arrays read by numpy without a copy
        self.postings: dict[str, tuple[array, array]] = {}
        self.df: dict[str, int] = {}
        self._length_total = 0.0
        self._stats: tuple[float, float] | None = None  # (mean doc length, epsilon floor)
        self._dead = 0

    def add(self, key: str, tokens: list[str]) -> None:
        tokens = tokens or [""]  # rank-bm25 counts an empty document as one empty token
        slot = len(self.ids)
        self.slot_of[key] = slot
        self.ids.append(key)
        if slot >= len(self.lengths):
            grown = max(1024, 2 * len(self.lengths))
            self.lengths = np.concatenate([self.lengths, np.zeros(grown - len(self.lengths))])
            self.alive = np.concatenate([self.alive, np.zeros(grown - len(self.alive), dtype=bool)])
        self.lengths[slot] = len(tokens)
        self.alive[slot] = True
        self._length_total += len(tokens)
        frequencies: dict[str, int] = {}
        for token in tokens:
            frequencies[token] = frequencies.get(token, 0) + 1
        for term, tf in frequencies.items():
            slots, tfs = self.postings.setdefault(term, (array("i"), array("i")))
            slots.append(slot)
            tfs.append(tf)
            self.df[term] = self.df.get(term, 0) + 1
        self._stats = None

    def delete(self, key: str, tokens: list[str]) -> None:
        slot = self.slot_of.pop(key)
        self.alive[slot] = False
        self._length_total -= self.lengths[slot]
        for term in set(tokens or [""]):
            self.df[term] -= 1
            if not self.df[term]:
                del self.df[term]
        self._dead += 1
        self._stats = None

    def needs_compaction(self) -> bool:
        return self._dead > 1024 and self._dead > len(self.slot_of)

    def scores(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(slots, scores) of the live documents holding at least one query term."""
        n = len(self.slot_of)
        if self._stats is None:
            dfs = np.fromiter(self.df.values(), dtype=np.float64, count=len(self.df))
            idfs = np.log(n - dfs + 0.5) - np.log(dfs + 0.5)
            self._stats = (self._length_total / n, self.epsilon * float(idfs.mean()))
        mean_length, floor = self._stats
        touched, contributions = [], []
        for term in terms:  # a repeated query term counts again, as in rank-bm25
            df = self.df.get(term)
            if not df:
                continue
            idf = math.log(n - df + 0.5) - math.log(df + 0.5)
            if idf < 0:
                idf = floor
            slots = np.frombuffer(self.postings[term][0], dtype=np.int32)
            tfs = np.frombuffer(self.postings[term][1], dtype=np.int32).astype(np.float64)
            norm = self.k1 * (1 - self.b + self.b * self.lengths[slots] / mean_length)
            touched.append(slots)
            contributions.append(idf * (tfs * (self.k1 + 1) / (tfs + norm)))
        if not touched:
            return np.zeros(0, dtype=np.int32), np.zeros(0)
        slots = np.concatenate(touched)
        unique, where = np.unique(slots, return_inverse=True)
        total = np.zeros(len(unique))
        for term_where, contribution in zip(np.split(where, np.cumsum([len(t) for t in touched])[:-1]), contributions):
            total[term_where] += contribution  # slots are unique within one term, so += is exact
        live = self.alive[unique]
        return unique[live], total[live]


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
        self._tokens: dict[str, list[str]] = {}
        self._identifiers: dict[str, set[str]] = {}  # identifier term -> ids holding it
        self._scorer: Any = None  # rank-bm25's, rebuilt lazily after a change
        self._scorer_ids: list[str] = []
        self._postings = _Postings(float(k1), float(b), float(epsilon)) if implementation == "postings" else None

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, lowercase=self._settings["lowercase"], stopwords=self._stopwords)

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        ids, texts = list(ids), list(texts)
        if len(ids) != len(texts):
            raise StorageError(f"keyword add needs as many ids as texts: got {len(ids)} ids, {len(texts)} texts")
        self.delete(ids)
        for key, text in zip(ids, texts):
            # Interned: a term is held once however many chunks hold it (measured: 1.7 KB -> 0.96 KB per short chunk).
            self._tokens[key] = tokens = list(map(sys.intern, self.tokenize(text)))
            self._index_identifiers(key)
            if self._postings is not None:
                self._postings.add(key, tokens)
        self._scorer = None

    def _index_identifiers(self, key: str) -> None:
        for term in identifier_tokens(self._tokens[key]):
            self._identifiers.setdefault(term, set()).add(key)

    def delete(self, ids: Sequence[str]) -> None:
        for key in ids:
            tokens = self._tokens.pop(key, None)
            if tokens is None:
                continue
            if self._postings is not None:
                self._postings.delete(key, tokens)
            for term in identifier_tokens(tokens):
                holders = self._identifiers.get(term)
                if holders is not None:
                    holders.discard(key)
                    if not holders:
                        del self._identifiers[term]
        self._scorer = None
        if self._postings is not None and self._postings.needs_compaction():
            self._rebuild_postings()

    def _rebuild_postings(self) -> None:
        if self._postings is None:
            return
        s = self._settings
        self._postings = _Postings(s["k1"], s["b"], s["epsilon"])
        for key, tokens in self._tokens.items():
            self._postings.add(key, tokens)

    def count(self) -> int:
        return len(self._tokens)

    def ids(self) -> set[str]:
        """The chunk ids held (`vecguard check` compares them with the store's)."""
        return set(self._tokens)

    @property
    def slots(self) -> int | None:
        """Document slots the postings hold, deleted ones not yet compacted away included (None: rank-bm25)."""
        return len(self._postings.ids) if self._postings is not None else None

    def _ensure_scorer(self) -> None:
        if self._scorer is None and self._tokens:
            from rank_bm25 import BM25Okapi

            self._scorer_ids = list(self._tokens)
            # rank-bm25 divides by zero on an all-empty corpus; an empty token list still counts as a document.
            corpus = [self._tokens[key] or [""] for key in self._scorer_ids]
            s = self._settings
            self._scorer = BM25Okapi(corpus, k1=s["k1"], b=s["b"], epsilon=s["epsilon"])

    def search(self, query: str, k: int, allowed_ids: Iterable[str] | None = None) -> RankedList:
        terms = self.tokenize(query)
        if not terms or not self._tokens:
            return []
        if self._postings is not None:
            slots, scores = self._postings.scores(terms)
            ids = self._postings.ids
        else:
            self._ensure_scorer()
            scores = np.asarray(self._scorer.get_scores(terms), dtype=np.float64)
            slots, ids = np.arange(len(scores)), self._scorer_ids
        if allowed_ids is not None:
            allowed = allowed_ids if isinstance(allowed_ids, (set, frozenset, dict)) else set(allowed_ids)
            keep = np.fromiter((ids[slot] in allowed for slot in slots), dtype=bool, count=len(slots))
            slots, scores = slots[keep], scores[keep]
        positive = scores > 0
        slots, scores = slots[positive], scores[positive]
        if len(scores) > k:
            # Keep every tie of the k-th score so the cut is made by id, the same in every process.
            kth = -np.partition(-scores, k - 1)[k - 1]
            slots, scores = slots[scores >= kth], scores[scores >= kth]
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], ids[slots[i]]))[:k]
        return [(ids[slots[i]], float(scores[i])) for i in order]

    def exact_matches(self, query: str, k: int) -> RankedList:
        """Ids holding an identifier-shaped term of the query (CVE-2022-24045, 21A), best BM25 first."""
        terms = identifier_terms(query, lowercase=self._settings["lowercase"])
        # An "identifier" most of the corpus holds (e.g., "e.g") identifies nothing.
        rare = max(10, int(0.01 * len(self._tokens)))
        holders: set[str] = set()
        for term in terms:
            if len(self._identifiers.get(term, ())) <= rare:
                holders |= self._identifiers.get(term, set())
        if not holders:
            return []
        scored = [hit for hit in self.search(query, len(self._tokens), allowed_ids=holders) if hit[0] in holders]
        # In a tiny corpus BM25's idf of a term half the documents hold is 0: a holder is still a match.
        unscored = sorted(holders - {key for key, _ in scored})
        return (scored + [(key, 0.0) for key in unscored])[:k]

    def save(self, directory: Path) -> None:
        write_json_atomically(Path(directory) / FILE_NAME, {"settings": self._settings, "tokens": self._tokens})

    def load(self, directory: Path) -> bool:
        path = Path(directory) / FILE_NAME
        if not path.exists():
            return False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StorageError(
                f"keyword index {path} is unreadable ({exc}); delete it and reopen to rebuild it from stored texts"
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), dict):
            raise StorageError(
                f"keyword index {path} is not an object with 'settings' "
                "and 'tokens'; delete it and reopen to rebuild it"
            )
        if data.get("settings") != self._settings:
            return False  # built with other settings: the engine rebuilds it from the stored texts
        try:
            tokens = {key: list(map(sys.intern, terms)) for key, terms in data["tokens"].items()}
        except TypeError as exc:
            raise StorageError(
                f"keyword index {path} holds a token list that is not strings ({exc}); delete it and reopen"
            ) from exc
        self._tokens = tokens
        self._identifiers = {}
        for key in self._tokens:
            self._index_identifiers(key)
        self._scorer = None
        self._rebuild_postings()
        return True


def _build(options: dict[str, Any], base_dir: Path) -> BM25Index:
    defaults = {
        "k1": 1.5,
        "b": 0.75,
        "epsilon": 0.25,
        "lowercase": True,
        "stopwords": "english",
        "implementation": "postings",
    }
    return BM25Index(**take_options("[keyword] bm25", options, defaults))


@hookimpl
def vecguard_parts() -> list[Part]:
    return [
        Part(
            "keyword",
            "bm25",
            _build,
            description="BM25Okapi (rank-bm25's scores, from postings), identifier-aware tokenizer",
        )
    ]

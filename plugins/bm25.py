"""BM25 keyword index (rank-bm25's BM25Okapi scores) with an identifier-aware tokenizer.

The tokenizer emits every alphanumeric word piece and, for a token shaped like
an identifier (``ORD-2024-00017``, ``CVE-2022-24045``, ``2013/34/EU``,
``J45.909``, ``U.S.C.``), the whole identifier as well, so an exact identifier
query matches the exact string far more strongly than its common pieces.
Saved as JSON (never pickle); the tokenizer settings go into the manifest.
"""

from __future__ import annotations

import json
import re
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


def _identifier(whole: str, pieces: list[str]) -> bool:
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
        pieces = _WORD.findall(raw)
        tokens.extend(p for p in pieces if p not in stopwords)
        whole = raw.strip(_EDGE_PUNCTUATION)
        if whole and _identifier(whole, pieces) and whole not in pieces:
            tokens.append(whole)
    return tokens


def identifier_terms(text: str, *, lowercase: bool = True) -> list[str]:
    """The identifier-shaped tokens of ``text``, whole, as ``tokenize`` emits them."""
    terms = []
    for raw in text.split():
        if lowercase:
            raw = raw.lower()
        whole = raw.strip(_EDGE_PUNCTUATION)
        if whole and _identifier(whole, _WORD.findall(raw)):
            terms.append(whole)
    return terms


class BM25Index:
    """BM25Okapi over token lists; the scorer is rebuilt lazily after changes."""

    def __init__(self, *, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25, lowercase: bool = True, stopwords: str = "english") -> None:
        if stopwords not in ("english", "none"):
            raise ConfigError(f"[keyword] bm25 stopwords must be \"english\" or \"none\", got {stopwords!r}")
        for name, value in (("k1", k1), ("b", b), ("epsilon", epsilon)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"[keyword] bm25 {name} must be a number >= 0, got {value!r}")
        self._settings = {
            "plugin": "bm25", "scorer": "rank-bm25 BM25Okapi", "tokenizer": TOKENIZER_VERSION,
            "k1": float(k1), "b": float(b), "epsilon": float(epsilon), "lowercase": bool(lowercase), "stopwords": stopwords,
        }
        self._stopwords = ENGLISH_STOPWORDS if stopwords == "english" else frozenset()
        self._tokens: dict[str, list[str]] = {}
        self._identifiers: dict[str, set[str]] = {}  # identifier term -> ids holding it
        self._scorer: Any = None
        self._scorer_ids: list[str] = []

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
            self._tokens[key] = self.tokenize(text)
            self._index_identifiers(key)
        self._scorer = None

    def _index_identifiers(self, key: str) -> None:
        for term in identifier_terms(" ".join(self._tokens[key]), lowercase=False):
            self._identifiers.setdefault(term, set()).add(key)

    def delete(self, ids: Sequence[str]) -> None:
        for key in ids:
            tokens = self._tokens.pop(key, None)
            if tokens is None:
                continue
            for term in identifier_terms(" ".join(tokens), lowercase=False):
                holders = self._identifiers.get(term)
                if holders is not None:
                    holders.discard(key)
                    if not holders:
                        del self._identifiers[term]
        self._scorer = None

    def count(self) -> int:
        return len(self._tokens)

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
        self._ensure_scorer()
        scores = np.asarray(self._scorer.get_scores(terms), dtype=np.float64)
        if allowed_ids is not None:
            mask = np.zeros(len(scores), dtype=bool)
            position = {key: i for i, key in enumerate(self._scorer_ids)}
            for key in allowed_ids:
                if key in position:
                    mask[position[key]] = True
            scores = np.where(mask, scores, 0.0)
        positive = np.flatnonzero(scores > 0)
        if len(positive) > k:
            # Keep every tie of the k-th score so the cut is made by id, the same in every process.
            kth = -np.partition(-scores[positive], k - 1)[k - 1]
            positive = positive[scores[positive] >= kth]
        order = sorted(positive, key=lambda i: (-scores[i], self._scorer_ids[i]))[:k]
        return [(self._scorer_ids[i], float(scores[i])) for i in order]

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
            raise StorageError(f"keyword index {path} is unreadable ({exc}); delete it and reopen to rebuild it from stored texts") from exc
        if data.get("settings") != self._settings:
            return False  # built with other settings: the engine rebuilds it from the stored texts
        self._tokens = {key: list(tokens) for key, tokens in data["tokens"].items()}
        self._identifiers = {}
        for key in self._tokens:
            self._index_identifiers(key)
        self._scorer = None
        return True


def _build(options: dict[str, Any], base_dir: Path) -> BM25Index:
    defaults = {"k1": 1.5, "b": 0.75, "epsilon": 0.25, "lowercase": True, "stopwords": "english"}
    return BM25Index(**take_options("[keyword] bm25", options, defaults))


@hookimpl
def vecguard_parts() -> list[Part]:
    return [Part("keyword", "bm25", _build, description="BM25Okapi (rank-bm25), identifier-aware tokenizer")]

"""The identifier-aware tokenizer: every alphanumeric word piece and, for a token shaped like an identifier
(``ORD-2024-00017``, ``CVE-2022-24045``, ``2013/34/EU``, ``J45.909``, ``U.S.C.``), the whole identifier as well,
so an exact identifier query matches the exact string far more strongly than its common pieces."""

from __future__ import annotations

import re
from collections.abc import Iterable

TOKENIZER_VERSION = "identifier-aware-v1"
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

"""What hybrid search ranks first, whatever the fusion: chunks that hold what the query names exactly.

Three kinds of exact evidence, each asked of the candidates both signals found:

- an identifier of the query (``CVE-2022-24045``, ``2013/34/EU``, ``21A``) that few chunks hold: the keyword index
  finds its holders (``KeywordIndex.exact_matches``);
- every term of a citation ("GDPR Article 39", "Directive 2013/34/EU": a name and a number), when few chunks hold
  them all: the number alone is not identifier-shaped and dense search knows nothing of act names or article
  numbers, so fusion alone ranks another act's Article 39 as high (the keyword index finds these too);
- a citation's words verbatim, in order (``verbatim``): "GDPR Article 39: Tasks of the data protection officer"
  before GDPR's Article 38, which holds the same three terms ("... tasks referred to in Article 39").

A verbatim holder ranks first, then the other exact holders, each group in fused order; the rest follow, fused.

The shares below are the rarity bars: a whole identifier held by more than 1% of the chunks ("e.g", "U.S.C" in a
legal corpus) identifies nothing; the terms of a citation together, held by at most 5%, still name what was
asked for (eu-law-citation in benchmarks/results/quality.md: the most cited act, "Directive (EU) 2022/2555", is
cited by 32 of its 1,027 chunks, 3.1%).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

IDENTIFIER_RARE = 0.01
CITATION_RARE = 0.05
SHORT_QUERY = 8  # distinct words: a citation, a question; longer is a sentence or a pasted description

_WORD = re.compile(r"[^\W_]+")


def is_citation(query: str) -> bool:
    """A name and a number ("GDPR Article 39", "Directive 2013/34/EU"): two to eight distinct words in at least
    two pieces, one word holding a digit. One piece alone is an identifier, which has its own rarity bar; a longer
    query with a number in it (a version, a date) is a sentence, not a citation."""
    distinct = set(words(query))
    return (
        2 <= len(distinct) <= SHORT_QUERY
        and len(query.split()) >= 2
        and any(any(map(str.isdigit, word)) for word in distinct)
    )


def words(text: str) -> list[str]:
    """``text``'s words, lowercased: what "verbatim" compares (punctuation and spacing do not count)."""
    return _WORD.findall(text.lower())


def verbatim(query: str, texts: Iterable[tuple[str, str]]) -> list[str]:
    """The ids of the (id, text) pairs whose text holds a citation ``query``'s words in order, in the order given;
    [] when the query is not a citation."""
    if not is_citation(query):
        return []
    wanted = words(query)
    pattern = re.compile(r"(?<![^\W_])" + r"[\W_]+".join(map(re.escape, wanted)) + r"(?![^\W_])")
    return [key for key, text in texts if pattern.search(text.lower())]

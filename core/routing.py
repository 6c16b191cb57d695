"""What hybrid search ranks first, whatever the fusion: chunks that hold what the query names exactly.

Three kinds of exact evidence, each asked of the candidates both signals found:

- an identifier of the query (``CVE-2022-24045``, ``2013/34/EU``, ``21A``) that few chunks hold: the keyword index
  finds its holders (``KeywordIndex.exact_matches``);
- every term of a citation ("GDPR Article 39", "Directive 2013/34/EU": a name and a number), when the rarest of
  them is held by few chunks: the number alone is not identifier-shaped and dense search knows nothing of act
  names or article numbers, so fusion alone ranks another act's Article 39 as high (the keyword index finds
  these too, with its own terms: ``is_citation``);
- a citation's words verbatim, in order (``verbatim``): "GDPR Article 39: Tasks of the data protection officer"
  before GDPR's Article 38, which holds the same three terms ("... tasks referred to in Article 39").

A verbatim holder ranks first, then the other exact holders, each group in fused order; the rest follow, fused.

The shares below are the rarity bars: a whole identifier held by more than 1% of the chunks ("e.g", "U.S.C" in a
legal corpus) identifies nothing; a citation whose rarest term at most 5% hold still names what was asked for
(eu-law-citation in benchmarks/results/quality.md: the most cited act, "Directive (EU) 2022/2555", is cited by 32
of its 1,027 chunks, 3.1%). Below 10 chunks, anything is rare.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable

IDENTIFIER_RARE = 0.01
CITATION_RARE = 0.05
SHORT_QUERY = 8  # distinct words: a citation, a question; longer is a sentence or a pasted description

_WORD = re.compile(r"[^\W_]+")
# Between two words of a verbatim match: a few spaces or punctuation marks ("Regulation (EU) No 1024/2013",
# "U.S.C. § 1983"), not a line break or an underscore ("gdpr_article_39" is one token).
_BETWEEN = r"[^\w\n]{1,4}"


def rarity_bar(share: float, live: int) -> int:
    """How many of ``live`` chunks may hold a term (or terms) and still be rare at ``share``."""
    return max(10, int(share * live))


def term_weight(holders: int, live: int) -> float:
    """A term's weight in a query's coverage: BM25Okapi's idf without its floor (a term half the chunks hold
    weighs 0); a term no chunk holds weighs as much as a term can."""
    holders = min(holders, live)  # counts read in two calls may cross another process's add
    return max(0.0, math.log(live - holders + 0.5) - math.log(holders + 0.5)) if live else 0.0


def is_citation(query: str, terms: Iterable[str]) -> bool:
    """A name and a number: ``query`` in two pieces or more (one piece is an identifier, with its own rarity bar)
    whose ``terms`` (a keyword index's, stopwords gone, or ``words``) are two to eight distinct ones, one with a
    digit and one without ("the 39" is a number alone to an index that drops "the"). A longer query with a
    number in it (a version, a date) is a sentence, not a citation."""
    distinct = set(terms)
    numbered = sum(1 for term in distinct if any(map(str.isdigit, term)))
    return len(query.split()) >= 2 and 2 <= len(distinct) <= SHORT_QUERY and 0 < numbered < len(distinct)


def words(text: str) -> list[str]:
    """``text``'s words, NFKC-normalised and case-folded ("３９" is "39", "STRASSE" is "strasse")."""
    return _WORD.findall(_folded(text))


def verbatim(query: str, texts: Iterable[tuple[str, str]]) -> list[str]:
    """The ids of the (id, text) pairs whose text holds a citation ``query``'s words in order, in the order given;
    [] when the query is not a citation (judged on its words: no stopwords here, so "the 39" is one)."""
    wanted = words(query)
    if not is_citation(query, wanted):
        return []
    pattern = re.compile(r"(?<![^\W_])" + _BETWEEN.join(map(re.escape, wanted)) + r"(?![^\W_])")
    return [key for key, text in texts if pattern.search(_folded(text))]


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()

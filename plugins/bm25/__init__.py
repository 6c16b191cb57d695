"""BM25 keyword index (rank-bm25's BM25Okapi scores) with an identifier-aware tokenizer.

Entry point of the ``bm25`` keyword part. Two implementations give the same scores: ``postings`` (the default)
scores a query with numpy over the postings of its terms; ``rank-bm25`` scores every chunk in Python with rank-bm25
itself, the reference, rebuilt after each change. The implementation is not part of the manifest: scores do not
depend on it. The tokenizer settings are.

Saved as segment files of numpy arrays (never pickle) that a load memory-maps, and saved incrementally: a change
costs in proportion to the change, with tiered merges. Each module owns one piece of state or one rule:

    tokenizer  words and whole identifiers (ORD-2024-00017, CVE-2022-24045, 2013/34/EU, J45.909, U.S.C.)
    digests    terms and ids found by 128-bit digest in sorted uint64 arrays
    segment    one immutable segment: documents, postings, deletion records; its file
    merge      segments merged into one (vectorised), and the tiered policy of when
    files      the folder: the manifest that publishes segments, incremental and complete saves, loads
    postings   the live chunks (loaded segments plus chunks added since), document frequencies, BM25 scores
    index      BM25Index, the facade
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vecguard.config import take_options
from vecguard.registry import Part, hookimpl

from .index import IMPLEMENTATIONS, BM25Index
from .tokenizer import _EDGE_PUNCTUATION as _EDGE_PUNCTUATION  # the tokenizer's tests read these two
from .tokenizer import _WORD as _WORD
from .tokenizer import (
    ENGLISH_STOPWORDS,
    TOKENIZER_VERSION,
    identifier_terms,
    identifier_tokens,
    is_identifier,
    tokenize,
)

__all__ = [
    "ENGLISH_STOPWORDS",
    "IMPLEMENTATIONS",
    "TOKENIZER_VERSION",
    "BM25Index",
    "identifier_terms",
    "identifier_tokens",
    "is_identifier",
    "tokenize",
    "vecguard_parts",
]


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

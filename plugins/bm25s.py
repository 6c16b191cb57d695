"""BM25 keyword index scored by the bm25s package (sparse matrices), with vecguard's identifier-aware tokenizer.

Options (``[keyword] plugin = "bm25s"``, ``pip install 'vecguard[bm25s]'``): ``method``
(bm25s's variant: "lucene" (default), "robertson", "atire", "bm25l", "bm25+"), ``k1``,
``b``, ``lowercase``, ``stopwords``. Tokens, identifier matching, persistence (the
``bm25`` plugin's segment files, never pickle) and the manifest's settings work as in
the ``bm25`` plugin; only the scores come from bm25s.

Not the default (benchmarks/results/keyword_speed.md): bm25s has no incremental add, so
a change makes the next search rebuild its matrix from the held tokens (7.5 s for 100
new chunks at 100k, where the ``bm25`` plugin's postings take 12 ms), and its variants
rank differently from rank-bm25's BM25Okapi (84 of 200 top-10 lists the same at 100k).
Between changes its queries are fast: p50 1.4 ms at 100k chunks against the postings'
2.2 ms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vecguard.config import take_options
from vecguard.errors import ConfigError
from vecguard.plugins.bm25 import TOKENIZER_VERSION, BM25Index
from vecguard.registry import Part, hookimpl

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


class Bm25sIndex(BM25Index):
    def __init__(
        self,
        *,
        method: str = "lucene",
        k1: float = 1.5,
        b: float = 0.75,
        lowercase: bool = True,
        stopwords: str = "english",
    ) -> None:
        if method not in METHODS:
            raise ConfigError(f"[keyword] bm25s method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
        try:
            import bm25s  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "[keyword] plugin \"bm25s\" needs the bm25s package: pip install 'vecguard[bm25s]'"
            ) from exc
        # The reference path of BM25Index: scores from a scorer object rebuilt lazily after a change.
        super().__init__(
            k1=k1, b=b, lowercase=lowercase, stopwords=stopwords, implementation="rank-bm25", plugin="bm25s"
        )
        self._settings = {
            "plugin": "bm25s",
            "scorer": f"bm25s {method}",
            "tokenizer": TOKENIZER_VERSION,
            "k1": float(k1),
            "b": float(b),
            "lowercase": bool(lowercase),
            "stopwords": stopwords,
        }
        self._method = method

    def _build_scorer(self, corpus: list[list[str]]) -> Any:
        import bm25s

        scorer = bm25s.BM25(method=self._method, k1=self._settings["k1"], b=self._settings["b"])
        scorer.index(corpus, show_progress=False)
        return scorer


def _build(options: dict[str, Any], base_dir: Path) -> Bm25sIndex:
    defaults = {"method": "lucene", "k1": 1.5, "b": 0.75, "lowercase": True, "stopwords": "english"}
    return Bm25sIndex(**take_options("[keyword] bm25s", options, defaults))


@hookimpl
def vecguard_parts() -> list[Part]:
    return [
        Part(
            "keyword",
            "bm25s",
            _build,
            description="BM25 scored by the bm25s package (sparse matrices), identifier-aware tokenizer",
        )
    ]

"""What every integration returns for a search hit: the whole stored document, and the hit's evidence as plain data.

A hit's ``text`` is the passage that matched (one chunk of a long document); the frameworks' stores hand back the
documents they were given, so the integrations return the stored document whole and name the passage in the evidence.
"""

from __future__ import annotations

from typing import Any

from ..engine import Engine
from ..protocols import Document, Hit


def with_documents(engine: Engine, hits: list[Hit]) -> list[tuple[Hit, Document]]:
    """Each hit with its whole stored document, in the hits' order; a document another process deleted since the
    search is left out."""
    stored = {document.id: document for document in engine.get([hit.id for hit in hits])}
    return [(hit, stored[hit.id]) for hit in hits if hit.id in stored]


def evidence(hit: Hit) -> dict[str, Any]:
    """Why a document ranked where it did: the fused score, each signal's rank and score (``dense``: cosine,
    ``keyword``: BM25, ``verbatim``/``identifier``: exact matches that rank first), and the passage that matched
    (its chunk number and character span in the document)."""
    return {
        "score": hit.score,
        "signals": {name: {"rank": e.rank, "score": e.score} for name, e in hit.signals.items()},
        "passage": {"chunk": hit.chunk, "start": hit.start, "end": hit.end},
    }

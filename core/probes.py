"""Query-like probes: what users might ask of a collection, made from what it stores, before anyone has asked.

An ANN index tuned on its own stored vectors is flattered: a stored vector sits where its neighbours are densest,
while a query sits between documents. A few consecutive words of a stored chunk, encoded as a query, land where
queries do, or a little further out. On ICD-10-CM (74,731 codes, the publisher's synonyms as real queries) stored
vectors read recall@10 0.98 at the nprobe held-out tuning picked (6) while real queries got 0.84
(benchmarks/results/query_recall-before.md); spans read at or below the real queries at every nprobe and reached
0.95 at the same one (56). On the other set/index pairs measured, spans asked for the same setting or up to one
doubling more than real queries needed: the safe side, paid in latency until served queries take over
(benchmarks/results/query_recall.md). Random perturbations of stored vectors did not track real queries: they stay
near their source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .protocols import Encoder, Payload

SPAN_WORDS = (2, 5)  # a probe is this many consecutive words (inclusive), drawn per probe
_WORD = re.compile(r"\w[\w'-]*")


def spans(texts: Sequence[str], seed: int = 0) -> list[str]:
    """One span of SPAN_WORDS consecutive words from each text that has any, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    made = []
    for text in texts:
        words = _WORD.findall(text)
        if not words:
            continue
        length = min(len(words), int(rng.integers(SPAN_WORDS[0], SPAN_WORDS[1] + 1)))
        start = int(rng.integers(0, len(words) - length + 1))
        made.append(" ".join(words[start : start + length]))
    return made


def query_like_probes(encoder: Encoder, payloads: Sequence[Payload]) -> np.ndarray:
    """Query vectors of a span of each stored chunk (``payload["text"]``), encoded as queries; each distinct span
    once (chunks that repeat one text would otherwise make one probe many times)."""
    texts = [p["text"] for p in payloads if isinstance(p.get("text"), str)]
    made = list(dict.fromkeys(spans(texts, seed=len(texts))))
    if not made:
        return np.zeros((0, 0), dtype=np.float32)
    return np.asarray(encoder.encode_queries(made), dtype=np.float32)

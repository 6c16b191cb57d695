"""Weighted reciprocal rank fusion: ``score = sum(w_s / (k + rank_s))``, rank from 1."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vecguard.config import take_options
from vecguard.errors import ConfigError
from vecguard.protocols import FusedHit, RankedList, SignalEvidence
from vecguard.registry import Part, hookimpl


def reciprocal_rank_fusion(
    ranked: Mapping[str, RankedList],
    weights: Mapping[str, float],
    k: float = 60,
    shares: Mapping[str, Mapping[str, float]] | None = None,
) -> list[FusedHit]:
    """Fuse ranked lists; a signal missing from ``weights`` counts with weight 1, and a hit's part counts in the
    share ``shares[signal][id]`` gives it (1 where absent).

    Ties are broken by the best single-signal rank, then by id, so the order
    is the same on every backend and every run.
    """
    scores: dict[str, float] = {}
    evidence: dict[str, dict[str, SignalEvidence]] = {}
    for signal, hits in ranked.items():
        weight, share = float(weights.get(signal, 1.0)), (shares or {}).get(signal, {})
        for rank, (key, score) in enumerate(hits, start=1):
            if signal in evidence.get(key, {}):
                continue  # a signal counts each id once, at its best rank
            scores[key] = scores.get(key, 0.0) + weight * share.get(key, 1.0) / (k + rank)
            evidence.setdefault(key, {})[signal] = SignalEvidence(rank, float(score))
    order = sorted(scores, key=lambda key: (-scores[key], min(e.rank for e in evidence[key].values()), key))
    return [FusedHit(key, scores[key], evidence[key]) for key in order]


class ReciprocalRankFusion:
    def __init__(self, k: float = 60) -> None:
        if not isinstance(k, (int, float)) or isinstance(k, bool) or k < 0:
            raise ConfigError(f"[fusion] k must be a number >= 0 (60 is the usual choice), got {k!r}")
        self.k = float(k)

    def fuse(
        self,
        ranked: Mapping[str, RankedList],
        weights: Mapping[str, float],
        shares: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[FusedHit]:
        return reciprocal_rank_fusion(ranked, weights, self.k, shares)


def _build(options: dict[str, Any], base_dir: Path) -> ReciprocalRankFusion:
    return ReciprocalRankFusion(**take_options("[fusion] rrf", options, {"k": 60}))


@hookimpl
def vecguard_parts() -> list[Part]:
    return [Part("fuser", "rrf", _build, description="weighted reciprocal rank fusion, k=60")]

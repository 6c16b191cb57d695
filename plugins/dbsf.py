"""Distribution-based score fusion: each signal's scores scaled by its own spread, then summed.

For each signal's ranked list, a score ``s`` becomes ``(s - (mean - 3 sd)) / (6 sd)``
over that list, times the signal's weight; a document's fused score is the sum.
Unlike rank fusion it keeps how far the first hit stands out: an exact keyword
match whose BM25 score towers over the rest of its list is not averaged away by
documents that are mediocre in both lists. Scores above mean + 3 sd are not
clipped, on purpose: that lead is the evidence.

Fewer than ten scores make no distribution: two keyword hits alone would be
stretched to the whole scale, however close their scores. A short list is
completed with zeros, the score of a document the signal did not find, for the
mean and spread only; a single hit then scales to 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vecguard.config import take_options
from vecguard.errors import ConfigError
from vecguard.protocols import FusedHit, RankedList, SignalEvidence
from vecguard.registry import Part, hookimpl

MIN_SAMPLE = 10


def distribution_based_score_fusion(
    ranked: Mapping[str, RankedList],
    weights: Mapping[str, float],
    shares: Mapping[str, Mapping[str, float]] | None = None,
) -> list[FusedHit]:
    """Fuse ranked lists; a signal missing from ``weights`` counts with weight 1, and a hit's scaled score counts
    in the share ``shares[signal][id]`` gives it (1 where absent).

    Ties are broken by the best single-signal rank, then by id, as in RRF.
    """
    scores: dict[str, float] = {}
    evidence: dict[str, dict[str, SignalEvidence]] = {}
    for signal, hits in ranked.items():
        weight, share = float(weights.get(signal, 1.0)), (shares or {}).get(signal, {})
        first: dict[str, tuple[int, float]] = {}
        for rank, (key, score) in enumerate(hits, start=1):
            first.setdefault(key, (rank, float(score)))  # a signal counts each id once, at its best rank
        if not first:
            continue
        values = [score for _, score in first.values()]
        values += [0.0] * (MIN_SAMPLE - len(values))
        mean = math.fsum(values) / len(values)
        spread = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        low = mean - 3 * spread
        for key, (rank, score) in first.items():
            normalised = (score - low) / (6 * spread) if spread > 0 else 1.0
            scores[key] = scores.get(key, 0.0) + weight * share.get(key, 1.0) * normalised
            evidence.setdefault(key, {})[signal] = SignalEvidence(rank, score)
    order = sorted(scores, key=lambda key: (-scores[key], min(e.rank for e in evidence[key].values()), key))
    return [FusedHit(key, scores[key], evidence[key]) for key in order]


class DistributionBasedScoreFusion:
    def fuse(
        self,
        ranked: Mapping[str, RankedList],
        weights: Mapping[str, float],
        shares: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[FusedHit]:
        return distribution_based_score_fusion(ranked, weights, shares)


def _build(options: dict[str, Any], base_dir: Path) -> DistributionBasedScoreFusion:
    if "k" in options:
        raise ConfigError(
            "[fusion] k is the constant of reciprocal rank fusion, which dbsf does not use; "
            'set plugin = "rrf" to use k, or remove k (dbsf takes no options besides depth and weights)'
        )
    take_options("[fusion] dbsf", options, {})
    return DistributionBasedScoreFusion()


@hookimpl
def vecguard_parts() -> list[Part]:
    return [Part("fuser", "dbsf", _build, description="distribution-based score fusion (mean +- 3 sd per signal)")]

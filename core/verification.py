"""The proof of a migration: counts, a sample of vectors and payloads, held-out queries and the guard.

``migrate`` and ``verify`` (core/migration.py) collect a ``Sample`` as the source streams past, then run
``verify_copy`` (or ``verify_reembed`` after a re-encoding); each item is a ``Check`` in the report.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import StorageError, VecguardError
from .protocols import DeclaresExactSearch, VectorStore

if TYPE_CHECKING:
    from .engine import Engine
    from .guard import GuardReport

VECTOR_TOLERANCE = 1e-6
APPROXIMATE_MIN_OVERLAP = 0.95
SAMPLE_SEED = 20240511
VECTOR_SAMPLE = 500
QUERY_WORDS = 12
TOP_K = 10


@dataclass
class Check:
    """One verification item: what was compared, whether it held, and the figures behind it."""

    name: str
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for a person: the figures behind the verdict (what `vecguard migrate` prints)."""
        d = self.detail
        if self.name == "counts":
            return (
                f"source {d['source_chunks']} chunks / {d['source_documents']} documents, "
                f"target {d['target_chunks']} / {d['target_documents']}"
            )
        if self.name == "vectors":
            problems = [f"missing {d['missing']}"] * bool(d["missing"]) + [
                f"payloads differ {d['payload_mismatches']}"
            ] * bool(d["payload_mismatches"])
            return f"{d['sampled']} sampled, max abs difference {d['max_abs_difference']:.3g}" + (
                "; " + "; ".join(problems) if problems else ", payloads equal"
            )
        if self.name == "queries":
            if "skipped" in d:
                return f"skipped: {d['skipped']}"
            return (
                f"{d['queries']} held-out queries: {d['identical']} identical top {d['k']}, mean overlap "
                f"{d['mean_overlap']:.3f} (required: {d['required']})"
            )
        if self.name == "guard":
            return f"the copy against {d['checked_with']}'s encoder: {d['status']}" + (
                f" ({'; '.join(d['reasons'])})" if d["reasons"] else ""
            )
        if self.name == "documents":
            return (
                f"source {d['source_documents']} documents, "
                f"target {d['target_documents']} ({d['target_chunks']} chunks)"
            )
        if self.name == "texts":
            return f"{d['sampled']} sampled documents" + (
                f", different or missing: {d['different_or_missing']}" if d["different_or_missing"] else " identical"
            )
        return json.dumps(d)


class Sample:
    """A fixed-seed uniform sample of scanned points: ids for the vector check, texts for the queries."""

    def __init__(self, vectors: int, queries: int) -> None:
        self._rng = random.Random(SAMPLE_SEED)
        self._seen = 0
        self._texts_seen = 0
        self.ids: list[str] = []
        self.texts: list[str] = []
        self._sizes = vectors, queries

    def offer(self, ids: Sequence[str], payloads: Sequence[Mapping[str, Any]]) -> None:
        for key, payload in zip(ids, payloads):
            self._seen += 1
            _reservoir(self.ids, key, self._seen, self._sizes[0], self._rng)
            words = str(payload.get("text", "")).split()
            if len(words) >= 4:
                self._texts_seen += 1
                start = self._rng.randrange(max(1, len(words) - QUERY_WORDS + 1))
                _reservoir(
                    self.texts,
                    " ".join(words[start : start + QUERY_WORDS]),
                    self._texts_seen,
                    self._sizes[1],
                    self._rng,
                )


def _reservoir(items: list[Any], item: Any, seen: int, size: int, rng: random.Random) -> None:
    if len(items) < size:
        items.append(item)
    else:
        slot = rng.randrange(seen)
        if slot < size:
            items[slot] = item


def scan_batches(
    store: VectorStore, batch_size: int, role: str
) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
    """``store.scan`` with read failures named (a truncated file, a server gone away)."""
    batches = store.scan(batch_size=batch_size)
    number = 0
    while True:
        number += 1
        try:
            batch = next(batches)
        except StopIteration:
            return
        except VecguardError:
            raise
        except Exception as exc:
            raise StorageError(f"reading batch {number} from the {role} failed: {type(exc).__name__}: {exc}") from exc
        yield batch


def verify_copy(source: Engine, target: Engine, sample: Sample, contains_only: bool) -> list[Check]:
    checks = []
    counts = {
        "source_chunks": source.count_chunks(),
        "target_chunks": target.count_chunks(),
        "source_documents": source.count(),
        "target_documents": target.count(),
    }
    if contains_only:
        held = (
            counts["target_chunks"] >= counts["source_chunks"]
            and counts["target_documents"] >= counts["source_documents"]
        )
    else:
        held = (
            counts["target_chunks"] == counts["source_chunks"]
            and counts["target_documents"] == counts["source_documents"]
        )
    checks.append(Check("counts", held, counts))

    expected, found = source.store.get(sample.ids), target.store.get(sample.ids)
    missing = sorted(set(expected) - set(found))
    max_difference = max(
        (float(np.max(np.abs(vector - found[key][0]))) for key, (vector, _) in expected.items() if key in found),
        default=0.0,
    )
    payload_mismatches = sorted(
        key for key, (_, payload) in expected.items() if key in found and found[key][1] != payload
    )
    checks.append(
        Check(
            "vectors",
            not missing and not payload_mismatches and max_difference <= VECTOR_TOLERANCE,
            {
                "sampled": len(expected),
                "missing": missing[:10],
                "payload_mismatches": payload_mismatches[:10],
                "max_abs_difference": max_difference,
                "tolerance": VECTOR_TOLERANCE,
            },
        )
    )

    if contains_only:
        checks.append(
            Check("queries", True, {"skipped": "the target holds other documents too, so its answers may differ"})
        )
    else:
        checks.append(_compare_answers(source, target, sample.texts))

    checks.append(_guard_check(source.check(manifest=target.manifest), source.config.source))
    return checks


def _compare_answers(source: Engine, target: Engine, queries: Sequence[str]) -> Check:
    exact = all(isinstance(e.store, DeclaresExactSearch) and e.store.exact_search for e in (source, target))
    overlaps, identical, first_difference = [], 0, None
    for query in queries:
        before = [hit.id for hit in source.search(query, k=TOP_K)]
        after = [hit.id for hit in target.search(query, k=TOP_K)]
        identical += before == after
        overlaps.append(len(set(before) & set(after)) / len(before) if before else float(not after))
        if before != after and first_difference is None:
            first_difference = {"query": query, "source": before, "target": after}
    mean_overlap = float(np.mean(overlaps)) if overlaps else 1.0
    passed = identical == len(queries) if exact else mean_overlap >= APPROXIMATE_MIN_OVERLAP
    return Check(
        "queries",
        passed,
        {
            "queries": len(queries),
            "k": TOP_K,
            "identical": identical,
            "mean_overlap": mean_overlap,
            "min_overlap": min(overlaps, default=1.0),
            "exact": exact,
            "required": "identical top 10" if exact else f"mean overlap >= {APPROXIMATE_MIN_OVERLAP}",
            "first_difference": first_difference,
        },
    )


def verify_reembed(source: Engine, new: Engine) -> list[Check]:
    counts = {"source_documents": source.count(), "target_documents": new.count(), "target_chunks": new.count_chunks()}
    checks = [Check("documents", counts["source_documents"] == counts["target_documents"], counts)]
    rng = random.Random(SAMPLE_SEED)
    ids = [
        p["doc_id"]
        for _, _, payloads in scan_batches(source.store, 1000, "source")
        for p in payloads
        if p["chunk"] == 0
    ]
    sample = rng.sample(ids, min(VECTOR_SAMPLE, len(ids)))
    before = {document.id: document for document in source.get(sample)}
    after = {document.id: document for document in new.get(sample)}
    different = sorted(key for key in before if after.get(key) != before[key])
    checks.append(Check("texts", not different, {"sampled": len(sample), "different_or_missing": different[:10]}))
    checks.append(_guard_check(new.check(), new.config.source))
    return checks


def _guard_check(report: GuardReport, checked_with: str) -> Check:
    """The copy's manifest against a config's encoder: it passes unless the version guard refuses it."""
    return Check(
        "guard",
        report.status != "refused",
        {"status": report.status, "reasons": report.reasons, "checked_with": checked_with},
    )

"""Retrieval quality against relevance judgments: nDCG@k, Recall@k and MRR per search mode.

Queries are JSONL ``{"id": ..., "text": ...}``; judgments (qrels) are JSONL
``{"query_id": ..., "doc_id": ..., "relevance": 1}`` (relevance defaults to 1;
0 means judged not relevant). Only queries with at least one relevant
document are scored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import DocumentError
from .protocols import DeclaresExactSearch

Qrels = dict[str, dict[str, float]]


def _records(
    path: Path, fields: dict[str, type | tuple[type, ...]], optional: Sequence[str] = ()
) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DocumentError(f"{path}: no such file; give a JSONL file")
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DocumentError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(record, dict):
                raise DocumentError(f"{where}: each line must be an object with {', '.join(fields)}")
            for name, kind in fields.items():
                if name not in record and name in optional:
                    continue
                value = record.get(name)
                if (
                    not isinstance(value, kind)
                    or isinstance(value, bool)
                    or (isinstance(value, str) and not value.strip())
                ):
                    raise DocumentError(f"{where}: {name!r} must be {_kind_name(kind)}, got {value!r:.60}")
            records.append(record)
    return records


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "a non-empty string" if kind is str else "a number"


def load_queries(path: str | Path) -> dict[str, str]:
    """{query id: text} from a JSONL file of {"id", "text"}."""
    queries: dict[str, str] = {}
    for record in _records(Path(path), {"id": str, "text": str}):
        queries[record["id"]] = record["text"]
    return queries


def load_qrels(path: str | Path) -> Qrels:
    """{query id: {doc id: relevance}} from a JSONL file of {"query_id", "doc_id", "relevance"}."""
    qrels: Qrels = {}
    for record in _records(
        Path(path), {"query_id": str, "doc_id": str, "relevance": (int, float)}, optional=("relevance",)
    ):
        qrels.setdefault(record["query_id"], {})[record["doc_id"]] = float(record.get("relevance", 1))
    return qrels


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    gains = sorted((g for g in relevance.values() if g > 0), reverse=True)
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))
    found = sum(relevance.get(key, 0.0) / math.log2(i + 2) for i, key in enumerate(ranked[:k]))
    return found / ideal if ideal else 0.0


def recall_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    relevant = {key for key, g in relevance.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: Sequence[str], relevance: Mapping[str, float]) -> float:
    for position, key in enumerate(ranked, start=1):
        if relevance.get(key, 0.0) > 0:
            return 1.0 / position
    return 0.0


def evaluate(
    engine: Any,
    queries: Mapping[str, str],
    qrels: Qrels,
    *,
    k: int = 10,
    modes: Sequence[str] = ("hybrid", "dense", "keyword"),
) -> dict[str, dict[str, float]]:
    """Mean nDCG@k, Recall@k and MRR (over the top k) of ``engine.search`` per mode."""
    judged = [qid for qid in queries if any(g > 0 for g in qrels.get(qid, {}).values())]
    if not judged:
        raise DocumentError("no query has a relevant document in the judgments; check that query ids match")
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        totals = {f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, "mrr": 0.0}
        for qid in judged:
            ranked = [hit.id for hit in engine.search(queries[qid], k=k, mode=mode)]
            totals[f"ndcg@{k}"] += ndcg_at_k(ranked, qrels[qid], k)
            totals[f"recall@{k}"] += recall_at_k(ranked, qrels[qid], k)
            totals["mrr"] += reciprocal_rank(ranked, qrels[qid])
        results[mode] = {name: value / len(judged) for name, value in totals.items()} | {"queries": len(judged)}
    return results


def measure_recall(engine: Any, queries: Sequence[str], *, k: int = 10) -> dict[str, Any]:
    """Recall@k of the store's own search against exact search over the same stored vectors.

    Also the store's single-query latency (p50/p99 ms) and the collection's bytes
    on disk. Exact search is brute force in numpy over every vector ``scan``
    yields, so it needs the vectors in memory once (4 bytes x dimension each).
    """
    import time

    import numpy as np

    if not queries:
        raise DocumentError("measuring recall needs at least one query")
    ids: list[str] = []
    blocks = []
    for batch_ids, vectors, _ in engine.store.scan(batch_size=4096):
        ids += batch_ids
        blocks.append(np.asarray(vectors, dtype=np.float32))
    if not ids:
        raise DocumentError("the collection is empty; there is nothing to measure")
    matrix = np.concatenate(blocks)
    position = {key: i for i, key in enumerate(ids)}
    query_vectors = engine.encoder.encode_queries(list(queries)).astype(np.float32)
    depth = min(k, len(ids))
    recalls, latencies = [], []
    for vector in query_vectors:
        scores = matrix @ vector
        kth_best = -np.partition(-scores, depth - 1)[depth - 1]
        started = time.perf_counter()
        found = engine.store.search(vector, depth)
        latencies.append((time.perf_counter() - started) * 1000)
        # A hit counts when exact search scores it among the best k; ties at the k-th score all qualify.
        correct = sum(1 for key, _ in found[:depth] if key in position and scores[position[key]] >= kth_best - 1e-6)
        recalls.append(correct / depth)
    latencies.sort()
    return {
        "recall": float(np.mean(recalls)),
        "min_recall": float(min(recalls)),
        "k": depth,
        "queries": len(query_vectors),
        "points": len(ids),
        "latency_p50_ms": latencies[len(latencies) // 2],
        "latency_p99_ms": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "exact_search": isinstance(engine.store, DeclaresExactSearch) and bool(engine.store.exact_search),
    }


def folder_bytes(config: Any) -> int | None:
    """Bytes the collection's folder holds on disk (None for a server or an in-memory store)."""
    path = config.tables["store"].get("path")
    if not path or str(path).startswith(":"):
        return None
    folder = Path(config.base_dir, path)
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0

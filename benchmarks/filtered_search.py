"""Filtered search on vecguard's FAISS ANN indexes: what a plain id selector at the tuned setting finds, against
vecguard's (exact among few allowed points, widened among many, exact when still short).

    .venv/bin/python benchmarks/filtered_search.py                 # 100,000 vectors
    .venv/bin/python benchmarks/filtered_search.py --size 20000
    .venv/bin/python benchmarks/filtered_search.py --mixture clustered   # qdrant_embedded.py's mixture

Vectors and queries: the realistic mixtures of faiss_indexes.py (``--mixture real``,
results/filtered_search.md), or qdrant_embedded.py's clustered mixture
(``--mixture clustered``, results/filtered_search-clustered.md). Each point carries
``bucket = i % 10000``; the filters ``bucket < b`` let 0.01% .. 50% of the points
through. For each ANN kind (IVF, HNSW32: ``index = "auto"`` with
``auto_candidates`` set to it, tuned to target_recall 0.95), per filter and per
held-out query, taking turns: the FAISS call with an ``IDSelectorBatch`` of the
allowed points at the tuned nprobe / efSearch (what vecguard did before, and what
a FAISS user writes), the same call with the setting widened by 1/share alone
(vecguard's rule before HNSW_FILTER_SLACK), and ``store.search(vector, 10, filter)``. Recall@10 against
the exact best 10 of the allowed points (ties count), the mean number of hits
returned, p50 latency. The plain call is handed the allowed ids; vecguard finds
them for itself from the filter it keeps (the first search with a filter tests
every point's metadata, once, outside the timing: ``first_filter_ms``).
Results: benchmarks/results/filtered_search.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, save  # noqa: E402
from faiss_indexes import K, real_embeddings, setting, synthetic  # noqa: E402

BUCKETS = 10_000
LIMITS = (1, 10, 100, 300, 1_000, 2_000, 5_000)  # bucket < limit: 0.01% .. 50% of the points
SIDES = ("plain", "1/share", "vecguard")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--mixture",
        choices=("real", "clustered"),
        default="real",
        help="real: faiss_indexes.py's mixtures of real embeddings (encodes a 10k collection once); clustered: "
        "qdrant_embedded.py's synthetic mixture",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import faiss
    from vecguard.backends.faiss import FaissStore, kinds

    n = args.size
    if args.mixture == "real":
        base = real_embeddings()
        vectors = synthetic(base, n, seed=n)
        queries = synthetic(base, args.queries, seed=n + 1)
    else:
        from qdrant_embedded import SEED, draw, mixture

        parts = mixture(SEED)
        vectors, queries = draw(n, SEED + 1, parts), draw(args.queries, SEED + 2, parts)
    bucket = np.arange(n) % BUCKETS
    rows = []
    for kind in ("IVF", "HNSW"):
        with tempfile.TemporaryDirectory(prefix="vecguard-filtered-") as folder:
            options = {"index": "auto", "target_recall": 0.95, "auto_candidates": [kind]}
            store = FaissStore(Path(folder), **options)
            for start in range(0, n, 10_000):
                stop = min(n, start + 10_000)
                store.upsert(
                    [f"v{i}" for i in range(start, stop)],
                    vectors[start:stop],
                    [
                        {"doc_id": f"v{i}", "chunk": 0, "text": f"vector {i}", "metadata": {"bucket": int(i % BUCKETS)}}
                        for i in range(start, stop)
                    ],
                )
            store.search(queries[0], K)  # builds and tunes the index
            tuning = store.index_report() or {}
            knob = setting(tuning) or "-"
            # The plain side searches the same index as a FAISS user would hold it: read from the file the store
            # saved, the row numbers from its points.sqlite3 (both documented formats); the store reopens the file.
            store.close()
            index = faiss.read_index(str(Path(folder) / "index.faiss"))
            db = sqlite3.connect(Path(folder) / "points.sqlite3")
            num_of = {key: num for num, key in db.execute("SELECT num, id FROM points")}
            db.close()
            store = FaissStore(Path(folder), **options)
            state = store.index_state
            for limit in LIMITS:
                where = {"bucket": {"$lt": limit}}
                allowed_rows = np.flatnonzero(bucket < limit)
                allowed_nums = np.array(sorted(num_of[f"v{i}"] for i in allowed_rows), dtype=np.int64)
                row_of = {num_of[f"v{i}"]: i for i in allowed_rows}
                selector = faiss.IDSelectorBatch(allowed_nums)
                params = {
                    "plain": kinds.search_parameters(faiss, state.spec, index, state.tuning, K, selector=selector),
                    "1/share": widened_by_share(faiss, kinds, state, index, selector, n / len(allowed_rows)),
                }
                started = time.perf_counter()
                store.search(queries[0], K, where)  # the filter's allowed points, found once and kept
                first_filter_ms = (time.perf_counter() - started) * 1000
                measured: dict[str, tuple[list, list, list]] = {side: ([], [], []) for side in SIDES}
                for number, q in enumerate(queries):
                    truth = vectors[allowed_rows] @ q
                    tenth = np.sort(truth)[::-1][min(K, len(truth)) - 1] - 1e-6
                    for side in SIDES if number % 2 else SIDES[::-1]:
                        started = time.perf_counter()
                        if side != "vecguard":
                            _, found = index.search(q.reshape(1, -1), K, params=params[side])
                            elapsed = time.perf_counter() - started
                            hits = [row_of[num] for num in found[0].tolist() if num >= 0]
                        else:
                            answer = store.search(q, K, where)
                            elapsed = time.perf_counter() - started
                            hits = [int(key[1:]) for key, _ in answer]
                        times, counts, recalls = measured[side]
                        times.append(elapsed)
                        counts.append(len(hits))
                        recalls.append(
                            np.count_nonzero(vectors[hits] @ q >= tenth) / min(K, len(truth)) if hits else 0.0
                        )
                for side, (times, counts, recalls) in measured.items():
                    row = {
                        "index": state.spec,
                        "setting": knob,
                        "allowed": int(len(allowed_rows)),
                        "share": len(allowed_rows) / n,
                        "search": side,
                        "p50_ms": statistics.median(times) * 1000,
                        "mean_hits": float(np.mean(counts)),
                        "recall_at_10": float(np.mean(recalls)),
                        "first_filter_ms": first_filter_ms,
                    }
                    rows.append(row)
                    print(
                        f"{row['index']} {knob} {row['allowed']:>6} allowed, {side:>8}: "
                        f"recall@10 {row['recall_at_10']:.3f}, "
                        f"hits {row['mean_hits']:.2f}, p50 {row['p50_ms']:.3f} ms",
                        flush=True,
                    )
            store.close()
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "size": n,
            "queries": args.queries,
            "k": K,
            "target_recall": 0.95,
            "mixture": args.mixture,
            "hnsw_filter_slack": kinds.HNSW_FILTER_SLACK,
        },
        "rows": rows,
    }
    lines = [
        f"# Filtered search on FAISS ANN indexes, {n:,} vectors, {args.mixture} mixture ({report['date']})",
        "",
        f"{args.queries} held-out queries, k={K}, medians; recall@10 against the exact best 10 of the allowed points. "
        "`plain`: the FAISS call with an id selector of the allowed points at the tuned setting; `1/share`: the same "
        "call with nprobe / efSearch widened by 1/share (vecguard's rule before the HNSW slack); `vecguard`: "
        "`store.search(vector, 10, filter)` (exact among at most 2,000 allowed points, else widened, HNSW "
        f"{kinds.HNSW_FILTER_SLACK:g}x more); its first search with a filter finds and keeps the allowed points "
        "(first ms).",
        "",
        "| index | setting | allowed | plain recall@10 | plain hits | plain p50 ms | 1/share recall@10 | 1/share p50 ms "
        "| vecguard recall@10 | vecguard hits | vecguard p50 ms | first ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for first in range(0, len(rows), len(SIDES)):
        side = {row["search"]: row for row in rows[first : first + len(SIDES)]}
        plain, share, ours = side["plain"], side["1/share"], side["vecguard"]
        lines.append(
            f"| {plain['index']} | {plain['setting']} | {plain['allowed']:,} ({plain['share']:.2%}) | "
            f"{plain['recall_at_10']:.3f} | {plain['mean_hits']:.2f} | {plain['p50_ms']:.3f} | "
            f"{share['recall_at_10']:.3f} | {share['p50_ms']:.3f} | "
            f"**{ours['recall_at_10']:.3f}** | {ours['mean_hits']:.2f} | {ours['p50_ms']:.3f} | "
            f"{ours['first_filter_ms']:.0f} |"
        )
    lines.append("")
    save("filtered_search" + ("" if args.mixture == "real" else f"-{args.mixture}"), report, "\n".join(lines))
    print("\n".join(lines))


def widened_by_share(faiss, kinds, state, index, selector, widen: float):
    """The search parameters widened by 1/share alone, as vecguard widened before HNSW_FILTER_SLACK."""
    slack, kinds.HNSW_FILTER_SLACK = kinds.HNSW_FILTER_SLACK, 1.0
    try:
        return kinds.search_parameters(faiss, state.spec, index, state.tuning, K, selector=selector, widen=widen)
    finally:
        kinds.HNSW_FILTER_SLACK = slack


if __name__ == "__main__":
    main()

"""FAISS index types at 100k and 1M 384-d vectors: recall@10 against exact search, latency, memory; and vecguard on top.

    .venv/bin/python benchmarks/faiss_indexes.py                    # 100k and 1M
    .venv/bin/python benchmarks/faiss_indexes.py --sizes 100000 --queries 200

Vectors: not Gaussian blobs. Each synthetic vector mixes two real all-MiniLM-L6-v2
embeddings of CWE passages (the 10k-passage collection that serve_load.py caches,
built on first use) with weights drawn per vector, plus 384-d noise at a third of
their norm, normalised: the neighbourhoods overlap the way real text does.
Queries are fresh vectors drawn the same way (never in the index). Exact answers:
``faiss.knn`` over all vectors.

Per index: build seconds, bytes (``faiss.serialize_index``), recall@10 (ties at
the 10th exact score count as found), p50/p99 single-query latency over the
queries, for each nprobe / efSearch of the sweep. Then vecguard's FAISS store on
the same vectors: ``index = "auto"`` (tuned to target_recall 0.95 at build) with
its recall on the held-out queries, and the cost of vecguard's search as the
engine runs it (``search_with_payloads``: the FAISS search, then one SQLite read
of the 10 hits' ids and payloads, parsed) next to the raw ``index.search`` on the
very same index object with the same parameters, and next to that raw call
plus one SQLite read and parse of the hits' payloads done by hand (the least
any FAISS + SQLite stack pays), query by query, taking turns going first (a
later one finds the query's IVF lists in cache). Results: benchmarks/results/faiss_indexes.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
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
from common import RESULTS, machine, percentile, save  # noqa: E402

K = 10


def real_embeddings() -> np.ndarray:
    import serve_load
    import vecguard

    config = serve_load.collection(10_000)
    with vecguard.open(config) as engine:
        return np.concatenate([vectors for _, vectors, _ in engine.store.scan(batch_size=5000)])


def setting(tuning: dict) -> str | None:
    """The tuned knob of a vecguard index report (or a candidate in it), as the sweep tables write it."""
    if "nprobe" in tuning:
        return f"nprobe={tuning['nprobe']}"
    return f"efSearch={tuning['ef_search']}" if "ef_search" in tuning else None


def synthetic(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        a, b = base[rng.integers(len(base), size=m)], base[rng.integers(len(base), size=m)]
        w = rng.uniform(0.5, 1.0, size=(m, 1)).astype(np.float32)
        mixed = w * a + (1 - w) * b
        mixed += rng.normal(scale=1 / 3 / np.sqrt(base.shape[1]), size=mixed.shape).astype(np.float32)
        out[start : start + m] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, found_scores: np.ndarray, exact_scores: np.ndarray) -> float:
    """Found ids whose exact score reaches the 10th exact score (ties count), per query, averaged."""
    return float(
        np.mean(
            [(np.count_nonzero(s[f >= 0] >= e[K - 1] - 1e-6)) / K for f, s, e in zip(found, found_scores, exact_scores)]
        )
    )


def exact_scores_of(vectors: np.ndarray, queries: np.ndarray, found: np.ndarray) -> np.ndarray:
    safe = np.where(found >= 0, found, 0)
    scores = np.einsum("qd,qkd->qk", queries, vectors[safe])
    return np.where(found >= 0, scores, -np.inf)


def timed_search(index, queries: np.ndarray, params=None) -> tuple[np.ndarray, list[float]]:
    found = np.empty((len(queries), K), dtype=np.int64)
    times = []
    for i, q in enumerate(queries):
        started = time.perf_counter()
        _, ids = index.search(q.reshape(1, -1), K, params=params)
        times.append(time.perf_counter() - started)
        found[i] = ids[0]
    return found, times


def index_types(vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, n: int) -> list[dict]:
    import faiss

    nlist = max(16, min(int(4 * np.sqrt(n)), n // 39))
    specs = {
        "Flat": ({}, None),
        f"IVF{nlist},Flat": ({"nprobe": [1, 4, 8, 16, 32, 64]}, "nprobe"),
        "HNSW32": ({"efSearch": [16, 32, 64, 128, 256]}, "efSearch"),
        "SQ8": ({}, None),
        f"IVF{nlist},SQ8": ({"nprobe": [8, 16, 32]}, "nprobe"),
        f"IVF{nlist},PQ8": ({"nprobe": [16, 64]}, "nprobe"),
        f"IVF{nlist},PQ48": ({"nprobe": [16, 64]}, "nprobe"),
    }
    if n > 500_000:  # each IVF variant trains its own k-means: keep the 1M run under an hour on 2 cores
        specs = {spec: value for spec, value in specs.items() if spec not in (f"IVF{nlist},SQ8", f"IVF{nlist},PQ48")}
    rows = []
    for spec, (sweep, knob) in specs.items():
        started = time.perf_counter()
        index = faiss.index_factory(vectors.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            training = vectors[np.random.default_rng(1).choice(n, size=min(n, 64 * nlist), replace=False)]
            index.train(training)
        index.add(vectors)
        build = time.perf_counter() - started
        size = faiss.serialize_index(index).nbytes
        settings = sweep.get(knob, [None]) if knob else [None]
        for value in settings:
            params = None
            if knob == "nprobe":
                params = faiss.SearchParametersIVF(nprobe=value)
            elif knob == "efSearch":
                params = faiss.SearchParametersHNSW(efSearch=value)
            found, times = timed_search(index, queries, params)
            row = {
                "index": spec,
                "setting": f"{knob}={value}" if knob else "",
                "build_s": build,
                "bytes": size,
                "recall_at_10": recall(found, exact_scores_of(vectors, queries, found), exact),
                "p50_ms": statistics.median(times) * 1000,
                "p99_ms": percentile(times, 0.99) * 1000,
            }
            rows.append(row)
            print(
                f"  {spec:<16} {row['setting']:<12} recall@10 {row['recall_at_10']:.3f}  p50 {row['p50_ms']:.3f} ms  "
                f"p99 {row['p99_ms']:.3f} ms  {size / 1e6:.0f} MB  build {build:.0f} s",
                flush=True,
            )
        del index
    return rows


def vecguard_store(vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, n: int) -> dict:
    """vecguard's FAISS store (auto, tuned) on the same vectors; its search vs the raw call on its own index."""
    from vecguard.backends.faiss import FaissStore

    with tempfile.TemporaryDirectory(prefix="vecguard-faiss-bench-") as folder:
        store = FaissStore(Path(folder), index="auto", target_recall=0.95)
        started = time.perf_counter()
        for start in range(0, n, 10_000):
            part = slice(start, min(n, start + 10_000))
            store.upsert(
                [f"v{i}" for i in range(part.start, part.stop)],
                vectors[part],
                [
                    {"doc_id": f"v{i}", "chunk": 0, "text": f"vector {i}", "metadata": {"i": i}}
                    for i in range(part.start, part.stop)
                ],
            )
        store.search(queries[0], K)  # builds (and tunes) the index
        build = time.perf_counter() - started
        report = store.index_report()
        state = store.index_state
        # The payload read by hand goes through a connection of its own to points.sqlite3 (a documented format),
        # mapped as the store maps it.
        db = sqlite3.connect(Path(folder) / "points.sqlite3")
        db.execute("PRAGMA mmap_size=2147483648")
        raw_times, by_hand_times, ours_times, found = [], [], [], []
        orders = ((0, 1, 2), (1, 2, 0), (2, 0, 1))
        for number, q in enumerate(queries):
            # Whichever runs later finds the query's IVF lists in cache: take turns going first.
            for side in orders[number % 3]:
                started = time.perf_counter()
                if side == 0:
                    store.raw_search(q, K)
                    raw_times.append(time.perf_counter() - started)
                elif (
                    side == 1
                ):  # the least any FAISS + SQLite stack pays: the call, then one read of the hits' payloads
                    _, nums = store.raw_search(q, K)
                    rows = db.execute(
                        f"SELECT num, id, payload FROM points WHERE num IN ({','.join('?' * K)})", nums[0].tolist()
                    ).fetchall()
                    [json.loads(text) for _, _, text in rows]
                    by_hand_times.append(time.perf_counter() - started)
                else:
                    hits = store.search_with_payloads(q, K)
                    ours_times.append(time.perf_counter() - started)
            found.append([int(key[1:]) for key, _, _ in hits] + [-1] * (K - len(hits)))
        found_array = np.array(found, dtype=np.int64)
        held_out = recall(found_array, exact_scores_of(vectors, queries, found_array), exact)
        db.close()
        store.close()
    raw, ours, by_hand = statistics.median(raw_times), statistics.median(ours_times), statistics.median(by_hand_times)
    row = {
        "spec": state.spec,
        "tuning": report,
        "build_s": build,
        "held_out_recall_at_10": held_out,
        "raw_p50_ms": raw * 1000,
        "vecguard_p50_ms": ours * 1000,
        "ratio": ours / raw,
        "raw_with_payload_read_p50_ms": by_hand * 1000,
        "ratio_to_raw_with_payload_read": ours / by_hand,
        "raw_p99_ms": percentile(raw_times, 0.99) * 1000,
        "vecguard_p99_ms": percentile(ours_times, 0.99) * 1000,
    }
    print(
        f"  vecguard auto: {row['spec']} {report}; held-out recall@10 {held_out:.3f}; "
        f"search p50 raw {row['raw_p50_ms']:.3f} ms, "
        f"vecguard {row['vecguard_p50_ms']:.3f} ms (x{row['ratio']:.2f}); raw call + payload read by hand "
        f"{row['raw_with_payload_read_p50_ms']:.3f} ms (vecguard x{row['ratio_to_raw_with_payload_read']:.2f} of it)",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--vecguard-only",
        action="store_true",
        help="rerun only vecguard's store rows, keeping the index-type rows of results/faiss_indexes.json",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import faiss

    base = real_embeddings()
    results, index_rows_from = {}, None
    if args.vecguard_only:
        kept = json.loads((RESULTS / "faiss_indexes.json").read_text(encoding="utf-8"))
        results = kept["results"]
        index_rows_from = kept.get("index_rows_from") or {"date": kept["date"], "machine": kept["machine"]}
    for n in args.sizes:
        print(f"{n} vectors", flush=True)
        vectors = synthetic(base, n, seed=n)
        queries = synthetic(base, args.queries, seed=n + 1)
        exact, _ = faiss.knn(queries, vectors, K, metric=faiss.METRIC_INNER_PRODUCT)
        indexes = results[str(n)]["indexes"] if args.vecguard_only else index_types(vectors, queries, exact, n)
        results[str(n)] = {"indexes": indexes, "vecguard": vecguard_store(vectors, queries, exact, n)}
        del vectors
        report = {  # written after each size, so a long 1M run leaves the 100k figures behind
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "load_average": os.getloadavg(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "settings": {
                "sizes": [int(size) for size in results],
                "queries": args.queries,
                "k": K,
                "dimension": int(base.shape[1]),
            },
            "results": results,
        }
        if index_rows_from is not None:
            report["index_rows_from"] = index_rows_from  # the index-type rows are an earlier run's
        save("faiss_indexes", report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        f"# FAISS index types, and vecguard's FAISS store on top ({report['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, faiss-cpu {m['libraries']['faiss-cpu']} "
        f"({report['faiss_threads']} threads); "
        f"load average at the end {report['load_average'][0]:.2f}. "
        f"{s['dimension']}-d vectors mixed from real all-MiniLM-L6-v2 "
        f"embeddings plus noise; {s['queries']} held-out queries, one at a time, k={s['k']}; medians. "
        "Command: `benchmarks/faiss_indexes.py`.",
        "",
    ]
    if "index_rows_from" in report:
        earlier = report["index_rows_from"]
        lines += [
            f"The index-type tables are from the full run of {earlier['date']} ({earlier['machine']['cpu_model']}); "
            "the vecguard rows below each are this run's (`--vecguard-only`).",
            "",
        ]
    for n, result in report["results"].items():
        lines += [
            f"## {int(n):,} vectors",
            "",
            "| index | setting | recall@10 | p50 ms | p99 ms | MB | build s |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in result["indexes"]:
            lines.append(
                f"| {r['index']} | {r['setting']} | {r['recall_at_10']:.3f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r['bytes'] / 1e6:.0f} | {r['build_s']:.0f} |"
            )
        v = result["vecguard"]
        tuning = v["tuning"] or {}
        compared = "; ".join(
            f"{spec} at {setting(c) or '-'}: recall@10 {c['recall_at_10']}, p50 {c['p50_ms']:.3f} ms"
            for spec, c in (tuning.get("candidates") or {}).items()
        )
        lines += [
            "",
            f'vecguard `index = "auto"`, `target_recall = 0.95`: {v["spec"]}, tuned {setting(tuning) or "no knob"} '
            f"(recall@10 {tuning.get('recall_at_10')} on its 200 stored-vector sample, "
            f"aimed at {tuning.get('aimed_at')}); recall@10 on the held-out queries "
            f"**{v['held_out_recall_at_10']:.3f}**; built and tuned in {v['build_s']:.0f} s"
            + (
                f" (candidates, each tuned to the aim and timed on the held-out stored vectors: {compared})."
                if compared
                else "."
            ),
            f"Search on that index: raw `index.search` p50 {v['raw_p50_ms']:.3f} ms, vecguard (search with "
            f"payloads) {v['vecguard_p50_ms']:.3f} ms: **x{v['ratio']:.2f}** "
            f"(p99 {v['raw_p99_ms']:.3f} / {v['vecguard_p99_ms']:.3f} ms)."
            + (
                " The raw call plus one SQLite read of the hits' payloads, by hand: "
                f"{v['raw_with_payload_read_p50_ms']:.3f} ms "
                f"(vecguard x{v['ratio_to_raw_with_payload_read']:.2f} of it)."
                if "raw_with_payload_read_p50_ms" in v
                else ""
            ),
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

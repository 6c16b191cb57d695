"""FAISS ``index = "auto"`` as a collection grows from 1k to 1M vectors: the retrains, and recall and latency after
each.

    .venv/bin/python benchmarks/index_growth.py                    # up to 1,000,000
    .venv/bin/python benchmarks/index_growth.py --final 100000

Past ``ivf_threshold`` "auto" builds IVF and HNSW32, tunes both and keeps the
faster at the recall aim: the retrain table shows both candidates' figures.
Every time the collection grows by a quarter the index measures its recall on
vectors stored since the last measure (a retrain when below target); those
measures are listed too.

Vectors: the same realistic mixtures as faiss_indexes.py (two real MiniLM
embeddings of CWE passages plus noise), streamed into vecguard's FAISS store in
batches of 1,000 (10,000 past 100k) with engine-shaped payloads, exactly as
``Engine.add`` writes them. Retraining happens in the background when the
collection crosses ``ivf_threshold`` (50k), grows 4x since the last training or measures a recall below target;
writes go on meanwhile. At 1k, 10k, 100k and 1M (and whenever a retrain is swapped
in) the script waits for any build in progress and measures 200 held-out queries:
recall@10 against exact search over everything stored so far, p50/p99 of
``search_with_payloads``. Results: benchmarks/results/index_growth.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, percentile, save  # noqa: E402
from faiss_indexes import K, real_embeddings, recall, setting, synthetic  # noqa: E402

CHECKPOINTS = (1_000, 10_000, 100_000, 1_000_000)


def measure(store, vectors: np.ndarray, queries: np.ndarray, n: int) -> dict:
    import faiss

    exact, _ = faiss.knn(queries, vectors[:n], K, metric=faiss.METRIC_INNER_PRODUCT)
    times, found, scores = [], [], []
    for q in queries:
        started = time.perf_counter()
        hits = store.search_with_payloads(q, K)
        times.append(time.perf_counter() - started)
        keys = [int(key[1:]) for key, _, _ in hits] + [-1] * (K - len(hits))
        found.append(keys)
        scores.append([float(vectors[k] @ q) if k >= 0 else -np.inf for k in keys])
    report = store.index_report() or {}
    state = store.index_state
    return {
        "vectors": n,
        "spec": state.spec,
        "trained_on": state.trained_on,
        "setting": setting(report),
        "recall_at_10": recall(np.array(found), np.array(scores), exact),
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": percentile(times, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--final", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vecguard.backends.faiss import FaissStore

    base = real_embeddings()
    vectors = synthetic(base, args.final, seed=7)
    queries = synthetic(base, args.queries, seed=8)
    rows, retrains, checks = [], [], []
    with tempfile.TemporaryDirectory(prefix="vecguard-growth-") as folder:
        store = FaissStore(Path(folder), index="auto", target_recall=0.95)
        started = time.perf_counter()
        written, write_s, last_spec, last_check = 0, 0.0, None, None
        checkpoints = [c for c in CHECKPOINTS if c <= args.final]
        while written < args.final:
            step = 1_000 if written < 100_000 else 10_000
            end = min(args.final, written + step)
            t = time.perf_counter()
            store.upsert(
                [f"v{i}" for i in range(written, end)],
                vectors[written:end],
                [
                    {
                        "doc_id": f"v{i}",
                        "chunk": 0,
                        "chunks": 1,
                        "start": 0,
                        "end": 9,
                        "text": f"vector {i}",
                        "metadata": {"i": i},
                    }
                    for i in range(written, end)
                ],
            )
            write_s += time.perf_counter() - t
            written = end
            if written in checkpoints:
                store.wait_for_index()
                store.search(queries[0], K)  # builds the first index
            state = store.index_state
            spec_now = (state.spec, state.trained_on)
            if spec_now != last_spec and last_spec is not None and last_spec[0] is not None:
                tuning = store.index_report() or {}
                state = store.index_state
                retrains.append(
                    {
                        "at_vectors": written,
                        "spec": state.spec,
                        "trained_on": state.trained_on,
                        "setting": setting(tuning),
                        "build_s": tuning.get("build_s"),
                        "reason": tuning.get("reason"),
                        "candidates": tuning.get("candidates"),
                        "elapsed_s": time.perf_counter() - started,
                    }
                )
                print(
                    f"  swapped in {state.spec} trained on {state.trained_on:,} (seen at {written:,} stored), "
                    f"build {tuning.get('build_s')} s: {tuning.get('reason')}; {tuning.get('candidates')}",
                    flush=True,
                )
            last_spec = spec_now
            check = (state.tuning or {}).get("last_check")
            if check and check != last_check:
                checks.append({"seen_at": written, **check})
                print(f"  recall measured on new vectors: {check}", flush=True)
                last_check = check
            if written in checkpoints:
                row = measure(store, vectors, queries, written)
                row["write_points_per_s"] = written / write_s
                rows.append(row)
                print(
                    f"{written:,}: {row['spec']} (trained on {row['trained_on']:,}), {row['setting']}, "
                    f"recall@10 {row['recall_at_10']:.3f}, p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms, "
                    f"writes {row['write_points_per_s']:.0f} points/s",
                    flush=True,
                )
        store.close()
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "final": args.final,
            "queries": args.queries,
            "k": K,
            "ivf_threshold": 50_000,
            "target_recall": 0.95,
        },
        "checkpoints": rows,
        "retrains": retrains,
        "recall_checks": checks,
    }
    lines = [
        f"# FAISS `auto` index as the collection grows ({report['date']})",
        "",
        "| stored vectors | index | trained on | setting | recall@10 (held-out) | p50 ms | p99 ms "
        "| write points/s so far |",
        "|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        trained = f"{r['trained_on']:,}" if r["spec"] != "Flat" else "-"
        lines.append(
            f"| {r['vectors']:,} | {r['spec']} | {trained} | {r['setting'] or '-'} | {r['recall_at_10']:.3f} | "
            f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['write_points_per_s']:.0f} |"
        )
    lines += [
        "",
        "Retrains swapped in (built in the background while writes went on); each candidate tuned to the "
        "aim on 200 held-out stored vectors, then timed one query at a time (two rounds, each in turn):",
        "",
        "| swapped in by | kept | trained on | setting | build s (both) | why "
        "| candidates: setting, recall@10, p50 ms |",
        "|---:|---|---:|---|---:|---|---|",
    ]
    for r in retrains:
        compared = (
            "; ".join(
                f"{spec}: {setting(c) or '-'}, {c['recall_at_10']}, {c['p50_ms']:.3f}"
                for spec, c in (r["candidates"] or {}).items()
            )
            or "-"
        )
        lines.append(
            f"| {r['at_vectors']:,} | {r['spec']} | {r['trained_on']:,} | {r['setting'] or '-'} | "
            f"{r['build_s'] or '-'} | "
            f"{r['reason'] or '-'} | {compared} |"
        )
    lines += [
        "",
        "Recall measured on vectors stored since the last measure (every 1.25x growth; a retrain when below "
        "target_recall):",
        "",
        "| stored then | queries | recall@10 |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {c['vectors']:,} | {c['queries']} | {c['recall_at_10']:.4f} |" for c in checks]
    lines.append("")
    save("index_growth", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

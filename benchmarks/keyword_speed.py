"""Keyword search latency: vecguard's BM25 from postings vs rank-bm25 (the reference) vs the bm25s package.

    .venv/bin/python benchmarks/keyword_speed.py                 # 10k and 100k chunks, 200 queries
    .venv/bin/python benchmarks/keyword_speed.py --sizes 10000

Chunks: real CWE v4.14 text (``corpora.cwe_passages``: observed examples and the
weaknesses' sentences), three passages per chunk drawn with a fixed seed, so a
chunk holds ~60 words and CVE ids, like a 256-token chunk of the demo corpus.
Queries: 200, half CVE ids, half six words of a passage. Each implementation
answers the same queries (k=100, vecguard's fusion depth) in alternating
blocks, 3 rounds; medians and p99 per query. Incremental writes: adding 100
chunks to the full index, then the first query after it (which pays any lazy
rebuild). bm25s is measured only when installed (``pip install bm25s``); it has
no incremental add, so its "add" is a rebuild. Results:
benchmarks/results/keyword_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import machine, percentile, save  # noqa: E402
from corpora import cwe_passages  # noqa: E402

K = 100


def chunks(n: int, seed: int = 7) -> list[tuple[str, str]]:
    passages = [p["text"] for p in cwe_passages()]
    rng = random.Random(seed)
    return [(f"chunk-{i}", " ".join(rng.sample(passages, 3))) for i in range(n)]


def queries(corpus: list[tuple[str, str]], n: int = 200, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    cves = sorted({w for _, text in corpus[:5000] for w in text.split() if w.startswith("CVE-") and w.endswith(":")})
    words = [text.split() for _, text in rng.sample(corpus, n)]
    return [c.rstrip(":") for c in rng.sample(cves, n // 2)] + [" ".join(w[5:11]) for w in words[: n - n // 2]]


class Bm25sPackage:
    """The bm25s package fed vecguard's tokens, so only the scoring differs."""

    def __init__(self, tokenize) -> None:
        import bm25s

        self.bm25s, self.tokenize = bm25s, tokenize

    def add(self, ids: list[str], texts: list[str]) -> None:
        self.ids = list(getattr(self, "ids", [])) + ids
        self.texts = list(getattr(self, "texts", [])) + texts
        self.model = self.bm25s.BM25(method="robertson", k1=1.5, b=0.75)
        self.model.index([self.tokenize(t) or [""] for t in self.texts], show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        import numpy as np

        scores = self.model.get_scores(self.tokenize(query))
        top = np.argsort(-scores)[:k]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]


def measure(size: int, query_set: list[str], rounds: int) -> dict:
    from vecguard.plugins.bm25 import BM25Index

    corpus = chunks(size + 100)
    base, extra = corpus[:size], corpus[size:]
    ids, texts = [c[0] for c in base], [c[1] for c in base]
    indexes = {"postings": BM25Index(), "rank-bm25": BM25Index(implementation="rank-bm25")}
    try:
        indexes["bm25s package"] = Bm25sPackage(indexes["postings"].tokenize)
    except ImportError:
        print("bm25s is not installed: measuring vecguard's two implementations only", flush=True)
    out: dict = {}
    for name, index in indexes.items():
        started = time.perf_counter()
        index.add(ids, texts)
        out[name] = {"build_s": time.perf_counter() - started}
        index.search(query_set[0], K)  # pays any lazy build
    latencies: dict[str, list[float]] = {name: [] for name in indexes}
    for _ in range(rounds):
        for name, index in indexes.items():
            for query in query_set:
                started = time.perf_counter()
                index.search(query, K)
                latencies[name].append(time.perf_counter() - started)
    reference = indexes["rank-bm25"]
    for name, index in indexes.items():
        same = sum(
            [key for key, _ in index.search(q, 10)] == [key for key, _ in reference.search(q, 10)] for q in query_set
        )
        started = time.perf_counter()
        index.add([c[0] for c in extra], [c[1] for c in extra])
        added = time.perf_counter() - started
        started = time.perf_counter()
        index.search(query_set[1], K)
        first = time.perf_counter() - started
        out[name].update(
            {
                "p50_ms": statistics.median(latencies[name]) * 1000,
                "p99_ms": percentile(latencies[name], 0.99) * 1000,
                "add_100_ms": added * 1000,
                "first_query_after_add_ms": first * 1000,
                "top10_same_as_rank_bm25": same,
                "queries": len(query_set),
            }
        )
        print(
            f"{size:>7} {name:<14} p50 {out[name]['p50_ms']:8.2f} ms  p99 {out[name]['p99_ms']:8.2f} ms  "
            f"add 100 {added * 1000:8.1f} ms  first query after {first * 1000:8.1f} ms  top 10 as rank-bm25 {same}/{len(query_set)}",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for size in args.sizes:
        query_set = queries(chunks(size))
        results[str(size)] = measure(size, query_set, args.rounds)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "settings": {"sizes": args.sizes, "rounds": args.rounds, "k": K, "queries": 200},
        "results": results,
    }
    save("keyword_speed", report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Keyword search: BM25 from postings vs rank-bm25 vs bm25s ({report['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}; load average at the end "
        f"{report['load_average'][0]:.2f}. Chunks of three real CWE passages (~60 words); 200 queries, half CVE ids, "
        f"half six words of a chunk; k={report['settings']['k']}; {report['settings']['rounds']} rounds in alternating "
        "blocks, medians. Command: `benchmarks/keyword_speed.py`.",
        "",
        "| chunks | implementation | p50 ms | p99 ms | build s | add 100 ms | first query after add ms | top 10 as rank-bm25 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size, rows in report["results"].items():
        for name, r in rows.items():
            lines.append(
                f"| {int(size):,} | {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['build_s']:.1f} | "
                f"{r['add_100_ms']:.1f} | {r['first_query_after_add_ms']:.1f} | {r['top10_same_as_rank_bm25']}/{r['queries']} |"
            )
    lines += [
        "",
        "bm25s is fed vecguard's tokens and scores with its own `robertson` variant, not rank-bm25's exact "
        "formula, so its top 10 differ; it has no incremental add, so its add is a rebuild. vecguard's postings "
        "give rank-bm25's scores (tests/test_keyword_and_fusion.py checks them to 1e-9 through adds, deletes and "
        "replacements).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Backend equivalence: one corpus, one encoder, four stores; same answers?

    .venv/bin/python benchmarks/backend_equivalence.py              # 938 CWE docs, ~6-8 min on 2 CPUs
    .venv/bin/python benchmarks/backend_equivalence.py --limit 100  # quick run on the first 100 docs

Indexes MITRE CWE (``benchmarks/corpora.py: cwe_documents()``) with the bundled
encoder, default chunking (256/32), BM25 and RRF, through ``vecguard.open(dict)``
into ``memory`` (exact numpy, the reference), ``faiss`` (index = "Flat"),
``chroma`` (embedded, HNSW: approximate) and ``qdrant`` (local mode: brute force).
Each backend runs ``engine.add`` on the whole corpus for real (ingest docs/s),
is closed (on-disk size of its folder) and reopened through the version guard;
a second ``add`` into a fresh collection, with the encoder replaced by a lookup
of the vectors already made, shows what vecguard + the store cost without encoding.

Queries, fixed seed: half the first sentence of a sample of weaknesses'
descriptions, half CVE ids sampled from the corpus's observed examples.
Equivalence: hybrid ``engine.search(q, k=10)`` on every backend against memory:
mean overlap@10, share of queries with the identical top-10 order, max |delta|
of the fused score and of the dense cosine over documents both top-10s hold.
The store alone: ``engine.store.search(vector, 100)`` (the fusion depth) with
query vectors encoded once: chunk recall@100 against memory, and its latency.
Latency: median of single calls over the query set x 3 rounds, backends
interleaved per query (order rotated). ``--limit`` runs save under a
``-limitN`` suffix. Everything lives in a temp dir
(VECGUARD_CACHE_DIR too); results go to benchmarks/results/backend_equivalence.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from corpora import cwe_documents, cwe_weaknesses  # noqa: E402
from ingest_speed import machine, timed  # noqa: E402

RESULTS = HERE / "results"
STORES = {
    "memory": {"plugin": "memory"},
    "faiss": {"plugin": "faiss", "index": "Flat"},
    "chroma": {"plugin": "chroma"},
    "qdrant": {"plugin": "qdrant", "local_mode": True},  # what results/backend_equivalence.md measured
}
K, DEPTH, ROUNDS = 10, 100, 3


def config(store: dict, path: Path) -> dict:
    return {"encoder": {"plugin": "sentence-transformers", "model": "bundled"}, "store": {**store, "path": str(path)}}


def make_queries(weaknesses: list[dict], n: int, seed: int) -> list[tuple[str, str]]:
    """n first sentences of descriptions and n CVE ids, both sampled with ``seed``: [(kind, query)]."""
    rng = random.Random(seed)
    described = [w for w in weaknesses if w["description"]]
    natural = [
        re.split(r"(?<=[.!?])\s", w["description"], maxsplit=1)[0]
        for w in rng.sample(described, min(n, len(described)))
    ]
    cves = sorted({cve for w in weaknesses for cve, _ in w["observed"] if re.fullmatch(r"CVE-\d{4}-\d+", cve)})
    return [("natural", q) for q in natural] + [("cve", q) for q in rng.sample(cves, min(n, len(cves)))]


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def ingest(name: str, path: Path, docs: list[dict]) -> tuple[object, dict]:
    """Fresh collection: open, add (timed), close, measure the folder, reopen through the guard."""
    import vecguard

    open_s, engine = timed(vecguard.open, config(STORES[name], path))
    add_s, written = timed(engine.add, docs)
    assert written == len(docs), (name, written)
    chunks = engine.count_chunks()
    close_s, _ = timed(engine.close)
    size = folder_mb(path)
    reopen_s, engine = timed(vecguard.open, config(STORES[name], path))
    assert engine.count() == len(docs) and engine.count_chunks() == chunks, (
        name,
        engine.count(),
        engine.count_chunks(),
    )
    print(
        f"{name}: add {add_s:.1f} s ({len(docs) / add_s:.1f} docs/s), close {close_s:.2f} s, {size:.1f} MB, {chunks} chunks",
        flush=True,
    )
    return engine, {
        "open_s": open_s,
        "add_s": add_s,
        "close_s": close_s,
        "reopen_s": reopen_s,
        "docs_per_s": len(docs) / add_s,
        "chunks": chunks,
        "disk_mb": size,
    }


def add_without_encoder(name: str, path: Path, docs: list[dict], vectors: dict) -> float:
    """Seconds of ``engine.add`` into a fresh collection with encoding replaced by a lookup of the vectors already made."""
    import numpy as np
    import vecguard

    with vecguard.open(config(STORES[name], path)) as engine:
        engine.encoder.encode_documents = lambda texts: np.stack([vectors[t] for t in texts])
        seconds, _ = timed(engine.add, docs)
    return seconds


def compare(ref_hits: list, hits: list, ref_store: list, store: list) -> dict:
    """One query on one backend against memory."""
    ref, got = [h.id for h in ref_hits], [h.id for h in hits]
    mine = {h.id: h for h in hits}
    common = [h for h in ref_hits if h.id in mine]
    dense = [
        abs(h.signals["dense"].score - mine[h.id].signals["dense"].score)
        for h in common
        if "dense" in h.signals and "dense" in mine[h.id].signals
    ]
    store_scores = dict(store)
    return {
        "overlap": len(set(ref) & set(got)) / max(len(ref), 1),
        "identical": ref == got,
        "score_diff": max((abs(h.score - mine[h.id].score) for h in common), default=0.0),
        "dense_diff": max(dense, default=0.0),
        "store_recall": len({i for i, _ in ref_store} & set(store_scores)) / max(len(ref_store), 1),
        "store_missed_ranks": [rank for rank, (i, _) in enumerate(ref_store, start=1) if i not in store_scores],
        "store_cos_diff": max((abs(s - store_scores[i]) for i, s in ref_store if i in store_scores), default=0.0),
    }


def markdown(report: dict) -> str:
    m, c, s = report["machine"], report["corpus"], report["settings"]
    lib = m["libraries"]
    lines = [
        f"# Backend equivalence: memory vs faiss / chroma / qdrant ({report['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}; torch {lib['torch']}, faiss-cpu {lib['faiss-cpu']}, "
        f"chromadb {lib['chromadb']}, qdrant-client {lib['qdrant-client']}, sentence-transformers {lib['sentence-transformers']}. "
        f"Load average at start / end: {report['load_average']['start'][0]:.2f} / {report['load_average']['end'][0]:.2f} "
        f"(other work shared the CPUs: timings are indicative).",
        f"Corpus: {c['name']}, {c['documents']} documents, {c['chunks']} chunks. Settings: bundled all-MiniLM-L6-v2, chunking 256/32, "
        f"BM25, RRF k=60 depth {DEPTH}; {s['queries']} queries ({s['natural']} natural-language first sentences, {s['cve']} CVE ids, seed {s['seed']}), "
        f"hybrid k={K}; store.search k={DEPTH} on vectors encoded once; {ROUNDS} rounds, backends interleaved per query. "
        f"Command: `{s['command']}`.",
        "",
        "| backend | ingest docs/s (add) | add s | close s | on disk MB | overlap@10 | identical top-10 | max abs d fused score "
        "| max abs d dense cos | store recall@100 | add s, encoding stubbed | hybrid search ms (median) | store.search ms (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["backends"].items():
        lines.append(
            f"| {name} | {r['docs_per_s']:.1f} | {r['add_s']:.1f} | {r['close_s']:.2f} | {r['disk_mb']:.1f} | {r['overlap_at_10']:.3f} "
            f"| {r['identical_top10']:.3f} | {r['max_score_diff']:.2e} | {r['max_dense_diff']:.2e} | {r['store_recall_at_100']:.4f} | {r['add_s_encoder_stubbed']:.2f} "
            f"| {r['search_ms_median']:.1f} | {r['store_search_ms_median']:.2f} |"
        )
    lines += [
        "",
        "overlap@10, identical top-10, score and recall columns: hybrid results compared with the memory backend "
        "(memory against itself is the trivial 1.000 / 0). Per query kind (overlap@10 / identical):",
        "",
    ]
    for name, r in report["backends"].items():
        kinds = ", ".join(
            f"{kind} {v['overlap_at_10']:.3f} / {v['identical_top10']:.3f}" for kind, v in r["by_kind"].items()
        )
        missed = r["store_missed_memory_ranks"]
        missed = (
            f"; store.search missed {len(missed)} of memory's top-{DEPTH} chunks, at memory ranks {missed}"
            if missed
            else ""
        )
        lines.append(
            f"- {name}: {kinds}; results stable across the {ROUNDS} rounds: {r['stable_across_rounds']:.3f}{missed}"
        )
    differing = report["differing"]
    if differing:
        lines += ["", "Queries whose top-10 differs from memory's (first 10):", ""]
        lines += [
            f"- {d['backend']} `{d['query'][:70]}`: overlap {d['overlap']:.1f}; memory {d['memory'][:5]}... vs {d['got'][:5]}..."
            for d in differing[:10]
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="use only the first N documents")
    parser.add_argument("--queries", type=int, default=25, help="queries of each kind (natural, CVE id)")
    parser.add_argument("--seed", type=int, default=20241125)
    args = parser.parse_args()
    load_at_start = os.getloadavg()

    weaknesses = list(cwe_weaknesses())[: args.limit]
    docs = list(cwe_documents())[: args.limit]
    queries = make_queries(weaknesses, args.queries, args.seed)
    names = list(STORES)

    with tempfile.TemporaryDirectory(prefix="vecguard-equivalence-") as tmp:
        work = Path(tmp)
        os.environ["VECGUARD_CACHE_DIR"] = str(work / "cache")
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        engines, stats = {}, {}
        for name in names:
            engines[name], stats[name] = ingest(name, work / name, docs)
        vectors = engines["memory"].encoder.encode_queries([q for _, q in queries])

        hits = {name: [None] * len(queries) for name in names}
        store_hits = {name: [None] * len(queries) for name in names}
        stable = {name: 0 for name in names}
        ms = {name: {"search": [], "store": []} for name in names}
        for round_ in range(ROUNDS):
            for qi, (_, query) in enumerate(queries):
                shift = (qi + round_) % len(names)
                for name in names[shift:] + names[:shift]:
                    engine = engines[name]
                    search_s, found = timed(lambda e=engine, q=query: e.search(q, k=K, mode="hybrid"))
                    store_s, dense = timed(lambda e=engine, v=vectors[qi]: e.store.search(v, DEPTH))
                    ms[name]["search"].append(search_s * 1e3)
                    ms[name]["store"].append(store_s * 1e3)
                    if round_ == 0:
                        hits[name][qi], store_hits[name][qi] = found, dense
                    else:
                        stable[name] += [h.id for h in found] == [h.id for h in hits[name][qi]] and dense == store_hits[
                            name
                        ][qi]
            print(f"round {round_ + 1}/{ROUNDS} done", flush=True)
        chunk_vectors = {p["text"]: v for _, vs, ps in engines["memory"].store.scan() for p, v in zip(ps, vs)}
        for engine in engines.values():
            engine.close()
        for name in names:
            stats[name]["add_s_encoder_stubbed"] = add_without_encoder(
                name, work / f"{name}-stubbed", docs, chunk_vectors
            )

    backends, differing = {}, []
    for name in names:
        rows = [
            compare(hits["memory"][qi], hits[name][qi], store_hits["memory"][qi], store_hits[name][qi])
            for qi in range(len(queries))
        ]
        by_kind = {}
        for kind in ("natural", "cve"):
            picked = [r for r, (k, _) in zip(rows, queries) if k == kind]
            by_kind[kind] = {
                "queries": len(picked),
                "overlap_at_10": statistics.fmean(r["overlap"] for r in picked),
                "identical_top10": statistics.fmean(r["identical"] for r in picked),
            }
        differing += [
            {
                "backend": name,
                "kind": kind,
                "query": q,
                "overlap": r["overlap"],
                "memory": [h.id for h in hits["memory"][qi]],
                "got": [h.id for h in hits[name][qi]],
            }
            for qi, (r, (kind, q)) in enumerate(zip(rows, queries))
            if not r["identical"]
        ]
        backends[name] = {
            **stats[name],
            "overlap_at_10": statistics.fmean(r["overlap"] for r in rows),
            "identical_top10": statistics.fmean(r["identical"] for r in rows),
            "max_score_diff": max(r["score_diff"] for r in rows),
            "max_dense_diff": max(r["dense_diff"] for r in rows),
            "store_recall_at_100": statistics.fmean(r["store_recall"] for r in rows),
            "max_store_cos_diff": max(r["store_cos_diff"] for r in rows),
            "store_missed_memory_ranks": sorted(rank for r in rows for rank in r["store_missed_ranks"]),
            "by_kind": by_kind,
            "stable_across_rounds": stable[name] / (len(queries) * (ROUNDS - 1)),
            "search_ms_median": statistics.median(ms[name]["search"]),
            "store_search_ms_median": statistics.median(ms[name]["store"]),
            "search_ms_p90": statistics.quantiles(ms[name]["search"], n=10)[-1],
            "store_search_ms_p90": statistics.quantiles(ms[name]["store"], n=10)[-1],
        }

    info = machine()
    for lib in ("chromadb", "qdrant-client"):
        info["libraries"][lib] = importlib.metadata.version(lib)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "corpus": {
            "name": "MITRE CWE v4.14 (cwe2), benchmarks/corpora.py cwe_documents()"
            + (f", first {args.limit}" if args.limit else ""),
            "documents": len(docs),
            "chunks": stats["memory"]["chunks"],
        },
        "settings": {
            "command": " ".join(sys.argv),
            "limit": args.limit,
            "seed": args.seed,
            "queries": len(queries),
            "natural": sum(k == "natural" for k, _ in queries),
            "cve": sum(k == "cve" for k, _ in queries),
            "k": K,
            "store_k": DEPTH,
            "rounds": ROUNDS,
            "stores": STORES,
            "engine": "encoder sentence-transformers bundled, chunking 256/32, keyword bm25, fusion rrf k=60 depth 100 (defaults)",
        },
        "queries": [{"kind": k, "query": q} for k, q in queries],
        "backends": backends,
        "differing": differing,
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.limit is None else f"-limit{args.limit}"
    (RESULTS / f"backend_equivalence{suffix}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = markdown(report)
    (RESULTS / f"backend_equivalence{suffix}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

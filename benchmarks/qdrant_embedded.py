"""Embedded Qdrant beside FAISS ``auto``, Chroma embedded and qdrant-client local mode, through vecguard's store.

    .venv/bin/python benchmarks/qdrant_embedded.py --sizes 100000                  # all four stores at 100k
    .venv/bin/python benchmarks/qdrant_embedded.py --sizes 1000000 --stores faiss qdrant-edge chroma

Issue 18, item 4. Per store and size: upsert points/s, query p50/p99, filtered
query p50 at 1%, 10% and 50% selectivity, recall@10 against exact search, peak
memory, disk, and reopen time; the issue's goals checked for embedded Qdrant.

Vectors: 384-d unit vectors from a clustered synthetic mixture (random uniform
vectors make HNSW/IVF recall meaningless, and 1M real embeddings cannot be
encoded on 2 CPUs). 4,000 Gaussian centres share a common direction (real
sentence embeddings sit in a cone: two unrelated texts score ~0.2), cluster
sizes are uneven (log-normal weights), and each point is its centre plus
isotropic noise whose spread is drawn per cluster (cosine to its centre
~0.65-0.85). Queries are drawn from the same mixture with another seed and are
never stored (held out), so recall@10 is what a real query gets: 5,000 of
them, since 500 measure a recall near 0.95 only to about +-0.014 (one set of
500 read 0.949 where the 5,000 read 0.964: results/qdrant_embedded.md and
docs/dependencies.md). Exact ground truth: numpy brute force (chunked matmul)
in the parent; a hit counts when its exact score reaches the 10th exact score
(ties count).

Points: ids ``doc-NNNNNNN#0`` with engine-shaped payloads like
store_throughput.py (doc_id, chunk, offsets, a ~300-character text, three
metadata fields) plus ``metadata.sel = i % 100``: the filters ``sel < 1``,
``sel < 10``, ``sel < 50`` let 1%, 10% and 50% of the points through.

Each store runs in two fresh processes into a fresh folder under /tmp: the
load (upserts of 1,000 through the VectorStore protocol, only the store's
calls timed, then ``close``; FAISS
``auto`` builds and saves its index at close, which counts; embedded Qdrant's
HNSW build, ``optimize()``, counts and is reported apart too), then the
reopen and the queries (open + first search timed as the reopen; then the
unfiltered queries; per filter one first search outside the timing, then the
filtered queries). Each phase's peak RSS is its own process's high-water mark
(``VmHWM``, reset before the phase). Disk is the folder's allocated bytes after
the load. Stores are built from ``[store]`` options through the registry like
store_throughput.py: ``faiss`` (index "auto"), ``chroma`` (PersistentClient
path), ``qdrant-local`` (qdrant-client local mode) and ``qdrant-edge``
(embedded Qdrant: the ``qdrant`` plugin with a ``path`` where vecguard has
backends/qdrant/edge.py, otherwise measured directly through ``qdrant_edge``
with the same layout: ``--edge direct``). Results are merged by (store, size)
into benchmarks/results/qdrant_embedded.{json,md}; the plot is
results/qdrant_embedded.png (plots.py).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine, percentile, save  # noqa: E402

NAME = "qdrant_embedded"
DIMENSION = 384
CENTRES = 4_000
BATCH = 1_000
K = 10
SEED = 18
SELECTIVITY = {"1%": 1, "10%": 10, "50%": 50}  # metadata.sel = i % 100; the filter is sel < limit
STORES = ("faiss", "chroma", "qdrant-local", "qdrant-edge", "qdrant-edge-direct")
EDGE_VECTOR = "dense"
EDGE_HNSW_EF = 128
EDGE_ID_NAMESPACE = uuid.UUID("6f1c9a52-7d0b-5c8e-9a3e-2b1f4d6c8e10")  # vecguard's Qdrant point ids (UUIDv5)
QDRANT_LOCAL_1M = "store_throughput-qdrant-1m.md"
SWEEP_EF = (32, 48, 64, 96, 128, 192, 256)  # embedded Qdrant's hnsw_ef values swept after its timed queries
FILTERED_SWEEP_EF = (128, 192, 256)  # and for each filter, where its floor for filtered searches is chosen
CHROMA_1M = "store_throughput-chroma-1m.md"


# ------------------------------------------------------------------ the data


def mixture(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The mixture's centres, cumulative weights and per-cluster spreads, the same for points and queries."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=DIMENSION)
    common /= np.linalg.norm(common)
    centres = rng.normal(size=(CENTRES, DIMENSION)) / np.sqrt(DIMENSION) + 0.45 * common
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(sigma=1.0, size=CENTRES)
    spread = rng.uniform(0.6, 1.15, size=CENTRES)
    return centres.astype(np.float32), np.cumsum(weights / weights.sum()), spread.astype(np.float32), common


def draw(n: int, seed: int, parts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    centres, cumulative, spread, _ = parts
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIMENSION), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        c = np.minimum(np.searchsorted(cumulative, rng.uniform(size=m)), CENTRES - 1)
        noise = rng.normal(size=(m, DIMENSION)).astype(np.float32) / np.float32(np.sqrt(DIMENSION))
        mixed = centres[c] + spread[c, None] * noise
        out[start : start + m] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    return out


def key(i: int) -> str:
    return f"doc-{i:07d}#0"


def row_of(key: str) -> int:
    return int(key[4:11])


def payloads(start: int, stop: int) -> list[dict]:
    """store_throughput.py's engine-shaped payloads, plus metadata.sel for the selectivity filters."""
    from migrate_speed import WORDS

    words = random.Random(SEED * 1_000_003 + start)
    out = []
    for i in range(start, stop):
        text = " ".join(words.choice(WORDS) for _ in range(40)) + f" REF-{i:07d}"
        out.append(
            {
                "doc_id": f"doc-{i:07d}",
                "chunk": 0,
                "chunks": 1,
                "start": 0,
                "end": len(text),
                "text": text,
                "metadata": {
                    "year": 2000 + i % 25,
                    "topic": WORDS[i % len(WORDS)],
                    "public": i % 2 == 0,
                    "sel": i % 100,
                },
            }
        )
    return out


def read_vectors(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of the raw float32 file, read (not mapped) so the file never counts in this process's RSS."""
    with open(path, "rb") as f:
        f.seek(start * DIMENSION * 4)
        return np.fromfile(f, dtype=np.float32, count=(stop - start) * DIMENSION).reshape(-1, DIMENSION)


def exact_top(vectors: np.ndarray, queries: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The 10th best exact score per query among the allowed rows, by matmul in blocks of 1,000 queries x 100k
    rows (400 MB of scores at a time)."""
    tenth = np.empty(len(queries), dtype=np.float32)
    for first in range(0, len(queries), 1_000):
        block = queries[first : first + 1_000]
        best = np.full((len(block), K), -np.inf, dtype=np.float32)
        for start in range(0, len(vectors), 100_000):
            scores = block @ vectors[start : start + 100_000].T
            if mask is not None:
                scores[:, ~mask[start : start + 100_000]] = -np.inf
            merged = np.concatenate([best, scores], axis=1)
            best = -np.partition(-merged, K - 1, axis=1)[:, :K]
        tenth[first : first + len(block)] = np.sort(best, axis=1)[:, ::-1][:, K - 1]
    return tenth


def recall(vectors: np.ndarray, queries: np.ndarray, found: list[list[int]], tenth: np.ndarray, mask) -> dict:
    """Mean recall@10 over the queries, and the half-width of its 95% interval (2 standard errors): 500 queries
    measure a mean near 0.95 to about +-0.014, 5,000 to about +-0.004."""
    per_query = []
    for q, hits, bar in zip(queries, found, tenth):
        hits = [h for h in hits if mask is None or mask[h]]
        good = np.count_nonzero(vectors[hits] @ q >= bar - 1e-5) if hits else 0
        per_query.append(good / K)
    spread = 2 * float(np.std(per_query, ddof=1)) / np.sqrt(len(per_query)) if len(per_query) > 1 else None
    return {"recall_at_10": float(np.mean(per_query)), "recall_ci95": spread, "queries": len(per_query)}


def scored(measured: dict, vectors: np.ndarray, queries: np.ndarray, tenth: np.ndarray, mask) -> dict:
    """A child's measurement with its ``found`` lists (hits of the first queries) replaced by their recall."""
    found = measured["found"]
    return {
        **{k: v for k, v in measured.items() if k != "found"},
        **recall(vectors, queries[: len(found)], found, tenth, mask),
    }


# ------------------------------------------------------------------ the stores


def edge_on_main() -> bool:
    """Whether this vecguard has the embedded Qdrant store (backends/qdrant/edge.py)."""
    try:
        return importlib.util.find_spec("vecguard.backends.qdrant.edge") is not None
    except ModuleNotFoundError:
        return False


class EdgeDirect:
    """Embedded Qdrant measured directly through ``qdrant_edge`` with vecguard's Qdrant layout: a named dense vector
    with Distance.Dot, UUIDv5 point ids, the payload with ``vecguard_id``, an integer index on ``metadata.sel``,
    HNSW built by ``optimize()`` after the upserts, searched at hnsw_ef 128. Only what this benchmark calls."""

    def __init__(self, path: Path) -> None:
        import qdrant_edge as qe

        self._qe = qe
        if path.exists() and any(path.iterdir()):
            self._shard = qe.EdgeShard.load(str(path))
        else:
            config = qe.EdgeConfig(vectors={EDGE_VECTOR: qe.EdgeVectorParams(size=DIMENSION, distance=qe.Distance.Dot)})
            self._shard = qe.EdgeShard.create(str(path), config)
            self._shard.update(qe.UpdateOperation.create_field_index("metadata.sel", qe.PayloadSchemaType.Integer))

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        qe = self._qe
        points = [
            qe.Point(
                id=str(uuid.uuid5(EDGE_ID_NAMESPACE, k)),
                vector={EDGE_VECTOR: v.tolist()},
                payload={**p, "vecguard_id": k},
            )
            for k, v, p in zip(ids, vectors, payloads)
        ]
        self._shard.update(qe.UpdateOperation.upsert_points(points))

    def optimize(self) -> None:
        self._shard.optimize()
        self._shard.flush()

    def search(self, vector: np.ndarray, k: int, filter: dict | None = None) -> list[tuple[str, float]]:
        qe = self._qe
        flt = None
        if filter:
            ((field, condition),) = filter.items()
            ((op, value),) = condition.items()
            assert op == "$lt", filter
            flt = qe.Filter(must=[qe.FieldCondition(key=f"metadata.{field}", range=qe.RangeFloat(lt=value))])
        hits = self._shard.query(
            qe.QueryRequest(
                limit=k,
                query=qe.Query.Nearest(vector.tolist(), using=EDGE_VECTOR),
                filter=flt,
                params=qe.SearchParams(hnsw_ef=EDGE_HNSW_EF),
                with_payload=["vecguard_id"],
            )
        )
        return [(hit.payload["vecguard_id"], float(hit.score)) for hit in hits]

    def close(self) -> None:
        self._shard.flush()
        self._shard.close()


def open_store(store: str, folder: Path, edge: str):
    path = folder / store
    if store == "qdrant-edge-direct" or (store == "qdrant-edge" and edge == "direct"):
        return EdgeDirect(path)
    from vecguard.registry import Registry

    plugin, options = {
        "faiss": ("faiss", {"path": str(path), "index": "auto"}),
        "chroma": ("chroma", {"path": str(path)}),
        "qdrant-local": ("qdrant", {"path": str(path), **({"local_mode": True} if edge == "plugin" else {})}),
        "qdrant-edge": ("qdrant", {"path": str(path), "payload_indexes": {"sel": "integer"}}),
    }[store]
    return Registry.discover().build("store", plugin, options, folder)


def _status_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


# ------------------------------------------------------------------ the children


def load(store: str, n: int, folder: Path, edge: str) -> dict:
    vectors_file = folder / "vectors.f32"
    open_store(store, folder / "warmup", edge).close()  # imports and first-use costs outside the timing
    shutil.rmtree(folder / "warmup")
    _reset_peak()
    rss_before = _status_kib("VmRSS")
    began = time.perf_counter()
    s = open_store(store, folder, edge)
    upsert_s = time.perf_counter() - began
    for start in range(0, n, BATCH):  # only the store's calls are timed, not making the batch
        stop = min(n, start + BATCH)
        batch = [key(i) for i in range(start, stop)], read_vectors(vectors_file, start, stop), payloads(start, stop)
        began = time.perf_counter()
        s.upsert(*batch)
        upsert_s += time.perf_counter() - began
        if stop % 100_000 == 0:
            print(f"{store}: {stop:,} upserted, {upsert_s:.1f} s", file=sys.stderr, flush=True)
    optimize_s = optimize_report = None
    if store.startswith("qdrant-edge"):
        began = time.perf_counter()
        optimize_report = s.optimize()
        optimize_s = time.perf_counter() - began
        print(f"{store}: optimize {optimize_s:.1f} s: {optimize_report}", file=sys.stderr, flush=True)
    began = time.perf_counter()
    s.close()
    close_s = time.perf_counter() - began
    total_s = upsert_s + (optimize_s or 0) + close_s
    return {
        "upsert_s": upsert_s,
        "optimize_s": optimize_s,
        "optimize_report": optimize_report,
        "close_s": close_s,
        "load_s": total_s,
        "points_per_s": n / total_s,
        "upsert_only_points_per_s": n / upsert_s,
        "load_peak_rss_mib": _status_kib("VmHWM") / 1024,
        "rss_before_load_mib": rss_before / 1024,
    }


def query(store: str, folder: Path, edge: str, queries: int, filtered: int) -> dict:
    qs = np.load(folder / "queries.npy")[:queries]
    if store != "qdrant-edge-direct" and (store != "qdrant-edge" or edge == "plugin"):
        from vecguard.registry import Registry

        Registry.discover()  # the entry points and plugin modules imported outside the timing
    import_probe = {"faiss": "faiss", "chroma": "chromadb", "qdrant-local": "qdrant_client"}.get(store, "qdrant_edge")
    __import__(import_probe)
    _reset_peak()
    rss_before = _status_kib("VmRSS")
    started = time.perf_counter()
    s = open_store(store, folder, edge)
    open_s = time.perf_counter() - started
    first = s.search(qs[0], K)
    reopen_s = time.perf_counter() - started
    assert len(first) == K, first
    served = serve(s, folder)
    times, found = [], []
    for q in qs:
        began = time.perf_counter()
        hits = s.search(q, K)
        times.append(time.perf_counter() - began)
        found.append([row_of(k) for k, _ in hits])
    out = {
        **served,
        "open_s": open_s,
        "reopen_s": reopen_s,
        "first_search_s": reopen_s - open_s,
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": percentile(times, 0.99) * 1000,
        "found": found,
        "filtered": {},
    }
    for label, limit in SELECTIVITY.items():
        where = {"sel": {"$lt": limit}}
        began = time.perf_counter()
        s.search(qs[0], K, where)
        first_ms = (time.perf_counter() - began) * 1000
        times, hits_of = [], []
        for q in qs[:filtered]:
            began = time.perf_counter()
            hits = s.search(q, K, where)
            times.append(time.perf_counter() - began)
            hits_of.append([row_of(k) for k, _ in hits])
        out["filtered"][label] = {
            "first_ms": first_ms,
            "p50_ms": statistics.median(times) * 1000,
            "p99_ms": percentile(times, 0.99) * 1000,
            "found": hits_of,
        }
    if store == "qdrant-edge" and edge == "plugin":
        out["ef_sweep"] = ef_sweep(s, qs)
        out["filtered_sweep"] = filtered_sweep(s, qs[:filtered])
        from vecguard.backends.qdrant import edge as edge_store

        out["filtered_floor"] = getattr(edge_store, "FILTERED_EF", edge_store.DEFAULT_EF)
    out["query_peak_rss_mib"] = _status_kib("VmHWM") / 1024
    out["rss_before_open_mib"] = rss_before / 1024
    s.close()
    return out


def ef_sweep(s, qs: np.ndarray, efs: tuple[int, ...] = SWEEP_EF, filter: dict | None = None) -> list[dict]:
    """The held-out queries again at each of ``efs``, in this warm process, through the store's own shard with the
    store's request (the payload's id only), filter and search parameters (with int8 codes, their rescoring), in two
    rounds (rising, then falling; medians over both), so that embedded Qdrant's p50 can be read at FAISS's recall.
    Reaches the store's private ``_shard``, ``_filter`` and ``_params``."""
    q, flt = s._q, s._filter(filter)
    times: dict[int, list[float]] = {ef: [] for ef in efs}
    found: dict[int, list[list[int]]] = {}
    for order in (efs, efs[::-1]):
        for ef in order:
            params, hits_of = s._params(K, ef=ef), []
            for vector in qs:
                request = q.QueryRequest(
                    limit=K,
                    query=q.Query.Nearest(vector.tolist()),
                    filter=flt,
                    with_payload=["vecguard_id"],
                    params=params,
                )
                began = time.perf_counter()
                hits = s._shard.query(request)
                times[ef].append(time.perf_counter() - began)
                hits_of.append([row_of(hit.payload["vecguard_id"]) for hit in hits])
            found[ef] = hits_of
    return [{"hnsw_ef": ef, "p50_ms": statistics.median(times[ef]) * 1000, "found": found[ef]} for ef in efs]


def filtered_sweep(s, qs: np.ndarray) -> dict[str, list[dict]]:
    """The filtered queries at each of FILTERED_SWEEP_EF per filter, as ``ef_sweep``: where the store's floor for
    filtered searches comes from."""
    return {label: ef_sweep(s, qs, FILTERED_SWEEP_EF, {"sel": {"$lt": limit}}) for label, limit in SELECTIVITY.items()}


def serve(s, folder: Path) -> dict:
    """Hand a store that tunes on what it serves (``TunesOnQueries``) the served-query vectors, as an engine hands it
    every query it answers, and wait for its measure and retune: the held-out queries are then timed at the setting
    a collection in service settles on. Other stores are left as they are."""
    from vecguard.protocols import TunesOnQueries

    if not isinstance(s, TunesOnQueries) or not (folder / "served.npy").exists():
        return {}
    began = time.perf_counter()
    for vector in np.load(folder / "served.npy"):
        s.record_query(vector)
    s.wait_for_index()
    measured = s.index_report() or {}
    knob = {name: measured[name] for name in ("nprobe", "ef_search", "hnsw_ef") if name in measured}
    return {"served_tune_s": time.perf_counter() - began, "tuned": {**knob, "served": s.served_recall()}}


def child(args: list[str]) -> dict:
    phase, store, folder, edge = args[0], args[1], Path(args[2]), args[3]
    if phase == "load":
        return load(store, int(args[4]), folder, edge)
    return query(store, folder, edge, int(args[4]), int(args[5]))


# ------------------------------------------------------------------ the parent


def disk_bytes(path: Path) -> tuple[int, int]:
    """(allocated, apparent) bytes of every file under path."""
    allocated = apparent = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def run_child(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True)
    if done.returncode:  # its stderr (progress, the traceback) went to ours
        raise RuntimeError(f"{' '.join(args[:2])} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_size(n: int, stores: list[str], args, edge: str, report: dict) -> None:
    parts = mixture(SEED)
    vectors = draw(n, SEED + 1, parts)
    queries = draw(args.queries, SEED + 2, parts)
    served = draw(args.served, SEED + 3, parts)
    sel = np.arange(n) % 100
    masks = {label: sel < limit for label, limit in SELECTIVITY.items()}
    started = time.perf_counter()
    tenth = exact_top(vectors, queries, None)
    tenth_filtered = {label: exact_top(vectors, queries[: args.filtered], m) for label, m in masks.items()}
    print(f"{n:,}: exact ground truth in {time.perf_counter() - started:.1f} s", flush=True)
    for store in stores:
        runs = []
        for _ in range(args.repeats):
            kept = args.keep / f"{store}-{n}" if args.keep else None
            folder = kept or Path(tempfile.mkdtemp(prefix=f"vecguard-{NAME}-{store}-{n}-", dir="/tmp"))
            try:
                loaded_file = folder / "load.json"
                if kept is None or not loaded_file.exists():
                    folder.mkdir(parents=True, exist_ok=True)
                    shutil.rmtree(folder / store, ignore_errors=True)  # a load that did not finish
                    vectors.tofile(folder / "vectors.f32")
                    loaded = run_child(["load", store, str(folder), edge, str(n)])
                    loaded["disk"] = disk_bytes(folder / store)
                    (folder / "vectors.f32").unlink()
                    loaded_file.write_text(json.dumps(loaded), encoding="utf-8")
                else:  # --keep: the store this folder holds is queried again, its load's figures reported
                    loaded = json.loads(loaded_file.read_text(encoding="utf-8"))
                    print(f"{store} {n:,}: reusing the load in {folder}", flush=True)
                allocated, apparent = loaded.pop("disk")
                (folder / "served.npy").unlink(missing_ok=True)
                if args.served:
                    np.save(folder / "served.npy", served)
                np.save(folder / "queries.npy", queries)  # a kept folder's may be an older set
                local = store == "qdrant-local"
                asked = min(args.local_queries, args.queries) if local else args.queries
                filtered = args.local_filtered if local else args.filtered
                queried = run_child(["query", store, str(folder), edge, str(asked), str(filtered)])
            finally:
                if kept is None:
                    shutil.rmtree(folder, ignore_errors=True)
            run = {**loaded, "disk_mib": allocated / 2**20, "disk_apparent_mib": apparent / 2**20}
            run.update(
                {k: v for k, v in queried.items() if k not in ("found", "filtered", "ef_sweep", "filtered_sweep")}
            )
            if "ef_sweep" in queried:
                run["ef_sweep"] = [scored(point, vectors, queries, tenth, None) for point in queried["ef_sweep"]]
            if "filtered_sweep" in queried:
                run["filtered_sweep"] = {
                    label: [scored(point, vectors, queries, tenth_filtered[label], masks[label]) for point in points]
                    for label, points in queried["filtered_sweep"].items()
                }
            run.update(recall(vectors, queries, queried["found"], tenth, None))
            run["filtered"] = {
                label: scored(f, vectors, queries, tenth_filtered[label], masks[label])
                for label, f in queried["filtered"].items()
            }
            runs.append(run)
        row = median_row(runs)
        row.update(
            {
                "store": store,
                "points": n,
                "repeats": len(runs),
                "commit": report["commit"],
                "via": "qdrant_edge directly"
                if store == "qdrant-edge-direct" or (store == "qdrant-edge" and edge == "direct")
                else "vecguard store",
                "runs": runs,
            }
        )
        report["rows"] = [r for r in report["rows"] if (r["store"], r["points"]) != (store, n)] + [row]
        report["rows"].sort(key=lambda r: (r["points"], STORES.index(r["store"])))
        report["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        print(line_of(row), flush=True)
        write(report)


def median_row(runs: list[dict]) -> dict:
    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    row = {
        k: med([r[k] for r in runs])
        for k in runs[0]
        if k not in ("filtered", "optimize_report", "tuned", "ef_sweep", "filtered_sweep")
    }
    row["optimize_report"] = runs[0].get("optimize_report")
    row["tuned"] = runs[0].get("tuned")
    row["ef_sweep"] = runs[0].get("ef_sweep")
    row["filtered_sweep"] = runs[0].get("filtered_sweep")
    row["filtered"] = {
        label: {k: med([r["filtered"][label][k] for r in runs]) for k in runs[0]["filtered"][label]}
        for label in runs[0]["filtered"]
    }
    return row


def line_of(r: dict) -> str:
    opt = f", optimize {r['optimize_s']:.1f} s" if r.get("optimize_s") is not None else ""
    filtered = ", ".join(f"{label} {f['p50_ms']:.2f} ms" for label, f in r["filtered"].items())
    return (
        f"{r['store']} {r['points']:,}: load {r['points_per_s']:.0f} points/s ({r['load_s']:.1f} s{opt}), "
        f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms recall@10 {r['recall_at_10']:.3f}, filtered p50 "
        f"{filtered}, peak RSS load {r['load_peak_rss_mib']:.0f} / query {r['query_peak_rss_mib']:.0f} MiB, "
        f"disk {r['disk_mib']:.0f} MiB, reopen {r['reopen_s']:.2f} s"
    )


def goals(report: dict) -> list[str]:
    """The issue's goals for embedded Qdrant, each met or not with its figure."""
    out = []
    for n in sorted({r["points"] for r in report["rows"]}):
        by = {r["store"]: r for r in report["rows"] if r["points"] == n}
        edge, faiss = by.get("qdrant-edge") or by.get("qdrant-edge-direct"), by.get("faiss")
        if edge is None:
            out.append(f"- {n:,}: embedded Qdrant not measured at this size.")
            continue
        if edge["store"] == "qdrant-edge-direct":
            out.append(
                f"- {n:,}: only measured directly through qdrant_edge (qdrant-edge-direct), not vecguard's store."
            )

        def verdict(ok: bool) -> str:
            return "**met**" if ok else "**not met**"

        if faiss:
            share = edge["points_per_s"] / faiss["points_per_s"]
            out.append(
                f"- {n:,}, upsert at least a quarter of FAISS's rate: {verdict(share >= 0.25)}: "
                f"{edge['points_per_s']:.0f} points/s with the HNSW build ({edge['optimize_s'] or 0:.1f} s of "
                f"{edge['load_s']:.1f} s) against FAISS auto {faiss['points_per_s']:.0f} (its build at close "
                f"included) = {share:.2f}x; the upserts alone {edge['upsert_only_points_per_s']:.0f} points/s = "
                f"{edge['upsert_only_points_per_s'] / faiss['points_per_s']:.2f}x."
            )
            ratio = edge["p50_ms"] / faiss["p50_ms"]
            matched = next(
                (p for p in edge.get("ef_sweep") or () if p["recall_at_10"] >= faiss["recall_at_10"] - 0.002), None
            )
            if matched is None:
                out.append(
                    f"- {n:,}, query p50 within 5x of FAISS auto at the same recall: {verdict(ratio <= 5)}: "
                    f"{edge['p50_ms']:.2f} ms at recall@10 {edge['recall_at_10']:.3f} against {faiss['p50_ms']:.2f} "
                    f"ms at {faiss['recall_at_10']:.3f} = {ratio:.1f}x."
                )
            else:
                same = matched["p50_ms"] / faiss["p50_ms"]
                out.append(
                    f"- {n:,}, query p50 within 5x of FAISS auto at the same recall: {verdict(same <= 5)}: at FAISS's "
                    f"recall@10 {faiss['recall_at_10']:.3f} ({faiss['p50_ms']:.2f} ms), embedded Qdrant needs hnsw_ef "
                    f"{matched['hnsw_ef']} (recall@10 {matched['recall_at_10']:.3f}): {matched['p50_ms']:.2f} ms = "
                    f"{same:.1f}x (the sweep below). At the hnsw_ef it tuned itself to on served queries, "
                    f"{edge['p50_ms']:.2f} ms at recall@10 {edge['recall_at_10']:.3f} = {ratio:.1f}x."
                )
        else:
            out.append(f"- {n:,}: FAISS auto not measured at this size, no ratio.")
        if n <= 100_000:
            worst = max(f["p50_ms"] for f in edge["filtered"].values())
            figures = ", ".join(f"{label} {f['p50_ms']:.2f} ms" for label, f in edge["filtered"].items())
            out.append(f"- {n:,}, filtered queries under 5 ms p50: {verdict(worst < 5)}: {figures}.")
        out.append(
            f"- {n:,}, recall@10 at least 0.95: {verdict(edge['recall_at_10'] >= 0.95)}: "
            f"{measured_recall(edge)} (filtered: "
            + ", ".join(f"{label} {f['recall_at_10']:.3f}" for label, f in edge["filtered"].items())
            + ")."
        )
        if any(f.get("recall_ci95") is not None for f in edge["filtered"].values()):
            lowest = min(f["recall_at_10"] for f in edge["filtered"].values())
            out.append(
                f"- {n:,}, the same target with a filter (recall@10 at least 0.95 at every selectivity): "
                f"{verdict(lowest >= 0.95)}: "
                + ", ".join(f"{label} {measured_recall(f)}" for label, f in edge["filtered"].items())
                + "."
            )
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [
        f"# Embedded Qdrant beside FAISS auto, Chroma and qdrant-client local mode ({report['date']})",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), shared with other work; Python {m['python']}; "
        f"{m['platform']}. Commit per row, after the store (`git describe --always --dirty` when it ran). "
        "Libraries: "
        + ", ".join(f"{k} {v}" for k, v in {**m["libraries"], **report.get("store_libraries", {})}.items() if v)
        + ".",
        "",
        "Method (benchmarks/qdrant_embedded.py): "
        f"{DIMENSION}-d unit vectors from a clustered synthetic mixture ({CENTRES:,} Gaussian centres around a "
        "common direction, uneven cluster sizes, per-cluster spread), not real embeddings (1M cannot be encoded on "
        f"2 CPUs); {s['queries']:,} held-out queries from the same mixture (never stored; "
        f"{s.get('local_queries', s['queries'])} for qdrant-local, whose queries are brute force in Python; rows with "
        f"no interval beside their recall were measured on 500, and 200 per filter), {s['filtered']:,} of them for "
        f"each filter ({s.get('local_filtered', s['filtered'])} for qdrant-local, whose filters are evaluated in "
        "Python point by point); recall@10 against exact numpy brute force (ties count; filtered recall against the exact best "
        "10 of the allowed points; ± is the half-width of the 95% interval around the mean, 2 standard errors over the "
        "queries). Engine-shaped payloads (doc_id, chunk, offsets, ~300-character text, three "
        "metadata fields) plus `sel = i % 100`; filters `sel < 1 / 10 / 50` = 1% / 10% / 50% selectivity. Upserts "
        f"of {BATCH:,} through vecguard's VectorStore protocol (the store's calls timed, not making the batches), "
        "then close (FAISS `auto` builds its index at close, "
        "included; embedded Qdrant's HNSW build `optimize()` included, and shown apart). Each store: a fresh process "
        "for the load and another for the reopen and queries, into a fresh folder under /tmp; peak RSS is each "
        "process's own high-water mark (interpreter and libraries included); disk is allocated bytes after the "
        "load; reopen = open + first search in a fresh process. Single-query latency through `store.search`, "
        f"medians over the queries; {s['repeats']} run(s) per store and size, medians across runs. "
        f"Served queries: before the timed queries, a store that tunes on the queries it serves (FAISS `auto`, "
        f"embedded Qdrant) is handed {s.get('served', 0)} query vectors from the same mixture (another seed, never "
        "the timed ones), as an engine hands it every query it answers, and the timing waits for its measure and "
        "retune: the `search setting` column is where it settled, and its recall there on those served queries. "
        "Rows whose setting is `-` ran before this step existed (their commit says when).",
        "",
    ]
    lines += [
        'Stores, `[store]` options through vecguard\'s registry: `faiss` (`index = "auto"`), `chroma` (`path`: '
        "PersistentClient), `qdrant-local` (qdrant-client local mode: `path`, `local_mode = true`), `qdrant-edge` "
        '(embedded Qdrant, Qdrant\'s own engine through qdrant-edge-py: `plugin = "qdrant"`, `path`, '
        '`payload_indexes = {sel = "integer"}`; HNSW m 16, ef_construct 100, hnsw_ef 128 until served queries tune it to '
        "target_recall 0.95; its `optimize()` builds the graph and measures its recall on 100 stored vectors, timed "
        "as the HNSW build; "
        "built bare like store_throughput.py, no engine hands it BM25 weights (`hold_keywords`), so its points carry "
        "the dense vector only, as the other stores' do: with `keyword_vectors` (the default since 1093c8b) an engine's "
        "writes also carry each text's sparse BM25 vector, not measured here)."
        + (
            " `qdrant-edge-direct`: the same engine measured directly through `qdrant_edge` before vecguard's store "
            "landed, with the same layout (a dense vector with Distance.Dot, named `dense` there, UUIDv5 ids, the "
            "payload with `vecguard_id`, an integer payload index on `metadata.sel`, HNSW built by "
            f"`shard.optimize()` after the upserts, SearchParams(hnsw_ef={EDGE_HNSW_EF})): vecguard's store "
            "beside it is what the store adds."
            if any(r["via"] != "vecguard store" for r in report["rows"])
            else ""
        ),
        "",
    ]
    for n in sorted({r["points"] for r in report["rows"]}):
        rows = [r for r in report["rows"] if r["points"] == n]
        lines += [
            f"## {n:,} points",
            "",
            "| store | load points/s | upsert s | HNSW build s | close s | search setting (served recall@10) "
            "| p50 ms | p99 ms | recall@10 | filtered p50 ms 1% / 10% / 50% | filtered recall@10 1% / 10% / 50% "
            "| peak RSS load / query MiB | disk MiB | reopen s (open + first search) |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            f = r["filtered"]
            lines.append(
                f"| {r['store']} ({r.get('commit', '?')}) | {r['points_per_s']:,.0f} | {r['upsert_s']:.1f} | "
                f"{'-' if r['optimize_s'] is None else format(r['optimize_s'], '.1f')} | {r['close_s']:.1f} | "
                f"{setting_of(r)} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {measured_recall(r)} | "
                + " / ".join(f"{f[label]['p50_ms']:.2f}" for label in SELECTIVITY)
                + " | "
                + " / ".join(f"{f[label]['recall_at_10']:.3f}" for label in SELECTIVITY)
                + f" | {r['load_peak_rss_mib']:,.0f} / {r['query_peak_rss_mib']:,.0f} | {r['disk_mib']:,.0f} | "
                f"{r['reopen_s']:.2f} ({r['open_s']:.2f} + {r['first_search_s']:.2f}) |"
            )
        sweep = next((r["ef_sweep"] for r in rows if r["store"] == "qdrant-edge" and r.get("ef_sweep")), None)
        if sweep:
            lines += [
                "",
                "Embedded Qdrant's hnsw_ef swept after its timed queries, in the same warm process (the held-out "
                "queries through its shard, two rounds):",
                "",
                "| hnsw_ef | " + " | ".join(str(p["hnsw_ef"]) for p in sweep) + " |",
                "|---|" + "---:|" * len(sweep),
                "| recall@10 | " + " | ".join(f"{p['recall_at_10']:.3f}" for p in sweep) + " |",
                "| p50 ms | " + " | ".join(f"{p['p50_ms']:.2f}" for p in sweep) + " |",
            ]
        row = next((r for r in rows if r["store"] == "qdrant-edge" and r.get("filtered_sweep")), None)
        if row:
            swept = row["filtered_sweep"]
            efs = [p["hnsw_ef"] for p in next(iter(swept.values()))]
            lines += [
                "",
                "And the filtered queries at each hnsw_ef, per filter (recall@10 ± its 95% interval, p50 ms; the store "
                f"searches with a filter at hnsw_ef {row['filtered_floor']:.0f} at least):",
                "",
                "| filter | " + " | ".join(f"hnsw_ef {ef}" for ef in efs) + " |",
                "|---|" + "---:|" * len(efs),
                *(
                    f"| {label} | "
                    + " | ".join(f"{p['recall_at_10']:.3f} ± {p['recall_ci95']:.3f}, {p['p50_ms']:.2f}" for p in points)
                    + " |"
                    for label, points in swept.items()
                ),
            ]
        if n >= 1_000_000 and not any(r["store"] == "qdrant-local" for r in rows):
            lines += [
                "",
                "qdrant-client local mode is not run at 1M here (~25 minutes and 7 GB of upserts): see "
                f"results/{QDRANT_LOCAL_1M} (662 points/s, peak RSS 7,063 MiB while writing; its queries are brute "
                "force in Python).",
            ]
        if n >= 1_000_000 and not any(r["store"] == "chroma" for r in rows):
            lines += [
                "",
                "Chroma embedded is not run at 1M here: at the 373 points/s it loaded 100k with on this shared machine "
                "its load alone would take ~45 minutes, which did not fit beside the other two before the deadline. "
                f"Its load at 1M: results/{CHROMA_1M} (734 points/s, 1,362 s, peak RSS 4,543 MiB while writing).",
            ]
        lines.append("")
    lines += ["## Goals (embedded Qdrant)", "", *goals(report), ""]
    if report.get("notes"):
        lines += ["## Notes", "", *[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def measured_recall(row: dict) -> str:
    """A row's recall@10 with its 95% interval and how many queries measured it (rows from before the interval
    was kept: the mean alone)."""
    if row.get("recall_ci95") is None:
        return f"{row['recall_at_10']:.3f}"
    return f"{row['recall_at_10']:.3f} ± {row['recall_ci95']:.3f} ({row['queries']:,.0f} queries)"


def setting_of(row: dict) -> str:
    """The search setting a row's store settled on after the served queries, and its recall on them ("-": none)."""
    tuned = row.get("tuned") or {}
    knob = next((f"{name} {tuned[name]}" for name in ("nprobe", "ef_search", "hnsw_ef") if name in tuned), None)
    if knob is None:
        return "-"
    served = tuned.get("served") or {}
    return f"{knob} ({served['recall_at_10']:.3f})" if "recall_at_10" in served else knob


def write(report: dict) -> None:
    save(NAME, report, markdown(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000])
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument(
        "--queries",
        type=int,
        default=5_000,
        help="held-out queries, unfiltered, timed and measured for recall@10: 5,000 measure recall near 0.95 to "
        "about +-0.004 (95%%), 500 only to +-0.014 (default 5,000)",
    )
    parser.add_argument(
        "--local-queries",
        type=int,
        default=500,
        help="of them, for qdrant-local, whose queries are brute force in Python (default 500)",
    )
    parser.add_argument(
        "--served",
        type=int,
        default=500,
        help="query vectors from the same mixture (another seed) handed first to a store that tunes on the queries "
        "it serves, before the held-out ones are timed (default 500; 0: none)",
    )
    parser.add_argument(
        "--filtered", type=int, default=1_000, help="of them, per filter: recall to about +-0.006 (default 1,000)"
    )
    parser.add_argument(
        "--local-filtered",
        type=int,
        default=20,
        help="per filter for qdrant-local, whose filters are evaluated in Python point by point (default 20)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per store and size; medians (default 1)")
    parser.add_argument(
        "--edge",
        choices=("auto", "plugin", "direct"),
        default="auto",
        help="embedded Qdrant through vecguard's qdrant plugin or directly through qdrant_edge (auto: the plugin "
        "where backends/qdrant/edge.py exists)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep each store in DIR/<store>-<size> and, when it is there already, query it again without reloading "
        "(its load's figures are reported again): a 1M store is built once while a query-side change is measured",
    )
    parser.add_argument("--fresh", action="store_true", help="start a new results file instead of merging")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    edge = args.edge if args.edge != "auto" else ("plugin" if edge_on_main() else "direct")
    path = RESULTS / f"{NAME}.json"
    report = json.loads(path.read_text(encoding="utf-8")) if path.exists() and not args.fresh else {"rows": []}
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True, text=True)
    versions = {}
    for package in ("chromadb", "qdrant-client", "qdrant-edge-py"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    report.update(
        {
            "machine": machine(),
            "commit": commit.stdout.strip() or "?",
            "qdrant_edge_version": versions["qdrant-edge-py"],
            "store_libraries": versions,
            "settings": {
                "dimension": DIMENSION,
                "centres": CENTRES,
                "batch": BATCH,
                "k": K,
                "queries": args.queries,
                "local_queries": args.local_queries,
                "served": args.served,
                "filtered": args.filtered,
                "local_filtered": args.local_filtered,
                "repeats": args.repeats,
                "selectivity": SELECTIVITY,
                "edge": edge,
            },
            "notes": sorted(set(report.get("notes", []) + args.note)),
        }
    )
    print(f"embedded Qdrant: {edge}", flush=True)
    for n in args.sizes:
        measure_size(n, args.stores, args, edge, report)
    print(markdown(report))


if __name__ == "__main__":
    main()

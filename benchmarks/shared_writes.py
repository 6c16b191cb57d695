"""Writes to a shared FAISS collection at 10k, 100k and 1M chunks: one document added, the time to open, bytes on
disk and the per-search freshness check.

    .venv/bin/python benchmarks/shared_writes.py                       # 10k, 100k, 1M: ~35 min on 2 CPUs (builds)
    .venv/bin/python benchmarks/shared_writes.py --sizes 10000 100000  # a few minutes once built

The collections are built once and kept in the bench cache (``~/.cache/vecguard/bench/shared-writes-<size>``, or
``$VECGUARD_BENCH_CACHE``), with synthetic but engine-made data: encoding a million chunks is out of reach of a
2-core machine. Each document is one chunk of ~100 words (keyword_files.py's generator: ~88 words of a Zipf
vocabulary of 200,000 pseudo-words and three identifiers, ~200 encoder tokens, so one chunk), with a 384-d unit
vector (one of 1,024 random cluster centres plus Gaussian noise, float32). They are written through the engine's
own path: an Engine with ``[store] plugin = "faiss", auto_candidates = ["IVF"]`` (HNSW32 at 1M takes too long to
build on 2 cores), ``Collection.put_documents`` in batches of BUILD_BATCH documents inside ``engine.writing()``
(payloads shaped as ``Ingest._chunk`` makes them, ``content_hash`` included), then ``engine.optimize()``. A build
is kept only once ``check_integrity()`` is [] and the manifest counts, the store and the keyword index all hold
exactly ``size`` chunks.

Measured in one run, the sizes side by side (interleaved round by round, so the machine's noise hits all alike):

- open: a fresh process runs ``vecguard.open(config, create=False)`` and its first search (3 rounds, median);
  parts timed by wrapping ``Registry.build`` (encoder, store: the FAISS index read with its CRC-32), ``Engine.check``
  (the version guard: probe sentences encoded) and ``Collection.settle`` (the keyword files loaded and caught up).
  Every log record at WARNING or above is captured, and the run stops if one says it is rebuilding or repairing,
  or if the FAISS index was not loaded from its files (it would then be rebuilt at the first search, silently).
- bytes on disk (allocated blocks, as du counts) per part of the folder, against the stored texts' UTF-8 bytes;
- ``engine.add([one document])`` (a new id each time, a ~100-word document of the same generator with a unique
  identifier; 2 warm-ups then REPETITIONS timed) in one process holding all collections open and already searched
  once (as a server is), one encoder shared. The encode is timed apart through ``engine.instrument`` (stage
  ``ingest_encode``); total minus encode is vecguard's write cost, broken into its parts by wrapping the
  collection's and the store's methods on the instance;
- the freshness check with nothing changed: ``collection.behind()`` (the store's change token: one stat and one
  SQLite read) and ``engine.refresh()``, FRESHNESS_CALLS calls each, and the FAISS store's own check
  (``PRAGMA data_version``) that each search makes;
- catching up: another process opens the collection, adds one document and closes (its open, add and close timed);
  then in this process the first search (timed), whether a keyword search finds the new document without a
  refresh, ``engine.refresh()`` (timed), and normal searches (median of 5) for comparison. 3 rounds.

Afterwards every document the run added is deleted again, so the cached collections keep ``size`` chunks.
Results: benchmarks/results/shared_writes.{json,md} and shared_writes.png (benchmarks/plots.py draws it again from
the JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, cache_dir, machine, percentile, save  # noqa: E402
from keyword_files import Corpus  # noqa: E402

GENERATOR = "shared-writes-1"  # bump when the data or the build changes: cached builds of another are rebuilt
BUILD_BATCH = 5_000  # documents per put_documents while building (the engine's own batches are 64)
DIMENSION = 384
CENTRES = 1_024
NOISE = 0.8  # per-vector Gaussian noise (norm ~0.8) on a unit centre: cosine ~0.78 to its centre
VECTOR_SEED = 23
WARMUPS = 2
REPETITIONS = 15
OPEN_ROUNDS = 3
FRESHNESS_CALLS = 2_000
CATCH_UP_ROUNDS = 3
REBUILD_WORDS = ("rebuilding", "repairing", "recounting")
GOALS = {"add_ratio": 2.0, "open_s": 5.0, "freshness_p50_ms": 0.5}
log = logging.getLogger("shared_writes")


def config(folder: Path) -> dict[str, Any]:
    return {
        "encoder": {"plugin": "sentence-transformers", "model": "bundled"},
        "store": {"plugin": "faiss", "path": str(folder), "auto_candidates": ["IVF"]},
    }


def folder_of(size: int) -> Path:
    return cache_dir() / f"shared-writes-{size}"


def marker_of(size: int) -> Path:
    return cache_dir() / f"shared-writes-{size}.json"


def doc_id(i: int) -> str:
    return f"syn-{i:07d}"


def synthetic_vectors(start: int, n: int) -> np.ndarray:
    """Unit vectors near one of CENTRES random centres, the same for the same ``start``."""
    centres = np.random.default_rng(VECTOR_SEED).standard_normal((CENTRES, DIMENSION), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng([VECTOR_SEED, start])
    noise = rng.standard_normal((n, DIMENSION), dtype=np.float32) * np.float32(NOISE / np.sqrt(DIMENSION))
    vectors = centres[rng.integers(0, CENTRES, size=n)] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class Timers:
    """Seconds spent in methods wrapped on an instance, summed by name until ``take``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started

        setattr(owner, attribute, timed)

    def wrap_context(self, owner: Any, attribute: str, name: str) -> None:
        """A method returning a context manager: the time to enter and to leave it, not the time inside."""
        original = getattr(owner, attribute)
        seconds = self.seconds

        @contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            started = time.perf_counter()
            with original(*args, **kwargs) as value:
                seconds[name] += time.perf_counter() - started
                yield value
                started = time.perf_counter()
            seconds[name] += time.perf_counter() - started

        setattr(owner, attribute, timed)

    def take(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds.clear()
        return out


WRITE_PARTS = {  # name: what it is, in the order the table shows them
    "lock": "write.lock taken and released (flock), twice: the batch and finish_writes",
    "catch_up": "Collection.catch_up under the lock",
    "chunk": "chunking (the encoder's tokenizer)",
    "put_documents": "Collection.put_documents: the whole batch under the lock",
    "upsert": "  of which store.upsert (SQLite transaction + the FAISS store's catch-up)",
    "manifest": "  of which store.write_manifest x2 (the writing mark set and cleared)",
    "keyword_add": "  of which keyword index add",
    "keyword_save": "  of which keyword save_changes (a segment file, merges)",
}


def watch_writes(engine: Any, timers: Timers) -> None:
    """Wrap the parts of a write on this engine's instances (none of it changes what they do)."""
    collection, store = engine.collection, engine.collection.store
    timers.wrap_context(store, "lock_writes", "lock")
    timers.wrap(collection, "catch_up", "catch_up")
    timers.wrap(engine.chunker, "split_many", "chunk")
    timers.wrap(collection, "put_documents", "put_documents")
    timers.wrap(store, "upsert", "upsert")
    timers.wrap(store, "write_manifest", "manifest")
    timers.wrap(collection.keyword, "add", "keyword_add")
    timers.wrap(collection._keyword, "save_changes", "keyword_save")


class Stages:
    """An engine instrument that sums each stage's seconds (the encode of an add is ``ingest_encode``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def observe(self, name: str, value: float) -> None:
        pass

    def take(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds.clear()
        return out


# ------------------------------------------------------------------ building


def build(size: int) -> dict[str, Any]:
    """The collection of ``size`` synthetic chunks, built through the engine unless a complete build is cached."""
    folder, marker = folder_of(size), marker_of(size)
    if marker.exists() and folder.exists():
        kept = json.loads(marker.read_text(encoding="utf-8"))
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if kept.get("generator") == GENERATOR and manifest["counts"] == {"documents": size, "chunks": size}:
            print(f"{size:>9,} chunks: reusing {folder} (built {kept['built_at']})", flush=True)
            return kept
        if kept.get("generator") == GENERATOR:
            print(f"{size:>9,} chunks: {folder} holds {manifest['counts']}; deleting what an earlier run added")
            remove_added(size)
            return build(size)
    shutil.rmtree(folder, ignore_errors=True)
    marker.unlink(missing_ok=True)
    free = shutil.disk_usage(folder.parent if folder.parent.exists() else Path.home()).free
    if free < size * 6_000 + (2 << 30):
        sys.exit(f"{free / 2**30:.1f} GiB free: too little to build {size:,} chunks (~{size * 5_000 / 2**30:.1f} GiB)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    import vecguard
    from vecguard.atomic import canonical_json
    from vecguard.engine import content_hash
    from vecguard.protocols import Document

    print(f"{size:>9,} chunks: building {folder} in batches of {BUILD_BATCH:,}", flush=True)
    started = time.perf_counter()
    engine = vecguard.open(config(folder))
    timers = Timers()
    watch_writes(engine, timers)
    corpus = Corpus(size)
    generate_s, text_bytes, payload_bytes, batch_s = 0.0, 0, 0, []
    for start in range(0, size, BUILD_BATCH):
        n = min(BUILD_BATCH, size - start)
        began = time.perf_counter()
        texts = corpus.texts(start, n)
        vectors = synthetic_vectors(start, n)
        doc_ids = [doc_id(i) for i in range(start, start + n)]
        payloads = []
        for i, (d, text) in enumerate(zip(doc_ids, texts)):
            metadata = {"kind": "synthetic", "group": (start + i) % 100}
            payloads.append(
                {
                    "doc_id": d,
                    "chunk": 0,
                    "chunks": 1,
                    "start": 0,
                    "end": len(text),
                    "text": text,
                    "metadata": metadata,
                    "content_hash": content_hash(Document(d, text, metadata)),
                }
            )
            text_bytes += len(text.encode())
            payload_bytes += len(canonical_json(payloads[-1]).encode())  # as the store keeps it
        generate_s += time.perf_counter() - began
        began = time.perf_counter()
        with engine.writing():
            engine.collection.put_documents(set(doc_ids), [f"{d}#0" for d in doc_ids], texts, payloads, vectors)
        batch_s.append(time.perf_counter() - began)
        done = start + n
        if done % (20 * BUILD_BATCH) == 0 or done == size:
            elapsed = time.perf_counter() - started
            print(
                f"{'':>9} {done:>9,} written, {elapsed:6.0f} s; last batch {batch_s[-1]:.2f} s: "
                + ", ".join(f"{k} {v / (len(batch_s) or 1):.2f}" for k, v in timers.seconds.items())
                + " s a batch on average",
                flush=True,
            )
    written_s = time.perf_counter() - started
    parts = timers.take()
    began = time.perf_counter()
    report = engine.optimize()
    optimize_s = time.perf_counter() - began
    began = time.perf_counter()
    engine.close()
    close_s = time.perf_counter() - began
    print(f"{'':>9} optimize {optimize_s:.0f} s ({report}), close {close_s:.0f} s; checking", flush=True)
    began = time.perf_counter()
    with vecguard.open(config(folder), create=False) as check:
        problems = check.check_integrity()
        counts = check.manifest["counts"]
        stored, keyword = check.store.count(), check.keyword.count()
    check_s = time.perf_counter() - began
    if problems or counts != {"documents": size, "chunks": size} or stored != size or keyword != size:
        sys.exit(f"the build of {folder} is not sound: {problems}, counts {counts}, store {stored}, keyword {keyword}")
    kept = {
        "generator": GENERATOR,
        "size": size,
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "build_batch": BUILD_BATCH,
        "batches": len(batch_s),
        "generate_s": generate_s,
        "write_s": sum(batch_s),
        "batch_p50_s": statistics.median(batch_s),
        "batch_max_s": max(batch_s),
        "write_parts_s": parts,
        "written_s": written_s,
        "optimize_s": optimize_s,
        "index": report,
        "close_s": close_s,
        "check_s": check_s,
        "text_bytes": text_bytes,
        "payload_bytes": payload_bytes,
        "vector_bytes": size * DIMENSION * 4,
    }
    marker.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
    print(
        f"{'':>9} built in {written_s + optimize_s + close_s:.0f} s (writes {sum(batch_s):.0f} s, generating "
        f"{generate_s:.0f} s, optimize {optimize_s:.0f} s, close {close_s:.0f} s); check {check_s:.0f} s: sound",
        flush=True,
    )
    return kept


def remove_added(size: int) -> None:
    """Delete every document that is not the build's (a run that stopped before its own cleanup left them)."""
    import vecguard

    with vecguard.open(config(folder_of(size)), create=False) as engine:
        engine.delete_matching({"kind": {"$ne": "synthetic"}})
        counts = engine.manifest["counts"]
    if counts != {"documents": size, "chunks": size}:
        sys.exit(f"{folder_of(size)} holds {counts} after removing added documents; delete it to rebuild")


# ------------------------------------------------------------------ opening, in a fresh process

OPEN_IN_A_FRESH_PROCESS = r"""
import json, logging, sys, time
from contextlib import contextmanager
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(f"{record.levelname} {record.name}: {record.getMessage()}")
logging.getLogger().addHandler(Keep(logging.WARNING))
started = time.perf_counter()
import vecguard
import vecguard.collection
import vecguard.engine
from vecguard.registry import Registry
out = {"import_s": time.perf_counter() - started}
# The encoder's libraries, imported here so that their import is timed apart from the model load; a cold
# vecguard.open pays both (open_s below adds them back).
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
libraries = {}
for name in ("torch", "transformers", "sentence_transformers"):
    began = time.perf_counter()
    __import__(name)
    libraries[name] = time.perf_counter() - began
out["libraries_import_s"] = libraries
parts = {}
def timed(owner, name, label):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            parts[label] = parts.get(label, 0.0) + time.perf_counter() - began
    setattr(owner, name, wrapper)
registry = Registry.discover()
build = registry.build
def timed_build(kind, name, options, base_dir):
    began = time.perf_counter()
    try:
        return build(kind, name, options, base_dir)
    finally:
        parts[kind] = parts.get(kind, 0.0) + time.perf_counter() - began
registry.build = timed_build
timed(vecguard.engine.Engine, "check", "guard")
timed(vecguard.collection.Collection, "settle", "settle")
mode, cfg, query = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
began = time.perf_counter()
engine = vecguard.open(cfg, registry=registry, create=False)
out["engine_s"] = time.perf_counter() - began
out["open_s"] = out["engine_s"] + sum(libraries.values())
out["parts_s"] = parts
state = engine.store.index_state
out["index"] = {"spec": state.spec, "needs_build": state.needs_build, "vectors": state.vectors,
                "tuning": state.tuning, "load_problems": engine.store._live.load_problems}
class Stages:
    def __init__(self):
        self.seconds = {}
    @contextmanager
    def stage(self, name):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began
    def observe(self, name, value):
        pass
if mode == "open":
    engine.instrument = stages = Stages()
    began = time.perf_counter()
    engine.search(query, k=10)
    out["first_search_s"] = time.perf_counter() - began
    out["first_search_stages_s"] = stages.seconds
    searches = []
    for _ in range(5):
        began = time.perf_counter()
        engine.search(query, k=10)
        searches.append(time.perf_counter() - began)
    out["search_s"] = sorted(searches)[2]
    out["keyword_chunks"] = engine.keyword.count()
else:  # "write": add the document in argv[4], then close
    document = json.loads(sys.argv[4])
    began = time.perf_counter()
    out["added"] = engine.add([document])
    out["add_s"] = time.perf_counter() - began
began = time.perf_counter()
engine.close()
out["close_s"] = time.perf_counter() - began
# VmHWM, not ru_maxrss: the latter keeps the parent's high-water mark from the fork
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
out["peak_rss_mib"] = int(hwm.split()[1]) / 1024
out["warnings"] = records
print(json.dumps(out))
"""


def in_a_fresh_process(mode: str, size: int, query: str, document: dict | None = None) -> dict[str, Any]:
    """Open the collection of ``size`` in a new process (``open``: then search it; ``write``: add ``document``)."""
    command = [sys.executable, "-c", OPEN_IN_A_FRESH_PROCESS, mode, json.dumps(config(folder_of(size))), query]
    if document is not None:
        command.append(json.dumps(document))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the {mode} process for {size:,} chunks failed:\n{done.stderr[-4000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    said = [
        line for line in out["warnings"] + done.stderr.splitlines() if any(w in line.lower() for w in REBUILD_WORDS)
    ]
    if said or out["index"]["needs_build"] or out["index"]["load_problems"]:
        sys.exit(
            f"REBUILD: opening {size:,} chunks ({mode}) rebuilt or repaired something: {said}, index {out['index']}"
        )
    return out


# ------------------------------------------------------------------ measuring


def du(path: Path) -> int:
    """Bytes allocated on disk (what du counts) under ``path``."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def disk(size: int, built: dict[str, Any]) -> dict[str, Any]:
    """Allocated bytes per part of the folder, against the stored texts and what points.sqlite3 holds raw."""
    folder = folder_of(size)
    parts = {
        "points.sqlite3": sum(
            du(folder / name)
            for name in ("points.sqlite3", "points.sqlite3-wal", "points.sqlite3-shm")
            if (folder / name).exists()
        ),
        "index.faiss + index.json": sum(
            du(folder / name) for name in ("index.faiss", "index.json") if (folder / name).exists()
        ),
        "keyword/": du(folder / "keyword"),
    }
    total = du(folder)
    parts["other"] = total - sum(parts.values())
    return {
        "parts": parts,
        "total": total,
        "text_bytes": built["text_bytes"],
        "total_over_text": total / built["text_bytes"],
        "manifest_json_bytes": (folder / "manifest.json").stat().st_size,
        "points_bytes_per_chunk": parts["points.sqlite3"] / size,
        "raw_bytes_per_chunk": (built["vector_bytes"] + built["payload_bytes"]) / size,  # vector + payload JSON
    }


def added_document(corpus: Corpus, size: int, n: int, run: str) -> dict[str, Any]:
    """A new ~100-word document of the same generator with an identifier found nowhere else."""
    text = corpus.texts(size + 1_000 + n, 1)[0]
    marker = f"FRESH-{run}-{n:05d}"
    return {"id": f"added-{run}-{n:05d}", "text": f"{text} {marker}", "metadata": {"kind": "added"}, "_marker": marker}


def stats_ms(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(seconds) * 1000,
        "p90_ms": percentile(seconds, 0.9) * 1000,
        "max_ms": max(seconds) * 1000,
        "n": len(seconds),
    }


def call_times(call: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def measure(sizes: list[int], built: dict[int, dict]) -> dict[str, Any]:
    from vecguard.config import load_config
    from vecguard.engine import Engine, build_parts
    from vecguard.registry import Registry

    run = f"{int(time.time()) % 100_000:05d}"
    corpora = {size: Corpus(size) for size in sizes}
    queries = {size: corpora[size].queries(1, size)[0] for size in sizes}
    results: dict[int, dict[str, Any]] = {size: {"chunks": size} for size in sizes}
    os.sync()  # the builds' writes are not still draining while anything is timed

    print("open in a fresh process ...", flush=True)
    opens: dict[int, list[dict]] = {size: [] for size in sizes}
    for _ in range(OPEN_ROUNDS):
        for size in sizes:
            opens[size].append(in_a_fresh_process("open", size, queries[size]))
    for size in sizes:
        found = opens[size]
        med = {
            key: statistics.median(o[key] for o in found)
            for key in ("import_s", "engine_s", "open_s", "first_search_s", "search_s", "close_s")
        }
        med["libraries_import_s"] = statistics.median(sum(o["libraries_import_s"].values()) for o in found)
        med["parts_s"] = {k: statistics.median(o["parts_s"].get(k, 0.0) for o in found) for k in found[0]["parts_s"]}
        med["engine_without_encoder_s"] = statistics.median(o["engine_s"] - o["parts_s"]["encoder"] for o in found)
        med["encoder_s"] = statistics.median(
            o["parts_s"]["encoder"] + sum(o["libraries_import_s"].values()) for o in found
        )
        med["first_search_stages_s"] = {
            k: statistics.median(o["first_search_stages_s"].get(k, 0.0) for o in found)
            for k in found[0]["first_search_stages_s"]
        }
        med["runs"] = found
        med["index"] = found[0]["index"]
        med["peak_rss_mib"] = statistics.median(o["peak_rss_mib"] for o in found)
        results[size]["open"] = med
        results[size]["disk"] = disk(size, built[size])
        p = med["parts_s"]
        print(
            f"{size:>9,} chunks: open {med['open_s']:.2f} s (encoder {med['encoder_s']:.2f}: libraries "
            f"{med['libraries_import_s']:.2f} + model {p['encoder']:.2f}; store {p['store']:.2f}, "
            f"guard {p.get('guard', 0):.2f}, settle {p.get('settle', 0):.2f}); first search {med['first_search_s']:.2f} s; "
            f"{results[size]['disk']['total'] / 2**20:,.0f} MiB on disk",
            flush=True,
        )

    print("opening every collection in this process ...", flush=True)
    registry = Registry.discover()
    encoder = None
    engines: dict[int, Engine] = {}
    timers: dict[int, Timers] = {}
    stages: dict[int, Stages] = {}
    for size in sizes:
        cfg = load_config(config(folder_of(size)))
        parts = build_parts(cfg, registry, encoder=encoder)
        encoder = parts.encoder
        engine = engines[size] = Engine(cfg, registry=registry, parts=parts, create=False)
        engine.search(queries[size], k=10)  # a serving process has searched: the payload records are held
        timers[size], stages[size] = Timers(), Stages()
        watch_writes(engine, timers[size])
        engine.instrument = stages[size]
    added: dict[int, list[str]] = {size: [] for size in sizes}
    try:
        print(f"adding one document, {WARMUPS} warm-ups + {REPETITIONS}, round robin ...", flush=True)
        adds: dict[int, list[dict]] = {size: [] for size in sizes}
        for repetition in range(WARMUPS + REPETITIONS):
            for size in sizes:
                engine = engines[size]
                document = added_document(corpora[size], size, repetition, run)
                document.pop("_marker")
                chunks_before = engine.store.count()
                timers[size].take(), stages[size].take()
                started = time.perf_counter()
                written = engine.add([document])
                total = time.perf_counter() - started
                added[size].append(document["id"])
                parts, seen = timers[size].take(), stages[size].take()
                if written != 1:
                    sys.exit(f"adding {document['id']} wrote {written} documents")
                if repetition >= WARMUPS:
                    adds[size].append(
                        {
                            "total_s": total,
                            "encode_s": seen.get("ingest_encode", 0.0),
                            "chunks": engine.store.count() - chunks_before,
                            "parts_s": parts,
                        }
                    )
        for size in sizes:
            found = adds[size]
            write = [a["total_s"] - a["encode_s"] for a in found]
            results[size]["add"] = {
                "total": stats_ms([a["total_s"] for a in found]),
                "encode": stats_ms([a["encode_s"] for a in found]),
                "write": stats_ms(write),
                "parts_p50_ms": {
                    k: statistics.median(a["parts_s"].get(k, 0.0) for a in found) * 1000 for k in WRITE_PARTS
                },
                "other_p50_ms": statistics.median(
                    a["total_s"]
                    - a["encode_s"]
                    - sum(a["parts_s"].get(k, 0.0) for k in ("lock", "catch_up", "chunk", "put_documents"))
                    for a in found
                )
                * 1000,
                "chunks_per_document": statistics.median(a["chunks"] for a in found),
                "runs": found,
                "index": engines[size].store.index_state.spec,
            }
            a = results[size]["add"]
            print(
                f"{size:>9,} chunks: add one document p50 {a['total']['p50_ms']:.1f} ms (encode {a['encode']['p50_ms']:.1f}, "
                f"write {a['write']['p50_ms']:.1f}), p90 {a['total']['p90_ms']:.1f}, max {a['total']['max_ms']:.1f}",
                flush=True,
            )

        print(f"the freshness check, {FRESHNESS_CALLS} calls each ...", flush=True)
        fresh: dict[int, dict[str, list[float]]] = {size: defaultdict(list) for size in sizes}
        for _ in range(4):
            for size in sizes:
                engine = engines[size]
                points = engine.store._points
                fresh[size]["behind"] += call_times(engine.collection.behind, FRESHNESS_CALLS // 4)
                fresh[size]["refresh"] += call_times(engine.refresh, FRESHNESS_CALLS // 4)
                fresh[size]["data_version"] += call_times(points.others_committed, FRESHNESS_CALLS // 4)
        from vecguard.atomic import canonical_json

        for size in sizes:
            manifest = engines[size].manifest
            encoded = call_times(lambda m=manifest: canonical_json(m), 50)
            results[size]["manifest_json_encode_ms"] = statistics.median(encoded) * 1000
            if engines[size].collection.behind():
                sys.exit("the collection moved while nothing was written")
            results[size]["freshness"] = {name: stats_ms(seconds) for name, seconds in fresh[size].items()}
            f = results[size]["freshness"]
            print(
                f"{size:>9,} chunks: behind() p50 {f['behind']['p50_ms'] * 1000:.1f} us, refresh() p50 "
                f"{f['refresh']['p50_ms'] * 1000:.1f} us, data_version p50 {f['data_version']['p50_ms'] * 1000:.1f} us",
                flush=True,
            )

        print(f"catching up with another process's write, {CATCH_UP_ROUNDS} rounds ...", flush=True)
        catch: dict[int, list[dict]] = {size: [] for size in sizes}
        for round_ in range(CATCH_UP_ROUNDS):
            for size in sizes:
                engine = engines[size]
                document = added_document(corpora[size], size, 100 + round_, run)
                marker = document.pop("_marker")
                writer = in_a_fresh_process("write", size, queries[size], document)
                added[size].append(document["id"])
                behind = engine.collection.behind()
                stages[size].take()
                started = time.perf_counter()
                engine.search(queries[size], k=10)
                first = time.perf_counter() - started
                first_encode = stages[size].take().get("encode", 0.0)
                seen_without_refresh = any(h.id == document["id"] for h in engine.search(marker, k=5, mode="keyword"))
                seen_dense = engine.store.get([f"{document['id']}#0"]) != {}
                count_before_refresh = engine.manifest["counts"]["documents"]
                started = time.perf_counter()
                changed = engine.refresh()
                refresh_s = time.perf_counter() - started
                seen_after_refresh = any(h.id == document["id"] for h in engine.search(marker, k=5, mode="keyword"))
                normal, normal_less_encode = [], []
                for _ in range(5):
                    stages[size].take()
                    took = call_times(lambda e=engine, s=size: e.search(queries[s], k=10), 1)[0]
                    normal.append(took)
                    normal_less_encode.append(took - stages[size].take().get("encode", 0.0))
                catch[size].append(
                    {
                        "writer": {k: writer[k] for k in ("open_s", "engine_s", "add_s", "close_s", "parts_s")},
                        "behind_before": behind,
                        "first_search_s": first,
                        "first_search_less_encode_s": first - first_encode,
                        "keyword_found_before_refresh": seen_without_refresh,
                        "store_holds_it": seen_dense,
                        "documents_counted_before_refresh": count_before_refresh,
                        "refresh_s": refresh_s,
                        "refresh_changed": changed,
                        "keyword_found_after_refresh": seen_after_refresh,
                        "documents_counted_after_refresh": engine.manifest["counts"]["documents"],
                        "normal_search_s": statistics.median(normal),
                        "normal_search_less_encode_s": statistics.median(normal_less_encode),
                    }
                )
        for size in sizes:
            found = catch[size]
            results[size]["catch_up"] = {
                "first_search_ms": statistics.median(c["first_search_s"] for c in found) * 1000,
                "refresh_ms": statistics.median(c["refresh_s"] for c in found) * 1000,
                "normal_search_ms": statistics.median(c["normal_search_s"] for c in found) * 1000,
                "first_search_less_encode_ms": statistics.median(c["first_search_less_encode_s"] for c in found) * 1000,
                "normal_search_less_encode_ms": statistics.median(c["normal_search_less_encode_s"] for c in found)
                * 1000,
                "keyword_found_before_refresh": [c["keyword_found_before_refresh"] for c in found],
                "keyword_found_after_refresh": [c["keyword_found_after_refresh"] for c in found],
                "writer_open_s": statistics.median(c["writer"]["open_s"] for c in found),
                "writer_add_s": statistics.median(c["writer"]["add_s"] for c in found),
                "writer_close_s": statistics.median(c["writer"]["close_s"] for c in found),
                "runs": found,
            }
            c = results[size]["catch_up"]
            print(
                f"{size:>9,} chunks: first search after another process's write {c['first_search_ms']:.1f} ms "
                f"({c['first_search_less_encode_ms']:.1f} less the query encode), then refresh() {c['refresh_ms']:.1f} ms, "
                f"normal search {c['normal_search_ms']:.1f} ms ({c['normal_search_less_encode_ms']:.1f}); keyword "
                f"found it before refresh {c['keyword_found_before_refresh']}, after {c['keyword_found_after_refresh']}; "
                f"the writer: open {c['writer_open_s']:.1f} s, add {c['writer_add_s'] * 1000:.0f} ms, close "
                f"{c['writer_close_s']:.1f} s",
                flush=True,
            )
    finally:
        print("deleting what the run added and closing ...", flush=True)
        for size, engine in engines.items():
            started = time.perf_counter()
            engine.delete(added[size])
            deleted_s = time.perf_counter() - started
            counts = dict(engine.manifest["counts"])
            started = time.perf_counter()
            engine.close()
            results[size]["cleanup"] = {
                "delete_s": deleted_s,
                "close_s": time.perf_counter() - started,
                "counts": counts,
            }
    return {str(size): r for size, r in results.items()}


# ------------------------------------------------------------------ reporting


def goals(results: dict[str, Any]) -> dict[str, Any]:
    sizes = sorted(int(s) for s in results)
    small, large = results[str(sizes[0])], results[str(sizes[-1])]
    out: dict[str, Any] = {}
    if sizes[0] <= 10_000 and sizes[-1] >= 1_000_000:
        ratio = large["add"]["total"]["p50_ms"] / small["add"]["total"]["p50_ms"]
        write_ratio = large["add"]["write"]["p50_ms"] / small["add"]["write"]["p50_ms"]
        out["add"] = {"ratio_total_p50": ratio, "ratio_write_p50": write_ratio, "met": ratio <= GOALS["add_ratio"]}
        o = large["open"]
        out["open"] = {
            "open_s": o["open_s"],
            "encoder_s": o["encoder_s"],
            "engine_without_encoder_s": o["engine_without_encoder_s"],
            "open_and_first_search_s": o["open_s"] + o["first_search_s"],
            "rebuilt": False,  # a rebuild stops the run
            "met": o["open_s"] <= GOALS["open_s"],
            "met_without_encoder": o["engine_without_encoder_s"] <= GOALS["open_s"],
            "met_with_first_search": o["open_s"] + o["first_search_s"] <= GOALS["open_s"],
        }
    worst = max(r["freshness"]["behind"]["p50_ms"] for r in results.values())
    out["freshness"] = {"worst_behind_p50_ms": worst, "met": worst <= GOALS["freshness_p50_ms"]}
    return out


def markdown(report: dict[str, Any]) -> str:
    m, results, g = report["machine"], report["results"], report["goals"]
    yes = {True: "**met**", False: "**not met**"}
    lines = [
        f"# Writes to a shared FAISS collection: one add, open, disk, freshness ({report['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}, {m['platform']}; 1-minute load average "
        f"{report['load_average'][0]:.2f} at the start, {report['load_average'][1]:.2f} at the end (the machine is shared). "
        f"Commit {report['commit']}. Command: `benchmarks/shared_writes.py --sizes "
        + " ".join(str(s) for s in report["settings"]["sizes"])
        + "`.",
        "",
        "Collections built once through the engine (`Collection.put_documents` in batches of "
        f"{report['settings']['build_batch']:,} documents inside `engine.writing()`, then `engine.optimize()`), with "
        "synthetic data: one chunk per document, ~100 words of a Zipf vocabulary of pseudo-words plus three identifiers "
        "(~200 encoder tokens), and a 384-d unit vector near one of 1,024 random centres. `[store] faiss`, "
        '`auto_candidates = ["IVF"]`: HNSW32 is not built (at 1M it takes too long on 2 cores), so above 50k vectors '
        "the index is IVF. Each build passed `check_integrity() == []` with the manifest counts, the store and the "
        "keyword index at exactly the size. The sizes are measured side by side, round by round.",
        "",
        "## Goals",
        "",
    ]
    if "add" in g:
        a, o = g["add"], g["open"]
        lines += [
            f"- One document added at 1M chunks within {GOALS['add_ratio']:.0f}x of at 10k: p50 {a['ratio_total_p50']:.2f}x "
            f"(vecguard's write cost alone {a['ratio_write_p50']:.2f}x): {yes[a['met']]}.",
            f"- Open at 1M chunks in at most {GOALS['open_s']:.0f} s with no rebuild: a cold `vecguard.open` {o['open_s']:.2f} s "
            f"({yes[o['met']]}), of which the encoder (importing torch, transformers and sentence-transformers, then "
            f"the model) is {o['encoder_s']:.2f} s at any size; the collection's own part {o['engine_without_encoder_s']:.2f} s "
            f"({yes[o['met_without_encoder']]}); with the first search (which builds the payload records) "
            f"{o['open_and_first_search_s']:.2f} s ({yes[o['met_with_first_search']]}). "
            "No open rebuilt or repaired anything (every WARNING captured; the FAISS index loaded from its files each time).",
        ]
    f = g["freshness"]
    lines += [
        f"- The freshness check at most {GOALS['freshness_p50_ms']} ms p50: `collection.behind()` p50 "
        f"{f['worst_behind_p50_ms'] * 1000:.1f} us at worst: {yes[f['met']]}.",
        "",
        "## Adding one document (`engine.add([doc])`, p50 / p90 / max ms)",
        "",
        f"{REPETITIONS} adds per size after {WARMUPS} warm-ups, a new id each time, in one process holding all the "
        "collections open (each searched once first, as a server has); encode = the `ingest_encode` stage; write = "
        "total - encode. Parts are p50s of the write cost's pieces (wrapped methods, the lock's take + release only).",
        "",
        "| chunks | index | total | encode | write (vecguard) | lock | catch_up | chunking | put_documents | upsert | "
        "manifest x2 | keyword add | keyword save | rest |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, r in results.items():
        a, p = r["add"], r["add"]["parts_p50_ms"]
        lines.append(
            f"| {int(size):,} | {a['index']} | {a['total']['p50_ms']:.1f} / {a['total']['p90_ms']:.1f} / {a['total']['max_ms']:.1f} | "
            f"{a['encode']['p50_ms']:.1f} | {a['write']['p50_ms']:.1f} / {a['write']['p90_ms']:.1f} / {a['write']['max_ms']:.1f} | "
            f"{p['lock']:.2f} | {p['catch_up']:.2f} | {p['chunk']:.2f} | {p['put_documents']:.1f} | {p['upsert']:.1f} | "
            f"{p['manifest']:.1f} | {p['keyword_add']:.2f} | {p['keyword_save']:.1f} | {a['other_p50_ms']:.1f} |"
        )
    lines += [
        "",
        "## Opening (`vecguard.open(config, create=False)` in a fresh process, median of "
        f"{report['settings']['open_rounds']}, s)",
        "",
        "open = importing the encoder's libraries (torch, transformers, sentence-transformers: timed apart in the "
        "fresh process, before `vecguard.open`) + `vecguard.open`. "
        "Parts of `vecguard.open`: the encoder's model load, the store (SQLite opened, index.faiss checked against its CRC-32 and read), "
        "the version guard (probe sentences encoded), settle (the keyword files loaded and caught up, counts checked). "
        "The first search builds the FAISS store's payload records (every point's JSON, once) and the keyword "
        "statistics. Warm page cache (the files were read by the earlier rounds).",
        "",
        "| chunks | open | import vecguard (before) | libraries import | model load | store | guard | settle | open less the encoder | "
        "first search | its dense part | its keyword part | next searches | close | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, r in results.items():
        o, p, s = r["open"], r["open"]["parts_s"], r["open"]["first_search_stages_s"]
        lines.append(
            f"| {int(size):,} | {o['open_s']:.2f} | {o['import_s']:.2f} | {o['libraries_import_s']:.2f} | {p['encoder']:.2f} | {p['store']:.2f} | "
            f"{p.get('guard', 0):.2f} | {p.get('settle', 0):.2f} | {o['engine_without_encoder_s']:.2f} | "
            f"{o['first_search_s']:.2f} | {s.get('dense', 0):.2f} | {s.get('keyword', 0):.2f} | {o['search_s'] * 1000:.0f} ms | "
            f"{o['close_s']:.2f} | {o['peak_rss_mib']:,.0f} |"
        )
    lines += [
        "",
        "## Bytes on disk (allocated, MiB)",
        "",
        "Allocated blocks (as du counts). points.sqlite3 per chunk is beside what it holds raw per chunk (the 1,536 "
        "bytes of a 384-d float32 vector and the payload's canonical JSON, the text included); other = manifest.json "
        "(which holds the probe sentences' vectors) and write.lock.",
        "",
        "| chunks | points.sqlite3 (+wal) | index.faiss + .json | keyword/ | other | total | stored texts (UTF-8) | total / texts | "
        "points.sqlite3 per chunk / raw per chunk (bytes) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, r in results.items():
        d, p = r["disk"], r["disk"]["parts"]
        mib = 2**20
        lines.append(
            f"| {int(size):,} | {p['points.sqlite3'] / mib:,.1f} | {p['index.faiss + index.json'] / mib:,.1f} | "
            f"{p['keyword/'] / mib:,.1f} | {p['other'] / mib:,.2f} | {d['total'] / mib:,.1f} | {d['text_bytes'] / mib:,.1f} | "
            f"{d['total_over_text']:.1f}x | {d['points_bytes_per_chunk']:,.0f} / {d['raw_bytes_per_chunk']:,.0f} |"
        )
    lines += [
        "",
        "## Freshness (nothing changed; us) and catching up with another process's write (ms)",
        "",
        f"`behind()`, `refresh()` and the FAISS store's own `PRAGMA data_version` check, {FRESHNESS_CALLS:,} calls each. "
        f"Catching up: another process opens the collection, adds one document and closes; then here the first search, "
        f"`engine.refresh()`, and normal searches (median of 5); {report['settings']['catch_up_rounds']} rounds, medians. "
        "Search times in ms, with the time less the query's encode in brackets (the encode dominates and is noisy on a "
        "shared machine). Keyword found: a keyword search for the new document's unique identifier.",
        "",
        "| chunks | behind() p50 / p90 | refresh() p50 / p90 | data_version p50 / p90 | first search after the write | "
        "refresh() after it | normal search | keyword finds it before refresh / after | the writer: open / add / close |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, r in results.items():
        f, c = r["freshness"], r["catch_up"]
        before = sum(c["keyword_found_before_refresh"])
        after = sum(c["keyword_found_after_refresh"])
        n = len(c["keyword_found_after_refresh"])
        lines.append(
            f"| {int(size):,} | {f['behind']['p50_ms'] * 1000:.1f} / {f['behind']['p90_ms'] * 1000:.1f} | "
            f"{f['refresh']['p50_ms'] * 1000:.1f} / {f['refresh']['p90_ms'] * 1000:.1f} | "
            f"{f['data_version']['p50_ms'] * 1000:.1f} / {f['data_version']['p90_ms'] * 1000:.1f} | "
            f"{c['first_search_ms']:.1f} ({c['first_search_less_encode_ms']:.1f}) | {c['refresh_ms']:.1f} | "
            f"{c['normal_search_ms']:.1f} ({c['normal_search_less_encode_ms']:.1f}) | {before}/{n} / {after}/{n} | "
            f"{c['writer_open_s']:.1f} s / {c['writer_add_s'] * 1000:.0f} ms / {c['writer_close_s']:.1f} s |"
        )
    lines += ["", "## The builds", ""]
    lines += [
        "| chunks | batches | writing s | generating the data s | batch p50 / max s | optimize s (index) | close s | check s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, b in report["builds"].items():
        index = b.get("index") or {}
        lines.append(
            f"| {int(size):,} | {b['batches']} | {b['write_s']:.0f} | {b['generate_s']:.0f} | {b['batch_p50_s']:.2f} / "
            f"{b['batch_max_s']:.1f} | {b['optimize_s']:.0f} ({index.get('spec')}, nprobe {index.get('nprobe', '-')}) | "
            f"{b['close_s']:.0f} | {b['check_s']:.0f} |"
        )
    lines += ["", "## Notes", "", *[f"- {note}" for note in notes(report)], ""]
    return "\n".join(lines)


def notes(report: dict[str, Any]) -> list[str]:
    """What the figures say beyond the tables, from the figures themselves."""
    results, out = report["results"], []
    largest = results[str(max(int(s) for s in results))]
    out.append(
        "Limits: synthetic texts (pseudo-words, Zipf) and synthetic vectors (random centres plus noise), so search "
        "quality and the tuned nprobe say nothing about real data; one chunk per document; IVF only (HNSW32 not "
        "built); the FAISS files and SQLite pages were in the page cache (warm opens); one document per add, no "
        "concurrent writer during the timed adds."
    )
    missed = [s for s, r in results.items() if not all(r["catch_up"]["keyword_found_before_refresh"])]
    lagged = all(
        c["documents_counted_before_refresh"] < c["documents_counted_after_refresh"]
        for r in results.values()
        for c in r["catch_up"]["runs"]
    )
    if missed:
        out.append(
            "A library process's `engine.search` does not catch up with other processes first: `Engine.search` never "
            "calls `refresh()` (core/engine.py; `count()` and `info()` do, and the server calls `Service.refresh()` "
            "before its read lock). After another process committed a document, a keyword search here did not find "
            f"it until `refresh()` was called (at {', '.join(f'{int(s):,}' for s in missed)} chunks)"
            + (", and `engine.manifest`'s document count lagged by one" if lagged else "")
            + "; the dense side caught up by itself (`FaissStore._sync`). docs/architecture.md "
            '("The life of a search", step 1) and README ("Every read sees every committed write") say it does. '
            "So the first-search figures above hold the FAISS store's catch-up only; `refresh()` holds the rest."
        )
    manifest_ms = {s: r["add"]["parts_p50_ms"]["manifest"] for s, r in results.items()}
    write_ms = {s: r["add"]["write"]["p50_ms"] for s, r in results.items()}
    out.append(
        "The two manifest writes of every batch (the writing mark set, then cleared) are the largest part of "
        "vecguard's write cost at every size: "
        + ", ".join(f"{manifest_ms[s]:.1f} of {write_ms[s]:.1f} ms at {int(s):,}" for s in results)
        + f". manifest.json is {largest['disk']['manifest_json_bytes'] / 1024:,.0f} KiB (the probe sentences' vectors); "
        "each write encodes it as canonical JSON (sorted keys, every float), writes and fsyncs it, renames it, then "
        "commits a SQLite generation; encoding it alone takes "
        + ", ".join(f"{r['manifest_json_encode_ms']:.1f} ms" for r in results.values())
        + " (p50 of 50, per size), so twice per batch."
    )
    size = max(int(s) for s in results)
    o, c, d = largest["open"], largest["catch_up"], largest["disk"]
    out.append(
        f"Opening {size:,} chunks: the store's {o['parts_s']['store']:.2f} s reads index.faiss "
        f"({d['parts']['index.faiss + index.json'] / 2**20:,.0f} MiB) twice, once for its CRC-32 and once to load it; "
        f"settle's {o['parts_s'].get('settle', 0):.2f} s loads the keyword files, catches them up and counts the "
        "points. The first search then takes "
        f"{o['first_search_s']:.1f} s, its dense part {o['first_search_stages_s'].get('dense', 0):.1f} s: the FAISS "
        "store builds its payload records (every point's id and payload JSON read from SQLite and held in memory, "
        "`records.PayloadRecords.ready`; joined by SQLite since b737c87: at 6f47c32, where Python joined them and a "
        "`\\d{19}` regex checked each one, the first search at 1M took 15.3 s, ~58% of it in that regex by cProfile). "
        f"The process's peak RSS was {o['peak_rss_mib']:,.0f} MiB."
    )
    out.append(
        f"A process that opens {size:,} chunks, adds one document and closes spends {c['writer_open_s']:.1f} s "
        f"opening, {c['writer_add_s'] * 1000:.0f} ms adding and {c['writer_close_s']:.1f} s closing: the index files "
        "of the build in service are rewritten only once 1% of the collection changed since they were saved "
        "(`policy.save_due`; at 6f47c32 every short-lived writer rewrote index.faiss, 3.4 s at 1M)."
    )
    small = results[str(min(int(s) for s in results))]["catch_up"]
    out.append(
        f"A normal search less its query encode takes {small['normal_search_less_encode_ms']:.1f} ms at the smallest "
        f"size and {c['normal_search_less_encode_ms']:.1f} ms at {size:,} chunks; a quick look at 1M put most of it in "
        "the keyword side (BM25 `postings.scores` over the frequent words' postings: 24-176 ms for a keyword-only "
        "search of 3-5 words), outside what this benchmark measures."
    )
    builds = report["builds"]
    b = builds[str(max(int(s) for s in builds))]
    w = b["write_parts_s"]
    out.append(
        f"The build of {b['size']:,} chunks: {b['write_s']:.0f} s of writes in {b['batches']} batches of "
        f"{b['build_batch']:,} documents, of which the keyword index's add (its tokenizer) {w.get('keyword_add', 0):.0f} s, "
        f"its save_changes {w.get('keyword_save', 0):.0f} s, the store's upserts {w.get('upsert', 0):.0f} s and the "
        f"manifest writes {w.get('manifest', 0):.0f} s; generating the data {b['generate_s']:.0f} s; `optimize()` "
        f"{b['optimize_s']:.0f} s ({(b.get('index') or {}).get('spec')}) on the shared machine. A separate "
        "timing of optimize's pieces on the built 1M collection (2026-12-01, a quieter moment): k-means on the "
        "256,000 sampled vectors (64 per cell x 4,000 cells) 133 s, adding the 1M vectors 55 s (16 blocks of 65,536), "
        "the exact top-10 of the 200 tuning queries 12 s, reading the snapshot 8 s."
    )
    if 2048 < d["raw_bytes_per_chunk"] < 4096 and d["points_bytes_per_chunk"] > 3500:
        out.append(
            f"points.sqlite3 takes {d['points_bytes_per_chunk']:,.0f} bytes a chunk for {d['raw_bytes_per_chunk']:,.0f} "
            "bytes of vector and payload: a row of that size does not fit twice in a 4 KiB SQLite page, so each row "
            "takes a page of its own and the rest of the page stays empty. The vectors are held a second time in "
            "index.faiss (IVF,Flat: 1,536 bytes a chunk plus the ids)."
        )
    return out


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--build-only", action="store_true", help="build (or check) the collections and stop")
    parser.add_argument("--save-as", default="shared_writes", help="results/<name>.json, .md and .png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    built = {size: build(size) for size in args.sizes}
    if args.build_only:
        return
    results = measure(sorted(args.sizes), built)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": commit(),
        "load_average": [load_before, os.getloadavg()[0]],
        "run_s": time.perf_counter() - started,
        "settings": {
            "sizes": sorted(args.sizes),
            "build_batch": BUILD_BATCH,
            "warmups": WARMUPS,
            "repetitions": REPETITIONS,
            "open_rounds": OPEN_ROUNDS,
            "freshness_calls": FRESHNESS_CALLS,
            "catch_up_rounds": CATCH_UP_ROUNDS,
            "goals": GOALS,
        },
        "builds": {str(size): b for size, b in built.items()},
        "results": results,
    }
    report["goals"] = goals(results)
    save(args.save_as, report, markdown(report))
    import matplotlib
    from plots import shared_writes_plot

    matplotlib.use("Agg")
    shared_writes_plot(report, RESULTS / f"{args.save_as}.png")
    print(markdown(report))


if __name__ == "__main__":
    main()

"""The bm25 keyword index's files: incremental saves, load time, bytes on disk and memory at 10k, 100k and 1M chunks.

    .venv/bin/python benchmarks/keyword_files.py --baseline 665bc9f   # 10k, 100k and 1M chunks: ~4 min on 2 CPUs
    .venv/bin/python benchmarks/keyword_files.py --sizes 10000 100000

Chunks: synthetic, ~100 tokens each: ~88 words drawn from a Zipf vocabulary (200,000 pseudo-words, s = 1.07) and
three identifiers (``ORD-2007-00417``: 50 prefixes, 26 years, a number) drawn from a pool of 1.5 identifiers a
chunk, so most identifiers are rare, as order and ticket numbers are; each identifier gives the tokenizer four
tokens (its pieces and itself). A document is 5 chunks.

Each size: the collection is written as segments of 125,000 chunks (one below that: the files a saved rebuild
leaves), built from the token arrays directly (no tokenizer, no encoder). Measured:

- in a fresh process, ``load`` (median of 3), the resident memory after it and the first search (which computes
  the vocabulary's mean idf); bytes on disk;
- at 1M, the worst merge: the eight segments merged into one, as the eighth 125k segment would trigger it (time,
  and the peak memory of its process), then the same load figures;
- ``save_changes`` of one new 5-chunk document (the engine after one small write; 40 saves) and of a 64-document
  batch (320 chunks; 12 saves), each after its ``add``, on top of that collection: medians and maxima (a maximum
  holds the merges a save triggered). An ``os.sync()`` comes first, so the build's writes are not still draining
  into their fsyncs;
- at 10k and 100k, the collection grown through ``add`` + ``save_changes`` in batches of 320 chunks (every save
  timed, merges included), then loaded and searched (p50 over 300 queries of 3-8 terms, words and identifiers),
  and a complete ``save`` of it; beside the earlier code (``--baseline REV``: plugins/bm25.py at that git
  revision, which saved everything to bm25.json) on the same chunks and queries.

Results: benchmarks/results/keyword_files.{json,md}; benchmarks/plots.py draws every save of the grown collections
(results/keyword_saves.png).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, percentile, save  # noqa: E402

WORDS = 200_000
ZIPF_S = 1.07
PREFIXES = 50
YEARS = 26
IDENTIFIERS_PER_CHUNK = 3
IDENTIFIER_POOL_PER_CHUNK = 1.5
CHUNKS_PER_DOCUMENT = 5
SEGMENT_CHUNKS = 125_000
BLOCK = 1000  # chunks drawn from one seed
CONSONANTS = "bdfgklmnprstvz"
SYLLABLES = [c + v for c in CONSONANTS for v in "aeiou"]


class Corpus:
    """Deterministic synthetic chunks: token ids (for building segments) and texts (for ``add``) of the same chunks.

    Term ids: words [0, WORDS), then prefixes, years, numbers, then whole identifiers (by their pool index)."""

    def __init__(self, chunks: int, seed: int = 7) -> None:
        from vecguard.plugins.bm25 import ENGLISH_STOPWORDS

        self.seed = seed
        self.pool = max(1000, int(IDENTIFIER_POOL_PER_CHUNK * chunks))
        self.numbers = self.pool // (PREFIXES * YEARS) + 1
        words, n = [], 0
        while len(words) < WORDS:
            spelled, rest = [], n
            for _ in range(2 if n < len(SYLLABLES) ** 2 else 3):  # never a stopword, never an identifier
                spelled.append(SYLLABLES[rest % len(SYLLABLES)])
                rest //= len(SYLLABLES)
            word = "".join(spelled)
            if word not in ENGLISH_STOPWORDS:
                words.append(word)
            n += 1
        self.words = np.array(words, dtype=object)
        self.prefixes = [a + b for a in CONSONANTS for b in CONSONANTS][:PREFIXES]  # no vowel: never a word
        weights = 1.0 / np.arange(1, WORDS + 1) ** ZIPF_S
        self.cdf = np.cumsum(weights) / weights.sum()
        self.first_prefix = WORDS
        self.first_year = self.first_prefix + PREFIXES
        self.first_number = self.first_year + YEARS
        self.first_whole = self.first_number + self.numbers

    def _draw(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(word ranks per chunk CSR offsets, word ranks, identifier pool indexes (n, 3)) of chunks start..start+n,
        the same whichever slices they are asked in (drawn in blocks of BLOCK chunks, each from its own seed)."""
        counts, ranks, identifiers = [], [], []
        for block in range(start // BLOCK, (start + n - 1) // BLOCK + 1):
            rng = np.random.default_rng([self.seed, block])
            block_counts = rng.integers(70, 107, size=BLOCK)
            block_ranks = np.minimum(np.searchsorted(self.cdf, rng.random(block_counts.sum())), WORDS - 1)
            block_identifiers = rng.integers(0, self.pool, size=(BLOCK, IDENTIFIERS_PER_CHUNK))
            first, last = max(start, block * BLOCK) - block * BLOCK, min(start + n, (block + 1) * BLOCK) - block * BLOCK
            offsets = np.concatenate([[0], np.cumsum(block_counts)])
            counts.append(block_counts[first:last])
            ranks.append(block_ranks[offsets[first] : offsets[last]])
            identifiers.append(block_identifiers[first:last])
        return (
            np.concatenate([[0], np.cumsum(np.concatenate(counts))]),
            np.concatenate(ranks),
            np.concatenate(identifiers),
        )

    def _identifier_parts(self, pool_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return pool_index % PREFIXES, (pool_index // PREFIXES) % YEARS, pool_index // (PREFIXES * YEARS)

    def forward(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, term ids, term frequencies): each chunk's distinct terms, as the tokenizer would give them."""
        offsets, ranks, pool_index = self._draw(start, n)
        prefix, year, number = self._identifier_parts(pool_index)
        identifier_terms = np.stack(
            [
                prefix + self.first_prefix,
                year + self.first_year,
                number + self.first_number,
                pool_index + self.first_whole,
            ],
            axis=2,
        ).reshape(n, -1)
        chunk_of = np.concatenate(
            [np.repeat(np.arange(n), np.diff(offsets)), np.repeat(np.arange(n), identifier_terms.shape[1])]
        )
        terms = np.concatenate([ranks, identifier_terms.ravel()])
        keys, tfs = np.unique(chunk_of.astype(np.int64) * (self.first_whole + self.pool) + terms, return_counts=True)
        chunks = keys // (self.first_whole + self.pool)
        return (
            np.concatenate([[0], np.cumsum(np.bincount(chunks, minlength=n))]),
            keys % (self.first_whole + self.pool),
            tfs,
        )

    def term(self, term_id: int) -> str:
        if term_id < self.first_prefix:
            return self.words[term_id]
        if term_id < self.first_year:
            return self.prefixes[term_id - self.first_prefix]
        if term_id < self.first_number:
            return str(2000 + term_id - self.first_year)
        if term_id < self.first_whole:
            return f"{term_id - self.first_number:05d}"
        return self.identifier(term_id - self.first_whole).lower()

    def identifier(self, pool_index: int) -> str:
        prefix, year, number = self._identifier_parts(pool_index)
        return f"{self.prefixes[prefix].upper()}-{2000 + year}-{number:05d}"

    def texts(self, start: int, n: int) -> list[str]:
        offsets, ranks, pool_index = self._draw(start, n)
        words = self.words[ranks]
        return [
            " ".join(words[offsets[i] : offsets[i + 1]]) + " " + " ".join(map(self.identifier, pool_index[i].tolist()))
            for i in range(n)
        ]

    def queries(self, n: int, chunks: int, seed: int = 11) -> list[str]:
        """Half 3-8 words of the vocabulary's first 20,000 (Zipf-weighted), half two words and an identifier held."""
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            words = self.words[np.minimum(np.searchsorted(self.cdf, rng.random(rng.integers(3, 9))), 20_000)]
            if i % 2:
                _, _, pool_index = self._draw(int(rng.integers(0, max(1, chunks - 1))), 1)
                out.append(" ".join(words[:2]) + " " + self.identifier(int(pool_index[0, 0])))
            else:
                out.append(" ".join(words))
        return out


def chunk_id(i: int) -> str:
    return f"doc-{i // CHUNKS_PER_DOCUMENT:07d}#{i % CHUNKS_PER_DOCUMENT}"


def bulk_segment(corpus: Corpus, start: int, n: int):
    """A segment of chunks start..start+n built from their token arrays."""
    from vecguard.plugins.bm25.segment import NO_KEYS, build

    offsets, terms, tfs = corpus.forward(start, n)
    distinct, local = np.unique(terms, return_inverse=True)
    strings = [corpus.term(int(t)) for t in distinct]
    return build([chunk_id(i) for i in range(start, start + n)], offsets, local, tfs, strings, NO_KEYS)


def write_collection(corpus: Corpus, chunks: int, directory: Path) -> list[int]:
    """Publish the first ``chunks`` chunks as segments of SEGMENT_CHUNKS, each built and written in turn; their sizes."""
    from vecguard.plugins.bm25 import BM25Index
    from vecguard.plugins.bm25.files import SegmentFiles

    sizes = [min(SEGMENT_CHUNKS, chunks - start) for start in range(0, chunks, SEGMENT_CHUNKS)]
    segments = (bulk_segment(corpus, SEGMENT_CHUNKS * i, size) for i, size in enumerate(sizes))
    SegmentFiles(directory).replace(segments, BM25Index().settings(), 0)
    return sizes


IN_A_FRESH_PROCESS = """
import json, resource, sys, time
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
if len(sys.argv) > 4:  # the earlier code, from its file
    import importlib.util
    spec = importlib.util.spec_from_file_location("bm25_baseline", sys.argv[4])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    BM25Index = module.BM25Index
else:
    from vecguard.plugins.bm25 import BM25Index
index, before = BM25Index(), rss()
started = time.perf_counter()
assert index.load(sys.argv[1])
out = {"rss_before_mib": before, "load_s": time.perf_counter() - started, "rss_after_mib": rss()}
started = time.perf_counter()
index.search(sys.argv[3], 100)
out.update(first_search_ms=(time.perf_counter() - started) * 1000, rss_after_first_search_mib=rss())
if sys.argv[2] == "merge":
    started = time.perf_counter()
    index.save_changes(sys.argv[1], [], 1)
    out["merge_s"] = time.perf_counter() - started
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def in_a_fresh_process(directory: Path, query: str, merge: bool = False, baseline: Path | None = None) -> dict:
    """Load ``directory`` in a new Python process: resident memory (MiB) before and after, load time, the first
    search's time; with ``merge``, then a save that merges (its time, and the process's peak memory)."""
    command = [sys.executable, "-c", IN_A_FRESH_PROCESS, str(directory), "merge" if merge else "load", query]
    if baseline is not None:
        command.append(str(baseline))
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def loads(directory: Path, query: str, runs: int = 3, baseline: Path | None = None) -> dict:
    """``in_a_fresh_process`` ``runs`` times: the first run's figures, with the median load time of all."""
    found = [in_a_fresh_process(directory, query, baseline=baseline) for _ in range(runs)]
    return {**found[0], "load_s": statistics.median(f["load_s"] for f in found)}


def timed(function, *args) -> float:
    """Seconds ``function(*args)`` took."""
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def measure_saves(corpus: Corpus, chunks: int, directory: Path, rounds: dict[str, int]) -> dict:
    """save_changes of new documents on top of the collection in ``directory`` (loaded), each after its add."""
    from vecguard.plugins.bm25 import BM25Index

    os.sync()  # the gigabyte the collection's build wrote would otherwise still be draining into these fsyncs
    index = BM25Index()
    index.load(directory)
    out, next_chunk, token = {}, chunks, 1
    for name, documents in (("one_document", 1), ("batch_64_documents", 64)):
        n, adds, saves = documents * CHUNKS_PER_DOCUMENT, [], []
        for _ in range(rounds[name]):
            ids = [chunk_id(i) for i in range(next_chunk, next_chunk + n)]
            texts = corpus.texts(next_chunk, n)
            adds.append(timed(index.add, ids, texts))
            saves.append(timed(index.save_changes, directory, ids, token))
            next_chunk, token = next_chunk + n, token + 1
        out[name] = {
            "chunks": n,
            "saves": len(saves),
            "save_p50_ms": statistics.median(saves) * 1000,
            "save_max_ms": max(saves) * 1000,
            "add_p50_ms": statistics.median(adds) * 1000,
        }
    return out


def disk_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir() if path.is_file())


def baseline_file(revision: str, work: Path) -> Path:
    """plugins/bm25.py as it was at ``revision`` (git), written to a file of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:plugins/bm25.py"], cwd=HERE.parent, capture_output=True, text=True, check=True
    ).stdout
    path = work / "bm25_baseline.py"
    path.write_text(source, encoding="utf-8")
    return path


def baseline_class(path: Path):
    spec = importlib.util.spec_from_file_location("bm25_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BM25Index


def search_p50(index, query_set: list[str], rounds: int = 3) -> float:
    latencies = []
    for _ in range(rounds):
        for query in query_set:
            latencies.append(timed(index.search, query, 100))
    return statistics.median(latencies) * 1000


def grown(corpus: Corpus, chunks: int, directory: Path, query_set: list[str], baseline: Path | None) -> dict:
    """The collection grown by add + save_changes in batches of 320 chunks, then loaded and searched; beside the
    earlier code's save (bm25.json), load and search of the same chunks."""
    from vecguard.plugins.bm25 import BM25Index
    from vecguard.plugins.bm25.files import SegmentFiles

    os.sync()
    writer, saves, batch = BM25Index(), [], 64 * CHUNKS_PER_DOCUMENT
    for token, start in enumerate(range(0, chunks, batch), 1):
        ids = [chunk_id(i) for i in range(start, min(chunks, start + batch))]
        writer.add(ids, corpus.texts(start, len(ids)))
        saves.append(timed(writer.save_changes, directory, ids, token))
    reader = BM25Index()
    reader.load(directory)
    whole = directory.parent / "complete"
    out = {
        "complete_save_s": timed(writer.save, whole),  # the writer holds every chunk in memory, as after a rebuild
        "saves": len(saves),
        "save_p50_ms": statistics.median(saves) * 1000,
        "save_p90_ms": percentile(saves, 0.9) * 1000,
        "save_max_ms": max(saves) * 1000,
        "save_ms": [round(took * 1000, 2) for took in saves],  # every save, in order (plots.py draws them)
        "segments": len(SegmentFiles(directory).manifest().segments),
        "bytes": disk_bytes(directory),
        "top10_same_as_writer": sum(
            [k for k, _ in reader.search(q, 10)] == [k for k, _ in writer.search(q, 10)] for q in query_set
        ),
        **loads(directory, query_set[0]),
    }
    del writer
    shutil.rmtree(whole)
    gc.collect()
    if baseline is not None:
        old = baseline_class(baseline)()
        for start in range(0, chunks, 10_000):
            n = min(10_000, chunks - start)
            old.add([chunk_id(i) for i in range(start, start + n)], corpus.texts(start, n))
        old_dir = directory.parent / "baseline"
        old_dir.mkdir()
        out["baseline"] = {
            "save_s": timed(old.save, old_dir),
            "bytes": disk_bytes(old_dir),
            "search_p50_ms": search_p50(old, query_set),
            "top10_same": sum(
                [k for k, _ in old.search(q, 10)] == [k for k, _ in reader.search(q, 10)] for q in query_set
            ),
            **loads(old_dir, query_set[0], runs=1, baseline=baseline),
        }
        shutil.rmtree(old_dir)
    out["search_p50_ms"] = search_p50(reader, query_set)
    return out


def measure(chunks: int, baseline: Path | None, work: Path) -> dict:
    corpus = Corpus(chunks + 100_000)
    query = corpus.queries(1, chunks)[0]
    directory = work / f"bulk-{chunks}"
    directory.mkdir()
    started = time.perf_counter()
    sizes = write_collection(corpus, chunks, directory)
    out: dict = {"chunks": chunks, "segments": len(sizes), "write_s": time.perf_counter() - started}
    out.update(bytes=disk_bytes(directory), **loads(directory, query))
    print(
        f"{chunks:>9,} chunks in {len(sizes)} segments: {out['bytes'] / 2**20:,.0f} MiB, load {out['load_s']:.2f} s, "
        f"RSS after load {out['rss_after_mib']:.0f} MiB, first search {out['first_search_ms']:.0f} ms",
        flush=True,
    )
    if len(sizes) >= 8:
        out["worst_merge"] = in_a_fresh_process(directory, query, merge=True)
        out["merged"] = {"bytes": disk_bytes(directory), **loads(directory, query)}
        print(
            f"{'':>9} worst merge (8 segments -> 1) {out['worst_merge']['merge_s']:.1f} s, peak RSS "
            f"{out['worst_merge']['peak_rss_mib']:,.0f} MiB; then {out['merged']['bytes'] / 2**20:,.0f} MiB, "
            f"load {out['merged']['load_s']:.2f} s, RSS after load {out['merged']['rss_after_mib']:.0f} MiB",
            flush=True,
        )
    out["saves"] = measure_saves(corpus, chunks, directory, {"one_document": 40, "batch_64_documents": 12})
    for name, r in out["saves"].items():
        print(
            f"{'':>9} save_changes {name}: p50 {r['save_p50_ms']:.1f} ms, max {r['save_max_ms']:.1f} ms "
            f"(add p50 {r['add_p50_ms']:.1f} ms)",
            flush=True,
        )
    shutil.rmtree(directory)
    if chunks <= 100_000:
        directory = work / f"grown-{chunks}"
        directory.mkdir()
        out["grown"] = grown(corpus, chunks, directory, corpus.queries(300, chunks), baseline)
        g = out["grown"]
        print(
            f"{'':>9} grown by {g['saves']} saves of 320 chunks: save p50 {g['save_p50_ms']:.1f} ms, max "
            f"{g['save_max_ms']:.0f} ms, {g['segments']} segments, load {g['load_s']:.2f} s, search p50 "
            f"{g['search_p50_ms']:.2f} ms",
            flush=True,
        )
        if "baseline" in g:
            b = g["baseline"]
            print(
                f"{'':>9} earlier code: save {b['save_s']:.2f} s, {b['bytes'] / 2**20:.0f} MiB, load {b['load_s']:.2f} s, "
                f"RSS after load {b['rss_after_mib']:.0f} MiB, search p50 {b['search_p50_ms']:.2f} ms, "
                f"top 10 the same {b['top10_same']}/300",
                flush=True,
            )
        shutil.rmtree(directory)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--baseline", help="git revision whose plugins/bm25.py to measure beside (10k and 100k)")
    parser.add_argument("--work", type=Path, help="folder for the files (default: a temporary one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="keyword-files-", dir=args.work))
    try:
        baseline = baseline_file(args.baseline, work) if args.baseline else None
        results = {str(size): measure(size, baseline, work) for size in args.sizes}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "settings": {"sizes": args.sizes, "baseline": args.baseline, "segment_chunks": SEGMENT_CHUNKS},
        "results": results,
    }
    save("keyword_files", report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    m, results = report["machine"], report["results"]
    baseline = report["settings"]["baseline"]
    lines = [
        f"# Keyword index files: incremental saves, load, disk and memory ({report['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}; load average at the end "
        f"{report['load_average'][0]:.2f}. Synthetic chunks of ~100 tokens (Zipf words and three identifiers each), "
        "documents of 5 chunks. Command: `benchmarks/keyword_files.py"
        + (f" --baseline {baseline}" if baseline else "")
        + "`. Loads in a fresh process (median of 3; RSS: resident memory after the load, the Python process "
        "included); saves on top of the collection, each after its `add`.",
        "",
        "| chunks | segments of 125k | on disk MiB | load s | first search ms | RSS after load MiB | "
        "save_changes 1 doc (5 chunks) p50 / max ms | save_changes 64 docs (320 chunks) p50 / max ms | "
        "add 64 docs p50 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, r in results.items():
        one, batch = r["saves"]["one_document"], r["saves"]["batch_64_documents"]
        lines.append(
            f"| {int(size):,} | {r['segments']} | {r['bytes'] / 2**20:,.0f} | {r['load_s']:.2f} | "
            f"{r['first_search_ms']:.0f} | {r['rss_after_mib']:,.0f} | {one['save_p50_ms']:.1f} / "
            f"{one['save_max_ms']:.0f} | {batch['save_p50_ms']:.1f} / {batch['save_max_ms']:.0f} | "
            f"{batch['add_p50_ms']:.0f} |"
        )
    for size, r in results.items():
        if "worst_merge" in r:
            w, after = r["worst_merge"], r["merged"]
            lines += [
                "",
                f"Worst merge at {int(size):,} chunks: the eight segments into one, {w['merge_s']:.1f} s (peak RSS of "
                f"the process {w['peak_rss_mib']:,.0f} MiB); then {after['bytes'] / 2**20:,.0f} MiB on disk, load "
                f"{after['load_s']:.2f} s, first search {after['first_search_ms']:.0f} ms, RSS after load "
                f"{after['rss_after_mib']:,.0f} MiB.",
            ]
    grown_rows = [(size, r["grown"]) for size, r in results.items() if "grown" in r]
    if grown_rows:
        lines += [
            "",
            "Grown through `add` + `save_changes` in batches of 320 chunks (every save timed, merges included), then "
            "loaded by another process and searched: 300 queries of 3-8 terms, k=100, 3 rounds, p50; a complete `save` "
            "of the same chunks from memory (as after a rebuild)"
            + (f"; beside the code at {baseline}, which saved everything to bm25.json" if baseline else "")
            + ":",
            "",
            "| chunks | saves | save p50 / p90 / max ms | segments | on disk MiB | load s | RSS after load MiB | "
            "search p50 ms | complete save s | earlier: save s | earlier: on disk MiB | earlier: load s | "
            "earlier: RSS MiB | earlier: search p50 ms | top 10 the same |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for size, g in grown_rows:
            b = g.get("baseline")
            old = (
                f"{b['save_s']:.2f} | {b['bytes'] / 2**20:,.1f} | {b['load_s']:.2f} | {b['rss_after_mib']:,.0f} | "
                f"{b['search_p50_ms']:.2f} | {b['top10_same']}/300"
                if b
                else "- | - | - | - | - | -"
            )
            lines.append(
                f"| {int(size):,} | {g['saves']} | {g['save_p50_ms']:.1f} / {g['save_p90_ms']:.0f} / "
                f"{g['save_max_ms']:.0f} | {g['segments']} | {g['bytes'] / 2**20:,.1f} | {g['load_s']:.2f} | "
                f"{g['rss_after_mib']:,.0f} | {g['search_p50_ms']:.2f} | {g['complete_save_s']:.2f} | {old} |"
            )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

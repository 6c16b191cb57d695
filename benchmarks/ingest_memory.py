"""Peak memory of `vecguard index` streaming a JSONL file: 20k and 200k documents side by side.

    .venv/bin/python benchmarks/ingest_memory.py                       # 20000 and 200000 documents
    .venv/bin/python benchmarks/ingest_memory.py --sizes 2000 20000

Documents are short (one CWE sentence each, made unique by a number) so that
200k of them encode in minutes on 2 CPUs; what is measured is what grows with
the file. Each size runs `vecguard index -q` once in a fresh process into a
fresh FAISS + BM25 collection (precision "auto") and reads its peak RSS
(``ru_maxrss`` of the child). The reading, chunking and encoding pipeline holds
one batch (``batch_documents``) at a time; the FAISS index (1.5 KB per 384-d
chunk) and the BM25 postings are held in memory by design and grow with the
collection, so the table splits the peak into that expected growth and the rest.
Results: benchmarks/results/ingest_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, save  # noqa: E402

CONFIG = """\
[encoder]
plugin = "sentence-transformers"
precision = "auto"

[store]
plugin = "faiss"
path = "index"

[chunking]
batch_documents = 64
"""


def sentences() -> list[str]:
    from corpora import cwe_documents

    found = []
    for document in cwe_documents():
        found += [s.strip() for s in document["text"].split(". ") if 30 <= len(s.strip()) <= 160]
    return found


def write_corpus(path: Path, n: int, pool: list[str]) -> int:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"d{i}", "text": f"{pool[i % len(pool)]} (note {i})"}) + "\n")
    return path.stat().st_size


def run_index(work: Path, data: Path) -> dict:
    (work / "vecguard.toml").write_text(CONFIG, encoding="utf-8")
    command = [str(Path(sys.executable).with_name("vecguard")), "index", "--config", "vecguard.toml", str(data), "-q"]
    # A fresh interpreter per size: ru_maxrss of the children is the largest child so far, so run through a shim
    # that reports its own peak.
    shim = (
        "import resource, subprocess, sys, json\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': done.returncode, 'out': done.stdout, 'err': done.stderr[-2000:],"
        " 'peak_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", shim, *command],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "VECGUARD_CACHE_DIR": str(work / "cache")},
    )
    seconds = time.perf_counter() - started
    result = json.loads(done.stdout)
    if result["rc"]:
        sys.exit(f"vecguard index failed: {result['err']}")
    return {"seconds": seconds, "peak_rss_mib": result["peak_kib"] / 1024, "output": result["out"].strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    args = parser.parse_args()
    pool = sentences()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="vecguard-ingest-memory-") as folder:
            work = Path(folder)
            data = work / "docs.jsonl"
            size = write_corpus(data, n, pool)
            row = {"documents": n, "file_mib": size / 2**20, **run_index(work, data)}
            index_bytes = (work / "index" / "index.faiss").stat().st_size
            row["faiss_index_mib"] = index_bytes / 2**20
            rows.append(row)
            print(
                f"{n} documents ({row['file_mib']:.1f} MiB file): peak RSS {row['peak_rss_mib']:.0f} MiB, "
                f"FAISS index {row['faiss_index_mib']:.0f} MiB, {row['seconds']:.0f} s; {row['output']}",
                flush=True,
            )
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"config": CONFIG, "sizes": args.sizes},
        "rows": rows,
    }
    lines = [
        f"# `vecguard index` peak memory while streaming ({report['date']})",
        "",
        "| documents | file MiB | peak RSS MiB | FAISS index MiB | peak minus index MiB | seconds | docs/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['documents']:,} | {r['file_mib']:.1f} | {r['peak_rss_mib']:.0f} | {r['faiss_index_mib']:.0f} | "
            f"{r['peak_rss_mib'] - r['faiss_index_mib']:.0f} | {r['seconds']:.0f} | {r['documents'] / r['seconds']:.0f} |"
        )
    lines += [
        "",
        "`peak minus index` is what the pipeline, the model, BM25 and SQLite's cache take beside the FAISS index "
        "that is held in memory by design.",
        "",
    ]
    save("ingest_memory", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Searches while writes stream in: `vecguard serve` with N search clients, quiet and then beside writer clients.

    .venv/bin/python benchmarks/serve_writes.py                 # 2,000 documents, 5 searchers, 2 writers, 20 s a phase

The collection: the first 2,000 CWE passages (as serve_load.py), FAISS Flat + BM25, cached
under ~/.cache/vecguard/bench/. One `vecguard serve` subprocess with a write token. Three
phases of S seconds each, in one run: quiet (the search clients alone), writes (the same
search clients while writer clients each POST 16 new passages at a time, as fast as the
server takes them), and quiet again. Throughout, a probe GETs /healthz every 200 ms from a
process of its own (the clients' threads here would delay its timing).
Reported: each phase's search p50 / p99 and searches per second, the writes' documents per
second, and /healthz p50 / max. The issue's goals: search p50 while writing within 2x the
quiet p50 (the median of the two quiet phases), /healthz always within 100 ms.
Results: benchmarks/results/serve_writes.{json,md}; with a checkout of an earlier commit first on
PYTHONPATH and --save-as serve_writes-before, the same figures for that code.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, percentile, save  # noqa: E402
from corpora import cwe_passages  # noqa: E402
from serve_load import collection, queries, start_server, wait_ready  # noqa: E402

TOKEN = "bench-write-token"
PROBE = """
import json, sys, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
stop, found = time.perf_counter() + seconds, []
with httpx.Client(base_url=url, timeout=30) as client:
    while time.perf_counter() < stop:
        started = time.perf_counter()
        client.get("/healthz")
        found.append(time.perf_counter() - started)
        time.sleep(0.2)
print(json.dumps(found))
"""


def phase(url: str, query_set: list[str], searchers: int, writers: int, seconds: float, fresh: list[dict]) -> dict:
    import httpx

    searches: list[float] = []
    probes: list[float] = []
    written = [0]
    errors = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def search(number: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            i = number
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = client.post("/search", json={"query": query_set[i % len(query_set)], "k": 10})
                with lock:
                    searches.append(time.perf_counter() - started)
                    errors[0] += response.status_code != 200
                i += searchers

    def write(number: int) -> None:
        with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            while time.perf_counter() < stop:
                with lock:
                    batch, fresh[:] = fresh[:16], fresh[16:]
                if not batch:
                    return
                response = client.post("/documents", json={"documents": batch})
                with lock:
                    written[0] += len(batch) if response.status_code == 200 else 0
                    errors[0] += response.status_code != 200

    def probe() -> None:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, url, str(seconds)], capture_output=True, text=True, check=True
        )
        probes.extend(json.loads(done.stdout))

    threads = [threading.Thread(target=search, args=(n,)) for n in range(searchers)]
    threads += [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    threads.append(threading.Thread(target=probe))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ms = 1000.0
    return {
        "searchers": searchers,
        "writers": writers,
        "seconds": elapsed,
        "searches": len(searches),
        "searches_per_s": len(searches) / elapsed,
        "search_p50_ms": statistics.median(searches) * ms,
        "search_p99_ms": percentile(searches, 0.99) * ms,
        "documents_written": written[0],
        "documents_per_s": written[0] / elapsed,
        "errors": errors[0],
        "healthz_p50_ms": statistics.median(probes) * ms,
        "healthz_max_ms": max(probes) * ms,
        "probes": len(probes),
    }


def vecguard_from() -> str:
    """Which vecguard the server ran (a checkout placed first on PYTHONPATH measures an earlier commit)."""
    import vecguard

    return str(Path(vecguard.__file__).parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=2_000)
    parser.add_argument("--searchers", type=int, default=5)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--save-as", default="serve_writes", help="results/<name>.{json,md}")
    parser.add_argument("--label", default="", help="which code this is, for the results (e.g. a commit)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import httpx

    config = collection(args.documents)
    query_set = queries(200)
    passages = list(itertools.islice(cwe_passages(), args.documents, args.documents + 4_000))
    fresh = [
        {**p, "id": f"streamed-{i}", "metadata": {**p.get("metadata", {}), "streamed": True}}
        for i, p in enumerate(passages)
    ]
    work = Path(tempfile.mkdtemp(prefix="vecguard-serve-writes-"))
    process, url = start_server(
        config, work, server='write_token_env = "VECGUARD_BENCH_TOKEN"\n', env={"VECGUARD_BENCH_TOKEN": TOKEN}
    )
    try:
        wait_ready(url, process, work)
        for query in query_set[:20]:
            httpx.post(f"{url}/search", json={"query": query, "k": 10}, timeout=60)
        phases = {
            "quiet": phase(url, query_set, args.searchers, 0, args.seconds, fresh),
            "writes": phase(url, query_set, args.searchers, args.writers, args.seconds, fresh),
            "quiet again": phase(url, query_set, args.searchers, 0, args.seconds, fresh),
        }
        httpx.request(
            "DELETE",
            f"{url}/documents",
            json={"filter": {"streamed": True}},
            timeout=600,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )  # the cached collection goes back as it was
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    quiet = statistics.median([phases["quiet"]["search_p50_ms"], phases["quiet again"]["search_p50_ms"]])
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "vecguard_from": vecguard_from(),
        "label": args.label,
        "settings": {
            "documents": args.documents,
            "searchers": args.searchers,
            "writers": args.writers,
            "seconds": args.seconds,
            "batch": 16,
            "k": 10,
            "mode": "hybrid",
            "store": "faiss Flat",
        },
        "phases": phases,
        "quiet_p50_ms": quiet,
        "writes_over_quiet_p50": phases["writes"]["search_p50_ms"] / quiet,
    }
    save(args.save_as, report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    s, m = report["settings"], report["machine"]
    rows = [
        f"| {name} | {p['writers']} | {p['searches_per_s']:.1f} | {p['search_p50_ms']:.1f} | {p['search_p99_ms']:.1f} | "
        f"{p['documents_per_s']:.1f} | {p['healthz_p50_ms']:.1f} / {p['healthz_max_ms']:.1f} | {p['errors']} |"
        for name, p in report["phases"].items()
    ]
    return "\n".join(
        [
            f"# vecguard serve: searches while writes stream in ({report['date']})",
            "",
            *([f"Code: {report['label']}.", ""] if report.get("label") else []),
            f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}; load average at the end "
            f"{report['load_average'][0]:.2f}. {s['documents']} CWE passages, FAISS Flat + BM25, bundled encoder, hybrid k=10; "
            f"{s['searchers']} search clients for {s['seconds']:.0f} s a phase; writers POST {s['batch']} new passages at a time. "
            "Command: `benchmarks/serve_writes.py`.",
            "",
            "| phase | writers | searches/s | search p50 ms | search p99 ms | documents written/s | /healthz p50 / max ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Search p50 while writing: {report['writes_over_quiet_p50']:.2f}x the quiet p50 "
            f"({report['quiet_p50_ms']:.1f} ms, the median of the two quiet phases); searches per second while writing: "
            f"{report['phases']['writes']['searches_per_s'] / report['phases']['quiet']['searches_per_s']:.2f}x the first "
            "quiet phase's. A p50 over few searches hides the ones that waited: read it beside the rate and the p99.",
            "",
        ]
    )


if __name__ == "__main__":
    main()

"""HTTP load: `vecguard serve` hybrid search at 10k documents, beside the library call in the same run.

    .venv/bin/python benchmarks/serve_load.py                  # 10k documents, 200 queries x 3 rounds, 8 clients x 20 s
    .venv/bin/python benchmarks/serve_load.py --clients 4 --seconds 10

Documents: 10,000 short real texts from MITRE CWE v4.14 (each observed example,
a CVE id with its summary, then distinct sentences of the weaknesses' fields),
indexed once with the bundled encoder into FAISS (Flat) + BM25. The built
collection is cached under ~/.cache/vecguard/bench/ keyed by the encoder
fingerprint, never in the repo.

Latency, side by side: for each query (half CVE ids, half description
sentences; fixed seed), the library call ``engine.search(q, k=10)`` in this
process and ``POST /search`` to a `vecguard serve` subprocess on loopback
(keep-alive client), 3 rounds, each a block of library calls then a block of
HTTP calls (alternating query by query left each process's OpenMP threads
spinning into the other's call on 2 cores); medians and p99. The server reports the
engine's own time in a Server-Timing header, so the HTTP layer per request is
the round trip minus that, beside HTTP p50 - library p50. Throughput: N concurrent keep-alive
clients for S seconds. Results: benchmarks/results/serve_load.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import cache_dir, machine, percentile, save  # noqa: E402
from corpora import cwe_passages, cwe_weaknesses  # noqa: E402


def documents(n: int) -> list[dict]:
    docs = list(itertools.islice(cwe_passages(), n))
    if len(docs) < n:
        raise SystemExit(f"only {len(docs)} CWE passages available, asked for {n}")
    return docs


def queries(n: int, seed: int = 20241125) -> list[str]:
    rng = random.Random(seed)
    weaknesses = list(cwe_weaknesses())
    cves = sorted({cve for w in weaknesses for cve, _ in w["observed"] if re.fullmatch(r"CVE-\d{4}-\d+", cve)})
    sentences = [re.split(r"(?<=[.!?])\s", w["description"], maxsplit=1)[0] for w in weaknesses if w["description"]]
    return rng.sample(cves, n // 2) + rng.sample(sentences, n - n // 2)


def collection(n: int) -> dict:
    """The cached 10k collection's config (built on first use)."""
    import vecguard
    from vecguard.engine import build_parts

    probe = vecguard.load_config({})
    fingerprint = build_parts(probe, vecguard.Registry.discover()).encoder.identity().fingerprint
    folder = cache_dir() / f"serve-{fingerprint[:12]}-{n}"
    config = {"store": {"plugin": "faiss", "path": str(folder), "index": "Flat"}}
    with vecguard.open(config) as engine:
        if engine.count() != n:
            started = time.perf_counter()
            engine.add(documents(n))
            print(f"indexed {n} documents in {time.perf_counter() - started:.0f} s (cached in {folder})", flush=True)
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    config: dict, work: Path, *, server: str = "", env: dict | None = None
) -> tuple[subprocess.Popen, str]:
    """`vecguard serve` on the collection, on a free port; ``server``: more [server] lines; ``env``: more variables."""
    port = free_port()
    config_file = work / "serve.toml"
    store = config["store"]
    config_file.write_text(
        f'[store]\nplugin = "faiss"\npath = "{store["path"]}"\nindex = "Flat"\n[server]\nport = {port}\n{server}',
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "vecguard"), "serve", "--config", str(config_file)],
        stdout=open(work / "serve.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, process: subprocess.Popen, work: Path) -> float:
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < 300:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"server did not become ready: {(work / 'serve.log').read_text()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import httpx
    import vecguard

    config = collection(args.documents)
    query_set = queries(args.queries)
    work = Path(tempfile.mkdtemp(prefix="vecguard-serve-bench-"))
    process, url = start_server(config, work)
    try:
        ready_s = wait_ready(url, process, work)
        library, http, engine_in_server, mismatches = [], [], [], 0
        with vecguard.open(config) as engine, httpx.Client(base_url=url, timeout=30) as client:
            for query in query_set[:10]:  # warm both sides
                engine.search(query, k=10)
                client.post("/search", json={"query": query, "k": 10})
            expected = {}
            for _ in range(args.rounds):
                for query in query_set:
                    started = time.perf_counter()
                    expected[query] = [h.id for h in engine.search(query, k=10)]
                    library.append(time.perf_counter() - started)
                for query in query_set:
                    started = time.perf_counter()
                    response = client.post("/search", json={"query": query, "k": 10})
                    http.append(time.perf_counter() - started)
                    response.raise_for_status()
                    engine_in_server.append(float(response.headers["server-timing"].partition(";dur=")[2]) / 1000)
                    mismatches += [h["id"] for h in response.json()["hits"]] != expected[query]

        latencies: list[float] = []
        errors = [0]
        stop = time.perf_counter() + args.seconds
        lock = threading.Lock()

        def client_loop(number: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as session:
                i = number
                while time.perf_counter() < stop:
                    started = time.perf_counter()
                    response = session.post("/search", json={"query": query_set[i % len(query_set)], "k": 10})
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        errors[0] += response.status_code != 200
                    i += args.clients

        load_started = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        load_seconds = time.perf_counter() - load_started
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

    ms = 1000.0
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "settings": {
            "documents": args.documents,
            "queries": len(query_set),
            "rounds": args.rounds,
            "clients": args.clients,
            "seconds": args.seconds,
            "k": 10,
            "mode": "hybrid",
            "store": "faiss Flat",
        },
        "ready_after_start_s": ready_s,
        "sequential": {
            "library_p50_ms": statistics.median(library) * ms,
            "library_p99_ms": percentile(library, 0.99) * ms,
            "http_p50_ms": statistics.median(http) * ms,
            "http_p99_ms": percentile(http, 0.99) * ms,
            "http_overhead_p50_ms": (statistics.median(http) - statistics.median(library)) * ms,
            "engine_in_server_p50_ms": statistics.median(engine_in_server) * ms,
            "engine_in_server_p99_ms": percentile(engine_in_server, 0.99) * ms,
            "http_layer_p50_ms": statistics.median([h - e for h, e in zip(http, engine_in_server)]) * ms,
            "http_layer_p99_ms": percentile([h - e for h, e in zip(http, engine_in_server)], 0.99) * ms,
            "calls_each": len(library),
            "answers_differing": mismatches,
        },
        "concurrent": {
            "requests": len(latencies),
            "errors": errors[0],
            "requests_per_s": len(latencies) / load_seconds,
            "p50_ms": statistics.median(latencies) * ms,
            "p99_ms": percentile(latencies, 0.99) * ms,
        },
    }
    save("serve_load", report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    s, m, q, c = report["settings"], report["machine"], report["sequential"], report["concurrent"]
    return "\n".join(
        [
            f"# vecguard serve: hybrid search over HTTP vs the library call ({report['date']})",
            "",
            f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}; load average at the end "
            f"{report['load_average'][0]:.2f}. {s['documents']} CWE passages (observed examples, then sentences of the weaknesses), "
            f"FAISS Flat + BM25, bundled encoder; hybrid k=10; {s['queries']} queries (half CVE ids, half sentences) x "
            f"{s['rounds']} rounds, each a block of library calls then a block of HTTP calls. Command: `benchmarks/serve_load.py`.",
            "",
            "| | p50 ms | p99 ms |",
            "|---|---:|---:|",
            f"| library `engine.search` (in process) | {q['library_p50_ms']:.2f} | {q['library_p99_ms']:.2f} |",
            f"| `POST /search` (one keep-alive client) | {q['http_p50_ms']:.2f} | {q['http_p99_ms']:.2f} |",
            f"| the engine inside the server (`Server-Timing`) | {q['engine_in_server_p50_ms']:.2f} | {q['engine_in_server_p99_ms']:.2f} |",
            f"| HTTP layer per request (round trip - `Server-Timing`) | {q['http_layer_p50_ms']:.2f} | {q['http_layer_p99_ms']:.2f} |",
            f"| {s['clients']} concurrent clients, {s['seconds']:.0f} s | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} |",
            "",
            f"HTTP p50 - library p50: {q['http_overhead_p50_ms']:.2f} ms; the HTTP layer alone at p50: "
            f"{q['http_layer_p50_ms']:.2f} ms (target <= 2 ms). Answers differing from the "
            f"library: {q['answers_differing']} of {q['calls_each']}. Under load: {c['requests_per_s']:.1f} requests/s, "
            f"{c['errors']} errors in {c['requests']} requests. /readyz turned 200 {report['ready_after_start_s']:.1f} s "
            f"after the process started.",
            "",
        ]
    )


if __name__ == "__main__":
    main()

"""What sharing a collection between processes costs (SharesCollection): the change token read before every search,
the write lock, and the change feed around each write, on a local Chroma server, Chroma embedded and Qdrant local.

    .venv/bin/python benchmarks/shared_collection.py            # about a minute on 2 CPUs

A Chroma server from the chromadb wheel is started on a loopback port in a temporary folder (and stopped by its
pid). Each row is the p50 / p90 of repeated calls through vecguard's store: ``change_token()`` 300 times, the rest
50 times. "feed of a hold with one write" is the three requests the feed adds to a hold of the lock that makes one
write (read the head, a change record of 300 ids, the new head at release; each more write in the same hold adds
its change record only), timed on the store's companion records; "store.upsert of 300 points" is the whole upsert
of 300 synthetic 384-d points with engine-shaped payloads inside a held lock (its change record included, and the
read of the points' previous metadata the Chroma store made before), beside Chroma's own ``collection.upsert`` of
the same points into a plain collection. Results: results/shared_collection.{json,md}.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, percentile, save  # noqa: E402
from migrate_speed import synthetic_points  # noqa: E402

BATCH = 300  # chunks in one engine write batch ("a few hundred")
TOKEN_CALLS = 300
CALLS = 50


def timed(call: Callable[[int], Any], n: int) -> dict[str, float]:
    seconds = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        seconds.append(time.perf_counter() - started)
    return {"p50_ms": percentile(seconds, 0.5) * 1000, "p90_ms": percentile(seconds, 0.9) * 1000, "calls": n}


def chroma_server(folder: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    executable = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
    server = subprocess.Popen(
        [executable, "run", "--path", str(folder / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1):
                return server, port
        except OSError:
            time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    sys.exit("the Chroma server did not start")


def measure(label: str, store: Any, raw_upsert: Callable[[list, Any, list], None] | None) -> list[dict]:
    from vecguard.backends.sharing import CHANGE_IDS

    ids, vectors, payloads = synthetic_points(BATCH * (CALLS + 2))
    rows = []

    def row(what: str, figures: dict[str, float]) -> None:
        rows.append({"store": label, "what": what, **figures})
        print(f"{label:16} {what:48} p50 {figures['p50_ms']:8.2f} ms  p90 {figures['p90_ms']:8.2f} ms", flush=True)

    row("change_token() before any write", timed(lambda i: store.change_token(), TOKEN_CALLS))
    with store.lock_writes(30, "benchmark"):
        store.upsert(ids[:BATCH], vectors[:BATCH], payloads[:BATCH])
    row("change_token()", timed(lambda i: store.change_token(), TOKEN_CALLS))
    token = store.change_token()
    with store.lock_writes(30, "benchmark"):
        store.upsert(ids[BATCH : 2 * BATCH], vectors[BATCH : 2 * BATCH], payloads[BATCH : 2 * BATCH])
    row(f"changes_since(one change of {BATCH} ids)", timed(lambda i: store.changes_since(token), CALLS))

    def lock(i: int) -> None:
        with store.lock_writes(30, "benchmark"):
            pass

    row("lock_writes: acquire + release, uncontended", timed(lock, CALLS))
    records = store._sharing._records  # the companion records the store's feed writes

    def feed(i: int) -> None:
        seq = records.read_head() + 1
        records.add_changes(seq, f"bench{i}", [ids[:BATCH][:CHANGE_IDS]])
        records.write_head(seq)

    row(f"feed of a hold with one write ({BATCH} ids)", timed(feed, CALLS))

    def upsert(i: int) -> None:
        window = slice((i % CALLS) * BATCH, (i % CALLS + 1) * BATCH)
        store.upsert(ids[window], vectors[window], payloads[window])

    with store.lock_writes(300, "benchmark"):
        row(f"store.upsert of {BATCH} points in a held lock", timed(upsert, CALLS // 5))
    if raw_upsert is not None:

        def raw(i: int) -> None:
            window = slice((i % CALLS) * BATCH, (i % CALLS + 1) * BATCH)
            raw_upsert(ids[window], vectors[window], payloads[window])

        row(f"Chroma's own collection.upsert of {BATCH} points", timed(raw, CALLS // 5))
    return rows


def main() -> None:
    from vecguard.registry import Registry

    registry = Registry.discover()
    rows: list[dict] = []
    load_before = os.getloadavg()[0]  # the machines are shared: say how busy this one was
    with tempfile.TemporaryDirectory(prefix="vecguard-shared-") as folder:
        server, port = chroma_server(Path(folder))
        try:
            store = registry.build(
                "store", "chroma", {"host": "127.0.0.1", "port": port, "collection": "bench"}, Path(folder)
            )
            import chromadb

            plain = chromadb.HttpClient(host="127.0.0.1", port=port).get_or_create_collection(
                "plain", embedding_function=None, configuration={"hnsw": {"space": "ip"}}
            )

            def raw_upsert(ids: list, vectors: Any, payloads: list) -> None:
                plain.upsert(
                    ids=ids,
                    embeddings=vectors,
                    metadatas=[p["metadata"] for p in payloads],
                    documents=[p["text"] for p in payloads],
                )

            rows += measure("Chroma server", store, raw_upsert)
            store.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        store = registry.build("store", "chroma", {"path": str(Path(folder) / "embedded")}, Path(folder))
        rows += measure("Chroma embedded", store, None)
        store.close()
        store = registry.build(
            "store", "qdrant", {"path": str(Path(folder) / "qdrant"), "local_mode": True}, Path(folder)
        )
        rows += measure("Qdrant local", store, None)
        store.close()
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"batch": BATCH, "token_calls": TOKEN_CALLS, "calls": CALLS},
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "rows": rows,
    }
    lines = [
        f"# Sharing a collection: what the token, the lock and the feed cost ({report['date']})",
        "",
        f"{report['machine']['nproc']} CPUs, 1-minute load average {load_before:.1f} before, "
        f"{report['load_average_1min']['after']:.1f} after.",
        "",
        "| store | what | p50 ms | p90 ms | calls |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [f"| {r['store']} | {r['what']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['calls']} |" for r in rows]
    lines.append("")
    save("shared_collection", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Query latency that holds under load: hybrid `engine.search` quiet and beside a CPU-bound neighbour, per thread policy.

    .venv/bin/python benchmarks/query_latency.py                          # every policy, 4 blocks x 30 queries each
    .venv/bin/python benchmarks/query_latency.py --policies default library --blocks 2

The collection: the MITRE CWE v4.14 weaknesses (benchmarks/corpora.py `cwe_documents`,
about 940 documents, chunked), bundled encoder, FAISS with its default `auto` index
+ BM25, cached under ~/.cache/vecguard/bench/ keyed by the encoder fingerprint.
Queries: half CVE ids, half first sentences of the weaknesses' descriptions (fixed
seed, as serve_load.py).

The neighbour: a separate process ingesting the CWE passages (short real texts) into
another FAISS collection through `engine.add`, CPU-bound on both cores. Each policy
runs in a fresh query process (thread settings must precede torch's and FAISS's
libgomp) with its own neighbour, started with the same environment and killed at the
end. The neighbour is stopped (SIGSTOP) for quiet blocks and continued (SIGCONT) for
loaded ones, so the two conditions alternate block by block in one run (quiet,
loaded, then loaded, quiet, ...); a loaded block repeats the queries for at least
--block-seconds, so that the neighbour commits several of its batches in it. Per
condition: `engine.search(q, k=10)` hybrid p50/p99 and the encode stage's p50/p99
(the engine's instrument hook); the neighbour's documents/s alone (the query
process idle) and beside the queries.

Policies (each applied to both processes; the neighbour only ever encodes batches):
    default        what torch and FAISS do on their own: torch and FAISS imported before vecguard, no variable set
    passive        OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead of spinning)
    torch1         the query process's torch on 1 thread (torch.set_num_threads(1))
    faiss1         the query process's FAISS on 1 thread (faiss.omp_set_num_threads(1))
    passive+torch1, passive+torch1+faiss1   combinations
    library        vecguard imported first with nothing set: the policy the library applies by default
Results: benchmarks/results/query_latency.{json,md}; plot via plots.py (results/query_latency.png).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import cache_dir, machine, percentile, save  # noqa: E402
from corpora import cwe_documents, cwe_passages  # noqa: E402
from serve_load import queries  # noqa: E402

POLICIES = {
    "default": {"env": {}, "torch1": False, "faiss1": False},
    "passive": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "torch1": False, "faiss1": False},
    "torch1": {"env": {}, "torch1": True, "faiss1": False},
    "faiss1": {"env": {}, "torch1": False, "faiss1": True},
    "passive+torch1": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "torch1": True, "faiss1": False},
    "passive+torch1+faiss1": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "torch1": True, "faiss1": True},
    "library": {"env": {}, "torch1": False, "faiss1": False, "library": True},
}
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def collection_config() -> dict:
    """The cached CWE collection's config (built on first use), FAISS's default index."""
    import vecguard
    from vecguard.engine import build_parts

    probe = vecguard.load_config({})
    fingerprint = build_parts(probe, vecguard.Registry.discover()).encoder.identity().fingerprint
    folder = cache_dir() / f"latency-cwe-{fingerprint[:12]}"
    config = {"store": {"plugin": "faiss", "path": str(folder)}}
    documents = list(cwe_documents())
    with vecguard.open(config) as engine:
        if engine.count() != len(documents):
            started = time.perf_counter()
            engine.add(documents)
            print(f"indexed {len(documents)} documents in {time.perf_counter() - started:.0f} s (cached in {folder})")
    return config


def apply_policy(name: str) -> None:
    """In a fresh process, before vecguard: what ``name`` sets. Every policy but ``library`` loads torch and FAISS
    first, so that whatever vecguard does at import cannot reach their OpenMP runtimes, and turns off the encoder's
    own query thread setting."""
    policy = POLICIES[name]
    if policy.get("library"):
        return
    import faiss
    import torch
    import vecguard.plugins.sentence_transformers as encoder_plugin

    if hasattr(encoder_plugin, "QUERY_THREADS"):
        encoder_plugin.QUERY_THREADS = None
    if policy["torch1"]:
        torch.set_num_threads(1)
    if policy["faiss1"]:
        faiss.omp_set_num_threads(1)


class StageTimer:
    """The engine's instrument hook: seconds per stage of the latest search."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.last[name] = time.perf_counter() - started

    def observe(self, name: str, value: float) -> None:
        pass


def neighbour(policy: str) -> None:
    """Ingest CWE passages into a fresh collection, forever; one line per committed batch: time, documents."""
    apply_policy(policy)
    import vecguard

    class Progress:
        done = 0

        def update(self, n: int) -> None:
            Progress.done += n
            print(f"{time.time():.4f} {Progress.done}", flush=True)

    passages = list(cwe_passages())
    with tempfile.TemporaryDirectory(prefix="vecguard-latency-neighbour-") as folder:
        with vecguard.open({"store": {"plugin": "faiss", "path": folder}}) as engine:
            round_ = 0
            while True:
                engine.add(
                    ({**p, "id": f"{p['id']}#{round_}"} for p in passages),
                    progress=Progress(),
                )
                round_ += 1


def query_process(policy: str, config: dict, query_set: list[str], blocks: int, alone_s: float, block_s: float) -> dict:
    env = {**os.environ}  # the neighbour's, before anything here (vecguard included) sets a variable
    apply_policy(policy)
    import faiss
    import torch
    import vecguard

    process = subprocess.Popen(
        [sys.executable, __file__, "--role", "neighbour", "--policy", policy],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    progress: list[tuple[float, int]] = []

    def read() -> None:
        for line in process.stdout:
            stamp, done = line.split()
            progress.append((float(stamp), int(done)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def committed(start: float, end: float) -> int:
        """Documents the neighbour committed between two wall-clock times. It commits a batch (64 documents) at a
        time and is stopped between windows, so a window's count is whole batches; summed over a condition's
        windows, the batch carried into one window is the one carried out of an earlier window."""
        before = [n for t, n in progress if t < start]
        inside = [n for t, n in progress if start <= t <= end]
        return inside[-1] - (before[-1] if before else 0) if inside else 0

    try:
        timer = StageTimer()
        with vecguard.open(config) as engine:
            engine.instrument = timer
            for query in query_set[:10]:
                engine.search(query, k=10)
            deadline = time.time() + 300
            while len(progress) < 2 and time.time() < deadline and process.poll() is None:
                time.sleep(0.2)  # the neighbour's model loaded and a batch or two committed
            if len(progress) < 2:
                raise SystemExit(f"the neighbour did not start ingesting (exit {process.poll()})")
            os.kill(process.pid, signal.SIGSTOP)
            time.sleep(0.5)
            results = {c: {"search": [], "encode": [], "docs": 0, "seconds": 0.0} for c in ("quiet", "loaded")}
            alone = {"docs": 0, "seconds": 0.0}
            for block in range(blocks):
                order = ("quiet", "loaded") if block % 2 == 0 else ("loaded", "quiet")
                for condition in order:
                    if condition == "loaded":
                        os.kill(process.pid, signal.SIGCONT)
                        time.sleep(0.5)
                    started = time.time()
                    # Quiet: the query set once. Loaded: again and again for at least block_s, so that the
                    # neighbour commits several of its 64-document batches in the window.
                    passes = 0
                    while passes == 0 or (condition == "loaded" and time.time() - started < block_s):
                        for query in query_set:
                            t0 = time.perf_counter()
                            engine.search(query, k=10)
                            results[condition]["search"].append(time.perf_counter() - t0)
                            results[condition]["encode"].append(timer.last.get("encode", float("nan")))
                        passes += 1
                    ended = time.time()
                    results[condition]["seconds"] += ended - started
                    if condition == "loaded":
                        time.sleep(0.3)  # a batch that ended inside the block is counted
                        results[condition]["docs"] += committed(started, ended)
                        os.kill(process.pid, signal.SIGSTOP)
                        time.sleep(0.3)
                # The neighbour alone, this process idle: its own speed under the policy.
                os.kill(process.pid, signal.SIGCONT)
                started = time.time()
                time.sleep(alone_s / blocks)
                ended = time.time()
                time.sleep(0.3)
                os.kill(process.pid, signal.SIGSTOP)
                alone["docs"] += committed(started, ended)
                alone["seconds"] += ended - started
                time.sleep(0.3)
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait(timeout=30)

    ms = 1000.0
    out = {
        "policy": policy,
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "environment": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "neighbour_alone_docs_per_s": alone["docs"] / alone["seconds"],
        "neighbour_alone": alone,
    }
    for condition, r in results.items():
        out[condition] = {
            "p50_ms": statistics.median(r["search"]) * ms,
            "p99_ms": percentile(r["search"], 0.99) * ms,
            "mean_ms": statistics.fmean(r["search"]) * ms,
            "encode_p50_ms": statistics.median(r["encode"]) * ms,
            "encode_p99_ms": percentile(r["encode"], 0.99) * ms,
            "searches": len(r["search"]),
            "seconds": r["seconds"],
        }
        if condition == "loaded":
            out[condition]["neighbour_docs"] = r["docs"]
            out[condition]["neighbour_docs_per_s"] = r["docs"] / r["seconds"]
    out["ratio_p50"] = out["loaded"]["p50_ms"] / out["quiet"]["p50_ms"]
    out["ratio_p99"] = out["loaded"]["p99_ms"] / out["quiet"]["p99_ms"]
    out["ratio_encode_p50"] = out["loaded"]["encode_p50_ms"] / out["quiet"]["encode_p50_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--blocks", type=int, default=4, help="blocks per condition, alternating (default 4)")
    parser.add_argument("--alone", type=float, default=8.0, help="seconds of the neighbour alone per policy")
    parser.add_argument("--block-seconds", type=float, default=5.0, help="a loaded block's least length (default 5)")
    parser.add_argument("--save-as", default="query_latency")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the results")
    parser.add_argument("--role", choices=("main", "query", "neighbour"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="default", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.role == "neighbour":
        neighbour(args.policy)
        return
    if args.role == "query":
        job = json.loads(sys.stdin.read())
        print(
            json.dumps(
                query_process(args.policy, job["config"], job["queries"], job["blocks"], job["alone"], job["block_s"])
            )
        )
        return

    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    built = subprocess.run(
        [sys.executable, "-c", "import json, query_latency; print(json.dumps(query_latency.collection_config()))"],
        cwd=HERE,
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(built.stdout.strip().splitlines()[-1])
    query_set = queries(args.queries)
    run_started = time.time()
    rows = []
    for policy in args.policies:
        started = time.time()
        done = subprocess.run(
            [sys.executable, __file__, "--role", "query", "--policy", policy],
            input=json.dumps(
                {
                    "config": config,
                    "queries": query_set,
                    "blocks": args.blocks,
                    "alone": args.alone,
                    "block_s": args.block_seconds,
                }
            ),
            env={**clean, **POLICIES[policy]["env"]},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"policy {policy} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{policy:24s} quiet p50 {row['quiet']['p50_ms']:7.1f} p99 {row['quiet']['p99_ms']:7.1f} | loaded p50 "
            f"{row['loaded']['p50_ms']:7.1f} p99 {row['loaded']['p99_ms']:7.1f} | x{row['ratio_p50']:.2f} | neighbour "
            f"{row['neighbour_alone_docs_per_s']:.0f} alone, {row['loaded']['neighbour_docs_per_s']:.0f} beside docs/s "
            f"({time.time() - started:.0f} s)",
            flush=True,
        )

    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "run_minutes": (time.time() - run_started) / 60,
        "settings": {
            "collection": "CWE v4.14 weaknesses (cwe_documents), chunked, FAISS auto + BM25",
            "queries": len(query_set),
            "blocks": args.blocks,
            "k": 10,
            "mode": "hybrid",
            "neighbour": "another process: engine.add of CWE passages into another FAISS collection, continuously",
            "alone_s": args.alone,
            "loaded_block_s": args.block_seconds,
        },
        "note": args.note,
        "rows": rows,
    }
    save(args.save_as, report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    s, m = report["settings"], report["machine"]
    lines = [
        f"# Hybrid query latency quiet and beside a CPU-bound neighbour, per thread policy ({report['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}, torch {m['libraries']['torch']}, "
        f"faiss-cpu {m['libraries']['faiss-cpu']}; load average at the end {report['load_average'][0]:.2f}; the run "
        f"took {report['run_minutes']:.1f} min. {s['collection']}; `engine.search(q, k=10)` hybrid, {s['queries']} "
        f"queries (half CVE ids, half sentences) x {s['blocks']} blocks per condition, quiet and loaded blocks "
        f"alternating (a quiet block: the queries once; a loaded one: repeated for at least {s['loaded_block_s']:.0f} s, "
        f"so that the neighbour commits several batches in it; the neighbour alone {s['alone_s']:.0f} s in all). Neighbour: {s['neighbour']}, stopped (SIGSTOP) during quiet blocks. Each policy in fresh "
        "processes. Command: `benchmarks/query_latency.py`."
        + (f" Note: {report['note']}" if report.get("note") else ""),
        "",
        "| policy | quiet p50 ms | quiet p99 ms | loaded p50 ms | loaded p99 ms | loaded/quiet p50 | loaded/quiet p99 "
        "| encode p50 quiet / loaded ms | neighbour docs/s alone | neighbour docs/s beside queries |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        q, lo = r["quiet"], r["loaded"]
        lines.append(
            f"| {r['policy']} | {q['p50_ms']:.1f} | {q['p99_ms']:.1f} | {lo['p50_ms']:.1f} | {lo['p99_ms']:.1f} | "
            f"{r['ratio_p50']:.2f} | {r['ratio_p99']:.2f} | {q['encode_p50_ms']:.1f} / {lo['encode_p50_ms']:.1f} | "
            f"{r['neighbour_alone_docs_per_s']:.0f} | {lo.get('neighbour_docs_per_s', 0):.0f} |"
        )
    lines += [
        "",
        "Policies: " + "; ".join(f"`{name}`" + describe(name) for name in (r["policy"] for r in report["rows"])) + ".",
        "",
    ]
    return "\n".join(lines)


def describe(name: str) -> str:
    if name == "library":
        return " vecguard imported first, nothing set: the library's own policy"
    policy = POLICIES[name]
    parts = [f"{k}={v}" for k, v in policy["env"].items()]
    parts += ["torch.set_num_threads(1) in the query process"] if policy["torch1"] else []
    parts += ["faiss.omp_set_num_threads(1) in the query process"] if policy["faiss1"] else []
    return " " + (", ".join(parts) if parts else "nothing set, torch and FAISS imported before vecguard")


if __name__ == "__main__":
    main()

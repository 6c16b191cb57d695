"""Store throughput with the encoder taken out: precomputed vectors into each backend through vecguard's store.

    .venv/bin/python benchmarks/store_throughput.py                                   # 100k into all three, 1M into FAISS
    .venv/bin/python benchmarks/store_throughput.py --runs chroma:1000000 qdrant:1000000 --save-as store_throughput-1m

Points are migrate_speed.py's synthetic 384-d vectors with engine-shaped
payloads (doc_id, chunk, offsets, a ~300-character text, three metadata
fields), upserted in batches of 1,000 through the VectorStore protocol, the
way ``Engine.add`` and ``vecguard migrate`` write. Each run is a fresh process
(so its peak RSS, ``ru_maxrss``, is its own) into a fresh collection: FAISS
(index "auto"; the index is built and saved at close, included), Chroma
embedded, Qdrant local mode. The points are generated inside the process
first; the peak RSS is the high-water mark from the first write on (reset
through /proc/self/clear_refs), so it includes the points held for writing
(N x 1.5 KB of vectors plus the payloads), reported apart as the RSS before
the writes. Results: benchmarks/results/store_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, save  # noqa: E402

BATCH = 1_000
DEFAULT_RUNS = ("faiss:100000", "chroma:100000", "qdrant:100000", "faiss:1000000")


def one_run(plugin: str, n: int, folder: Path) -> dict:
    """Runs inside the child process."""
    from migrate_speed import synthetic_points
    from vecguard.registry import Registry

    ids, vectors, payloads = synthetic_points(n)
    generated_kib = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    options = {"path": str(folder / plugin), **({"local_mode": True} if plugin == "qdrant" else {})}
    store = Registry.discover().build("store", plugin, options, folder)  # embedded Qdrant: qdrant_embedded.py
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        store.upsert(ids[start : start + BATCH], vectors[start : start + BATCH], payloads[start : start + BATCH])
    upsert_s = time.perf_counter() - started
    store.close()
    total_s = time.perf_counter() - started
    return {
        "plugin": plugin,
        "points": n,
        "upsert_s": upsert_s,
        "total_s": total_s,
        "points_per_s": n / total_s,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "rss_after_generating_mib": generated_kib / 1024,
    }


def _status_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="PLUGIN:POINTS")
    parser.add_argument(
        "--save-as",
        default="store_throughput",
        help="results name under benchmarks/results (default: store_throughput)",
    )
    parser.add_argument("--child", nargs=3, metavar=("PLUGIN", "POINTS", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.child[0], int(args.child[1]), Path(args.child[2]))))
        return
    rows = []
    for run in args.runs:
        plugin, points = run.split(":")
        with tempfile.TemporaryDirectory(prefix="vecguard-store-throughput-") as folder:
            done = subprocess.run(
                [sys.executable, __file__, "--child", plugin, points, folder], capture_output=True, text=True
            )
        if done.returncode:
            sys.exit(f"{run} failed: {done.stderr[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{plugin} {int(points):,}: {row['points_per_s']:.0f} points/s ({row['total_s']:.1f} s, close included), "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB ({row['rss_after_generating_mib']:.0f} MiB after generating the points)",
            flush=True,
        )
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"batch": BATCH, "runs": args.runs},
        "rows": rows,
    }
    lines = [
        f"# Store throughput, encoder taken out ({report['date']})",
        "",
        "| store | points | points/s | upsert s | with close s | peak RSS while writing MiB | RSS before the writes (points held) MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['plugin']} | {r['points']:,} | {r['points_per_s']:.0f} | {r['upsert_s']:.1f} | {r['total_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['rss_after_generating_mib']:.0f} |"
        )
    lines.append("")
    save(args.save_as, report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""What every benchmark shares: the machine it ran on, percentiles, the vector cache, the results files."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    versions = {}
    for name in (
        "vecguard",
        "torch",
        "sentence-transformers",
        "transformers",
        "tokenizers",
        "faiss-cpu",
        "rank-bm25",
        "numpy",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0.99: p99)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def cache_dir() -> Path:
    """Where encoded collections are kept between runs, keyed by fingerprint: never the repo."""
    return Path(os.environ.get("VECGUARD_BENCH_CACHE") or Path.home() / ".cache" / "vecguard" / "bench")


def save(name: str, report: dict, markdown: str) -> None:
    """results/<name>.json and results/<name>.md."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (RESULTS / f"{name}.md").write_text(markdown, encoding="utf-8")

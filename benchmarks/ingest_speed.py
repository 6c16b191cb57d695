"""Ingest throughput: vecguard's ``Engine.add`` next to a raw ``SentenceTransformer.encode``.

    make bench                                  # = .venv/bin/python benchmarks/ingest_speed.py
    .venv/bin/python benchmarks/ingest_speed.py --repeats 3 --limit 300 --profile 0

On the same texts (MITRE CWE, ``benchmarks/corpora.py: cwe_documents()``, 938 docs,
or the first ``--limit``), interleaved A, E, B, C, D, A, E, B, C, D, ... and reported as medians:

  A  vecguard: ``engine.add(docs)`` + ``close()`` into a fresh FAISS + BM25 collection
     (chunking, encoding, SQLite writes, BM25, manifest; the Flat index is built at close)
  B  raw ``SentenceTransformer(model, device="cpu").encode(full texts, batch_size=32)``
     (each text truncated at the model's 256 tokens: less work than A)
  C  raw encode of vecguard's exact chunk texts, all in one call (the like-for-like encoding cost of A)
  D  the same chunk texts encoded in vecguard's groups (one call per 64 documents, as add does), so
     A - D is vecguard's own cost and D - C what per-batch encoding costs (padding, length sorting)
  E  A with ``[encoder] precision = "auto"`` (bf16 autocast on a CPU with native bf16 when the
     probe sentences stay at cosine >= 0.999 against fp32; the probe's cosine is reported)

plus ``vecguard index --config C data.jsonl -q`` once as a subprocess (wall time, with
interpreter start, imports and model load). Imports, model load and engine open are
timed separately and kept out of the throughput. Everything is written under a temp
dir (VECGUARD_CACHE_DIR included); results go to benchmarks/results/ingest_speed.{json,md}.
``--profile N`` (default 200) adds a cProfile of one add on the first N docs: the top
cumulative entries outside torch/transformers/sentence-transformers/tokenizers.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
BATCH_DOCUMENTS = 64  # vecguard's default [chunking] batch_documents: documents per encode call in add
RESULTS = HERE / "results"
CONFIG = """\
[encoder]
plugin = "sentence-transformers"
model = "bundled"
precision = "{precision}"

[store]
plugin = "faiss"
path = "{path}"
index = "auto"

[keyword]
plugin = "bm25"

[fusion]
plugin = "rrf"
k = 60
depth = 100
weights = {{ dense = 1.0, keyword = 1.0 }}

[chunking]
tokens = 256
overlap = 32
"""


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def write_config(work: Path, name: str, precision: str = "fp32") -> Path:
    config = work / f"{name}.toml"
    config.write_text(CONFIG.format(path=(work / name).as_posix(), precision=precision), encoding="utf-8")
    return config


def vecguard_add(work: Path, name: str, docs: list[dict], precision: str = "fp32") -> dict:
    """A (and E with precision "auto"): open a fresh collection (timed apart), then add + close (the throughput)."""
    import vecguard

    open_s, engine = timed(vecguard.open, write_config(work, name, precision))
    add_s, written = timed(engine.add, docs)
    chunks = engine.count_chunks()
    close_s, _ = timed(engine.close)
    assert written == len(docs), (written, len(docs))
    return {
        "seconds": add_s + close_s,
        "add_s": add_s,
        "close_s": close_s,
        "open_s": open_s,
        "chunks": chunks,
        "precision": engine.encoder.identity().precision,
        "probe_cosine": getattr(engine.encoder, "probe_cosine", None),
        "batch_size": getattr(engine.encoder, "batch_size", None),
    }


def raw_encode(model, groups: list[list[str]]) -> dict:
    """B, C, D: the bare model, one ``encode`` call per group of texts."""
    seconds, vectors = timed(lambda: [model.encode(texts, batch_size=32, show_progress_bar=False) for texts in groups])
    assert all(len(v) == len(t) for v, t in zip(vectors, groups))
    return {"seconds": seconds}


def cli_index(work: Path, data: Path) -> dict:
    """The CLI once, as a user runs it (wall time, startup and model load included)."""
    vecguard_bin = Path(sys.executable).with_name("vecguard")
    command = [str(vecguard_bin), "index", "--config", str(write_config(work, "cli")), str(data), "-q"]
    seconds, done = timed(lambda: subprocess.run(command, capture_output=True, text=True, env=os.environ.copy()))
    if done.returncode:
        sys.exit(f"vecguard index failed ({done.returncode}): {done.stderr}")
    return {"seconds": seconds, "output": done.stdout.strip()}


def chunk_texts(work: Path, docs: list[dict]) -> tuple[float, float, list[list[str]]]:
    """vecguard's exact chunk texts per document, from the engine's own chunker: (first open s, chunking s, texts)."""
    import vecguard

    open_s, engine = timed(vecguard.open, write_config(work, "chunker"))
    with engine:
        split_s, chunks = timed(lambda: [[c.text for c in engine.chunker.split(doc["text"])] for doc in docs])
    return open_s, split_s, chunks


MODEL_CODE = ("/torch/", "/transformers/", "/sentence_transformers/", "/tokenizers/", "method torch")


def profile_add(work: Path, docs: list[dict], top: int = 20) -> str:
    """cProfile one add + close; lists the top cumulative entries outside the model's own code."""
    import vecguard

    engine = vecguard.open(write_config(work, "profile"))
    profiler = cProfile.Profile()
    profiler.enable()
    engine.add(docs)
    engine.close()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = max(ct for _, _, _, ct, _ in stats.values())
    rows = sorted(
        (
            (ct, tt, nc, f"{Path(file).name}:{line}({func})")
            for (file, line, func), (_, nc, tt, ct, _) in stats.items()
            if not any(part in f"{file} {func}" for part in MODEL_CODE)
        ),
        reverse=True,
    )[:top]
    lines = [
        f"add + close of {len(docs)} docs: {total:.2f} s under cProfile; entries outside torch/transformers/"
        f"sentence_transformers/tokenizers (vecguard's encode wrappers include the forward pass)",
        f"{'cumulative s':>12} {'own s':>8} {'calls':>7}  function",
    ]
    lines += [f"{ct:>12.3f} {tt:>8.3f} {nc:>7}  {name}" for ct, tt, nc, name in rows]
    return "\n".join(lines) + "\n"


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        f"# Ingest speed: vecguard add vs raw encode ({report['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}; torch {m['libraries']['torch']} ({s['torch_threads']} threads), "
        f"sentence-transformers {m['libraries']['sentence-transformers']}, faiss-cpu {m['libraries']['faiss-cpu']}.",
        f"Corpus: {report['corpus']['name']}, {report['corpus']['documents']} documents, {report['corpus']['characters']:,} characters, "
        f"{report['corpus']['vecguard_chunks']} vecguard chunks (256 tokens, 32 overlap). "
        f"Repetitions: {s['repeats']} interleaved, medians; batch_size: raw encode 32 (sentence-transformers' default), "
        f'vecguard {s["batch_size"]["vecguard fp32"]} in fp32 and {s["batch_size"]["vecguard auto"]} in auto (batch_size "auto"), CPU. '
        f"Command: `{s['command']}`.",
        "",
        "| measurement | docs | texts encoded | median s | docs/s | chunks/s | min s | runs (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        chunks_per_s = f"{row['chunks_per_s']:.1f}" if row.get("chunks_per_s") else "-"
        runs = ", ".join(f"{x:.1f}" for x in row["runs_s"])
        lines.append(
            f"| {row['name']} | {row['docs']} | {row['texts']} | {row['median_s']:.2f} | {row['docs_per_s']:.1f} | {chunks_per_s} | {min(row['runs_s']):.2f} | {runs} |"
        )
    lines += [
        "",
        "Not in the throughput (seconds): " + ", ".join(f"{k} {v:.2f}" for k, v in report["load_s"].items()),
        "",
    ]
    o = report["overhead"]
    lines += [
        f"Medians: vecguard add / raw encode of the same chunks in one call (A/C) {o['A/C']:.2f}x, "
        f"in vecguard's 64-document groups (A/D) {o['A/D']:.2f}x, D/C {o['D/C']:.2f}x; "
        f"add {o['add_s']:.2f} s + close {o['close_s']:.2f} s. Load average at start / end: "
        f"{report['load_average']['start'][0]:.2f} / {report['load_average']['end'][0]:.2f} (other work on the CPUs slows every run).",
        "",
    ]
    p = report["precision_auto"]
    lines += [
        f'precision "auto" ran {p["used"]} (probe sentences\' lowest cosine against fp32: {p["probe_min_cosine"]}); '
        f"it is **{p['speedup_A/E']:.2f}x** as fast as fp32 end to end (A/E, medians).",
        "",
    ]
    if report.get("cli_output"):
        lines += [f"CLI said: `{report['cli_output']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N documents")
    parser.add_argument(
        "--profile", type=int, default=200, metavar="N", help="cProfile one add on the first N documents (0: none)"
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="vecguard-bench-") as tmp:
        work = Path(tmp)
        os.environ["VECGUARD_CACHE_DIR"] = str(work / "cache")
        load = {}
        load["import torch"], torch = timed(__import__, "torch")
        load["import sentence_transformers"], st = timed(__import__, "sentence_transformers")
        load["import vecguard"], _ = timed(__import__, "vecguard")
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        sys.path.insert(0, str(HERE))
        from corpora import cwe_documents, write_jsonl
        from vecguard.plugins.sentence_transformers import bundled_model_path

        docs = list(cwe_documents())[: args.limit]
        texts = [d["text"] for d in docs]
        data = work / "data.jsonl"
        write_jsonl(iter(docs), data)
        load["SentenceTransformer load"], model = timed(
            lambda: st.SentenceTransformer(str(bundled_model_path()), device="cpu")
        )
        load["first engine open (cold fingerprint cache)"], load["chunking alone (all docs)"], per_doc = chunk_texts(
            work, docs
        )

        chunks = [text for doc_chunks in per_doc for text in doc_chunks]
        groups = [
            [t for doc_chunks in per_doc[i : i + BATCH_DOCUMENTS] for t in doc_chunks]
            for i in range(0, len(docs), BATCH_DOCUMENTS)
        ]
        runs = {"A": [], "B": [], "C": [], "D": [], "E": []}
        for i in range(args.repeats):
            runs["A"].append(vecguard_add(work, f"add-{i}", docs))
            runs["E"].append(vecguard_add(work, f"auto-{i}", docs, precision="auto"))
            runs["B"].append(raw_encode(model, [texts]))
            runs["C"].append(raw_encode(model, [chunks]))
            runs["D"].append(raw_encode(model, groups))
            print(
                f"round {i + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in runs.items()),
                flush=True,
            )
        cli = cli_index(work, data)
        profile = profile_add(work, docs[: args.profile]) if args.profile else None

    n_docs, n_chunks = len(docs), len(chunks)
    assert all(r["chunks"] == n_chunks for r in runs["A"]), (
        "vecguard stored a different number of chunks than its chunker made"
    )
    median = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    load["engine open (median, model load + manifest)"] = statistics.median(r["open_s"] for r in runs["A"])

    def row(name: str, key: str, n_texts: int, seconds: list[float]) -> dict:
        mid = statistics.median(seconds)
        return {
            "name": name,
            "key": key,
            "docs": n_docs,
            "texts": n_texts,
            "median_s": mid,
            "docs_per_s": n_docs / mid,
            "chunks_per_s": n_chunks / mid if n_texts == n_chunks else None,
            "runs_s": seconds,
        }

    secs = {k: [r["seconds"] for r in v] for k, v in runs.items()}
    rows = [
        row("A vecguard Engine.add + close (end to end)", "A", n_chunks, secs["A"]),
        row("B raw encode, full texts (truncated at 256 tokens)", "B", n_docs, secs["B"]),
        row("C raw encode, vecguard's chunk texts, one call", "C", n_chunks, secs["C"]),
        row("D raw encode, vecguard's chunk texts, one call per 64 docs", "D", n_chunks, secs["D"]),
        row(
            f'E vecguard Engine.add + close, precision "auto" (ran {runs["E"][0]["precision"]})',
            "E",
            n_chunks,
            secs["E"],
        ),
        row("`vecguard index -q` CLI, once (wall, incl. startup + model load)", "CLI", n_chunks, [cli["seconds"]]),
    ]
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "corpus": {
            "name": "MITRE CWE v4.14 (cwe2), benchmarks/corpora.py cwe_documents()"
            + (f", first {args.limit}" if args.limit else ""),
            "documents": n_docs,
            "characters": sum(map(len, texts)),
            "vecguard_chunks": n_chunks,
        },
        "settings": {
            "command": " ".join(sys.argv),
            "limit": args.limit,
            "repeats": args.repeats,
            "order": "A, E, B, C, D interleaved per round; CLI once after",
            "batch_size": {
                "raw": 32,
                "vecguard fp32": runs["A"][0]["batch_size"],
                "vecguard auto": runs["E"][0]["batch_size"],
            },
            "device": "cpu",
            "chunking": {"tokens": 256, "overlap": 32, "batch_documents": BATCH_DOCUMENTS},
            "store": "faiss index=auto (Flat) + SQLite",
            "keyword": "bm25",
            "torch_threads": torch.get_num_threads(),
        },
        "rows": rows,
        "runs": runs,
        "load_s": load,
        "precision_auto": {
            "used": runs["E"][0]["precision"],
            "probe_min_cosine": runs["E"][0]["probe_cosine"],
            "speedup_A/E": median["A"] / median["E"],
            "E/C": median["E"] / median["C"],
        },
        "overhead": {
            "A/C": median["A"] / median["C"],
            "A/D": median["A"] / median["D"],
            "D/C": median["D"] / median["C"],
            "A-D_s": median["A"] - median["D"],
            "add_s": statistics.median(r["add_s"] for r in runs["A"]),
            "close_s": statistics.median(r["close_s"] for r in runs["A"]),
        },
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        "cli_output": cli["output"],
        "profile": profile,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest_speed.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = markdown(report)
    if profile:
        text += f"\n## cProfile of one add on {args.profile} docs (top cumulative)\n\n```\n{profile}```\n"
    (RESULTS / "ingest_speed.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

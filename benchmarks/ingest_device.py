"""Ingest on an accelerator: vecguard's ``Engine.add`` next to a raw ``SentenceTransformer.encode`` of the same chunks.

    .venv/bin/python benchmarks/ingest_device.py --device cuda
    .venv/bin/python benchmarks/ingest_device.py --device cuda --corpus cwe.jsonl   # where cwe2 is not installed

The MITRE CWE documents (``corpora.cwe_documents()``, or ``--corpus`` JSONL with id and
text), ``--copies`` times under new ids, so that a GPU has enough work. Interleaved,
``--repeats`` times, medians:

  A  ``vecguard.open`` (excluded) then ``engine.add(docs)`` + ``close()`` into the in-memory store
     and BM25, fp32 and ``precision = "auto"`` (fp16 on CUDA), with ``batch_documents`` 64 (the
     CPU's) and "auto" (the encoder's batch)
  C  raw ``encode`` of vecguard's exact chunk texts in one call, fp32 and ``.half()``, batch 256 and 512

The store is the in-memory one so that the figures are the encoder's pipeline, not a
database's writes (store throughput has its own benchmark). ``--profile`` prints a cProfile
of one add (the calling thread: chunking, keyword index, store writes). Results:
benchmarks/results/ingest_device-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    import torch
    import vecguard
    from sentence_transformers import SentenceTransformer
    from vecguard.plugins.sentence_transformers import bundled_model_path

    if args.corpus:
        base = [json.loads(line) for line in args.corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from corpora import cwe_documents

        base = list(cwe_documents())
    docs = [{"id": f"{d['id']}~{copy}", "text": d["text"]} for copy in range(args.copies) for d in base]
    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def config(precision: str, batch_documents: int | str) -> dict:
        return {
            "encoder": {
                "plugin": "sentence-transformers",
                "model": "bundled",
                "device": args.device,
                "precision": precision,
            },
            "store": {"plugin": "memory"},
            "keyword": {"plugin": "bm25"},
            "chunking": {"tokens": 256, "overlap": 32, "batch_documents": batch_documents},
        }

    def engine_add(precision: str, batch_documents: int | str, documents: list[dict], profile: bool = False) -> dict:
        engine = vecguard.open(config(precision, batch_documents))
        profiler = cProfile.Profile() if profile else None
        sync()
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        written = engine.add(documents)
        engine.close()
        sync()
        seconds = time.perf_counter() - started
        if profiler:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
            print(out.getvalue())
        assert written == len(documents), (written, len(documents))
        return {
            "seconds": seconds,
            "ran_as": engine.encoder.identity().precision,
            "encoder_batch": engine.encoder.batch_size,
            "batch_documents": engine.batch_documents,
        }

    with vecguard.open(config("fp32", 64)) as engine:
        started = time.perf_counter()
        chunks = [chunk.text for texts in engine.chunker.split_many([d["text"] for d in docs]) for chunk in texts]
        chunk_s = time.perf_counter() - started
    print(f"{len(docs)} documents -> {len(chunks)} chunks; chunking alone {chunk_s:.2f} s", flush=True)

    models = {
        "fp32": SentenceTransformer(str(bundled_model_path()), device=args.device),
        "fp16": SentenceTransformer(str(bundled_model_path()), device=args.device),
    }
    if cuda:
        models["fp16"].half()
    for model in models.values():
        model.encode(chunks[:256], batch_size=256)
    for precision in ("fp32", "auto"):
        engine_add(precision, 64, docs[:200])  # warm-up: the batch-memory measurement, the precision probe

    runs: dict[str, dict] = {}

    def record(name: str, run: dict) -> None:
        runs.setdefault(name, {"seconds": [], **{k: v for k, v in run.items() if k != "seconds"}})["seconds"].append(
            run["seconds"]
        )

    for _ in range(args.repeats):
        for batch_documents in (64, "auto"):
            for precision in ("fp32", "auto"):
                record(
                    f"A vecguard add, precision {precision}, batch_documents {batch_documents}",
                    engine_add(precision, batch_documents, docs),
                )
        for name, model in models.items():
            for size in (256, 512):
                sync()
                started = time.perf_counter()
                model.encode(chunks, batch_size=size)
                sync()
                record(f"C raw encode {name}, batch {size}", {"seconds": time.perf_counter() - started})
    if args.profile:
        engine_add("auto", "auto", docs, profile=True)

    rows = [
        {
            "run": name,
            "median_s": statistics.median(r["seconds"]),
            "chunks_per_s": len(chunks) / statistics.median(r["seconds"]),
            **{k: v for k, v in r.items() if k != "seconds"},
            "seconds": r["seconds"],
        }
        for name, r in runs.items()
    ]
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "device": args.device,
        "device_name": device_name,
        "settings": {"documents": len(docs), "chunks": len(chunks), "copies": args.copies, "repeats": args.repeats},
        "chunking_alone_s": chunk_s,
        "rows": rows,
    }
    lines = [
        f"# Ingest on {device_name} ({report['date']})",
        "",
        f"{len(docs)} CWE documents ({args.copies} copies under new ids), {len(chunks)} chunks of <= 256 tokens; "
        f"in-memory store + BM25; medians of {args.repeats}. {machine()['nproc']} CPUs; torch "
        f"{report['machine']['libraries']['torch']}, sentence-transformers {report['machine']['libraries']['sentence-transformers']}. "
        "Command: `benchmarks/ingest_device.py`.",
        "",
        "| run | median s | chunks/s | ran as | encoder batch | batch_documents |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['median_s']:.2f} | {r['chunks_per_s']:.0f} | {r.get('ran_as', '')} | "
            f"{r.get('encoder_batch', '')} | {r.get('batch_documents', '')} |"
        )
    lines.append("")
    save(f"ingest_device-{args.device.split(':')[0]}", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

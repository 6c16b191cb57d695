"""Encoder throughput and memory by batch size, and the tokenizer's own rate, on this machine's device.

    .venv/bin/python benchmarks/encoder_batch.py                 # CPU: batch 8..256, fp32 and the "auto" precision
    .venv/bin/python benchmarks/encoder_batch.py --device cuda   # CUDA: batch 32..2048, fp32 and fp16

Texts are the first ``--texts`` MITRE CWE documents (``benchmarks/corpora.py``), most
of them longer than the model's 256 tokens, so nearly every text is a full-length
chunk. Each (precision, batch size) encodes all of them through vecguard's
encoder (``encode_documents``, which re-normalises and casts back to float32),
interleaved with the other settings, ``--repeats`` times; medians. Peak memory:
on CUDA, ``torch.cuda.max_memory_allocated`` during the call minus what was
allocated before; on a CPU, the encoder's measured activation memory per text
(what ``batch_size = "auto"`` uses) times the batch, labelled as an estimate.
Also the tokenizer alone (what the chunker runs on every document): one
``encode`` per text, and one ``encode_batch`` over all of them (parallel in
Rust). Results: benchmarks/results/encoder_batch-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, save  # noqa: E402

SIZES = {"cpu": [8, 16, 32, 64, 128, 256], "cuda": [32, 64, 128, 256, 512, 1024, 2048]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+")
    args = parser.parse_args()

    import torch
    from corpora import cwe_documents
    from vecguard.registry import Registry

    device_type = args.device.split(":")[0]
    texts = [d["text"] for d in cwe_documents()][: args.texts]
    registry = Registry.discover()
    precisions = ["fp32", "auto"]
    encoders = {
        p: registry.build("encoder", "sentence-transformers", {"device": args.device, "precision": p}, HERE)
        for p in precisions
    }
    sizes = args.sizes or SIZES.get(device_type, SIZES["cpu"])
    for encoder in encoders.values():
        encoder.encode_documents(texts[:8])  # warm-up

    seconds: dict[tuple[str, int], list[float]] = {}
    peaks: dict[tuple[str, int], int] = {}
    for _ in range(args.repeats):
        for precision, encoder in encoders.items():
            for size in sizes:
                if device_type == "cuda":
                    torch.cuda.synchronize()
                    before = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                encoder.encode_documents(texts, batch_size=size)
                if device_type == "cuda":
                    torch.cuda.synchronize()
                    peaks[precision, size] = torch.cuda.max_memory_allocated() - before
                seconds.setdefault((precision, size), []).append(time.perf_counter() - started)

    tokenizer = encoders["fp32"].model.tokenizer.backend_tokenizer
    token_runs: dict[str, list[float]] = {"one encode per text": [], "encode_batch": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        for text in texts:
            tokenizer.encode(text)
        token_runs["one encode per text"].append(time.perf_counter() - started)
        started = time.perf_counter()
        tokenizer.encode_batch(texts)
        token_runs["encode_batch"].append(time.perf_counter() - started)

    rows = []
    for (precision, size), runs in seconds.items():
        encoder = encoders[precision]
        peak = peaks.get((precision, size))
        rows.append(
            {
                "precision": precision,
                "ran_as": encoder.identity().precision,
                "batch_size": size,
                "median_s": statistics.median(runs),
                "texts_per_s": len(texts) / statistics.median(runs),
                "peak_mib": peak / 2**20 if peak is not None else None,
                "estimated_peak_mib": encoder.bytes_per_text * size / 2**20 if encoder.bytes_per_text else None,
                "auto_batch_size": encoder.batch_size,
            }
        )
    tokenizer_rows = [
        {"method": m, "median_s": statistics.median(r), "texts_per_s": len(texts) / statistics.median(r)}
        for m, r in token_runs.items()
    ]
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if device_type == "cuda" else "cpu",
        "settings": {"texts": len(texts), "repeats": args.repeats, "sizes": sizes},
        "rows": rows,
        "tokenizer": tokenizer_rows,
    }
    lines = [
        f"# Encoder by batch size on {report['device_name']} ({report['date']})",
        "",
        f"{len(texts)} CWE texts (nearly all full 256-token chunks), all-MiniLM-L6-v2 through vecguard's encoder; "
        f'medians of {args.repeats}. `batch_size = "auto"` chose: '
        + ", ".join(
            f"{p} -> {e.batch_size} ({e.bytes_per_text / 2**20:.1f} MiB per text measured)" for p, e in encoders.items()
        ),
        "",
        "| precision (ran as) | batch | texts/s | peak MiB |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else f"~{r['estimated_peak_mib']:.0f} (estimate)"
        lines.append(f"| {r['precision']} ({r['ran_as']}) | {r['batch_size']} | {r['texts_per_s']:.1f} | {peak} |")
    lines += ["", "| tokenizer alone | texts/s |", "|---|---:|"]
    lines += [f"| {r['method']} | {r['texts_per_s']:.0f} |" for r in tokenizer_rows]
    lines.append("")
    save(f"encoder_batch-{device_type}", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

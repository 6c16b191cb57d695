"""PNG plots of the committed results: quality per mode per set, recall against latency per FAISS index type, the
keyword index's incremental saves, writes to a shared collection by size, and embedded Qdrant beside the other stores.

    .venv/bin/python benchmarks/plots.py      # reads results/quality.json, faiss_indexes.json, keyword_files.json,
                                              # shared_writes.json, qdrant_embedded.json, query_recall*.json,
                                              # query_latency.json

Writes results/quality.png (nDCG@10 of every method on every query set, one
panel per backend, the issue's bar drawn on each set) and
results/faiss_recall_latency.png (recall@10 against p50 single-query latency,
one panel per collection size, a line per sweep, vecguard's tuned ``auto``
index marked) and results/keyword_saves.png (every save_changes of 320 chunks
as a collection grows to 10k and 100k chunks; merges are the peaks) and
results/shared_writes.png (one document added, p50 with the encoder apart, and
the time to open, against the collection's size) and results/qdrant_embedded.png
(load rate, query p50 unfiltered and filtered with recall@10, peak RSS and disk
per store and size) and results/query_recall.png (and query_recall-before.png:
recall@10 against nprobe / efSearch for stored vectors, query-encoded spans and
real queries, and recall while serving) and results/query_latency.png (hybrid p50/p99 quiet and beside an
ingesting process per thread policy, and the neighbour's documents/s). Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS  # noqa: E402

QUALITY_BAR_SLACK = 0.02  # the goal: >= the better of BM25 and dense minus this
SELECTIVITY_LABELS = ("1%", "10%", "50%")  # qdrant_embedded.py's filters


def quality_plot(report: dict, out: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    backends = list(report["results"])
    most_sets = max(len(sets) for sets in report["results"].values())
    figure, axes = plt.subplots(
        len(backends), 1, figsize=(max(8.0, 1.4 * most_sets), 4.2 * len(backends) + 1), sharey=True, squeeze=False
    )
    every_method = list(
        dict.fromkeys(m for sets in report["results"].values() for row in sets.values() for m in row["methods"])
    )
    colour = {method: f"C{i}" for i, method in enumerate(every_method)}  # one colour per method on every backend
    for axis, backend in zip(axes[:, 0], backends):
        sets = report["results"][backend]
        names = list(sets)
        methods = list(next(iter(sets.values()))["methods"])
        width = 0.8 / len(methods)
        positions = np.arange(len(names))
        for i, method in enumerate(methods):
            scores = [sets[name]["methods"][method]["ndcg@10"] for name in names]
            axis.bar(
                positions + (i - (len(methods) - 1) / 2) * width, scores, width, color=colour[method], label=method
            )
        for position, name in zip(positions, names):
            methods_of_set = sets[name]["methods"]
            bar = max(methods_of_set["BM25"]["ndcg@10"], methods_of_set["dense"]["ndcg@10"]) - QUALITY_BAR_SLACK
            axis.hlines(bar, position - 0.45, position + 0.45, colors="black", linestyles="dashed", linewidth=1)
        axis.set_xticks(positions, names, rotation=15)
        axis.set_title(backend)
        axis.set_ylim(0, 1.05)
        axis.grid(axis="y", alpha=0.3)
        axis.set_ylabel("nDCG@10")
    axes[-1][0].set_xlabel("dashed: the goal, the better of BM25 and dense - 0.02")
    labelled = {label: handle for axis in axes[:, 0] for handle, label in zip(*axis.get_legend_handles_labels())}
    figure.legend(list(labelled.values()), list(labelled), loc="lower center", ncol=3, fontsize="small")
    figure.suptitle(f"Retrieval quality per method ({report['date'][:10]})")
    figure.tight_layout(rect=(0, 0.06, 1, 0.97))
    figure.savefig(out, dpi=110)
    plt.close(figure)


def recall_latency_plot(report: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    sizes = list(report["results"])
    figure, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.8), squeeze=False)
    for axis, size in zip(axes[0], sizes):
        result = report["results"][size]
        sweeps: dict[str, list[dict]] = defaultdict(list)
        for row in result["indexes"]:
            sweeps[row["index"]].append(row)
        for index, rows in sweeps.items():
            style = "o-" if len(rows) > 1 else "s"
            axis.plot([r["p50_ms"] for r in rows], [r["recall_at_10"] for r in rows], style, label=index, markersize=5)
            if len(rows) > 1:
                for row in rows:
                    axis.annotate(
                        row["setting"].split("=")[-1],
                        (row["p50_ms"], row["recall_at_10"]),
                        fontsize=6,
                        xytext=(3, -8),
                        textcoords="offset points",
                    )
        ours = result.get("vecguard")
        if ours:
            axis.plot(
                [ours["vecguard_p50_ms"]],
                [ours["held_out_recall_at_10"]],
                "*",
                markersize=14,
                color="black",
                label=f"vecguard auto ({ours['spec']}, {knob(ours['tuning'])}), with payloads",
            )
        axis.axhline(0.95, color="grey", linestyle="dotted", linewidth=1)
        axis.set_xscale("log")
        axis.set_xlabel("p50 single-query latency, ms (log)")
        axis.set_ylabel("recall@10 against exact search")
        axis.set_title(f"{int(size):,} vectors, 384-d")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small", loc="lower right")
    title = f"FAISS index types: recall against latency ({report['date'][:10]})"
    earlier = report.get("index_rows_from")
    if earlier:  # a --vecguard-only run: the curves are an earlier run's, on the machine it names
        title = (
            f"FAISS index types: recall against latency ({earlier['date'][:10]}, {earlier['machine']['cpu_model']}); "
            f"vecguard's star {report['date'][:10]}, {report['machine']['cpu_model']}"
        )
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def keyword_saves_plot(report: dict, out: Path) -> None:
    """Every save_changes of the keyword index as a collection grows by 320 chunks a save: merges are the peaks."""
    import matplotlib.pyplot as plt

    grown = {size: r["grown"] for size, r in report["results"].items() if "save_ms" in r.get("grown", {})}
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for size, g in grown.items():
        chunks = [320 * (i + 1) for i in range(len(g["save_ms"]))]
        axis.plot(chunks, g["save_ms"], linewidth=0.8, label=f"to {int(size):,} chunks: p50 {g['save_p50_ms']:.0f} ms")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("chunks held after the save")
    axis.set_ylabel("save_changes of 320 chunks, ms")
    axis.legend()
    axis.set_title(
        f"bm25 keyword index: every incremental save ({report['date'][:10]}, {report['machine']['cpu_model']})"
    )
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def shared_writes_plot(report: dict, out: Path) -> None:
    """One document added (p50: the encode and vecguard's write cost stacked, p90 marked) and the time to open
    (vecguard.open, its encoder load apart, and the first search) against the collection's size."""
    import matplotlib.pyplot as plt
    import numpy as np

    results = report["results"]
    sizes = [int(s) for s in results]
    labels = [f"{s:,}" for s in sizes]
    x = np.arange(len(sizes))
    figure, (adds, opens) = plt.subplots(1, 2, figsize=(12, 4.8))
    encode = [results[str(s)]["add"]["encode"]["p50_ms"] for s in sizes]
    write = [results[str(s)]["add"]["write"]["p50_ms"] for s in sizes]
    p90 = [results[str(s)]["add"]["total"]["p90_ms"] for s in sizes]
    adds.bar(x, encode, 0.6, label="encode (p50)", color="tab:gray")
    adds.bar(x, write, 0.6, bottom=encode, label="vecguard's write cost (p50)", color="tab:blue")
    adds.plot(x, p90, "k_", markersize=24, label="total p90")
    small = results[str(sizes[0])]["add"]["total"]["p50_ms"]
    adds.axhline(2 * small, color="black", linestyle="dashed", linewidth=1, label=f"goal: 2x the {labels[0]} p50")
    adds.set_ylim(0, 1.35 * max(2 * small, *p90))
    adds.set_xticks(x, labels)
    adds.set_xlabel("chunks in the collection")
    adds.set_ylabel("engine.add([one document]), ms")
    adds.set_title("Adding one document")
    adds.legend(fontsize="small")
    engine = [results[str(s)]["open"]["open_s"] for s in sizes]
    encoder = [results[str(s)]["open"]["encoder_s"] for s in sizes]
    first = [results[str(s)]["open"]["first_search_s"] for s in sizes]
    opens.bar(x, encoder, 0.6, label="encoder: libraries imported, model loaded", color="tab:gray")
    opens.bar(
        x,
        [e - m for e, m in zip(engine, encoder)],
        0.6,
        bottom=encoder,
        label="the rest of vecguard.open",
        color="tab:blue",
    )
    opens.bar(x, first, 0.6, bottom=engine, label="first search (payload records built)", color="tab:orange")
    opens.axhline(5, color="black", linestyle="dashed", linewidth=1, label="goal: open in 5 s")
    opens.set_xticks(x, labels)
    opens.set_xlabel("chunks in the collection")
    opens.set_ylabel("seconds, in a fresh process (median of 3)")
    opens.set_title("Opening the collection")
    opens.legend(fontsize="small")
    figure.suptitle(
        f"Writes to a shared FAISS collection, synthetic chunks, IVF ({report['date'][:10]}, "
        f"{report['machine']['nproc']} CPUs)"
    )
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def query_latency_plot(report: dict, out: Path) -> None:
    """Hybrid p50 (bars) and p99 (marks) quiet and beside an ingesting neighbour per thread policy, log scale, with
    3x each policy's quiet p50 dashed; and the neighbour's documents/s alone and beside the queries."""
    import matplotlib.pyplot as plt
    import numpy as np

    rows = report["rows"]
    names = [r["policy"] for r in rows]
    x = np.arange(len(rows))
    figure, (latency, ingest) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for offset, condition, colour in ((-0.2, "quiet", "tab:blue"), (0.2, "loaded", "tab:red")):
        latency.bar(x + offset, [r[condition]["p50_ms"] for r in rows], 0.4, color=colour, label=f"{condition} p50")
        latency.plot(x + offset, [r[condition]["p99_ms"] for r in rows], "k_", markersize=14)
    latency.plot([], [], "k_", markersize=14, label="p99")
    for i, r in enumerate(rows):
        goal = 3 * r["quiet"]["p50_ms"]
        latency.plot([i - 0.4, i + 0.4], [goal, goal], color="black", linestyle="dashed", linewidth=1)
    latency.plot([], [], color="black", linestyle="dashed", linewidth=1, label="goal: loaded p50 <= 3x quiet")
    latency.set_yscale("log")
    latency.set_xticks(x, names, rotation=20, ha="right")
    latency.set_ylabel("engine.search(q, k=10) hybrid, ms")
    latency.set_title("Query latency, quiet and beside an ingesting process")
    latency.legend(fontsize="small")
    ingest.bar(x - 0.2, [r["neighbour_alone_docs_per_s"] for r in rows], 0.4, color="tab:gray", label="alone")
    ingest.bar(
        x + 0.2, [r["loaded"]["neighbour_docs_per_s"] for r in rows], 0.4, color="tab:orange", label="beside queries"
    )
    ingest.set_xticks(x, names, rotation=20, ha="right")
    ingest.set_ylabel("neighbour's engine.add, documents/s")
    ingest.set_title("The neighbour's ingest")
    ingest.legend(fontsize="small")
    figure.suptitle(
        f"Thread policies on {report['machine']['nproc']} CPUs, CWE collection, FAISS auto + BM25 ({report['date'][:10]})"
    )
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def qdrant_embedded_plot(report: dict, out: Path) -> None:
    """Embedded Qdrant beside FAISS auto, Chroma and qdrant-client local mode: load rate, query p50 (unfiltered and
    filtered, recall@10 over each unfiltered bar) per size, and peak memory and disk."""
    import matplotlib.pyplot as plt
    import numpy as np

    rows = report["rows"]
    sizes = sorted({r["points"] for r in rows})
    stores = list(dict.fromkeys(r["store"] for r in rows))
    by = {(r["store"], r["points"]): r for r in rows}
    figure, axes = plt.subplots(1, len(sizes) + 3, figsize=(5.2 * (len(sizes) + 3), 4.8), squeeze=False)
    load, *latency, memory, matched = axes[0]
    width = 0.8 / len(sizes)
    x = np.arange(len(stores))
    for i, n in enumerate(sizes):
        rates = [by[(s, n)]["points_per_s"] if (s, n) in by else 0 for s in stores]
        load.bar(x + (i - (len(sizes) - 1) / 2) * width, rates, width, label=f"{n:,} points")
        if ("faiss", n) in by:
            quarter = by[("faiss", n)]["points_per_s"] / 4
            load.axhline(quarter, color=f"C{i}", linestyle="dashed", linewidth=1, label=f"goal at {n:,}: FAISS / 4")
    load.set_xticks(x, stores, rotation=15)
    load.set_yscale("log")
    load.set_ylabel("points/s, upserts + close (+ HNSW build)")
    load.set_title("Loading")
    load.legend(fontsize="x-small")
    kinds = ["unfiltered", *SELECTIVITY_LABELS]
    kind_width = 0.8 / len(kinds)
    for axis, n in zip(latency, sizes):
        for j, kind in enumerate(kinds):
            values = []
            for s in stores:
                r = by.get((s, n))
                values.append(
                    0 if r is None else r["p50_ms"] if kind == "unfiltered" else r["filtered"][kind]["p50_ms"]
                )
            bars = axis.bar(x + (j - (len(kinds) - 1) / 2) * kind_width, values, kind_width, label=kind)
            if kind == "unfiltered":
                for bar, s in zip(bars, stores):
                    if (s, n) in by:
                        axis.annotate(
                            f"{by[(s, n)]['recall_at_10']:.3f}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            fontsize=6,
                            ha="center",
                            xytext=(0, 2),
                            textcoords="offset points",
                        )
        if n <= 100_000:
            axis.axhline(5, color="black", linestyle="dashed", linewidth=1, label="goal: filtered 5 ms")
        axis.set_xticks(x, stores, rotation=15)
        axis.set_yscale("log")
        axis.set_ylabel("p50 single-query latency, ms (log)")
        axis.set_title(f"{n:,} points: query p50 (recall@10 over the unfiltered bar)")
        axis.legend(fontsize="x-small")
    for i, n in enumerate(sizes):
        offset = (i - (len(sizes) - 1) / 2) * width
        peaks = [
            max(by[(s, n)]["load_peak_rss_mib"], by[(s, n)]["query_peak_rss_mib"]) if (s, n) in by else 0
            for s in stores
        ]
        disks = [by[(s, n)]["disk_mib"] if (s, n) in by else 0 for s in stores]
        memory.bar(x + offset - width / 4, peaks, width / 2, color=f"C{i}", label=f"{n:,}: peak RSS")
        memory.bar(
            x + offset + width / 4, disks, width / 2, color=f"C{i}", alpha=0.45, hatch="//", label=f"{n:,}: disk"
        )
    memory.set_xticks(x, stores, rotation=15)
    memory.set_yscale("log")
    memory.set_ylabel("MiB (log)")
    memory.set_title("Peak RSS (load or query) and disk")
    memory.legend(fontsize="x-small")
    for i, n in enumerate(sizes):  # the same recall: embedded Qdrant's hnsw_ef sweep beside FAISS auto's point
        sweep = (by.get(("qdrant-edge", n)) or {}).get("ef_sweep")
        if sweep:
            matched.plot(
                [p["p50_ms"] for p in sweep],
                [p["recall_at_10"] for p in sweep],
                marker="o",
                color=f"C{i}",
                label=f"{n:,}: embedded Qdrant, hnsw_ef {sweep[0]['hnsw_ef']}-{sweep[-1]['hnsw_ef']}",
            )
        if ("faiss", n) in by and sweep:
            faiss = by[("faiss", n)]
            matched.plot(
                faiss["p50_ms"],
                faiss["recall_at_10"],
                marker="*",
                markersize=12,
                color=f"C{i}",
                linestyle="none",
                label=f"{n:,}: FAISS auto (5x its p50 dotted)",
            )
            matched.axvline(5 * faiss["p50_ms"], color=f"C{i}", linestyle="dotted", linewidth=1)
    matched.set_xscale("log")
    matched.set_xlabel("p50 single-query latency, ms (log)")
    matched.set_ylabel("recall@10, held-out queries")
    matched.set_title("Recall against latency (warm process)")
    matched.legend(fontsize="x-small")
    via = {r["via"] for r in rows if r["store"] == "qdrant-edge"}
    note = " (embedded Qdrant through qdrant_edge directly)" if "qdrant_edge directly" in via else ""
    figure.suptitle(
        f"Embedded Qdrant beside FAISS auto, Chroma, qdrant-client local mode: clustered synthetic 384-d{note} "
        f"({report['date'][:10]}, {report['machine']['nproc']} CPUs)"
    )
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def query_recall_plot(report: dict, out: Path) -> None:
    """Per set and index kind: recall@10 against the knob for stored vectors, query-encoded spans and unseen real
    queries (the target dashed, the tuned value dotted); below, the served phase where there is one."""
    import matplotlib.pyplot as plt

    panels = [(name, kind, r) for name, row in report["results"].items() for kind, r in row["kinds"].items()]
    served = any(len(r["served_phase"]) > 1 for _, _, r in panels)
    figure, axes = plt.subplots(
        2 if served else 1, len(panels), figsize=(4.6 * len(panels), 8.4 if served else 4.4), squeeze=False
    )
    target = report["settings"]["target_recall"]
    for column, (name, kind, r) in enumerate(panels):
        axis, curve, tuned = axes[0][column], r["curve"], r["index"]["knob"]
        for probe, label, style in (
            ("stored", "stored vectors", "s--"),
            ("spans", "query-encoded spans", "^-"),
            ("real", "unseen real queries", "o-"),
        ):
            axis.plot(curve["values"], curve[probe], style, label=label, markersize=4)
        axis.axhline(target, color="black", linestyle="dashed", linewidth=1)
        if tuned:
            reported = r["index"]["recall_at_10"]
            axis.axvline(tuned, color="grey", linestyle="dotted", linewidth=1)
            if reported is not None:
                axis.plot([tuned], [reported], "k*", markersize=10, label="reported by the index")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("nprobe" if r.get("knob_kind", kind) == "IVF" else "efSearch")
        axis.set_title(f"{name}, {kind}: {r['index']['spec']}", fontsize="medium")
        axis.set_ylim(min(0.5, min(min(curve[p]) for p in ("stored", "spans", "real"))), 1.01)
        axis.grid(alpha=0.3)
        if served:
            phase, below = r["served_phase"], axes[1][column]
            counts = [s["served"] for s in phase]
            below.plot(counts, [s["unseen_recall"] for s in phase], "o-", label="unseen real queries")
            measured = [
                (s["served"], s["served_recall"]["recall_at_10"]) for s in phase if isinstance(s["served_recall"], dict)
            ]
            if measured:
                below.plot(*zip(*measured), "^-", label="store.served_recall()")
            below.axhline(target, color="black", linestyle="dashed", linewidth=1)
            for s in phase:
                below.annotate(
                    str(s["knob"]),
                    (s["served"], s["unseen_recall"]),
                    fontsize="x-small",
                    xytext=(0, 5),
                    textcoords="offset points",
                    ha="center",
                )
            below.set_xlabel("queries served (knob annotated)")
            below.set_ylim(min(0.5, min(s["unseen_recall"] for s in phase)), 1.01)
            below.grid(alpha=0.3)
    axes[0][0].set_ylabel("recall@10 against exact (dashed: target)")
    if served:
        axes[1][0].set_ylabel("recall@10 while serving")
        axes[1][0].legend(fontsize="small")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize="small")
    figure.suptitle(f"Recall@10 that real queries get beside what predicts it ({report['date'][:10]})")
    figure.tight_layout(rect=(0, 0.05, 1, 0.96))
    figure.savefig(out, dpi=110)
    plt.close(figure)


def knob(tuning: dict) -> str:
    """The tuned knob of a vecguard index report: nprobe for IVF, efSearch for HNSW."""
    if "nprobe" in tuning:
        return f"nprobe {tuning['nprobe']}"
    return f"efSearch {tuning['ef_search']}" if "ef_search" in tuning else "exact"


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    written = []
    for source, plot, target in (
        ("quality.json", quality_plot, "quality.png"),
        ("faiss_indexes.json", recall_latency_plot, "faiss_recall_latency.png"),
        ("keyword_files.json", keyword_saves_plot, "keyword_saves.png"),
        ("shared_writes.json", shared_writes_plot, "shared_writes.png"),
        ("qdrant_embedded.json", qdrant_embedded_plot, "qdrant_embedded.png"),
        ("query_recall.json", query_recall_plot, "query_recall.png"),
        ("query_recall-before.json", query_recall_plot, "query_recall-before.png"),
        ("query_latency.json", query_latency_plot, "query_latency.png"),
    ):
        path = RESULTS / source
        if not path.exists():
            print(f"skipped {target}: {path} is missing; run its benchmark first")
            continue
        plot(json.loads(path.read_text(encoding="utf-8")), RESULTS / target)
        written.append(str(RESULTS / target))
    print("wrote " + ", ".join(written) if written else "wrote nothing")


if __name__ == "__main__":
    main()

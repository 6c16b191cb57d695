"""The `vecguard` command; every error is one line on stderr, and what was committed before it stays.

Exit status (EXIT_STATUS, also at the end of `vecguard --help`): 0 ok; 1 the guard refused the collection
(drift) or a check or verification failed; 2 bad input or environment (config, documents, filters, files,
disk, a server); 3 an internal error (a bug); 130 interrupted; 141 the output was closed early (``| head``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from datetime import UTC
from pathlib import Path
from typing import Any, NoReturn

from .errors import CollectionNotFoundError, CompatibilityError, CorruptCollectionError, DocumentError, VecguardError
from .sources import count_lines, read_source

EXIT_OK, EXIT_DRIFT, EXIT_ERROR, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_FAILED = EXIT_DRIFT  # a check or a verification that did not hold
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141
EXIT_STATUS = (
    "Exit status: 0 ok, 1 the guard refused (drift) or a check failed, 2 bad input or environment, "
    "3 internal error (rerun with --debug), 130 interrupted, 141 output closed early."
)


def cmd_plugins(args: argparse.Namespace) -> int:
    from .registry import Registry

    registry = Registry.discover()
    rows = [
        {
            "kind": found.part.kind,
            "name": found.part.name,
            "distribution": found.distribution,
            "entry_point": found.plugin,
            "description": found.part.description,
        }
        for found in sorted(registry.parts.values(), key=lambda f: (f.part.kind, f.part.name))
    ]
    broken = [{"entry_point": b.entry_point, "distribution": b.distribution, "error": b.error} for b in registry.broken]
    if args.json:
        print(json.dumps({"parts": rows, "broken": broken}, indent=2))
        return EXIT_OK
    print(f"{'kind':<9} {'name':<22} {'from':<24} description")
    for row in rows:
        print(f"{row['kind']:<9} {row['name']:<22} {row['distribution']:<24} {row['description']}")
    for row in broken:
        print(f"BROKEN    {row['entry_point']:<22} {row['distribution']:<24} {row['error']}")
    return EXIT_OK


def cmd_index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .engine import open as open_engine

    source = Path(args.source)
    if not source.exists():
        raise DocumentError(f"{source}: no such file or folder; give a JSONL file or a folder of .txt/.md files")
    with open_engine(args.config) as engine:
        started = time.perf_counter()
        # disable=None: no bar when stderr is not a terminal (logs, CI)
        with tqdm(total=count_lines(source), unit="docs", desc="indexing", disable=True if args.quiet else None) as bar:
            written = engine.add(read_source(source), progress=bar)
        elapsed = time.perf_counter() - started
        rate = written / elapsed if elapsed else 0.0
        unchanged = engine.last_add["unchanged"]
        skipped = f", {unchanged} already stored unchanged" if unchanged else ""
        print(
            f"indexed {written} documents{skipped} ({engine.count()} "
            f"in the collection, {engine.count_chunks()} chunks) "
            f"in {elapsed:.1f} s, {rate:.1f} docs/s"
        )
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    from .engine import open as open_engine
    from .filters import validate

    filter = None
    if args.filter:
        try:
            filter = json.loads(args.filter)
        except json.JSONDecodeError as exc:
            raise VecguardError(
                f"--filter is not valid JSON ({exc.msg} at column {exc.colno}); "
                f'example: --filter \'{{"year": {{"$gte": 2020}}}}\''
            ) from exc
        except RecursionError:
            raise VecguardError("--filter nests too deeply; a filter nests at most 32 levels") from None
        validate(filter)  # before the model loads
    with open_engine(args.config, create=False) as engine:
        hits = engine.search(
            args.query, k=args.k, mode=args.mode, filter=filter, min_score=args.min_score, chunks=args.chunks
        )
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "rank": rank,
                        "id": hit.id,
                        "score": hit.score,
                        "chunk": hit.chunk,
                        "metadata": hit.metadata,
                        "text": hit.text,
                        "signals": {name: {"rank": e.rank, "score": e.score} for name, e in hit.signals.items()},
                    }
                    for rank, hit in enumerate(hits, start=1)
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return EXIT_OK
    if not hits:
        print("no results" + (f" above min_score {args.min_score}" if args.min_score is not None else ""))
        return EXIT_OK
    print(f"{'#':>3}  {'id':<28} {'score':>8} {'dense':>6} {'cosine':>7} {'kw':>5} {'bm25':>7} {'exact':>5}  text")
    for rank, hit in enumerate(hits, start=1):
        dense, keyword = hit.signals.get("dense"), hit.signals.get("keyword")
        snippet = " ".join(hit.text.split())[:70]
        print(
            f"{rank:>3}  {hit.id[:28]:<28} {hit.score:>8.4f} "
            f"{dense.rank if dense else '-':>6} {f'{dense.score:.3f}' if dense else '-':>7} "
            f"{keyword.rank if keyword else '-':>5} {f'{keyword.score:.2f}' if keyword else '-':>7} "
            f"{'yes' if {'identifier', 'verbatim'} & hit.signals.keys() else '':>5}  {snippet}"
        )
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from .engine import open as open_engine

    with open_engine(args.config, create=False) as engine:
        info = engine.info()
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """The guard, then every record of the collection read once; exit 1 when either finds a problem."""
    from . import guard
    from .config import load_config
    from .engine import Engine

    config = load_config(args.config)
    started = time.perf_counter()
    try:  # opened without repairing anything: what open would repair is reported instead
        engine = Engine(config, check_guard=False, create=False, repair=False)
    except (CollectionNotFoundError, CorruptCollectionError) as exc:
        if args.json:
            print(json.dumps({"status": "failed", "problems": [str(exc)]}, indent=2))
        else:
            print(f"FAILED: {exc}")
        return EXIT_FAILED
    with engine:
        report = engine.check()
        problems = engine.check_integrity()
        documents, chunks = engine.count(), engine.count_chunks()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if args.json:
        print(
            json.dumps({**report.as_dict(), "problems": problems, "documents": documents, "chunks": chunks}, indent=2)
        )
    else:
        print(f"{report.status.upper()}: {report.message(args.config)}")
        if report.mean_cosine is not None:
            print(
                f"probe cosine over {len(guard.PROBE_SENTENCES)} sentences: "
                f"mean {report.mean_cosine:.4f}, min {report.min_cosine:.4f}"
            )
        if problems:
            print(f"FAILED: {len(problems)} problem{'s' * (len(problems) > 1)} in the collection's files and records:")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"records OK: {documents} documents, {chunks} chunks, every record read and in step")
        print(f"guard took {report.elapsed_ms:.1f} ms, the whole check {elapsed_ms:.0f} ms")
    return EXIT_FAILED if report.status == "refused" or problems else EXIT_OK


def _knob(measured: dict) -> str:
    """The tuned search setting in an index report, like "nprobe 4" ("" when none was tuned)."""
    return next((f"{name} {measured[name]}" for name in ("nprobe", "ef_search", "hnsw_ef") if name in measured), "")


def _measured_on(report: dict) -> str:
    """What an index report's recall was measured on, like "400 query-like probes"."""
    if "measured_on" in report:
        return str(report["measured_on"])
    return (
        f"{report.get('queries', '')} {report.get('retuned_on') or report.get('tuned_on') or 'held-out stored vectors'}"
    )


def cmd_optimize(args: argparse.Namespace) -> int:
    from .engine import open as open_engine

    with open_engine(args.config, create=False) as engine:
        started = time.perf_counter()
        report = engine.optimize()
        elapsed = time.perf_counter() - started
        plugin = engine.store_plugin
    if args.json:
        print(json.dumps({"store": plugin, "seconds": elapsed, "index": report}, indent=2))
    elif report is None:
        print(f"the {plugin} store keeps its own index: nothing to optimize")
    else:
        tuned = (
            f", {_knob(report)} (recall@10 {report['recall_at_10']} on {_measured_on(report)})" if _knob(report) else ""
        )
        print(
            f"rebuilt the {plugin} index ({report.get('spec')}) on "
            f"{report.get('vectors')} vectors in {elapsed:.1f} s{tuned}"
        )
        for spec, measured in (report.get("candidates") or {}).items():
            knob = f"{_knob(measured)}, " if _knob(measured) else ""
            print(
                f"  candidate {spec}: {knob}recall@10 {measured['recall_at_10']}, p50 {measured['p50_ms']} ms"
                f"{' (kept)' if spec == report.get('spec') else ''}"
            )
    return EXIT_OK


def cmd_reindex(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .reindex import reindex

    with tqdm(unit="docs", desc="reindexing", disable=True if args.quiet else None) as bar:
        report = reindex(args.config, progress=bar)
    print(
        f"reindexed {report.documents} documents ({report.chunks} chunks) in {report.seconds:.1f} s; manifest "
        f"{report.old_manifest_id and report.old_manifest_id[:12]} -> "
        f"{report.new_manifest_id and report.new_manifest_id[:12]}"
    )
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluate import load_qrels, load_queries
    from .migration import migrate, verify

    if (args.queries is None) != (args.qrels is None):
        raise VecguardError("--queries and --qrels go together (queries to run, and which documents are relevant)")
    if (args.queries or args.qrels) and not args.reembed:
        raise VecguardError("--queries/--qrels compare old and new retrieval quality; they apply to --reembed")
    queries = load_queries(args.queries) if args.queries else None
    qrels = load_qrels(args.qrels) if args.qrels else None
    if args.verify_only:
        report = verify(args.source, args.target, verify_queries=args.verify_queries)
    else:
        unit = "docs" if args.reembed else "points"
        with tqdm(
            unit=unit,
            desc="re-embedding" if args.reembed else "copying",
            disable=True if args.quiet or args.json else None,
        ) as bar:
            report = migrate(
                args.source,
                args.target,
                batch_size=args.batch_size,
                verify_queries=args.verify_queries,
                into_existing=args.into_existing,
                reembed=args.reembed,
                queries=queries,
                qrels=qrels,
                progress=bar,
            )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        return EXIT_OK if report.passed else EXIT_FAILED
    unit = "documents" if report.mode == "reembed" else "points"
    if report.mode != "verify":
        resumed = f", resuming after {report.resumed_from}" if report.resumed_from else ""
        print(
            f"{'re-encoded' if report.mode == 'reembed' else 'copied'} "
            f"{report.written} of {report.total} {unit}{resumed} "
            f"in {report.copy_seconds:.1f} s ({report.rate:.0f} {unit}/s); finished in {report.finish_seconds:.1f} s"
        )
    print(f"verification ({report.verify_seconds:.1f} s):")
    for check in report.checks:
        print(f"  {'PASS' if check.passed else 'FAIL'} {check.name:<9} {check.describe()}")
    if report.evaluation:
        for side in ("old", "new"):
            for mode, scores in report.evaluation[side].items():
                if mode == "skipped":
                    print(f"  {side}: {scores}")
                    continue
                print(
                    f"  {side:<3} {mode:<7} "
                    + "  ".join(f"{name} {value:.3f}" for name, value in scores.items() if name != "queries")
                )
    if report.mode == "reembed" and report.passed:
        print(f"the new collection is ready; point your app at {report.target} when you are satisfied")
    return EXIT_OK if report.passed else EXIT_FAILED


def cmd_eval(args: argparse.Namespace) -> int:
    from datetime import datetime

    from .engine import open as open_engine
    from .evaluate import evaluate, folder_bytes, load_qrels, load_queries, measure_recall

    if args.qrels is None and not args.exact:
        raise VecguardError(
            "give --qrels R.jsonl (quality against judgments) or --exact (ANN recall against exact search)"
        )
    if args.k < 1:
        raise VecguardError(f"--k must be a whole number >= 1, got {args.k}")
    queries = load_queries(args.queries)
    qrels = load_qrels(args.qrels) if args.qrels else None
    result: dict = {"config": args.config, "k": args.k}
    with open_engine(args.config, create=False) as engine:
        if qrels is not None:
            result["quality"] = evaluate(engine, queries, qrels, k=args.k)
        if args.exact:
            measured = measure_recall(engine, list(queries.values()), k=args.k)
            target = ((engine.manifest.get("measurements") or {}).get("index") or {}).get("target_recall")
            if args.optimize and target is not None and measured["recall"] < target:
                # Below the index's own target on the user's queries: retrain on what the collection holds now.
                result["optimized"] = {"before": measured["recall"], "index": engine.optimize()}
                measured = measure_recall(engine, list(queries.values()), k=args.k)
            measured["target_recall"] = target
            measured["index_bytes"] = folder_bytes(engine.config)
            own = engine.recall()  # the store's own measure on served queries, what /metrics reports
            measured["served"] = own if own and own["measured_on"] == "served queries" else None
            result["recall"] = measured
            # Kept in the manifest: `vecguard serve` exports it as vecguard_recall_at_k, and the next run compares.
            previous = (engine.manifest.get("measurements") or {}).get("recall")
            result["recall"]["previous"] = previous
            engine.collection.record_measurement(
                "recall",
                {
                    "value": measured["recall"],
                    "k": measured["k"],
                    "queries": measured["queries"],
                    "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    if "quality" in result:
        k = args.k
        print(
            f"{'mode':<8} {'nDCG@' + str(k):>9} {'Recall@' + str(k):>10} {'MRR':>7} "
            f" ({next(iter(result['quality'].values()))['queries']} judged queries)"
        )
        for mode, scores in result["quality"].items():
            print(f"{mode:<8} {scores[f'ndcg@{k}']:>9.4f} {scores[f'recall@{k}']:>10.4f} {scores['mrr']:>7.4f}")
    if "recall" in result:
        r = result["recall"]
        size = f", {r['index_bytes'] / 1e6:.1f} MB on disk" if r["index_bytes"] is not None else ""
        print(
            f"recall@{r['k']} against exact search: {r['recall']:.4f} (min {r['min_recall']:.2f}) over {r['queries']} "
            f"queries and {r['points']} vectors; store search p50 "
            f"{r['latency_p50_ms']:.2f} ms, p99 {r['latency_p99_ms']:.2f} ms{size}"
        )
        if r["served"]:
            print(
                f"the index's own measure on {r['served']['queries']} served queries (vecguard_recall_at_k): "
                f"{r['served']['value']:.4f}"
            )
        if r["previous"]:
            print(f"previous measurement: {r['previous']['value']:.4f} at {r['previous']['measured_at']}")
        if "optimized" in result:
            print(
                f"recall was {result['optimized']['before']:.4f}, below "
                f"the index's target_recall {r['target_recall']}: "
                f"retrained it ({(result['optimized']['index'] or {}).get('spec')}); the figures above are after"
            )
        elif r["target_recall"] is not None and r["recall"] < r["target_recall"]:
            print(
                f"below the index's target_recall {r['target_recall']}: rerun with --optimize to retrain it on what "
                f"the collection holds now (`vecguard optimize`), or raise target_recall"
            )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    serve(args.config, host=args.host, port=args.port)
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"vecguard: {message} (see `{self.prog} --help`)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port; give one from 1 to 65535")
    return port


def _add_migrate(sub: Any) -> None:
    """`vecguard migrate`: the command with the most options, on its own."""
    p = sub.add_parser(
        "migrate",
        help="copy a collection to another backend without re-embedding (resumable), then prove it answers the same",
        description="Exit status: 0 copied and verified, 1 a verification check failed, 2 error. Rerun the same "
        "command after an interruption to resume.",
    )
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE.toml")
    p.add_argument("--to", dest="target", required=True, metavar="TARGET.toml")
    p.add_argument("--batch-size", type=int, default=1000, help="points per batch (default 1000)")
    p.add_argument(
        "--verify-queries", type=int, default=50, help="held-out queries whose top 10 must agree (default 50)"
    )
    p.add_argument(
        "--into-existing", action="store_true", help="add to a target that already holds a compatible collection"
    )
    p.add_argument(
        "--reembed",
        action="store_true",
        help="encode every stored text with the target's encoder into a new collection",
    )
    p.add_argument(
        "--queries", help="JSONL {id, text}: with --qrels, compare old and new retrieval quality (--reembed)"
    )
    p.add_argument("--qrels", help="JSONL {query_id, doc_id, relevance}")
    p.add_argument("--verify-only", action="store_true", help="only verify an existing copy")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_migrate)


def _add_plugins_and_index(sub: Any) -> None:
    """`vecguard plugins` and `vecguard index`: what parts there are, and documents in."""
    p = sub.add_parser(
        "plugins", help="list the parts discovered through entry points, and plugins that failed to load"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_plugins)

    p = sub.add_parser("index", help="add documents from a JSONL file or a folder of .txt/.md files")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("source")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_index)


def _add_search_and_info(sub: Any) -> None:
    """`vecguard search` and `vecguard info`: reading a collection."""
    p = sub.add_parser("search", help="hybrid, dense or keyword search")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--mode", choices=("hybrid", "dense", "keyword"), default="hybrid")
    p.add_argument("--filter", help='JSON, e.g. \'{"year": {"$gte": 2020}}\'')
    p.add_argument("--min-score", type=float, default=None, help="floor on the dense cosine similarity")
    p.add_argument("--chunks", action="store_true", help="return chunks instead of documents")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("info", help="what the collection holds and which encoder built it")
    p.add_argument("--config", "-c", required=True)
    p.set_defaults(run=cmd_info)


def _add_upkeep(sub: Any) -> None:
    """`vecguard check`, `optimize` and `reindex`: keeping a collection sound and fast."""
    p = sub.add_parser(
        "check", help="compare the collection's manifest with the live encoder (exit 0 ok, 1 drift, 2 error)"
    )
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("optimize", help="rebuild (train, tune) the store's ANN index from every stored vector now")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_optimize)

    p = sub.add_parser("reindex", help="rebuild the collection from its stored texts with the current encoder")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(run=cmd_reindex)


def _add_eval(sub: Any) -> None:
    """`vecguard eval`: retrieval quality and ANN recall."""
    p = sub.add_parser(
        "eval", help="retrieval quality against judgments (--qrels) or ANN recall against exact search (--exact)"
    )
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--queries", required=True, help='JSONL {"id", "text"} per line')
    p.add_argument("--qrels", help='JSONL {"query_id", "doc_id", "relevance"}: nDCG, Recall and MRR per mode')
    p.add_argument(
        "--exact",
        action="store_true",
        help="recall@k of the index against exact search, latency, size; kept in the manifest",
    )
    p.add_argument(
        "--optimize", action="store_true", help="with --exact: retrain the index when recall is below its target_recall"
    )
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_eval)


def _add_serve(sub: Any) -> None:
    """`vecguard serve`: the HTTP server."""
    p = sub.add_parser(
        "serve", help="serve search over HTTP (/search, /documents, /readyz, /metrics); needs vecguard[server]"
    )
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--host", help="default: [server] host (127.0.0.1)")
    p.add_argument("--port", type=_port, help="default: [server] port (8000)")
    p.set_defaults(run=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vecguard",
        description="Hybrid semantic search that refuses a drifted embedding space.",
        epilog=EXIT_STATUS,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    # The order here is the order of `vecguard --help`.
    _add_plugins_and_index(sub)
    _add_search_and_info(sub)
    _add_upkeep(sub)
    _add_migrate(sub)
    _add_eval(sub)
    _add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader went away (`vecguard search ... | head`): leave quietly, as a tool killed by SIGPIPE does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _fail("interrupted; everything committed before this point is kept", args)
        return EXIT_INTERRUPTED
    except CompatibilityError as exc:
        _fail(str(exc), args)
        return EXIT_DRIFT
    except VecguardError as exc:
        _fail(str(exc), args)
        return EXIT_ERROR
    except (OSError, MemoryError) as exc:  # the environment: a file, the disk, the network, memory
        _fail(f"{type(exc).__name__}: {exc}; everything committed before this point is kept", args)
        return EXIT_ERROR
    except Exception as exc:
        _fail(f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback and report it", args)
        return EXIT_INTERNAL


def _fail(message: str, args: argparse.Namespace) -> None:
    """One line on stderr (the traceback first with --debug)."""
    if args.debug:
        traceback.print_exc()
    print(f"vecguard: {' '.join(message.split())}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

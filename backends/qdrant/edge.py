"""Qdrant's own engine in this process, through qdrant-edge-py: ``[store] plugin = "qdrant"`` with ``path``.

A collection is the folder ``<path>/<collection>/``:

    shard/          the Qdrant shard (segments, WAL, edge_config.json): Qdrant's files, read by Qdrant only
    manifest.json   vecguard's manifest (written atomically), since a shard has no collection metadata
    index.json      what the HNSW graph last measured about itself, with the hnsw_ef tuned to target_recall
    keywords.json   the average chunk length the keyword vectors are weighed with (with keyword_vectors)
    queries.sqlite3 the served-query sample (``vecguard.backends.query_sample``)
    open.lock       held (flock) by the one process that has the collection open, with a line naming it

Points are laid out as on a Qdrant server (``vecguard.backends.qdrant.points``): the same ids, payloads and
filters, DOT distance on the unnamed dense vector, so ``vecguard migrate`` moves a collection between this and a
server unchanged. Searches run Qdrant's HNSW with ``hnsw_ef``; points written since the last optimize sit in a
plain segment that is searched exactly. The HNSW graph is built by ``optimize()``, which the engine runs when it
closes after writes (``index_report``) and ``vecguard optimize`` runs on demand; Qdrant's optimizers decide what
is worth rebuilding, so a close after a small write costs little.

Recall@10 against Qdrant's exact search is measured on query vectors, not on stored ones (which flatter an index):
after a build on query-like probes the engine makes of sampled stored chunks (``probe_with``), and from MIN_SERVED
served queries on (``record_query``, kept in ``queries.sqlite3``), on the newest of those, in a background thread as
they arrive. A measure on query vectors tunes ``hnsw_ef`` to the smallest value at which they reach
``target_recall`` (``recall_target``'s rule, as FAISS tunes its knob): a search setting, nothing is rebuilt. Stored
vectors (a store without an engine) only measure, and a ``hnsw_ef`` the user sets is measured, not moved.

With ``keyword_vectors`` (the default) the collection also keeps the keyword signal (``HoldsKeywords``): each point
carries the sparse vector ``bm25`` of its text's BM25 term weights, weighed by the engine's keyword index
(``plugins/bm25/sparse.py``) in the same write as the point, and Qdrant's IDF modifier supplies the document
frequencies. Both signals are searched in one ``query_batch`` call, the filter inside each.

An embedded shard belongs to one process: Qdrant locks its write-ahead log, and there is no way to see another
process's writes short of reopening. A second process is refused in one line naming the holder; several
processes (a server and an indexer, replicas) need a Qdrant server (``url``).
"""

from __future__ import annotations

import json
import logging
import math
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from vecguard.atomic import write_json_atomically
from vecguard.backends import query_sample, recall_target
from vecguard.backends.base import BaseVectorStore, library_errors
from vecguard.errors import StorageError
from vecguard.file_lock import FolderClaim
from vecguard.filters import Untranslatable
from vecguard.protocols import Payload, RankedList, SparseVector, SparseWeights

from .points import (
    ID_KEY,
    SPARSE,
    asked_signals,
    average_length,
    point_id,
    signal_hits,
    split_payload,
    to_qdrant_filter,
)

DENSE = ""  # Qdrant's name for a collection's unnamed vector
PROBES = 100  # stored vectors the recall of a new HNSW graph is measured with, without query vectors
STORED = "sampled stored vectors"  # what those are called in a report
DEFAULT_EF = 128  # hnsw_ef until a measure tunes it
# The least a filtered search goes with, whatever the (unfiltered) tuning chose. Filters letting 1%, 10% and 50%
# through reached recall@10 0.96-1.00 at 192 at 100k and 1M clustered points, where 128 left 0.930 (100k, 10%) and
# 0.936 (1M, 1%): benchmarks/results/qdrant_embedded.md.
FILTERED_EF = 192
MAX_EF = 1024
OVERSAMPLING = 2.0  # quantized candidates rescored per hit asked for, with quantization = "scalar"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.json"
KEYWORDS_FILE = "keywords.json"  # the keyword vectors' fixed average chunk length, decided by the first batch
SHARD_FOLDER = "shard"
log = logging.getLogger("vecguard.backends.qdrant")


def edge_models() -> Any:
    """qdrant_edge's filter classes under qdrant-client's names, for ``to_qdrant_filter``."""
    import qdrant_edge as q

    def match_value(value: Any) -> Any:
        # qdrant-edge-py 0.9.0 turns a Python bool into an integer (False matches 0, never false); numpy's bool
        # reaches Qdrant as a bool (docs/dependencies.md).
        return q.MatchValue(np.bool_(value) if isinstance(value, bool) else value)

    return types.SimpleNamespace(
        Filter=q.Filter,
        FieldCondition=q.FieldCondition,
        Range=q.RangeFloat,
        MatchValue=match_value,
        MatchAny=q.MatchAny,
    )


@dataclass(frozen=True)
class EfLadder:
    """The hnsw_ef values tried when tuning (``recall_target.Ladder``): doubling from 16, bisected between."""

    floor: int
    candidates: tuple[int, ...] = tuple(2**i for i in range(4, int(math.log2(MAX_EF)) + 1))
    ceiling: int = MAX_EF


class EdgeQdrantStore(BaseVectorStore):
    def __init__(self, options: dict[str, Any], path: Path) -> None:
        import qdrant_edge

        self._q = qdrant_edge
        self._quantization = {  # the search parameters for int8 codes, exact or not, made once
            exact: qdrant_edge.QuantizationSearchParams(ignore=exact, rescore=True, oversampling=OVERSAMPLING)
            for exact in (False, True)
        }
        self._models = edge_models()
        self._options = options
        self._folder = Path(path) / options["collection"]
        self._location = str(self._folder)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._claim = FolderClaim(
            self._folder,
            where=f"the embedded Qdrant collection {self._location}",
            remedy="an embedded Qdrant collection is one process's: send the other process's requests to the one "
            "that holds it (vecguard serve), or put the collection on a Qdrant server ([store] url)",
        )
        self._shard: Any = None
        self._dimension: int | None = None
        self._written = False  # points changed since the HNSW graph was last built
        self._report: dict[str, Any] | None = None  # the last measure (index.json), with the hnsw_ef it tuned
        self._ef = options["hnsw_ef"] or DEFAULT_EF  # what searches run with: the user's, else the last tuned
        self._weights: SparseWeights | None = None  # set by hold_keywords: points carry keyword vectors
        self._average_length: float | None = None
        self._has_keywords = False  # the shard holds the sparse vector
        self._spec = ""  # the HNSW graph and quantization the shard was created with, as the index report says
        self._served = query_sample.ServedQueries(
            self._folder,
            options["query_sample"],
            self._measure_served,
            f"the embedded Qdrant collection {self._location}",
        )
        self._make_probes: Callable[[Sequence[Payload]], np.ndarray] | None = None
        shard_folder = self._folder / SHARD_FOLDER
        if (shard_folder / "edge_config.json").exists():
            try:
                self._dimension, self._has_keywords, self._spec = _stored_vectors(shard_folder, self._location)
                self._report = _stored_report(self._folder / INDEX_FILE)
                self._ef = options["hnsw_ef"] or (self._report or {}).get("hnsw_ef") or DEFAULT_EF
                with self._library_calls():
                    self._shard = self._q.EdgeShard.load(str(shard_folder))
            except BaseException:
                self._claim.release()  # a shard that cannot be opened must not stay claimed by this process
                raise

    @property
    def exact_search(self) -> bool:  # type: ignore[override]
        return bool(self._options["exact"])

    def _library_calls(self) -> AbstractContextManager[None]:
        return library_errors("Qdrant (embedded)", self._location)

    # ------------------------------------------------------------ collection

    def dimension(self) -> int | None:
        return self._dimension

    def _create(self, dimension: int, texts: list[str]) -> None:
        q, o = self._q, self._options
        memory = q.Memory.Cold if o["on_disk"] else None
        quantization = None
        if o["quantization"] == "scalar":
            quantization = q.ScalarQuantizationConfig(type=q.ScalarType.Int8, always_ram=True)
        m, ef_construct = o["hnsw_m"] or 16, o["hnsw_ef_construct"] or 100
        hnsw = q.HnswIndexConfig(m=m, ef_construct=ef_construct, full_scan_threshold=10_000)
        sparse = None
        if self._weights is not None:
            sparse = {SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf, memory=memory)}
            self._average_length = average_length(self._weights, texts)
            write_json_atomically(self._folder / KEYWORDS_FILE, {"average_length": self._average_length})
        config = q.EdgeConfig(
            vectors=q.EdgeVectorParams(size=dimension, distance=q.Distance.Dot, memory=memory),
            sparse_vectors=sparse,
            hnsw_config=hnsw,
            quantization_config=quantization,
        )
        schema = {
            "keyword": q.PayloadSchemaType.Keyword,
            "integer": q.PayloadSchemaType.Integer,
            "float": q.PayloadSchemaType.Float,
            "bool": q.PayloadSchemaType.Bool,
        }
        with self._library_calls():
            self._shard = q.EdgeShard.create(str(self._folder / SHARD_FOLDER), config)
            for field, kind in o["payload_indexes"].items():
                self._shard.update(q.UpdateOperation.create_field_index(f"metadata.{field}", schema[kind]))
        self._dimension, self._has_keywords = dimension, sparse is not None
        self._spec = _spec(m, ef_construct, quantization is not None)

    # ------------------------------------------------------------ VectorStore

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[Payload]) -> None:
        q = self._q
        if self._shard is None:
            self._create(vectors.shape[1], [str(payload.get("text", "")) for payload in payloads])
        size = self._options["batch_size"]
        for start in range(0, len(ids), size):
            points = [
                q.Point(point_id(key), self._vectors(vector, payload), {**payload, ID_KEY: key})
                for key, vector, payload in zip(
                    ids[start : start + size], vectors[start : start + size], payloads[start : start + size]
                )
            ]
            with self._library_calls():
                self._shard.update(q.UpdateOperation.upsert_points(points))
        self._written = True

    def _vectors(self, vector: np.ndarray, payload: Payload) -> Any:
        """A point's vectors: the dense one, and its text's keyword weights when the collection keeps them."""
        if self._weights is None or self._average_length is None:  # set together, by hold_keywords or _create
            return vector.tolist()
        indices, values = self._weights.document(str(payload.get("text", "")), self._average_length)
        return {DENSE: vector.tolist(), SPARSE: self._q.SparseVector(indices, values)}

    def _delete(self, ids: list[str]) -> None:
        if self._shard is None:
            return
        with self._library_calls():
            self._shard.update(self._q.UpdateOperation.delete_points([point_id(key) for key in ids]))
        self._written = True

    @staticmethod
    def _dense(vector: Any) -> np.ndarray:
        return np.asarray(vector[DENSE] if isinstance(vector, dict) else vector, dtype=np.float32)

    def _get(self, ids: list[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        if self._shard is None:
            return {}
        with self._library_calls():
            records = self._shard.retrieve([point_id(key) for key in ids], with_payload=True, with_vector=[DENSE])
        found: dict[str, tuple[np.ndarray, Payload]] = {}
        for record in records:
            key, payload = split_payload(record.payload)
            found[key] = (self._dense(record.vector), payload)
        return found

    def _search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None) -> RankedList:
        return [(point.payload[ID_KEY], float(point.score)) for point in self._query(vector, k, filter, [ID_KEY])]

    def _search_with_payloads(
        self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[str, float, Payload]]:
        return signal_hits(self._query(vector, k, filter, True))

    def _filter(self, filter: Mapping[str, Any] | None) -> Any:
        """Qdrant's filter for a portable one; False when nothing can match."""
        if not filter:
            return None
        try:
            return to_qdrant_filter(filter, self._models)
        except Untranslatable:
            allowed = [point_id(key) for key in self.matching_ids(filter)]
            return self._q.Filter(must=[self._q.HasIdCondition(set(allowed))]) if allowed else False

    def _params(self, k: int, exact: bool | None = None, ef: int | None = None, filtered: bool = False) -> Any:
        exact = self._options["exact"] if exact is None else exact
        ef = ef or self._ef
        if filtered and not self._options["hnsw_ef"]:
            # Tuned on unfiltered queries, which say nothing of a filter's: Qdrant's graph search passes over the
            # points a filter rejects, so a filtered search goes at least FILTERED_EF wide.
            ef = max(ef, FILTERED_EF)
        # A collection with quantization = "scalar" searches its int8 codes, then rescores twice the candidates with
        # the stored vectors (without that its recall stalls below the target whatever hnsw_ef); an exact search
        # reads the stored vectors only. A collection without quantization ignores this.
        return self._q.SearchParams(hnsw_ef=max(ef, k), exact=exact, quantization=self._quantization[exact])

    def _query(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None, with_payload: Any) -> list[Any]:
        if self._shard is None:
            return []
        query_filter = self._filter(filter)
        if query_filter is False:
            return []
        request = self._q.QueryRequest(
            limit=k,
            query=self._q.Query.Nearest(vector.tolist()),
            filter=query_filter,
            with_payload=with_payload,
            params=self._params(k, filtered=query_filter is not None),
        )
        with self._library_calls():
            return self._shard.query(request)

    def _pages(self, batch_size: int, with_vectors: bool) -> Iterator[tuple[list[str], list[Any], list[Payload]]]:
        """Every stored point in id order: ids, the records (vectors when asked for) and payloads."""
        if self._shard is None:
            return
        offset = None
        while True:
            request = self._q.ScrollRequest(
                offset=offset, limit=batch_size, with_payload=True, with_vector=[DENSE] if with_vectors else False
            )
            with self._library_calls():
                records, offset = self._shard.scroll(request)
            if records:
                keys, payloads = zip(*(split_payload(record.payload) for record in records))
                yield list(keys), records, list(payloads)
            if offset is None:
                return

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        for ids, records, payloads in self._pages(batch_size, with_vectors=True):
            yield ids, np.stack([self._dense(record.vector) for record in records]), payloads

    def _scan_payloads(self) -> Iterator[tuple[list[str], list[Payload]]]:
        for ids, _, payloads in self._pages(1000, with_vectors=False):
            yield ids, payloads

    def count(self) -> int:
        if self._shard is None:
            return 0
        with self._library_calls():
            return int(self._shard.count(self._q.CountRequest(exact=True)))

    def read_manifest(self) -> dict[str, Any] | None:
        path = self._folder / MANIFEST_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path} ({exc.strerror or exc})", location=str(path)) from exc
        try:
            manifest = json.loads(text)
        except ValueError as exc:
            raise StorageError(
                f"{path} is not valid JSON ({exc}); restore it from a backup, or rebuild the collection",
                location=str(path),
            ) from exc
        if not isinstance(manifest, dict):
            raise StorageError(f"{path} holds no manifest object; restore it from a backup", location=str(path))
        return manifest

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        path = self._folder / MANIFEST_FILE
        try:
            write_json_atomically(path, dict(manifest))
        except OSError as exc:
            raise StorageError(f"cannot write {path} ({exc.strerror or exc})", location=str(path)) from exc

    # ------------------------------------------------------------ HoldsKeywords

    def hold_keywords(self, weights: SparseWeights) -> bool:
        """Keep the keyword signal: a collection created from now on with ``keyword_vectors``, or one that was."""
        if self._shard is None:
            if not self._options["keyword_vectors"]:
                return False
        elif not self._has_keywords:
            return False
        else:
            self._average_length = _stored_average_length(self._folder / KEYWORDS_FILE, self._location)
        self._weights = weights
        return True

    def search_signals(
        self,
        vector: np.ndarray | None,
        terms: SparseVector | None,
        depth: int,
        filter: Mapping[str, Any] | None,
        ids: Sequence[str] | None = None,
    ) -> dict[str, list[tuple[str, float, Payload]]]:
        q = self._q
        asked = asked_signals(vector, terms)
        query_filter = self._filter(filter)
        if self._shard is None or query_filter is False or not asked:
            return {name: [] for name in asked}
        if ids is not None:
            allowed = q.HasIdCondition({point_id(key) for key in ids})
            query_filter = q.Filter(must=[allowed, query_filter] if query_filter is not None else [allowed])
        requests = []
        for name, query in asked.items():
            if name == "dense":
                nearest, params = (
                    q.Query.Nearest(np.asarray(query).tolist()),
                    self._params(depth, filtered=query_filter is not None),
                )
            else:
                nearest, params = q.Query.Nearest(q.SparseVector(*query), using=SPARSE), None
            requests.append(
                q.QueryRequest(limit=depth, query=nearest, filter=query_filter, with_payload=True, params=params)
            )
        with self._library_calls():
            results = self._shard.query_batch(q.QueryBatchRequest(requests))
        return {name: signal_hits(points) for name, points in zip(asked, results)}

    def term_holders(self, term: int, limit: int) -> int:
        if self._shard is None:
            return 0
        q = self._q
        request = q.QueryRequest(limit=limit, query=q.Query.Nearest(q.SparseVector([term], [1.0]), using=SPARSE))
        with self._library_calls():
            return len(self._shard.query(request))

    # ------------------------------------------------------------ MaintainsIndex

    def optimize(self) -> dict[str, Any]:
        """Build the HNSW graph over every point written since the last build, then measure its recall."""
        self._optimize(measure=True)
        return self._report or {}

    def index_report(self) -> dict[str, Any] | None:
        """What the HNSW graph measured about itself, building it first after writes (closing would anyway)."""
        if self._written:
            self._optimize(measure=False)
        return self._report

    def _optimize(self, measure: bool) -> None:
        if self._shard is None:
            return
        with self._library_calls():
            rebuilt = self._shard.optimize()
            self._shard.flush()
        self._written = False
        if rebuilt or measure or self._report is None:
            self._report = self._measure()

    def _measure(self) -> dict[str, Any] | None:
        """Recall@10 of the HNSW search against exact search, and hnsw_ef tuned by it, on the served queries once
        there are MIN_SERVED, else on query-like probes, else on up to PROBES stored vectors."""
        total = self.count()
        if not total:
            return None
        queries, source = self._measuring_queries(total)
        tuned, _ = self._tune(queries, source, total)
        report = {
            "spec": self._spec,
            "vectors": total,
            "measured_on": f"{len(queries)} {source}, against Qdrant's exact search",
            **tuned,
        }
        if source == recall_target.SERVED:
            report["served"] = self._served_report(report["recall_at_10"], len(queries), self._served.sample.recorded())
        self._keep_report(report)
        return report

    def _tune(self, queries: list[list[float]], source: str, total: int) -> tuple[dict[str, Any], float]:
        """Measure recall@10 at the hnsw_ef in use and, on query vectors, move it to the smallest value that reaches
        the aim (the user's stays as set): (the tuning report, the recall at the hnsw_ef searches used until now)."""
        k = min(10, total)
        truth = self._top(queries, k, self._params(k, exact=True))

        def recall_of(ef: int) -> np.ndarray:
            return _recalls(self._top(queries, k, self._params(k, exact=False, ef=ef)), truth)

        target = self._options["target_recall"]
        aim = recall_target.aim_of(source, target)
        at_current = recall_of(self._ef)
        measured = {self._ef: (float(np.mean(at_current)), recall_target.measured_level(at_current, source))}
        chosen, tuned = self._ef, False
        # Stored vectors are points of the graph (each finds itself): tuned on them, hnsw_ef would fall far below
        # what queries need, so they only measure.
        if not (self._options["hnsw_ef"] or self._options["exact"] or recall_target.stored_vectors(source)):
            chosen, tried = recall_target.smallest_reaching(recall_of, EfLadder(floor=k - 1), source, aim)
            measured.update(tried)
            tuned = True
        report = recall_target.report_of("hnsw_ef", chosen, measured[chosen], source, len(queries), aim, target)
        if not tuned:
            del report["tuned_on"]
        if (tuned or self._options["hnsw_ef"]) and not recall_target.reached(report):
            log.warning(
                "embedded Qdrant %s reaches recall@10 %.3f on %d %s at hnsw_ef %d, short of %.3f (target_recall %.2f): "
                "%s",
                self._location,
                measured[chosen][0],
                len(queries),
                source,
                chosen,
                aim,
                target,
                "raise hnsw_m or hnsw_ef_construct and rebuild (vecguard optimize)"
                if tuned
                else "raise [store] hnsw_ef, or remove it to have it tuned",
            )
        self._ef = chosen
        return {**report, "tuned": tuned}, float(np.mean(at_current))

    def _top(self, queries: list[list[float]], k: int, params: Any) -> list[list[Any]]:
        q = self._q
        requests = [q.QueryRequest(limit=k, query=q.Query.Nearest(query), params=params) for query in queries]
        with self._library_calls():
            return self._shard.query_batch(q.QueryBatchRequest(requests))

    def _keep_report(self, report: dict[str, Any]) -> None:
        """The measure, kept for the next open (its hnsw_ef is what searches use); one that cannot be written is
        logged: the next open searches at the default until it measures again."""
        self._report = report
        try:
            write_json_atomically(self._folder / INDEX_FILE, report)
        except OSError as exc:
            log.warning("cannot write %s (%s); the tuned hnsw_ef lasts until it closes", self._folder / INDEX_FILE, exc)

    def _measuring_queries(self, total: int) -> tuple[list[list[float]], str]:
        if self._served.sample.recorded() >= query_sample.MIN_SERVED:
            newest = self._served.sample.newest(query_sample.MEASURED, self._dimension or 0)
            return newest.tolist(), recall_target.SERVED
        q = self._q
        with self._library_calls():
            sampled = self._shard.query(
                q.QueryRequest(
                    limit=min(query_sample.QUERY_PROBES if self._make_probes else PROBES, total),
                    query=q.Sample.Random,
                    with_vector=[DENSE],
                    with_payload=self._make_probes is not None,
                )
            )
        if self._make_probes is not None:
            try:
                probes = np.asarray(self._make_probes([split_payload(p.payload)[1] for p in sampled]), np.float32)
                if len(probes) >= query_sample.MIN_PROBES:
                    return probes.tolist(), recall_target.QUERY_LIKE
            except Exception as exc:  # the engine's encoder failed: measured on stored vectors instead
                log.warning("query-like probes could not be made (%s); recall measured on stored vectors", exc)
        return [self._dense(point.vector).tolist() for point in sampled[:PROBES]], STORED

    def _served_report(self, recall: float, queries: int, recorded: int, before: float | None = None) -> dict[str, Any]:
        return {
            "recall_at_10": recall,
            "queries": queries,
            "recorded": recorded,
            "hnsw_ef": self._ef,
            **({} if before is None else {"before": round(before, 4)}),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    # ------------------------------------------------------------ measured on queries (TunesOnQueries)

    def probe_with(self, make_probes: Callable[[Sequence[Payload]], np.ndarray]) -> None:
        self._make_probes = make_probes

    def record_query(self, vector: np.ndarray) -> None:
        self._served.record(vector)

    def served_recall(self) -> dict[str, Any] | None:
        served = (self._report or {}).get("served")
        return dict(served) if served else None

    def wait_for_index(self, timeout: float | None = None) -> bool:
        """Block until a measure on served queries is done, then measure now if the queries still buffered make
        one due; True when none is left."""
        return self._served.wait(timeout)

    def _measure_served(self, recorded: int, grown: bool) -> None:
        """When due, recall@10 on the newest served queries, and hnsw_ef retuned on them (``ServedQueries``'
        thread)."""
        measured_at = ((self._report or {}).get("served") or {}).get("recorded", 0)
        if self._shard is None or self._options["exact"] or not query_sample.measure_due(recorded, measured_at):
            return
        queries = self._served.sample.newest(query_sample.MEASURED, self._dimension or 0).tolist()
        ef_before = self._ef
        tuned, before = self._tune(queries, recall_target.SERVED, self.count())
        served = self._served_report(
            tuned["recall_at_10"], len(queries), recorded, before if tuned["hnsw_ef"] != ef_before else None
        )
        tuned.pop("tuned_on", None)
        self._keep_report(
            dict(
                self._report or {},
                **tuned,
                measured_on=f"{len(queries)} served queries, against Qdrant's exact search",
                retuned_on=recall_target.SERVED,
                served=served,
            )
        )

    def close(self) -> None:
        try:
            self.wait_for_index()
            self._served.close()
            if self._shard is not None:
                with self._library_calls():
                    self._shard.close()
                self._shard = None
        finally:
            self._claim.release()


def _stored_vectors(shard_folder: Path, location: str) -> tuple[int, bool, str]:
    """The dense vectors' size, whether the points carry keyword vectors, and the index's spec, from the shard's
    config: what it was created with, whatever the options say now."""
    path = shard_folder / "edge_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        hnsw, quantized = config["hnsw_config"], "scalar" in (config.get("quantization_config") or {})
        return (
            int(config["vectors"][DENSE]["size"]),
            SPARSE in (config.get("sparse_vectors") or {}),
            _spec(hnsw["m"], hnsw["ef_construct"], quantized),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageError(
            f"{path} does not say the vector size and index ({type(exc).__name__}: {exc}); the shard is damaged: "
            f"restore it from a backup or rebuild the collection",
            location=location,
        ) from exc


def _spec(m: int, ef_construct: int, quantized: bool) -> str:
    return f"HNSW m={m} ef_construct={ef_construct}" + (", int8 codes rescored" if quantized else "")


def _recalls(found: list[list[Any]], truth: list[list[Any]]) -> np.ndarray:
    """Each query's recall of ``truth`` (its exact top k) in ``found``: a hit counts when it is one of them or
    scores as high as the k-th (ties)."""
    recalls = np.ones(len(truth))
    for row, (hits, exact) in enumerate(zip(found, truth)):
        if exact:
            ids, kth = {point.id for point in exact}, min(point.score for point in exact) - 1e-6
            good = sum(point.id in ids or point.score >= kth for point in hits)
            recalls[row] = min(good, len(exact)) / len(exact)
    return recalls


def _stored_report(path: Path) -> dict[str, Any] | None:
    """The last measure kept beside the shard; None when there is none or it cannot be read (logged: the next
    measure writes it again)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s); searching at hnsw_ef %d until the next measure", path, exc, DEFAULT_EF)
        return None
    ef = report.get("hnsw_ef") if isinstance(report, dict) else None
    if not isinstance(ef, int) or isinstance(ef, bool) or ef < 1:
        log.warning("%s holds no hnsw_ef; searching at hnsw_ef %d until the next measure", path, DEFAULT_EF)
        return None
    return report


def _stored_average_length(path: Path, location: str) -> float:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["average_length"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        raise ValueError(f"average_length {value!r} is not a positive number")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(
            f"{path} does not say the keyword vectors' average chunk length ({type(exc).__name__}: {exc}); "
            f"restore it from a backup, or rebuild the collection",
            location=location,
        ) from exc

"""Qdrant store through qdrant-client: a server or cluster (``url``), qdrant-client's local mode
(``path`` with ``local_mode = true``) or ``":memory:"``.

Options (``[store]``):
    url, api_key            a Qdrant server or cluster
    path, local_mode        qdrant-client local mode folder (local_mode = true), or ":memory:" (tests)
    collection              collection name (default "vecguard")
    exact                   exact search instead of HNSW (default false; a server only, local mode is always exact)
    hnsw_ef                 HNSW search breadth (default 128; a server only)
    batch_size              points per upsert request (default 256)
    shard_number, replication_factor, write_consistency_factor, on_disk,
    hnsw_m, hnsw_ef_construct, quantization ("scalar" for int8 scalar quantization)
                            collection creation options, for a server
    payload_indexes         {field = "keyword" | "integer" | "float" | "bool"}: payload indexes to create
    lock_lease              seconds a writer that died keeps the others out of a server's collection (default 15)

Point ids are UUIDv5 of vecguard's string ids (Qdrant accepts only unsigned
ints and UUIDs); the original id is kept in the payload. Distance is DOT, so
scores are inner products (the shared scale) and stored vectors come back as
written. The manifest lives in the collection's ``metadata``. Every portable
filter has an exact Qdrant ``Filter``: numbers compare through ``Range`` (so
2 equals 2.0), strings and bools through ``MatchValue``/``MatchAny``, and
``$not`` through ``must_not``; string order, which Qdrant lacks, is evaluated
by vecguard and passed as an id list.

Several processes may share a collection on a server (``SharesCollection``, see ``vecguard.backends.sharing``): the
write lock and the change feed are points of the companion collection ``<collection>.vecguard``
(``QdrantCompanion``). Local mode and ":memory:" are one process's (qdrant-client locks the folder), so there the
lock is the threading lock alone; the change feed is kept all the same, so a change token outlives the process.
The server's side of this is untested here: no Qdrant server can be installed on our machines (see
docs/dependencies.md); local mode runs the same records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from vecguard.backends.base import BaseVectorStore, library_errors
from vecguard.backends.sharing import (
    LockRecord,
    SharedCollection,
    companion_name,
)
from vecguard.errors import ConfigError, StorageError
from vecguard.filters import Untranslatable
from vecguard.guard import manifest_as_metadata, manifest_from_metadata
from vecguard.protocols import Payload, RankedList, SparseVector, SparseWeights

from .points import (
    AVERAGE_LENGTH_KEY,
    ID_KEY,
    SPARSE,
    asked_signals,
    average_length,
    dense_of,
    point_id,
    signal_hits,
    split_payload,
    to_qdrant_filter,
)


class QdrantCompanion:
    """The lock and change records of one collection, in the Qdrant collection ``<name>.vecguard``
    (``vecguard.backends.sharing.CompanionRecords``).

    Points (UUIDv5 ids, like the data's): ``lock`` {owner, holder, renewals}; ``head`` {committed};
    ``change-<seq>-<key>-<part>`` {seq, ids}; each with the vector [1.0]. The lock is inserted with
    ``update_mode=insert_only`` and renewed and deleted through a filter on its owner. A server applies each in its
    update order, so unlike Chroma's these conditions should not race (from Qdrant's documentation: no server could
    be tested here).
    """

    LOCK, HEAD = point_id("lock"), point_id("head")

    def __init__(
        self, client: Any, models: Any, collection: str, calls: Callable[[], AbstractContextManager[None]], server: bool
    ) -> None:
        self._client = client
        self._models = models
        self.name = companion_name(collection)
        self._calls = calls
        self._server = server
        # A server with replicas: writes through the leader, reads from a majority, so a lock is seen as written.
        self._write: dict[str, Any] = {"wait": True}
        self._read: dict[str, Any] = {}
        if server:
            self._write["ordering"] = models.WriteOrdering.STRONG
            self._read["consistency"] = models.ReadConsistencyType.MAJORITY
        self._exists = False

    def _existing(self) -> bool:
        """Whether the companion collection exists (a reader never creates it)."""
        if not self._exists:
            with self._calls():
                self._exists = bool(self._client.collection_exists(self.name))
        return self._exists

    def _created(self) -> None:
        if self._existing():
            return
        models = self._models
        with self._calls():
            try:
                self._client.create_collection(
                    self.name, vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT)
                )
            except Exception:
                if not self._client.collection_exists(self.name):
                    raise
                return  # another process created it first, with its index
            if self._server:  # local mode has no payload indexes
                self._client.create_payload_index(self.name, field_name="seq", field_schema="integer")
        self._exists = True

    def _point(self, key: str, payload: dict[str, Any]) -> Any:
        return self._models.PointStruct(id=key, vector=[1.0], payload=payload)

    def _lock_filter(self, owner: str, renewals: int | None) -> Any:
        models = self._models
        must = [
            models.HasIdCondition(has_id=[self.LOCK]),
            models.FieldCondition(key="owner", match=models.MatchValue(value=owner)),
        ]
        if renewals is not None:
            must.append(models.FieldCondition(key="renewals", match=models.MatchValue(value=renewals)))
        return models.Filter(must=must)

    def insert_lock(self, record: LockRecord) -> None:
        self._created()
        payload = {"owner": record.owner, "holder": record.holder, "renewals": record.renewals}
        with self._calls():
            self._client.upsert(
                self.name,
                points=[self._point(self.LOCK, payload)],
                update_mode=self._models.UpdateMode.INSERT_ONLY,
                **self._write,
            )

    def read_lock(self) -> LockRecord | None:
        if not self._existing():
            return None
        with self._calls():
            found = self._client.retrieve(self.name, ids=[self.LOCK], with_payload=True, **self._read)
        if not found:
            return None
        payload = found[0].payload
        return LockRecord(payload["owner"], payload["holder"], payload["renewals"])

    def renew_lock(self, owner: str, renewals: int) -> None:
        with self._calls():
            self._client.set_payload(
                self.name, payload={"renewals": renewals}, points=self._lock_filter(owner, None), **self._write
            )

    def delete_lock(self, owner: str, renewals: int | None) -> None:
        if not self._existing():
            return
        selector = self._models.FilterSelector(filter=self._lock_filter(owner, renewals))
        with self._calls():
            self._client.delete(self.name, points_selector=selector, **self._write)

    def read_head(self) -> int:
        if not self._existing():
            return 0
        with self._calls():
            found = self._client.retrieve(self.name, ids=[self.HEAD], with_payload=True, **self._read)
        return int(found[0].payload["committed"]) if found else 0

    def write_head(self, seq: int) -> None:
        self._created()
        with self._calls():
            self._client.upsert(self.name, points=[self._point(self.HEAD, {"committed": seq})], **self._write)

    def add_changes(self, seq: int, key: str, parts: list[list[str]]) -> None:
        self._created()
        points = [
            self._point(point_id(f"change-{seq}-{key}-{i}"), {"seq": seq, "ids": part}) for i, part in enumerate(parts)
        ]
        for start in range(0, len(points), 50):
            with self._calls():
                self._client.upsert(self.name, points=points[start : start + 50], **self._write)

    def _changes(self, **bounds: int) -> Any:
        models = self._models
        return models.Filter(must=[models.FieldCondition(key="seq", range=models.Range(**bounds))])

    def read_changes(self, after: int, upto: int) -> Iterator[list[str]]:
        if not self._existing():
            return
        offset = None
        while True:
            with self._calls():
                records, offset = self._client.scroll(
                    self.name,
                    scroll_filter=self._changes(gt=after, lte=upto),
                    limit=50,
                    offset=offset,
                    with_payload=["ids"],
                    **self._read,
                )
            for record in records:
                yield record.payload["ids"]
            if offset is None:
                return

    def delete_changes(self, upto: int) -> None:
        selector = self._models.FilterSelector(filter=self._changes(lte=upto))
        with self._calls():
            self._client.delete(self.name, points_selector=selector, **self._write)


class QdrantStore(BaseVectorStore):
    def __init__(self, options: dict[str, Any], path: Path | str | None) -> None:
        from qdrant_client import QdrantClient, models

        self._models = models
        self._options = options
        self._location = options["url"] if options["url"] is not None else str(path) if path is not None else None
        if options["url"] is not None:
            self._client = QdrantClient(url=options["url"], api_key=options["api_key"])
            try:
                self._client.get_collections()
            except Exception as exc:  # connection refused, timeout, TLS or auth failure: wrapped variously
                raise StorageError(
                    f"cannot reach the Qdrant server at {options['url']} ({exc}); start it or fix [store] url and "
                    f"api_key",
                    location=self._location,
                ) from exc
        elif path == ":memory:":
            self._client = QdrantClient(location=":memory:")
        elif path is not None:
            Path(path).mkdir(parents=True, exist_ok=True)
            with self._library_calls():  # a folder another process holds open is refused here
                self._client = QdrantClient(path=str(path))
        else:
            raise ConfigError('[store] qdrant needs url (a server), path (local mode) or path = ":memory:"')
        self._name = options["collection"]
        self._pending_manifest: dict[str, Any] | None = None
        self._stored_dimension: int | None = None  # fixed once the collection exists; saves a request per query
        self._weights: SparseWeights | None = None  # set by hold_keywords: points carry keyword vectors
        self._average_length: float | None = None
        on_server = options["url"] is not None
        self._sharing = SharedCollection(
            QdrantCompanion(self._client, models, self._name, self._library_calls, on_server),
            collection_key=f"qdrant:{self._location}:{self._name}",
            across_processes=on_server,
            lease=options["lock_lease"],
            what=f"Qdrant collection {self._name!r}",
            location=self._location,
        )

    @property
    def exact_search(self) -> bool:  # type: ignore[override]
        """Local mode is brute force; a server searches HNSW unless ``exact`` is set."""
        return self._options["url"] is None or bool(self._options["exact"])

    def _library_calls(self) -> AbstractContextManager[None]:
        """qdrant-client's exceptions (HTTP, gRPC, local-mode ValueError and SQLite errors) as StorageError."""
        return library_errors("Qdrant", self._location)

    # ------------------------------------------------------------ collection

    def _exists(self) -> bool:
        with self._library_calls():
            return bool(self._client.collection_exists(self._name))

    def dimension(self) -> int | None:
        if self._stored_dimension is None and self._exists():
            with self._library_calls():
                self._stored_dimension = int(self._client.get_collection(self._name).config.params.vectors.size)
        return self._stored_dimension

    def _create(self, dimension: int, texts: list[str]) -> None:
        models, o = self._models, self._options
        quantization = None
        if o["quantization"] == "scalar":
            quantization = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
            )
        metadata = manifest_as_metadata(self._pending_manifest) if self._pending_manifest else {}
        sparse = None
        if self._weights is not None:
            self._average_length = average_length(self._weights, texts)
            metadata[AVERAGE_LENGTH_KEY] = self._average_length
            index = models.SparseIndexParams(on_disk=o["on_disk"]) if o["on_disk"] is not None else None
            sparse = {SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF, index=index)}
        with self._library_calls():
            self._client.create_collection(
                self._name,
                vectors_config=models.VectorParams(size=dimension, distance=models.Distance.DOT, on_disk=o["on_disk"]),
                sparse_vectors_config=sparse,
                shard_number=o["shard_number"],
                replication_factor=o["replication_factor"],
                write_consistency_factor=o["write_consistency_factor"],
                on_disk_payload=o["on_disk"],
                hnsw_config=models.HnswConfigDiff(m=o["hnsw_m"], ef_construct=o["hnsw_ef_construct"]),
                quantization_config=quantization,
                metadata=metadata or None,
            )
            for field, kind in o["payload_indexes"].items():
                self._client.create_payload_index(self._name, field_name=f"metadata.{field}", field_schema=kind)
        self._pending_manifest = None

    # ------------------------------------------------------------ VectorStore

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[Payload]) -> None:
        models = self._models
        size = self._options["batch_size"]
        with self._sharing.changing(ids):
            if not self._exists():
                self._create(vectors.shape[1], [str(payload.get("text", "")) for payload in payloads])
            for start in range(0, len(ids), size):
                points = [
                    models.PointStruct(
                        id=point_id(key), vector=self._vectors(vector, payload), payload={**payload, ID_KEY: key}
                    )
                    for key, vector, payload in zip(
                        ids[start : start + size], vectors[start : start + size], payloads[start : start + size]
                    )
                ]
                with self._library_calls():
                    self._client.upsert(self._name, points=points, wait=True)

    def _vectors(self, vector: np.ndarray, payload: Payload) -> Any:
        """A point's vectors: the dense one, and its text's keyword weights when the collection keeps them."""
        if self._weights is None or self._average_length is None:
            return vector.tolist()
        indices, values = self._weights.document(str(payload.get("text", "")), self._average_length)
        return {"": vector.tolist(), SPARSE: self._models.SparseVector(indices=indices, values=values)}

    def _delete(self, ids: list[str]) -> None:
        if not self._exists():
            return
        size = self._options["batch_size"]
        with self._sharing.changing(ids):
            for start in range(0, len(ids), size):
                selector = self._models.PointIdsList(points=[point_id(key) for key in ids[start : start + size]])
                with self._library_calls():
                    self._client.delete(self._name, points_selector=selector, wait=True)

    def _get(self, ids: list[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        if not self._exists():
            return {}
        found: dict[str, tuple[np.ndarray, Payload]] = {}
        size = self._options["batch_size"]
        for start in range(0, len(ids), size):
            with self._library_calls():
                records = self._client.retrieve(
                    self._name,
                    ids=[point_id(key) for key in ids[start : start + size]],
                    with_vectors=True,
                    with_payload=True,
                )
            for record in records:
                key, payload = split_payload(record.payload)
                found[key] = (np.asarray(dense_of(record.vector), dtype=np.float32), payload)
        return found

    def _search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None) -> RankedList:
        return [(point.payload[ID_KEY], float(point.score)) for point in self._query(vector, k, filter, [ID_KEY])]

    def _search_with_payloads(
        self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[str, float, Payload]]:
        return signal_hits(self._query(vector, k, filter, True))

    def _query(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None, with_payload: Any) -> list[Any]:
        query_filter = self._query_filter(filter)
        if query_filter is False:
            return []
        with self._library_calls():
            return self._client.query_points(
                self._name,
                query=vector.tolist(),
                limit=k,
                query_filter=query_filter,
                with_payload=with_payload,
                search_params=self._search_params(k),
            ).points

    def _search_params(self, k: int) -> Any:
        # Local mode is brute force and warns about search parameters it ignores.
        if self._options["url"] is None:
            return None
        return self._models.SearchParams(exact=self._options["exact"], hnsw_ef=max(self._options["hnsw_ef"], k))

    def _query_filter(self, filter: Mapping[str, Any] | None) -> Any:
        """Qdrant's filter for a portable one; False when nothing can match."""
        if not filter:
            return None
        try:
            return to_qdrant_filter(filter, self._models)
        except Untranslatable:
            allowed = [point_id(key) for key in self.matching_ids(filter)]
            return self._models.Filter(must=[self._models.HasIdCondition(has_id=allowed)]) if allowed else False

    # ------------------------------------------------------------ HoldsKeywords

    def hold_keywords(self, weights: SparseWeights) -> bool:
        """Keep the keyword signal: a collection created from now on with ``keyword_vectors``, or one that was."""
        if not self._exists():
            if not self._options["keyword_vectors"]:
                return False
        else:
            with self._library_calls():
                config = self._client.get_collection(self._name).config
            if SPARSE not in (config.params.sparse_vectors or {}):
                return False
            stored = (config.metadata or {}).get(AVERAGE_LENGTH_KEY)
            if not isinstance(stored, (int, float)) or isinstance(stored, bool) or stored <= 0:
                raise StorageError(
                    f"Qdrant collection {self._name!r} keeps keyword vectors but its metadata does not say their "
                    f"average chunk length ({AVERAGE_LENGTH_KEY} = {stored!r}); rebuild the collection",
                    location=self._location,
                )
            self._average_length = float(stored)
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
        models = self._models
        asked = asked_signals(vector, terms)
        query_filter = self._query_filter(filter)
        if query_filter is False or not asked or not self._exists():
            return {name: [] for name in asked}
        if ids is not None:
            allowed = models.HasIdCondition(has_id=[point_id(key) for key in ids])
            query_filter = models.Filter(must=[allowed, query_filter] if query_filter is not None else [allowed])
        requests = []
        for name, query in asked.items():
            if name == "dense":
                requests.append(
                    models.QueryRequest(
                        query=np.asarray(query).tolist(),
                        limit=depth,
                        filter=query_filter,
                        with_payload=True,
                        params=self._search_params(depth),
                    )
                )
            else:
                sparse = models.SparseVector(indices=query[0], values=query[1])
                requests.append(
                    models.QueryRequest(query=sparse, using=SPARSE, limit=depth, filter=query_filter, with_payload=True)
                )
        with self._library_calls():
            responses = self._client.query_batch_points(self._name, requests=requests)
        return {name: signal_hits(response.points) for name, response in zip(asked, responses)}

    def term_holders(self, term: int, limit: int) -> int:
        if not self._exists():
            return 0
        sparse = self._models.SparseVector(indices=[term], values=[1.0])
        with self._library_calls():
            found = self._client.query_points(self._name, query=sparse, using=SPARSE, limit=limit, with_payload=False)
            return len(found.points)

    def _pages(self, batch_size: int, with_vectors: bool) -> Iterator[tuple[list[str], list[Any], list[Payload]]]:
        """Every stored point in a stable order: ids, the records (vectors when asked for) and payloads."""
        if not self._exists():
            return
        offset = None
        while True:
            with self._library_calls():
                records, offset = self._client.scroll(
                    self._name, limit=batch_size, offset=offset, with_vectors=with_vectors, with_payload=True
                )
            if records:
                keys, payloads = zip(*(split_payload(record.payload) for record in records))
                yield list(keys), records, list(payloads)
            if offset is None:
                return

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        for ids, records, payloads in self._pages(batch_size, with_vectors=True):
            yield ids, np.asarray([dense_of(record.vector) for record in records], dtype=np.float32), payloads

    def _scan_payloads(self) -> Iterator[tuple[list[str], list[Payload]]]:
        for ids, _, payloads in self._pages(1000, with_vectors=False):
            yield ids, payloads

    def count(self) -> int:
        if not self._exists():
            return 0
        with self._library_calls():
            return int(self._client.count(self._name, exact=True).count)

    def read_manifest(self) -> dict[str, Any] | None:
        if not self._exists():
            return dict(self._pending_manifest) if self._pending_manifest else None
        with self._library_calls():
            metadata = self._client.get_collection(self._name).config.metadata
        return manifest_from_metadata(metadata, f"Qdrant collection {self._name!r}")

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        with self._sharing.changing([]):
            if not self._exists():
                # Qdrant needs the dimension to create a collection: it is created, with
                # this manifest, by the first upsert.
                self._pending_manifest = dict(manifest)
                return
            with self._library_calls():
                self._client.update_collection(self._name, metadata=manifest_as_metadata(manifest))

    # ------------------------------------------------------------ SharesCollection

    def lock_writes(self, timeout: float, holder: str) -> AbstractContextManager[None]:
        """The collection's write lock (``vecguard.protocols.SharesCollection``): across processes on a server,
        among this process's threads in local mode."""
        return self._sharing.lock_writes(timeout, holder)

    def change_token(self) -> int:
        return self._sharing.change_token()

    def changes_since(self, token: int) -> list[str] | None:
        return self._sharing.changes_since(token)

    def close(self) -> None:
        with self._library_calls():
            self._client.close()

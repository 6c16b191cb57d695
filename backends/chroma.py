"""ChromaDB store: embedded (``path``) or a Chroma server (``host``/``port``).

Options (``[store]``):
    path        folder for an embedded PersistentClient (none and no host: in memory)
    host, port  a Chroma server, through HttpClient
    collection  collection name (default "vecguard"; 3-503 characters of [a-zA-Z0-9._-], first and last a letter
                or digit, not ending in ".vecguard")
    ef_search   HNSW search breadth (default 200)
    lock_lease  seconds a writer that died keeps the others out of a Chroma server's collection (default 15)

Chroma never embeds anything: every call passes vectors and
``embedding_function=None``, so no default model is loaded or fetched. The
collection's space is "ip" (score = 1 - distance = inner product, the shared
scale). User metadata goes into Chroma metadata, so ``where`` filters run in
Chroma; the rest of the payload is one JSON string in the document field. The
manifest is one JSON string in collection metadata, beside the fingerprint.
A filter Chroma cannot express exactly (string order, ``$not`` over an order)
is evaluated exactly by vecguard and passed to Chroma as an id list.

Several processes may share a collection on a Chroma server (``SharesCollection``, see
``vecguard.backends.sharing``): the write lock and the change feed are records of the companion collection
``<collection>.vecguard`` (``ChromaCompanion``). Chroma keeps the first ``add`` of an id and ignores the others, in
the order its log receives them, which makes the lock record's insert-unless-present; its ``delete(ids, where)``
reads the matching ids first and then deletes them, so a conditional delete can miss a renewal that lands between
the two (one request apart; the holder finds out at release). An embedded client is one process's: two processes
on one folder see each other's records but not each other's vectors (the HNSW index is cached per process), so
there the lock is the threading lock alone; the change feed is kept all the same, so a change token outlives the
process.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from vecguard.atomic import canonical_json
from vecguard.backends.base import BaseVectorStore, library_errors
from vecguard.backends.sharing import (
    COMPANION_SUFFIX,
    DEFAULT_LEASE,
    LockRecord,
    SharedCollection,
    checked_lease,
    companion_name,
)
from vecguard.config import resolve_path, take_options
from vecguard.errors import ConfigError, StorageError
from vecguard.filters import Untranslatable
from vecguard.guard import manifest_as_metadata, manifest_from_metadata
from vecguard.protocols import Payload, RankedList
from vecguard.registry import Part, hookimpl

_ORDER_NEGATION = {"$eq": "$ne", "$ne": "$eq", "$in": "$nin", "$nin": "$in"}
# Chroma's rule for a collection name, 9 characters shorter so that the companion's name is one too.
_LONGEST_NAME = 512 - len(COMPANION_SUFFIX)
_COLLECTION_NAME = re.compile(rf"[a-zA-Z0-9][a-zA-Z0-9._-]{{1,{_LONGEST_NAME - 2}}}[a-zA-Z0-9]")


def _field_clauses(field: str, condition: Any, negate: bool) -> list[dict[str, Any]]:
    ops = condition.items() if isinstance(condition, Mapping) else (("$eq", condition),)
    clauses = []
    for op, operand in ops:
        if negate:
            if op not in _ORDER_NEGATION:
                raise Untranslatable  # not(x > 1) also holds for a missing x; Chroma cannot say "missing"
            op = _ORDER_NEGATION[op]
        if op in ("$gt", "$gte", "$lt", "$lte") and isinstance(operand, str):
            raise Untranslatable  # Chroma orders numbers only
        if any(
            isinstance(v, float) and not v.is_integer() for v in (operand if isinstance(operand, list) else [operand])
        ):
            raise Untranslatable  # Chroma truncates a fractional operand against an int field (1.5 matches 1)
        if op in ("$in", "$nin"):
            # Chroma wants one type per list: split by type, $in -> OR, $nin -> AND.
            groups: dict[type, list[Any]] = {}
            for value in operand:
                groups.setdefault(type(value), []).append(value)
            parts = [{field: {op: values}} for values in groups.values()]
            clauses.append(_join("$or" if op == "$in" else "$and", parts))
        else:
            clauses.append({field: {op: operand}})
    # not(a and b) == (not a) or (not b)
    return [_join("$or", clauses)] if negate and len(clauses) > 1 else clauses


def _join(op: str, clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return clauses[0] if len(clauses) == 1 else {op: clauses}


def to_where(flt: Mapping[str, Any], negate: bool = False) -> dict[str, Any]:
    """Translate a validated portable filter into an equivalent Chroma ``where`` (or raise Untranslatable)."""
    clauses: list[dict[str, Any]] = []
    for key, value in flt.items():
        if key in ("$and", "$or"):
            inner = "$or" if (key == "$and") == negate else "$and"
            clauses.append(_join(inner, [to_where(sub, negate) for sub in value]))
        elif key == "$not":
            clauses.append(to_where(value, not negate))
        else:
            clauses.extend(_field_clauses(key, value, negate))
    return _join("$or" if negate else "$and", clauses)


class ChromaCompanion:
    """The lock and change records of one collection, in the Chroma collection ``<name>.vecguard``
    (``vecguard.backends.sharing.CompanionRecords``).

    Records: ``lock`` {owner, holder, renewals}; ``head`` {committed}; ``change-<seq>-<key>-<part>`` {seq, ids: a
    JSON list}. Each carries the vector [1.0]: Chroma keeps no record without one, and must never embed.
    """

    LOCK, HEAD = "lock", "head"
    RECORDS_PER_CALL = 50  # change records (up to 1000 ids each) per add request

    def __init__(
        self, client: Any, collection: str, calls: Callable[..., AbstractContextManager[None]], not_found: type
    ) -> None:
        self._client = client
        self.name = companion_name(collection)
        self._calls = calls
        self._not_found = not_found
        self._collection: Any = None

    def _existing(self) -> Any:
        """The companion collection, or None while no write has created it (a reader never creates it)."""
        if self._collection is None:
            with self._calls(reading=True):
                try:
                    self._collection = self._client.get_collection(self.name, embedding_function=None)
                except self._not_found:
                    return None
        return self._collection

    def _created(self) -> Any:
        if self._collection is None:
            with self._calls():
                self._collection = self._client.get_or_create_collection(self.name, embedding_function=None)
        return self._collection

    def insert_lock(self, record: LockRecord) -> None:
        metadata = {"owner": record.owner, "holder": record.holder, "renewals": record.renewals}
        with self._calls():  # add keeps an existing id's record as it is
            self._created().add(ids=[self.LOCK], embeddings=[[1.0]], metadatas=[metadata])

    def read_lock(self) -> LockRecord | None:
        collection = self._existing()
        if collection is None:
            return None
        with self._calls(reading=True):
            got = collection.get(ids=[self.LOCK], include=["metadatas"])
        if not got["ids"]:
            return None
        metadata = got["metadatas"][0]
        return LockRecord(metadata["owner"], metadata["holder"], metadata["renewals"])

    def renew_lock(self, owner: str, renewals: int) -> None:
        # Chroma cannot update on a condition: a record taken over since gets this count, which only makes its new
        # holder look alive once; the renewer's read-back then stops it. update() never creates a missing record.
        with self._calls():
            self._created().update(ids=[self.LOCK], metadatas=[{"renewals": renewals}])

    def delete_lock(self, owner: str, renewals: int | None) -> None:
        collection = self._existing()
        if collection is None:
            return
        where: dict[str, Any] = {"owner": owner}
        if renewals is not None:
            where = {"$and": [where, {"renewals": renewals}]}
        with self._calls():
            collection.delete(ids=[self.LOCK], where=where)

    def read_head(self) -> int:
        collection = self._existing()
        if collection is None:
            return 0
        with self._calls(reading=True):
            got = collection.get(ids=[self.HEAD], include=["metadatas"])
        return int(got["metadatas"][0]["committed"]) if got["ids"] else 0

    def write_head(self, seq: int) -> None:
        with self._calls():
            self._created().upsert(ids=[self.HEAD], embeddings=[[1.0]], metadatas=[{"committed": seq}])

    def add_changes(self, seq: int, key: str, parts: list[list[str]]) -> None:
        collection = self._created()
        for start in range(0, len(parts), self.RECORDS_PER_CALL):
            batch = parts[start : start + self.RECORDS_PER_CALL]
            with self._calls():
                collection.add(
                    ids=[f"change-{seq}-{key}-{start + i}" for i in range(len(batch))],
                    embeddings=[[1.0]] * len(batch),
                    metadatas=[{"seq": seq, "ids": json.dumps(part)} for part in batch],
                )

    def read_changes(self, after: int, upto: int) -> Iterator[list[str]]:
        collection = self._existing()
        if collection is None:
            return
        with self._calls(reading=True):
            got = collection.get(
                where={"$and": [{"seq": {"$gt": after}}, {"seq": {"$lte": upto}}]}, include=["metadatas"]
            )
        for metadata in got["metadatas"]:
            yield json.loads(metadata["ids"])

    def delete_changes(self, upto: int) -> None:
        with self._calls():
            self._created().delete(where={"seq": {"$lte": upto}})


class ChromaStore(BaseVectorStore):
    exact_search = False  # HNSW: approximate nearest neighbours

    def __init__(
        self,
        *,
        path: Path | None,
        host: str | None,
        port: int,
        collection: str,
        ef_search: int,
        lock_lease: float = DEFAULT_LEASE,
    ) -> None:
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        import chromadb
        from chromadb.config import Settings
        from chromadb.errors import NotFoundError

        self._not_found = NotFoundError
        self._location = f"http://{host}:{port}" if host is not None else str(path) if path is not None else None
        settings = Settings(anonymized_telemetry=False)
        if host is not None:
            try:
                self._client = chromadb.HttpClient(host=host, port=port, settings=settings)
            except Exception as exc:  # chromadb raises ValueError, httpx errors or its own, by version
                raise StorageError(
                    f"cannot reach the Chroma server at {self._location} ({exc}); start it (`chroma run`) "
                    f"or fix [store] host and port",
                    location=self._location,
                ) from exc
        else:
            with self._library_calls():
                if path is not None:
                    self._client = chromadb.PersistentClient(path=str(path), settings=settings)
                else:
                    self._client = chromadb.EphemeralClient(settings=settings)
        self._name = collection
        self._ef_search = ef_search
        with self._library_calls():
            try:  # only a write creates the collection: opening to search must not leave an empty one behind
                self._collection: Any = self._client.get_collection(collection, embedding_function=None)
            except NotFoundError:
                self._collection = None
            self._max_batch = int(self._client.get_max_batch_size())
        if self._collection is not None:
            space = (self._collection.configuration or {}).get("hnsw", {}).get("space")
            if space not in (None, "ip"):
                raise StorageError(
                    f"Chroma collection {collection!r} uses space {space!r}, but vecguard scores by inner product; "
                    f"use another [store] collection name",
                    location=self._location,
                )
        self._stored_dimension: int | None = None  # fixed by the first vector stored; saves a request per query
        self._sharing = SharedCollection(
            ChromaCompanion(self._client, collection, self._library_calls, NotFoundError),
            collection_key=f"chroma:{self._location}:{collection}",
            across_processes=host is not None,
            lease=lock_lease,
            what=f"Chroma collection {collection!r}",
            location=self._location,
        )

    def _library_calls(self, *, reading: bool = False) -> AbstractContextManager[None]:
        """chromadb's exceptions as StorageError; a collection deleted under a read as CollectionNotFoundError."""
        return library_errors("Chroma", self._location, missing=(self._not_found,) if reading else ())

    def _lookup(self) -> Any:
        """The collection, looked up again while this store has none: another process may have created it since."""
        if self._collection is None:
            with self._library_calls():
                try:
                    self._collection = self._client.get_collection(self._name, embedding_function=None)
                except self._not_found:
                    pass
        return self._collection

    def _created(self) -> Any:
        """The collection, created now if this is the first write."""
        if self._collection is None:
            with self._library_calls():
                self._collection = self._client.get_or_create_collection(
                    self._name,
                    embedding_function=None,
                    configuration={
                        "hnsw": {
                            "space": "ip",
                            "ef_search": self._ef_search,
                            "ef_construction": max(self._ef_search, 100),
                        }
                    },
                )
        return self._collection

    def dimension(self) -> int | None:
        if self._stored_dimension is None and self._collection is not None:
            with self._library_calls(reading=True):
                sample = self._collection.get(limit=1, include=["embeddings"])
            if sample["ids"]:
                self._stored_dimension = len(sample["embeddings"][0])
        return self._stored_dimension

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[Payload]) -> None:
        metadatas = []
        documents = []
        for key, payload in zip(ids, payloads):
            metadata = dict(payload.get("metadata") or {})
            for field, value in metadata.items():
                if (
                    not isinstance(value, (str, int, float, bool))
                    or isinstance(value, float)
                    and not np.isfinite(value)
                ):
                    raise StorageError(
                        f"point {key!r}: metadata {field!r} is {type(value).__name__} {value!r:.60}; Chroma stores "
                        f"strings, finite numbers and bools only (flatten it into several keys)"
                    )
            metadatas.append(metadata or None)
            documents.append(canonical_json({k: v for k, v in payload.items() if k != "metadata"}))
        with self._sharing.changing(ids):
            collection = self._created()
            for start in range(0, len(ids), self._max_batch):
                end = start + self._max_batch
                batch_ids = ids[start:end]
                batch_metadatas = metadatas[start:end]
                with self._library_calls():
                    # Chroma merges metadata on upsert; a key the new payload lacks must be removed (set to None).
                    previous = collection.get(ids=batch_ids, include=["metadatas"])
                    old_keys = {key: set(m or {}) for key, m in zip(previous["ids"], previous["metadatas"])}
                    for i, key in enumerate(batch_ids):
                        dropped = old_keys.get(key, set()) - set(batch_metadatas[i] or {})
                        if dropped:
                            batch_metadatas[i] = {**(batch_metadatas[i] or {}), **dict.fromkeys(dropped)}
                    collection.upsert(
                        ids=batch_ids,
                        embeddings=vectors[start:end],
                        metadatas=batch_metadatas,
                        documents=documents[start:end],
                    )
        self._stored_dimension = vectors.shape[1]

    def _delete(self, ids: list[str]) -> None:
        if self._lookup() is None:
            return
        with self._sharing.changing(ids):
            for start in range(0, len(ids), self._max_batch):
                with self._library_calls():
                    self._collection.delete(ids=ids[start : start + self._max_batch])

    @staticmethod
    def _payload(document: str | None, metadata: Mapping[str, Any] | None) -> Payload:
        payload = json.loads(document) if document else {}
        payload["metadata"] = dict(metadata or {})
        return payload

    def _get(self, ids: list[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        found: dict[str, tuple[np.ndarray, Payload]] = {}
        if self._collection is None:
            return found
        for start in range(0, len(ids), self._max_batch):
            with self._library_calls(reading=True):
                got = self._collection.get(
                    ids=ids[start : start + self._max_batch], include=["embeddings", "documents", "metadatas"]
                )
            for key, vector, document, metadata in zip(
                got["ids"], got["embeddings"], got["documents"], got["metadatas"]
            ):
                found[key] = (np.asarray(vector, dtype=np.float32), self._payload(document, metadata))
        return found

    def _search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None) -> RankedList:
        result = self._query(vector, k, filter, ["distances"])
        return (
            [(key, float(1.0 - distance)) for key, distance in zip(result["ids"][0], result["distances"][0])]
            if result
            else []
        )

    def _search_with_payloads(
        self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[str, float, Payload]]:
        result = self._query(vector, k, filter, ["distances", "documents", "metadatas"])
        if not result:
            return []
        return [
            (key, float(1.0 - distance), self._payload(document, metadata))
            for key, distance, document, metadata in zip(
                result["ids"][0], result["distances"][0], result["documents"][0], result["metadatas"][0]
            )
        ]

    def _query(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None, include: list[str]) -> Any:
        """Chroma's query result, or None when the filter matches nothing."""
        if self._collection is None:
            return None
        arguments: dict[str, Any] = {}
        if filter:
            try:
                arguments["where"] = to_where(filter)
            except Untranslatable:
                allowed = self.matching_ids(filter)
                if not allowed:
                    return None
                arguments["ids"] = allowed
        with self._library_calls(reading=True):
            return self._collection.query(
                query_embeddings=vector.reshape(1, -1), n_results=k, include=include, **arguments
            )

    def _pages(self, batch_size: int, with_vectors: bool) -> Iterator[tuple[list[str], Any, list[Payload]]]:
        """Every stored point in a stable order: ids, the embeddings (when asked for) and payloads."""
        include = ["documents", "metadatas"] + (["embeddings"] if with_vectors else [])
        offset = 0
        while self._collection is not None:
            with self._library_calls(reading=True):
                got = self._collection.get(limit=batch_size, offset=offset, include=include)
            if not got["ids"]:
                return
            offset += len(got["ids"])
            payloads = [self._payload(d, m) for d, m in zip(got["documents"], got["metadatas"])]
            yield list(got["ids"]), got["embeddings"] if with_vectors else None, payloads

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        for ids, vectors, payloads in self._pages(batch_size, with_vectors=True):
            yield ids, np.asarray(vectors, dtype=np.float32), payloads

    def _scan_payloads(self) -> Iterator[tuple[list[str], list[Payload]]]:
        for ids, _, payloads in self._pages(self._max_batch, with_vectors=False):
            yield ids, payloads

    def count(self) -> int:
        if self._collection is None:
            return 0
        with self._library_calls(reading=True):
            return int(self._collection.count())

    def read_manifest(self) -> dict[str, Any] | None:
        if self._lookup() is None:
            return None
        with self._library_calls(reading=True):  # read again: another process may have written it since
            self._collection = self._client.get_collection(self._name, embedding_function=None)
        return manifest_from_metadata(self._collection.metadata, f"Chroma collection {self._name!r}")

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        with self._sharing.changing([]):
            collection = self._created()
            with self._library_calls():
                collection.modify(metadata=manifest_as_metadata(manifest))
                self._collection = self._client.get_collection(self._name, embedding_function=None)

    # ------------------------------------------------------------ SharesCollection

    def lock_writes(self, timeout: float, holder: str) -> AbstractContextManager[None]:
        """The collection's write lock (``vecguard.protocols.SharesCollection``): across processes on a Chroma
        server, among this process's threads on an embedded client."""
        return self._sharing.lock_writes(timeout, holder)

    def change_token(self) -> int:
        token = self._sharing.change_token()
        if token and self._collection is None:
            self._lookup()  # created by another process since this store opened
        return token

    def changes_since(self, token: int) -> list[str] | None:
        return self._sharing.changes_since(token)

    def close(self) -> None:
        # Releases the embedded system Chroma caches per path: a later open in this
        # process must read what other processes wrote meanwhile, not a stale cache.
        self._collection = None
        with self._library_calls():
            self._client.close()


def _build(options: dict[str, Any], base_dir: Path) -> ChromaStore:
    opts = take_options(
        "[store] chroma",
        options,
        {
            "path": None,
            "host": None,
            "port": 8000,
            "collection": "vecguard",
            "ef_search": 200,
            "lock_lease": DEFAULT_LEASE,
        },
    )
    if opts["host"] is not None and opts["path"] is not None:
        raise ConfigError("[store] chroma: give either path (embedded) or host/port (a Chroma server), not both")
    if not isinstance(opts["port"], int) or isinstance(opts["port"], bool) or not 0 < opts["port"] < 65536:
        raise ConfigError(f"[store] chroma port must be a TCP port number, got {opts['port']!r}")
    name = opts["collection"]
    if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name) or name.endswith(COMPANION_SUFFIX):
        raise ConfigError(
            f"[store] chroma collection must be 3 to {_LONGEST_NAME} characters of "
            f"a-z, A-Z, 0-9, '.', '_' and '-', starting and ending with a letter or digit and not ending in "
            f"{COMPANION_SUFFIX!r} (vecguard's name for its lock and change records), got {name!r}"
        )
    return ChromaStore(
        path=resolve_path(opts["path"], base_dir, "[store] chroma"),
        host=opts["host"],
        port=opts["port"],
        collection=name,
        ef_search=opts["ef_search"],
        lock_lease=checked_lease("[store] chroma", opts["lock_lease"]),
    )


@hookimpl
def vecguard_parts() -> list[Part]:
    return [Part("store", "chroma", _build, extra="chroma", description="ChromaDB, embedded or server (space ip)")]

"""ChromaDB store: embedded (``path``) or a Chroma server (``host``/``port``).

Options (``[store]``):
    path        folder for an embedded PersistentClient (none and no host: in memory)
    host, port  a Chroma server, through HttpClient
    collection  collection name (default "vecguard")
    ef_search   HNSW search breadth (default 200)

Chroma never embeds anything: every call passes vectors and
``embedding_function=None``, so no default model is loaded or fetched. The
collection's space is "ip" (score = 1 - distance = inner product, the shared
scale). User metadata goes into Chroma metadata, so ``where`` filters run in
Chroma; the rest of the payload is one JSON string in the document field. The
manifest is one JSON string in collection metadata, beside the fingerprint.
A filter Chroma cannot express exactly (string order, ``$not`` over an order)
is evaluated exactly by vecguard and passed to Chroma as an id list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from vecguard import filters
from vecguard.atomic import canonical_json
from vecguard.config import resolve_path, take_options
from vecguard.errors import ConfigError, StorageError
from vecguard.guard import manifest_as_metadata, manifest_from_metadata
from vecguard.protocols import Payload, RankedList, check_batch, check_query
from vecguard.registry import Part, hookimpl

_ORDER_NEGATION = {"$eq": "$ne", "$ne": "$eq", "$in": "$nin", "$nin": "$in"}


class _Inexpressible(Exception):
    """The filter has no exact Chroma ``where``; vecguard evaluates it instead."""


def _field_clauses(field: str, condition: Any, negate: bool) -> list[dict[str, Any]]:
    ops = condition.items() if isinstance(condition, Mapping) else (("$eq", condition),)
    clauses = []
    for op, operand in ops:
        if negate:
            if op not in _ORDER_NEGATION:
                raise _Inexpressible  # not(x > 1) also holds for a missing x; Chroma cannot say "missing"
            op = _ORDER_NEGATION[op]
        if op in ("$gt", "$gte", "$lt", "$lte") and isinstance(operand, str):
            raise _Inexpressible  # Chroma orders numbers only
        if any(
            isinstance(v, float) and not v.is_integer() for v in (operand if isinstance(operand, list) else [operand])
        ):
            raise _Inexpressible  # Chroma truncates a fractional operand against an int field (1.5 matches 1)
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
    """Translate a validated portable filter into an equivalent Chroma ``where`` (or raise _Inexpressible)."""
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


class ChromaStore:
    exact_search = False  # HNSW: approximate nearest neighbours

    def __init__(self, *, path: Path | None, host: str | None, port: int, collection: str, ef_search: int) -> None:
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if host is not None:
            try:
                self._client = chromadb.HttpClient(host=host, port=port, settings=settings)
            except Exception as exc:  # chromadb raises ValueError, httpx errors or its own, by version
                raise StorageError(
                    f"cannot reach the Chroma server at http://{host}:{port} ({exc}); start it (`chroma run`) "
                    f"or fix [store] host and port"
                ) from exc
        elif path is not None:
            self._client = chromadb.PersistentClient(path=str(path), settings=settings)
        else:
            self._client = chromadb.EphemeralClient(settings=settings)
        self._name = collection
        self._ef_search = ef_search
        from chromadb.errors import NotFoundError

        try:  # only a write creates the collection: opening to search must not leave an empty one behind
            self._collection: Any = self._client.get_collection(collection, embedding_function=None)
        except NotFoundError:
            self._collection = None
        else:
            space = (self._collection.configuration or {}).get("hnsw", {}).get("space")
            if space not in (None, "ip"):
                raise StorageError(
                    f"Chroma collection {collection!r} uses space {space!r}, but vecguard scores by inner product; "
                    f"use another [store] collection name"
                )
        self._max_batch = int(self._client.get_max_batch_size())
        self._dimension: int | None = None

    def _created(self) -> Any:
        """The collection, created now if this is the first write."""
        if self._collection is None:
            self._collection = self._client.get_or_create_collection(
                self._name,
                embedding_function=None,
                configuration={
                    "hnsw": {"space": "ip", "ef_search": self._ef_search, "ef_construction": max(self._ef_search, 100)}
                },
            )
        return self._collection

    def _known_dimension(self) -> int | None:
        if self._dimension is None and self._collection is not None:
            sample = self._collection.get(limit=1, include=["embeddings"])
            if sample["ids"]:
                self._dimension = len(sample["embeddings"][0])
        return self._dimension

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload]) -> None:
        vectors = check_batch(ids, vectors, payloads, self._known_dimension())
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
        collection = self._created() if len(ids) else self._collection
        for start in range(0, len(ids), self._max_batch):
            end = start + self._max_batch
            batch_ids = list(ids[start:end])
            batch_metadatas = metadatas[start:end]
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
        if len(ids):
            self._dimension = vectors.shape[1]

    def delete(self, ids: Sequence[str]) -> None:
        ids = list(ids)
        if self._collection is None:
            return
        for start in range(0, len(ids), self._max_batch):
            self._collection.delete(ids=ids[start : start + self._max_batch])

    @staticmethod
    def _payload(document: str | None, metadata: Mapping[str, Any] | None) -> Payload:
        payload = json.loads(document) if document else {}
        payload["metadata"] = dict(metadata or {})
        return payload

    def get(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        found: dict[str, tuple[np.ndarray, Payload]] = {}
        ids = list(ids) if self._collection is not None else []
        for start in range(0, len(ids), self._max_batch):
            part = ids[start : start + self._max_batch]
            if not part:
                continue
            got = self._collection.get(ids=part, include=["embeddings", "documents", "metadatas"])
            for key, vector, document, metadata in zip(
                got["ids"], got["embeddings"], got["documents"], got["metadatas"]
            ):
                found[key] = (np.asarray(vector, dtype=np.float32), self._payload(document, metadata))
        return found

    def _matching_ids(self, flt: Mapping[str, Any]) -> list[str]:
        allowed, matches = [], filters.compile(flt)
        for ids, _, payloads in self.scan(batch_size=self._max_batch, include_vectors=False):
            allowed += [key for key, payload in zip(ids, payloads) if matches(payload["metadata"])]
        return allowed

    def search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None) -> RankedList:
        result = self._query(vector, k, filter, ["distances"])
        return (
            [(key, float(1.0 - distance)) for key, distance in zip(result["ids"][0], result["distances"][0])]
            if result
            else []
        )

    def search_with_payloads(
        self,
        vector: np.ndarray,
        k: int,
        filter: Mapping[str, Any] | None = None,
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
        vector = check_query(vector, k, self._known_dimension())
        if filter:
            filters.validate(filter)
        if self._collection is None:
            return None
        arguments: dict[str, Any] = {}
        if filter:
            try:
                arguments["where"] = to_where(filter)
            except _Inexpressible:
                allowed = self._matching_ids(filter)
                if not allowed:
                    return None
                arguments["ids"] = allowed
        return self._collection.query(query_embeddings=vector.reshape(1, -1), n_results=k, include=include, **arguments)

    def scan(
        self, batch_size: int = 1000, include_vectors: bool = True
    ) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        include = ["documents", "metadatas"] + (["embeddings"] if include_vectors else [])
        offset = 0
        while self._collection is not None:
            got = self._collection.get(limit=batch_size, offset=offset, include=include)
            if not got["ids"]:
                return
            offset += len(got["ids"])
            vectors = (
                np.asarray(got["embeddings"], dtype=np.float32)
                if include_vectors
                else np.zeros((len(got["ids"]), 0), dtype=np.float32)
            )
            yield list(got["ids"]), vectors, [self._payload(d, m) for d, m in zip(got["documents"], got["metadatas"])]

    def count(self) -> int:
        return int(self._collection.count()) if self._collection is not None else 0

    def read_manifest(self) -> dict[str, Any] | None:
        if self._collection is None:
            return None
        return manifest_from_metadata(self._collection.metadata, f"Chroma collection {self._name!r}")

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        self._created().modify(metadata=manifest_as_metadata(manifest))
        self._collection = self._client.get_collection(self._name, embedding_function=None)

    def close(self) -> None:
        # Releases the embedded system Chroma caches per path: a later open in this
        # process must read what other processes wrote meanwhile, not a stale cache.
        self._collection = None
        self._client.close()


def _build(options: dict[str, Any], base_dir: Path) -> ChromaStore:
    opts = take_options(
        "[store] chroma",
        options,
        {"path": None, "host": None, "port": 8000, "collection": "vecguard", "ef_search": 200},
    )
    if opts["host"] is not None and opts["path"] is not None:
        raise ConfigError("[store] chroma: give either path (embedded) or host/port (a Chroma server), not both")
    if not isinstance(opts["port"], int) or isinstance(opts["port"], bool) or not 0 < opts["port"] < 65536:
        raise ConfigError(f"[store] chroma port must be a TCP port number, got {opts['port']!r}")
    name = opts["collection"]
    if not isinstance(name, str) or not 3 <= len(name) <= 512:
        raise ConfigError(f"[store] chroma collection must be a name of 3 to 512 characters, got {name!r}")
    return ChromaStore(
        path=resolve_path(opts["path"], base_dir, "[store] chroma"),
        host=opts["host"],
        port=opts["port"],
        collection=name,
        ef_search=opts["ef_search"],
    )


@hookimpl
def vecguard_parts() -> list[Part]:
    return [Part("store", "chroma", _build, extra="chroma", description="ChromaDB, embedded or server (space ip)")]

"""What `vecguard check` verifies beyond the guard: every record readable and in step with the others.

A collection is in step when every stored chunk has the chunk payload shape,
every document's chunks are all there (``0 .. chunks - 1``, named
``doc_id#index``), the manifest's counts equal what is stored, and the keyword
index holds exactly the stored chunks and was saved by the collection's last
write. A store that can check its own files (SQLite pages, the index file)
adds what it finds (``ChecksIntegrity``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import CorruptCollectionError, StorageError
from .protocols import ChecksIntegrity, ListsIds, Payload

if TYPE_CHECKING:
    from .collection import Collection

# The payload of every chunk the engine stores ("content_hash" too, which only skipping unchanged documents reads).
CHUNK_FIELDS: dict[str, type | tuple[type, ...]] = {
    "doc_id": str,
    "chunk": int,
    "chunks": int,
    "start": int,
    "end": int,
    "text": str,
    "metadata": dict,
}


def payload_problem(payload: Any) -> str | None:
    """What is wrong with a stored chunk payload, or None when it has the shape the engine reads."""
    if not isinstance(payload, Mapping):
        return f"its payload is {type(payload).__name__}, not an object"
    for name, kind in CHUNK_FIELDS.items():
        value = payload.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its payload's {name!r} should be {getattr(kind, '__name__', kind)}, got {value!r:.60}"
    if not 0 <= payload["chunk"] < payload["chunks"]:
        return f"its payload says chunk {payload['chunk']} of {payload['chunks']}"
    if not isinstance(payload.get("content_hash", ""), str):
        return f"its payload's 'content_hash' should be str, got {payload['content_hash']!r:.60}"
    return None


def malformed_payload(where: str, payloads: Mapping[str, Payload]) -> CorruptCollectionError | None:
    """The error naming the first malformed payload among ``payloads`` (None when all are well formed)."""
    for key, payload in payloads.items():
        problem = payload_problem(payload)
        if problem is not None:
            return CorruptCollectionError(
                f"{where}: stored point {key!r} is damaged: {problem}; run `vecguard check`, then restore the "
                f"collection from a backup or rebuild it"
            )
    return None


def problems(collection: Collection) -> list[str]:
    """Every problem found by reading the whole collection once (the store's own checks first)."""
    found: list[str] = list(collection.open_problems)
    if isinstance(collection.store, ChecksIntegrity):
        found += collection.store.check_integrity()
    where = collection.where
    chunks = 0
    heads: dict[str, int] = {}  # each document's chunk count, from its first chunk
    indexes: dict[str, set[int]] = {}
    stored_ids: set[str] = set()
    try:
        for ids, _, payloads in collection.store.scan(batch_size=1000):
            for key, payload in zip(ids, payloads):
                stored_ids.add(key)
                problem = payload_problem(payload)
                if problem is None and key != f"{payload['doc_id']}#{payload['chunk']}":
                    problem = f"its payload names chunk {payload['chunk']} of document {payload['doc_id']!r}"
                if problem is not None:
                    found.append(f"{where}: stored point {key!r}: {problem}")
                    continue
                chunks += 1
                indexes.setdefault(payload["doc_id"], set()).add(payload["chunk"])
                if payload["chunk"] == 0:
                    heads[payload["doc_id"]] = payload["chunks"]
    except StorageError as exc:
        return [*found, str(exc)]
    for doc_id, held in sorted(indexes.items()):
        if doc_id not in heads:
            found.append(
                f"{where}: document {doc_id!r} has chunks {sorted(held)[:5]} "
                "but no first chunk (left by a write that did not finish)"
            )
        elif held != set(range(heads[doc_id])):
            found.append(
                f"{where}: document {doc_id!r} should have chunks 0-{heads[doc_id] - 1}, has {sorted(held)[:10]}"
            )
    counts = collection.manifest.get("counts") or {}
    documents = len(heads)  # a point's id names its chunk (checked above), so each document has one first chunk
    if (counts.get("documents"), counts.get("chunks")) != (documents, chunks):
        found.append(
            f"{where}: the manifest counts {counts.get('documents')} documents and {counts.get('chunks')} chunks; "
            f"the store holds {documents} and {chunks}"
        )
    keyword = collection.keyword
    if keyword.count() != len(stored_ids):
        found.append(
            f"{collection.keyword_where}: the keyword index holds {keyword.count()} chunks, the store {len(stored_ids)}"
        )
    elif isinstance(keyword, ListsIds) and keyword.ids() != stored_ids:
        missing = sorted(stored_ids - keyword.ids())[:3]
        found.append(
            f"{collection.keyword_where}: the keyword index holds other chunks than the store (missing e.g. {missing})"
        )
    return found

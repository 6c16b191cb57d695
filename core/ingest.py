"""One ``Engine.add`` run: read documents into batches, skip unchanged ones, chunk, encode, write in order.

Memory holds at most three batches (``[chunking] batch_documents``): one being
read, one being encoded in a background thread and one being written, so the
encoder does not wait for the store. ``content_hash`` (of a document's text and
metadata) lets a rerun skip what is already stored unchanged: that is how an
interrupted `vecguard index` resumes.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .atomic import canonical_json
from .chunking import TokenChunker
from .collection import ChunkPayload, Collection, chunk_id
from .errors import DocumentError
from .protocols import Document, Encoder, Instrument, Payload, as_documents, stage, unicode_problem


@dataclass
class ChunkedBatch:
    """One batch of changed documents between chunking and the store."""

    doc_ids: set[str]
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    payloads: list[Payload] = field(default_factory=list)
    vectors: Future[np.ndarray] | None = None
    documents_read: int = 0  # documents of the batch read from the input, the unchanged ones included


class Ingest:
    """One add() run as an object: its batch, the batch being encoded and its counts are attributes.

    ``write_lock`` is held while the run changes the collection (one batch at a time, so another process's
    writes and this process's searches go on between batches), never while it encodes.
    ``progress`` (anything with ``update(n)``) counts documents once they are committed.
    """

    def __init__(
        self,
        collection: Collection,
        encoder: Encoder,
        chunker: TokenChunker,
        *,
        batch_documents: int,
        write_lock: Callable[[], AbstractContextManager[Any]],
        instrument: Instrument | None = None,
        progress: Any = None,
    ) -> None:
        self.collection, self.encoder, self.chunker = collection, encoder, chunker
        self.batch_documents = batch_documents
        self.write_lock, self.instrument, self.progress = write_lock, instrument, progress
        self.written = 0
        self.unchanged = 0
        self._batch: dict[str, Document] = {}
        self._pending: ChunkedBatch | None = None  # being encoded while the batch before it is written
        self._store_failed = False  # then the collection stays marked mid-write: the next write or open repairs it
        self._wrote = False
        self._encoder_thread: ThreadPoolExecutor | None = None

    def __call__(self, documents: Iterable[Document | Mapping[str, Any]]) -> int:
        """Write ``documents``; returns how many were written. A malformed document raises DocumentError after
        every document before it has been committed."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecguard-encode") as self._encoder_thread:
            try:
                for position, document in enumerate(as_documents(documents)):
                    validate_document(document, f"document {position + 1}", position=position)
                    self._batch.pop(document.id, None)
                    self._batch[document.id] = document
                    if len(self._batch) >= self.batch_documents:
                        self._flush()
            finally:
                # Documents read before a bad one are valid: commit them, then let the error through.
                if not self._store_failed:
                    if self._batch:
                        self._flush()
                    self._write_pending()
                if self._wrote and not self._store_failed:
                    # A keyword index that is saved whole is saved once per call, not per batch.
                    with self.write_lock():
                        self.collection.finish_writes()
        return self.written

    def _flush(self) -> None:
        taken, self._batch = list(self._batch.values()), {}
        if self._pending is not None and not self._pending.doc_ids.isdisjoint(d.id for d in taken):
            self._write_pending()  # the same document again: what is stored must be read after that write
        # Read without the lock: a document another writer changes meanwhile is replaced whole when written.
        heads = self.collection.payloads([chunk_id(d.id, 0) for d in taken])
        digests = {d.id: content_hash(d) for d in taken}
        changed = [d for d in taken if (heads.get(chunk_id(d.id, 0)) or {}).get("content_hash") != digests[d.id]]
        self.unchanged += len(taken) - len(changed)
        if not changed:
            if self.progress is not None:
                self.progress.update(len(taken))
            return
        chunked = self._chunk(changed, digests)
        chunked.documents_read = len(taken)
        # The stage's span and metrics belong to this call's context, not the thread's.
        chunked.vectors = self._encoder_thread.submit(contextvars.copy_context().run, self._encode, chunked.texts)
        self._write_pending()
        self._pending = chunked

    def _write_pending(self) -> None:
        if self._pending is None:
            return
        chunked, self._pending = self._pending, None
        try:
            vectors = chunked.vectors.result()  # waited for before the lock: searches never wait for encoding
            with self.write_lock():
                self.collection.put_documents(chunked.doc_ids, chunked.ids, chunked.texts, chunked.payloads, vectors)
            self._wrote = True
            self.written += len(chunked.doc_ids)
        except BaseException:
            self._store_failed = True
            raise
        if self.progress is not None:  # counted once committed: a progress bar never runs ahead of the store
            self.progress.update(chunked.documents_read)

    def _chunk(self, documents: list[Document], digests: Mapping[str, str]) -> ChunkedBatch:
        chunked = ChunkedBatch(doc_ids={d.id for d in documents})
        for document, chunks in zip(documents, self.chunker.split_many([d.text for d in documents])):
            for chunk in chunks:
                chunked.ids.append(chunk_id(document.id, chunk.index))
                chunked.texts.append(chunk.text)
                payload: ChunkPayload = {
                    "doc_id": document.id,
                    "chunk": chunk.index,
                    "chunks": len(chunks),
                    "start": chunk.start,
                    "end": chunk.end,
                    "text": chunk.text,
                    "metadata": dict(document.metadata),
                    "content_hash": digests[document.id],
                }
                chunked.payloads.append(payload)  # type: ignore[arg-type]
        return chunked

    def _encode(self, texts: list[str]) -> np.ndarray:
        with stage(self.instrument, "ingest_encode"):
            return self.encoder.encode_documents(texts)


def content_hash(document: Document) -> str:
    """What a rerun compares to skip a stored document: its text and metadata (not its id)."""
    canonical = canonical_json({"text": document.text, "metadata": document.metadata})
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def validate_document(document: Document, where: str, *, position: int | None = None) -> None:
    """Raise DocumentError naming ``where`` (a position or a file line) and the bad field; ``position`` is the
    document's 0-based place in the input, carried by the error."""

    def refuse(message: str) -> DocumentError:
        return DocumentError(message, position=position)

    if not isinstance(document.id, str) or not document.id.strip():
        raise refuse(f"{where}: 'id' must be a non-empty string, got {document.id!r:.60}")
    if problem := unicode_problem(document.id):
        raise refuse(f"{where}: 'id' {problem}")
    where = f"{where} (id {document.id!r})"
    if not isinstance(document.text, str) or not document.text.strip():
        raise refuse(f"{where}: 'text' must be non-empty text, got {document.text!r:.60}")
    if problem := unicode_problem(document.text):
        raise refuse(f"{where}: 'text' {problem}")
    if not isinstance(document.metadata, Mapping):
        raise refuse(f"{where}: 'metadata' must be an object of flat values, got {type(document.metadata).__name__}")
    for key, value in document.metadata.items():
        if not isinstance(key, str) or not key or key.startswith("$") or unicode_problem(key):
            raise refuse(
                f"{where}: metadata key {key!r:.60} must be a non-empty string of valid Unicode not starting with '$'"
            )
        if not isinstance(value, (str, int, float, bool)) or (isinstance(value, float) and not math.isfinite(value)):
            raise refuse(
                f"{where}: metadata {key!r} is {type(value).__name__} {value!r:.60}; values must be strings, "
                f"finite numbers or bools (flatten lists and objects into several keys)"
            )
        if isinstance(value, str) and (problem := unicode_problem(value)):
            raise refuse(f"{where}: metadata {key!r} {problem}")
    try:
        canonical_json(document.metadata)
    except (TypeError, ValueError) as exc:  # anything JSON cannot hold
        raise refuse(f"{where}: metadata cannot be stored as JSON ({exc})") from exc

"""A collection: one store, its manifest and the keyword index kept in step with it.

``Collection`` is the manifest's only writer. Every chunk the engine stores
carries its document in its payload::

    {"doc_id", "chunk", "chunks", "start", "end", "text", "metadata", "content_hash"}

so re-adding a document finds and replaces all of its chunks through the
VectorStore protocol alone, and a document can be rebuilt from its chunks.
A document's first chunk is written after its others, so a stored first chunk
means the whole document is stored.

The manifest's ``state`` holds two transient marks: ``writing`` (a write is
under way: a crash leaves it set and the next open repairs from the stored
chunks) and ``migration`` (a copy is under way: the collection opens only for
the migration that finishes it). Every write gives the manifest a new
``write_id``, which the keyword index is saved with (``keyword_files``), so a
keyword file saved by another write is recognised and rebuilt.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from . import filters as portable_filters
from . import guard, integrity
from .chunking import join_chunks
from .errors import CollectionNotFoundError, CorruptCollectionError, StorageError
from .keyword_files import KeywordFiles
from .protocols import Document, KeywordIndex, Payload, SearchesWithPayloads, VectorStore

log = logging.getLogger(__name__)

GET_BATCH = 512


class ChunkPayload(TypedDict):
    """What the engine stores with every chunk."""

    doc_id: str
    chunk: int
    chunks: int
    start: int
    end: int
    text: str
    metadata: dict[str, Any]
    content_hash: str


def chunk_id(doc_id: str, index: int) -> str:
    return f"{doc_id}#{index}"


class Collection:
    """One store and its manifest, and the keyword index over the same chunks.

    ``new_keyword_index`` builds an empty keyword index with the collection's settings (for a rebuild).
    ``repair=False`` records what opening would have repaired in ``open_problems`` instead of repairing it.
    Writes are the caller's to serialise: the engine holds its write lock around each call that changes data.
    """

    def __init__(
        self,
        store: VectorStore,
        keyword: KeywordIndex | None,
        *,
        where: str,
        keyword_dir: Path | None = None,
        new_keyword_index: Callable[[], KeywordIndex] | None = None,
        repair: bool = True,
    ) -> None:
        self.store = store
        # Asked once here, not per search: a runtime Protocol check inspects the object's members every time.
        self.searches_with_payloads = isinstance(store, SearchesWithPayloads)
        self.where = where
        self.open_problems: list[str] = []
        self.manifest: dict[str, Any] = {}
        self._keyword = KeywordFiles(keyword, keyword_dir, new_index=new_keyword_index, collection_where=where)
        self._repair = repair
        self._writers = 0  # writes under way: the manifest's writing mark ends with the last

    @property
    def keyword(self) -> KeywordIndex:
        """The keyword index over the stored chunks (replaced when it is rebuilt)."""
        return self._keyword.index

    @property
    def keyword_where(self) -> str:
        """How messages name the keyword index: its folder, or the collection's."""
        return self._keyword.where

    # ------------------------------------------------------------ the manifest

    @property
    def state(self) -> dict[str, Any]:
        """Transient marks in the manifest: ``writing`` (a write in progress), ``migration`` (a copy in progress)."""
        return self.manifest.setdefault("state", {})

    def read(self, config_source: str, *, create: bool, in_memory: bool) -> bool:
        """Load the stored manifest (checked for shape); False when there is none and one may be created."""
        manifest = self.store.read_manifest()
        if manifest is not None:
            self.manifest = guard.check_manifest(manifest, f"the manifest of {self.where}")
            return True
        stored_chunks = self.store.count()
        if stored_chunks:
            raise StorageError(
                f"{self.where} holds {stored_chunks} vectors but no vecguard manifest, so nothing says which "
                f"model built them; fix: rebuild it with `vecguard index` into an empty store",
                location=self.where,
            )
        if not create and not in_memory:
            raise CollectionNotFoundError(
                f"{config_source}: {self.where} holds no vecguard collection; build one with "
                f"`vecguard index --config {config_source} DOCUMENTS`, or fix [store]",
                location=self.where,
            )
        return False

    def create(self, manifest: Mapping[str, Any]) -> None:
        """Write a new collection's manifest (built by the guard from the encoder that will fill it)."""
        self.manifest = {**manifest, "write_id": uuid.uuid4().hex}
        self.store.write_manifest(self.manifest)

    def begin_migration(self, manifest: Mapping[str, Any], mark: Mapping[str, Any]) -> None:
        """Make ``manifest`` the collection's, marked as the target of a migration until ``complete_migration``."""
        self.manifest = {**manifest, "state": {"migration": dict(mark)}}
        self.store.write_manifest(self.manifest)

    def refuse_unfinished_migration(self, config_source: str) -> None:
        """Raise while the collection is a migration's target that is not finished: it holds part of the data."""
        migration = self.state.get("migration")
        if migration:
            source = migration.get("source") or {}
            raise StorageError(
                f"{config_source}: this collection is an unfinished migration from "
                f"{migration.get('source_config')!r} ({migration.get('committed', 0)} of {source.get('chunks')} "
                f"points copied) and would answer with part of the data; fix: rerun the same `vecguard migrate` to "
                f"finish it, or delete it",
                location=self.where,
            )

    def resume_migration(self, manifest: Mapping[str, Any]) -> None:
        """Take up a migration ``manifest`` already stored with its mark (a rerun that resumes the copy)."""
        self.manifest = dict(manifest)

    def record_copied(self, committed: int) -> None:
        """A migration's progress: points up to ``committed`` are in; a rerun resumes from there."""
        self.state["migration"]["committed"] = committed
        self.store.write_manifest(self.manifest)

    def record_measurement(self, name: str, value: Any) -> None:
        """Keep a measurement in the manifest (outside its id): `vecguard serve` exports them."""
        if (self.manifest.get("measurements") or {}).get(name) != value:
            self.manifest.setdefault("measurements", {})[name] = value
            self.store.write_manifest(self.manifest)

    def complete_migration(self) -> None:
        """Clear a migration's mark: from now on the collection opens anywhere."""
        self.state.pop("migration", None)
        self.state["writing"] = False
        self.store.write_manifest(self.manifest)

    # ------------------------------------------------------------ opening

    def settle(self) -> None:
        """After the guard accepted the manifest: repair what a crash left, load the keyword index, check counts."""
        if self.state.get("migration"):
            return  # vecguard.migrate() finishes it with complete_migration()
        if self.state.get("writing") and self._found(
            f"{self.where}: the last write did not finish; repairing it from the stored chunks"
        ):
            self.repair()
            return
        recorded, stored_chunks = self.manifest["counts"]["chunks"], self.store.count()
        if recorded and not stored_chunks:
            raise CorruptCollectionError(
                f"{self.where}: the manifest records {recorded} chunks but the store holds none: its data was deleted "
                f"or replaced. Restore the collection from a backup, or delete it and index again",
                location=self.where,
            )
        self._load_keyword_index(stored_chunks)
        if recorded != stored_chunks and self._found(
            f"{self.where}: the manifest records {recorded} chunks but the store holds {stored_chunks}; recounting"
        ):
            self._recount()

    def _found(self, problem: str) -> bool:
        """Log a problem that open repairs; with repair=False record it instead. True when it is to be repaired."""
        if not self._repair:
            self.open_problems.append(problem)
            return False
        log.warning("%s", problem)
        return True

    def repair(self) -> None:
        """Bring the collection back in step from its stored chunks alone: remove chunks a crashed replace left
        beyond their document's chunk count, rebuild the keyword index from the stored texts and recount. Needs
        no encoder work, so it is cheap next to re-embedding."""
        self._remove_orphan_chunks()
        self._rebuild_keyword_index()
        self.state["writing"] = False
        self._recount()

    def finish_migration(self, *, rebuild: bool) -> None:
        """Make a migrated collection whole once every point is in (its mark stays until ``complete_migration``).

        ``rebuild``: repair from the stored chunks first; without it the keyword index built alongside the copy
        is saved as it is and the manifest's counts are trusted.
        """
        if rebuild:
            self.repair()
        else:
            self._keyword.save(self.manifest.get("write_id"))

    # ------------------------------------------------------------ the keyword index

    def _load_keyword_index(self, stored_chunks: int) -> None:
        problem = self._keyword.load(stored_chunks, self.manifest.get("write_id"))
        if problem is not None and self._found(f"{problem}; rebuilding it from the stored texts"):
            self._rebuild_keyword_index()

    def _rebuild_keyword_index(self) -> None:
        chunks = ((ids, [p["text"] for p in payloads]) for ids, payloads in self.scan_payloads())
        self._keyword.rebuild(chunks, self.manifest.get("write_id"))

    # ------------------------------------------------------------ repair and counts

    def _remove_orphan_chunks(self) -> None:
        """Chunks a crashed replace left behind: beyond their document's current chunk count."""
        chunk_counts: dict[str, int] = {}
        seen: list[tuple[str, str, int]] = []
        for ids, payloads in self.scan_payloads():
            for key, payload in zip(ids, payloads):
                seen.append((key, payload["doc_id"], payload["chunk"]))
                if payload["chunk"] == 0:
                    chunk_counts[payload["doc_id"]] = payload["chunks"]
        orphans = [key for key, doc_id, index in seen if index >= chunk_counts.get(doc_id, 0)]
        if orphans:
            self.store.delete(orphans)

    def _recount(self) -> None:
        documents = chunks = 0
        for _, payloads in self.scan_payloads():
            chunks += len(payloads)
            documents += sum(1 for p in payloads if p.get("chunk") == 0)
        self.manifest["counts"] = {"documents": documents, "chunks": chunks}
        self.store.write_manifest(self.manifest)

    # ------------------------------------------------------------ writing (the caller holds the write lock)

    def begin_write(self) -> None:
        """The first of concurrent writes marks the collection mid-write, so a crash is repaired at the next open,
        and gives it a new ``write_id``, which the keyword index is saved with."""
        self._writers += 1
        if self._writers == 1:
            self.state["writing"] = True
            self.manifest["write_id"] = uuid.uuid4().hex
            self.store.write_manifest(self.manifest)

    def end_write(self) -> None:
        """Save the keyword index and the counts; the last concurrent write clears the mark."""
        self._keyword.save(self.manifest.get("write_id"))
        self._writers -= 1
        if self._writers == 0:
            self.state["writing"] = False
        self.store.write_manifest(self.manifest)

    def put_documents(
        self, doc_ids: set[str], ids: list[str], texts: list[str], payloads: list[Payload], vectors: np.ndarray
    ) -> None:
        """Store the chunks of whole documents, replacing every chunk they had. The chunks stored for these
        documents are read here, not when the batch was chunked: another write may have replaced them since."""
        existing = self.chunk_ids_of(sorted(doc_ids))
        new_ids = set(ids)
        stale = [cid for cids in existing.values() for cid in cids if cid not in new_ids]
        # First chunks last: a crash inside the upsert (split into several calls on some stores) leaves no
        # first chunk without its siblings, so a rerun never skips a half-written document as unchanged.
        order = sorted(range(len(ids)), key=lambda i: payloads[i]["chunk"] == 0)
        ids, texts, payloads = [ids[i] for i in order], [texts[i] for i in order], [payloads[i] for i in order]
        # New chunks first, then stale ones: a crash in between leaves extra chunks, never a lost document.
        self.store.upsert(ids, vectors[order], payloads)
        self.keyword.add(ids, texts)
        if stale:
            self.store.delete(stale)
            self.keyword.delete(stale)
        # Counted in memory; end_write() writes the manifest (a crash before then leaves the collection marked
        # mid-write, and the next open recounts).
        counts = self.manifest["counts"]
        counts["documents"] += len(doc_ids) - len(existing)
        counts["chunks"] += len(ids) - sum(len(c) for c in existing.values())

    def delete_documents(self, doc_ids: list[str]) -> int:
        """Remove documents (every chunk, from both signals); returns how many existed."""
        existing = self.chunk_ids_of(doc_ids)
        chunk_ids = [cid for cids in existing.values() for cid in cids]
        if chunk_ids:
            self.begin_write()
            self.store.delete(chunk_ids)
            self.keyword.delete(chunk_ids)
            counts = self.manifest["counts"]
            counts["documents"] -= len(existing)
            counts["chunks"] -= len(chunk_ids)
            self.end_write()
        return len(existing)

    def matching_documents(self, filter: Mapping[str, Any]) -> list[str]:
        """Ids of the documents whose metadata matches a validated portable filter."""
        matches = portable_filters.compile(filter)
        heads = (p for _, payloads in self.scan_payloads() for p in payloads if p["chunk"] == 0)
        return [p["doc_id"] for p in heads if matches(p["metadata"])]

    # ------------------------------------------------------------ reading

    def payloads(self, ids: Sequence[str]) -> dict[str, Payload]:
        """The stored payloads among chunk ``ids``."""
        found: dict[str, Payload] = {}
        for start in range(0, len(ids), GET_BATCH):
            for key, (_, payload) in self.store.get(ids[start : start + GET_BATCH]).items():
                found[key] = payload
        return found

    def scan_payloads(self, batch_size: int = 1000) -> Iterator[tuple[list[str], list[Payload]]]:
        """Every stored chunk's (ids, payloads), a batch at a time; a damaged payload is named, not tripped over."""
        for ids, _, payloads in self.store.scan(batch_size=batch_size):
            if any(integrity.payload_problem(p) is not None for p in payloads):
                raise integrity.malformed_payload(self.where, dict(zip(ids, payloads)))  # type: ignore[misc]
            yield ids, payloads

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> dict[str, list[str]]:
        """Each stored document's chunk ids, read from its first chunk."""
        heads = self.payloads([chunk_id(d, 0) for d in doc_ids])
        wanted = set(doc_ids)
        return {
            payload["doc_id"]: [chunk_id(payload["doc_id"], i) for i in range(payload["chunks"])]
            for payload in heads.values()
            if payload["doc_id"] in wanted
        }

    def documents(self, doc_ids: Sequence[str]) -> list[Document]:
        """The stored documents among ``doc_ids``, in the order asked, rebuilt from their chunks."""
        existing = self.chunk_ids_of(doc_ids)
        payloads = self.payloads([cid for cids in existing.values() for cid in cids])
        documents = []
        for doc_id in doc_ids:
            if doc_id not in existing:
                continue
            parts = [payloads[cid] for cid in existing[doc_id] if cid in payloads]
            text = join_chunks([(p["start"], p["end"], p["text"]) for p in parts])
            documents.append(Document(doc_id, text, dict(parts[0]["metadata"])))
        return documents

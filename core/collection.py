"""A collection: one store, its manifest and the keyword index kept in step with it.

``Collection`` is the manifest's only writer. Every chunk the engine stores
carries its document in its payload::

    {"doc_id", "chunk", "chunks", "start", "end", "text", "metadata", "content_hash"}

so re-adding a document finds and replaces all of its chunks through the
VectorStore protocol alone, and a document can be rebuilt from its chunks.
A document's first chunk is written after its others, so a stored first chunk
means the whole document is stored.

The manifest's ``state`` holds two transient marks: ``writing`` (a batch is
being written, and ``batch`` says which documents it touches and how many chunks
each had: a crash leaves it set and the next open repairs those documents) and
``migration`` (a copy is under way: the collection opens only for the migration
that finishes it).

Several processes (SQLite's promise). On a store that ``SharesCollection``,
every batch is written under the store's cross-process write lock, after this
process caught up with what the others committed; the manifest is read again
under that lock, so counts are never lost between writers. Every search first
asks the store's change token (one cheap read) and, when it moved, catches up:
the manifest is read again and the keyword index updated for the chunks the
change feed names, in proportion to the change. The keyword files record the
token they reflect, so an open loads them and catches up the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from . import filters as portable_filters
from . import guard, integrity
from .chunking import join_chunks
from .errors import (
    CollectionBusyError,
    CollectionNotFoundError,
    CollectionReplacedError,
    CorruptCollectionError,
    StorageError,
)
from .faults import kill_point
from .file_lock import describe_this_process
from .keyword_files import KeywordFiles
from .protocols import (
    Document,
    KeywordIndex,
    MeasuresCoverage,
    Payload,
    SearchesWithPayloads,
    SharesCollection,
    TunesOnQueries,
    VectorStore,
)

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
    ``lock_timeout``: seconds a write waits for another process's (``[store] lock_timeout``).

    A write is made inside ``locked()`` (across processes) and the caller's own lock between its threads, after
    ``catch_up()``; a search calls ``catch_up()`` first when ``behind()``. The engine composes them.
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
        lock_timeout: float = 30.0,
    ) -> None:
        self.store = store
        # Asked once here, not per search: a runtime Protocol check inspects the object's members every time.
        self.searches_with_payloads = isinstance(store, SearchesWithPayloads)
        self.shared = isinstance(store, SharesCollection)
        self.tunes_on_queries = isinstance(store, TunesOnQueries)
        self.where = where
        self.open_problems: list[str] = []
        self.manifest: dict[str, Any] = {}
        self._keyword = KeywordFiles(
            keyword, keyword_dir, new_index=new_keyword_index, collection_where=where, shared=self.shared
        )
        # A rebuilt keyword index comes from the same plugin, so this holds for the collection's life.
        self.keyword_measures_coverage = isinstance(keyword, MeasuresCoverage)
        self._repair = repair
        self._lock_timeout = lock_timeout
        self._token: int | None = None  # the store change the manifest and the keyword index in memory reflect

    @property
    def keyword(self) -> KeywordIndex:
        """The keyword index over the stored chunks (replaced when it is rebuilt)."""
        return self._keyword.index

    @property
    def keyword_in_store(self) -> bool:
        """The store keeps the keyword signal and searches it (``HoldsKeywords``)."""
        return self._keyword.kept_in_store

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
        token = self.store.change_token() if self.shared else None  # read first: what follows is at least as new
        manifest = self.store.read_manifest()
        if manifest is not None:
            self.manifest = guard.check_manifest(manifest, f"the manifest of {self.where}")
            self._token = token
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
        self._sync_token()

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
        """Keep a measurement in the manifest (outside its id): `vecguard serve` exports them. Written under the
        write lock into the manifest as stored then; skipped (logged) while another process is writing."""
        if (self.manifest.get("measurements") or {}).get(name) == value:
            return
        try:
            with self.locked(timeout=0):
                self._read_manifest_again()
                self.manifest.setdefault("measurements", {})[name] = value
                self.store.write_manifest(self.manifest)
        except (CollectionBusyError, CollectionReplacedError) as exc:
            log.info("%s: measurement %r not recorded now: %s", self.where, name, exc)

    def complete_migration(self) -> None:
        """Clear a migration's mark: from now on the collection opens anywhere."""
        self.state.pop("migration", None)
        self.state["writing"] = False
        self.store.write_manifest(self.manifest)

    def _read_manifest_again(self) -> None:
        """The stored manifest, which another process may have written since this one read it (a shared store)."""
        if not self.shared:
            return
        manifest = self.store.read_manifest()
        if manifest is None:
            raise CollectionNotFoundError(
                f"{self.where}: the collection was deleted by another process; open it again to start a new one",
                location=self.where,
            )
        manifest = guard.check_manifest(manifest, f"the manifest of {self.where}")
        if self.manifest and manifest.get("id") != self.manifest.get("id"):
            raise CollectionReplacedError(
                f"{self.where} was replaced by another process with a collection of another vector space "
                f"(manifest {manifest.get('id')!r:.20}, opened as {self.manifest.get('id')!r:.20}); open it again",
                location=self.where,
            )
        self.manifest = manifest

    # ------------------------------------------------------------ several processes

    def locked(self, timeout: float | None = None) -> AbstractContextManager[Any]:
        """The collection's write lock across processes (nothing to take on a store of one process's own); waits
        ``timeout`` seconds (default: ``[store] lock_timeout``), then raises CollectionBusyError naming the holder."""
        if not self.shared:
            return nullcontext()
        wait = self._lock_timeout if timeout is None else timeout
        return self.store.lock_writes(wait, describe_this_process())  # type: ignore[attr-defined]

    def behind(self) -> bool:
        """Whether another process committed a change this one has not caught up with (one cheap read)."""
        return self.shared and self.store.change_token() != self._token  # type: ignore[attr-defined]

    def catch_up(self) -> None:
        """Read the manifest again and bring the keyword index up to every change committed since this process
        last looked, in proportion to the change. The caller keeps its own threads out (the keyword index
        changes) and calls it before every search or write, when ``behind()``."""
        if not self.shared:
            return
        token = self.store.change_token()  # type: ignore[attr-defined]
        if token == self._token:
            return
        self._read_manifest_again()
        if self._keyword.kept_in_store:
            self._token = token  # the store's keyword signal changed with its points: nothing to catch up
            return
        changed = self.store.changes_since(self._token) if self._token is not None else None  # type: ignore[attr-defined]
        if changed is None:
            log.warning(
                "%s changed more than its change feed keeps since this process looked; rebuilding the "
                "keyword index from the stored texts",
                self.where,
            )
            self._keyword.rebuild(self._stored_texts(), None)
        else:
            self._apply_to_keyword(changed)
        self._token = token

    def _apply_to_keyword(self, changed: Sequence[str]) -> None:
        """The keyword index holds the stored text of each chunk in ``changed``, and none of the deleted ones."""
        stored = self.payloads(list(changed))
        self.keyword.delete(list(changed))
        present = [key for key in changed if key in stored]
        if present:
            self.keyword.add(present, [stored[key]["text"] for key in present])

    # ------------------------------------------------------------ opening

    def settle(self) -> None:
        """After the guard accepted the manifest: repair what a crash left, load the keyword index, check counts.

        On a shared store a writing mark is a crash only when the write lock is free: otherwise another process
        is writing now, and its counts are its own to record."""
        if self.state.get("migration"):
            return  # vecguard.migrate() finishes it with complete_migration()
        try:
            with self.locked(timeout=0):
                self._read_manifest_again()
                if self.state.get("writing"):
                    self._settle_unfinished_write()
                if not self.state.get("writing"):  # with repair=False the mark stays, and the counts are off
                    self._check_counts()
        except CollectionBusyError:
            pass  # another process is writing: its mark is no crash
        self._load_keyword_index()

    def _check_counts(self) -> None:
        recorded, stored_chunks = self.manifest["counts"]["chunks"], self.store.count()
        if recorded and not stored_chunks:
            raise CorruptCollectionError(
                f"{self.where}: the manifest records {recorded} chunks but the store holds none: its data "
                f"was deleted or replaced. Restore the collection from a backup, or delete it and index again",
                location=self.where,
            )
        if recorded != stored_chunks and self._found(
            f"{self.where}: the manifest records {recorded} chunks but the store holds {stored_chunks}; recounting"
        ):
            self._recount()

    def _settle_unfinished_write(self) -> None:
        batch = self.state.get("batch")
        if not self._found(f"{self.where}: the last write did not finish; repairing it from the stored chunks"):
            return
        if isinstance(batch, dict) and isinstance(batch.get("documents"), dict):
            try:
                self._repair_batch(batch)
            except (TypeError, ValueError, IndexError):  # a mark of another shape: read everything instead
                self.repair()
        else:  # marked by an earlier version, which did not say what it was writing
            self.repair()

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
        no encoder work, so it is cheap next to re-embedding; it reads the whole collection."""
        reflects = self._reflects()  # read before the texts: what is rebuilt is at least as new
        self._remove_orphan_chunks()
        self._keyword.rebuild(self._stored_texts(), reflects)
        self.state["writing"] = False
        self.state.pop("batch", None)
        self._recount()
        self._sync_token()

    def finish_migration(self, *, rebuild: bool) -> None:
        """Make a migrated collection whole once every point is in (its mark stays until ``complete_migration``).

        ``rebuild``: repair from the stored chunks first; without it the keyword index built alongside the copy
        is saved as it is and the manifest's counts are trusted.
        """
        if rebuild:
            self.repair()
        else:
            self._keyword.save(self._reflects())

    # ------------------------------------------------------------ the keyword index

    def _reflects(self) -> int | str | None:
        """What the keyword files are saved as reflecting: the store's change token, or (a store of one process)
        the manifest's write_id."""
        return self.store.change_token() if self.shared else self.manifest.get("write_id")  # type: ignore[attr-defined]

    def _load_keyword_index(self) -> None:
        if self._keyword.ready or self._keyword.kept_in_store:  # rebuilt by a repair while settling; or the store's
            return
        stored_chunks = self.store.count()
        if self.shared:
            saved_at, problem = self._keyword.load_with_token()
            if problem is None and saved_at is not None:
                changed = self.store.changes_since(saved_at)  # type: ignore[attr-defined]
                if changed is not None:
                    self._apply_to_keyword(changed)
                    return
                problem = f"{self._keyword.where} was saved before the oldest change the store still lists"
            problem = problem or (f"{self._keyword.where} is missing" if stored_chunks else None)
        else:
            problem = self._keyword.load(stored_chunks, self.manifest.get("write_id"))
        if problem is not None and self._found(f"{problem}; rebuilding it from the stored texts"):
            reflects = self._reflects()  # read before the texts: what is rebuilt is at least as new
            self._keyword.rebuild(self._stored_texts(), None)
            try:  # saved by the lock's holder only, so two processes never write the files at once
                with self.locked(timeout=0):
                    self._keyword.save(reflects)
            except CollectionBusyError:
                pass  # the writer saves it (whole, or its changes) when its batch ends

    def _stored_texts(self) -> Iterator[tuple[list[str], list[str]]]:
        return ((ids, [p["text"] for p in payloads]) for ids, payloads in self.scan_payloads())

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

    def _repair_batch(self, batch: Mapping[str, Any]) -> None:
        """Finish a batch that a crash (or a failed write) left marked, from what it recorded before it began: each
        document's chunk count before and after it. Reads only those documents' chunks, so it costs what the batch
        did, not what the collection holds. A document keeps the chunks its stored first chunk counts (the new
        version once its first chunk, written last, is in; else the old one, which a rerun replaces)."""
        counted = {str(d): (int(n[0]), int(n[1])) for d, n in batch["documents"].items()}
        before = {d: n[0] for d, n in counted.items()}
        candidates = {chunk_id(d, i) for d, (old, new) in counted.items() for i in range(max(old, new))}
        heads = self.payloads([chunk_id(d, 0) for d in before])
        now = {p["doc_id"]: int(p["chunks"]) for p in heads.values() if p["doc_id"] in before}
        stored = self.payloads(sorted(candidates))
        orphans = [key for key, p in stored.items() if p["chunk"] >= now.get(p["doc_id"], 0)]
        if orphans:
            self.store.delete(orphans)
            self.keyword.delete(orphans)
        counts = self.manifest["counts"]
        counts["documents"] += len(now) - sum(1 for n in before.values() if n)
        counts["chunks"] += sum(now.values()) - sum(before.values())
        self.state["writing"] = False
        self.state.pop("batch", None)
        if counts["chunks"] != self.store.count():
            log.warning("%s: the counts after repairing the last write disagree with the store; recounting", self.where)
            self._recount()
        else:
            self.store.write_manifest(self.manifest)

    def _recount(self) -> None:
        documents = chunks = 0
        for _, payloads in self.scan_payloads():
            chunks += len(payloads)
            documents += sum(1 for p in payloads if p.get("chunk") == 0)
        self.manifest["counts"] = {"documents": documents, "chunks": chunks}
        self.store.write_manifest(self.manifest)

    # ------------------------------------------------------------ writing (the caller holds locked() and its own
    # write lock, and called catch_up() under them)

    def _begin_batch(self, chunks: Mapping[str, tuple[int, int]]) -> None:
        """Mark the collection mid-write with what this batch touches, before any point is written: a crash is
        then repaired (``_repair_batch``) by the next open or the next write. A mark left by a batch that failed
        or died is repaired first: whoever holds the lock now is the only writer."""
        if self.state.get("writing"):
            self._settle_unfinished_write()
        self.state["writing"] = True
        self.state["batch"] = {"documents": {d: list(n) for d, n in chunks.items()}}  # chunks before, after
        self.manifest["write_id"] = uuid.uuid4().hex
        self.store.write_manifest(self.manifest)

    def _end_batch(self) -> None:
        """Save the keyword index's changes and the counts, and clear the mark."""
        if self.shared:
            self._keyword.save_changes(self.store)
        self.state["writing"] = False
        self.state.pop("batch", None)
        self.store.write_manifest(self.manifest)
        self._sync_token()

    def _sync_token(self) -> None:
        """Only this process wrote since it caught up (it holds the lock): what it holds is the store as it is."""
        if self.shared:
            self._token = self.store.change_token()  # type: ignore[attr-defined]

    def finish_writes(self) -> None:
        """At the end of an add or delete call: save a keyword index that is saved whole (not incrementally)."""
        if self._keyword.unsaved:
            self._keyword.save(self._reflects())

    def put_documents(
        self, doc_ids: set[str], ids: list[str], texts: list[str], payloads: list[Payload], vectors: np.ndarray
    ) -> None:
        """Store the chunks of whole documents, replacing every chunk they had, as one marked batch. The chunks
        stored for these documents are read here, not when the batch was chunked: another write may have replaced
        them since."""
        existing = self.chunk_ids_of(sorted(doc_ids))
        after = {d: 0 for d in doc_ids}
        for payload in payloads:
            after[payload["doc_id"]] += 1
        self._begin_batch({d: (len(existing.get(d, ())), after[d]) for d in sorted(doc_ids)})
        new_ids = set(ids)
        stale = [cid for cids in existing.values() for cid in cids if cid not in new_ids]
        # First chunks last: a crash inside the upsert (split into several calls on some stores) leaves no
        # first chunk without its siblings, so a rerun never skips a half-written document as unchanged.
        order = sorted(range(len(ids)), key=lambda i: payloads[i]["chunk"] == 0)
        ids, texts, payloads = [ids[i] for i in order], [texts[i] for i in order], [payloads[i] for i in order]
        # New chunks first, then stale ones: a crash in between leaves extra chunks, never a lost document.
        self.store.upsert(ids, vectors[order], payloads)
        kill_point("write.batch")  # a test's SIGKILL: the chunks are in, the stale ones not yet out, still marked
        self.keyword.add(ids, texts)
        if stale:
            self.store.delete(stale)
            self.keyword.delete(stale)
        counts = self.manifest["counts"]
        counts["documents"] += len(doc_ids) - len(existing)
        counts["chunks"] += len(ids) - sum(len(c) for c in existing.values())
        self._keyword.changed()
        self._end_batch()

    def delete_documents(self, doc_ids: list[str]) -> int:
        """Remove documents (every chunk, from both signals) as one marked batch; returns how many existed."""
        existing = self.chunk_ids_of(doc_ids)
        chunk_ids = [cid for cids in existing.values() for cid in cids]
        if chunk_ids:
            self._begin_batch({d: (len(c), 0) for d, c in existing.items()})
            self.store.delete(chunk_ids)
            self.keyword.delete(chunk_ids)
            counts = self.manifest["counts"]
            counts["documents"] -= len(existing)
            counts["chunks"] -= len(chunk_ids)
            self._keyword.changed()
            self._end_batch()
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

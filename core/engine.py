"""The engine: chunk, encode, store, keyword-index, fuse and guard, on any backend.

Store ids are chunk ids; every chunk's payload carries its document::

    {"doc_id", "chunk", "chunks", "start", "end", "text", "metadata", "content_hash"}

so re-adding a document finds and replaces all of its chunks through the
VectorStore protocol alone, and a document can be rebuilt from its chunks.
``content_hash`` (of the document's text and metadata) lets a rerun skip what
is already stored unchanged: that is how an interrupted `vecguard index`
resumes. A document's first chunk is written after its others, so a stored
first chunk means the whole document is stored.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import filters as portable_filters
from . import guard, integrity, swap
from .atomic import canonical_json, write_json_atomically
from .chunking import TokenChunker, join_chunks
from .config import Config, load_config, resolve_path
from .errors import CollectionNotFoundError, CorruptCollectionError, DocumentError, StorageError, VecguardError
from .protocols import (
    DeclaresBatchSize,
    Document,
    Encoder,
    Fuser,
    Hit,
    Instrument,
    KeywordIndex,
    MaintainsIndex,
    Payload,
    RankedList,
    SearchesWithPayloads,
    SignalEvidence,
    VectorStore,
    as_documents,
    unicode_problem,
)
from .registry import Registry

log = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "keyword")
GET_BATCH = 512
MIN_BATCH_DOCUMENTS = 64  # documents per add() batch under batch_documents = "auto", unless the encoder batch is larger


KEYWORD_STATE = "state.json"  # beside the keyword index: the collection write it was saved by


def open(  # noqa: A001
    config: str | Path | Mapping[str, Any] | Config,
    *,
    registry: Registry | None = None,
    create: bool = True,
) -> Engine:
    """Open the collection a config describes; the version guard runs here.

    ``create=False`` (what searching and checking use) raises CollectionNotFoundError where no collection
    exists instead of creating an empty one, so a mistyped path never answers "no results".
    """
    return Engine(load_config(config), registry=registry, create=create)


def chunk_id(doc_id: str, index: int) -> str:
    return f"{doc_id}#{index}"


@dataclass
class _ChunkedBatch:
    """One batch of changed documents between chunking and the store."""

    doc_ids: set[str]
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    payloads: list[Payload] = field(default_factory=list)
    vectors: Future[np.ndarray] | None = None
    read: int = 0  # documents of the batch read from the input, the unchanged ones included


@dataclass
class Parts:
    """Everything a config builds besides the store: what decides vectors, chunks and keyword scores."""

    encoder: Encoder
    keyword: KeywordIndex
    fuser: Fuser
    chunker: TokenChunker

    def live_settings(self) -> dict[str, Any]:
        """The settings the version guard compares with a collection's manifest."""
        metric = "cosine" if self.encoder.identity().normalized else "inner_product"
        return {"metric": metric, "chunking": self.chunker.settings(), "keyword": self.keyword.settings()}


def build_parts(config: Config, registry: Registry, *, encoder: Encoder | None = None) -> Parts:
    """Build the config's encoder (unless one built from the same [encoder] table is given), keyword index, fuser and chunker."""
    base = config.base_dir
    encoder = encoder or registry.build("encoder", *config.plugin_options("encoder"), base)
    keyword: KeywordIndex = registry.build("keyword", *config.plugin_options("keyword", engine_keys=("path",)), base)
    fuser: Fuser = registry.build("fuser", *config.plugin_options("fusion", engine_keys=("depth", "weights")), base)
    chunking = config.section("chunking")
    return Parts(encoder, keyword, fuser, TokenChunker(encoder, chunking["tokens"], chunking["overlap"]))


class Engine:
    """Hybrid search over one collection. Use as a context manager or call ``close()``."""

    def __init__(
        self,
        config: Config,
        *,
        registry: Registry | None = None,
        check_guard: bool = True,
        open_unfinished: bool = False,
        parts: Parts | None = None,
        create: bool = True,
        repair: bool = True,
    ) -> None:
        self.config = config
        self.registry = registry or Registry.discover()
        self.instrument: Instrument | None = None
        # Held while a write reads or changes the collection, never while it encodes: a host that searches from
        # other threads meanwhile (the server) sets it to its lock's writing side, so searches wait only for that.
        self.write_lock: Callable[[][Any]] = nullcontext
        self._writers = 0  # add() and delete() calls under way: the manifest's writing mark ends with the last
        self.store_plugin, store_options = config.plugin_options("store")
        folder = store_folder(config)
        self.where = str(folder) if folder is not None else _server_location(self.store_plugin, store_options)
        # Neither a folder nor a server: the store starts empty every time, so there is nothing to find.
        self._in_memory = folder is None and not (store_options.get("url") or store_options.get("host"))
        # Problems that open would have repaired, found with repair=False (`vecguard check` reports them).
        self.open_problems: list[str] = []
        self._repair = repair
        if folder is not None:
            swap.finish_interrupted(folder)  # a reindex killed between its renames is finished before anything reads
            if not create and not folder.exists():
                raise CollectionNotFoundError(
                    f"{config.source}: there is no collection at {folder} ([store] path); build one with "
                    f"`vecguard index --config {config.source} DOCUMENTS`, or fix the path"
                )
        try:
            self.store: VectorStore = self.registry.build("store", self.store_plugin, store_options, config.base_dir)
        except OSError as exc:
            raise StorageError(
                f"{config.source}: cannot open the collection at {self.where}: {exc.strerror or exc}"
                f"{f' ({exc.filename})' if exc.filename else ''}; give [store] a folder that can be created and written"
            ) from exc
        try:
            parts = parts or build_parts(config, self.registry)
            self.encoder, self.keyword, self.fuser, self.chunker = (
                parts.encoder,
                parts.keyword,
                parts.fuser,
                parts.chunker,
            )
            self.batch_documents = self._batch_documents(config.section("chunking")["batch_documents"])
            self.last_add = {"written": 0, "unchanged": 0}  # what the last add() wrote and skipped as already stored
            self.keyword_dir = self._keyword_dir(config, store_options)
            self.keyword_where = (
                str(self.keyword_dir) if self.keyword_dir is not None else f"the keyword index of {self.where}"
            )
            self.guard_report: guard.GuardReport | None = None
            self._open_collection(check_guard, open_unfinished, create)
        except BaseException:
            self.store.close()
            raise

    # ------------------------------------------------------------ lifecycle

    @staticmethod
    def _keyword_dir(config: Config, store_options: Mapping[str, Any]) -> Path | None:
        keyword_path = config.section("keyword").get("path")
        if keyword_path is not None:
            return Path(config.base_dir, keyword_path)
        store_path = store_options.get("path")
        if store_path is not None and not str(store_path).startswith(":"):  # ":memory:" is no folder
            return Path(config.base_dir, store_path) / "keyword"
        return None

    def _live_settings(self) -> dict[str, Any]:
        return Parts(self.encoder, self.keyword, self.fuser, self.chunker).live_settings()

    def _open_collection(self, check_guard: bool, open_unfinished: bool, create: bool) -> None:
        manifest = self.store.read_manifest()
        stored_chunks = self.store.count()
        if manifest is None:
            if stored_chunks:
                raise StorageError(
                    f"{self.where} holds {stored_chunks} vectors but no vecguard manifest, so nothing says which "
                    f"model built them; fix: rebuild it with `vecguard index` into an empty store"
                )
            if not create and not self._in_memory:
                raise CollectionNotFoundError(
                    f"{self.config.source}: {self.where} holds no vecguard collection; build one with "
                    f"`vecguard index --config {self.config.source} DOCUMENTS`, or fix [store]"
                )
            self.manifest = guard.build_manifest(self.encoder, store_plugin=self.store_plugin, **self._live_settings())
            self.manifest["write_id"] = uuid.uuid4().hex
            self.store.write_manifest(self.manifest)
        else:
            self.manifest = guard.check_manifest(manifest, f"the manifest of {self.where}")
            migration = self.state.get("migration")
            if migration and not open_unfinished:
                source = migration.get("source") or {}
                raise StorageError(
                    f"{self.config.source}: this collection is an unfinished migration from {migration.get('source_config')!r} "
                    f"({migration.get('committed', 0)} of {source.get('chunks')} points copied) and would answer "
                    f"with part of the data; fix: rerun the same `vecguard migrate` to finish it, or delete it"
                )
            if check_guard:
                self.guard_report = self.check()
                guard.enforce(self.guard_report, self.config.tables["guard"]["mode"], self.config.source)
        if self.state.get("migration"):
            return  # vecguard.migrate() finishes it with complete_migration()
        if self.state.get("writing") and self._found(
            f"{self.where}: the last write did not finish; repairing it from the stored chunks"
        ):
            self.repair()
            return
        recorded = self.manifest["counts"]["chunks"]
        if recorded and not stored_chunks:
            raise CorruptCollectionError(
                f"{self.where}: the manifest records {recorded} chunks but the store holds none: its data was deleted "
                f"or replaced. Restore the collection from a backup, or delete it and index again"
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

    @property
    def state(self) -> dict[str, Any]:
        """Transient marks in the manifest: ``writing`` (a write in progress), ``migration`` (a copy in progress)."""
        return self.manifest.setdefault("state", {})

    def repair(self) -> None:
        """Bring the collection back in step from its stored chunks alone.

        Removes chunks a crashed replace left beyond their document's chunk
        count, rebuilds the keyword index from the stored texts and recounts.
        Needs no encoder work, so it is cheap next to re-embedding.
        """
        self._remove_orphan_chunks()
        self._rebuild_keyword_index()
        self.state["writing"] = False
        self._recount()

    def finish_migration(self, *, rebuild: bool) -> None:
        """Make a migrated collection whole once every point is in; its mark stays until ``complete_migration``,
        so a run killed while verifying the copy is finished by the same command (``vecguard.migrate`` calls both).

        ``rebuild``: repair from the stored chunks first (orphans, keyword index,
        counts); without it the keyword index built alongside the copy is saved
        as it is and the manifest's counts are trusted.
        """
        if rebuild:
            self.repair()
        else:
            self._save_keyword_index()

    def complete_migration(self) -> None:
        """Clear a migration's mark: from now on the collection opens anywhere."""
        self.state.pop("migration", None)
        self.state["writing"] = False
        self.store.write_manifest(self.manifest)

    def check_integrity(self) -> list[str]:
        """Every problem with the collection's files and records, each naming where (what `vecguard check` runs
        after the guard); reads the whole collection once. [] when it is sound."""
        return integrity.problems(self)

    def check(self, manifest: Mapping[str, Any] | None = None) -> guard.GuardReport:
        """Compare the collection's manifest (or another one) with this engine's encoder and settings.

        What `vecguard check` runs; `vecguard migrate` also checks a copy's manifest against its source's encoder.
        """
        thresholds = self.config.tables["guard"]
        return guard.check_compatibility(
            self.manifest if manifest is None else manifest,
            self.encoder,
            min_mean_cosine=thresholds["min_mean_cosine"],
            min_cosine=thresholds["min_cosine"],
            **self._live_settings(),
        )

    def _load_keyword_index(self, stored_chunks: int) -> None:
        """Load the saved keyword index, or rebuild it from the stored texts when it is missing, unreadable, holds
        another number of chunks, or was saved by another write than the collection's last (a file restored from
        elsewhere, or a crash between the two)."""
        problem = None
        if self.keyword_dir is None:
            loaded = False
        else:
            try:
                loaded = self.keyword.load(self.keyword_dir)
            except Exception as exc:  # derived data: whatever is wrong with the file, the stored texts rebuild it
                loaded, problem = False, f"{self.keyword_where} is unreadable ({exc})"
            if loaded and self.manifest.get("write_id") and self._keyword_write_id() != self.manifest["write_id"]:
                loaded, problem = False, f"{self.keyword_where} was saved by another write than the collection's last"
        if loaded and self.keyword.count() != stored_chunks:
            problem = f"{self.keyword_where} holds {self.keyword.count()} chunks, the store {stored_chunks}"
        elif not loaded and stored_chunks and problem is None:
            problem = f"{self.keyword_where} is missing"
        if problem is not None and self._found(f"{problem}; rebuilding it from the stored texts"):
            self._rebuild_keyword_index()

    def _keyword_write_id(self) -> str | None:
        try:
            state = json.loads((self.keyword_dir / KEYWORD_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state.get("write_id") if isinstance(state, dict) else None

    def _rebuild_keyword_index(self) -> None:
        self.keyword = self.registry.build(
            "keyword", *self.config.plugin_options("keyword", engine_keys=("path",)), self.config.base_dir
        )
        for ids, payloads in self._scan_payloads():
            self.keyword.add(ids, [p["text"] for p in payloads])
        self._save_keyword_index()

    def _save_keyword_index(self) -> None:
        if self.keyword_dir is None:
            return
        try:
            self.keyword.save(self.keyword_dir)
            write_json_atomically(self.keyword_dir / KEYWORD_STATE, {"write_id": self.manifest.get("write_id")})
        except OSError as exc:  # the collection stays marked mid-write: the next open rebuilds the keyword index
            raise StorageError(
                f"cannot save the keyword index in {self.keyword_dir} ({exc.strerror or exc}); "
                f"everything committed before is kept: fix the cause and run the same command again"
            ) from exc

    def _remove_orphan_chunks(self) -> None:
        """Chunks a crashed replace left behind: beyond their document's current chunk count."""
        chunk_counts: dict[str, int] = {}
        seen: list[tuple[str, str, int]] = []
        for ids, payloads in self._scan_payloads():
            for key, payload in zip(ids, payloads):
                seen.append((key, payload["doc_id"], payload["chunk"]))
                if payload["chunk"] == 0:
                    chunk_counts[payload["doc_id"]] = payload["chunks"]
        orphans = [key for key, doc_id, index in seen if index >= chunk_counts.get(doc_id, 0)]
        if orphans:
            self.store.delete(orphans)

    def _scan_payloads(self, batch_size: int = 1000) -> Iterator[tuple[list[str], list[Payload]]]:
        """Every stored chunk's (ids, payloads), a batch at a time; a damaged payload is named, not tripped over."""
        for ids, _, payloads in self.store.scan(batch_size=batch_size):
            if any(integrity.payload_problem(p) is not None for p in payloads):
                raise integrity.malformed_payload(self.where, dict(zip(ids, payloads)))  # type: ignore[misc]
            yield ids, payloads

    def _recount(self) -> None:
        documents = chunks = 0
        for _, payloads in self._scan_payloads():
            chunks += len(payloads)
            documents += sum(1 for p in payloads if p.get("chunk") == 0)
        self._write_counts(documents, chunks)

    def _write_counts(self, documents: int, chunks: int) -> None:
        self.manifest["counts"] = {"documents": documents, "chunks": chunks}
        self.store.write_manifest(self.manifest)

    def _begin_write(self) -> None:
        """Under write_lock: the first of concurrent writes marks the collection mid-write in its manifest, so a
        crash is repaired at the next open, and gives it a new ``write_id``, which the keyword index is saved
        with: a keyword file that does not carry the manifest's was saved by another write and is rebuilt at open."""
        self._writers += 1
        if self._writers == 1:
            self.state["writing"] = True
            self.manifest["write_id"] = uuid.uuid4().hex
            self.store.write_manifest(self.manifest)

    def _end_write(self) -> None:
        """Under write_lock: save the keyword index and the counts; the last concurrent write clears the mark."""
        self._save_keyword_index()
        self._writers -= 1
        if self._writers == 0:
            self.state["writing"] = False
        self.store.write_manifest(self.manifest)

    def _stage(self, name: str) -> AbstractContextManager[Any]:
        return self.instrument.stage(name) if self.instrument is not None else nullcontext()

    def close(self) -> None:
        try:
            self._record_index_report()
        finally:
            self.store.close()

    def optimize(self) -> dict[str, Any] | None:
        """Have the store rebuild its index from every stored vector now (what `vecguard optimize` runs).

        Returns what the store built and measured, or None when the store keeps its own index.
        """
        optimize = self.store.optimize if isinstance(self.store, MaintainsIndex) else None
        if optimize is None:
            return None
        report = optimize()
        self._record_index_report()
        return report

    def _record_index_report(self) -> None:
        report = self.store.index_report if isinstance(self.store, MaintainsIndex) else None
        measured = report() if report is not None else None
        if measured and (self.manifest.get("measurements") or {}).get("index") != measured:
            self.manifest.setdefault("measurements", {})["index"] = measured
            self.store.write_manifest(self.manifest)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writing

    def _batch_documents(self, setting: int | str) -> int:
        """Documents per batch; "auto": 64, or enough to fill one pass of a larger encoder batch (a GPU's 512:
        on an H200, fp32 ingest went from 1,158 to 1,391 chunks/s, results/ingest_device-cuda.md)."""
        if setting != "auto":
            return int(setting)
        return max(MIN_BATCH_DOCUMENTS, self.encoder.batch_size if isinstance(self.encoder, DeclaresBatchSize) else 0)

    def add(self, documents: Iterable[Document | Mapping[str, Any]], *, progress: Any = None) -> int:
        """Chunk, encode and store documents in batches; return how many were written.

        ``documents`` may be any iterable, a generator over a file included:
        memory holds at most three batches (``[chunking] batch_documents``): one
        being read, one being encoded in a background thread and one being
        written, so the encoder does not wait for the store. Batches are
        committed in order. Re-adding an id replaces all of its chunks; a
        document stored with the same text and metadata is skipped without
        encoding (``last_add`` counts both). A malformed document raises
        DocumentError after every document before it has been committed.
        """
        written = unchanged = 0
        batch: dict[str, Document] = {}
        pending: _ChunkedBatch | None = None  # being encoded while the batch before it is written
        store_failed = False
        marked = False

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecguard-encode") as encoder_thread:

            def write_pending() -> None:
                nonlocal written, store_failed, pending
                if pending is None:
                    return
                chunked, pending = pending, None
                try:
                    vectors = chunked.vectors.result()  # waited for before the lock: searches never wait for encoding
                    with self.write_lock():
                        written += self._store_batch(chunked, vectors)
                except BaseException:
                    store_failed = True  # leave the collection marked mid-write: the next open repairs it
                    raise
                if progress is not None:  # counted once committed: a progress bar never runs ahead of the store
                    progress.update(chunked.read)

            def flush() -> None:
                nonlocal unchanged, batch, pending, marked
                taken, batch = list(batch.values()), {}
                if pending is not None and not pending.doc_ids.isdisjoint(d.id for d in taken):
                    write_pending()  # the same document again: what is stored must be read after that write
                with self.write_lock():
                    heads = self._get_payloads([chunk_id(d.id, 0) for d in taken])
                digests = {d.id: content_hash(d) for d in taken}
                changed = [
                    d for d in taken if (heads.get(chunk_id(d.id, 0)) or {}).get("content_hash") != digests[d.id]
                ]
                unchanged += len(taken) - len(changed)
                if changed:
                    if not marked:
                        with self.write_lock():
                            self._begin_write()
                        marked = True
                    chunked = self._chunk_batch(changed, digests)
                    chunked.read = len(taken)
                    # The stage's span and metrics belong to this call's context, not the thread's.
                    chunked.vectors = encoder_thread.submit(
                        contextvars.copy_context().run, self._encode_batch, chunked.texts
                    )
                    write_pending()
                    pending = chunked
                elif progress is not None:
                    progress.update(len(taken))

            try:
                for position, document in enumerate(as_documents(documents)):
                    validate_document(document, f"document {position + 1}")
                    batch.pop(document.id, None)
                    batch[document.id] = document
                    if len(batch) >= self.batch_documents:
                        flush()
            finally:
                # Documents read before a bad one are valid: commit them, then let the error through.
                if not store_failed:
                    if batch:
                        flush()
                    write_pending()
                if marked and not store_failed:
                    # The keyword index is saved once per call, not per batch: it is rewritten whole.
                    with self.write_lock():
                        self._end_write()
                self.last_add = {"written": written, "unchanged": unchanged}
        return written

    def _existing_chunk_ids(self, doc_ids: Sequence[str]) -> dict[str, list[str]]:
        heads = self._get_payloads([chunk_id(d, 0) for d in doc_ids])
        wanted = set(doc_ids)
        return {
            payload["doc_id"]: [chunk_id(payload["doc_id"], i) for i in range(payload["chunks"])]
            for payload in heads.values()
            if payload["doc_id"] in wanted
        }

    def _chunk_batch(self, documents: list[Document], digests: Mapping[str, str]) -> _ChunkedBatch:
        chunked = _ChunkedBatch(doc_ids={d.id for d in documents})
        for document, chunks in zip(documents, self.chunker.split_many([d.text for d in documents])):
            for chunk in chunks:
                chunked.ids.append(chunk_id(document.id, chunk.index))
                chunked.texts.append(chunk.text)
                chunked.payloads.append(
                    {
                        "doc_id": document.id,
                        "chunk": chunk.index,
                        "chunks": len(chunks),
                        "start": chunk.start,
                        "end": chunk.end,
                        "text": chunk.text,
                        "metadata": dict(document.metadata),
                        "content_hash": digests[document.id],
                    }
                )
        return chunked

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._stage("ingest_encode"):
            return self.encoder.encode_documents(texts)

    def _store_batch(self, chunked: _ChunkedBatch, vectors: np.ndarray) -> int:
        """Under write_lock: the chunks stored for these documents are read here, not when the batch was chunked,
        since another write may have replaced them meanwhile."""
        existing = self._existing_chunk_ids(sorted(chunked.doc_ids))
        ids, texts, payloads = chunked.ids, chunked.texts, chunked.payloads
        new_ids = set(ids)
        stale = [cid for cids in existing.values() for cid in cids if cid not in new_ids]
        # First chunks last: a crash inside the upsert (split into several calls on some stores) leaves no
        # first chunk without its siblings, so a rerun never skips a half-written document as unchanged.
        order = sorted(range(len(ids)), key=lambda i: payloads[i]["chunk"] == 0)
        ids, texts, payloads = [ids[i] for i in order], [texts[i] for i in order], [payloads[i] for i in order]
        vectors = vectors[order]
        # New chunks first, then stale ones: a crash in between leaves extra chunks, never a lost document.
        self.store.upsert(ids, vectors, payloads)
        self.keyword.add(ids, texts)
        if stale:
            self.store.delete(stale)
            self.keyword.delete(stale)
        # Counted in memory; add() writes the manifest once at the end (a crash before then leaves the
        # collection marked mid-write, and the next open recounts).
        counts = self.manifest["counts"]
        counts["documents"] += len(chunked.doc_ids) - len(existing)
        counts["chunks"] += len(ids) - sum(len(c) for c in existing.values())
        return len(chunked.doc_ids)

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove documents (every chunk, from both signals); unknown ids are ignored. Returns how many existed."""
        doc_ids = _as_id_list(doc_ids)
        with self.write_lock():
            return self._delete(doc_ids)

    def _delete(self, doc_ids: list[str]) -> int:
        existing = self._existing_chunk_ids(doc_ids)
        chunk_ids = [cid for cids in existing.values() for cid in cids]
        if chunk_ids:
            self._begin_write()
            self.store.delete(chunk_ids)
            self.keyword.delete(chunk_ids)
            counts = self.manifest["counts"]
            counts["documents"] -= len(existing)
            counts["chunks"] -= len(chunk_ids)
            self._end_write()
        return len(existing)

    def delete_matching(self, filter: Mapping[str, Any]) -> int:
        """Remove every document whose metadata matches the portable ``filter``; returns how many."""
        portable_filters.validate(filter)
        matches = portable_filters.compile(filter)
        with self.write_lock():
            doc_ids = [
                payload["doc_id"]
                for _, payloads in self._scan_payloads()
                for payload in payloads
                if payload["chunk"] == 0 and matches(payload["metadata"])
            ]
            return self._delete(doc_ids)

    # ------------------------------------------------------------ reading

    def count(self) -> int:
        """Number of documents."""
        return int(self.manifest["counts"]["documents"])

    def count_chunks(self) -> int:
        return self.store.count()

    def get(self, doc_ids: Sequence[str]) -> list[Document]:
        """The stored documents among ``doc_ids``, in the order asked, rebuilt from their chunks."""
        doc_ids = _as_id_list(doc_ids)
        existing = self._existing_chunk_ids(doc_ids)
        payloads = self._get_payloads([cid for cids in existing.values() for cid in cids])
        documents = []
        for doc_id in doc_ids:
            if doc_id not in existing:
                continue
            parts = [payloads[cid] for cid in existing[doc_id] if cid in payloads]
            text = join_chunks([(p["start"], p["end"], p["text"]) for p in parts])
            documents.append(Document(doc_id, text, dict(parts[0]["metadata"])))
        return documents

    def documents(self, batch_size: int = 1000) -> Iterator[Document]:
        """Every stored document once (for reindexing and export)."""
        for _, payloads in self._scan_payloads(batch_size):
            heads = [p["doc_id"] for p in payloads if p["chunk"] == 0]
            yield from self.get(heads)

    def _get_payloads(self, ids: Sequence[str]) -> dict[str, Payload]:
        found: dict[str, Payload] = {}
        for start in range(0, len(ids), GET_BATCH):
            for key, (_, payload) in self.store.get(ids[start : start + GET_BATCH]).items():
                found[key] = payload
        return found

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str = "hybrid",
        filter: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        chunks: bool = False,
    ) -> list[Hit]:
        """Best ``k`` documents (or chunks) for ``query``.

        ``min_score`` is a floor on the dense cosine similarity: a query that
        nothing passes returns []. In hybrid mode keyword-only matches are kept
        (an exact identifier has no meaningful cosine).
        """
        if not isinstance(query, str) or not query.strip():
            raise VecguardError("query must be a non-empty string")
        if problem := unicode_problem(query):
            raise VecguardError(f"query {problem}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise VecguardError(f"k must be a whole number >= 1, got {k!r}")
        if mode not in MODES:
            raise VecguardError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if min_score is not None:
            if mode == "keyword":
                raise VecguardError("min_score is a floor on the dense cosine; keyword mode has no cosine to compare")
            if not isinstance(min_score, (int, float)) or isinstance(min_score, bool) or math.isnan(min_score):
                raise VecguardError(f"min_score must be a cosine similarity like 0.3, got {min_score!r}")
        if filter:
            portable_filters.validate(filter)
        depth = max(k, self.config.fusion_depth)

        ranked: dict[str, RankedList] = {}
        payloads: dict[str, Payload] = {}
        if mode in ("hybrid", "dense"):
            with self._stage("encode"):
                vector = self.encoder.encode_queries([query])[0]
            with self._stage("dense"):
                dense = self._dense_search(vector, depth, filter or None, payloads)
            if dense and self.instrument is not None:
                self.instrument.observe("top1_cosine", dense[0][1])
            if min_score is not None:
                dense = [(i, s) for i, s in dense if s >= min_score]
            ranked["dense"] = dense
        with self._stage("keyword"):
            if mode == "hybrid":
                # Identifier routing: chunks that hold an identifier of the query verbatim rank first
                # (ordered among themselves by the fused score): neither fusion keeps an exact hit first.
                ranked["identifier"] = self._keyword_ranked(query, depth, filter, self.keyword.exact_matches)
            if mode in ("hybrid", "keyword"):
                ranked["keyword"] = self._keyword_ranked(query, depth, filter, self.keyword.search)

        try:
            return self._fused_hits(ranked, payloads, mode, k, chunks)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A stored payload of the wrong shape, named; anything else is a bug and goes through as it is.
            raise integrity.malformed_payload(self.where, payloads) or exc from exc

    def _fused_hits(
        self, ranked: dict[str, RankedList], payloads: dict[str, Payload], mode: str, k: int, chunks: bool
    ) -> list[Hit]:
        with self._stage("fuse"):
            payloads.update(
                self._get_payloads(sorted({i for hits in ranked.values() for i, _ in hits} - payloads.keys()))
            )
            # In document mode a document shows the chunk holding the identifier, else its best dense, else keyword chunk.
            representative: dict[str, str] = {}
            if not chunks:
                ranked = {signal: _collapse(hits, payloads, representative) for signal, hits in ranked.items()}

            if mode == "hybrid":
                identifier = ranked.pop("identifier")
                fused = self.fuser.fuse(ranked, self.config.fusion_weights)
                exact = {key: SignalEvidence(rank, score) for rank, (key, score) in enumerate(identifier, start=1)}
                scored = [(f.id, f.score, {**f.signals, "identifier": exact[f.id]}) for f in fused if f.id in exact]
                scored += [(f.id, f.score, f.signals) for f in fused if f.id not in exact]
            else:
                ((signal, hits),) = ranked.items()
                scored = [(i, s, {signal: SignalEvidence(r, s)}) for r, (i, s) in enumerate(hits, start=1)]

        results = []
        for key, score, signals in scored[:k]:
            chunk_key = representative.get(key, key)
            payload = payloads[chunk_key]
            results.append(
                Hit(
                    id=payload["doc_id"] if not chunks else key,
                    score=float(score),
                    text=payload["text"],
                    metadata=dict(payload["metadata"]),
                    signals=dict(signals),
                    chunk=payload["chunk"],
                    start=payload["start"],
                    end=payload["end"],
                )
            )
        return results

    def _dense_search(
        self,
        vector: np.ndarray,
        depth: int,
        filter: Mapping[str, Any] | None,
        payloads: dict[str, Payload],
    ) -> RankedList:
        """The store's best ``depth`` chunks, collecting their payloads when the store returns them in the same call."""
        with_payloads = self.store.search_with_payloads if isinstance(self.store, SearchesWithPayloads) else None
        if with_payloads is None:
            hits = self.store.search(vector, depth, filter)
        else:
            hits = []
            for key, score, payload in with_payloads(vector, depth, filter):
                hits.append((key, score))
                payloads[key] = payload
        # Identical chunks tie exactly; break ties by id so every backend ranks them alike.
        return sorted(hits, key=lambda pair: (-pair[1], pair[0]))

    def _keyword_ranked(
        self,
        query: str,
        depth: int,
        filter: Mapping[str, Any] | None,
        search: Callable[[str, int], RankedList],
    ) -> RankedList:
        """``search``'s best ``depth`` chunks that pass ``filter`` (checked on stored payloads)."""
        if not filter:
            return search(query, depth)
        wanted, matches = depth * 4, portable_filters.compile(filter)
        while True:
            candidates = search(query, wanted)
            payloads = self._get_payloads([i for i, _ in candidates])
            try:
                kept = [(i, s) for i, s in candidates if i in payloads and matches(payloads[i]["metadata"])]
            except (KeyError, TypeError, AttributeError) as exc:
                raise integrity.malformed_payload(self.where, payloads) or exc from exc
            if len(kept) >= depth or len(candidates) < wanted:
                return kept[:depth]
            wanted *= 4

    def info(self) -> dict[str, Any]:
        identity = self.manifest.get("encoder", {})
        return {
            "config": self.config.source,
            "store": self.store_plugin,
            "documents": self.count(),
            "chunks": self.store.count(),
            "manifest_id": self.manifest.get("id"),
            "encoder": {
                k: identity.get(k)
                for k in (
                    "plugin",
                    "name",
                    "revision",
                    "fingerprint",
                    "dimension",
                    "normalized",
                    "max_seq_length",
                    "pooling",
                    "precision",
                )
            },
            "metric": self.manifest.get("metric"),
            "chunking": self.manifest.get("chunking"),
            "keyword": self.manifest.get("keyword"),
            "libraries": self.manifest.get("libraries"),
            "created_at": self.manifest.get("created_at"),
            "guard": self.guard_report.status if self.guard_report else "new collection",
        }


def store_folder(config: Config) -> Path | None:
    """The folder a store keeps the collection in (``[store] path``); None for a server or ":memory:"."""
    path = config.section("store").get("path")
    if path is None or str(path).startswith(":"):
        return None
    return resolve_path(path, config.base_dir, "[store]")


def _server_location(plugin: str, options: Mapping[str, Any]) -> str:
    """How messages name a collection that lives in a server, or only in memory."""
    server = options.get("url") or (f"{options['host']}:{options.get('port', '')}" if options.get("host") else None)
    collection = options.get("collection")
    place = f"{plugin} collection {collection!r}" if collection else f"the {plugin} collection"
    return f"{place} at {server}" if server else f"{place} in memory"


def _collapse(hits: RankedList, payloads: Mapping[str, Payload], representative: dict[str, str]) -> RankedList:
    """Chunk hits -> document hits, best chunk first; records each document's first-seen chunk."""
    seen: set[str] = set()
    collapsed = []
    for key, score in hits:
        doc_id = payloads[key]["doc_id"]
        if doc_id not in seen:
            seen.add(doc_id)
            collapsed.append((doc_id, score))
            representative.setdefault(doc_id, key)
    return collapsed


def content_hash(document: Document) -> str:
    """What a rerun compares to skip a stored document: its text and metadata (not its id)."""
    return hashlib.sha256(canonical_json({"text": document.text, "metadata": document.metadata}).encode()).hexdigest()[
        :32
    ]


def validate_document(document: Document, where: str) -> None:
    """Raise DocumentError naming ``where`` (a position or a file line) and the bad field."""
    if not isinstance(document.id, str) or not document.id.strip():
        raise DocumentError(f"{where}: 'id' must be a non-empty string, got {document.id!r:.60}")
    if problem := unicode_problem(document.id):
        raise DocumentError(f"{where}: 'id' {problem}")
    where = f"{where} (id {document.id!r})"
    if not isinstance(document.text, str) or not document.text.strip():
        raise DocumentError(f"{where}: 'text' must be non-empty text, got {document.text!r:.60}")
    if problem := unicode_problem(document.text):
        raise DocumentError(f"{where}: 'text' {problem}")
    if not isinstance(document.metadata, Mapping):
        raise DocumentError(
            f"{where}: 'metadata' must be an object of flat values, got {type(document.metadata).__name__}"
        )
    for key, value in document.metadata.items():
        if not isinstance(key, str) or not key or key.startswith("$") or unicode_problem(key):
            raise DocumentError(
                f"{where}: metadata key {key!r:.60} must be a non-empty string of valid Unicode not starting with '$'"
            )
        if not isinstance(value, (str, int, float, bool)) or (isinstance(value, float) and not math.isfinite(value)):
            raise DocumentError(
                f"{where}: metadata {key!r} is {type(value).__name__} {value!r:.60}; values must be strings, "
                f"finite numbers or bools (flatten lists and objects into several keys)"
            )
        if isinstance(value, str) and (problem := unicode_problem(value)):
            raise DocumentError(f"{where}: metadata {key!r} {problem}")
    canonical_json(document.metadata)  # fails loudly on anything JSON cannot hold


def _as_id_list(ids: Sequence[str] | str) -> list[str]:
    if isinstance(ids, str):
        return [ids]
    ids = list(ids)
    for value in ids:
        if not isinstance(value, str):
            raise VecguardError(f"ids must be strings, got {type(value).__name__} {value!r}")
    return ids

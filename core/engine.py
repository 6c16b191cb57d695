"""The engine: the public facade over one collection, its ingest runs and its searches.

``Engine`` wires the parts a config builds (store, encoder, keyword index,
fuser, chunker) and hands each call to the object that owns the work:
``Collection`` (core/collection.py: the store, the manifest and the keyword
index, and their repair), ``Ingest`` (core/ingest.py: one ``add``) and
``Query`` (core/query.py: one ``search``). The version guard runs at open.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import filters as portable_filters
from . import guard, integrity, swap
from .chunking import TokenChunker
from .collection import Collection, chunk_id
from .config import Config, load_config, resolve_path
from .errors import CollectionNotFoundError, InvalidArgumentError, StorageError
from .ingest import Ingest, content_hash, validate_document
from .probes import query_like_probes
from .protocols import (
    DeclaresBatchSize,
    Document,
    Encoder,
    Fuser,
    Hit,
    Instrument,
    KeywordIndex,
    MaintainsIndex,
    TunesOnQueries,
    VectorStore,
)
from .query import MODES, Query
from .read_write_lock import ReadWriteLock
from .registry import Registry
from .store_keywords import keyword_signal

__all__ = [
    "MODES",
    "Components",
    "Engine",
    "Parts",
    "build_parts",
    "chunk_id",
    "content_hash",
    "open",
    "store_folder",
    "validate_document",
]

log = logging.getLogger(__name__)

MIN_BATCH_DOCUMENTS = 64  # documents per add() batch under batch_documents = "auto", unless the encoder batch is larger


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


@dataclass
class Components:
    """Everything a config builds besides the store: what decides vectors, chunks and keyword scores."""

    encoder: Encoder
    keyword: KeywordIndex
    fuser: Fuser
    chunker: TokenChunker

    def live_settings(self) -> dict[str, Any]:
        """The settings the version guard compares with a collection's manifest."""
        metric = "cosine" if self.encoder.identity().normalized else "inner_product"
        return {"metric": metric, "chunking": self.chunker.settings(), "keyword": self.keyword.settings()}

    def check(self, manifest: Mapping[str, Any], guard_table: Mapping[str, Any]) -> guard.GuardReport:
        """The version guard: does ``manifest`` describe the vector space these components produce?"""
        return guard.check_compatibility(
            manifest,
            self.encoder,
            min_mean_cosine=guard_table["min_mean_cosine"],
            min_cosine=guard_table["min_cosine"],
            **self.live_settings(),
        )


Parts = Components  # the name before 0.2; kept for one release


def build_parts(config: Config, registry: Registry, *, encoder: Encoder | None = None) -> Components:
    """Build the config's encoder (unless one built from the same [encoder] table is given), keyword index,
    fuser and chunker."""
    base = config.base_dir
    encoder = encoder or registry.build("encoder", *config.plugin_options("encoder"), base)
    fuser: Fuser = registry.build("fuser", *config.plugin_options("fusion", engine_keys=("depth", "weights")), base)
    chunking = config.section("chunking")
    return Components(
        encoder,
        new_keyword_index(config, registry),
        fuser,
        TokenChunker(encoder, chunking["tokens"], chunking["overlap"]),
    )


def new_keyword_index(config: Config, registry: Registry) -> KeywordIndex:
    """An empty keyword index with the config's settings."""
    return registry.build("keyword", *config.plugin_options("keyword", engine_keys=("path",)), config.base_dir)


class Engine:
    """Hybrid search over one collection. Use as a context manager or call ``close()``.

    ``check_guard=False`` opens without comparing the encoder with the manifest (a re-embed reads its source
    so); ``open_unfinished`` opens a migration's target; ``create=False`` refuses where no collection exists;
    ``repair=False`` records what opening would have repaired in ``open_problems`` instead (`vecguard check`).
    """

    def __init__(
        self,
        config: Config,
        *,
        registry: Registry | None = None,
        check_guard: bool = True,
        open_unfinished: bool = False,
        parts: Components | None = None,
        create: bool = True,
        repair: bool = True,
    ) -> None:
        self.config = config
        self.registry = registry or Registry.discover()
        self.instrument: Instrument | None = None
        # Held while a write changes the collection, never while it encodes: a host that searches from other
        # threads meanwhile (the server) sets it to its lock's writing side, so searches wait only for that. The
        # collection's own lock across processes is taken outside it (``writing``).
        self.write_lock: Callable[[], AbstractContextManager[Any]] = nullcontext
        # Held by every read after it caught up (search, get, count, documents, ids_matching): set with write_lock
        # to the two sides of one lock by share_between_threads(). The server holds its own read lock instead.
        self.read_lock: Callable[[], AbstractContextManager[Any]] = nullcontext
        # Reads catch up with other processes' writes first; a host that holds its read lock around a search sets
        # it False and calls refresh() before taking that lock (catching up takes the write side).
        self.refresh_before_reads = True
        self.store_plugin, store_options = config.plugin_options("store")
        folder = store_folder(config)
        where = str(folder) if folder is not None else _server_location(self.store_plugin, store_options)
        # Neither a folder nor a server: the store starts empty every time, so there is nothing to find.
        in_memory = folder is None and not (store_options.get("url") or store_options.get("host"))
        if folder is not None:
            swap.finish_interrupted(folder)  # a reindex killed between its renames is finished before anything reads
            if not create and not folder.exists():
                raise CollectionNotFoundError(
                    f"{config.source}: there is no collection at {folder} ([store] path); build one with "
                    f"`vecguard index --config {config.source} DOCUMENTS`, or fix the path",
                    location=str(folder),
                )
        try:
            store: VectorStore = self.registry.build("store", self.store_plugin, store_options, config.base_dir)
        except OSError as exc:
            raise StorageError(
                f"{config.source}: cannot open the collection at {where}: {exc.strerror or exc}"
                f"{f' ({exc.filename})' if exc.filename else ''}; "
                f"give [store] a folder that can be created and written",
                location=where,
            ) from exc
        try:
            parts = parts or build_parts(config, self.registry)
            self.encoder, self.fuser, self.chunker = parts.encoder, parts.fuser, parts.chunker
            self.batch_documents = self._batch_documents(config.section("chunking")["batch_documents"])
            self.last_add = {"written": 0, "unchanged": 0}  # what the last add() wrote and skipped as already stored
            self.collection = Collection(
                store,
                keyword_signal(store, parts.keyword),
                where=where,
                keyword_dir=_keyword_dir(config),
                new_keyword_index=lambda: new_keyword_index(config, self.registry),
                repair=repair,
                lock_timeout=float(config.section("store")["lock_timeout"]),
            )
            if isinstance(store, TunesOnQueries):  # its ANN index is tuned on what queries look like
                store.probe_with(functools.partial(query_like_probes, self.encoder))
            self.guard_report: guard.GuardReport | None = None
            self._open(check_guard=check_guard, open_unfinished=open_unfinished, create=create, in_memory=in_memory)
        except BaseException:
            store.close()
            raise

    def _open(self, *, check_guard: bool, open_unfinished: bool, create: bool, in_memory: bool) -> None:
        collection = self.collection
        if not collection.read(self.config.source, create=create, in_memory=in_memory):
            collection.create(
                guard.build_manifest(self.encoder, store_plugin=self.store_plugin, **self._components().live_settings())
            )
            collection.settle()
            return
        if not open_unfinished:
            collection.refuse_unfinished_migration(self.config.source)
        if check_guard:
            self.guard_report = self.check()
            guard.enforce(self.guard_report, self.config.tables["guard"]["mode"], self.config.source)
        collection.settle()

    # ------------------------------------------------------------ what the collection owns, read through

    @property
    def store(self) -> VectorStore:
        return self.collection.store

    @property
    def keyword(self) -> KeywordIndex:
        return self.collection.keyword

    @property
    def manifest(self) -> dict[str, Any]:
        return self.collection.manifest

    @property
    def state(self) -> dict[str, Any]:
        """Transient marks in the manifest: ``writing`` (a write in progress), ``migration`` (a copy in progress)."""
        return self.collection.state

    @property
    def where(self) -> str:
        """How messages name the collection: its folder, or its server and name."""
        return self.collection.where

    @property
    def keyword_where(self) -> str:
        return self.collection.keyword_where

    @property
    def open_problems(self) -> list[str]:
        """Problems that open would have repaired, found with repair=False (`vecguard check` reports them)."""
        return self.collection.open_problems

    # ------------------------------------------------------------ lifecycle and upkeep

    def _components(self) -> Components:
        return Components(self.encoder, self.keyword, self.fuser, self.chunker)

    def repair(self) -> None:
        """Bring the collection back in step from its stored chunks alone (orphans, keyword index, counts)."""
        with self.writing():
            self.collection.repair()

    def finish_migration(self, *, rebuild: bool) -> None:
        """Make a migrated collection whole once every point is in; its mark stays until ``complete_migration``,
        so a run killed while verifying the copy is finished by the same command (``vecguard.migrate`` calls both).
        """
        self.collection.finish_migration(rebuild=rebuild)

    def complete_migration(self) -> None:
        """Clear a migration's mark: from now on the collection opens anywhere."""
        self.collection.complete_migration()

    def check_integrity(self) -> list[str]:
        """Every problem with the collection's files and records, each naming where (what `vecguard check` runs
        after the guard); reads the whole collection once. [] when it is sound."""
        return integrity.problems(self.collection)

    def check(self, manifest: Mapping[str, Any] | None = None) -> guard.GuardReport:
        """Compare the collection's manifest (or another one) with this engine's encoder and settings.

        What `vecguard check` runs; `vecguard migrate` also checks a copy's manifest against its source's encoder.
        """
        components = self._components()
        return components.check(self.manifest if manifest is None else manifest, self.config.tables["guard"])

    def optimize(self) -> dict[str, Any] | None:
        """Have the store rebuild its index from every stored vector now (what `vecguard optimize` runs).

        Returns what the store built and measured, or None when the store keeps its own index.
        """
        if not isinstance(self.store, MaintainsIndex):
            return None
        report = self.store.optimize()
        self._record_index_report()
        return report

    def recall(self) -> dict[str, Any] | None:
        """The ANN index's recall@10 against exact search as last measured (``value``, ``queries``, ``measured_on``):
        on the queries it served, by the store itself (``TunesOnQueries``), else by the last `vecguard eval --exact`;
        None when nothing measured it. What `vecguard serve` exports as vecguard_recall_at_k."""
        if self.collection.tunes_on_queries:
            served = self.store.served_recall()  # type: ignore[attr-defined]
            if served:
                return {
                    "value": served["recall_at_10"],
                    "queries": served["queries"],
                    "measured_on": "served queries",
                    "measured_at": served.get("measured_at"),
                }
        measured = (self.manifest.get("measurements") or {}).get("recall")
        if isinstance(measured, dict) and isinstance(measured.get("value"), (int, float)):
            return {**measured, "measured_on": "vecguard eval --exact"}
        return None

    def _record_index_report(self) -> None:
        measured = self.store.index_report() if isinstance(self.store, MaintainsIndex) else None
        if measured:
            self.collection.record_measurement("index", measured)

    def close(self) -> None:
        try:
            self._record_index_report()
        finally:
            self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ several processes

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the collection for one write: its lock across processes (waiting up to ``[store] lock_timeout``;
        this process's searches go on meanwhile), then the host's write lock, then catch up with what other
        processes committed, so the write starts from the collection as it is."""
        with self.collection.locked(), self.write_lock():
            self.collection.catch_up()
            yield

    def refresh(self) -> bool:
        """Catch up with what other processes committed since this one last looked (the manifest and its counts,
        the keyword index; the store keeps its own index current). One cheap read when nothing changed; True
        when something had."""
        if not self.collection.behind():
            return False
        with self.write_lock():
            self.collection.catch_up()
        return True

    def _fresh(self) -> None:
        if self.refresh_before_reads:
            self.refresh()

    def share_between_threads(self) -> None:
        """Let several threads of this process use the engine at once (what the framework integrations do:
        LangChain runs async calls in threads): reads run together, and a write holds them off only while it
        changes the collection, never while it encodes. Catching up with other processes' writes takes the write
        side, before a read takes its own."""
        lock = ReadWriteLock()
        self.write_lock, self.read_lock = lock.writing, lock.reading

    # ------------------------------------------------------------ writing

    def _batch_documents(self, setting: int | str) -> int:
        """Documents per batch; "auto": 64, or enough to fill one pass of a larger encoder batch (a GPU's 512:
        on an H200, fp32 ingest went from 1,158 to 1,391 chunks/s, results/ingest_device-cuda.md)."""
        if setting != "auto":
            return int(setting)
        encoder_batch = self.encoder.batch_size if isinstance(self.encoder, DeclaresBatchSize) else 0
        return max(MIN_BATCH_DOCUMENTS, encoder_batch)

    def add(self, documents: Iterable[Document | Mapping[str, Any]], *, progress: Any = None) -> int:
        """Chunk, encode and store documents in batches; return how many were written.

        ``documents`` may be any iterable, a generator over a file included: memory holds at most three batches
        (``[chunking] batch_documents``), one read, one encoded in a background thread, one written. Batches are
        committed in order. Re-adding an id replaces all of its chunks; a document stored with the same text and
        metadata is skipped without encoding (``last_add`` counts both). A malformed document raises
        DocumentError after every document before it has been committed.
        """
        run = Ingest(
            self.collection,
            self.encoder,
            self.chunker,
            batch_documents=self.batch_documents,
            write_lock=self.writing,
            instrument=self.instrument,
            progress=progress,
        )
        try:
            return run(documents)
        finally:
            self.last_add = {"written": run.written, "unchanged": run.unchanged}

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove documents (every chunk, from both signals); unknown ids are ignored. Returns how many existed."""
        doc_ids = _as_id_list(doc_ids)
        with self.writing():
            deleted = self.collection.delete_documents(doc_ids)
            self.collection.finish_writes()
        return deleted

    def delete_matching(self, filter: Mapping[str, Any]) -> int:
        """Remove every document whose metadata matches the portable ``filter``; returns how many."""
        portable_filters.validate(filter)
        with self.writing():
            deleted = self.collection.delete_documents(self.collection.matching_documents(filter))
            self.collection.finish_writes()
        return deleted

    # ------------------------------------------------------------ reading

    def count(self) -> int:
        """Number of documents."""
        self._fresh()
        with self.read_lock():
            return int(self.manifest["counts"]["documents"])

    def count_chunks(self) -> int:
        with self.read_lock():
            return self.store.count()

    def get(self, doc_ids: Sequence[str]) -> list[Document]:
        """The stored documents among ``doc_ids``, in the order asked, rebuilt from their chunks."""
        doc_ids = _as_id_list(doc_ids)
        with self.read_lock():
            return self.collection.documents(doc_ids)

    def ids_matching(self, filter: Mapping[str, Any]) -> list[str]:
        """The ids of every document whose metadata matches the portable ``filter`` (no query, no ranking)."""
        portable_filters.validate(filter)
        self._fresh()
        with self.read_lock():
            return self.collection.matching_documents(filter)

    def documents(self, batch_size: int = 1000) -> Iterator[Document]:
        """Every stored document once (for reindexing and export); the read lock is held per batch, never while
        the caller handles what was yielded."""
        batches = self.collection.scan_payloads(batch_size)
        while True:
            with self.read_lock():
                batch = next(batches, None)
                if batch is None:
                    return
                found = self.collection.documents([p["doc_id"] for p in batch[1] if p["chunk"] == 0])
            yield from found

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
        self._fresh()
        run = Query(
            self.collection,
            self.encoder,
            self.fuser,
            depth=self.config.fusion_depth,
            weights=self.config.fusion_weights,
            instrument=self.instrument,
        )
        with self.read_lock():
            return run(query, k, mode, filter, min_score, chunks)

    def info(self) -> dict[str, Any]:
        self._fresh()
        identity = self.manifest.get("encoder", {})
        encoder_keys = (
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
        return {
            "config": self.config.source,
            "store": self.store_plugin,
            "documents": self.count(),
            "chunks": self.store.count(),
            "manifest_id": self.manifest.get("id"),
            "encoder": {k: identity.get(k) for k in encoder_keys},
            "metric": self.manifest.get("metric"),
            "chunking": self.manifest.get("chunking"),
            "keyword": self.manifest.get("keyword"),
            "libraries": self.manifest.get("libraries"),
            "created_at": self.manifest.get("created_at"),
            "guard": self.guard_report.status if self.guard_report else "new collection",
            "recall": self.recall(),
        }


def _keyword_dir(config: Config) -> Path | None:
    """Where the keyword index is kept: ``[keyword] path``, else ``keyword/`` in the store's folder (None: neither)."""
    keyword_path = config.section("keyword").get("path")
    if keyword_path is not None:
        return resolve_path(keyword_path, config.base_dir, "[keyword]")
    folder = store_folder(config)
    return folder / "keyword" if folder is not None else None


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


def _as_id_list(ids: Sequence[str] | str) -> list[str]:
    if isinstance(ids, str):
        return [ids]
    ids = list(ids)
    for value in ids:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"ids must be strings, got {type(value).__name__} {value!r}")
    return ids

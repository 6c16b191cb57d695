"""Move a collection between backends without re-embedding, resumably, and prove the copy answers the same.

Copy (the default) streams the source store's ``scan()`` into the target
store's ``upsert()``: vectors, ids, chunk texts, metadata and the manifest
travel as they are; the keyword index is built from the copied texts as they
stream, with the recorded settings (tokenising, no encoding), unless the target
keeps the keyword signal itself (Qdrant weighs each point as it is written). Before anything is written,
the target config's encoder and settings must accept the source's manifest.

Resuming: the target's manifest carries ``state.migration`` with the number of
points committed, updated after every batch. ``scan`` visits an unchanged
store in a fixed order, so a rerun skips that many points and re-upserts at
most one batch (upserts replace by id: nothing is duplicated). A collection
marked mid-migration refuses to open anywhere else, so a partial copy never
answers queries.

Re-embed (``reembed=True``) is the blue/green path for a model change: every
stored document is encoded with the target config's encoder into a new, empty
collection; the old one is left as it was and the switch is the user's.

The proof that the result answers like its source is core/verification.py.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import guard
from .collection import Collection
from .config import Config, load_config
from .engine import Components, Engine, build_parts, store_folder
from .errors import CompatibilityError, StorageError, VecguardError
from .evaluate import Qrels, evaluate
from .faults import kill_point
from .protocols import Document, VectorStore
from .registry import Registry
from .store_keywords import keyword_signal
from .verification import VECTOR_SAMPLE, Check, Sample, scan_batches, verify_copy, verify_reembed

log = logging.getLogger(__name__)

ConfigSource = str | Path | Mapping[str, Any] | Config


@dataclass
class MigrationReport:
    mode: str
    """"copy", "reembed" or "verify"."""
    source: str
    target: str
    total: int = 0
    """Points (copy) or documents (reembed) in the source."""
    resumed_from: int = 0
    written: int = 0
    """Points or documents written by this run."""
    batches: int = 0
    copy_seconds: float = 0.0
    finish_seconds: float = 0.0
    verify_seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def rate(self) -> float:
        """Points (or documents) per second while copying."""
        return self.written / self.copy_seconds if self.copy_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["rate"] = self.rate
        return data


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def migrate(
    source: ConfigSource,
    target: ConfigSource,
    *,
    batch_size: int = 1000,
    verify_queries: int = 50,
    into_existing: bool = False,
    reembed: bool = False,
    queries: Mapping[str, str] | None = None,
    qrels: Qrels | None = None,
    progress: Any = None,
    registry: Registry | None = None,
) -> MigrationReport:
    """Copy (or, with ``reembed``, re-encode) the collection of ``source`` into ``target`` and verify it.

    ``batch_size`` is points per batch when copying; re-embedding batches
    documents as the target's [chunking] batch_documents says.
    ``progress`` gets ``update(n)`` after each committed batch (a tqdm bar
    works); ``total`` is set on it when it has that attribute. ``queries`` and
    ``qrels`` (see ``vecguard.evaluate``) score old against new when re-embedding.
    Raises a VecguardError before writing when the target cannot take the
    source; a failure part way names the batch, and the same call resumes.
    """
    source_config, target_config = load_config(source), load_config(target)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise VecguardError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if not isinstance(verify_queries, int) or isinstance(verify_queries, bool) or verify_queries < 0:
        raise VecguardError(f"verify_queries must be a whole number >= 0, got {verify_queries!r}")
    if (queries is None) != (qrels is None):
        raise VecguardError("give both queries and qrels to evaluate, or neither")
    _refuse_same_collection(source_config, target_config)
    registry = registry or Registry.discover()
    if reembed:
        return _reembed(source_config, target_config, queries, qrels, progress, registry)
    return _copy(source_config, target_config, batch_size, verify_queries, into_existing, progress, registry)


def verify(
    source: ConfigSource,
    target: ConfigSource,
    *,
    verify_queries: int = 50,
    registry: Registry | None = None,
) -> MigrationReport:
    """Prove an existing copy answers like its source (what ``vecguard migrate --verify-only`` runs)."""
    source_config, target_config = load_config(source), load_config(target)
    registry = registry or Registry.discover()
    report = MigrationReport("verify", source_config.source, target_config.source)
    with (
        Engine(source_config, registry=registry, create=False) as old,
        Engine(target_config, registry=registry, create=False) as new,
    ):
        sample = Sample(VECTOR_SAMPLE, verify_queries)
        for ids, _, payloads in scan_batches(old.store, 1000, "source"):
            sample.offer(ids, payloads)
        report.total = old.count_chunks()
        started = time.perf_counter()
        report.checks = verify_copy(old, new, sample, contains_only=False)
        report.verify_seconds = time.perf_counter() - started
    return report


def _refuse_same_collection(source: Config, target: Config) -> None:
    def where(config: Config) -> tuple[Any, ...]:
        store = config.section("store")
        folder = store_folder(config)
        location = str(folder.resolve()) if folder is not None else store.get("path")
        return (
            store.get("plugin"),
            location,
            store.get("url"),
            store.get("host"),
            store.get("port"),
            store.get("collection"),
        )

    if where(source) == where(target) and where(source)[1:] != (None,) * 5:
        raise VecguardError(
            f"{source.source} and {target.source} name the same collection; the target must be another one"
        )


# ---------------------------------------------------------------- copy


def _copy(
    source_config: Config,
    target_config: Config,
    batch_size: int,
    verify_queries: int,
    into_existing: bool,
    progress: Any,
    registry: Registry,
) -> MigrationReport:
    report = MigrationReport("copy", source_config.source, target_config.source)
    with Engine(source_config, registry=registry, create=False) as source:
        parts = _target_parts(source, target_config, registry)
        origin = _origin(source)
        report.total = origin["chunks"]
        target_store: VectorStore = registry.build(
            "store", *target_config.plugin_options("store"), target_config.base_dir
        )
        # A target that keeps the keyword signal (Qdrant) weighs each point as it is written: no index to build here.
        keywords_in_target = keyword_signal(target_store, parts.keyword) is not parts.keyword
        target = Collection(target_store, None, where=target_config.source)
        sample = Sample(VECTOR_SAMPLE, verify_queries)
        try:
            _prepare_copy_target(target, source, target_config, origin, into_existing)
            migration = target.state["migration"]
            contains_only = bool(migration.get("into_existing"))
            report.resumed_from = start = int(migration["committed"])
            if progress is not None and hasattr(progress, "total"):
                progress.total = report.total
                if start:
                    progress.update(start)
            started = time.perf_counter()
            position = 0
            for ids, vectors, payloads in scan_batches(source.store, batch_size, f"source ({source_config.source})"):
                sample.offer(ids, payloads)
                if not contains_only and not keywords_in_target:
                    # Built as the texts stream past, so the target is not rescanned at the end (tokenising only).
                    parts.keyword.add(ids, [payload["text"] for payload in payloads])
                skip = min(len(ids), max(0, start - position))
                position += len(ids)
                if skip == len(ids):
                    continue
                ids, vectors, payloads = ids[skip:], vectors[skip:], payloads[skip:]
                report.batches += 1
                committed = position - len(ids)
                try:
                    target_store.upsert(ids, vectors, payloads)
                    target.record_copied(position)
                except Exception as exc:
                    raise StorageError(
                        f"batch {report.batches} (points {committed + 1}-{position} of {report.total}) failed on the "
                        f"target {target_config.source}: {type(exc).__name__}: "
                        f"{exc}. {committed} points are committed; "
                        f"rerun the same command to resume from there"
                    ) from exc
                report.written += len(ids)
                log.info("migrate: committed %d of %d points (batch %d)", position, report.total, report.batches)
                if progress is not None:
                    progress.update(len(ids))
            report.copy_seconds = time.perf_counter() - started
            if position != report.total:
                raise StorageError(
                    f"the source yielded {position} points but counts {report.total}; it changed during the copy. "
                    f"Stop writing to it and rerun"
                )
        finally:
            target_store.close()

        started = time.perf_counter()
        with Engine(target_config, registry=registry, open_unfinished=True, parts=parts) as copy:
            # Added to a collection, replaced documents may leave orphan chunks: repair from the stored chunks.
            copy.finish_migration(rebuild=contains_only)
            report.finish_seconds = time.perf_counter() - started
            started = time.perf_counter()
            kill_point("migrate.verify")
            report.checks = verify_copy(source, copy, sample, contains_only)
            copy.complete_migration()
            report.verify_seconds = time.perf_counter() - started
    return report


def _target_parts(source: Engine, target_config: Config, registry: Registry) -> Components:
    """The target config's parts, once they are known to accept the source's manifest (else raise before writing)."""
    same_encoder = (
        source.config.tables["encoder"] == target_config.tables["encoder"]
        and source.config.base_dir == target_config.base_dir
    )
    parts = build_parts(target_config, registry, encoder=source.encoder if same_encoder else None)
    check = parts.check(source.manifest, target_config.tables["guard"])
    if check.status == "refused":
        raise (check.error or CompatibilityError)(
            f"{target_config.source} would refuse the copied collection: {'; '.join(check.reasons)}. Make its "
            f"[encoder], [chunking] and [keyword] match {source.config.source}, or re-encode with --reembed",
            reasons=check.reasons,
        )
    return parts


def _prepare_copy_target(
    target: Collection,
    source: Engine,
    target_config: Config,
    origin: dict[str, Any],
    into_existing: bool,
) -> None:
    """Mark the target mid-migration with the manifest it will carry; refuses a target that cannot take the source."""
    where, store = target_config.source, target.store
    existing = store.read_manifest()
    points = store.count()
    if existing is not None:
        migration = (existing.get("state") or {}).get("migration")
        if migration:
            if migration.get("kind") != "copy" or migration.get("source") != origin:
                raise StorageError(
                    f"{where}: the target holds an unfinished migration from another source or from this source "
                    f"before it changed (then {migration.get('source')}; "
                    f"now {origin}). Delete the target and start again"
                )
            log.info("migrate: resuming after %d of %d points", migration["committed"], origin["chunks"])
            target.resume_migration(existing)
            return
        if points:
            differences = guard.space_differences(existing, source.manifest)
            if differences:
                raise CompatibilityError(
                    f"{where}: the target already holds {points} points built differently from the source: "
                    f"{'; '.join(differences)}. Choose an empty target, or re-encode with --reembed into an empty one"
                )
            if not into_existing:
                raise StorageError(
                    f"{where}: the target already holds {points} points of a compatible collection; pass "
                    f"--into-existing to add the source's points to it, or choose an empty target"
                )
            target.begin_migration(existing, _migration_mark(origin, source.config.source, into_existing=True))
            return
    elif points:
        raise StorageError(
            f"{where}: the target holds {points} points but no vecguard manifest; choose an empty collection"
        )
    target_plugin = target_config.tables["store"]["plugin"]
    manifest = {key: value for key, value in source.manifest.items() if key != "state"}
    manifest["store"] = {"plugin": target_plugin}
    manifest["lineage"] = [
        *manifest.get("lineage", []),
        {
            "from_store": source.store_plugin,
            "from_config": source.config.source,
            "manifest_id": origin["manifest_id"],
            "copied_at": _now(),
        },
    ]
    manifest["id"] = guard.manifest_id(manifest)
    manifest["write_id"] = uuid.uuid4().hex  # the copy's own: a keyword file of the source's is not taken for its
    target.begin_migration(manifest, _migration_mark(origin, source.config.source, into_existing=False))


def _origin(source: Engine) -> dict[str, Any]:
    """What identifies the source for a resume: a rerun must find it unchanged."""
    return {
        "store": source.store_plugin,
        "manifest_id": source.manifest.get("id"),
        "chunks": source.count_chunks(),
        "documents": source.count(),
    }


def _migration_mark(
    origin: dict[str, Any], source_config: str, *, into_existing: bool, kind: str = "copy"
) -> dict[str, Any]:
    return {
        "kind": kind,
        "source": origin,
        "source_config": source_config,
        "committed": 0,
        "into_existing": into_existing,
        "started_at": _now(),
    }


# ---------------------------------------------------------------- re-embed


def _reembed(
    source_config: Config,
    target_config: Config,
    queries: Mapping[str, str] | None,
    qrels: Qrels | None,
    progress: Any,
    registry: Registry,
) -> MigrationReport:
    report = MigrationReport("reembed", source_config.source, target_config.source)
    # The source's own encoder may be the one being replaced (or gone): read its texts without the guard.
    with Engine(source_config, registry=registry, check_guard=False, create=False) as source:
        origin = _origin(source)
        report.total = origin["documents"]
        _refuse_reembed_target(target_config, origin, registry)
        with Engine(target_config, registry=registry, open_unfinished=True) as new:
            migration = new.state.get("migration")
            if migration:
                log.info("migrate: resuming a re-embed; documents already encoded are skipped")
                new.repair()  # a kill mid-batch leaves orphan chunks and a stale keyword index
            else:
                mark = _migration_mark(origin, source_config.source, into_existing=False, kind="reembed")
                new.collection.begin_migration(new.manifest, mark)
            if progress is not None and hasattr(progress, "total"):
                progress.total = report.total
            started = time.perf_counter()
            counter = _Counter()
            try:
                report.written = new.add(
                    _not_yet_encoded(source.documents(), new, counter, progress), progress=progress
                )
            except VecguardError:
                raise
            except Exception as exc:
                raise StorageError(
                    f"re-embedding stopped after {counter.done} of "
                    f"{report.total} documents: {type(exc).__name__}: {exc}; "
                    f"rerun the same command to resume"
                ) from exc
            report.resumed_from = counter.skipped
            report.batches = math.ceil(report.written / new.batch_documents) if report.written else 0
            report.copy_seconds = time.perf_counter() - started
            new.finish_migration(rebuild=False)

            started = time.perf_counter()
            kill_point("migrate.verify")
            report.checks = verify_reembed(source, new)
            if queries is not None and qrels is not None:
                report.evaluation = _evaluate_old_and_new(source, new, queries, qrels)
            new.complete_migration()
            report.verify_seconds = time.perf_counter() - started
    return report


@dataclass
class _Counter:
    """How far a re-embed got: documents read from the source, and those already encoded (skipped)."""

    done: int = 0
    skipped: int = 0


def _not_yet_encoded(
    documents: Iterable[Document], new: Engine, counter: _Counter, progress: Any
) -> Iterator[Document]:
    """Documents the new collection does not hold yet with the same text and metadata (a rerun resumes)."""
    batch: list[Document] = []

    def pending() -> Iterator[Document]:
        present = {document.id: document for document in new.get([d.id for d in batch])}
        for document in batch:
            counter.done += 1
            if present.get(document.id) == document:
                counter.skipped += 1
                if progress is not None:
                    progress.update(1)
                continue
            yield document

    for document in documents:
        batch.append(document)
        if len(batch) >= 256:
            yield from pending()
            batch = []
    yield from pending()


def _refuse_reembed_target(target_config: Config, origin: dict[str, Any], registry: Registry) -> None:
    """Re-embedding writes a new collection: never into one holding other vectors (two models never mix)."""
    plugin, options = target_config.plugin_options("store")
    store: VectorStore = registry.build("store", plugin, options, target_config.base_dir)
    try:
        existing = store.read_manifest()
        points = store.count()
    finally:
        store.close()
    if existing is None and not points:
        return
    migration = ((existing or {}).get("state") or {}).get("migration")
    if migration and migration.get("kind") == "reembed" and migration.get("source") == origin:
        return
    if points:
        raise CompatibilityError(
            f"{target_config.source}: re-embedding writes a new collection, and the target already holds {points} "
            f"points (vectors of two models must never share a collection); point the target at an empty location"
        )


def _evaluate_old_and_new(source: Engine, new: Engine, queries: Mapping[str, str], qrels: Qrels) -> dict[str, Any]:
    evaluation: dict[str, Any] = {"new": evaluate(new, queries, qrels, modes=("hybrid", "dense"))}
    old_guard = source.check()
    if old_guard.status == "refused":
        evaluation["old"] = {
            "skipped": f"the source config's encoder is refused by the old collection: {'; '.join(old_guard.reasons)}"
        }
    else:
        evaluation["old"] = evaluate(source, queries, qrels, modes=("hybrid", "dense"))
    return evaluation

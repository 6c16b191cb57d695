"""The FAISS store: inner product on normalised vectors; ids, vectors and payloads in SQLite.

Entry point of the ``faiss`` store part. Each module owns one piece of state or one rule:

    options       the ``[store] faiss`` table, checked (every option documented there)
    points        SQLite, the durable truth: points, generation, meta, manifest
    snapshot      the stored vectors at one moment, read by a build
    records       every point's [id, payload] JSON in memory; a search's hits decoded (hot path)
    filter_cache  metadata by num, and the points each recent filter lets through
    kinds         what a factory string means: IVF, HNSW, exact; search parameters
    policy        the "auto" rules: which index for n vectors, when to retrain
    build         an index built, trained and tuned from a snapshot
    tuning        nprobe / efSearch tuned to the recall target; "auto"'s choice; recall on new vectors
    index_file    index.faiss + index.json, checked on open
    live_index    the index in service: writes in place, background retraining, the swap
    search        plain, filtered and exact search planning
    store         FaissStore, the facade
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from vecguard.registry import Part, hookimpl

from .live_index import IndexState
from .options import FaissOptions, parse
from .store import FaissStore

__all__ = ["FaissOptions", "FaissStore", "IndexState", "vecguard_parts"]


def _build(options: dict[str, Any], base_dir: Path) -> FaissStore:
    path, opts = parse(options, base_dir)
    return FaissStore(path, **asdict(opts))


@hookimpl
def vecguard_parts() -> list[Part]:
    return [Part("store", "faiss", _build, extra="faiss", description="FAISS inner product + SQLite payloads")]

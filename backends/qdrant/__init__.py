"""Qdrant stores: Qdrant's own engine embedded in this process (``path``), or a Qdrant server or cluster
(``url``), with one point layout, so a collection built embedded migrates to a server and answers the same.

Options (``[store]``):
    path                    a folder: the embedded engine (qdrant-edge-py), collection in <path>/<collection>/
    url, api_key            a Qdrant server or cluster, through qdrant-client
    local_mode              with path: qdrant-client's local mode instead of the embedded engine (default false)
    collection              collection name (default "vecguard")
    exact                   exact search instead of HNSW (default false; local mode is always exact)
    hnsw_ef                 HNSW search breadth (embedded: tuned to target_recall at each measure; a server: 128)
    target_recall           embedded: the recall@10 against exact search the tuned hnsw_ef must reach (default 0.95)
    batch_size              points per upsert call (default 256)
    hnsw_m, hnsw_ef_construct, on_disk, quantization ("scalar": int8 scalar quantization, searches rescored with
                            the stored vectors; "none": float only; default "scalar" embedded, "none" on a server)
                            collection creation options
    shard_number, replication_factor, write_consistency_factor
                            collection creation options for a server
    payload_indexes         {field = "keyword" | "integer" | "float" | "bool"}: payload indexes to create
    keyword_vectors         a new collection keeps the keyword signal as sparse BM25 vectors inside Qdrant, so no
                            keyword index lives outside it (default true; false: vecguard's BM25 files)
    lock_lease              seconds a writer that died keeps the others out of a server's collection (default 15)
    query_sample            embedded: the newest served query vectors kept beside the shard (queries.sqlite3;
                            vectors, never texts) that recall is measured on (default 1000; 0: keep none)

``path = ":memory:"`` is qdrant-client's in-memory mode, for tests. Choosing among them: README "Qdrant".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vecguard.backends.base import BaseVectorStore
from vecguard.backends.sharing import COMPANION_SUFFIX, DEFAULT_LEASE, checked_lease
from vecguard.config import is_positive_int, resolve_path, take_options
from vecguard.errors import ConfigError
from vecguard.registry import Part, hookimpl

from .client import QdrantCompanion, QdrantStore
from .points import ID_KEY, INDEX_TYPES, PLAIN_KEY, point_id, to_qdrant_filter

SERVER_ONLY = ("shard_number", "replication_factor", "write_consistency_factor")
DEFAULT_EF = 128  # a server's and local mode's hnsw_ef when none is set (the embedded engine tunes its own)
_FOLDER_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _build(options: dict[str, Any], base_dir: Path) -> BaseVectorStore:
    opts = take_options(
        "[store] qdrant",
        options,
        {
            "url": None,
            "api_key": None,
            "path": None,
            "local_mode": False,
            "collection": "vecguard",
            "exact": False,
            "hnsw_ef": None,
            "target_recall": None,
            "batch_size": 256,
            "shard_number": None,
            "replication_factor": None,
            "write_consistency_factor": None,
            "on_disk": None,
            "hnsw_m": None,
            "hnsw_ef_construct": None,
            "quantization": None,
            "payload_indexes": {},
            "lock_lease": DEFAULT_LEASE,
            "keyword_vectors": None,
            "query_sample": None,
        },
    )
    if opts["url"] is not None and opts["path"] is not None:
        raise ConfigError("[store] qdrant: give either url (a server) or path (embedded), not both")
    if not isinstance(opts["local_mode"], bool):
        raise ConfigError(f"[store] qdrant local_mode must be true or false, got {opts['local_mode']!r}")
    if (
        not isinstance(opts["collection"], str)
        or not opts["collection"]
        or opts["collection"].endswith(COMPANION_SUFFIX)
    ):
        raise ConfigError(
            f"[store] qdrant collection must be a name not ending in {COMPANION_SUFFIX!r} (vecguard's name for its "
            f"lock and change records), got {opts['collection']!r}"
        )
    opts["lock_lease"] = checked_lease("[store] qdrant", opts["lock_lease"])
    _check_creation(opts)
    if opts["keyword_vectors"] not in (None, True, False):
        raise ConfigError(f"[store] qdrant keyword_vectors must be true or false, got {opts['keyword_vectors']!r}")
    opts["keyword_vectors"] = opts["keyword_vectors"] is not False
    _check_tuning(opts)
    if opts["url"] is not None or opts["path"] == ":memory:" or opts["local_mode"]:
        for key in ("query_sample", "target_recall"):
            if opts[key] is not None:
                raise ConfigError(
                    f"[store] qdrant {key} is the embedded engine's (path without local_mode): a server keeps no "
                    f"served-query sample and its hnsw_ef is not tuned; remove it"
                )
        opts["hnsw_ef"] = opts["hnsw_ef"] or DEFAULT_EF
        opts["quantization"] = opts["quantization"] or "none"  # not measured on a server: Qdrant's own default
        path = opts["path"] if opts["path"] == ":memory:" else resolve_path(opts["path"], base_dir, "[store] qdrant")
        return QdrantStore(opts, path)
    if opts["path"] is None:
        raise ConfigError('[store] qdrant needs path (the embedded engine), url (a server) or path = ":memory:"')
    return _embedded(opts, resolve_path(opts["path"], base_dir, "[store] qdrant"))


def _check_creation(opts: dict[str, Any]) -> None:
    """The creation options, payload indexes, batch size and hnsw_ef, each a ConfigError when malformed."""
    if opts["quantization"] not in (None, "scalar", "none"):
        raise ConfigError(
            f'[store] qdrant quantization must be "scalar" (int8 codes, rescored) or "none", '
            f"got {opts['quantization']!r}"
        )
    if not isinstance(opts["payload_indexes"], dict) or any(
        v not in INDEX_TYPES for v in opts["payload_indexes"].values()
    ):
        raise ConfigError(
            f"[store] qdrant payload_indexes must map fields to one of {', '.join(INDEX_TYPES)}, "
            f"got {opts['payload_indexes']!r}"
        )
    if not is_positive_int(opts["batch_size"]):
        raise ConfigError(f"[store] qdrant batch_size must be a whole number >= 1, got {opts['batch_size']!r}")
    for key in (*SERVER_ONLY, "hnsw_ef", "hnsw_m", "hnsw_ef_construct"):
        if opts[key] is not None and not is_positive_int(opts[key]):
            raise ConfigError(f"[store] qdrant {key} must be a whole number >= 1 (or absent), got {opts[key]!r}")
    if opts["on_disk"] is not None and not isinstance(opts["on_disk"], bool):
        raise ConfigError(f"[store] qdrant on_disk must be true or false, got {opts['on_disk']!r}")
    if any(not isinstance(field, str) or not PLAIN_KEY.fullmatch(field) for field in opts["payload_indexes"]):
        raise ConfigError(
            f"[store] qdrant payload_indexes keys must be metadata fields of letters, digits, '_' and '-' (the "
            f"fields a filter can name), got {sorted(map(str, opts['payload_indexes']))}"
        )


def _check_tuning(opts: dict[str, Any]) -> None:
    """The embedded engine's served-query sample and recall target, each a ConfigError when malformed."""
    sample = opts["query_sample"]
    if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool) or sample < 0):
        raise ConfigError(
            f"[store] qdrant query_sample must be a whole number >= 0 (served query vectors kept; 0: none), "
            f"got {sample!r}"
        )
    target = opts["target_recall"]
    if target is not None and (not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target <= 1):
        raise ConfigError(
            f"[store] qdrant target_recall must be a number in (0, 1], like 0.95 (recall@10 against exact search), "
            f"got {target!r}"
        )


def _embedded(opts: dict[str, Any], path: Path) -> BaseVectorStore:
    for key in SERVER_ONLY:
        if opts[key] is not None:
            raise ConfigError(
                f"[store] qdrant {key} is a server's (url); an embedded collection is one shard: remove it"
            )
    if not _FOLDER_NAME.fullmatch(opts["collection"]):
        raise ConfigError(
            f"[store] qdrant collection must be a folder name of letters, digits, '_', '-' and '.' for the embedded "
            f"engine, got {opts['collection']!r}"
        )
    if (path / "meta.json").is_file() and (path / "collection").is_dir():
        raise ConfigError(
            f"[store] qdrant path {path} holds qdrant-client local mode's files, not the embedded engine's: set "
            f"local_mode = true to keep using them, or copy them into the embedded engine with `vecguard migrate`"
        )
    from .edge import EdgeQdrantStore

    return EdgeQdrantStore(
        {
            **opts,
            "query_sample": 1000 if opts["query_sample"] is None else opts["query_sample"],
            # int8 codes, rescored: at 1M points the HNSW build took 2.4x less time, searches about as fast at the
            # same recall (benchmarks/results/qdrant_embedded.md)
            "quantization": opts["quantization"] or "scalar",
            "target_recall": float(opts["target_recall"] or 0.95),
        },
        path,
    )


@hookimpl
def vecguard_parts() -> list[Part]:
    return [
        Part("store", "qdrant", _build, extra="qdrant", description="Qdrant embedded (path) or a server (url), DOT")
    ]


__all__ = ["ID_KEY", "QdrantCompanion", "QdrantStore", "point_id", "to_qdrant_filter"]

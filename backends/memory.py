"""Exact numpy reference store: the spec every other backend is compared with.

Options (``[store]``): ``path`` (optional folder; saved on close as .npy + JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from vecguard import filters
from vecguard.atomic import write_bytes_atomically, write_json_atomically
from vecguard.backends.base import BaseVectorStore
from vecguard.config import resolve_path, take_options
from vecguard.errors import CorruptCollectionError
from vecguard.protocols import Payload, RankedList
from vecguard.registry import Part, hookimpl


class MemoryStore(BaseVectorStore):
    exact_search = True

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._payloads: list[Payload] = []
        self._manifest: dict[str, Any] | None = None
        self._changed = False
        if path is not None and (path / "points.json").exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            points = json.loads((path / "points.json").read_text(encoding="utf-8"))
            self._vectors = np.load(path / "vectors.npy", allow_pickle=False).astype(np.float32)
            manifest_path = path / "manifest.json"
            self._manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else None
            ids, payloads = list(points["ids"]), list(points["payloads"])
            if (
                len(ids) != len(payloads)
                or len(ids) != len(self._vectors)
                or not all(isinstance(p, dict) for p in payloads)
            ):
                raise ValueError(
                    f"{len(ids)} ids, {len(payloads)} payloads and {len(self._vectors)} vectors do not match"
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptCollectionError(f"memory store at {path} is unreadable: {exc}") from exc
        self._ids, self._payloads = ids, payloads
        self._position = {key: i for i, key in enumerate(self._ids)}

    def dimension(self) -> int | None:
        return self._vectors.shape[1] if len(self._ids) else None

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[Payload]) -> None:
        self._changed = True
        if not self._ids:
            self._vectors = np.zeros((0, vectors.shape[1]), dtype=np.float32)
        fresh = [i for i, key in enumerate(ids) if key not in self._position]
        for i, key in enumerate(ids):
            if key in self._position:
                row = self._position[key]
                self._vectors[row] = vectors[i]
                self._payloads[row] = dict(payloads[i])
        if fresh:
            for i in fresh:
                self._position[ids[i]] = len(self._ids)
                self._ids.append(ids[i])
                self._payloads.append(dict(payloads[i]))
            self._vectors = np.vstack([self._vectors, vectors[fresh]])

    def _delete(self, ids: list[str]) -> None:
        doomed = {self._position[key] for key in ids if key in self._position}
        if not doomed:
            return
        self._changed = True
        keep = [i for i in range(len(self._ids)) if i not in doomed]
        self._ids = [self._ids[i] for i in keep]
        self._payloads = [self._payloads[i] for i in keep]
        self._vectors = self._vectors[keep]
        self._position = {key: i for i, key in enumerate(self._ids)}

    def _get(self, ids: list[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        return {
            key: (self._vectors[self._position[key]].copy(), dict(self._payloads[self._position[key]]))
            for key in ids
            if key in self._position
        }

    def _search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None) -> RankedList:
        scores = self._vectors @ vector
        rows = np.arange(len(self._ids))
        if filter:
            matches = filters.compile(filter)
            rows = np.array([i for i in rows if matches(self._payloads[i].get("metadata", {}))], dtype=np.int64)
            if not len(rows):
                return []
        order = rows[np.lexsort((rows, -scores[rows]))][:k]
        return [(self._ids[i], float(scores[i])) for i in order]

    def _search_with_payloads(
        self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[str, float, Payload]]:
        return [
            (key, score, dict(self._payloads[self._position[key]])) for key, score in self._search(vector, k, filter)
        ]

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        for start in range(0, len(self._ids), batch_size):
            end = start + batch_size
            yield (
                list(self._ids[start:end]),
                self._vectors[start:end].copy(),
                [dict(p) for p in self._payloads[start:end]],
            )

    def count(self) -> int:
        return len(self._ids)

    def read_manifest(self) -> dict[str, Any] | None:
        return dict(self._manifest) if self._manifest is not None else None

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        self._manifest = dict(manifest)
        self._changed = True

    def close(self) -> None:
        if self._path is None or not self._changed:
            return  # a read-only open writes nothing
        import io

        buffer = io.BytesIO()
        np.save(buffer, self._vectors, allow_pickle=False)
        write_bytes_atomically(self._path / "vectors.npy", buffer.getvalue())
        write_json_atomically(self._path / "points.json", {"ids": self._ids, "payloads": self._payloads})
        if self._manifest is not None:
            write_json_atomically(self._path / "manifest.json", self._manifest)
        self._changed = False


def _build(options: dict[str, Any], base_dir: Path) -> MemoryStore:
    opts = take_options("[store] memory", options, {"path": None})
    return MemoryStore(resolve_path(opts["path"], base_dir, "[store] memory"))


@hookimpl
def vecguard_parts() -> list[Part]:
    return [Part("store", "memory", _build, description="exact numpy reference (optionally saved on close)")]

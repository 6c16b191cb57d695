"""An exact VectorStore kept in one JSON file: the smallest adapter that passes vecguard.testing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from vecguard import Part, StorageError, hookimpl
from vecguard.atomic import write_json_atomically
from vecguard.filters import matches, validate
from vecguard.protocols import check_batch, check_query


class JsonFileStore:
    def __init__(self, path: Path) -> None:
        self._file = path
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"points": {}, "manifest": None}
        self._points = {key: (np.asarray(v, dtype=np.float32), p) for key, (v, p) in data["points"].items()}
        self._manifest = data["manifest"]

    def _dimension(self):
        return next(iter(self._points.values()))[0].shape[0] if self._points else None

    def _save(self) -> None:
        points = {key: (vector.tolist(), payload) for key, (vector, payload) in self._points.items()}
        write_json_atomically(self._file, {"points": points, "manifest": self._manifest})

    def upsert(self, ids, vectors, payloads) -> None:
        vectors = check_batch(ids, vectors, payloads, self._dimension())
        for key, vector, payload in zip(ids, vectors, payloads):
            self._points[key] = (vector.copy(), json.loads(json.dumps(payload)))
        self._save()

    def delete(self, ids) -> None:
        for key in ids:
            self._points.pop(key, None)
        self._save()

    def get(self, ids):
        return {key: (self._points[key][0].copy(), dict(self._points[key][1])) for key in ids if key in self._points}

    def search(self, vector, k, filter=None):
        vector = check_query(vector, k, self._dimension())
        if filter:
            validate(filter)
        scored = [
            (key, float(stored @ vector))
            for key, (stored, payload) in self._points.items()
            if matches(filter, payload.get("metadata", {}))
        ]
        return sorted(scored, key=lambda hit: -hit[1])[:k]

    def scan(self, batch_size=1000):
        keys = list(self._points)
        for start in range(0, len(keys), batch_size):
            part = keys[start : start + batch_size]
            yield part, np.stack([self._points[k][0] for k in part]), [dict(self._points[k][1]) for k in part]

    def count(self) -> int:
        return len(self._points)

    def read_manifest(self):
        return self._manifest

    def write_manifest(self, manifest) -> None:
        self._manifest = dict(manifest)
        self._save()

    def close(self) -> None:
        pass


def build(options, base_dir):
    if set(options) - {"path"} or "path" not in options:
        raise StorageError("[store] example needs exactly one option: path (a JSON file)")
    return JsonFileStore(Path(base_dir, options["path"]))


@hookimpl
def vecguard_parts():
    return [Part("store", "example", build, description="example adapter: exact search, one JSON file")]

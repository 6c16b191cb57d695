"""The embedded Qdrant store beyond the conformance suite: its HNSW graph, its folder, its manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from vecguard import ConfigError, Registry, StorageError
from vecguard.backends.qdrant.edge import EdgeQdrantStore


def _build(options: dict, tmp_path: Path) -> EdgeQdrantStore:
    return Registry.discover().build("store", "qdrant", {"path": "qdrant", **options}, tmp_path)


def clustered(n: int, dimension: int = 32, centres: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres: what an ANN index is built for (uniform noise has no neighbours)."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, dimension))
    vectors = middle[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, dimension))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_closing_after_writes_builds_the_hnsw_graph_and_measures_its_recall(tmp_path: Path) -> None:
    vectors = clustered(4000)
    ids = [f"c{i}" for i in range(len(vectors))]
    store = _build({"hnsw_ef": 64}, tmp_path)
    assert store.index_report() is None  # nothing stored, nothing built
    store.upsert(ids, vectors, [{"metadata": {"n": i % 7}} for i in range(len(ids))])
    report = store.index_report()  # what Engine.close records in the manifest
    assert report is not None and report["points"] == 4000 and report["probes"] == 100
    assert report["spec"] == "HNSW m=16 ef_construct=100" and report["hnsw_ef"] == 64
    assert 0.9 <= report["recall_at_10"] <= 1.0
    assert store.index_report() == report  # no write since: nothing rebuilt or measured again
    store.close()

    reopened = _build({}, tmp_path)
    assert reopened.dimension() == 32 and reopened.count() == 4000
    hits = reopened.search(vectors[5], 10)
    assert hits[0][0] == "c5" and len(hits) == 10
    assert reopened.search(vectors[5], 5, {"n": 5 % 7})[0][0] == "c5"
    reopened.close()


def test_the_manifest_lives_beside_the_shard_and_travels_with_the_folder(tmp_path: Path) -> None:
    store = _build({"collection": "docs"}, tmp_path)
    store.write_manifest({"id": "m1", "counts": {"chunks": 0}})  # before the shard exists: kept all the same
    store.upsert(["a"], clustered(1), [{}])
    store.close()
    folder = tmp_path / "qdrant" / "docs"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "open.lock", "shard"]
    assert json.loads((folder / "manifest.json").read_text())["id"] == "m1"

    shutil.copytree(tmp_path / "qdrant", tmp_path / "copy")
    copy = Registry.discover().build("store", "qdrant", {"path": "copy", "collection": "docs"}, tmp_path)
    assert copy.read_manifest() == {"id": "m1", "counts": {"chunks": 0}} and copy.count() == 1
    copy.close()


def test_a_damaged_manifest_is_one_line_naming_the_file(tmp_path: Path) -> None:
    store = _build({}, tmp_path)
    store.close()
    path = tmp_path / "qdrant" / "vecguard" / "manifest.json"
    path.write_text("{not json")
    store = _build({}, tmp_path)
    with pytest.raises(Exception, match=r"manifest.json is not valid JSON .*restore it from a backup") as raised:
        store.read_manifest()
    assert "\n" not in str(raised.value)
    store.close()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"shard_number": 2}, "shard_number is a server's"),
        ({"collection": "../out"}, "must be a folder name"),
        ({"local_mode": "yes"}, "local_mode must be true or false"),
        ({"hnsw_m": "16"}, "hnsw_m must be a whole number"),
        ({"url": "http://127.0.0.1:1", "path": None, "shard_number": 0}, "shard_number must be a whole number"),
        ({"url": "http://127.0.0.1:1", "path": None, "replication_factor": True}, "replication_factor must be"),
        ({"on_disk": "yes"}, "on_disk must be true or false"),
        ({"payload_indexes": {"a.b": "keyword"}}, "payload_indexes keys must be metadata fields"),
    ],
)
def test_options_an_embedded_collection_cannot_take_are_refused(options: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        _build(options, tmp_path)


def test_a_damaged_shard_is_one_line_and_leaves_the_folder_free(tmp_path: Path) -> None:
    store = _build({}, tmp_path)
    store.upsert(["a"], clustered(1), [{}])
    store.close()
    config = tmp_path / "qdrant" / "vecguard" / "shard" / "edge_config.json"
    config.write_text("{}")
    for _ in range(2):  # the second open finds the folder unclaimed, not "open in" this very process
        with pytest.raises(StorageError, match="does not say the vector size .*restore it from a backup") as raised:
            _build({}, tmp_path)
        assert "\n" not in str(raised.value)

"""The collection creation options of `[store] plugin = "qdrant"`, as vecguard creates them on a real Qdrant server
or cluster, read back from the server.

Runs when QDRANT_URL is set (QDRANT_API_KEY too, if the server needs one); no Qdrant server can be installed on our
machines, so elsewhere it skips. Each test creates collections with unique names through vecguard's own store builder
(or engine), asks the server with qdrant-client what it holds (`get_collection`, `collection_cluster_info`), and
deletes them and their companions afterwards. What one node cannot hold (a replication factor above 1) is skipped
with the node count `cluster_status` reported. Against the example cluster (deploy/qdrant-cluster), reach Qdrant from
inside the compose network, or publish the balancer's port 6333.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

URL = os.environ.get("QDRANT_URL")
API_KEY = os.environ.get("QDRANT_API_KEY") or None
ROOT = Path(__file__).resolve().parent.parent
DIM = 8
COURTS = ["UK", "EU", "US"]

pytestmark = pytest.mark.skipif(
    not URL,
    reason="set QDRANT_URL (and QDRANT_API_KEY if the server needs one) to check creation options on a Qdrant server",
)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from qdrant_client import QdrantClient

    qdrant = QdrantClient(url=URL, api_key=API_KEY, timeout=60)
    yield qdrant
    qdrant.close()


@pytest.fixture(scope="module")
def nodes(client: Any) -> int:
    """The nodes of the cluster behind QDRANT_URL (1 for a server without cluster mode)."""
    status = client.cluster_status()
    return 1 if status.status == "disabled" else len(status.peers)


def needs_nodes(nodes: int, wanted: int, what: str) -> None:
    if nodes < wanted:
        pytest.skip(f"{what} needs a cluster of {wanted} nodes or more; the server at {URL} has {nodes}")


@pytest.fixture
def names(client: Any) -> Iterator[Callable[[str], str]]:
    """Unique collection names; each is deleted afterwards with its companion (`<name>.vecguard`)."""
    made: list[str] = []

    def name(what: str) -> str:
        made.append(f"vecguard-test-{what}-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield name
    for collection in made:
        for each in (collection, collection + ".vecguard"):
            client.delete_collection(each)
        deadline = time.monotonic() + 30  # other nodes of a cluster apply a deletion a moment later
        while any(client.collection_exists(each) for each in (collection, collection + ".vecguard")):
            assert time.monotonic() < deadline, f"{collection} or its companion was not deleted"
            time.sleep(0.5)


def qdrant_store(collection: str, **options: Any) -> Any:
    from vecguard.registry import Registry

    settings = {"url": URL, "api_key": API_KEY, "collection": collection, **options}
    return Registry.discover().build("store", "qdrant", settings, ROOT)


def points(n: int = 40, seed: int = 7) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """n unit vectors; every payload has a year, two in three a court, each a topic that no index covers."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payloads = []
    for i in range(n):
        metadata: dict[str, Any] = {"year": 2015 + i % 10, "topic": f"t{i % 4}"}
        if i % 3 != 2:
            metadata["court"] = COURTS[i % 3 + (i // 3) % 2]
        payloads.append({"text": f"point {i}", "metadata": metadata})
    return [f"p{i}#0" for i in range(n)], vectors, payloads


def created(client: Any, collection: str, **options: Any) -> tuple[Any, Any]:
    """A collection created by vecguard's store with ``options`` (its first write), and get_collection's answer."""
    store = qdrant_store(collection, **options)
    ids, vectors, payloads = points()
    store.upsert(ids, vectors, payloads)
    assert store.count() == len(ids)
    return store, client.get_collection(collection)


def on_disk(vectors_or_payload_memory: Any, flag: Any) -> bool:
    """Whether the server placed a component on disk: the ``memory`` placement where the server reports one,
    else the deprecated flag."""
    from qdrant_client import models

    if vectors_or_payload_memory is not None:
        return vectors_or_payload_memory == models.Memory.COLD
    return bool(flag)


def payload_memory(params: Any) -> Any:
    return params.payload.memory if params.payload is not None else None


def placements(client: Any, collection: str) -> list[tuple[int, int, str]]:
    """(shard id, peer id, state) of every copy of every shard, as the node behind URL reports them."""
    info = client.collection_cluster_info(collection)
    local = [(shard.shard_id, info.peer_id, str(shard.state)) for shard in info.local_shards]
    return local + [(shard.shard_id, shard.peer_id, str(shard.state)) for shard in info.remote_shards]


def test_shard_number_is_what_the_server_holds(client: Any, names: Callable[[str], str]) -> None:
    collection = names("shards")
    store, info = created(client, collection, shard_number=3)
    try:
        assert info.config.params.shard_number == 3
        assert client.collection_cluster_info(collection).shard_count == 3
        assert sorted({shard for shard, _, _ in placements(client, collection)}) == [0, 1, 2]
    finally:
        store.close()


def test_replication_and_write_consistency_place_every_shard_on_that_many_nodes(
    client: Any, nodes: int, names: Callable[[str], str]
) -> None:
    needs_nodes(nodes, 2, "replication_factor = 2")
    collection = names("replicas")
    store, info = created(client, collection, shard_number=2, replication_factor=2, write_consistency_factor=2)
    try:
        params = info.config.params
        assert (params.shard_number, params.replication_factor, params.write_consistency_factor) == (2, 2, 2)
        deadline = time.monotonic() + 60  # new copies may still be initialising
        while True:
            copies = placements(client, collection)
            if all("active" in state.lower() for _, _, state in copies) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(copies) == 4, copies
        for shard in (0, 1):
            peers = [peer for shard_id, peer, _ in copies if shard_id == shard]
            assert len(set(peers)) == 2, f"shard {shard} is not on two nodes: {copies}"
        assert all("active" in state.lower() for _, _, state in copies), copies
        # A write needs both copies: it succeeds while both nodes are up.
        store.delete(["p0#0"])
        assert store.count() == 39
    finally:
        store.close()


@pytest.mark.parametrize("disk", [True, False])
def test_on_disk_puts_vectors_and_payloads_where_asked(client: Any, names: Callable[[str], str], disk: bool) -> None:
    store, info = created(client, names(f"disk-{str(disk).lower()}"), on_disk=disk)
    try:
        params = info.config.params
        assert on_disk(params.vectors.memory, params.vectors.on_disk) is disk, params.vectors
        assert on_disk(payload_memory(params), params.on_disk_payload) is disk, params
    finally:
        store.close()


def test_hnsw_and_scalar_quantization_are_what_the_server_holds(client: Any, names: Callable[[str], str]) -> None:
    from qdrant_client import models

    store, info = created(client, names("hnsw"), hnsw_m=32, hnsw_ef_construct=200, quantization="scalar")
    try:
        assert (info.config.hnsw_config.m, info.config.hnsw_config.ef_construct) == (32, 200)
        quantization = info.config.quantization_config
        assert isinstance(quantization, models.ScalarQuantization), quantization
        assert quantization.scalar.type == models.ScalarType.INT8
        # vecguard asks for the int8 copy to stay in RAM (always_ram; `memory` on servers that report placements).
        assert quantization.scalar.always_ram is True or quantization.scalar.memory in (
            models.Memory.PINNED,
            models.Memory.CACHED,
        ), quantization
        assert info.config.params.vectors.distance == models.Distance.DOT and info.config.params.vectors.size == DIM
    finally:
        store.close()


def test_without_creation_options_the_collection_gets_the_server_defaults(
    client: Any, names: Callable[[str], str]
) -> None:
    store, info = created(client, names("defaults"))
    try:
        assert info.config.quantization_config is None
        assert info.payload_schema == {}
    finally:
        store.close()


def test_payload_indexes_are_built_and_a_filtered_search_goes_through_them(
    client: Any, names: Callable[[str], str]
) -> None:
    """The indexes hold every point with the field; then, with Qdrant's strict mode refusing filters on unindexed
    fields, vecguard's filtered searches still answer exactly: they went through the indexes."""
    from qdrant_client import models
    from vecguard.errors import StorageError

    collection = names("indexes")
    store, info = created(client, collection, payload_indexes={"year": "integer", "court": "keyword"})
    ids, vectors, payloads = points()
    try:
        schema = {field: index.data_type for field, index in info.payload_schema.items()}
        assert schema == {
            "metadata.year": models.PayloadSchemaType.INTEGER,
            "metadata.court": models.PayloadSchemaType.KEYWORD,
        }
        with_court = sum(1 for p in payloads if "court" in p["metadata"])
        deadline = time.monotonic() + 30
        while True:
            counts = {field: index.points for field, index in client.get_collection(collection).payload_schema.items()}
            if counts == {"metadata.year": len(ids), "metadata.court": with_court} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert counts == {"metadata.year": len(ids), "metadata.court": with_court}

        query = vectors[0]
        assert store.search(query, 5, {"topic": "t1"}), "a filter on an unindexed field works before strict mode"
        client.update_collection(
            collection,
            strict_mode_config=models.StrictModeConfig(enabled=True, unindexed_filtering_retrieve=False),
        )
        assert client.get_collection(collection).config.strict_mode_config.enabled is True
        with pytest.raises(StorageError):
            store.search(query, 5, {"topic": "t1"})  # no index: strict mode refuses it

        filters = [
            {"year": {"$gte": 2020}},
            {"court": {"$in": ["UK", "EU"]}},
            {"$and": [{"year": {"$lt": 2019}}, {"court": "US"}]},
            {"court": {"$ne": "EU"}, "year": 2016},
        ]
        from vecguard.filters import matches

        for flt in filters:
            allowed = [i for i, p in enumerate(payloads) if matches(flt, p["metadata"])]
            assert allowed, flt
            hits = store.search(query, len(ids), flt)  # k over the allowed count: every allowed point comes back
            assert sorted(key for key, _ in hits) == sorted(ids[i] for i in allowed), flt
            scores = dict(hits)
            for i in allowed:
                assert scores[ids[i]] == pytest.approx(float(vectors[i] @ query), abs=1e-4), flt
    finally:
        store.close()


def test_the_deploy_examples_config_creates_the_collection_it_describes(
    client: Any, nodes: int, names: Callable[[str], str], tmp_path: Path
) -> None:
    """deploy/qdrant-cluster/vecguard.toml through the engine, with only the url, the collection and the keyword
    folder changed: the server holds its creation options, and a filtered hybrid search answers from the index."""
    import tomllib

    import vecguard
    from qdrant_client import models

    tables = tomllib.loads((ROOT / "deploy" / "qdrant-cluster" / "vecguard.toml").read_text())
    store_options = tables["store"]
    needs_nodes(nodes, store_options["replication_factor"], "the example's replication_factor")
    collection = names("deploy")
    store_options.update(url=URL, api_key=API_KEY, collection=collection)
    tables["keyword"]["path"] = str(tmp_path / "keyword")
    tables.pop("server")
    documents = [
        {"id": f"doc-{i}", "text": text, "metadata": {"year": 2018 + i, "court": court}}
        for i, (text, court) in enumerate(
            [
                ("A party who loses at trial may appeal on a point of law.", "UK"),
                ("Judgments of the General Court may be appealed on points of law only.", "EU"),
                ("A preliminary injunction needs a likelihood of success on the merits.", "US"),
                ("Claims in contract must be brought within six years of the breach.", "UK"),
            ]
        )
    ]
    with vecguard.open(tables) as engine:
        engine.add(documents)
        hits = engine.search("appeal on a point of law", k=4, filter={"court": "UK"})
        assert [hit.id for hit in hits][:1] == ["doc-0"] and {hit.id for hit in hits} <= {"doc-0", "doc-3"}
    info = client.get_collection(collection)
    params = info.config.params
    assert params.shard_number == store_options["shard_number"]
    assert params.replication_factor == store_options["replication_factor"]
    assert params.write_consistency_factor == store_options["write_consistency_factor"]
    assert on_disk(params.vectors.memory, params.vectors.on_disk) is store_options["on_disk"]
    expected = {
        f"metadata.{field}": models.PayloadSchemaType(kind) for field, kind in store_options["payload_indexes"].items()
    }
    assert {field: index.data_type for field, index in info.payload_schema.items()} == expected

"""The embedded Qdrant store beyond the conformance suite: its HNSW graph, its folder, its manifest."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from vecguard import ConfigError, Registry, StorageError
from vecguard.backends.qdrant.edge import FILTERED_EF, EdgeQdrantStore


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
    assert report is not None and report["vectors"] == 4000 and report["queries"] == 100
    assert report["measured_on"] == "100 sampled stored vectors, against Qdrant's exact search"  # no engine: no probes
    assert report["spec"] == "HNSW m=16 ef_construct=100, int8 codes rescored" and report["hnsw_ef"] == 64
    assert 0.9 <= report["recall_at_10"] <= 1.0
    assert store.index_report() == report  # no write since: nothing rebuilt or measured again
    store.close()

    reopened = _build({}, tmp_path)
    assert reopened.dimension() == 32 and reopened.count() == 4000
    hits = reopened.search(vectors[5], 10)
    assert hits[0][0] == "c5" and len(hits) == 10
    assert reopened.search(vectors[5], 5, {"n": 5 % 7})[0][0] == "c5"
    reopened.close()


def _served_recalls(store: EdgeQdrantStore, vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query's recall@10 through the store's search, against numpy brute force (ties at the 10th count)."""
    kth = -np.partition(-(queries @ vectors.T), 9, axis=1)[:, 9]
    return np.array(
        [
            sum(vectors[int(key[1:])] @ query >= last - 1e-6 for key, _ in store.search(query, 10)) / 10
            for query, last in zip(queries, kth)
        ]
    )


def _lower_bound(recalls: np.ndarray) -> float:
    return float(np.mean(recalls) - 2 * np.std(recalls, ddof=1) / math.sqrt(len(recalls)))


@pytest.mark.parametrize("quantization", [{"quantization": "none"}, {}], ids=["float", "int8 rescored (default)"])
def test_hnsw_ef_is_tuned_on_served_queries_to_the_smallest_that_reaches_the_target(
    quantization: dict, tmp_path: Path
) -> None:
    vectors = clustered(12_000, dimension=256, centres=240)  # 12 MB: past Qdrant's threshold, a graph is built
    pairs = np.random.default_rng(5).integers(0, len(vectors), (200, 2))
    queries = vectors[pairs[:, 0]] + vectors[pairs[:, 1]]  # between stored points, as real queries are
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    store = _build(quantization, tmp_path)
    store.upsert([f"p{i}" for i in range(len(vectors))], vectors, [{"metadata": {}}] * len(vectors))
    built = store.optimize()
    # Stored vectors find themselves in the graph: they measure, and never tune hnsw_ef down.
    assert built["tuned"] is False and built["hnsw_ef"] == 128 and "tuned_on" not in built
    assert built["spec"] == "HNSW m=16 ef_construct=100" + ("" if quantization else ", int8 codes rescored")
    for query in queries:
        store.record_query(query)
    assert store.wait_for_index(120)
    report = store.index_report()
    ef = report["hnsw_ef"]
    assert report["tuned"] and report["retuned_on"] == "served queries" and report["served"]["hnsw_ef"] == ef
    assert report["lower_bound"] >= report["aimed_at"] == 0.95
    measured = queries[report["served"]["recorded"] - report["served"]["queries"] : report["served"]["recorded"]]
    ours = _served_recalls(store, vectors, measured)
    assert abs(float(np.mean(ours)) - report["recall_at_10"]) <= 0.01  # what searches get is what was measured
    # The tuning saw no filter: a filtered search goes at least FILTERED_EF wide.
    assert store._params(10).hnsw_ef == ef and store._params(10, filtered=True).hnsw_ef == max(ef, FILTERED_EF)
    store.close()

    below = _build({**quantization, "hnsw_ef": ef - 1}, tmp_path)  # one less is short of the target on the same queries
    assert _lower_bound(_served_recalls(below, vectors, measured)) < 0.95
    for query in queries[:120]:
        below.record_query(query)
    below.wait_for_index(120)
    assert below.index_report()["hnsw_ef"] == ef - 1 and below.index_report()["tuned"] is False  # the user's stays
    assert below._params(10, filtered=True).hnsw_ef == ef - 1  # filtered too
    below.close()

    (tmp_path / "qdrant" / "vecguard" / "index.json").write_text(json.dumps({**report, "hnsw_ef": ef}))
    reopened = _build(quantization, tmp_path)  # the tuned hnsw_ef comes back with the collection
    assert reopened.index_report()["hnsw_ef"] == ef
    assert np.array_equal(_served_recalls(reopened, vectors, measured), ours)
    reopened.close()
    (tmp_path / "qdrant" / "vecguard" / "index.json").write_text("{damaged")
    damaged = _build(quantization, tmp_path)  # logged; searched at the default until the next measure
    assert damaged.index_report() is None and len(damaged.search(queries[0], 10)) == 10
    damaged.close()


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
        ({"hnsw_ef": 0}, "hnsw_ef must be a whole number"),
        ({"target_recall": 1.5}, r"target_recall must be a number in \(0, 1\]"),
        ({"quantization": "binary"}, 'quantization must be "scalar" \\(int8 codes, rescored\\) or "none"'),
        ({"url": "http://127.0.0.1:1", "path": None, "target_recall": 0.9}, "target_recall is the embedded engine's"),
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


# ------------------------------------------------------------------ the keyword signal inside Qdrant

CORPUS = {
    "lease": "The tenant must give the landlord 30 days notice before moving out of the flat.",
    "ship": "My parcel is late because of the weather; order ORD-2024-00017 left the depot on Monday.",
    "cve": "CVE-2021-29447 lets an attacker read files through an XML external entity in a media upload.",
    "flood": "Heavy weather flooded the depot, so every parcel in the region is late this week.",
    "deposit": "The landlord keeps the deposit when the tenant leaves the flat damaged.",
}


def test_keyword_scores_from_qdrant_are_bm25_with_qdrants_idf(tmp_path: Path) -> None:
    """Each chunk's sparse vector holds BM25Okapi's term-frequency part; Qdrant multiplies in its IDF
    ln(1 + (N - n + 0.5) / (n + 0.5)): the scores are BM25's, computed here by hand from the same tokenizer."""
    from vecguard.plugins.bm25 import BM25Index

    index = BM25Index()
    store = _build({}, tmp_path)
    assert store.hold_keywords(index.sparse_weights())
    ids = list(CORPUS)
    store.upsert(ids, clustered(len(ids)), [{"text": text, "metadata": {}} for text in CORPUS.values()])
    tokens = {key: index.tokenize(text) for key, text in CORPUS.items()}
    average = sum(map(len, tokens.values())) / len(tokens)
    for query in ("landlord tenant flat", "late parcel weather weather", "ORD-2024-00017"):
        expected = {}
        for key, terms in tokens.items():
            score = 0.0
            for term in index.tokenize(query):
                n = sum(term in other for other in tokens.values())
                if term in terms:
                    tf = terms.count(term)
                    idf = math.log(1 + (len(tokens) - n + 0.5) / (n + 0.5))
                    score += idf * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * len(terms) / average))
            if score:
                expected[key] = score
        found = store.search_signals(None, index.sparse_weights().query(query), 10, None)["keyword"]
        assert {key for key, _, _ in found} == set(expected), query
        for key, score, payload in found:
            assert score == pytest.approx(expected[key], rel=1e-4), (query, key)
            assert payload["text"] == CORPUS[key]
    store.close()


@pytest.fixture(scope="module")
def engine_config(tmp_path_factory: pytest.TempPathFactory):
    def config(folder: str, **store: object) -> dict:
        path = tmp_path_factory.getbasetemp() / folder
        return {
            "encoder": {"plugin": "sentence-transformers", "model": "bundled"},
            "store": {"plugin": "qdrant", "path": str(path), **store},
        }

    return config


def _documents() -> list[dict]:
    return [
        {"id": key, "text": text, "metadata": {"topic": "home" if key in ("lease", "deposit") else "other"}}
        for key, text in CORPUS.items()
    ]


@pytest.mark.parametrize("client", [{}, {"local_mode": True}], ids=["embedded", "qdrant-client"])
def test_a_qdrant_collection_keeps_the_keyword_signal_inside_qdrant(engine_config, client: dict) -> None:
    """Embedded, and through qdrant-client (what a server runs; here its local mode)."""
    import vecguard

    config = engine_config(f"inside-{len(client)}", **client)
    with vecguard.open(config) as engine:
        engine.add(_documents())
        assert engine.collection.keyword_in_store and engine.keyword.count() == len(CORPUS)
        first = engine.search("ORD-2024-00017", k=3)[0]
        assert first.id == "ship" and "identifier" in first.signals and "keyword" in first.signals
        assert {h.id for h in engine.search("landlord", k=5, mode="keyword")} == {"deposit", "lease"}
        # The filter applies inside Qdrant to both signals.
        assert engine.search("landlord", k=5, mode="keyword", filter={"topic": "other"}) == []
        assert {h.id for h in engine.search("late parcel", k=5, filter={"topic": "home"})} <= {"lease", "deposit"}
        engine.delete(["ship"])
        assert engine.search("ORD-2024-00017", k=3, mode="keyword") == []
    folder = Path(config["store"]["path"])
    assert not (folder / "keyword").exists(), "no keyword index may live outside Qdrant"
    with vecguard.open(config) as engine:  # reopened: nothing to load or rebuild
        assert engine.collection.keyword_in_store
        assert [h.id for h in engine.search("CVE-2021-29447", k=1)] == ["cve"]


def test_keyword_vectors_false_keeps_vecguards_bm25_files_and_the_collection_remembers(engine_config) -> None:
    import vecguard

    config = engine_config("files", keyword_vectors=False)
    with vecguard.open(config) as engine:
        engine.add(_documents())
        assert not engine.collection.keyword_in_store
    assert (Path(config["store"]["path"]) / "keyword").is_dir()
    del config["store"]["keyword_vectors"]  # the default would keep new collections' keywords in Qdrant
    with vecguard.open(config) as engine:
        assert not engine.collection.keyword_in_store, "a collection built without keyword vectors has none"
        assert [h.id for h in engine.search("ORD-2024-00017", k=1)] == ["ship"]

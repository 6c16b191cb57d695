"""Recall on the queries users send: the served-query sample, query-like probes, retuning on what was served, and
the recall that the manifest, `vecguard eval --exact` and /metrics report."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import vecguard
from conftest import Server, run_python, toml
from test_eval import vecguard_cli
from vecguard.backends.faiss import FaissStore
from vecguard.backends.query_sample import FILE, QuerySample
from vecguard.probes import spans

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.95


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 50, dim))
    vectors = (centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _between(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Queries that sit between stored vectors, as real queries do: midpoints of random pairs."""
    pairs = np.random.default_rng(seed).integers(0, len(vectors), (n, 2))
    queries = vectors[pairs[:, 0]] + vectors[pairs[:, 1]]
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def _recall(store: FaissStore, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Recall@k of the store's search against brute force over ``vectors`` (stored as p<row>)."""
    scores = queries @ vectors.T
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    found = 0
    for query, row, last in zip(queries, scores, kth):
        found += sum(row[int(key[1:])] >= last - 1e-6 for key, _ in store.search(query, k))
    return found / (k * len(queries))


def _store(path: Path, n: int, **options) -> tuple[FaissStore, np.ndarray]:
    vectors = _clustered(n, 32, seed=1)
    store = FaissStore(path, index="auto", ivf_threshold=1000, target_recall=TARGET, **options)
    store.upsert([f"p{i}" for i in range(n)], vectors, [{"metadata": {}}] * n)
    store.index_report()  # built now, tuned on held-out stored vectors (no engine gives it query-like probes)
    return store, vectors


def test_the_sample_keeps_the_newest_query_vectors_of_every_process(tmp_path: Path) -> None:
    ours = QuerySample(tmp_path, capacity=50)
    for i in range(40):
        ours.add(np.full(4, i, dtype=np.float32))
    ours.flush()
    run_python(
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from vecguard.backends.query_sample import QuerySample\n"
        "theirs = QuerySample(Path(sys.argv[1]), capacity=50)\n"
        "for i in range(100, 130):\n"
        "    theirs.add(np.full(4, i, dtype=np.float32))\n"
        "theirs.close()\n",
        str(tmp_path),
    )
    assert ours.recorded() == 70
    newest = ours.newest(50, 4)
    assert sorted(newest[:, 0].astype(int).tolist()) == [*range(20, 40), *range(100, 130)]
    assert newest[0, 0] == 129  # newest first
    assert ours.newest(50, 8).shape == (0, 8)  # vectors of another dimension are not queries of this collection
    ours.close()

    off = QuerySample(tmp_path / "off", capacity=0)
    assert not off.add(np.ones(4, dtype=np.float32))
    off.close()
    assert not (tmp_path / "off" / FILE).exists()


def test_served_queries_unlike_the_stored_vectors_retune_the_index_to_its_target(tmp_path: Path) -> None:
    for kind in ("IVF", "HNSW"):
        store, vectors = _store(tmp_path / kind, 4000, auto_candidates=[kind])
        tuned, state = store.index_report(), store.index_state
        assert tuned["tuned_on"] == "held-out stored vectors" and tuned["recall_at_10"] >= TARGET
        served, unseen = _between(vectors, 300, seed=5), _between(vectors, 300, seed=6)
        before = _recall(store, vectors, unseen)
        assert before < TARGET - 0.03, before  # what stored vectors promised, real queries do not get

        for query in served:
            store.record_query(query)
        assert store.wait_for_index(120)
        report = store.index_report()
        knob = "nprobe" if kind == "IVF" else "ef_search"
        assert report["retuned_on"] == "served queries" and report[knob] > tuned[knob]
        measured = store.served_recall()
        assert measured["queries"] == measured["recorded"] >= 100  # written in batches, measured as they arrive
        assert measured["recall_at_10"] == report["recall_at_10"] and report["lower_bound"] >= TARGET
        after = _recall(store, vectors, unseen)
        assert after >= TARGET, (kind, before, after)  # queries it never saw reach the target
        assert abs(measured["recall_at_10"] - after) <= 0.02  # what it reports is what queries get
        after_state = store.index_state  # a setting changed: nothing was rebuilt
        assert (after_state.spec, after_state.trained_on) == (state.spec, state.trained_on)
        store.close()

        reopened = FaissStore(tmp_path / kind, index="auto", ivf_threshold=1000, auto_candidates=[kind])
        assert not reopened.index_state.needs_build and reopened.index_report()[knob] == report[knob]
        assert reopened.served_recall() == measured
        reopened.close()


def test_a_fixed_nprobe_is_measured_on_served_queries_and_left_as_set(tmp_path: Path) -> None:
    vectors = _clustered(3000, 32, seed=2)
    store = FaissStore(tmp_path, index="IVF64,Flat", nprobe=1)
    store.upsert([f"p{i}" for i in range(3000)], vectors, [{"metadata": {}}] * 3000)
    queries = _between(vectors, 150, seed=3)
    for query in queries:
        store.record_query(query)
        store.search(query, 10)
    assert store.wait_for_index(120)
    measured = store.served_recall()  # once 100 had arrived (written in batches): the first ones
    assert measured["nprobe"] == 1 and measured["queries"] == measured["recorded"] >= 100
    first = queries[: measured["queries"]]
    assert measured["recall_at_10"] == pytest.approx(_recall(store, vectors, first), abs=1e-3)
    assert "retuned_on" not in store.index_report()
    store.close()


def test_a_damaged_sample_is_switched_off_and_searches_go_on(tmp_path: Path, caplog) -> None:
    store, vectors = _store(tmp_path, 2000, auto_candidates=["IVF"])
    store.close()
    (tmp_path / FILE).write_bytes(b"not a database" * 100)
    store = FaissStore(tmp_path, index="auto", ivf_threshold=1000, auto_candidates=["IVF"])
    with caplog.at_level(logging.WARNING):
        for query in _between(vectors, 120, seed=1):
            store.record_query(query)
            assert len(store.search(query, 10)) == 10
        assert store.wait_for_index(60)
    assert store.served_recall() is None
    assert [r for r in caplog.records if "served-query sample cannot be kept" in r.getMessage()]
    store.close()


def _documents() -> list[dict]:
    """Real prose: the sentences of this project's own docs, one document each."""
    text = " ".join((ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "docs/architecture.md"))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\n", text) if len(s.split()) >= 6]
    return [{"id": f"s{i}", "text": s} for i, s in enumerate(dict.fromkeys(sentences))]


def test_an_engine_tunes_on_query_like_probes_then_on_what_it_serves(tmp_path: Path) -> None:
    documents = _documents()
    cfg = {
        "store": {
            "plugin": "faiss",
            "path": str(tmp_path / "index"),
            "ivf_threshold": 100,
            "auto_candidates": ["IVF"],
        }
    }
    with vecguard.open(cfg) as engine:
        engine.add(documents)
    with vecguard.open(cfg) as engine:
        built = engine.manifest["measurements"]["index"]
        assert built["tuned_on"] == "query-like probes" and built["queries"] >= 50 and built["lower_bound"] >= TARGET
        assert engine.recall() is None  # nothing served, no eval run: no recall to report yet
    (tmp_path / "c.toml").write_text(toml(cfg))

    # Served through a real server; it measures recall on what it served and exports it.
    questions = spans([d["text"] for d in documents], seed=9)[:130]
    server = Server(cfg, tmp_path)
    try:
        server.wait_until(200)
        for question in questions:
            assert httpx.post(f"{server.url}/search", json={"query": question, "k": 3}, timeout=30).status_code == 200
        deadline, exported = time.monotonic() + 60, {}
        while time.monotonic() < deadline and not exported.get("vecguard_recall_queries"):
            lines = httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines()
            exported = {
                name: float(value)
                for name, value in (line.split() for line in lines if line.startswith("vecguard_recall"))
            }
            time.sleep(0.2)
    finally:
        server.stop()
    assert exported["vecguard_recall_queries"] >= 100 and 0.0 < exported["vecguard_recall_at_k"] <= 1.0

    with sqlite3.connect(tmp_path / "index" / FILE) as sample:  # vectors only: no query text is kept
        columns = [row[1] for row in sample.execute("PRAGMA table_info(queries)")]
        assert (
            columns == ["slot", "seq", "vector"] and sample.execute("SELECT COUNT(*) FROM queries").fetchone()[0] >= 112
        )

    queries = tmp_path / "unseen.jsonl"
    unseen = spans([d["text"] for d in documents], seed=10)[:200]
    queries.write_text("".join(json.dumps({"id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(unseen)))
    result = vecguard_cli("eval", "--config", str(tmp_path / "c.toml"), "--queries", str(queries), "--exact", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    recall = json.loads(result.stdout)["recall"]
    assert recall["served"]["measured_on"] == "served queries" and recall["served"]["queries"] >= 100
    assert recall["served"]["value"] == exported["vecguard_recall_at_k"]  # what /metrics said, kept with the index
    assert abs(recall["recall"] - recall["served"]["value"]) <= 0.02
    info = json.loads(vecguard_cli("info", "--config", str(tmp_path / "c.toml")).stdout)
    assert info["recall"]["measured_on"] == "served queries" and info["recall"]["value"] == recall["served"]["value"]


def test_the_embedded_qdrant_measures_recall_on_query_like_probes_then_on_served_queries(tmp_path: Path) -> None:
    documents = _documents()
    cfg = {"store": {"plugin": "qdrant", "path": str(tmp_path / "qdrant")}}
    with vecguard.open(cfg) as engine:
        engine.add(documents)
    with vecguard.open(cfg) as engine:
        built = engine.manifest["measurements"]["index"]
        assert built["measured_on"] == f"{built['queries']} query-like probes, against Qdrant's exact search"
        assert built["queries"] >= 50 and engine.recall() is None
        for question in spans([d["text"] for d in documents], seed=9)[:120]:
            engine.search(question, k=3)  # the keyword signal inside Qdrant: both lists in one call
        assert engine.store.wait_for_index(60)
        recall = engine.recall()
        assert recall["measured_on"] == "served queries" and recall["queries"] >= 100  # measured once 100 arrived
        assert 0.9 <= recall["value"] <= 1.0 and engine.store.index_report()["served"]["recorded"] == recall["queries"]
    folder = tmp_path / "qdrant" / "vecguard"
    assert QuerySample(folder, 1000).recorded() == 120  # every one written by the close
    with vecguard.open({"store": {**cfg["store"], "query_sample": 0}}) as engine:  # keep none from now on
        for question in spans([d["text"] for d in documents], seed=11)[:40]:
            engine.search(question, k=1)
    assert QuerySample(folder, 1000).recorded() == 120


def test_an_index_no_setting_brings_to_target_is_retrained_once_on_served_queries(tmp_path: Path, monkeypatch) -> None:
    from vecguard.backends.faiss import tuning

    monkeypatch.setattr(tuning, "HNSW_MAX_EF_SEARCH", 16)  # a ceiling the queries between clusters cannot reach under
    store, vectors = _store(tmp_path, 4000, auto_candidates=["HNSW"])
    assert store.index_report()["tuned_on"] == "held-out stored vectors"
    first = store.index_state
    for query in _between(vectors, 200, seed=7):
        store.record_query(query)
        store.search(query, 10)
    assert store.wait_for_index(120)  # the measure wanted a retraining; started by wait(), then waited for
    retrained = store.index_report()
    assert retrained["tuned_on"] == "served queries" and retrained["reason"].startswith("recall@10 ")
    assert "served queries" in retrained["reason"] and retrained["served"]["queries"] >= 100
    second = store.index_state
    assert second.spec == first.spec and second.tuning != first.tuning

    for query in _between(vectors, 200, seed=8):  # still short of the target: measured, not retrained again
        store.record_query(query)
        store.search(query, 10)
    assert store.wait_for_index(120)
    again = store.index_report()
    assert again["build_s"] == retrained["build_s"] and again["served"]["recorded"] > retrained["served"]["recorded"]
    assert again["retuned_on"] == "served queries"
    store.close()

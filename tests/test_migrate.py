"""`vecguard migrate`: a real CWE collection moved between real backends, interrupted, resumed and verified."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import vecguard
from conftest import ROOT, ChromaServer, free_port, run_python, toml
from vecguard.errors import CompatibilityError, StorageError, VecguardError
from vecguard.migration import migrate, verify

sys.path.insert(0, str(ROOT))
from benchmarks.corpora import cwe_documents  # noqa: E402

DOCUMENTS = 120
CHUNKING = {"tokens": 128, "overlap": 16, "batch_documents": 32}


def cfg(store: dict[str, Any], **tables: dict[str, Any]) -> dict[str, Any]:
    return {"store": store, "chunking": dict(CHUNKING), **tables}


def points(config: dict[str, Any]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Every stored point of a collection, read through its store."""
    with vecguard.Engine(vecguard.load_config(config), check_guard=False, open_unfinished=True) as engine:
        return {
            key: (vector, payload)
            for ids, vectors, payloads in engine.store.scan()
            for key, vector, payload in zip(ids, vectors, payloads)
        }


def raw_manifest(config: dict[str, Any]) -> dict[str, Any] | None:
    registry = vecguard.Registry.discover()
    loaded = vecguard.load_config(config)
    store = registry.build("store", *loaded.plugin_options("store"), loaded.base_dir)
    try:
        return store.read_manifest()
    finally:
        store.close()


def assert_same_points(expected: dict, found: dict) -> None:
    assert sorted(found) == sorted(expected)
    for key, (vector, payload) in expected.items():
        assert np.array_equal(found[key][0], vector), key
        assert found[key][1] == payload, key


def assert_passed(report) -> None:
    failed = [(c.name, c.detail) for c in report.checks if not c.passed]
    assert report.passed and not failed, failed
    assert [c.name for c in report.checks] == ["counts", "vectors", "queries", "guard"]


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    return [d for _, d in zip(range(DOCUMENTS), cwe_documents())]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, documents) -> dict[str, Any]:
    """A FAISS collection of real CWE weaknesses; tests copy it and never change it."""
    config = cfg({"plugin": "faiss", "path": str(tmp_path_factory.mktemp("source") / "index"), "index": "Flat"})
    with vecguard.open(config) as engine:
        engine.add(documents)
    return config


@pytest.fixture(scope="module")
def source_points(source) -> dict:
    return points(source)


@pytest.fixture(scope="module")
def qdrant_copy(source, tmp_path_factory: pytest.TempPathFactory):
    target = cfg({"plugin": "qdrant", "path": str(tmp_path_factory.mktemp("qdrant") / "index")})
    return target, migrate(source, target, batch_size=64)


def test_faiss_to_embedded_qdrant_copies_every_point_exactly_and_answers_the_same(
    source, source_points, qdrant_copy
) -> None:
    target, report = qdrant_copy
    assert_passed(report)
    assert report.written == report.total == len(source_points) > DOCUMENTS
    assert report.resumed_from == 0 and report.batches == -(-report.total // 64)
    queries = next(c for c in report.checks if c.name == "queries").detail
    # HNSW is not declared exact, but a collection this small is below Qdrant's full-scan threshold: same answers.
    assert not queries["exact"] and queries["queries"] == 50 and queries["identical"] == 50
    assert next(c for c in report.checks if c.name == "vectors").detail["max_abs_difference"] == 0.0
    assert_same_points(source_points, points(target))
    with vecguard.open(source) as old, vecguard.open(target) as new:
        assert new.count() == old.count() == DOCUMENTS
        assert new.keyword.count() == old.keyword.count() == len(source_points)
        for query in (
            "CVE-2021-29447",
            "a cookie readable by client-side script",
            "integer overflow in a length field",
        ):
            assert [(h.id, h.signals.keys()) for h in new.search(query)] == [
                (h.id, h.signals.keys()) for h in old.search(query)
            ]
        assert new.manifest["state"] == {"writing": False}
        assert new.manifest["lineage"][-1]["manifest_id"] == old.manifest["id"]
        assert new.manifest["store"] == {"plugin": "qdrant"} and new.guard_report.status == "ok"


def test_qdrant_back_to_faiss_is_the_way_back(source_points, qdrant_copy, tmp_path: Path) -> None:
    target = cfg({"plugin": "faiss", "path": str(tmp_path / "back")})
    report = migrate(qdrant_copy[0], target, batch_size=100)
    assert_passed(report)
    assert_same_points(source_points, points(target))
    assert len(raw_manifest(target)["lineage"]) == 2


def test_faiss_to_chroma_embedded(source, source_points, tmp_path: Path) -> None:
    target = cfg({"plugin": "chroma", "path": str(tmp_path / "chroma")})
    report = migrate(source, target, batch_size=50)
    assert_passed(report)
    assert not next(c for c in report.checks if c.name == "queries").detail["exact"]  # HNSW: overlap >= 0.95 suffices
    assert_same_points(source_points, points(target))


def test_faiss_to_a_real_chroma_server(source, source_points, chroma_server) -> None:
    host, port = chroma_server
    target = cfg({"plugin": "chroma", "host": host, "port": port, "collection": f"migrate-{uuid.uuid4().hex[:8]}"})
    assert_passed(migrate(source, target))
    assert_same_points(source_points, points(target))


@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="set QDRANT_URL to migrate into a Qdrant server")
def test_faiss_to_a_qdrant_server(source, source_points) -> None:
    target = cfg(
        {
            "plugin": "qdrant",
            "url": os.environ["QDRANT_URL"],
            "api_key": os.environ.get("QDRANT_API_KEY"),
            "collection": f"migrate-{uuid.uuid4().hex[:8]}",
            "exact": True,
        }
    )
    try:
        assert_passed(migrate(source, target, batch_size=100))
        assert_same_points(source_points, points(target))
    finally:
        from qdrant_client import QdrantClient

        QdrantClient(url=target["store"]["url"], api_key=target["store"]["api_key"]).delete_collection(
            target["store"]["collection"]
        )


KILL_AFTER_BATCHES = (
    "import json, os, sys\n"
    "from vecguard.migration import migrate\n"
    "class KillAfter:\n"
    "    batches = 0\n"
    "    def update(self, n):\n"
    "        self.batches += 1\n"
    "        if self.batches == int(sys.argv[3]): os._exit(9)  # like kill -9: no close, no flush\n"
    "migrate(sys.argv[1], sys.argv[2], batch_size=int(sys.argv[4]), progress=KillAfter(), reembed=sys.argv[5] == '1')\n"
)


def test_a_migration_killed_part_way_resumes_and_ends_like_an_uninterrupted_one(
    source, source_points, tmp_path: Path
) -> None:
    source_file, target_file = tmp_path / "from.toml", tmp_path / "to.toml"
    source_file.write_text(toml(source))
    target = cfg({"plugin": "qdrant", "path": str(tmp_path / "qdrant")})
    target_file.write_text(toml(target))
    killed = run_python(KILL_AFTER_BATCHES, str(source_file), str(target_file), "3", "10", "0")
    assert killed.returncode == 9, killed.stderr[-2000:]

    marked = raw_manifest(target)["state"]["migration"]
    assert marked["committed"] == 30 and marked["source"]["chunks"] == len(source_points)
    with pytest.raises(StorageError, match="unfinished migration .* rerun the same `vecguard migrate`"):
        vecguard.open(target)

    resumed = subprocess.run(
        [
            str(Path(sys.executable).parent / "vecguard"),
            "migrate",
            "--from",
            str(source_file),
            "--to",
            str(target_file),
            "--batch-size",
            "25",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads(resumed.stdout)
    assert report["passed"] and report["resumed_from"] == 30
    assert report["written"] == len(source_points) - 30
    assert_same_points(source_points, points(target))
    with vecguard.open(target) as copy:
        assert copy.count() == DOCUMENTS and copy.keyword.count() == len(source_points)


def test_a_target_server_dying_mid_way_stops_at_the_batch_and_the_rerun_resumes(
    source, source_points, tmp_path: Path
) -> None:
    server = ChromaServer(tmp_path).start()
    target = cfg({"plugin": "chroma", "host": server.host, "port": server.port})

    class KillServerAfter:
        batches = 0

        def update(self, n: int) -> None:
            self.batches += 1
            if self.batches == 2:
                server.kill()

    try:
        with pytest.raises(
            StorageError, match=r"batch 3 \(points 41-60 of \d+\) failed on the target.*40 points are committed; rerun"
        ):
            migrate(source, target, batch_size=20, progress=KillServerAfter())
        server.start()
        report = migrate(source, target, batch_size=20)
        assert_passed(report)
        assert report.resumed_from == 40
        assert_same_points(source_points, points(target))
    finally:
        server.stop()


def test_a_target_built_differently_is_refused_naming_the_difference(source, documents, tmp_path: Path) -> None:
    built_as = cfg({"plugin": "faiss", "path": str(tmp_path / "other")}, chunking={"tokens": 64, "overlap": 8})
    with vecguard.open(built_as) as engine:
        engine.add(documents[:3])
        before = engine.count_chunks()
    # The target config matches the source; the collection already at that path does not.
    with pytest.raises(
        CompatibilityError, match=r"target already holds \d+ points built differently from the source: chunking"
    ):
        migrate(source, cfg({"plugin": "faiss", "path": str(tmp_path / "other")}))
    with vecguard.open(built_as) as engine:
        assert engine.count_chunks() == before


def test_a_compatible_target_with_points_needs_into_existing(source, documents, tmp_path: Path) -> None:
    target = cfg({"plugin": "qdrant", "path": str(tmp_path / "qdrant")})
    extra = [{"id": "extra-1", "text": "A note about ORD-2024-00017 that only the target holds."}]
    with vecguard.open(target) as engine:
        engine.add(extra)
    with pytest.raises(StorageError, match="already holds 1 points of a compatible collection; pass --into-existing"):
        migrate(source, target)
    report = migrate(source, target, into_existing=True)
    assert report.passed, [(c.name, c.detail) for c in report.checks if not c.passed]
    assert "skipped" in next(c for c in report.checks if c.name == "queries").detail
    with vecguard.open(target) as engine:
        assert engine.count() == DOCUMENTS + 1
        assert engine.search("ORD-2024-00017", k=1)[0].id == "extra-1"
        assert engine.get([documents[5]["id"]])[0].text == documents[5]["text"]


def test_a_target_config_that_would_refuse_the_copy_is_refused_before_writing(source, tmp_path: Path) -> None:
    target = cfg({"plugin": "faiss", "path": str(tmp_path / "target")}, chunking={"tokens": 64, "overlap": 8})
    with pytest.raises(CompatibilityError, match=r"would refuse the copied collection: chunking settings .*--reembed"):
        migrate(source, target)
    assert not (tmp_path / "target").exists()


@pytest.mark.parametrize(
    "store, where",
    [
        ({"plugin": "qdrant", "url": "http://127.0.0.1:{port}"}, "Qdrant server at http://127.0.0.1:{port}"),
        ({"plugin": "chroma", "host": "127.0.0.1", "port": "{port}"}, "Chroma server at http://127.0.0.1:{port}"),
    ],
)
def test_an_unreachable_target_server_is_named_before_anything_is_written(source, store: dict, where: str) -> None:
    port = free_port()
    store = {k: (int(v.format(port=port)) if v == "{port}" else v.format(port=port)) for k, v in store.items()}
    with pytest.raises(StorageError, match=f"cannot reach the {where.format(port=port)} "):
        migrate(source, cfg(store))


def test_a_corrupt_source_file_is_named_and_nothing_is_written(source, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(source["store"]["path"], broken)
    (broken / "points.sqlite3").write_bytes(b"this is not a database" * 100)
    for leftover in broken.glob("points.sqlite3-*"):
        leftover.unlink()
    target = tmp_path / "target"
    with pytest.raises(StorageError, match="points.sqlite3 is not a readable SQLite database"):
        migrate(cfg({**source["store"], "path": str(broken)}), cfg({"plugin": "qdrant", "path": str(target)}))
    assert not target.exists()


def test_a_truncated_faiss_index_file_is_rebuilt_from_sqlite_and_the_copy_is_exact(
    source, source_points, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(source["store"]["path"], damaged)
    index_file = damaged / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:1000])
    target = cfg({"plugin": "qdrant", "path": str(tmp_path / "qdrant")})
    assert_passed(migrate(cfg({**source["store"], "path": str(damaged)}), target))
    assert_same_points(source_points, points(target))


def test_verification_catches_a_copy_that_no_longer_matches(source, tmp_path: Path) -> None:
    target = cfg({"plugin": "faiss", "path": str(tmp_path / "copy"), "index": "Flat"})
    assert_passed(migrate(source, target))
    registry = vecguard.Registry.discover()
    store = registry.build("store", "faiss", {"path": target["store"]["path"]}, tmp_path)
    ids, vectors, payloads = next(store.scan(batch_size=40))
    store.upsert(ids, -vectors, payloads)  # an antipodal vector: the nearest becomes the farthest
    store.close()
    report = verify(source, target)
    failed = {c.name for c in report.checks if not c.passed}
    assert failed == {"vectors", "queries"}
    assert next(c for c in report.checks if c.name == "vectors").detail["max_abs_difference"] > 0.1
    (tmp_path / "from.toml").write_text(toml(source))
    (tmp_path / "to.toml").write_text(toml(target))
    cli = subprocess.run(
        [
            str(Path(sys.executable).parent / "vecguard"),
            "migrate",
            "--from",
            str(tmp_path / "from.toml"),
            "--to",
            str(tmp_path / "to.toml"),
            "--verify-only",
            "--verify-queries",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert cli.returncode == 1, cli.stderr[-2000:]
    assert "FAIL vectors" in cli.stdout and "PASS counts" in cli.stdout


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"verify_queries": -1}, "verify_queries must be a whole number >= 0"),
        ({"queries": {"q": "x"}}, "give both queries and qrels"),
    ],
)
def test_bad_arguments_are_refused(source, tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(VecguardError, match=message):
        migrate(source, cfg({"plugin": "qdrant", "path": str(tmp_path / "q")}), **kwargs)


def test_a_collection_cannot_be_migrated_onto_itself(source) -> None:
    with pytest.raises(VecguardError, match="name the same collection"):
        migrate(source, json.loads(json.dumps(source)))


# ---------------------------------------------------------------- --reembed


def _judgments(documents: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Query each weakness by its name; its own document is the relevant one."""
    queries = {d["id"]: d["text"].split("\n\n")[0].split(": ", 1)[1] for d in documents[:40]}
    return queries, {qid: {qid: 1.0} for qid in queries}


def test_reembed_builds_a_new_collection_with_the_new_settings_and_compares_quality(
    source, documents, tmp_path: Path
) -> None:
    # A different chunking is a different space for the guard, like a model upgrade: it needs re-encoding.
    target = cfg({"plugin": "faiss", "path": str(tmp_path / "green")}, chunking={"tokens": 64, "overlap": 8})
    queries, qrels = _judgments(documents)
    report = migrate(source, target, reembed=True, queries=queries, qrels=qrels)
    assert report.passed, [(c.name, c.detail) for c in report.checks]
    assert [c.name for c in report.checks] == ["documents", "texts", "guard"]
    assert report.written == report.total == DOCUMENTS
    for side in ("old", "new"):
        for mode in ("hybrid", "dense"):
            scores = report.evaluation[side][mode]
            assert scores["queries"] == 40 and 0.5 < scores["ndcg@10"] <= 1.0
    with vecguard.open(target) as green, vecguard.open(source) as blue:
        assert green.count() == blue.count() and green.count_chunks() > blue.count_chunks()
        assert green.manifest["chunking"]["tokens"] == 64 and blue.manifest["chunking"]["tokens"] == 128
        assert green.get([documents[7]["id"]]) == blue.get([documents[7]["id"]])
    with pytest.raises(CompatibilityError, match="vectors of two models must never share a collection"):
        migrate(source, target, reembed=True)


def test_reembed_killed_part_way_resumes_without_encoding_twice(source, tmp_path: Path) -> None:
    target = cfg(
        {"plugin": "qdrant", "path": str(tmp_path / "green")},
        chunking={"tokens": 64, "overlap": 8, "batch_documents": 16},
    )
    (tmp_path / "from.toml").write_text(toml(source))
    (tmp_path / "to.toml").write_text(toml(target))
    killed = run_python(KILL_AFTER_BATCHES, str(tmp_path / "from.toml"), str(tmp_path / "to.toml"), "3", "1", "1")
    assert killed.returncode == 9, killed.stderr[-2000:]
    with pytest.raises(StorageError, match="unfinished migration"):
        vecguard.open(target)
    report = migrate(source, target, reembed=True)
    assert report.passed, [(c.name, c.detail) for c in report.checks]
    assert report.resumed_from == 48 and report.written == DOCUMENTS - 48
    with vecguard.open(target) as green:
        assert green.count() == DOCUMENTS

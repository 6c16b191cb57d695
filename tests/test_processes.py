"""Several processes on one FAISS collection, for real: `vecguard serve`, the CLI and Python processes, some
killed with SIGKILL. Every process sees every committed write at its next request; no write is lost or counted
twice; a crash is repaired by whoever writes or opens next."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import vecguard
from conftest import AUTH, Server, config, corpus, toml

VECGUARD = str(Path(sys.executable).parent / "vecguard")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
NEW = {
    "id": "new-zx",
    "text": "Glacier meltwater carves turquoise pools in the limestone. Permit ZX-9931-QK covers the trail.",
    "metadata": {"year": 2026},
}


def vecguard_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [VECGUARD, *args], capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=timeout
    )


def write_jsonl(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in documents))
    return path


def ids_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]]


def keyword_ids(server: Server, query: str) -> list[str]:
    return ids_of(httpx.post(f"{server.url}/search", json={"query": query, "mode": "keyword"}))


@contextmanager
def serving(cfg: dict[str, Any], folder: Path) -> Iterator[Server]:
    """`vecguard serve` on ``cfg`` with open writes, ready; stopped after the block."""
    server = Server(cfg, folder, open_writes=True)
    try:
        server.wait_until(200)
        yield server
    finally:
        server.stop()


def documents(prefix: str, count: int) -> list[dict[str, Any]]:
    """``count`` distinct documents, each long enough for several chunks at 64 tokens."""
    words = "river stone lantern orchard copper meadow harbour violin thistle ember quartz falcon".split()
    return [
        {
            "id": f"{prefix}-{i:03d}",
            "text": " ".join(f"{words[(i + j) % len(words)]}{i}" for j in range(90)) + f" Marker {prefix.upper()}{i}X.",
            "metadata": {"batch": prefix, "n": i},
        }
        for i in range(count)
    ]


def sound(cfg: dict[str, Any]) -> vecguard.Engine:
    """The collection opened afresh, after asserting that check finds nothing wrong and the counts are exact."""
    engine = vecguard.open(cfg, create=False)
    assert engine.check_integrity() == [], engine.check_integrity()
    heads = sum(1 for _, payloads in engine.collection.scan_payloads() for p in payloads if p["chunk"] == 0)
    assert engine.count() == heads
    assert engine.manifest["counts"]["chunks"] == engine.store.count() == engine.keyword.count()
    return engine


@pytest.fixture
def collection(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    cfg = config("faiss", tmp_path / "index")
    with vecguard.open(cfg) as engine:
        engine.add(corpus())
    path = tmp_path / "vecguard.toml"
    path.write_text(toml(cfg))
    return cfg, path


def test_a_server_sees_a_cli_write_at_its_next_request_and_the_cli_never_rebuilds_after_the_server_writes(
    collection: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    cfg, _ = collection
    with serving(cfg, tmp_path) as server:
        assert keyword_ids(server, "ZX-9931-QK") == []

        written = vecguard_cli(
            "index", "-c", str(tmp_path / "serve.toml"), str(write_jsonl(tmp_path / "n.jsonl", [NEW]))
        )
        assert written.returncode == 0, written.stderr

        assert keyword_ids(server, "ZX-9931-QK")[:1] == ["new-zx"]
        assert ids_of(
            httpx.post(
                f"{server.url}/search", json={"query": "turquoise pools carved by glacier meltwater", "mode": "dense"}
            )
        )[:1] == ["new-zx"]
        assert httpx.get(f"{server.url}/documents/new-zx").status_code == 200
        assert httpx.get(f"{server.url}/readyz").json()["documents"] == len(corpus()) + 1

        other = {"id": "from-server", "text": "Saffron threads colour the risotto a deep gold. Lot SF-771-B."}
        answer = httpx.post(f"{server.url}/documents", json={"documents": [other]}, headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json()["documents"] == len(corpus()) + 2  # the CLI's document counted, once

        read = vecguard_cli("search", "-c", str(tmp_path / "serve.toml"), "SF-771-B", "--mode", "keyword", "--json")
        assert read.returncode == 0, read.stderr
        assert [hit["id"] for hit in json.loads(read.stdout)][:1] == ["from-server"]
        assert "rebuilding" not in read.stderr and "repairing" not in read.stderr, read.stderr
    assert "rebuilding" not in (tmp_path / "serve.log").read_text()
    with sound(cfg) as engine:
        assert engine.count() == len(corpus()) + 2


READER = """
import sys, vecguard
engine = vecguard.open(sys.argv[1], create=False)
engine.search("river stone", k=3, mode="dense")  # the index is built (or loaded) and held
print("open", flush=True)
sys.stdin.readline()  # while it waits, another process writes
engine.search("river stone", k=3, mode="dense")
engine.close()  # saves the index files: they must reflect the other process's writes
"""


def test_a_reader_that_closes_after_a_writer_never_saves_an_index_without_the_writers_points(
    collection: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    cfg, path = collection
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        added = documents("late", 12)
        written = vecguard_cli("index", "-c", str(path), str(write_jsonl(tmp_path / "late.jsonl", added)))
        assert written.returncode == 0, written.stderr
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.wait(timeout=120) == 0
    finally:
        reader.kill()
    with sound(cfg) as engine:
        found = [engine.search(d["text"], k=1, mode="dense")[0].id for d in added]
        assert found == [d["id"] for d in added]
        assert engine.store.index_state.vectors == engine.store.count()


def test_two_processes_writing_at_once_store_every_document_once_with_exact_counts(
    collection: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    cfg, _ = collection
    small_batches = {**cfg, "chunking": {**cfg["chunking"], "batch_documents": 3}}
    path = tmp_path / "batches.toml"
    path.write_text(toml(small_batches))
    sets = {name: documents(name, 15) for name in ("left", "right")}
    writers = [
        subprocess.Popen(
            [VECGUARD, "index", "-c", str(path), str(write_jsonl(tmp_path / f"{name}.jsonl", docs))],
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for name, docs in sets.items()
    ]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()
    with sound(cfg) as engine:
        assert engine.count() == len(corpus()) + 30
        for docs in sets.values():
            assert [d.id for d in engine.get([d["id"] for d in docs])] == [d["id"] for d in docs]
            marker = docs[7]["text"].split()[-1]
            assert [h.id for h in engine.search(marker, k=1, mode="keyword")] == [docs[7]["id"]]


def test_a_writer_killed_mid_batch_leaves_the_server_answering_and_the_next_write_repairs_it(
    collection: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    cfg, _ = collection
    long_one = documents("long", 1)[0]
    with vecguard.open(cfg) as engine:
        engine.add([long_one])  # several chunks; the killed write replaces it with one
        chunks_before = engine.store.count()
    with serving(cfg, tmp_path) as server:
        shorter = dict(long_one, text="A single short sentence now.")
        killed = vecguard_cli(
            "index",
            "-c",
            str(tmp_path / "serve.toml"),
            str(write_jsonl(tmp_path / "short.jsonl", [shorter])),
            env={"VECGUARD_KILL_AT": "write.batch"},
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        with vecguard.Engine(vecguard.load_config(cfg), create=False, repair=False) as peek:
            assert peek.state["writing"] is True  # left marked, with orphans beyond the new first chunk
            assert peek.store.count() == chunks_before
        assert ids_of(httpx.post(f"{server.url}/search", json={"query": "Reference ORD-2024-00017"}))[:1] == ["doc-00"]

        answer = httpx.post(f"{server.url}/documents", json={"documents": [NEW]}, headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json()["documents"] == len(corpus()) + 2
    with sound(cfg) as engine:
        assert engine.state["writing"] is False
        assert [d.text for d in engine.get([long_one["id"]])] == ["A single short sentence now."]


HOLDER = """
import sys, time
from pathlib import Path
from vecguard.file_lock import hold_file_lock
with hold_file_lock(Path(sys.argv[1]), 5, "the test's lock holder", where=sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_waits_then_names_the_holder_and_a_killed_holder_frees_the_collection(
    collection: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    cfg, _ = collection
    impatient = {**cfg, "store": {**cfg["store"], "lock_timeout": 1}}
    path = tmp_path / "impatient.toml"
    path.write_text(toml(impatient))
    new = str(write_jsonl(tmp_path / "n.jsonl", [NEW]))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, cfg["store"]["path"]], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        refused = vecguard_cli("index", "-c", str(path), new)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert "the test's lock holder" in lines[0] and "lock_timeout" in lines[0], lines
        assert time.monotonic() - started >= 1
        read = vecguard_cli("search", "-c", str(path), "ZX-9931-QK", "--json")  # reads never wait for the lock
        assert read.returncode == 0 and "new-zx" not in read.stdout, read.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    written = vecguard_cli("index", "-c", str(path), new)
    assert written.returncode == 0, written.stderr
    with sound(cfg) as engine:
        assert engine.count() == len(corpus()) + 1


def test_two_servers_over_one_chroma_server_see_each_others_adds_and_deletes_at_their_next_request(
    chroma_server: tuple[str, int], tmp_path: Path
) -> None:
    host, port = chroma_server
    cfg = config("chroma")
    cfg["store"].update(host=host, port=port, collection=f"replicas-{os.getpid()}")
    with vecguard.open(cfg) as engine:
        engine.add(corpus())
    replicas = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        replicas.append(Server(cfg, tmp_path / name, open_writes=True))
    try:
        for replica in replicas:
            replica.wait_until(200)
        one, other = replicas
        answer = httpx.post(f"{one.url}/documents", json={"documents": [NEW]}, headers=AUTH)
        assert answer.status_code == 200 and answer.json()["documents"] == len(corpus()) + 1, answer.text
        dense_query = {"query": "turquoise pools carved by glacier meltwater", "mode": "dense"}
        assert keyword_ids(other, "ZX-9931-QK")[:1] == ["new-zx"]
        assert ids_of(httpx.post(f"{other.url}/search", json=dense_query))[:1] == ["new-zx"]

        gone = httpx.request("DELETE", f"{other.url}/documents", json={"ids": ["new-zx"]}, headers=AUTH)
        assert gone.status_code == 200 and gone.json() == {"deleted": 1, "documents": len(corpus())}, gone.text
        assert "new-zx" not in keyword_ids(one, "ZX-9931-QK")
        assert "new-zx" not in ids_of(httpx.post(f"{one.url}/search", json=dense_query))
        assert httpx.get(f"{one.url}/documents/new-zx").status_code == 404
    finally:
        for replica in replicas:
            replica.stop()


def test_a_write_to_a_server_after_a_reindex_goes_into_the_new_collection_not_the_retired_one(
    collection: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    cfg, _ = collection
    with serving(cfg, tmp_path) as server:
        rebuilt = vecguard_cli("reindex", "-c", str(tmp_path / "serve.toml"))
        assert rebuilt.returncode == 0, rebuilt.stderr
        answer = httpx.post(f"{server.url}/documents", json={"documents": [NEW]}, headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json()["documents"] == len(corpus()) + 1
        assert keyword_ids(server, "ZX-9931-QK")[:1] == ["new-zx"]
    assert "was replaced" in (tmp_path / "serve.log").read_text()
    with sound(cfg) as engine:  # after the server is gone: the acknowledged write is in the live collection
        assert [d.id for d in engine.get(["new-zx"])] == ["new-zx"]


def test_a_failed_batch_of_a_new_document_is_repaired_by_the_next_write_without_reading_the_collection(
    collection: tuple[dict[str, Any], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, _ = collection
    engine = vecguard.open(cfg)
    store = engine.store
    real_upsert = store.upsert

    def dies_before_the_first_chunk(ids, vectors, payloads):  # noqa: ANN001, ANN202
        rest = [i for i, p in enumerate(payloads) if p["chunk"] != 0]
        real_upsert([ids[i] for i in rest], vectors[rest], [payloads[i] for i in rest])
        raise vecguard.StorageError("the disk went away")

    monkeypatch.setattr(store, "upsert", dies_before_the_first_chunk)
    with pytest.raises(vecguard.StorageError, match="went away"):
        engine.add(documents("torn", 1))
    monkeypatch.undo()
    assert engine.state["writing"] is True and engine.store.count() > engine.manifest["counts"]["chunks"]

    scans = []
    monkeypatch.setattr(engine.collection, "scan_payloads", lambda *a, **k: scans.append(1) or iter(()))
    engine.add([NEW])
    monkeypatch.undo()
    assert scans == []  # the repair read the torn document's chunks only
    engine.close()
    with sound(cfg) as reopened:
        assert reopened.count() == len(corpus()) + 1
        assert reopened.get(["torn-000"]) == []


class WholeFileKeywordIndex:
    """A third party's keyword index that saves itself whole (no SavesIncrementally): BM25 underneath."""

    def __init__(self) -> None:
        from vecguard.plugins.bm25 import BM25Index

        self._index = BM25Index()

    def __getattr__(self, name: str) -> Any:
        if name in ("settings", "add", "delete", "search", "exact_matches", "count", "ids"):
            return getattr(self._index, name)
        raise AttributeError(name)

    def save(self, directory: Path) -> None:
        self._index.save(directory)

    def load(self, directory: Path) -> bool:
        return self._index.load(directory)


def test_two_engines_on_one_folder_see_each_others_writes_with_a_keyword_index_saved_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two engines in one process hold two SQLite connections and two lock files, as two processes would."""
    registry = vecguard.Registry.discover()
    registry.add(vecguard.Part("keyword", "whole-file", lambda options, base: WholeFileKeywordIndex()))
    assert not isinstance(WholeFileKeywordIndex(), vecguard.SavesIncrementally)
    cfg = vecguard.load_config(config("faiss", tmp_path / "index", keyword={"plugin": "whole-file"}))
    with vecguard.Engine(cfg, registry=registry) as one, vecguard.Engine(cfg, registry=registry) as other:
        one.add(corpus())
        assert [h.id for h in other.search("CVE-2022-24045", k=1, mode="keyword")] == ["doc-01"]
        assert one.search("glacier meltwater", k=3, mode="dense", filter={"year": 2026}) == []  # a filter kept
        other.add([NEW])
        assert [h.id for h in one.search("ZX-9931-QK", k=1, mode="keyword")] == ["new-zx"]
        assert [h.id for h in one.search("glacier meltwater", k=3, mode="dense", filter={"year": 2026})] == ["new-zx"]
        assert one.count() == other.count() == len(corpus()) + 1
        one.delete(["new-zx"])
        assert other.search("ZX-9931-QK", k=1, mode="keyword") == [] and other.count() == len(corpus())
    saved = json.loads((tmp_path / "index" / "keyword" / "state.json").read_text())
    assert isinstance(saved["token"], int)
    with caplog.at_level("WARNING"), vecguard.Engine(cfg, registry=registry, create=False) as reopened:
        assert [h.id for h in reopened.search("CVE-2022-24045", k=1, mode="keyword")] == ["doc-01"]
    assert "rebuilding" not in caplog.text

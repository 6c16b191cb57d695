"""Ingest: unchanged documents are skipped, and `vecguard index` killed with SIGKILL resumes to the same collection."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import vecguard
from conftest import ROOT, config, corpus

sys.path.insert(0, str(ROOT))
from benchmarks.corpora import cwe_documents  # noqa: E402

KILL_CORPUS = 150


def test_readding_unchanged_documents_encodes_nothing_and_a_changed_one_is_rewritten(tmp_path: Path) -> None:
    with vecguard.open(config("faiss", tmp_path / "index")) as engine:
        assert engine.add(corpus()) == 20
        encoded: list[int] = []
        encode = engine.encoder.encode_documents
        engine.encoder.encode_documents = lambda texts: (encoded.append(len(texts)), encode(texts))[1]  # type: ignore[method-assign]
        manifest_before = json.dumps(engine.store.read_manifest(), sort_keys=True)

        assert engine.add(corpus()) == 0
        assert engine.last_add == {"written": 0, "unchanged": 20} and encoded == []
        assert json.dumps(engine.store.read_manifest(), sort_keys=True) == manifest_before  # not even marked mid-write

        changed = corpus()
        changed[3]["metadata"] = {**changed[3]["metadata"], "year": 1999}
        changed[5]["text"] += " One more sentence."
        assert engine.add(changed) == 2
        assert engine.last_add == {"written": 2, "unchanged": 18} and len(encoded) == 1
        assert engine.get(["doc-03"])[0].metadata["year"] == 1999
        assert engine.count() == 20 and engine.count_chunks() == engine.keyword.count()


def _stored(path: Path) -> dict[str, tuple[np.ndarray, dict]]:
    with vecguard.open(config("faiss", path)) as engine:
        return {
            key: (vector, payload)
            for ids, vectors, payloads in engine.store.scan()
            for key, vector, payload in zip(ids, vectors, payloads)
        }


def _write_config(folder: Path) -> Path:
    folder.mkdir()
    (folder / "vecguard.toml").write_text(
        '[store]\nplugin = "faiss"\npath = "index"\n[chunking]\ntokens = 64\noverlap = 8\nbatch_documents = 8\n'
    )
    return folder


def _index(folder: Path, source: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vecguard.cli", "index", "--config", "vecguard.toml", str(source), "-q"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def _chunks_committed(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM points").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def test_vecguard_index_killed_with_sigkill_resumes_and_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    source = tmp_path / "cwe.jsonl"
    with open(source, "w", encoding="utf-8") as out:
        for _, document in zip(range(KILL_CORPUS), cwe_documents()):
            out.write(json.dumps(document) + "\n")

    whole = _write_config(tmp_path / "whole")
    finished = _index(whole, source)
    out, err = finished.communicate(timeout=600)
    assert finished.returncode == 0, err[-2000:]
    expected = _stored(whole / "index")
    chunk_count = len(expected)

    resumed = _write_config(tmp_path / "resumed")
    victim = _index(resumed, source)
    deadline = time.monotonic() + 600
    while _chunks_committed(resumed / "index" / "points.sqlite3") < chunk_count // 3:
        assert victim.poll() is None, "the run finished before it could be killed: grow KILL_CORPUS"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    committed = _chunks_committed(resumed / "index" / "points.sqlite3")
    assert 0 < committed < chunk_count

    rerun = _index(resumed, source)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    skipped = int(out.split("documents, ")[1].split(" already stored unchanged")[0])
    assert skipped >= 8, out  # at least one committed batch was not encoded again

    got = _stored(resumed / "index")
    assert sorted(got) == sorted(expected)
    for key, (vector, payload) in expected.items():
        assert got[key][1] == payload, key
        # Batches are composed differently after the resume; padding moves the last float bits only.
        np.testing.assert_allclose(got[key][0], vector, atol=1e-5, err_msg=key)
    with vecguard.open(config("faiss", whole / "index")) as a, vecguard.open(config("faiss", resumed / "index")) as b:
        assert b.manifest["state"]["writing"] is False
        assert (a.count(), a.count_chunks()) == (b.count(), b.count_chunks()) == (KILL_CORPUS, chunk_count)
        assert b.keyword.count() == chunk_count
        for query in ("cross-site scripting in a web page", "CVE-2014-3852", "integer overflow"):
            assert [(h.id, round(h.score, 4)) for h in a.search(query, k=10)] == [
                (h.id, round(h.score, 4)) for h in b.search(query, k=10)
            ]
        assert a.manifest["id"] == b.manifest["id"]


def test_documents_come_from_a_generator_a_bounded_number_of_batches_at_a_time(tmp_path: Path) -> None:
    pulled: list[int] = []

    def stream():
        for i, document in enumerate(corpus()):
            pulled.append(i)
            yield document

    class Committed:
        """A progress bar: add() counts each batch once it is committed."""

        def update(self, documents: int) -> None:
            seen_when_written.append(len(pulled))

    seen_when_written: list[int] = []
    with vecguard.open(config("faiss", tmp_path / "index", chunking={"batch_documents": 4})) as engine:
        assert engine.add(stream(), progress=Committed()) == 20
    # Each batch is written once the next one is read and handed to the encoder: the generator is never
    # read more than one batch ahead of the batch being written.
    assert seen_when_written == [8, 12, 16, 20, 20]


def test_the_next_batch_is_encoded_while_the_one_before_it_is_written(tmp_path: Path) -> None:
    encoding_started = threading.Event()
    overlapped: list[bool] = []
    with vecguard.open(config("faiss", tmp_path / "index", chunking={"batch_documents": 5})) as engine:
        encode, upsert = engine.encoder.encode_documents, engine.store.upsert
        calls = {"encode": 0}

        def observed_encode(texts):
            calls["encode"] += 1
            if calls["encode"] >= 2:
                encoding_started.set()
            return encode(texts)

        def observed_upsert(ids, vectors, payloads):
            if not overlapped:  # the first batch's write: the second batch's encoding must already be under way
                overlapped.append(encoding_started.wait(timeout=60))
            return upsert(ids, vectors, payloads)

        engine.encoder.encode_documents = observed_encode
        engine.store.upsert = observed_upsert
        assert engine.add(corpus()) == 20
        assert engine.count() == 20 and engine.search("buffer overflow", k=3)
    assert overlapped == [True]


def test_a_document_repeated_in_consecutive_batches_ends_as_its_last_version(tmp_path: Path) -> None:
    long_text = " ".join(["the first version of the document is long enough for several chunks"] * 80)

    def stream():  # two to a batch: the second version arrives in the batch after the first, while it is pending
        yield {"id": "twice", "text": long_text}
        yield {"id": "d0", "text": "filler document number zero"}
        yield {"id": "twice", "text": "the second version is short"}
        yield {"id": "d1", "text": "filler document number one"}
        yield {"id": "d2", "text": "filler document number two"}

    with vecguard.open(config("faiss", tmp_path / "index", chunking={"batch_documents": 2})) as engine:
        engine.add(stream())
        assert (engine.count(), engine.count_chunks(), engine.store.count()) == (4, 4, 4)
        assert [h.text for h in engine.search("second version", k=1)] == ["the second version is short"]
    with vecguard.open(config("faiss", tmp_path / "index")) as reopened:
        assert (reopened.count(), reopened.count_chunks(), reopened.store.count()) == (4, 4, 4)

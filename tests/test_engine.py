"""The engine's contract on the exact reference (memory) and on FAISS: same corpus, same answers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import vecguard
from conftest import IDENTIFIERS, config, corpus, run_python

STORES = ["memory", "faiss", "chroma", "qdrant"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One collection per store, built once for the read-only tests of this module."""
    paths = {}
    for store in STORES:
        path = tmp_path_factory.mktemp(store) / "index"
        with vecguard.open(config(store, path)) as engine:
            engine.add(corpus())
        paths[store] = path
    return paths


@pytest.fixture(params=STORES)
def engine(request: pytest.FixtureRequest, built: dict[str, Path]):
    with vecguard.open(config(request.param, built[request.param])) as opened:
        yield opened


@pytest.fixture(params=STORES)
def fresh(request: pytest.FixtureRequest, tmp_path: Path):
    with vecguard.open(config(request.param, tmp_path / "index")) as opened:
        yield opened


def test_counts_documents_and_chunks(engine) -> None:
    assert engine.count() == 20
    assert engine.count_chunks() == 20


def test_a_semantic_query_finds_its_document_first(engine) -> None:
    hits = engine.search("my parcel is late because of bad weather", k=3)
    assert hits[0].id == "doc-02"
    assert hits[0].rank_of("dense") == 1


@pytest.mark.parametrize("position", range(len(IDENTIFIERS)))
def test_an_exact_identifier_query_returns_its_document_first_in_hybrid_mode(engine, position: int) -> None:
    hits = engine.search(IDENTIFIERS[position], k=3)
    assert hits[0].id == f"doc-{position:02d}"
    assert hits[0].rank_of("keyword") == 1
    assert "identifier" in hits[0].signals


def test_every_hit_explains_itself(engine) -> None:
    for hit in engine.search("attackers run code through untrusted input", k=5):
        assert hit.signals, hit
        for name, evidence in hit.signals.items():
            assert name in ("dense", "keyword", "identifier", "verbatim")
            assert evidence.rank >= 1
        assert hit.text and hit.metadata["topic"]


def test_every_backend_answers_like_the_memory_reference(built: dict[str, Path]) -> None:
    """Every backend gives the reference's answers; Qdrant, which keeps its keyword signal inside Qdrant (Qdrant's
    IDF), gives the same dense answers and the same first hit where the keyword signal decides it."""
    queries = [
        "volcanic eruption",
        "how do I get my money back",
        "ORD-2024-00017",
        "memory safety in systems languages",
    ]
    answers = {}
    for store in STORES:
        with vecguard.open(config(store, built[store])) as engine:
            answers[store] = {
                (q, mode): [
                    (h.id, round(h.score, 4), h.rank_of("dense"), h.rank_of("keyword"))
                    for h in engine.search(q, k=10, mode=mode)
                ]
                for q in queries
                for mode in ("hybrid", "dense", "keyword")
            }
    for store in STORES[1:]:
        for asked, reference in answers["memory"].items():
            candidate = answers[store][asked]
            if store == "qdrant" and asked[1] != "dense":
                assert candidate[0][0] == reference[0][0], (store, asked)
                continue
            assert [row[0] for row in reference] == [row[0] for row in candidate], (store, asked)
            for (_, ref_score, *_), (_, score, *_) in zip(reference, candidate):
                assert score == pytest.approx(ref_score, abs=1e-4), (store, asked)


def test_dense_scores_are_cosines_on_the_same_scale(engine) -> None:
    hits = engine.search("Plants turn sunlight, water and carbon dioxide into sugar", k=20, mode="dense")
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert 0.5 < scores[0] <= 1.0001
    assert all(-1.0001 <= s <= 1.0001 for s in scores)


def test_min_score_with_no_passing_document_returns_nothing(engine) -> None:
    assert engine.search("qwxz vbnm plok", k=5, min_score=0.6) == []
    assert engine.search("qwxz vbnm plok", k=5, mode="dense", min_score=0.6) == []
    assert engine.search("qwxz vbnm plok", k=5, mode="dense")  # without a floor: the nearest nonsense


def test_min_score_keeps_keyword_only_identifier_matches_in_hybrid(engine) -> None:
    hits = engine.search("CVE-2022-24045", k=3, min_score=0.99)
    assert [h.id for h in hits] == ["doc-01"]
    assert hits[0].rank_of("dense") is None


def test_filter_restricts_both_signals(engine) -> None:
    flt = {"year": {"$gte": 2016}, "public": True}
    expected = {d["id"] for d in corpus() if d["metadata"]["year"] >= 2016 and d["metadata"]["public"]}
    for mode in ("hybrid", "dense", "keyword"):
        hits = engine.search("reference applies to this case", k=20, mode=mode, filter=flt)
        assert hits and {h.id for h in hits} <= expected, mode


def test_filter_with_in_and_missing_fields(engine) -> None:
    hits = engine.search("anything at all", k=20, mode="dense", filter={"court": {"$in": ["UK", "EU"]}})
    expected = {d["id"] for d in corpus() if d["metadata"].get("court") in ("UK", "EU")}
    assert {h.id for h in hits} == expected


def test_a_malformed_filter_names_the_bad_part(engine) -> None:
    with pytest.raises(vecguard.FilterError, match=r"\$between"):
        engine.search("x", filter={"year": {"$between": [1, 2]}})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k": 0}, "k must"), ({"mode": "fuzzy"}, "mode must"), ({"mode": "keyword", "min_score": 0.3}, "keyword mode")],
)
def test_bad_search_arguments_are_refused(engine, kwargs: dict, message: str) -> None:
    with pytest.raises(vecguard.VecguardError, match=message):
        engine.search("x", **kwargs)


def test_get_rebuilds_the_exact_text(engine) -> None:
    by_id = {d["id"]: d for d in corpus()}
    documents = engine.get(["doc-03", "missing", "doc-07"])
    assert [d.id for d in documents] == ["doc-03", "doc-07"]
    for document in documents:
        assert document.text == by_id[document.id]["text"]
        assert document.metadata == by_id[document.id]["metadata"]


LONG = " ".join(f"Sentence number {i} talks about lighthouses and the keepers who tended them." for i in range(60))


def test_long_documents_are_chunked_and_rebuilt_exactly(fresh) -> None:
    fresh.add([{"id": "long", "text": LONG}])
    assert fresh.count() == 1
    assert fresh.count_chunks() > 5
    assert fresh.get(["long"])[0].text == LONG
    chunk_hits = fresh.search("lighthouse keepers", k=50, chunks=True, mode="dense")
    assert len(chunk_hits) == fresh.count_chunks()
    assert all(LONG[h.start : h.end] == h.text for h in chunk_hits)
    assert [h.id for h in fresh.search("lighthouse keepers", k=5)] == ["long"]


def test_re_adding_an_id_replaces_every_chunk(fresh) -> None:
    fresh.add(
        [{"id": "long", "text": LONG, "metadata": {"v": 1}}, {"id": "other", "text": "An unrelated note about tea."}]
    )
    fresh.add([{"id": "long", "text": "Now a short text about submarines.", "metadata": {"v": 2}}])
    assert fresh.count() == 2
    assert fresh.count_chunks() == 2
    assert fresh.get(["long"])[0].metadata == {"v": 2}
    assert fresh.search("lighthouse keepers", k=5, mode="keyword") == []
    assert fresh.search("submarines", k=1)[0].id == "long"


def test_delete_removes_a_document_from_both_signals(fresh) -> None:
    fresh.add(corpus())
    assert fresh.delete(["doc-00", "not-there"]) == 1
    assert fresh.count() == 19
    assert fresh.get(["doc-00"]) == []
    for mode in ("dense", "keyword", "hybrid"):
        assert "doc-00" not in {h.id for h in fresh.search("ORD-2024-00017 password reset", k=20, mode=mode)}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"id": "", "text": "x"}, "'id'"),
        ({"id": "a", "text": "   "}, "'text'"),
        ({"id": "a", "text": "x", "metadata": {"tags": ["a", "b"]}}, "tags"),
        ({"id": "a", "text": "x", "metadata": {"n": float("nan")}}, "'n'"),
        ({"id": "a", "text": "x", "metadata": {"$or": 1}}, r"\$or"),
    ],
)
def test_a_malformed_document_is_refused_after_the_good_ones_are_kept(fresh, document: dict, message: str) -> None:
    good = [{"id": f"good-{i}", "text": f"good document number {i}"} for i in range(3)]
    with pytest.raises(vecguard.DocumentError, match=message):
        fresh.add([*good, document])
    assert fresh.count() == 3
    assert {d.id for d in fresh.get(["good-0", "good-2"])} == {"good-0", "good-2"}


@pytest.mark.parametrize("store", STORES)
def test_results_survive_a_restart_in_a_fresh_process(store: str, tmp_path: Path) -> None:
    cfg = config(store, tmp_path / "index")
    with vecguard.open(cfg) as engine:
        engine.add(corpus())
        engine.delete(["doc-05"])
        before = [(h.id, round(h.score, 5)) for h in engine.search("warehouse storms ORD-2024-00017", k=5)]
    code = (
        "import json, sys, vecguard\n"
        "with vecguard.open(json.loads(sys.argv[1])) as e:\n"
        "    hits = e.search('warehouse storms ORD-2024-00017', k=5)\n"
        "    print(json.dumps({'count': e.count(), 'hits': [(h.id, round(h.score, 5)) for h in hits]}))\n"
    )
    result = run_python(code, json.dumps(cfg))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["count"] == 19
    assert [tuple(h) for h in answer["hits"]] == before


@pytest.mark.parametrize("store", STORES[1:])
def test_a_process_killed_mid_add_leaves_a_collection_that_repairs_itself(store: str, tmp_path: Path) -> None:
    cfg = config(store, tmp_path / "index")
    with vecguard.open(cfg) as engine:
        engine.add(corpus()[:10])
    code = (
        "import json, os, sys, vecguard\n"
        "docs = json.loads(sys.argv[2])\n"
        "def stream():\n"
        "    for i, d in enumerate(docs):\n"
        "        if i == 13: os._exit(9)  # like kill -9: no close, no flush\n"
        "        yield d\n"
        "engine = vecguard.open(json.loads(sys.argv[1]))\n"
        "engine.add(stream())\n"
    )
    replaced = [{**d, "text": LONG if d["id"] == "doc-01" else d["text"]} for d in corpus()]
    result = run_python(code, json.dumps(cfg), json.dumps(replaced))
    assert result.returncode == 9, result.stderr
    with vecguard.open(cfg) as engine:
        stored = {}
        for ids, _, payloads in engine.store.scan():
            stored.update(zip(ids, payloads))
        assert engine.count() == len({p["doc_id"] for p in stored.values()})
        assert engine.count_chunks() == len(stored) == engine.keyword.count()
        for key, payload in stored.items():
            assert payload["chunk"] < stored[f"{payload['doc_id']}#0"]["chunks"], key
        assert engine.search("ORD-2024-00017", k=1)[0].id == "doc-00"
    with vecguard.open(cfg) as engine:  # repaired once: the mark is cleared, the next open has nothing to repair
        assert engine.manifest["state"]["writing"] is False


def test_a_home_relative_store_keeps_its_keyword_index_in_the_same_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with vecguard.open(config("faiss", Path("~/coll"))) as engine:
        engine.add(corpus()[:3])
    assert (tmp_path / "home" / "coll" / "points.sqlite3").exists()
    assert (tmp_path / "home" / "coll" / "keyword" / "bm25-segments.json").exists()
    assert not (tmp_path / "~").exists()


def test_an_engine_shared_between_threads_reads_together_and_a_write_holds_reads_off_while_it_commits(
    tmp_path: Path,
) -> None:
    with vecguard.open(config("faiss", tmp_path / "index")) as engine:
        engine.add(corpus())
        engine.share_between_threads()

        def search_in_a_thread() -> tuple[threading.Thread, threading.Event]:
            done = threading.Event()
            thread = threading.Thread(target=lambda: (engine.search("CVE-2022-24045", k=1), done.set()))
            thread.start()
            return thread, done

        with engine.write_lock():  # what a write holds while it changes the collection
            thread, done = search_in_a_thread()
            assert not done.wait(0.5), "a search ran while a write was changing the collection"
        assert done.wait(60)
        thread.join()

        with engine.read_lock():  # another read in progress
            thread, done = search_in_a_thread()
            assert done.wait(60), "a search waited for another read"
        thread.join()

        engine.add([{"id": "late", "text": "A note added after sharing began.", "metadata": {}}])
        assert engine.count() == len(corpus()) + 1

"""vecguard inside Haystack: Haystack's own DocumentStore suite on a FAISS collection, then the retriever in a
pipeline, filters, serialisation, sharing and the version guard."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import haystack.telemetry._telemetry
import pytest
import vecguard
from conftest import config, corpus, run_python, toml
from haystack import Document, Pipeline
from haystack.dataclasses import ByteStream
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy
from haystack.errors import FilterError as HaystackFilterError
from haystack.testing.document_store import (
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    DeleteAllTest,
    DeleteByFilterTest,
    DocumentStoreBaseTests,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldUniqueValuesTest,
    UpdateByFilterTest,
)
from haystack.utils.filters import document_matches_filter
from vecguard.integrations.haystack import VecguardDocumentStore, VecguardRetriever, translate_filters

CVE_HOLDER = "doc-01"  # its text ends "Reference CVE-2022-24045 applies to this case."
DISTRACTORS = [
    Document(id="near-cve", content="Advisory CVE-2022-24054 covers another buffer overflow in the same library."),
    Document(id="cve-words", content="The 2022 CVE report counted 24045 new entries across every vendor."),
]


def haystack_corpus() -> list[Document]:
    """The shared 20-document corpus as Haystack Documents, plus two that share the CVE's words but not the CVE."""
    documents = [Document(id=d["id"], content=d["text"], meta=dict(d["metadata"])) for d in corpus()]
    return documents + DISTRACTORS


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Haystack reports pipeline runs to PostHog unless told not to; tests reach no network."""
    monkeypatch.setattr(haystack.telemetry._telemetry, "telemetry", None)


@pytest.fixture
def faiss_config(tmp_path: Path) -> dict[str, Any]:
    return config("faiss", tmp_path / "collection")


@pytest.fixture
def store(faiss_config: dict[str, Any]) -> Iterator[VecguardDocumentStore]:
    """An empty store of its own, for a test that writes."""
    with VecguardDocumentStore(config=faiss_config) as opened:
        yield opened


@pytest.fixture(scope="module")
def suite_collection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VecguardDocumentStore]:
    """The collection Haystack's suite runs on, emptied before each of its tests (opening a collection costs more
    than most tests: it encodes the guard's probes)."""
    with VecguardDocumentStore(config=config("faiss", tmp_path_factory.mktemp("suite") / "c")) as opened:
        yield opened


@pytest.fixture(scope="module")
def corpus_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return config("faiss", tmp_path_factory.mktemp("corpus") / "collection")


@pytest.fixture(scope="module")
def corpus_store(corpus_config: dict[str, Any]) -> Iterator[VecguardDocumentStore]:
    """The corpus, written once for the tests that only read it."""
    with VecguardDocumentStore(config=corpus_config) as opened:
        assert opened.write_documents(haystack_corpus()) == len(haystack_corpus())
        yield opened


# ------------------------------------------------------------ Haystack's own suite


class TestHaystackDocumentStoreSuite(
    DocumentStoreBaseTests,
    DeleteAllTest,
    DeleteByFilterTest,
    UpdateByFilterTest,
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldUniqueValuesTest,
):
    """Every test Haystack ships for a DocumentStore, on one FAISS collection emptied before each test."""

    @pytest.fixture
    def document_store(self, suite_collection: VecguardDocumentStore) -> VecguardDocumentStore:
        suite_collection.delete_all_documents()
        assert list(suite_collection.engine.documents()) == []
        return suite_collection

    @staticmethod
    def assert_documents_are_equal(received: list[Document], expected: list[Document]) -> None:
        """Equal in everything but the expected documents' embeddings (vecguard encodes content itself and returns
        embedding=None, which ``received`` must hold) and order (the protocol promises none)."""
        without_embeddings = [replace(d, embedding=None, sparse_embedding=None) for d in expected]
        assert sorted(received, key=lambda d: d.id) == sorted(without_embeddings, key=lambda d: d.id)

    def test_write_documents(self, document_store: VecguardDocumentStore) -> None:
        """The default policy (NONE) refuses an id that is already stored, like FAIL."""
        doc = Document(content="test doc")
        assert document_store.write_documents([doc]) == 1
        with pytest.raises(DuplicateDocumentError, match="already stored"):
            document_store.write_documents([doc])
        self.assert_documents_are_equal(document_store.filter_documents(), [doc])


# ------------------------------------------------------------ the retriever


def test_an_identifier_query_ranks_its_document_first_in_a_pipeline(corpus_store: VecguardDocumentStore) -> None:
    pipeline = Pipeline()
    pipeline.add_component("retriever", VecguardRetriever(document_store=corpus_store, top_k=5))

    result = pipeline.run({"retriever": {"query": "CVE-2022-24045"}})["retriever"]

    documents = result["documents"]
    assert documents[0].id == CVE_HOLDER
    assert {"near-cve", "cve-words"} & {d.id for d in documents}, "the distractors share the query's words"
    hits = corpus_store.engine.search("CVE-2022-24045", k=5)
    assert [(d.id, d.score) for d in documents] == [(h.id, h.score) for h in hits]
    assert documents[0].meta == {"year": 2016, "topic": "refund policy", "public": False}
    assert documents[0].embedding is None
    assert "identifier" in result["evidence"][CVE_HOLDER]["signals"]
    assert result["evidence"][CVE_HOLDER]["signals"]["keyword"]["rank"] >= 1
    assert result["evidence"][CVE_HOLDER]["score"] == documents[0].score


def test_a_long_document_comes_back_whole_with_the_passage_named_in_the_evidence(
    store: VecguardDocumentStore,
) -> None:
    filler = " ".join(f"The committee met on day {n} and discussed the harbour budget at length." for n in range(12))
    text = f"{filler} The breach is tracked as CVE-2023-4863 in the image decoder."
    store.write_documents([Document(id="minutes", content=text), Document(id="other", content="Harbour budget.")])

    result = VecguardRetriever(document_store=store, top_k=1).run(query="CVE-2023-4863")

    assert [d.content for d in result["documents"]] == [text]
    passage = result["evidence"]["minutes"]["passage"]
    assert passage["chunk"] > 0 and "CVE-2023-4863" in text[passage["start"] : passage["end"]]


@pytest.mark.parametrize("mode", ["dense", "keyword"])
def test_the_mode_chooses_the_signal_and_the_score(corpus_store: VecguardDocumentStore, mode: str) -> None:
    retriever = VecguardRetriever(document_store=corpus_store, top_k=3, mode=mode)

    result = retriever.run(query="CVE-2022-24045 buffer overflow")

    hits = corpus_store.engine.search("CVE-2022-24045 buffer overflow", k=3, mode=mode)
    assert [(d.id, d.score) for d in result["documents"]] == [(h.id, h.score) for h in hits]
    assert all(set(found["signals"]) == {mode} for found in result["evidence"].values())


def test_an_exact_filter_returns_top_k_matching_documents(corpus_store: VecguardDocumentStore) -> None:
    filters = {
        "operator": "AND",
        "conditions": [
            {"field": "meta.year", "operator": ">=", "value": 2018},
            {"field": "meta.public", "operator": "==", "value": True},
        ],
    }
    assert translate_filters(filters).exact
    matching = [d for d in corpus_store.filter_documents() if document_matches_filter(filters, d)]
    assert len(matching) > 4

    documents = VecguardRetriever(document_store=corpus_store, top_k=4).run(query="CVE-2022-24045", filters=filters)[
        "documents"
    ]

    assert len(documents) == 4
    assert all(document_matches_filter(filters, d) for d in documents)


def test_a_filter_on_ids_fetches_more_until_top_k_documents_match(corpus_store: VecguardDocumentStore) -> None:
    """Three documents far from the query: a top-k search finds none of them, so the retriever must widen."""
    wanted = ["doc-06", "doc-09", "doc-13"]  # photosynthesis, bread, coffee
    filters = {"field": "id", "operator": "in", "value": wanted}
    assert not translate_filters(filters).exact
    assert not {h.id for h in corpus_store.engine.search("CVE-2022-24045", k=3)} & set(wanted)

    documents = VecguardRetriever(document_store=corpus_store, top_k=3).run(query="CVE-2022-24045", filters=filters)[
        "documents"
    ]

    assert sorted(d.id for d in documents) == wanted


def test_the_init_filters_are_replaced_or_merged_by_the_run_filters(corpus_store: VecguardDocumentStore) -> None:
    public = {"field": "meta.public", "operator": "==", "value": True}
    recent = {"field": "meta.year", "operator": ">", "value": 2020}
    replacing = VecguardRetriever(document_store=corpus_store, filters=public, top_k=20)
    merging = VecguardRetriever(document_store=corpus_store, filters=public, top_k=20, filter_policy="merge")

    replaced = replacing.run(query="court appeal", filters=recent)["documents"]
    merged = merging.run(query="court appeal", filters=recent)["documents"]

    assert {d.id for d in replaced} == {d.id for d in corpus_store.filter_documents(recent)}
    both = {"operator": "AND", "conditions": [public, recent]}
    assert {d.id for d in merged} == {d.id for d in corpus_store.filter_documents(both)}
    assert {d.id for d in merged} < {d.id for d in replaced}


def test_a_filter_nothing_can_match_returns_no_documents(corpus_store: VecguardDocumentStore) -> None:
    filters = {"field": "meta.year", "operator": ">", "value": None}
    assert translate_filters(filters).empty
    assert VecguardRetriever(document_store=corpus_store).run(query="tax", filters=filters)["documents"] == []
    assert VecguardRetriever(document_store=corpus_store).run(query="tax", top_k=0)["documents"] == []


# ------------------------------------------------------------ filters: exact where they can be, Haystack's meaning


MIXED = [  # "value" holds every type that equals 1 or 0 in Python; "size" only numbers and bools, for ordering
    Document(id="int-1", content="one as an int", meta={"value": 1, "size": 1, "day": "2024-01-31T12:00:00"}),
    Document(id="float-1", content="one as a float", meta={"value": 1.0, "size": 1.0, "day": "2024-01-31T12:00Z"}),
    Document(id="true", content="true as a bool", meta={"value": True, "size": True, "day": "2023-06-01"}),
    Document(id="false", content="false as a bool", meta={"value": False, "size": False}),
    Document(id="zero", content="zero as an int", meta={"value": 0, "size": 0}),
    Document(id="text-1", content="one as text", meta={"value": "1"}),
    Document(id="minus", content="minus two and a half", meta={"value": -2.5, "size": -2.5}),
    Document(id="none", content="the value is None, so absent", meta={"value": None, "size": None}),
    Document(id="absent", content="no value at all", meta={}),
]
MIXED_FILTERS: list[tuple[dict[str, Any], bool]] = [
    ({"field": "meta.value", "operator": "==", "value": 1}, True),
    ({"field": "meta.value", "operator": "==", "value": True}, True),
    ({"field": "meta.value", "operator": "==", "value": 0}, True),
    ({"field": "meta.value", "operator": "==", "value": "1"}, True),
    ({"field": "meta.value", "operator": "==", "value": None}, True),
    ({"field": "meta.value", "operator": "!=", "value": 1}, True),
    ({"field": "meta.value", "operator": "!=", "value": None}, True),
    ({"field": "size", "operator": ">", "value": 0}, True),
    ({"field": "meta.size", "operator": ">=", "value": False}, True),
    ({"field": "meta.size", "operator": "<", "value": 0.5}, True),
    ({"field": "meta.value", "operator": "in", "value": [1, None]}, True),
    ({"field": "meta.value", "operator": "not in", "value": ["1", -2.5]}, True),
    ({"field": "meta.value", "operator": "in", "value": []}, True),
    (
        {
            "operator": "NOT",
            "conditions": [
                {
                    "operator": "OR",
                    "conditions": [
                        {"field": "meta.size", "operator": "==", "value": False},
                        {"field": "meta.size", "operator": "<", "value": 0},
                    ],
                }
            ],
        },
        True,
    ),
    ({"field": "meta.day", "operator": "==", "value": "2024-01-31T12:00:00+00:00"}, False),
    ({"field": "meta.day", "operator": "<", "value": "2024-01-01"}, False),
    ({"field": "id", "operator": "in", "value": ["zero", "none"]}, False),
    ({"field": "content", "operator": "==", "value": "one as text"}, False),
    ({"field": "meta.value.inner", "operator": "==", "value": None}, False),
    (
        {
            "operator": "NOT",
            "conditions": [{"field": "meta.day", "operator": ">=", "value": "2024-01-31T12:00:00+00:00"}],
        },
        False,
    ),
]


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VecguardDocumentStore]:
    with VecguardDocumentStore(config=config("faiss", tmp_path_factory.mktemp("mixed") / "c")) as opened:
        opened.write_documents(MIXED)
        yield opened


@pytest.mark.parametrize(("filters", "exact"), MIXED_FILTERS, ids=[str(i) for i in range(len(MIXED_FILTERS))])
def test_filters_select_what_haystacks_reference_selects(
    mixed_store: VecguardDocumentStore, filters: dict[str, Any], exact: bool
) -> None:
    stored = mixed_store.filter_documents()

    selected = mixed_store.filter_documents(filters)

    assert translate_filters(filters).exact is exact
    assert sorted(d.id for d in selected) == sorted(d.id for d in stored if document_matches_filter(filters, d))
    assert mixed_store.count_documents_by_filter(filters) == len(selected)


def test_a_string_never_matches_a_numeric_comparison(mixed_store: VecguardDocumentStore) -> None:
    """Haystack's reference raises FilterError on the document whose "value" is a string; vecguard skips it."""
    filters = {"field": "meta.value", "operator": ">", "value": 0}
    text = mixed_store.filter_documents({"field": "id", "operator": "==", "value": "text-1"})[0]
    with pytest.raises(HaystackFilterError):
        document_matches_filter(filters, text)

    selected = mixed_store.filter_documents(filters)

    assert sorted(d.id for d in selected) == ["float-1", "int-1", "true"]


def test_a_date_comparison_over_a_stored_string_that_is_no_date_raises_like_haystack(
    store: VecguardDocumentStore,
) -> None:
    store.write_documents([Document(id="d", content="dated", meta={"day": "2024-01-31"}), *DISTRACTORS])
    store.write_documents([Document(id="n", content="not dated", meta={"day": "last Tuesday"})])
    filters = {"field": "meta.day", "operator": ">", "value": "2020-01-01"}

    with pytest.raises(HaystackFilterError, match="ISO formatted dates"):
        store.filter_documents(filters)
    store.delete_documents(["n"])
    assert [d.id for d in store.filter_documents(filters)] == ["d"]


def test_a_none_meta_value_is_stored_as_absent(store: VecguardDocumentStore) -> None:
    store.write_documents([Document(id="n", content="a note", meta={"year": None, "kind": "note"})])
    (stored,) = store.filter_documents({"field": "meta.kind", "operator": "==", "value": "note"})
    assert stored.meta == {"kind": "note"}
    assert store.update_by_filter({"field": "id", "operator": "==", "value": "n"}, {"kind": None, "tag": 1}) == 1
    assert store.filter_documents({"field": "id", "operator": "==", "value": "n"})[0].meta == {"tag": 1}


# ------------------------------------------------------------ writing: what vecguard refuses, before writing anything


@pytest.mark.parametrize(
    ("document", "named"),
    [
        (Document(id="x", content="tagged", meta={"tags": ["a", "b"]}), "meta 'tags' is a list"),
        (Document(id="x", content="nested", meta={"author": {"name": "A"}}), "meta 'author' is a dict"),
        (Document(id="x", content=None, blob=ByteStream(b"%PDF")), "has no text"),
        (Document(id="x", content="   "), "has no text"),
        (Document(id="x", content="a scan", blob=ByteStream(b"%PDF")), "carries a blob"),
        (Document(id="x", content="dollar", meta={"$where": 1}), "'$where'"),
        (Document(id="x", content="dated", meta={"when": datetime(2024, 1, 31)}), "'when' is a datetime; store it as"),
    ],
)
def test_a_document_vecguard_cannot_store_is_refused_naming_why(
    store: VecguardDocumentStore, document: Document, named: str
) -> None:
    before = store.count_documents()
    good = Document(id="good", content="a good document written in the same call")
    with pytest.raises(vecguard.DocumentError, match=re.escape(named)) as refused:
        store.write_documents([good, document])
    assert refused.value.position == 1
    assert "\n" not in str(refused.value)
    assert store.count_documents() == before
    assert store.filter_documents({"field": "id", "operator": "==", "value": "good"}) == []


def test_a_documents_own_embedding_is_ignored_with_a_warning(
    store: VecguardDocumentStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vecguard.integrations.haystack")
    embedded = Document(id="e", content="Reference CVE-2022-24045 applies here too.", embedding=[0.5] * 7)

    assert store.write_documents([embedded]) == 1

    assert store.filter_documents({"field": "id", "operator": "==", "value": "e"})[0].embedding is None
    assert any("ignores Document.embedding" in record.getMessage() for record in caplog.records)


def test_duplicates_in_one_call_fail_before_anything_is_written_and_skip_keeps_the_first(
    store: VecguardDocumentStore,
) -> None:
    before = store.count_documents()
    first, second = Document(id="d", content="first text"), Document(id="d", content="second text")
    with pytest.raises(DuplicateDocumentError, match="appears twice"):
        store.write_documents([first, second], policy=DuplicatePolicy.FAIL)
    assert store.count_documents() == before

    assert store.write_documents([first, second, DISTRACTORS[0]], policy=DuplicatePolicy.SKIP) == 2
    assert store.write_documents([second, DISTRACTORS[0], DISTRACTORS[1]], policy=DuplicatePolicy.SKIP) == 1
    assert store.filter_documents({"field": "id", "operator": "==", "value": "d"})[0].content == "first text"


# ------------------------------------------------------------ serialisation, sharing, the guard


def test_to_dict_and_from_dict_reopen_the_same_collection(
    corpus_store: VecguardDocumentStore, corpus_config: dict
) -> None:
    data = corpus_store.to_dict()
    assert data == {
        "type": "vecguard.integrations.haystack.VecguardDocumentStore",
        "init_parameters": {"config": corpus_config},
    }
    with VecguardDocumentStore.from_dict(data) as reopened:
        assert reopened.count_documents() == corpus_store.count_documents() == len(haystack_corpus())
        assert reopened.filter_documents() == corpus_store.filter_documents()


def test_a_toml_config_is_serialised_as_its_path(tmp_path: Path, faiss_config: dict) -> None:
    path = tmp_path / "vecguard.toml"
    path.write_text(toml(faiss_config), encoding="utf-8")
    with VecguardDocumentStore(config=path) as opened:
        opened.write_documents(DISTRACTORS)
        data = opened.to_dict()
    assert data["init_parameters"] == {"config": str(path)}
    with VecguardDocumentStore.from_dict(data) as reopened:
        assert sorted(d.id for d in reopened.filter_documents()) == ["cve-words", "near-cve"]


def test_a_pipeline_round_trips_through_yaml_to_the_same_data(corpus_store: VecguardDocumentStore) -> None:
    pipeline = Pipeline()
    pipeline.add_component("retriever", VecguardRetriever(document_store=corpus_store, top_k=3, mode="hybrid"))
    before = pipeline.run({"retriever": {"query": "CVE-2022-24045"}})["retriever"]["documents"]

    loaded = Pipeline.loads(pipeline.dumps(), allowed_modules=["vecguard.integrations.haystack"])

    retriever = loaded.get_component("retriever")
    try:
        assert retriever.document_store is not corpus_store
        assert (retriever.top_k, retriever.mode) == (3, "hybrid")
        after = loaded.run({"retriever": {"query": "CVE-2022-24045"}})["retriever"]["documents"]
        assert after == before
    finally:
        retriever.document_store.close()


def test_a_second_store_on_the_same_path_sees_the_first_ones_writes(
    store: VecguardDocumentStore, faiss_config: dict
) -> None:
    with VecguardDocumentStore(config=faiss_config) as second:
        store.write_documents([Document(id="late", content="Volcanic ash grounded every flight on Tuesday.")])
        assert second.count_documents() == store.count_documents()
        assert second.filter_documents({"field": "id", "operator": "==", "value": "late"})[0].content.startswith(
            "Volcanic"
        )
        assert VecguardRetriever(document_store=second, top_k=1).run(query="volcanic ash flights")["documents"][
            0
        ].id == ("late")
        second.delete_documents(["late"])
        assert store.filter_documents({"field": "id", "operator": "==", "value": "late"}) == []


def test_reopening_with_a_swapped_model_of_the_same_dimension_is_refused(
    faiss_config: dict, swapped_model: Path
) -> None:
    with VecguardDocumentStore(config=faiss_config) as built:
        built.write_documents(DISTRACTORS)
        pipeline = Pipeline()
        pipeline.add_component("retriever", VecguardRetriever(document_store=built))
        saved = pipeline.to_dict()
    swapped = {**faiss_config, "encoder": {"plugin": "sentence-transformers", "model": str(swapped_model)}}
    saved["components"]["retriever"]["init_parameters"]["document_store"]["init_parameters"]["config"] = swapped

    with pytest.raises(vecguard.CompatibilityError):
        VecguardDocumentStore(config=swapped)
    with pytest.raises(Exception) as refused:  # noqa: B017 - Haystack may wrap what a component's from_dict raises
        Pipeline.from_dict(saved, allowed_modules=["vecguard.integrations.haystack"])
    causes = [refused.value, refused.value.__cause__, refused.value.__context__]
    assert any(isinstance(cause, vecguard.CompatibilityError) for cause in causes), refused.value


def test_a_malformed_retriever_is_refused_when_built(store: VecguardDocumentStore) -> None:
    with pytest.raises(ValueError, match="mode must be one of hybrid, dense, keyword"):
        VecguardRetriever(document_store=store, mode="semantic")
    with pytest.raises(ValueError, match="top_k"):
        VecguardRetriever(document_store=store, top_k=0)
    with pytest.raises(HaystackFilterError, match="'conditions' key missing"):
        VecguardRetriever(document_store=store, filters={"operator": "AND"})
    with pytest.raises(HaystackFilterError, match="Haystack filters look like"):
        VecguardRetriever(document_store=store, filters={"year": {"$gte": 2020}})  # vecguard's own language


def test_without_haystack_the_import_says_which_extra_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['haystack'] = None  # as if it were not installed\n"
        "import vecguard\n"
        "try:\n"
        "    import vecguard.integrations.haystack\n"
        "except vecguard.MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    result = run_python(code)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "vecguard.integrations.haystack needs the haystack extra (haystack is missing): "
        "pip install 'vecguard[haystack]'"
    )

"""vecguard inside LlamaIndex: the retriever, its filters and evidence, ingestion, and LlamaIndex's own machinery."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import vecguard
from conftest import config, corpus, run_python
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import Document, MetadataMode, NodeRelationship, QueryBundle, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from llama_index.core.vector_stores.utils import build_metadata_filter_fn
from vecguard.filters import compile as compile_filter
from vecguard.integrations.llama_index import VecguardRetriever, translate_filters

CORPUS = corpus()
BY_ID = {document["id"]: document for document in CORPUS}
CVE_HOLDER = "doc-01"  # its text ends "Reference CVE-2022-24045 applies to this case."


def llama_documents() -> list[Document]:
    return [Document(id_=d["id"], text=d["text"], metadata=dict(d["metadata"])) for d in CORPUS]


@pytest.fixture
def faiss_config(tmp_path: Path) -> dict[str, Any]:
    return config("faiss", tmp_path / "collection")


@pytest.fixture(scope="module")
def built_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared corpus written once through LlamaIndex Documents; each test gets its own copy."""
    folder = tmp_path_factory.mktemp("llama-index-corpus") / "collection"
    with VecguardRetriever(config=config("faiss", folder)) as writer:
        assert writer.add_nodes(llama_documents()) == len(CORPUS)
    return folder


@pytest.fixture
def retriever(built_collection: Path, faiss_config: dict[str, Any]) -> Iterator[VecguardRetriever]:
    """A retriever over a copy of the shared corpus."""
    shutil.copytree(built_collection, faiss_config["store"]["path"])
    with VecguardRetriever(config=faiss_config, similarity_top_k=5, create=False) as opened:
        yield opened


def user_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key != "vecguard"}


# ------------------------------------------------------------ retrieving


def test_retrieve_returns_nodes_with_the_documents_ids_text_metadata_and_fused_score(
    retriever: VecguardRetriever,
) -> None:
    results = retriever.retrieve("a forgotten password and the account recovery email")
    hits = retriever.engine.search("a forgotten password and the account recovery email", 5)

    assert [result.node.node_id for result in results] == [hit.id for hit in hits]
    assert results[0].node.node_id == "doc-00"
    for result, hit in zip(results, hits, strict=True):
        assert isinstance(result.node, TextNode)
        assert result.node.text == BY_ID[hit.id]["text"]
        assert user_metadata(result.node.metadata) == BY_ID[hit.id]["metadata"]
        assert result.score == pytest.approx(hit.score)


def test_hybrid_retrieval_finds_an_exact_identifier(retriever: VecguardRetriever) -> None:
    results = retriever.retrieve("CVE-2022-24045")

    assert results[0].node.node_id == CVE_HOLDER
    assert "identifier" in results[0].node.metadata["vecguard"]["signals"]


def test_the_query_is_encoded_by_the_collection_not_by_an_embedding_llama_index_computed(
    retriever: VecguardRetriever,
) -> None:
    # An embedding of another dimension would fail any store that trusted it; the retriever reads only the text.
    bundle = QueryBundle(query_str="volcanic ash and lava", embedding=[0.5, -0.5, 0.25])

    assert [r.node.node_id for r in retriever.retrieve(bundle)] == [
        r.node.node_id for r in retriever.retrieve("volcanic ash and lava")
    ]
    assert retriever.retrieve(bundle)[0].node.node_id == "doc-07"


def test_async_retrieval_answers_like_sync(retriever: VecguardRetriever) -> None:
    async def both() -> list[list[str]]:
        answers = await asyncio.gather(retriever.aretrieve("jazz improvisation"), retriever.aretrieve("tax penalty"))
        return [[r.node.node_id for r in answer] for answer in answers]

    assert asyncio.run(both()) == [
        [r.node.node_id for r in retriever.retrieve("jazz improvisation")],
        [r.node.node_id for r in retriever.retrieve("tax penalty")],
    ]


def test_dense_mode_and_min_score_pass_through(retriever: VecguardRetriever) -> None:
    with VecguardRetriever(engine=retriever.engine, mode="dense", min_score=0.3, similarity_top_k=20) as dense:
        results = dense.retrieve("plants turning sunlight into sugar")

    assert results and results[0].node.node_id == "doc-06"
    assert all(result.score >= 0.3 for result in results)
    assert all(set(result.node.metadata["vecguard"]["signals"]) == {"dense"} for result in results)


# ------------------------------------------------------------ filters


def test_a_vecguard_filter_dict_restricts_retrieval(retriever: VecguardRetriever) -> None:
    retriever.filters = {"year": {"$gte": 2020}, "public": True}
    results = retriever.retrieve("security vulnerability in software")

    assert results
    assert all(r.node.metadata["year"] >= 2020 and r.node.metadata["public"] is True for r in results)


def test_metadata_filters_restrict_retrieval(retriever: VecguardRetriever) -> None:
    retriever.filters = MetadataFilters(filters=[MetadataFilter(key="court", value="US")])
    assert {r.node.node_id for r in retriever.retrieve("anything")} == {
        d["id"] for d in CORPUS if d["metadata"].get("court") == "US"
    }
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="year", operator=FilterOperator.LT, value=2018),
            MetadataFilter(key="court", operator=FilterOperator.IN, value=["UK", "EU"]),
        ],
        condition=FilterCondition.OR,
    )
    with VecguardRetriever(engine=retriever.engine, filters=filters, similarity_top_k=20) as filtered:
        ids = {r.node.node_id for r in filtered.retrieve("any topic at all")}

    expected = {d["id"] for d in CORPUS if d["metadata"]["year"] < 2018 or d["metadata"].get("court") in ("UK", "EU")}
    assert ids == expected


FLAT_FILTERS = [
    MetadataFilter(key="year", operator=FilterOperator.EQ, value=2017),
    MetadataFilter(key="court", operator=FilterOperator.NE, value="UK"),
    MetadataFilter(key="year", operator=FilterOperator.GT, value=2020),
    MetadataFilter(key="year", operator=FilterOperator.GTE, value=2020),
    MetadataFilter(key="topic", operator=FilterOperator.LT, value="m"),
    MetadataFilter(key="year", operator=FilterOperator.LTE, value=2016.5),
    MetadataFilter(key="court", operator=FilterOperator.IN, value=["EU", "US"]),
    MetadataFilter(key="court", operator=FilterOperator.NIN, value=["EU"]),
]


@pytest.mark.parametrize("condition", [FilterCondition.AND, FilterCondition.OR, FilterCondition.NOT])
@pytest.mark.parametrize("first", range(len(FLAT_FILTERS)))
def test_translated_filters_match_what_llama_index_itself_matches(first: int, condition: FilterCondition) -> None:
    # LlamaIndex's own reference (SimpleVectorStore's filter function) against vecguard's, on the corpus, whose
    # "court" is missing from most documents.
    second = FLAT_FILTERS[(first + 3) % len(FLAT_FILTERS)]
    filters = MetadataFilters(filters=[FLAT_FILTERS[first], second], condition=condition)
    llama_matches = build_metadata_filter_fn(lambda doc_id: BY_ID[doc_id]["metadata"], filters)
    predicate = compile_filter(translate_filters(filters))

    expected = {d["id"] for d in CORPUS if llama_matches(d["id"])}
    assert {d["id"] for d in CORPUS if predicate(d["metadata"])} == expected


def test_nested_metadata_filters_translate_to_nested_vecguard_filters() -> None:
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="year", operator=FilterOperator.GTE, value=2018),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="court", value="UK"),
                    MetadataFilter(key="topic", operator=FilterOperator.NIN, value=["tides", "vaccines"]),
                ],
                condition=FilterCondition.OR,
            ),
        ]
    )

    assert translate_filters(filters) == {
        "$and": [
            {"year": {"$gte": 2018}},
            {"$or": [{"court": {"$eq": "UK"}}, {"topic": {"$nin": ["tides", "vaccines"]}}]},
        ]
    }


@pytest.mark.parametrize(
    "operator", [FilterOperator.TEXT_MATCH, FilterOperator.CONTAINS, FilterOperator.ANY, FilterOperator.IS_EMPTY]
)
def test_an_untranslatable_operator_is_refused_naming_it(
    operator: FilterOperator, faiss_config: dict[str, Any]
) -> None:
    value: Any = ["uk"] if operator == FilterOperator.ANY else "uk"
    nested = MetadataFilters(
        filters=[
            MetadataFilter(key="year", value=2020),
            MetadataFilters(filters=[MetadataFilter(key="court", operator=operator, value=value)]),
        ]
    )

    with pytest.raises(vecguard.FilterError, match=rf"filters\.filters\[1\]\.filters\[0\]: operator {operator.name} "):
        VecguardRetriever(config=faiss_config, filters=nested)
    assert not Path(faiss_config["store"]["path"]).exists()  # refused before any collection was opened


def test_a_filter_with_a_value_vecguard_cannot_compare_is_refused() -> None:
    with pytest.raises(vecguard.FilterError, match=r"IN on 'court' takes a non-empty list of values, got 'UK'"):
        translate_filters(
            MetadataFilters(filters=[MetadataFilter(key="court", operator=FilterOperator.IN, value="UK")])
        )
    with pytest.raises(vecguard.FilterError, match=r"EQ on 'court' takes one string or number, got None"):
        translate_filters(MetadataFilters(filters=[MetadataFilter(key="court", value=None)]))


# ------------------------------------------------------------ LlamaIndex's machinery


def test_a_query_engine_answers_from_vecguard_nodes_without_showing_the_llm_the_evidence(
    retriever: VecguardRetriever,
) -> None:
    # MockLLM answers with the prompt it was given: the answer is what the LLM saw.
    response = RetrieverQueryEngine.from_args(retriever, llm=MockLLM()).query("CVE-2022-24045")

    assert response.source_nodes[0].node.node_id == CVE_HOLDER
    assert BY_ID[CVE_HOLDER]["text"] in str(response)
    assert "topic: buffer overflow" in str(response)  # the user's metadata reaches the LLM ...
    assert "signals" not in str(response) and "vecguard" not in str(response)  # ... the evidence does not


def test_a_similarity_postprocessor_cuts_on_the_fused_score(retriever: VecguardRetriever) -> None:
    scores = [r.score for r in retriever.retrieve("CVE-2022-24045")]
    assert scores[0] > scores[1]
    cutoff = (scores[0] + scores[1]) / 2

    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(), node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=cutoff)]
    )

    assert [n.node.node_id for n in engine.query("CVE-2022-24045").source_nodes] == [CVE_HOLDER]


def test_query_fusion_retriever_fuses_it_with_another(retriever: VecguardRetriever) -> None:
    with VecguardRetriever(engine=retriever.engine, mode="keyword") as keyword:
        fusion = QueryFusionRetriever(
            [retriever, keyword], llm=MockLLM(), num_queries=1, mode="reciprocal_rerank", similarity_top_k=3
        )
        results = fusion.retrieve("CVE-2022-24045")

    assert results[0].node.node_id == CVE_HOLDER


# ------------------------------------------------------------ evidence


def test_evidence_sits_under_its_own_key_out_of_the_llm_and_embedding_text(retriever: VecguardRetriever) -> None:
    node = retriever.retrieve("CVE-2022-24045")[0].node
    evidence = node.metadata["vecguard"]

    assert evidence["signals"]["keyword"]["rank"] == 1 and evidence["signals"]["dense"]["score"] > 0
    assert node.text == BY_ID[CVE_HOLDER]["text"]
    assert "CVE-2022-24045" in node.text[evidence["passage"]["start"] : evidence["passage"]["end"]]
    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        assert "signals" not in node.get_content(metadata_mode=mode)
        assert "year: 2016" in node.get_content(metadata_mode=mode)


def test_a_long_document_comes_back_whole_with_the_passage_named_in_the_evidence(faiss_config: dict[str, Any]) -> None:
    filler = " ".join(f"The committee met on day {n} and discussed the harbour budget at length." for n in range(12))
    text = f"{filler} The breach is tracked as CVE-2023-4863 in the image decoder."
    with VecguardRetriever(config=faiss_config, similarity_top_k=1) as retriever:
        retriever.add_nodes([Document(id_="minutes", text=text), Document(id_="other", text="Harbour budget.")])
        node = retriever.retrieve("CVE-2023-4863")[0].node

    assert (node.node_id, node.text) == ("minutes", text)
    passage = node.metadata["vecguard"]["passage"]
    assert passage["chunk"] > 0 and "CVE-2023-4863" in text[passage["start"] : passage["end"]]


def test_a_stored_key_where_evidence_goes_is_refused_and_another_evidence_key_keeps_it(
    faiss_config: dict[str, Any],
) -> None:
    with vecguard.open(faiss_config) as engine:
        engine.add([{"id": "x", "text": "Tides rise twice a day.", "metadata": {"vecguard": "the user's own"}}])
        with VecguardRetriever(engine=engine) as default:
            with pytest.raises(
                vecguard.InvalidArgumentError, match=r"document 'x' has its own metadata key 'vecguard'"
            ):
                default.retrieve("tides")
            with pytest.raises(vecguard.DocumentError, match=r"metadata key 'vecguard' is where the retriever puts"):
                default.add_nodes([TextNode(id_="y", text="Moon.", metadata={"vecguard": "mine"})])
        with VecguardRetriever(engine=engine, evidence_key="search_evidence") as renamed:
            node = renamed.retrieve("tides")[0].node

    assert node.metadata["vecguard"] == "the user's own"
    assert "dense" in node.metadata["search_evidence"]["signals"]
    assert node.excluded_llm_metadata_keys == ["search_evidence"]


def test_retrieved_nodes_can_be_written_back_without_their_evidence(retriever: VecguardRetriever) -> None:
    nodes = [result.node for result in retriever.retrieve("bread dough and yeast")]
    assert retriever.add_nodes(nodes) == 0  # stored unchanged: the evidence was left behind

    assert retriever.engine.get([nodes[0].node_id])[0].metadata == BY_ID[nodes[0].node_id]["metadata"]


# ------------------------------------------------------------ writing


def test_nodes_cut_from_a_document_keep_it_and_delete_ref_doc_removes_them(retriever: VecguardRetriever) -> None:
    source = RelatedNodeInfo(node_id="manual")
    parts = [
        TextNode(id_="manual-1", text="The kiln fires clay at a thousand degrees.", metadata={"page": 1}),
        TextNode(id_="manual-2", text="Glaze the pot before the second kiln firing.", metadata={"page": 2}),
    ]
    for part in parts:
        part.relationships[NodeRelationship.SOURCE] = source
    whole = Document(id_="manual", text="Pottery manual: clay, kilns and glazes.")
    assert retriever.add_nodes([*parts, whole]) == 3

    found = retriever.retrieve("firing clay in a kiln")[:2]
    assert {r.node.node_id for r in found} == {"manual-1", "manual-2"}
    assert all(r.node.ref_doc_id == "manual" and "ref_doc_id" not in r.node.metadata for r in found)
    assert retriever.engine.ids_matching({"ref_doc_id": "manual"}) == ["manual-1", "manual-2"]

    assert retriever.delete_ref_doc("manual") == 3
    assert retriever.engine.count() == len(CORPUS)
    assert retriever.delete_nodes(["doc-00", "no-such-node"]) == 1
    assert retriever.engine.count() == len(CORPUS) - 1


@pytest.mark.parametrize(
    ("metadata", "named"), [({"tags": ["a", "b"]}, "'tags' is list"), ({"author": None}, "'author' is NoneType")]
)
def test_non_scalar_metadata_is_refused_naming_the_key(
    faiss_config: dict[str, Any], metadata: dict[str, Any], named: str
) -> None:
    good = Document(id_="fine", text="A fine document.")
    bad = Document(id_="bad", text="A document with structured metadata.", metadata=metadata)

    with VecguardRetriever(config=faiss_config) as retriever:
        with pytest.raises(vecguard.DocumentError, match=rf"^node 1 \(id 'bad'\): metadata {named} ") as raised:
            retriever.add_nodes([good, bad])
        assert retriever.engine.count() == 0  # refused before anything was written
    assert "\n" not in str(raised.value)


def test_a_node_without_text_is_refused(faiss_config: dict[str, Any]) -> None:
    with VecguardRetriever(config=faiss_config) as retriever:
        with pytest.raises(vecguard.DocumentError, match=r"node 0 \(id 'empty'\) has no text"):
            retriever.add_nodes([TextNode(id_="empty", text="  ")])


def test_a_second_retriever_on_the_same_path_sees_the_first_ones_writes(faiss_config: dict[str, Any]) -> None:
    with VecguardRetriever(config=faiss_config) as first, VecguardRetriever(config=faiss_config) as second:
        first.add_nodes([Document(id_="late", text="Fireflies glow on warm June evenings by the pond.")])

        assert second.retrieve("glowing insects in summer")[0].node.node_id == "late"


# ------------------------------------------------------------ opening, closing and the guard


def test_the_guard_refuses_a_collection_built_by_another_model_of_the_same_dimension(
    faiss_config: dict[str, Any], swapped_model: Path
) -> None:
    with VecguardRetriever(config=faiss_config) as built:
        built.add_nodes(llama_documents()[:4])
    swapped = {**faiss_config, "encoder": {"plugin": "sentence-transformers", "model": str(swapped_model)}}

    with pytest.raises(vecguard.CompatibilityError):
        VecguardRetriever(config=swapped)


def test_create_false_refuses_a_missing_collection(faiss_config: dict[str, Any]) -> None:
    with pytest.raises(vecguard.CollectionNotFoundError):
        VecguardRetriever(config=faiss_config, create=False)


def test_a_retriever_closes_only_the_engine_it_opened(faiss_config: dict[str, Any]) -> None:
    with vecguard.open(faiss_config) as engine:
        engine.add(CORPUS[:2])
        with VecguardRetriever(engine=engine) as borrowed:
            borrowed.retrieve("refund")
        assert engine.search("refund", 1)[0].id == "doc-01"  # still open


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, r"either config= .* or engine="),
        ({"similarity_top_k": 0}, r"similarity_top_k must be a whole number >= 1, got 0"),
        ({"mode": "sparse"}, r"mode must be one of hybrid, dense, keyword, got 'sparse'"),
        ({"mode": "keyword", "min_score": 0.3}, r"min_score is a floor on the dense cosine"),
        ({"evidence_key": ""}, r"evidence_key must be a non-empty string or None"),
    ],
)
def test_bad_arguments_are_refused_before_anything_opens(
    faiss_config: dict[str, Any], arguments: dict[str, Any], message: str
) -> None:
    given = arguments if not arguments else {"config": faiss_config, **arguments}

    with pytest.raises(vecguard.InvalidArgumentError, match=message):
        VecguardRetriever(**given)
    assert not Path(faiss_config["store"]["path"]).exists()


def test_without_llama_index_the_import_says_which_extra_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['llama_index'] = sys.modules['llama_index.core'] = None  # as if it were not installed\n"
        "import vecguard\n"
        "try:\n"
        "    import vecguard.integrations.llama_index\n"
        "except vecguard.MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    result = run_python(code)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("vecguard.integrations.llama_index needs the llamaindex extra (llama_index")
    assert result.stdout.strip().endswith("is missing): pip install 'vecguard[llamaindex]'")

"""vecguard inside LangChain: LangChain's own standard suites over real FAISS collections, with LangChain's fake
embeddings and with the bundled model, then what the integration adds: hybrid search, evidence, the guard."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import vecguard
from conftest import config, corpus, run_python
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings, FakeEmbeddings
from langchain_tests.integration_tests.retrievers import RetrieversIntegrationTests
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests
from pydantic import SecretStr
from vecguard.integrations.langchain import EmbeddingsEncoder, VecguardRetriever, VecguardVectorStore

ADVISORIES = {
    f"adv-{i}": f"Security advisory {cve}: remote code execution in the web server, patch now."
    for i, cve in enumerate(["CVE-2022-24046", "CVE-2021-24045", "CVE-2022-24054", "CVE-2022-42405"])
}
NEAR_DUPLICATES = {
    "cat-1": "The cat sat on the mat.",
    "cat-2": "A cat was sitting on the mat.",
    "stocks": "Stock markets fell sharply today.",
}


def faiss_config(path: Path) -> dict[str, Any]:
    """A FAISS collection with no [encoder] table: for stores given a LangChain Embeddings."""
    return {"store": {"plugin": "faiss", "path": str(path)}, "chunking": {"tokens": 64, "overlap": 8}}


def fake_store(path: Path, size: int = 6) -> VecguardVectorStore:
    return VecguardVectorStore(faiss_config(path), DeterministicFakeEmbedding(size=size))


# A fixed batch size skips the encoder's one-off measure of its memory per text, made in a subprocess for each model
# folder (seconds each); vectors do not depend on it.
BATCH = {"batch_size": 32}


def bundled_store(path: Path) -> VecguardVectorStore:
    return VecguardVectorStore(config("faiss", path, encoder=BATCH))


# ---------------------------------------------------------------- LangChain's standard suites, twice each


class TestVectorStoreSuiteWithLangChainEmbeddings(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VecguardVectorStore]:
        with VecguardVectorStore(faiss_config(tmp_path / "c"), self.get_embeddings()) as store:
            yield store


class TestVectorStoreSuiteWithBundledModel(VectorStoreIntegrationTests):
    """One collection for the class (opening one with the bundled model encodes the guard's probe: about a second),
    emptied after each test the way the suite's template does."""

    @pytest.fixture(scope="class")
    @classmethod
    def collection(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VecguardVectorStore]:
        with bundled_store(tmp_path_factory.mktemp("langchain-suite") / "c") as store:
            yield store

    @pytest.fixture
    def vectorstore(self, collection: VecguardVectorStore) -> Iterator[VecguardVectorStore]:
        assert collection.engine.count() == 0
        try:
            yield collection
        finally:
            collection.delete(filter={})


class RetrieverSuiteCollection:
    """The retriever suite builds retrievers from constructor params alone: the class's collection of five documents
    is opened before the suite's fixtures, and closed after its last test."""

    store: VecguardVectorStore

    @staticmethod
    def open_store(path: Path) -> VecguardVectorStore:
        raise NotImplementedError

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _collection(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        with cls.open_store(tmp_path_factory.mktemp("langchain-retriever") / "c") as cls.store:
            cls.store.add_texts([text for text in NEAR_DUPLICATES.values()] + list(ADVISORIES.values())[:2])
            yield

    @property
    def retriever_constructor(self) -> type[VecguardRetriever]:
        return VecguardRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"vectorstore": self.store}

    @property
    def retriever_query_example(self) -> str:
        return "a cat on a mat"


class TestRetrieverSuiteWithLangChainEmbeddings(RetrieverSuiteCollection, RetrieversIntegrationTests):
    @staticmethod
    def open_store(path: Path) -> VecguardVectorStore:
        return fake_store(path)


class TestRetrieverSuiteWithBundledModel(RetrieverSuiteCollection, RetrieversIntegrationTests):
    @staticmethod
    def open_store(path: Path) -> VecguardVectorStore:
        return bundled_store(path)


# ---------------------------------------------------------------- what vecguard adds


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VecguardVectorStore]:
    """The shared corpus, advisories whose CVE ids differ from one of the corpus's by a digit, near duplicates."""
    with bundled_store(tmp_path_factory.mktemp("langchain") / "c") as store:
        store.add_documents([Document(id=d["id"], page_content=d["text"], metadata=d["metadata"]) for d in corpus()])
        extra = {**ADVISORIES, **NEAR_DUPLICATES}
        store.add_texts(list(extra.values()), ids=list(extra))
        yield store


def test_default_search_is_hybrid_and_ranks_the_exact_identifier_first(corpus_store: VecguardVectorStore) -> None:
    dense = [d.id for d in corpus_store.similarity_search("CVE-2022-24045", k=10, mode="dense")]
    hybrid = [d.id for d in corpus_store.similarity_search("CVE-2022-24045", k=10)]
    assert dense.index("doc-01") > 0  # the advisories' look-alike ids are closer in the dense space
    assert hybrid[0] == "doc-01"


def test_filter_takes_vecguards_filter_language(corpus_store: VecguardVectorStore) -> None:
    wanted = {"year": {"$gte": 2020}, "public": True}
    found = corpus_store.similarity_search("security", k=20, filter=wanted)
    expected = {d["id"] for d in corpus() if d["metadata"]["year"] >= 2020 and d["metadata"]["public"]}
    assert {d.id for d in found} == expected
    with pytest.raises(vecguard.FilterError, match=r"\$near"):
        corpus_store.similarity_search("security", filter={"year": {"$near": 2020}})


def test_retriever_adds_evidence_under_its_key_and_leaves_the_stored_metadata_alone(
    corpus_store: VecguardVectorStore,
) -> None:
    (document, score), *_ = corpus_store.similarity_search_with_score("CVE-2022-24045", k=3)
    found = corpus_store.as_retriever(search_kwargs={"k": 3}).invoke("CVE-2022-24045")
    assert [d.id for d in found][0] == document.id == "doc-01"
    evidence = found[0].metadata["vecguard"]
    assert evidence["score"] == score
    assert evidence["signals"]["identifier"]["rank"] == 1
    assert set(evidence["signals"]) >= {"dense", "keyword", "identifier"}
    assert {key: value for key, value in found[0].metadata.items() if key != "vecguard"} == document.metadata
    assert corpus_store.get_by_ids(["doc-01"])[0].metadata == document.metadata  # the copy was changed, not the store
    plain = corpus_store.as_retriever(evidence_key=None, k=3).invoke("CVE-2022-24045")
    assert plain == corpus_store.similarity_search("CVE-2022-24045", k=3)


def test_evidence_key_taken_by_the_users_metadata_raises_naming_the_setting(tmp_path: Path) -> None:
    with fake_store(tmp_path / "c") as store:
        store.add_texts(["foo"], [{"vecguard": "my own"}], ids=["a"])
        with pytest.raises(vecguard.InvalidArgumentError, match=r"'vecguard'.*evidence_key="):
            store.as_retriever().invoke("foo")
        (document,) = store.as_retriever(evidence_key="retrieval").invoke("foo", k=1)
        assert document.metadata["vecguard"] == "my own"
        assert document.metadata["retrieval"]["signals"]["dense"]["rank"] == 1


def test_relevance_scores_are_the_dense_cosine_and_the_threshold_floors_it(tmp_path: Path) -> None:
    with fake_store(tmp_path / "c") as store:
        store.add_texts(["foo", "bar", "baz"], ids=["foo", "bar", "baz"])
        scored = store.similarity_search_with_relevance_scores("bar", k=3)
        assert [d.id for d, _ in scored][0] == "bar"
        assert scored[0][1] == pytest.approx(1.0)  # DeterministicFakeEmbedding gives "bar" the same vector twice
        assert all(0.0 <= relevance <= 1.0 for _, relevance in scored)
        fused = dict((d.id, s) for d, s in store.similarity_search_with_score("bar", k=3))
        assert fused["bar"] != pytest.approx(1.0)  # the fused score is another number
        assert [d.id for d, _ in store.similarity_search_with_relevance_scores("bar", k=3, score_threshold=0.9)] == [
            "bar"
        ]
        retriever = store.as_retriever(search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.9})
        (document,) = retriever.invoke("bar")
        assert document.id == "bar" and document.metadata["vecguard"]["signals"]["dense"]["score"] >= 0.9


def test_a_keyword_only_hit_is_scored_by_its_passages_cosine_and_the_threshold_still_fills_k(tmp_path: Path) -> None:
    fillers = {f"filler-{i}": f"filler number {i}" for i in range(30)}
    # A fusion depth of 1: the dense signal looks at only k chunks, so the keyword match is outside it.
    with VecguardVectorStore(
        {**faiss_config(tmp_path / "c"), "fusion": {"depth": 1}}, DeterministicFakeEmbedding(size=6)
    ) as store:
        store.add_texts([*fillers.values(), "quarterly figures"], ids=[*fillers, "figures"])
        first = store.engine.search("quarterly", 2)[0]
        assert first.id == "figures" and "dense" not in first.signals
        embeddings = DeterministicFakeEmbedding(size=6)
        query = np.asarray(embeddings.embed_query("quarterly"))
        passage = np.asarray(embeddings.embed_documents(["quarterly figures"])[0])
        cosine = float(query @ passage / np.linalg.norm(query) / np.linalg.norm(passage))
        relevance = dict((d.id, r) for d, r in store.similarity_search_with_relevance_scores("quarterly", k=2))
        assert relevance["figures"] == pytest.approx(cosine, abs=1e-5) and cosine > 0.6
        over = store.similarity_search_with_relevance_scores("quarterly", k=2, score_threshold=0.6)
        assert len(over) == 2 and "figures" in {d.id for d, _ in over} and all(r >= 0.6 for _, r in over)


def test_mmr_trades_a_near_duplicate_for_a_different_document(corpus_store: VecguardVectorStore) -> None:
    assert {d.id for d in corpus_store.similarity_search("a cat on a mat", k=2)} == {"cat-1", "cat-2"}
    diverse = corpus_store.max_marginal_relevance_search("a cat on a mat", k=2, fetch_k=10, lambda_mult=0.3)
    assert diverse[0].id in ("cat-1", "cat-2") and diverse[1].id not in ("cat-1", "cat-2")
    via_retriever = corpus_store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 10})
    assert len(via_retriever.invoke("a cat on a mat", lambda_mult=0.3)) == 2


def test_a_second_store_on_the_same_collection_sees_the_firsts_writes(tmp_path: Path) -> None:
    with fake_store(tmp_path / "c") as first, fake_store(tmp_path / "c") as second:
        first.add_texts(["foo", "bar"], ids=["1", "2"])
        assert [d.id for d in second.get_by_ids(["1", "2"])] == ["1", "2"]
        assert second.similarity_search("bar", k=1)[0].id == "2"
        second.delete(["1"])
        assert [d.id for d in first.similarity_search("foo", k=5)] == ["2"]


def test_non_scalar_metadata_is_refused_naming_the_key_and_nothing_is_written(tmp_path: Path) -> None:
    with fake_store(tmp_path / "c") as store:
        for bad in ({"tags": ["a", "b"]}, {"author": None}, {"source": {"page": 3}}):
            key = next(iter(bad))
            with pytest.raises(vecguard.DocumentError, match=rf"document 2 .*metadata '{key}'.*flatten"):
                store.add_texts(["fine", "not fine"], [{"ok": 1}, bad])
        assert store.engine.count() == 0


def test_ids_are_kept_or_made_and_delete_needs_ids_or_a_filter(tmp_path: Path) -> None:
    with fake_store(tmp_path / "c") as store:
        made = store.add_texts(["one", "two"], [{"n": 1}, {"n": 2}])
        assert len(set(made)) == 2 and all(len(doc_id) == 36 for doc_id in made)  # uuid4
        assert store.add_documents([Document(id="mine", page_content="three", metadata={"n": 3})]) == ["mine"]
        with pytest.raises(vecguard.InvalidArgumentError, match=r"ids=\[...\] or filter="):
            store.delete()
        assert store.delete(filter={"n": {"$lte": 2}}) is True
        assert [d.id for d in store.similarity_search("one", k=5)] == ["mine"]


def test_from_texts_opens_the_configured_collection(tmp_path: Path) -> None:
    store = VecguardVectorStore.from_texts(
        ["foo", "bar"],
        DeterministicFakeEmbedding(size=6),
        [{"n": 1}, {"n": 2}],
        ids=["a", "b"],
        config=faiss_config(tmp_path / "c"),
    )
    with store:
        assert store.get_by_ids(["b"]) == [Document(id="b", page_content="bar", metadata={"n": 2})]
    with pytest.raises(vecguard.InvalidArgumentError, match="config="):
        VecguardVectorStore.from_texts(["foo"], DeterministicFakeEmbedding(size=6))


def test_an_encoder_table_and_an_embedding_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(vecguard.ConfigError, match=r"\[encoder\].*embedding="):
        VecguardVectorStore(config("faiss", tmp_path / "c"), DeterministicFakeEmbedding(size=6))


class ZeroEmbeddings(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[0.0] * 4 for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [0.0] * 4


def test_an_embeddings_giving_zero_vectors_is_refused(tmp_path: Path) -> None:
    with pytest.raises(vecguard.InvalidArgumentError, match="zero vector"):
        VecguardVectorStore(faiss_config(tmp_path / "c"), ZeroEmbeddings())


# ---------------------------------------------------------------- the version guard


def test_another_embeddings_of_the_same_dimension_is_refused(tmp_path: Path) -> None:
    with fake_store(tmp_path / "c", size=384) as store:
        store.add_texts(["foo"], ids=["a"])
    with fake_store(tmp_path / "c", size=384) as store:  # the same encoder opens it
        assert store.get_by_ids(["a"])[0].page_content == "foo"
    with pytest.raises(vecguard.EmbeddingDriftError, match="FakeEmbeddings"):
        VecguardVectorStore(faiss_config(tmp_path / "c"), FakeEmbeddings(size=384))


class HostedEmbeddings(Embeddings):
    """A hosted model: its settings name it, the weights behind the name are the server's (here a private seed)."""

    def __init__(self, model: str, server_weights: int) -> None:
        self.model = model
        self._fake = DeterministicFakeEmbedding(size=32)
        self._server_weights = server_weights

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._fake.embed_query(f"{self._server_weights}:{text}")


def test_a_model_replaced_behind_the_same_name_and_settings_is_refused(tmp_path: Path) -> None:
    before, after = HostedEmbeddings("embed-v1", server_weights=1), HostedEmbeddings("embed-v1", server_weights=2)
    assert EmbeddingsEncoder(before).identity().fingerprint == EmbeddingsEncoder(after).identity().fingerprint
    with VecguardVectorStore(faiss_config(tmp_path / "c"), before) as store:
        store.add_texts(["foo"], ids=["a"])
    with VecguardVectorStore(faiss_config(tmp_path / "c"), HostedEmbeddings("embed-v1", server_weights=1)):
        pass
    with pytest.raises(vecguard.EmbeddingDriftError, match="drifted"):
        VecguardVectorStore(faiss_config(tmp_path / "c"), after)


def test_a_swapped_model_behind_the_config_is_refused(tmp_path: Path, swapped_model: Path) -> None:
    with bundled_store(tmp_path / "c") as store:
        store.add_texts(["foo"], ids=["a"])
    swapped = config("faiss", tmp_path / "c", encoder={"model": str(swapped_model), **BATCH})
    with pytest.raises(vecguard.CompatibilityError):
        VecguardVectorStore(swapped)
    with pytest.raises(vecguard.EmbeddingDriftError):  # a LangChain Embeddings of the model's dimension
        VecguardVectorStore(faiss_config(tmp_path / "c"), DeterministicFakeEmbedding(size=384))
    with pytest.raises(vecguard.DimensionError, match="dimension 384 stored, 6 live"):
        VecguardVectorStore(faiss_config(tmp_path / "c"), DeterministicFakeEmbedding(size=6))


def test_embeddings_of_another_dimension_are_refused(tmp_path: Path) -> None:
    fake_store(tmp_path / "c", size=6).close()
    with pytest.raises(vecguard.DimensionError, match="dimension 6 stored, 8 live"):
        fake_store(tmp_path / "c", size=8)
    with pytest.raises(vecguard.DimensionError, match="dimension 6 stored, 384 live"):
        VecguardVectorStore(config("faiss", tmp_path / "c", encoder=BATCH))


class KeyedEmbeddings(DeterministicFakeEmbedding):
    """An API client's shape: a secret key, a token under a plain name, a password inside a URL."""

    api_key: SecretStr
    access_token: str
    endpoint: str


def test_secrets_never_reach_the_collections_files(tmp_path: Path) -> None:
    embeddings = KeyedEmbeddings(
        size=6,
        api_key=SecretStr("sk-live-51abcdef"),
        access_token="tok-9f8e7d",
        endpoint="https://alice:hunter2pw@embeddings.example.invalid/v1",
    )
    with VecguardVectorStore(faiss_config(tmp_path / "c"), embeddings) as store:
        store.add_texts(["foo"], ids=["a"])
    written = b"".join(path.read_bytes() for path in (tmp_path / "c").rglob("*") if path.is_file())
    assert b"embeddings.example.invalid" in written  # the settings were recorded...
    for secret in (b"sk-live-51abcdef", b"tok-9f8e7d", b"hunter2pw", b"alice"):
        assert secret not in written  # ...without the secrets


def test_without_langchain_the_import_says_which_extra_to_install() -> None:
    finished = run_python(
        "import sys; sys.modules['langchain_core'] = None\n"
        "import vecguard\n"
        "try:\n    import vecguard.integrations.langchain\n"
        "except vecguard.MissingExtraError as exc:\n    print(exc)"
    )
    assert finished.stdout.strip() == (
        "vecguard.integrations.langchain needs the langchain extra (langchain_core is missing): "
        "pip install 'vecguard[langchain]'"
    ), finished.stderr


async def test_async_searches_and_a_write_at_once_through_one_store_answer_as_one_at_a_time(tmp_path: Path) -> None:
    """LangChain runs async calls in threads: one store's engine is shared between them."""
    texts = {document["id"]: document["text"] for document in corpus()}
    with fake_store(tmp_path / "c", size=32) as store:
        store.add_texts(list(texts.values()), ids=list(texts))
        searches = [store.asimilarity_search(text, k=1) for text in texts.values()]
        writes = [store.aadd_texts([f"A note written meanwhile, number {n}."], ids=[f"note-{n}"]) for n in range(4)]

        results = await asyncio.gather(*searches, *writes)

        assert [found[0].id for found in results[: len(texts)]] == list(texts)
        assert len(store.get_by_ids([f"note-{n}" for n in range(4)])) == 4

"""LangChain's ``VectorStore`` over a vecguard collection: hybrid search and the version guard behind LangChain's API.

``VecguardVectorStore(config=..., embedding=None)`` opens the collection a vecguard config describes (any backend)
with the config's encoder; ``embedding=`` a LangChain ``Embeddings`` encodes instead, adapted by
``EmbeddingsEncoder``. Either way the version guard runs at open: a collection built by one encoder refuses
another (``vecguard.CompatibilityError``).

Scores, as LangChain names them:

- ``similarity_search`` / ``similarity_search_with_score``: hybrid ranking (dense + keyword, exact identifiers
  first); the score is the fused score, higher is better, on no fixed scale.
- ``similarity_search_with_relevance_scores`` and ``search_type="similarity_score_threshold"``: the same ranking,
  each hit scored by its dense cosine similarity, the way LangChain scores cosine stores (relevance = 1 - cosine
  distance = cosine), clamped at 0 into [0, 1]; ``score_threshold`` is vecguard's ``min_score``, a floor on it.
- ``VecguardRetriever`` (what ``as_retriever()`` returns) adds each hit's evidence (fused score, every signal's
  rank and score, the passage that matched) under one metadata key, ``"vecguard"`` unless ``evidence_key`` says
  otherwise; the store's own methods return metadata exactly as it was added.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from .. import guard
from ..config import DEFAULTS, Config, load_config
from ..engine import Engine, build_parts, validate_document
from ..errors import ConfigError, InvalidArgumentError
from ..protocols import Document, EncoderIdentity, Hit
from ..registry import Registry
from . import missing_extra
from .hits import evidence, with_documents

try:
    import pydantic
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document as LangChainDocument
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
    from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as exc:
    raise missing_extra("langchain", "langchain", exc) from exc

__all__ = ["EmbeddingsEncoder", "VecguardRetriever", "VecguardVectorStore"]

WORD = re.compile(r"\w+|[^\w\s]")
"""What ``EmbeddingsEncoder`` counts as a token: a run of word characters, or one punctuation mark."""
MAX_WORDS = 512
"""Words per chunk an Embeddings is trusted to read whole; ``[chunking] tokens`` (in words) is clamped to it."""
SECRET_NAME = re.compile(r"key|token|secret|password|passwd|credential|auth", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


# ---------------------------------------------------------------- a LangChain Embeddings as vecguard's Encoder


class EmbeddingsEncoder:
    """A LangChain ``Embeddings`` as vecguard's ``Encoder``.

    Vectors are float32 and L2-normalised (the collection compares by cosine); a zero or non-finite vector is
    refused. Texts are tokenised into words and punctuation marks (``WORD``), so ``[chunking] tokens`` counts
    words, at most ``MAX_WORDS``. The identity's fingerprint is a sha256 over the class's import path and its
    settings, secrets left out (``public_settings``). Settings do not pin a model's weights (a hosted model can
    change behind the same name), so it declares ``fingerprint_omits_weights``: the guard compares the probe
    vectors at every open, not only when the fingerprint changed.
    """

    fingerprint_omits_weights = True

    def __init__(self, embeddings: Embeddings) -> None:
        if not isinstance(embeddings, Embeddings):
            raise InvalidArgumentError(
                f"embedding must be a LangChain Embeddings (langchain_core.embeddings.Embeddings), got "
                f"{type(embeddings).__name__}; pass embedding=None to use the config's [encoder]"
            )
        self.embeddings = embeddings
        cls = type(embeddings)
        self.name = f"{cls.__module__}.{cls.__qualname__}"
        self._identity: EncoderIdentity | None = None

    def identity(self) -> EncoderIdentity:
        if self._identity is None:
            settings = public_settings(self.embeddings)
            tokenizer = {"pattern": WORD.pattern, "max_tokens": MAX_WORDS}
            dimension = int(self.encode_queries(["vecguard"]).shape[1])
            self._identity = EncoderIdentity(
                plugin="langchain",
                name=self.name,
                revision=_distribution_version(type(self.embeddings).__module__.split(".")[0]),
                fingerprint=guard.fingerprint({"class": self.name, "settings": settings, "tokenizer": tokenizer}),
                dimension=dimension,
                normalized=True,
                max_seq_length=MAX_WORDS,
                pooling="embeddings",
                settings={"embeddings": settings, "tokenizer": tokenizer},
            )
        return self._identity

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dimension), L2-normalised: ``embed_documents`` in one call."""
        texts = list(texts)
        return self._normalised(self.embeddings.embed_documents(texts) if texts else [], texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dimension), L2-normalised: ``embed_query`` of each text."""
        texts = list(texts)
        return self._normalised([self.embeddings.embed_query(text) for text in texts], texts)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in WORD.finditer(text)]

    @property
    def max_tokens(self) -> int:
        return MAX_WORDS

    def _normalised(self, vectors: Any, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.identity().dimension), dtype=np.float32)
        try:
            array = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"{self.name} returned vectors that are not numbers of one length: {exc}"
            ) from exc
        if array.ndim != 2 or array.shape[0] != len(texts):
            raise InvalidArgumentError(
                f"{self.name} returned {array.shape[0] if array.ndim else 0} vectors of shape {array.shape[1:]} for "
                f"{len(texts)} texts; an Embeddings must return one list of floats per text"
            )
        norms = np.linalg.norm(array, axis=1)
        unusable = ~np.isfinite(array).all(axis=1) | ~(norms > 0)
        if unusable.any():
            i = int(np.argmax(unusable))
            raise InvalidArgumentError(
                f"{self.name} returned a {'zero' if norms[i] == 0 else 'NaN or infinite'} vector for "
                f"{texts[i]!r:.60}; vecguard compares by cosine and cannot normalise it: check the embeddings model"
            )
        return array / norms[:, None]


def public_settings(embeddings: Embeddings) -> dict[str, Any]:
    """An Embeddings' settings as plain JSON, for its fingerprint: pydantic ``model_dump()`` or public attributes,
    without secrets (``SecretStr``/``SecretBytes`` values, names holding key/token/secret/password/credential/auth,
    passwords in URLs); an object that is not plain data stands as its type's name."""
    raw: Any = None
    if isinstance(embeddings, pydantic.BaseModel):
        try:
            raw = embeddings.model_dump()
        except Exception:  # noqa: BLE001  a field pydantic cannot copy: fall back to the attributes
            raw = None
    if raw is None:
        attributes = getattr(embeddings, "__dict__", {})
        raw = {name: value for name, value in attributes.items() if not name.startswith("_")}
    return _plain(raw)


def _is_secret(value: Any) -> bool:
    return isinstance(value, (pydantic.SecretStr, pydantic.SecretBytes)) or type(value).__name__ in (
        "SecretStr",
        "SecretBytes",
    )


def _plain(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        value = value.model_dump()
    if isinstance(value, Mapping):
        return {
            str(name): _plain(item)
            for name, item in sorted(value.items(), key=lambda pair: str(pair[0]))
            if not _is_secret(item) and not SECRET_NAME.search(str(name))
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(item) for item in value if not _is_secret(item)]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, str):
        return URL_CREDENTIALS.sub("", value)
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Path):
        return str(value)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


@functools.cache
def _distribution_version(module: str) -> str:
    """The distribution and version that installs ``module`` ("langchain-openai 1.1.0"), for the manifest."""
    for name in importlib.metadata.packages_distributions().get(module, []):
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


# ---------------------------------------------------------------- the vector store


@dataclass(frozen=True)
class _Found:
    """One search result: the stored document as LangChain shows it, and vecguard's hit with its evidence."""

    document: LangChainDocument
    hit: Hit


class VecguardVectorStore(VectorStore):
    """A vecguard collection as a LangChain ``VectorStore``; close it (or use ``with``) when done.

    ``config``: a vecguard config (dict, TOML path or ``vecguard.Config``); its ``[store]`` chooses the backend.
    ``embedding``: None encodes with the config's ``[encoder]``; a LangChain ``Embeddings`` encodes instead (the
    config then must leave ``[encoder]`` out). ``create=False`` refuses where no collection exists yet.
    Opening runs the version guard: ``vecguard.CompatibilityError`` when the collection was built by another
    encoder. Several stores, in one process or many, may open one collection; each sees the others' writes. One
    store may serve several threads (LangChain runs async calls in threads; ``Engine.share_between_threads``).

    Documents keep their ids (``Document.id``; uuid4 ids where none is given) and their metadata, whose values must
    be flat scalars (``vecguard.DocumentError`` names the key otherwise). A document longer than ``[chunking]
    tokens`` is split into passages for search, and returned whole.
    """

    def __init__(
        self,
        config: str | Path | Mapping[str, Any] | Config,
        embedding: Embeddings | None = None,
        *,
        create: bool = True,
    ) -> None:
        loaded = load_config(config)
        self._embedding = embedding
        if embedding is None:
            self.engine = Engine(loaded, create=create)
            self.engine.share_between_threads()  # LangChain runs async calls (abatch, ainvoke) in threads
            return
        if loaded.tables["encoder"] != DEFAULTS["encoder"]:
            raise ConfigError(
                f"{loaded.source}: both an [encoder] table and embedding= were given; the collection has one "
                f"encoder: drop [encoder] from the config, or pass embedding=None"
            )
        encoder = EmbeddingsEncoder(embedding)
        registry = Registry.discover()
        self.engine = Engine(
            loaded, registry=registry, parts=build_parts(loaded, registry, encoder=encoder), create=create
        )
        self.engine.share_between_threads()

    # ------------------------------------------------------------ lifecycle

    @property
    def embeddings(self) -> Embeddings | None:
        """The LangChain Embeddings given, or None when the config's encoder encodes."""
        return self._embedding

    def close(self) -> None:
        """Close the collection (its files and locks)."""
        self.engine.close()

    def __enter__(self) -> VecguardVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        config: str | Path | Mapping[str, Any] | Config | None = None,
        **kwargs: Any,
    ) -> VecguardVectorStore:
        """Open (or create) the collection ``config`` describes and add ``texts`` to it."""
        if config is None:
            raise InvalidArgumentError(
                "VecguardVectorStore.from_texts needs config=: a vecguard config (dict or TOML path) saying where "
                "the collection lives"
            )
        store = cls(config, embedding, **kwargs)
        try:
            store.add_texts(texts, metadatas, ids=ids)
        except BaseException:
            store.close()
            raise
        return store

    # ------------------------------------------------------------ writing

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add texts (re-adding an id replaces it); returns their ids, uuid4 where none was given."""
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidArgumentError(f"add_texts got {len(texts)} texts but {len(metadatas)} metadatas")
        documents = [
            LangChainDocument(page_content=text, metadata=metadatas[i] if metadatas else {})
            for i, text in enumerate(texts)
        ]
        return self.add_documents(documents, ids=ids, **kwargs)

    def add_documents(
        self, documents: list[LangChainDocument], ids: list[str] | None = None, **kwargs: Any
    ) -> list[str]:
        """Add documents (re-adding an id replaces it); ``ids`` wins over ``Document.id``, and uuid4 ids are made
        for documents with neither. Every document is checked before any is written."""
        _refuse_unknown(kwargs, "add_documents", ())
        if ids is not None and len(ids) != len(documents):
            raise InvalidArgumentError(f"add_documents got {len(documents)} documents but {len(ids)} ids")
        chosen = [
            (ids[i] if ids is not None else None) or document.id or str(uuid.uuid4())
            for i, document in enumerate(documents)
        ]
        batch = [
            Document(id=doc_id, text=document.page_content, metadata=dict(document.metadata))
            for doc_id, document in zip(chosen, documents)
        ]
        for position, document in enumerate(batch):
            validate_document(document, f"document {position + 1}", position=position)
        self.engine.add(batch)
        return chosen

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id (unknown ids are ignored) or, with ``filter=``, every document it matches.

        ``delete()`` with neither raises: a collection is never emptied by default."""
        filter = kwargs.pop("filter", None)
        _refuse_unknown(kwargs, "delete", ("filter",))
        if ids is None and filter is None:
            raise InvalidArgumentError(
                "delete() needs ids=[...] or filter={...}; to empty the collection pass filter={} explicitly"
            )
        if ids is not None:
            self.engine.delete(list(ids))
        if filter is not None:
            self.engine.delete_matching(filter)
        return True

    # ------------------------------------------------------------ reading

    def get_by_ids(self, ids: Sequence[str], /) -> list[LangChainDocument]:
        """The stored documents among ``ids``, in the order asked; unknown ids are left out."""
        return [_as_langchain(document) for document in self.engine.get(list(ids))]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[LangChainDocument]:
        """The ``k`` best documents by hybrid search. ``filter``: vecguard's filter language
        (``{"year": {"$gte": 2020}}``); ``mode``: "hybrid" (default), "dense" or "keyword"."""
        return [found.document for found in self._similarity(query, k, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[LangChainDocument, float]]:
        """``similarity_search`` with each document's score: the fused score in hybrid mode (higher is better, no
        fixed scale), the cosine in dense mode, BM25 in keyword mode."""
        return [(found.document, found.hit.score) for found in self._similarity(query, k, **kwargs)]

    def similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[LangChainDocument, float]]:
        """The hybrid ranking, each document scored by its dense cosine similarity clamped into [0, 1] (what
        LangChain computes for cosine stores: 1 - cosine distance). ``score_threshold`` is a floor on that cosine
        (vecguard's ``min_score``): documents under it, exact identifier matches included, are left out."""
        return [(found.document, relevance) for found, relevance in self._relevant(query, k, **kwargs)]

    async def asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[LangChainDocument, float]]:
        return await run_in_executor(None, self.similarity_search_with_relevance_scores, query, k, **kwargs)

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[LangChainDocument]:
        """Maximal marginal relevance over the ``fetch_k`` best hybrid candidates: each candidate's passage is
        encoded again with the collection's encoder (the vector stored for it) and LangChain's
        ``maximal_marginal_relevance`` picks ``k`` that are close to the query and far from each other."""
        return [found.document for found in self._mmr(query, k, fetch_k, lambda_mult, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[LangChainDocument]:
        raise NotImplementedError(
            "VecguardVectorStore searches by text (hybrid: dense and keyword signals, exact identifiers first); "
            "call similarity_search(query) instead of embedding the query yourself"
        )

    def as_retriever(self, **kwargs: Any) -> VecguardRetriever:
        """A ``VecguardRetriever``: LangChain's ``VectorStoreRetriever`` that also gives each document its evidence
        under ``metadata[evidence_key]`` (default "vecguard"; None leaves metadata as stored). Takes ``k=`` too."""
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return VecguardRetriever(vectorstore=self, tags=tags, **kwargs)

    # ------------------------------------------------------------ the searches, with their hits

    def _similarity(
        self, query: str, k: int = 4, *, filter: Mapping[str, Any] | None = None, mode: str = "hybrid", **kwargs: Any
    ) -> list[_Found]:
        _refuse_unknown(kwargs, "similarity_search", ("filter", "mode"))
        return self._found(self.engine.search(query, k, mode=mode, filter=filter))

    def _relevant(
        self,
        query: str,
        k: int = 4,
        *,
        score_threshold: float | None = None,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[_Found, float]]:
        _refuse_unknown(kwargs, "similarity_search_with_relevance_scores", ("score_threshold", "filter"))
        # Hits without a dense cosine over the threshold are left out: ask for more until k remain or none are left.
        wanted = max(k, self.engine.config.fusion_depth)
        while True:
            hits = self.engine.search(query, wanted, filter=filter, min_score=score_threshold)
            kept = self._with_cosines(query, hits, k, score_threshold)
            if len(kept) >= k or len(hits) < wanted:
                break
            wanted *= 4
        relevance = {hit.id: cosine for hit, cosine in kept}
        return [(found, relevance[found.hit.id]) for found in self._found([hit for hit, _ in kept])]

    def _with_cosines(
        self, query: str, hits: list[Hit], k: int, score_threshold: float | None
    ) -> list[tuple[Hit, float]]:
        """The first ``k`` hits whose dense cosine passes ``score_threshold``, each with it, clamped into [0, 1]."""
        kept: list[tuple[Hit, float]] = []
        query_vector: np.ndarray | None = None
        for hit in hits:
            cosine = hit.score_of("dense")
            if cosine is None:
                if score_threshold is not None:
                    continue  # under the threshold (min_score), or beyond the depth the dense signal searched
                if query_vector is None:
                    query_vector = self.engine.encoder.encode_queries([query])[0]
                # A keyword-only hit: the cosine of its passage, whose vector is the one the collection stores.
                cosine = float(self.engine.encoder.encode_documents([hit.text])[0] @ query_vector)
            kept.append((hit, max(0.0, min(1.0, cosine))))
            if len(kept) == k:
                break
        return kept

    def _mmr(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        *,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[_Found]:
        _refuse_unknown(kwargs, "max_marginal_relevance_search", ("fetch_k", "lambda_mult", "filter"))
        hits = self.engine.search(query, max(k, fetch_k), filter=filter)
        if not hits:
            return []
        query_vector = self.engine.encoder.encode_queries([query])[0]
        passages = self.engine.encoder.encode_documents([hit.text for hit in hits])
        chosen = maximal_marginal_relevance(query_vector, list(passages), lambda_mult=lambda_mult, k=k)
        return self._found([hits[i] for i in chosen])

    def _found(self, hits: list[Hit]) -> list[_Found]:
        return [_Found(_as_langchain(document), hit) for hit, document in with_documents(self.engine, hits)]


def _as_langchain(document: Document) -> LangChainDocument:
    return LangChainDocument(id=document.id, page_content=document.text, metadata=dict(document.metadata))


def _refuse_unknown(kwargs: Mapping[str, Any], method: str, accepted: Sequence[str]) -> None:
    if kwargs:
        takes = f"; it takes {', '.join(accepted)}" if accepted else ""
        raise InvalidArgumentError(
            f"VecguardVectorStore.{method} got unknown argument(s) {', '.join(sorted(kwargs))}{takes}"
        )


# ---------------------------------------------------------------- the retriever


class VecguardRetriever(VectorStoreRetriever):
    """LangChain's ``VectorStoreRetriever`` over a ``VecguardVectorStore``, with each document's evidence.

    ``search_type`` and ``search_kwargs`` work as in LangChain ("similarity": hybrid; "similarity_score_threshold":
    a floor on the dense cosine; "mmr"); ``k`` sets the number of documents (``invoke(query, k=3)`` too). Each
    document's metadata is a copy with ``metadata[evidence_key]`` = ``{"score", "signals", "passage"}`` (see
    ``evidence``); a document whose own metadata already has that key raises, and ``evidence_key=None`` returns
    metadata as stored.
    """

    vectorstore: VecguardVectorStore
    k: int | None = None
    """Documents to return; overrides ``search_kwargs["k"]`` (default 4)."""
    evidence_key: str | None = "vecguard"
    """The metadata key the evidence goes under; None: no evidence."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[LangChainDocument]:
        options = {**self.search_kwargs, **({"k": self.k} if self.k is not None else {}), **kwargs}
        store = self.vectorstore
        if self.search_type == "similarity_score_threshold":
            found = [item for item, _ in store._relevant(query, **options)]
        elif self.search_type == "mmr":
            found = store._mmr(query, **options)
        else:
            found = store._similarity(query, **options)
        return [self._with_evidence(item) for item in found]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[LangChainDocument]:
        return await run_in_executor(
            None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(), **kwargs
        )

    def _with_evidence(self, found: _Found) -> LangChainDocument:
        document = found.document
        if self.evidence_key is None:
            return document
        if self.evidence_key in document.metadata:
            raise InvalidArgumentError(
                f"document {document.id!r} already has metadata {self.evidence_key!r}, where VecguardRetriever puts "
                f"its evidence: pass evidence_key='another_key' (or evidence_key=None for no evidence)"
            )
        metadata = {**document.metadata, self.evidence_key: evidence(found.hit)}
        return LangChainDocument(id=document.id, page_content=document.page_content, metadata=metadata)

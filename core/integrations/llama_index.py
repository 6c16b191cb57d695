"""vecguard as a LlamaIndex retriever: ``VecguardRetriever`` returns ``NodeWithScore`` from a guarded collection.

    from llama_index.core.query_engine import RetrieverQueryEngine
    from vecguard.integrations.llama_index import VecguardRetriever

    with VecguardRetriever(config="vecguard.toml", similarity_top_k=5) as retriever:
        retriever.add_nodes(documents)  # LlamaIndex Documents or TextNodes, encoded by the collection's own encoder
        engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
        answer = engine.query("What does CVE-2022-24045 affect?")

There is deliberately no LlamaIndex vector store. ``VectorStoreIndex`` embeds every node with ``Settings.embed_model``
before a store sees it (``_get_node_with_embedding`` in llama_index/core/indices/vector_store/base.py, whatever the
store declares) and its retriever sends the query as that model's embedding; a store would have to either ignore
those vectors (paying for them, and surprising) or trust them, which bypasses the collection's encoder and the
version guard that checks it. The retriever takes the query's text and lets vecguard encode it instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from ..engine import Engine
from ..engine import open as open_engine
from ..errors import DocumentError, FilterError, InvalidArgumentError
from ..filters import validate as validate_filter
from ..protocols import Document, Hit
from ..query import MODES, check_arguments
from . import missing_extra
from .hits import evidence, with_documents

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import (
        BaseNode,
        MetadataMode,
        NodeRelationship,
        NodeWithScore,
        QueryBundle,
        RelatedNodeInfo,
        TextNode,
    )
    from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
except ImportError as exc:
    raise missing_extra("llama_index", "llamaindex", exc) from exc

__all__ = ["EVIDENCE_KEY", "REF_DOC_KEY", "VecguardRetriever", "translate_filters"]

EVIDENCE_KEY = "vecguard"
"""The metadata key a returned node's search evidence sits under (excluded from the LLM's and the embedder's text)."""

REF_DOC_KEY = "ref_doc_id"
"""The stored metadata key holding a node's source document id (LlamaIndex's own stores use the same name), so
``delete_ref_doc`` and a ``MetadataFilter(key="ref_doc_id", ...)`` find every node of one document."""

# LlamaIndex operators with an exact counterpart in vecguard's filter language: same values, same answer on a
# missing field (only NE and NIN match it, in both; llama_index/core/vector_stores/utils.py).
_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


def translate_filters(filters: MetadataFilters) -> dict[str, Any]:
    """LlamaIndex ``MetadataFilters`` (nested groups included) as a vecguard filter dict.

    EQ NE GT GTE LT LTE IN NIN and the AND, OR and NOT conditions translate exactly (NOT: none of the group
    matches, as in LlamaIndex's own stores); any other operator raises FilterError naming it. Empty filters
    translate to ``{}``, which matches every document. ``MetadataFilter`` takes no bool value: filter a bool field
    with a vecguard dict (``{"public": True}``); vecguard never equates 1 with True, as LlamaIndex's own
    in-memory store does.
    """
    return _translate_group(filters, "filters", top=True)


def _translate_group(group: MetadataFilters, where: str, *, top: bool = False) -> dict[str, Any]:
    if not group.filters:
        if top:
            return {}
        raise FilterError(f"{where} is an empty MetadataFilters group; remove it or give it filters")
    clauses = [
        _translate_group(item, f"{where}.filters[{i}]")
        if isinstance(item, MetadataFilters)
        else _translate_filter(item, f"{where}.filters[{i}]")
        for i, item in enumerate(group.filters)
    ]
    condition = group.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:
        return {"$not": {"$or": clauses}}
    if len(clauses) == 1:
        return clauses[0]
    return {"$or" if condition == FilterCondition.OR else "$and": clauses}


def _translate_filter(item: MetadataFilter, where: str) -> dict[str, Any]:
    operator = _OPERATORS.get(item.operator)
    if operator is None:
        raise FilterError(
            f"{where}: operator {item.operator.name} ({item.operator.value!r}) on {item.key!r} has no exact "
            f"equivalent in vecguard, whose metadata values are flat and matched whole; use EQ, NE, GT, GTE, LT, LTE, "
            f"IN or NIN, or pass a vecguard filter dict"
        )
    value = item.value
    if operator in ("$in", "$nin"):
        if not isinstance(value, list) or not value:
            raise FilterError(
                f"{where}: {item.operator.name} on {item.key!r} takes a non-empty list of values, got {value!r:.60}"
            )
    elif value is None or isinstance(value, list):
        raise FilterError(
            f"{where}: {item.operator.name} on {item.key!r} takes one string or number, got {value!r:.60}"
            f"{'; use IN or NIN for a list' if isinstance(value, list) else ''}"
        )
    return {item.key: {operator: value}}


class VecguardRetriever(BaseRetriever):
    """A LlamaIndex retriever over a vecguard collection: hybrid (dense + BM25, identifier-aware) search whose query
    is encoded by the collection's own encoder, under its version guard.

    Give ``config`` (a dict, a TOML path or a ``Config``: opened here, the guard runs now, closed by ``close()``) or
    ``engine`` (an open ``vecguard.Engine``, left open and used as it is: call its ``share_between_threads()`` if
    several threads use it, as ``aretrieve`` does; one opened here is shared so already). ``mode`` is "hybrid",
    "dense" or "keyword"; ``filters`` a vecguard filter dict or LlamaIndex ``MetadataFilters`` (see
    ``translate_filters``); ``min_score`` a floor on the dense cosine similarity. Each returned node's ``score`` is
    vecguard's: the fused score in hybrid mode (the ``[fusion]`` plugin's scale, not a cosine), the cosine in dense
    mode, BM25 in keyword mode; a ``SimilarityPostprocessor`` cutoff is on that scale.

    A node is one vecguard document as stored: ``id_`` the document id, ``text`` its whole text, ``metadata`` the
    stored metadata. The evidence (the fused score, each signal's rank and score, the passage that matched: its
    chunk and character span in the text; ``vecguard.integrations.hits.evidence``) goes under
    ``metadata[evidence_key]``, which is excluded from the LLM's and the embedder's view of the node;
    ``evidence_key=None`` leaves it out. ``add_nodes`` writes LlamaIndex Documents and nodes into the collection.
    """

    def __init__(
        self,
        config: str | Path | Mapping[str, Any] | Config | None = None,
        *,
        engine: Engine | None = None,
        similarity_top_k: int = 10,
        mode: str = "hybrid",
        filters: MetadataFilters | Mapping[str, Any] | None = None,
        min_score: float | None = None,
        evidence_key: str | None = EVIDENCE_KEY,
        create: bool = True,
        **kwargs: Any,
    ) -> None:
        """``create=False`` refuses to open a collection that does not exist yet (a mistyped path never answers
        "no results"); ``kwargs`` go to LlamaIndex's ``BaseRetriever`` (``callback_manager``, ``verbose``)."""
        if (config is None) == (engine is None):
            raise InvalidArgumentError(
                "VecguardRetriever takes either config= (a dict, TOML path or Config) or engine= (an open "
                "vecguard.Engine), not both and not neither"
            )
        if not isinstance(similarity_top_k, int) or isinstance(similarity_top_k, bool) or similarity_top_k < 1:
            raise InvalidArgumentError(f"similarity_top_k must be a whole number >= 1, got {similarity_top_k!r}")
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if evidence_key is not None and (not isinstance(evidence_key, str) or not evidence_key):
            raise InvalidArgumentError(f"evidence_key must be a non-empty string or None, got {evidence_key!r}")
        self.filters = filters
        check_arguments("a query", similarity_top_k, mode, min_score, None)  # min_score's checks, before any search
        super().__init__(**kwargs)
        self.similarity_top_k = similarity_top_k
        self.mode = mode
        self.min_score = min_score
        self.evidence_key = evidence_key
        self._owns_engine = engine is None
        self.engine: Engine = engine if engine is not None else open_engine(config, create=create)  # type: ignore[arg-type]
        if self._owns_engine:
            self.engine.share_between_threads()  # aretrieve runs searches in threads

    @property
    def filters(self) -> dict[str, Any]:
        """The vecguard filter every retrieval applies (``{}``: none); set a vecguard dict or ``MetadataFilters``."""
        return self._filters

    @filters.setter
    def filters(self, filters: MetadataFilters | Mapping[str, Any] | None) -> None:
        self._filters = _as_vecguard_filter(filters)

    # ------------------------------------------------------------ retrieving

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # The text, never query_bundle.embedding: the collection's own encoder embeds the query, under its guard.
        hits = self.engine.search(
            query_bundle.query_str,
            self.similarity_top_k,
            mode=self.mode,
            filter=self.filters or None,
            min_score=self.min_score,
        )
        found = with_documents(self.engine, hits)
        return [NodeWithScore(node=self._node(hit, document), score=hit.score) for hit, document in found]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def _node(self, hit: Hit, document: Document) -> TextNode:
        metadata = dict(document.metadata)
        source = metadata.pop(REF_DOC_KEY, None)
        excluded: list[str] = []
        if self.evidence_key is not None:
            if self.evidence_key in metadata:
                raise InvalidArgumentError(
                    f"document {hit.id!r} has its own metadata key {self.evidence_key!r}, where this retriever puts "
                    f"its search evidence; pass evidence_key='another name' (or None to leave evidence out)"
                )
            metadata[self.evidence_key] = evidence(hit)
            excluded = [self.evidence_key]
        relationships = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id=str(source))} if source is not None else {}
        return TextNode(
            id_=document.id,
            text=document.text,
            metadata=metadata,
            relationships=relationships,
            excluded_embed_metadata_keys=excluded,
            excluded_llm_metadata_keys=list(excluded),
        )

    # ------------------------------------------------------------ writing

    def add_nodes(self, nodes: Iterable[BaseNode]) -> int:
        """Write LlamaIndex Documents or nodes, encoded by the collection's own encoder (their ``embedding``, if
        any, is ignored); returns how many were written (one stored unchanged is skipped, not counted). The node's
        ``id_`` (a Document's ``doc_id``) becomes the vecguard id, so adding it again replaces it; its text is stored
        and its metadata must be flat strings, numbers and bools. A node cut from a document keeps that document's
        id under ``ref_doc_id``; a retrieved node's evidence is left behind."""
        documents = [_as_vecguard_document(node, position, self.evidence_key) for position, node in enumerate(nodes)]
        return self.engine.add(documents)

    def delete_nodes(self, node_ids: Sequence[str]) -> int:
        """Remove nodes by id; unknown ids are ignored. Returns how many existed."""
        return self.engine.delete(node_ids)

    def delete_ref_doc(self, ref_doc_id: str) -> int:
        """Remove a document: the node with that id and every node cut from it. Returns how many were removed."""
        if not isinstance(ref_doc_id, str) or not ref_doc_id:
            raise InvalidArgumentError(f"ref_doc_id must be a non-empty string, got {ref_doc_id!r:.60}")
        return self.engine.delete([ref_doc_id]) + self.engine.delete_matching({REF_DOC_KEY: ref_doc_id})

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the engine if this retriever opened it (one given as ``engine=`` stays open)."""
        if self._owns_engine:
            self._owns_engine = False  # a second close() is a no-op
            self.engine.close()

    def __enter__(self) -> VecguardRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_vecguard_filter(filters: MetadataFilters | Mapping[str, Any] | None) -> dict[str, Any]:
    if filters is None:
        return {}
    if isinstance(filters, MetadataFilters):
        translated = translate_filters(filters)
    elif isinstance(filters, Mapping):
        translated = dict(filters)
    else:
        raise FilterError(
            f"filters must be a vecguard filter dict or LlamaIndex MetadataFilters, got {type(filters).__name__}"
        )
    if translated:
        validate_filter(translated)
    return translated


def _as_vecguard_document(node: Any, position: int, evidence_key: str | None) -> dict[str, Any]:
    if not isinstance(node, BaseNode):
        raise DocumentError(
            f"node {position} is a {type(node).__name__}; add_nodes takes LlamaIndex Documents or nodes",
            position=position,
        )
    where = f"node {position} (id {node.node_id!r})"
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    if not text.strip():
        raise DocumentError(
            f"{where} has no text; vecguard searches text, so give it some or leave it out", position=position
        )
    metadata = dict(node.metadata)
    if evidence_key is not None and evidence_key in metadata:
        if not isinstance(metadata[evidence_key], Mapping):
            raise DocumentError(
                f"{where}: metadata key {evidence_key!r} is where the retriever puts search evidence; rename it, or "
                f"give the retriever another evidence_key",
                position=position,
            )
        del metadata[evidence_key]  # a retrieved node's evidence, which belongs to that search, not to the node
    for key, value in metadata.items():
        if value is None or not isinstance(value, (str, int, float, bool)):
            raise DocumentError(
                f"{where}: metadata {key!r} is {type(value).__name__} {value!r:.60}; vecguard stores str, int, float "
                f"and bool values only: flatten it into scalar keys or drop it",
                position=position,
            )
    source = node.ref_doc_id
    if source is not None:
        stored = metadata.setdefault(REF_DOC_KEY, source)
        if stored != source:
            raise DocumentError(
                f"{where}: metadata {REF_DOC_KEY!r} is {stored!r}, but the node's source document is {source!r}; "
                f"vecguard keeps the source document's id under {REF_DOC_KEY!r}, so rename that key",
                position=position,
            )
    return {"id": node.node_id, "text": text, "metadata": metadata}

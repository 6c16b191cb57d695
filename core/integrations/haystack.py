"""vecguard in Haystack 2.x/3.x: ``VecguardDocumentStore`` and the ``VecguardRetriever`` component.

    from haystack import Document, Pipeline
    from vecguard.integrations.haystack import VecguardDocumentStore, VecguardRetriever

    store = VecguardDocumentStore(config="vecguard.toml")    # the version guard runs here
    store.write_documents([Document(content="Reference CVE-2022-24045 applies.", meta={"year": 2022})])
    pipeline = Pipeline()
    pipeline.add_component("retriever", VecguardRetriever(document_store=store, top_k=5))
    pipeline.run({"retriever": {"query": "CVE-2022-24045"}})["retriever"]["documents"]

vecguard encodes every document's ``content`` itself, with the collection's encoder; a Document's own
``embedding`` (and ``sparse_embedding``) is ignored on write, and documents come back with ``embedding=None``:
the collection holds one vector per chunk of the text, from its own model, not the vector the caller computed.
``meta`` holds flat scalars (str, int, float, bool); a ``None`` value means the key is absent (what Haystack's
``== None`` filter tests), a list or dict is refused with ``vecguard.DocumentError`` naming the key.

Haystack filters are translated into vecguard's portable filter language where the two agree exactly. Where they
do not (conditions on ``id`` or ``content``, ISO dates, nested ``meta.a.b`` fields), a superset is translated and
Haystack's own ``document_matches_filter`` decides on each candidate; a retriever query then fetches more candidates
until it has ``top_k`` matches or has seen every chunk, so it never returns a document that does not match and
never stops short while more match.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

from .. import filters as portable_filters
from ..engine import MODES, Engine, validate_document
from ..engine import open as open_collection
from ..errors import DocumentError, FilterError
from ..protocols import Document as VecguardDocument
from ..protocols import Hit
from . import missing_extra
from .hits import evidence, with_documents

try:
    import dateutil.parser
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.document_stores.errors import DuplicateDocumentError
    from haystack.document_stores.types import DuplicatePolicy, FilterPolicy, apply_filter_policy
    from haystack.errors import FilterError as HaystackFilterError
    from haystack.utils.filters import document_matches_filter
except ImportError as exc:
    raise missing_extra("haystack", "haystack", exc) from exc

__all__ = ["FilterTranslation", "VecguardDocumentStore", "VecguardRetriever", "translate_filters"]

log = logging.getLogger(__name__)

ConfigSource = str | Path | Mapping[str, Any]
OVERFETCH = 4  # a retriever query under an inexact filter fetches this many times more candidates per round

_DOCUMENT_FIELDS = frozenset(f.name for f in fields(Document))
_ORDERING = {">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}
_COMPARISONS = ("==", "!=", ">", ">=", "<", "<=", "in", "not in")
_LOGICAL = ("AND", "OR", "NOT")
_EXAMPLE = '{"field": "meta.year", "operator": ">=", "value": 2020} or {"operator": "AND", "conditions": [...]}'


class VecguardDocumentStore:
    """A Haystack DocumentStore over one vecguard collection, on any backend its config chooses.

    ``config`` is a vecguard config: a dict, or the path of a TOML file (relative paths inside it are read from
    the file's folder). Opening runs the version guard: a collection built with another encoder raises
    ``vecguard.CompatibilityError``. Nothing is cached here: every call reads the collection as it is, so several
    stores (and processes) on one collection see each other's writes; one store may serve several threads
    (``Engine.share_between_threads``). Call ``close()`` when done.
    """

    def __init__(self, config: ConfigSource) -> None:
        if not isinstance(config, (str, Path, Mapping)):
            raise TypeError(
                f"config must be a vecguard config dict or the path of a TOML file, got {type(config).__name__}"
            )
        # Kept as given (a path as a path, a dict as a deep copy), so to_dict() writes what reopens this collection.
        self.config: str | dict[str, Any] = str(config) if isinstance(config, (str, Path)) else _plain(config)
        self._engine = open_collection(self.config, create=True)
        self._engine.share_between_threads()  # Haystack's async pipelines run components in threads
        self._warned_embedding = False

    @property
    def engine(self) -> Engine:
        """The vecguard engine behind this store (``info()``, ``check()``, ``search()`` with every option)."""
        return self._engine

    def close(self) -> None:
        """Close the collection."""
        self._engine.close()

    def __enter__(self) -> VecguardDocumentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """The store as Haystack serialises it: the config (a TOML path as a path, a dict as a dict)."""
        return default_to_dict(self, config=copy.deepcopy(self.config))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VecguardDocumentStore:
        """Reopen the collection ``to_dict()`` described (the version guard runs again)."""
        return default_from_dict(cls, data)

    # ------------------------------------------------------------ the DocumentStore protocol

    def count_documents(self) -> int:
        """Number of documents stored."""
        return self._engine.count()

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """The documents that match Haystack ``filters`` (every document when None or {}), ``embedding=None``."""
        return [_to_haystack(document) for document in self._matching(filters)]

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Encode and store ``documents``; return how many were written.

        ``DuplicatePolicy.NONE`` and ``FAIL`` raise ``DuplicateDocumentError`` (before writing anything) when an id
        is already stored or repeated in ``documents``; ``SKIP`` writes only new ids (the first of repeats);
        ``OVERWRITE`` replaces and returns ``len(documents)``. Every document is checked before any is written:
        ``content`` must be non-empty text, ``meta`` flat scalars (None: absent), and a ``blob`` is refused.
        """
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            given = type(documents).__name__ if not isinstance(documents, list) else "a list holding other objects"
            raise ValueError(f"write_documents takes a list of haystack Document objects, got {given}")
        converted = [self._to_vecguard(document, position) for position, document in enumerate(documents)]
        if policy == DuplicatePolicy.OVERWRITE:
            self._engine.add(converted)
            return len(converted)
        stored = {document.id for document in self._engine.get(list(dict.fromkeys(d.id for d in converted)))}
        if policy == DuplicatePolicy.SKIP:
            fresh, taken = [], set(stored)
            for document in converted:
                if document.id not in taken:
                    taken.add(document.id)
                    fresh.append(document)
            self._engine.add(fresh)
            return len(fresh)
        seen: set[str] = set()
        for document in converted:
            if document.id in stored or document.id in seen:
                where = "is already stored" if document.id in stored else "appears twice in this call"
                raise DuplicateDocumentError(
                    f"document id {document.id!r} {where}; nothing was written. Pass "
                    f"policy=DuplicatePolicy.OVERWRITE to replace it or DuplicatePolicy.SKIP to keep the stored one"
                )
            seen.add(document.id)
        self._engine.add(converted)
        return len(converted)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Delete the documents with these ids; unknown ids are ignored."""
        self._engine.delete(list(document_ids))

    # ------------------------------------------------------------ the extended operations

    def delete_all_documents(self) -> None:
        """Delete every document; the collection (its encoder and manifest) stays."""
        self._engine.delete_matching({})

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Delete the documents that match ``filters``; return how many."""
        plan = _required(filters, "delete_by_filter", "delete_all_documents()")
        if plan.empty:
            return 0
        if plan.exact:
            return self._engine.delete_matching(plan.where or {})
        return self._engine.delete([d.id for d in self._matching(filters)])

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Merge ``meta`` into the meta of every document that matches ``filters`` (a None value removes the key);
        return how many. The documents are written again, so their text is encoded again."""
        _required(filters, "update_by_filter", "filter_documents() and write_documents()")
        if not isinstance(meta, Mapping):
            raise ValueError(f"update_by_filter takes meta as a dict of flat values, got {type(meta).__name__}")
        updated = []
        for position, document in enumerate(self._matching(filters)):
            merged = {**document.metadata, **meta}
            updated.append(self._checked(document.id, document.text, merged, "update_by_filter", position))
        self._engine.add(updated)
        return len(updated)

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        """Number of documents that match ``filters`` (every document when empty)."""
        if not filters:
            return self.count_documents()
        plan = _translate_checked(filters)
        if plan.empty:
            return 0
        if plan.exact and plan.where is not None:
            return len(self._engine.ids_matching(plan.where))
        return len(self._matching(filters))

    def count_unique_metadata_by_filter(self, filters: dict[str, Any], metadata_fields: list[str]) -> dict[str, int]:
        """For each field (with or without "meta."), how many distinct values the matching documents hold; values
        of different types count apart (1, 1.0, True and "1" are four)."""
        documents = self._matching(filters)
        counts = {}
        for name in metadata_fields:
            key = name.removeprefix("meta.")
            counts[key] = len({(type(d.metadata[key]), d.metadata[key]) for d in documents if key in d.metadata})
        return counts

    def get_metadata_fields_info(self) -> dict[str, dict[str, str]]:
        """Every metadata field stored and its type ("keyword", "int", "float", "boolean"), as Haystack names them."""
        names = {bool: "boolean", int: "int", float: "float", str: "keyword"}
        info: dict[str, dict[str, str]] = {}
        for document in self._matching(None):
            for key, value in document.metadata.items():
                info[key] = {"type": names[type(value)]}
        return info

    def get_metadata_field_min_max(self, metadata_field: str) -> dict[str, Any]:
        """The smallest and largest value of a field (with or without "meta."); None for both when no document
        holds it or its values do not compare (strings and numbers mixed)."""
        key = metadata_field.removeprefix("meta.")
        values = [d.metadata[key] for d in self._matching(None) if key in d.metadata]
        try:
            return {"min": min(values), "max": max(values)} if values else {"min": None, "max": None}
        except TypeError:
            return {"min": None, "max": None}

    def get_metadata_field_unique_values(
        self,
        metadata_field: str,
        search_term: str | None = None,
        from_: int = 0,
        size: int = 10,
        filters: dict[str, Any] | None = None,
    ) -> tuple[list[Any], int]:
        """One page of a field's distinct values among the documents matching ``filters``, and how many there are.

        ``search_term`` keeps values holding it (case-insensitive); values are ordered by their text, then type.
        """
        key = metadata_field.removeprefix("meta.")
        unique: dict[tuple[str, Any], Any] = {}
        for document in self._matching(filters):
            if key in document.metadata:
                value = document.metadata[key]
                unique.setdefault((type(value).__name__, value), value)
        if search_term:
            unique = {k: v for k, v in unique.items() if search_term.lower() in str(v).lower()}
        ordered = sorted(unique, key=lambda k: (str(unique[k]), k[0]))
        return [unique[k] for k in ordered[from_ : from_ + size]], len(ordered)

    # ------------------------------------------------------------ retrieval

    def retrieve(
        self, query: str, *, top_k: int = 10, mode: str = "hybrid", filters: dict[str, Any] | None = None
    ) -> list[tuple[Document, Hit]]:
        """The best ``top_k`` documents for ``query`` that match ``filters``, each with the vecguard hit behind it
        (``Document.score``: the fused score in hybrid mode, cosine in dense, BM25 in keyword)."""
        if top_k == 0:
            return []
        plan = _translate_checked(filters) if filters else _EVERYTHING
        if plan.empty:
            return []
        if plan.exact:
            return self._found(self._engine.search(query, k=top_k, mode=mode, filter=plan.where))
        # Inexact: search the superset, keep what Haystack's reference semantics accept, and widen until top_k
        # matches are found or every chunk has been a candidate (then nothing more can match).
        every_chunk = max(self._engine.count_chunks(), 1)
        k = top_k * OVERFETCH
        while True:
            hits = self._engine.search(query, k=k, mode=mode, filter=plan.where)
            found = self._found(hits)
            kept = [(document, hit) for document, hit in found if document_matches_filter(filters, document)]
            if len(kept) >= top_k or k >= every_chunk:
                return kept[:top_k]
            k *= OVERFETCH

    def _found(self, hits: list[Hit]) -> list[tuple[Document, Hit]]:
        """Hits as the whole stored documents (a hit's text is the passage that matched), scored by the hit."""
        return [(_to_haystack(document, score=hit.score), hit) for hit, document in with_documents(self._engine, hits)]

    # ------------------------------------------------------------ conversion

    def _to_vecguard(self, document: Document, position: int) -> VecguardDocument:
        where = f"documents[{position}] (id {document.id!r})"
        if document.content is None or not document.content.strip():
            raise DocumentError(
                f"{where} has no text (content={document.content!r:.40}); vecguard encodes and searches text: "
                f"convert the file to text first (a Haystack converter) or leave it out",
                position=position,
            )
        if document.blob is not None:
            raise DocumentError(
                f"{where} carries a blob; vecguard stores text and flat meta only: keep the bytes elsewhere "
                f"(name them in a meta key) and write the Document with blob=None",
                position=position,
            )
        if (document.embedding is not None or document.sparse_embedding is not None) and not self._warned_embedding:
            self._warned_embedding = True
            log.warning(
                "VecguardDocumentStore ignores Document.embedding: vecguard encodes content with the collection's "
                "own encoder, so a DocumentEmbedder before the writer is wasted work"
            )
        return self._checked(document.id, document.content, document.meta, f"documents[{position}]", position)

    @staticmethod
    def _checked(doc_id: str, text: str, meta: Mapping[str, Any], place: str, position: int) -> VecguardDocument:
        """The document vecguard stores: None values dropped, everything else checked by vecguard's own rules;
        errors name ``place`` (where the caller gave it) and the id."""
        where = f"{place} (id {doc_id!r})"
        for key, value in meta.items():
            if isinstance(value, (list, tuple, set, dict)):
                raise DocumentError(
                    f"{where}: meta {key!r} is a {type(value).__name__}; vecguard stores flat values (str, int, "
                    f"float, bool): flatten it into several keys or join it into one string",
                    position=position,
                )
            if isinstance(value, (datetime, date)):
                raise DocumentError(
                    f"{where}: meta {key!r} is a {type(value).__name__}; store it as an ISO 8601 string "
                    f"(value.isoformat()), which Haystack's date filters compare as a date",
                    position=position,
                )
        metadata = {key: value for key, value in meta.items() if value is not None}
        converted = VecguardDocument(id=doc_id, text=text, metadata=metadata)
        validate_document(converted, place, position=position)  # it names the id itself
        return converted

    def _matching(self, filters: dict[str, Any] | None) -> list[VecguardDocument]:
        """The stored documents that match Haystack ``filters``, in the store's order."""
        plan = _translate_checked(filters) if filters else _EVERYTHING
        if plan.empty:
            return []
        if plan.where is None:
            documents = list(self._engine.documents())
        else:
            documents = self._engine.get(self._engine.ids_matching(plan.where))
        if plan.exact:
            return documents
        return [d for d in documents if document_matches_filter(filters, _to_haystack(d))]  # type: ignore[arg-type]


@component
class VecguardRetriever:
    """Retrieves documents from a ``VecguardDocumentStore`` for a query text: vecguard encodes the query with the
    collection's encoder and fuses dense and keyword search (``mode``: "hybrid", "dense" or "keyword").

    Outputs ``documents`` (best first, each the whole stored document; ``score`` is the fused score in hybrid
    mode, cosine in dense, BM25 in keyword; ``meta`` as stored) and ``evidence``: for each document id, the fused
    score, where each signal ranked it and its score there, and the passage that matched
    (``{"score": .., "signals": {"dense": {"rank": 1, "score": 0.71}, "keyword": {...}}, "passage": {"chunk",
    "start", "end"}}``, ``vecguard.integrations.hits.evidence``), kept out of ``meta`` so that the user's metadata
    is never overwritten and a retrieved document can be written back as it is.
    """

    def __init__(
        self,
        document_store: VecguardDocumentStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        mode: str = "hybrid",
        filter_policy: FilterPolicy | str = FilterPolicy.REPLACE,
    ) -> None:
        if not isinstance(document_store, VecguardDocumentStore):
            raise TypeError(f"document_store must be a VecguardDocumentStore, got {type(document_store).__name__}")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if filters:
            _translate_checked(filters)  # a malformed filter fails here, not at the first query
        self.document_store = document_store
        self.filters = filters
        self.top_k = top_k
        self.mode = mode
        self.filter_policy = (
            FilterPolicy.from_str(filter_policy) if isinstance(filter_policy, str) else FilterPolicy(filter_policy)
        )

    def to_dict(self) -> dict[str, Any]:
        """The component as Haystack serialises it; the store as its config."""
        return default_to_dict(
            self,
            document_store=self.document_store,
            filters=self.filters,
            top_k=self.top_k,
            mode=self.mode,
            filter_policy=self.filter_policy.value,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VecguardRetriever:
        """Rebuild the component, reopening its store's collection (the version guard runs again)."""
        data = copy.deepcopy(data)
        init = data.setdefault("init_parameters", {})
        if isinstance(init.get("document_store"), dict):
            init["document_store"] = VecguardDocumentStore.from_dict(init["document_store"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document], evidence=dict[str, dict[str, Any]])
    def run(self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None) -> dict[str, Any]:
        """Retrieve the best ``top_k`` documents for ``query`` that match ``filters`` (combined with the init
        filters by ``filter_policy``)."""
        filters = apply_filter_policy(self.filter_policy, self.filters, filters)
        top_k = self.top_k if top_k is None else top_k
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise ValueError(f"top_k must be a whole number >= 0, got {top_k!r}")
        found = self.document_store.retrieve(query, top_k=top_k, mode=self.mode, filters=filters)
        documents = [document for document, _ in found]
        return {"documents": documents, "evidence": {hit.id: evidence(hit) for _, hit in found}}


# ------------------------------------------------------------ documents


def _to_haystack(document: VecguardDocument, score: float | None = None) -> Document:
    """A stored document as a Haystack Document: meta as stored, no embedding."""
    return Document(id=document.id, content=document.text, meta=dict(document.metadata), score=score)


def _plain(value: Any) -> Any:
    """A deep copy of a config dict whose Path values are strings (Haystack writes it as YAML or JSON)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


# ------------------------------------------------------------ filters: Haystack's syntax -> vecguard's


@dataclass(frozen=True)
class FilterTranslation:
    """A Haystack filter as a portable vecguard filter (what ``translate_filters`` returns).

    ``where``: the portable filter (None: every document). ``exact``: it matches exactly the documents Haystack's
    reference semantics match; otherwise it matches a superset, and each candidate is tested with
    ``document_matches_filter``. ``empty``: no document can match (then ``exact`` too).
    """

    where: dict[str, Any] | None
    exact: bool
    empty: bool = False


_EVERYTHING = FilterTranslation(None, exact=True)
_NOTHING = FilterTranslation(None, exact=True, empty=True)
_UNKNOWN = FilterTranslation(None, exact=False)  # no portable condition: every document is a candidate


def _required(filters: Any, operation: str, instead: str) -> FilterTranslation:
    if not filters:
        raise HaystackFilterError(f"{operation} needs a non-empty filter; to act on every document use {instead}")
    return _translate_checked(filters)


def translate_filters(filters: dict[str, Any]) -> FilterTranslation:
    """The portable vecguard filter a Haystack filter becomes, and whether it is exact; raises Haystack's
    FilterError for what Haystack refuses (a malformed filter, ``in`` without a list, ``>`` against a list or a
    string that is not an ISO date)."""
    return _translate_checked(filters)


def _translate_checked(filters: Any) -> FilterTranslation:
    """Translate a Haystack filter; a translation vecguard would refuse becomes a superset the reference tests."""
    plan = _translate(filters, "filters")
    if plan.where is not None:
        try:
            portable_filters.validate(plan.where)
        except FilterError:  # e.g. a meta key vecguard cannot store ("$x"): Haystack's reference decides
            return _UNKNOWN
    return plan


def _translate(node: Any, where: str) -> FilterTranslation:
    if not isinstance(node, Mapping):
        raise HaystackFilterError(f"{where} must be a dict like {_EXAMPLE}, got {type(node).__name__}")
    if "field" in node:
        return _comparison(node, where)
    for key in ("operator", "conditions"):
        if key not in node:
            raise HaystackFilterError(
                f"{where}: '{key}' key missing in {dict(node)!r:.120}; Haystack filters look like {_EXAMPLE}"
            )
    operator, conditions = node["operator"], node["conditions"]
    if operator not in _LOGICAL:
        raise HaystackFilterError(
            f"{where}: unknown logical operator {operator!r}; use one of {', '.join(_LOGICAL)}, or give a "
            f"comparison a 'field'"
        )
    if not isinstance(conditions, list):
        raise HaystackFilterError(f"{where}: 'conditions' must be a list of filters, got {type(conditions).__name__}")
    parts = [_translate(c, f"{where}.conditions[{i}]") for i, c in enumerate(conditions)]
    if operator == "OR":
        return _any(parts)
    if operator == "AND":
        return _all(parts)
    return _negated(_all(parts))  # Haystack's NOT is NOT(AND(conditions))


def _all(parts: Sequence[FilterTranslation]) -> FilterTranslation:
    if any(p.empty for p in parts):
        return _NOTHING
    wheres = [p.where for p in parts if p.where is not None]
    exact = all(p.exact for p in parts)
    if not wheres:
        return FilterTranslation(None, exact=exact)
    return FilterTranslation(wheres[0] if len(wheres) == 1 else {"$and": wheres}, exact=exact)


def _any(parts: Sequence[FilterTranslation]) -> FilterTranslation:
    parts = [p for p in parts if not p.empty]
    if not parts:
        return _NOTHING
    exact = all(p.exact for p in parts)
    if any(p.where is None for p in parts):
        return FilterTranslation(None, exact=exact)
    wheres = [p.where for p in parts]
    return FilterTranslation(wheres[0] if len(wheres) == 1 else {"$or": wheres}, exact=exact)


def _negated(part: FilterTranslation) -> FilterTranslation:
    if not part.exact:
        return _UNKNOWN  # the complement of a superset is not a superset of the complement
    if part.empty:
        return _EVERYTHING
    if part.where is None:
        return _NOTHING
    return FilterTranslation({"$not": part.where}, exact=True)


def _comparison(node: Mapping[str, Any], where: str) -> FilterTranslation:
    field = node["field"]
    for key in ("operator", "value"):
        if key not in node:
            raise HaystackFilterError(f"{where}: '{key}' key missing in comparison {dict(node)!r:.120}")
    operator, value = node["operator"], node["value"]
    if not isinstance(field, str) or not field:
        raise HaystackFilterError(f"{where}: 'field' must be a name like 'meta.year' or 'content', got {field!r:.60}")
    if operator not in _COMPARISONS:
        raise HaystackFilterError(
            f"{where}: unknown comparison operator {operator!r}; use one of {', '.join(_COMPARISONS)}"
        )
    # Haystack refuses these whatever the documents hold; refused here before anything is read.
    if operator in ("in", "not in") and not isinstance(value, list):
        raise HaystackFilterError(
            f"{where}: {field} {operator} takes a list of values, got {type(value).__name__} {value!r:.60}"
        )
    if operator in _ORDERING and value is not None:
        if isinstance(value, list):
            raise HaystackFilterError(f"{where}: {field} {operator} compares one value, got a list {value!r:.60}")
        if isinstance(value, str) and _iso_date(value) is None:
            raise HaystackFilterError(
                f"{where}: {field} {operator} {value!r:.60}: strings compare only as ISO 8601 dates "
                f"('2024-01-31' or '2024-01-31T12:00:00'); give a number or an ISO date"
            )
        if not isinstance(value, (int, float, str, datetime)):
            raise HaystackFilterError(
                f"{where}: {field} {operator} takes a number or an ISO date, got {type(value).__name__} {value!r:.60}"
            )
    if operator in _ORDERING and value is None:
        return _NOTHING  # Haystack: an ordering against None is false for every document
    key = _meta_key(field)
    if key is None:
        return _UNKNOWN  # id, content, nested meta...: Haystack's reference decides on each document
    if operator == "==":
        return _equal(key, value)
    if operator == "!=":
        return _negated(_equal(key, value))
    if operator == "in":
        return _any([_equal(key, item) for item in value])
    if operator == "not in":
        return _negated(_any([_equal(key, item) for item in value]))
    return _ordered(key, _ORDERING[operator], value)


def _meta_key(field: str) -> str | None:
    """The flat metadata key a Haystack field names: "meta.year" and the legacy bare "year"; None for a Document
    attribute ("id", "content", ...) or a nested path ("meta.a.b": never a stored key, always None to Haystack)."""
    if field.startswith("meta."):
        key = field[len("meta.") :]
        return key if key and "." not in key else None
    if "." in field or field in _DOCUMENT_FIELDS:
        return None
    return field


def _present(key: str) -> dict[str, Any]:
    """The key holds a value (stored values are finite numbers, strings or bools)."""
    return {"$or": [{key: {"$gte": ""}}, {key: {"$gte": 0}}, {key: {"$lt": 0}}, {key: {"$in": [True, False]}}]}


def _equal(key: str, value: Any) -> FilterTranslation:
    """Haystack's ``==``: Python equality (True == 1 == 1.0), or two ISO strings naming the same instant."""
    if value is None:
        return FilterTranslation({"$not": _present(key)}, exact=True)  # absent, as a None value was never stored
    if isinstance(value, bool):
        return FilterTranslation({key: {"$in": [value, int(value)]}}, exact=True)
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            return _NOTHING  # NaN equals nothing; no stored number is infinite
        if value in (0, 1):
            return FilterTranslation({key: {"$in": [value, bool(value)]}}, exact=True)
        return FilterTranslation({key: {"$eq": value}}, exact=True)
    if isinstance(value, datetime) or (isinstance(value, str) and _iso_date(value) is not None):
        return FilterTranslation({key: {"$gte": ""}}, exact=False)  # any stored string may name the same instant
    if isinstance(value, str):
        return FilterTranslation({key: {"$eq": value}}, exact=True)
    return _NOTHING  # a list or a dict never equals a stored scalar


def _ordered(key: str, operator: str, value: Any) -> FilterTranslation:
    """Haystack's ``> >= < <=``: numbers and bools by value (True is 1), ISO dates as instants. A stored string
    never matches a number (Haystack's in-memory store raises FilterError on it instead)."""
    if isinstance(value, (datetime, str)):
        return FilterTranslation({key: {"$gte": ""}}, exact=False)  # dates compare as instants, not as text
    bound = int(value) if isinstance(value, bool) else value
    if bound != bound:
        return _NOTHING  # nothing compares with NaN
    holds = {
        "$gt": lambda flag: int(flag) > bound,
        "$gte": lambda flag: int(flag) >= bound,
        "$lt": lambda flag: int(flag) < bound,
        "$lte": lambda flag: int(flag) <= bound,
    }[operator]
    numbers = {key: {operator: bound}}
    bools = [flag for flag in (False, True) if holds(flag)]
    return FilterTranslation({"$or": [numbers, {key: {"$in": bools}}]} if bools else numbers, exact=True)


def _iso_date(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        try:
            return dateutil.parser.isoparse(value)
        except (ValueError, OverflowError):
            return None

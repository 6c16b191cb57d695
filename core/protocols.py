"""The four seams of vecguard, the engine's instrument hook, and the plain data that crosses them.

Nothing backend-specific ever passes through here: vectors are numpy float32
arrays, ids are str, metadata and payloads are JSON-compatible dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import DimensionError, InvalidArgumentError

Scalar = str | int | float | bool
Metadata = dict[str, Scalar]
Payload = dict[str, Any]
RankedList = list[tuple[str, float]]
"""(id, score) pairs, best first; score is higher-is-better."""


@dataclass(frozen=True)
class Document:
    """A document to index: a stable id, its text and flat scalar metadata."""

    id: str
    text: str
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True)
class SignalEvidence:
    """Where one signal placed a hit: 1-based rank and the signal's own score."""

    rank: int
    score: float


@dataclass(frozen=True)
class Hit:
    """One search result that explains itself.

    ``score`` is the fused score in hybrid mode, the cosine similarity in dense
    mode and the BM25 score in keyword mode. ``signals`` holds each signal's
    rank and score for this hit (``"dense"``: cosine, ``"keyword"``: BM25).
    """

    id: str
    score: float
    text: str
    metadata: Metadata
    signals: dict[str, SignalEvidence]
    chunk: int | None = None
    start: int | None = None
    end: int | None = None

    def rank_of(self, signal: str) -> int | None:
        evidence = self.signals.get(signal)
        return evidence.rank if evidence else None

    def score_of(self, signal: str) -> float | None:
        evidence = self.signals.get(signal)
        return evidence.score if evidence else None


@dataclass(frozen=True)
class FusedHit:
    """A fuser's output: an id, its fused score and the evidence behind it."""

    id: str
    score: float
    signals: dict[str, SignalEvidence]


@dataclass(frozen=True)
class EncoderIdentity:
    """What determines the vector space an encoder produces.

    ``fingerprint`` is a sha256 over the files that define the model (weights,
    config, tokenizer, pooling); two encoders with the same fingerprint and
    settings produce the same vectors.
    """

    plugin: str
    name: str
    revision: str
    fingerprint: str
    dimension: int
    normalized: bool
    max_seq_length: int
    pooling: str
    precision: str = "fp32"
    settings: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Encoder(Protocol):
    """Turns text into vectors; also tokenises, so chunks are measured in its tokens.

    Optional capabilities, each a Protocol below: ``TokenizesInBatches`` (the
    chunker tokenises a whole batch in one call) and ``DeclaresBatchSize`` (the
    engine sizes its document batches to fill one encoder pass).
    """

    def identity(self) -> EncoderIdentity: ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Return float32 (len(texts), dimension); L2-normalised when identity().normalized."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Return float32 (len(texts), dimension); L2-normalised when identity().normalized."""
        ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) of every token of ``text``, without special tokens."""
        ...

    @property
    def max_tokens(self) -> int:
        """How many content tokens one encoded text may hold (special tokens excluded)."""
        ...


@runtime_checkable
class VectorStore(Protocol):
    """Stores vectors with payloads and finds the nearest by inner product.

    Scores are cosine / inner product: higher is better, the same scale on
    every backend. ``filter`` is the portable filter language (see
    ``vecguard.filters``), applied to ``payload["metadata"]``.

    ``scan`` visits points in the same order every time while the store is
    unchanged: a resumed migration skips what it already copied by position.

    Optional capabilities, each a Protocol below that the engine tests with
    ``isinstance``: ``DeclaresExactSearch``, ``SearchesWithPayloads``,
    ``MaintainsIndex`` and ``TunesOnQueries``, among others.
    ``vecguard.backends.base.BaseVectorStore`` is an optional
    base class that applies the contract checks and offers the first two.
    """

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None:
        """Remove the ids; ids that are not stored are ignored."""
        ...

    def get(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        """Vector and payload of every stored id among ``ids`` (missing ids are absent)."""
        ...

    def search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None) -> RankedList: ...

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        """Every stored point exactly once, in batches of (ids, float32 (n, dim), payloads)."""
        ...

    def count(self) -> int: ...

    def read_manifest(self) -> dict[str, Any] | None: ...

    def write_manifest(self, manifest: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class DeclaresExactSearch(Protocol):
    """A store that says whether its searches equal brute force; a store without it is treated as approximate."""

    exact_search: bool


@runtime_checkable
class SearchesWithPayloads(Protocol):
    """A store that returns payloads with its hits in one round trip; the engine then skips a ``get`` for them."""

    def search_with_payloads(
        self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None
    ) -> list[tuple[str, float, Payload]]:
        """The same hits as ``search``, each with its payload."""
        ...


@runtime_checkable
class MaintainsIndex(Protocol):
    """A store with an index to train and tune (`vecguard optimize` calls it)."""

    def optimize(self) -> dict[str, Any] | None:
        """Rebuild the index from every stored vector now; return what was built and measured."""
        ...

    def index_report(self) -> dict[str, Any] | None:
        """What the store measured (e.g. the nprobe chosen for a recall target and that recall), or None.

        The engine keeps it in ``manifest.measurements.index`` when it closes.
        """
        ...


@runtime_checkable
class TunesOnQueries(Protocol):
    """A store whose ANN index is tuned and measured on query vectors rather than on the vectors it stores (those
    flatter an index: a stored vector sits where its own neighbours are densest, a query between documents).

    The engine hands it a way to make query-like probes before any query has been served, and the vector of every
    query it serves; the store samples those, measures its recall on them and retunes itself.
    """

    def probe_with(self, make_probes: Callable[[Sequence[Payload]], np.ndarray]) -> None:
        """``make_probes(payloads)``: query vectors that look like what users would ask of those stored chunks."""
        ...

    def record_query(self, vector: np.ndarray) -> None:
        """A served query's vector (never its text); cheap: sampling, measuring and retuning happen aside."""
        ...

    def served_recall(self) -> dict[str, Any] | None:
        """The last recall@10 measured on served queries (``recall_at_10``, ``queries``, ``measured_at``), or None."""
        ...


@runtime_checkable
class SharesCollection(Protocol):
    """A store that several processes may open at once, with SQLite's promise: writes are serialised by the
    collection's write lock, and every process finds out cheaply what the others committed.

    A store without it is one process's (the in-memory store, an embedded client that locks its folder).
    """

    def lock_writes(self, timeout: float, holder: str) -> AbstractContextManager[None]:
        """Hold the collection's write lock, across processes, for the block (not re-entrant).

        Waits up to ``timeout`` seconds for another holder, then raises CollectionBusyError naming it; ``holder``
        describes this process to such a waiter. A holder that dies releases it (a crashed process never keeps a
        collection locked for good).
        """
        ...

    def change_token(self) -> int:
        """A number that grows with every committed change (upsert, delete, write_manifest) made in any process;
        cheap enough to call before every search."""
        ...

    def changes_since(self, token: int) -> list[str] | None:
        """The chunk ids written or deleted by the changes committed after ``token``, each once, in no order;
        None when the store no longer keeps changes that old (the caller then rereads everything)."""
        ...


SparseVector = tuple[list[int], list[float]]  # (indices, values): a chunk's or a query's term weights


class SparseWeights(Protocol):
    """A keyword scorer's term weights as sparse vectors: what a store that keeps the keyword signal holds."""

    def length(self, text: str) -> int:
        """A chunk's length in terms (a collection's average length is fixed when its first batch is written)."""
        ...

    def document(self, text: str, average_length: float) -> SparseVector: ...

    def query(self, text: str) -> SparseVector: ...

    def identifiers(self, text: str) -> list[int]:
        """The indices of the query's identifier-shaped terms, for identifier routing."""
        ...

    def citation(self, text: str) -> list[int]:
        """The indices of the query's terms when it is a citation ("GDPR Article 39": ``routing.is_citation``), else
        []: chunks holding all of them, when the rarest is held by few, are routed like identifier holders."""
        ...


@runtime_checkable
class KeywordVectors(Protocol):
    """A keyword index whose scores a store can compute from sparse vectors (``HoldsKeywords``)."""

    def sparse_weights(self) -> SparseWeights: ...


@runtime_checkable
class HoldsKeywords(Protocol):
    """A store that keeps each chunk's keyword weights as a sparse vector beside its dense one, and searches both
    signals itself, filters inside, in one round trip (Qdrant). Then there is no keyword state outside the store:
    every process and replica shares it.

    The engine calls ``hold_keywords`` once at open; from then on the store weighs every upserted chunk's
    ``payload["text"]`` itself, in the same write as the point.
    """

    def hold_keywords(self, weights: SparseWeights) -> bool:
        """Keep the keyword signal with ``weights``; False when this collection does not (built without it)."""
        ...

    def search_signals(
        self,
        vector: np.ndarray | None,
        terms: SparseVector | None,
        depth: int,
        filter: Mapping[str, Any] | None,
        ids: Sequence[str] | None = None,
    ) -> dict[str, list[tuple[str, float, Payload]]]:
        """The best ``depth`` chunks by the dense ``vector`` ("dense") and by the ``terms`` ("keyword"), each
        signal asked for only when given, under ``filter`` and among ``ids`` when given: (id, score, payload)."""
        ...

    def term_holders(self, term: int, limit: int) -> int:
        """How many chunks hold the term ``term``, counted up to ``limit``."""
        ...


@runtime_checkable
class TokenizesInBatches(Protocol):
    """An encoder whose tokenizer works faster on many texts at once."""

    def token_spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """``token_spans`` of each text, in one call."""
        ...


@runtime_checkable
class DeclaresBatchSize(Protocol):
    """An encoder that encodes ``batch_size`` full-length texts per forward pass."""

    @property
    def batch_size(self) -> int: ...


@runtime_checkable
class FingerprintOmitsWeights(Protocol):
    """An encoder whose fingerprint covers its class and settings but not the weights behind them (a hosted model
    can change under one name): the guard compares the probe vectors at every open, not only when the fingerprint
    differs."""

    @property
    def fingerprint_omits_weights(self) -> bool: ...


@runtime_checkable
class ChecksIntegrity(Protocol):
    """A store that can check its own files (`vecguard check` calls it): pages, records, derived index files."""

    def check_integrity(self) -> list[str]:
        """One line per problem found, each naming the file or record and what is wrong; [] when sound."""
        ...


@runtime_checkable
class ListsIds(Protocol):
    """A keyword index that can list the chunk ids it holds (`vecguard check` compares them with the store's)."""

    def ids(self) -> set[str]: ...


@runtime_checkable
class KeywordIndex(Protocol):
    """A lexical index (BM25 by default); persists as plain files, never pickle."""

    def settings(self) -> dict[str, Any]:
        """Tokenizer and scoring settings; recorded in the manifest."""
        ...

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def search(self, query: str, k: int, allowed_ids: Iterable[str] | None = None) -> RankedList:
        """Best ``k`` ids with a positive score, restricted to ``allowed_ids`` when given."""
        ...

    def exact_matches(self, query: str, k: int) -> RankedList:
        """Ids that hold an identifier of the query verbatim (order ids, CVE ids, citations), best first.

        Return [] when the query holds no identifier or the index does not
        support it; the engine ranks these first in hybrid mode.
        """
        ...

    def count(self) -> int: ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> bool:
        """Load what ``save`` wrote; return False when nothing was saved there."""
        ...


@runtime_checkable
class MeasuresCoverage(Protocol):
    """A keyword index that tells how much of a query each chunk holds, each term weighed by how rare it is."""

    def coverage(self, query: str, ids: Sequence[str]) -> list[float]:
        """For each of ``ids``, the inverse document frequency of the query's terms it holds over that of all of
        them, from 0 to 1. A term no chunk holds weighs as much as a term can: the query asks for something the
        collection's words do not say. 0 for an id the index does not hold."""
        ...


@runtime_checkable
class SavesIncrementally(Protocol):
    """A keyword index that saves a change at a cost in proportion to the change, not to the collection.

    A keyword index without it is saved whole (``save``) when an add call ends, with the store's change token
    beside it (``keyword_files``).
    """

    def save_changes(self, directory: Path, ids: Iterable[str], token: int) -> None:
        """Persist the current state of ``ids`` (held: their terms; not held: deleted) and record that the files
        now reflect the store at change ``token``. A kill at any point leaves the previous save loadable."""
        ...

    def saved_token(self, directory: Path) -> int | None:
        """The store change the files in ``directory`` reflect (None: nothing saved), read without loading them."""
        ...


@runtime_checkable
class Fuser(Protocol):
    """Combines ranked lists from several signals into one ranking."""

    def fuse(
        self,
        ranked: Mapping[str, RankedList],
        weights: Mapping[str, float],
        shares: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[FusedHit]:
        """``shares``: per signal, how much of a hit's part counts for this query (1 where absent): the engine
        weighs a short query's keyword hits by the share of the query they hold (``MeasuresCoverage``). A fuser
        whose ``fuse`` takes no ``shares`` is called without them."""
        ...


class Instrument(Protocol):
    """Watches the engine work (the server's metrics and spans); the engine runs without one."""

    def stage(self, name: str) -> AbstractContextManager[Any]:
        """Wraps one stage: encode, dense, keyword, fuse (a query), ingest_encode (an add batch)."""
        ...

    def observe(self, name: str, value: float) -> None:
        """A measured value: top1_cosine (the best dense score of a query, before min_score)."""
        ...


def stage(instrument: Instrument | None, name: str) -> AbstractContextManager[Any]:
    """``instrument``'s span for one stage, or nothing when no instrument watches."""
    return instrument.stage(name) if instrument is not None else nullcontext()


def as_documents(items: Iterable[Document | Mapping[str, Any]]) -> Iterator[Document]:
    """Accept Documents or dicts with id, text and optional metadata."""
    for item in items:
        if isinstance(item, Document):
            yield item
        else:
            yield Document(
                id=item.get("id"),  # type: ignore[arg-type]
                text=item.get("text"),  # type: ignore[arg-type]
                metadata=item.get("metadata") or {},
            )


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as UTF-8 (a lone surrogate, from JSON "\\ud800" or bytes that were not UTF-8),
    as the end of a sentence naming it; None for valid text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds {text[exc.start]!r} at position {exc.start}, which is not valid Unicode text"
    return None


# Contract checks every VectorStore applies the same way.


def check_batch(
    ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload], dimension: int | None
) -> np.ndarray:
    """Validate an upsert batch the same way on every backend; return float32 (n, dim).

    Raises InvalidArgumentError for a malformed batch, DimensionError for vectors of another dimension.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(ids) != vectors.shape[0] or len(payloads) != len(ids):
        raise InvalidArgumentError(
            f"upsert needs as many ids, vectors and payloads: got {len(ids)} ids, vectors of shape "
            f"{vectors.shape}, {len(payloads)} payloads"
        )
    if dimension is not None and vectors.shape[1] != dimension:
        raise DimensionError(f"vectors have dimension {vectors.shape[1]} but the store holds dimension {dimension}")
    if not np.isfinite(vectors).all():
        raise InvalidArgumentError("vectors contain NaN or infinity; check the encoder output")
    for key in ids:
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"ids must be non-empty strings, got {type(key).__name__} {key!r}")
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError("upsert got the same id twice in one batch; deduplicate it first")
    return vectors


def check_query(vector: np.ndarray, k: int, dimension: int | None) -> np.ndarray:
    """Validate a query the same way on every backend; return the vector as float32 (dim,)."""
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if dimension is not None and vector.shape[0] != dimension:
        raise DimensionError(f"query vector has dimension {vector.shape[0]} but the store holds dimension {dimension}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:  # a bool is not a count
        raise InvalidArgumentError(f"k must be a whole number >= 1, got {k!r}")
    return vector

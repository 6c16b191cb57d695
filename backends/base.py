"""An optional base for a VectorStore: the contract checks in one place, in one order.

The ``VectorStore`` Protocol (``vecguard.protocols``) stays the contract; a store that checks for itself, like
``tests/example_adapter/``, needs no base. A subclass gets, for free and the same on every backend:

* ``upsert``: ``check_batch`` (a malformed batch is an InvalidArgumentError, another dimension a DimensionError),
  then an empty batch returns before the backend is touched;
* ``search`` / ``search_with_payloads``: ``check_query``, then ``filters.validate``, then the "nothing stored"
  shortcut, in that order, so a malformed filter is refused by an empty store too;
* ``delete`` / ``get`` of no ids return at once;
* ``matching_ids(filter)``: the reference-semantics fallback for a filter the backend cannot express
  (``vecguard.filters.Untranslatable``);
* ``close()`` (nothing to release by default) and ``with store: ...``;
* ``exact_search = False`` until the subclass says otherwise.

Subclass contract. The hooks receive input that the base has already checked:

``dimension() -> int | None``
    The dimension of the stored vectors; None while nothing is stored (the first upsert fixes it).
``_upsert(ids, vectors, payloads)``
    A non-empty batch: unique non-empty str ids, finite float32 ``(n, dimension())`` vectors, payload dicts.
``_delete(ids)``
    A non-empty list of ids; ids that are not stored are ignored.
``_get(ids) -> {id: (vector, payload)}``
    A non-empty list of ids; missing ids are absent from the answer.
``_search(vector, k, filter) -> [(id, score)]``
    float32 ``(dimension(),)`` vector, ``k >= 1``, a validated non-empty filter or None; called only when
    ``dimension()`` is not None. Best first, by inner product.
``_search_with_payloads(vector, k, filter) -> [(id, score, payload)]``
    Optional, same input: override it where the backend returns payloads in the same round trip. The default is
    ``_search`` then ``get``.
``_scan_payloads() -> iterator of (ids, payloads)``
    Optional: every stored point's id and payload without its vector, for ``matching_ids``. The default drops the
    vectors of ``scan``; override it where the backend can leave them out of the read.

``scan``, ``count``, ``read_manifest`` and ``write_manifest`` are the Protocol's own methods, implemented as they
are. ``library_errors`` turns the exceptions of the library behind a store into vecguard's StorageError; run every
library call inside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from vecguard import filters
from vecguard.errors import CollectionNotFoundError, StorageError, VecguardError
from vecguard.protocols import Payload, RankedList, check_batch, check_query


class BaseVectorStore:
    """Optional base for a VectorStore; see the module docstring for what a subclass implements."""

    exact_search: bool = False

    # ------------------------------------------------------------ subclass hooks

    def dimension(self) -> int | None:
        raise NotImplementedError

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[Payload]) -> None:
        raise NotImplementedError

    def _delete(self, ids: list[str]) -> None:
        raise NotImplementedError

    def _get(self, ids: list[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        raise NotImplementedError

    def _search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None) -> RankedList:
        raise NotImplementedError

    def _search_with_payloads(
        self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[str, float, Payload]]:
        hits = self._search(vector, k, filter)
        found = self.get([key for key, _ in hits])
        return [(key, score, found[key][1]) for key, score in hits if key in found]

    def _scan_payloads(self) -> Iterator[tuple[list[str], list[Payload]]]:
        for ids, _, payloads in self.scan():
            yield ids, payloads

    def scan(self, batch_size: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[Payload]]]:
        raise NotImplementedError

    # ------------------------------------------------------------ VectorStore, checked

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload]) -> None:
        vectors = check_batch(ids, vectors, payloads, self.dimension())
        if len(ids):
            self._upsert(list(ids), vectors, list(payloads))

    def delete(self, ids: Sequence[str]) -> None:
        """Remove the ids; ids that are not stored are ignored."""
        ids = list(ids)
        if ids:
            self._delete(ids)

    def get(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, Payload]]:
        """Vector and payload of every stored id among ``ids`` (missing ids are absent)."""
        ids = list(ids)
        return self._get(ids) if ids else {}

    def search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None) -> RankedList:
        query = self._checked_query(vector, k, filter)
        return self._search(query, k, filter or None) if query is not None else []

    def search_with_payloads(
        self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None
    ) -> list[tuple[str, float, Payload]]:
        """The same hits as ``search``, each with its payload (``vecguard.protocols.SearchesWithPayloads``)."""
        query = self._checked_query(vector, k, filter)
        return self._search_with_payloads(query, k, filter or None) if query is not None else []

    def _checked_query(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None) -> np.ndarray | None:
        """The query as float32, or None when nothing is stored; the filter is validated before that shortcut."""
        dimension = self.dimension()
        query = check_query(vector, k, dimension)
        if filter:
            filters.validate(filter)
        return query if dimension is not None else None

    def matching_ids(self, filter: Mapping[str, Any]) -> list[str]:
        """Ids of the stored points whose metadata passes a validated ``filter``, by the reference semantics.

        For a filter the backend's own query language cannot express (``vecguard.filters.Untranslatable``): the
        backend then searches among these ids only.
        """
        matches = filters.compile(filter)
        return [
            key
            for ids, payloads in self._scan_payloads()
            for key, payload in zip(ids, payloads)
            if matches(payload.get("metadata") or {})
        ]

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release what the store holds; nothing by default."""

    def __enter__(self) -> BaseVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def library_errors(
    library: str, location: str | None, *, missing: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Map the exceptions of the library behind a store onto vecguard's tree, as httpx's
    ``map_httpcore_exceptions()`` does: ``missing`` (the library's "no such collection") becomes
    CollectionNotFoundError, any other exception a StorageError, both with ``location`` set.

    Wrap library calls only (not the store's own logic): each library raises several unrelated exception types by
    version and transport (ValueError, RuntimeError, HTTP-client, SQLite or its own), so everything they raise is
    mapped; a VecguardError passes through unchanged.
    """
    where = location or "in memory"
    try:
        yield
    except VecguardError:
        raise
    except missing as exc:
        raise CollectionNotFoundError(
            f"{library} at {where} no longer holds the collection ({_first_line(exc)}); it was deleted while this "
            f"store had it open: rebuild it, or point the config at the right one",
            location=location,
        ) from exc
    except Exception as exc:
        raise StorageError(
            f"{library} at {where} failed: {type(exc).__name__}: {_first_line(exc)}; check that the server is up, or "
            f"the folder readable and not open in another process, then retry",
            location=location,
        ) from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else "no message"

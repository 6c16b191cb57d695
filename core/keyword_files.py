"""The keyword index of a collection: the one in memory, its files, and which state of the store they reflect.

The plugin owns its file format; this module owns where the files live and what
they are saved as reflecting. On a store that several processes share
(``SharesCollection``) that is the store's change token: a keyword index that
``SavesIncrementally`` records it in its own files at every batch, in
proportion to the batch; another is saved whole at the end of an add call with
``state.json`` ``{"token"}`` beside it. Whoever opens the files catches up from
the token through the store's change feed. On a store of one process's own the
files record the manifest's ``write_id`` instead, and files saved by another
write are rebuilt.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .atomic import write_json_atomically
from .errors import StorageError
from .protocols import KeywordIndex, SavesIncrementally
from .store_keywords import StoreKeywords

KEYWORD_STATE = "state.json"


class KeywordFiles:
    """Holds the collection's keyword index and loads, rebuilds and saves it in ``folder`` (None: memory only)."""

    def __init__(
        self,
        index: KeywordIndex | None,
        folder: Path | None,
        *,
        new_index: Callable[[], KeywordIndex] | None,
        collection_where: str,
        shared: bool = False,
    ) -> None:
        self.index = index
        self.folder = folder if not isinstance(index, StoreKeywords) else None
        self._shared = shared  # the store SharesCollection: files record its change token
        self.where = str(folder) if folder is not None else f"the keyword index of {collection_where}"
        self._new_index = new_index
        self.unsaved = False  # changed since saved whole (a keyword index that does not save incrementally)
        self.ready = False  # rebuilt in this process: nothing to load

    @property
    def incremental(self) -> bool:
        return isinstance(self.index, SavesIncrementally)

    def load(self, stored_chunks: int, write_id: str | None) -> str | None:
        """Load the saved index; the reason it must be rebuilt (missing, unreadable, saved by another write than
        ``write_id``, or holding another number of chunks than the store), or None when it is good."""
        problem = None
        if self.folder is None:
            loaded = False
        else:
            loaded, problem = self._load()
            if loaded and write_id and self._state().get("write_id") != write_id:
                loaded, problem = False, f"{self.where} was saved by another write than the collection's last"
        if loaded and self.index.count() != stored_chunks:
            return f"{self.where} holds {self.index.count()} chunks, the store {stored_chunks}"
        if not loaded and stored_chunks and problem is None:
            return f"{self.where} is missing"
        return problem

    def load_with_token(self) -> tuple[int | None, str | None]:
        """Load the saved index of a shared store: (the store change token it reflects, at least; None when
        nothing usable is saved) and the reason it is unusable (None: missing or good)."""
        if self.folder is None:
            return None, None
        # Read before loading: a save by another process in between makes what is loaded newer, never older,
        # and catching up from an older token again is harmless.
        try:
            token = self.index.saved_token(self.folder) if self.incremental else self._state().get("token")
        except Exception as exc:  # derived data, as in _load
            return None, f"{self.where} is unreadable ({exc})"
        loaded, problem = self._load()
        if loaded and not isinstance(token, int):
            return None, f"{self.where} does not record which change of the store it reflects"
        return (token, None) if loaded else (None, problem)

    def _load(self) -> tuple[bool, str | None]:
        try:
            return self.index.load(self.folder), None
        except Exception as exc:  # derived data: whatever is wrong with the file, the stored texts rebuild it
            return False, f"{self.where} is unreadable ({exc})"

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.folder / KEYWORD_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    @property
    def kept_in_store(self) -> bool:
        """The store keeps the keyword signal (``store_keywords.StoreKeywords``): nothing to load, rebuild or save."""
        return isinstance(self.index, StoreKeywords)

    def rebuild(self, chunks: Iterable[tuple[list[str], list[str]]], reflects: int | str | None) -> None:
        """A fresh index of ``chunks`` ((ids, texts) batches), saved as reflecting ``reflects`` (a change token, a
        write_id; None: kept in memory only until the next save)."""
        if self.kept_in_store:
            self.ready = True
            return
        self.index = self._new_index()
        for ids, texts in chunks:
            self.index.add(ids, texts)
        self.ready = True
        if reflects is None:
            self.unsaved = True
        else:
            self.save(reflects)

    def changed(self) -> None:
        """The index in memory changed through a write: saved at the end of the call unless the batch saves it."""
        if not (self._shared and self.incremental):
            self.unsaved = True

    def save_changes(self, store: Any) -> None:
        """After a batch on a shared store, under its write lock: save the chunks the change feed names since the
        files were last saved (by any process), as reflecting the store's token now. Saved whole instead when the
        index does not save incrementally (at the end of the call), or the feed does not reach back."""
        if self.folder is None or not (self._shared and self.incremental):
            return
        token = store.change_token()
        try:
            saved_at = self.index.saved_token(self.folder)
        except StorageError:  # unreadable files: replaced by a whole save
            saved_at = None
        changed = store.changes_since(saved_at) if saved_at is not None else None
        self._writing(lambda: self._save_incrementally(changed, token))

    def _save_incrementally(self, changed: list[str] | None, token: int) -> None:
        if changed is None:
            self.index.save(self.folder)
            changed = []
        self.index.save_changes(self.folder, changed, token)

    def save(self, reflects: int | str | None) -> None:
        """Save the whole index as reflecting ``reflects`` (a shared store's change token, or a write_id)."""
        if self.folder is None:
            return

        def whole() -> None:
            self.index.save(self.folder)
            if self.incremental and isinstance(reflects, int):
                self.index.save_changes(self.folder, [], reflects)
            else:
                key = "token" if isinstance(reflects, int) else "write_id"
                write_json_atomically(self.folder / KEYWORD_STATE, {key: reflects})

        self._writing(whole)
        self.unsaved = False

    def _writing(self, save: Callable[[], None]) -> None:
        try:
            save()
        except OSError as exc:  # the collection stays marked mid-write: the next open catches up or rebuilds
            raise StorageError(
                f"cannot save the keyword index in {self.folder} ({exc.strerror or exc}); "
                f"everything committed before is kept: fix the cause and run the same command again",
                location=str(self.folder),
            ) from exc

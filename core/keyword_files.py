"""The keyword index of a collection: the one in memory, its files, and the write they were saved by.

The plugin owns its file format; this module owns where the files live and
``state.json`` beside them, which records the collection write (the manifest's
``write_id``) the index was saved by. A keyword index saved by another write (a
file restored from elsewhere, or a crash between saving the index and the
manifest) is recognised and rebuilt from the stored texts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from .atomic import write_json_atomically
from .errors import StorageError
from .protocols import KeywordIndex

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
    ) -> None:
        self.index = index
        self.folder = folder
        self.where = str(folder) if folder is not None else f"the keyword index of {collection_where}"
        self._new_index = new_index

    def load(self, stored_chunks: int, write_id: str | None) -> str | None:
        """Load the saved index; the reason it must be rebuilt (missing, unreadable, saved by another write than
        ``write_id``, or holding another number of chunks than the store), or None when it is good."""
        problem = None
        if self.folder is None:
            loaded = False
        else:
            try:
                loaded = self.index.load(self.folder)
            except Exception as exc:  # derived data: whatever is wrong with the file, the stored texts rebuild it
                loaded, problem = False, f"{self.where} is unreadable ({exc})"
            if loaded and write_id and self._saved_by() != write_id:
                loaded, problem = False, f"{self.where} was saved by another write than the collection's last"
        if loaded and self.index.count() != stored_chunks:
            return f"{self.where} holds {self.index.count()} chunks, the store {stored_chunks}"
        if not loaded and stored_chunks and problem is None:
            return f"{self.where} is missing"
        return problem

    def _saved_by(self) -> str | None:
        try:
            state = json.loads((self.folder / KEYWORD_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state.get("write_id") if isinstance(state, dict) else None

    def rebuild(self, chunks: Iterable[tuple[list[str], list[str]]], write_id: str | None) -> None:
        """A fresh index of ``chunks`` ((ids, texts) batches), saved."""
        self.index = self._new_index()
        for ids, texts in chunks:
            self.index.add(ids, texts)
        self.save(write_id)

    def save(self, write_id: str | None) -> None:
        if self.folder is None:
            return
        try:
            self.index.save(self.folder)
            write_json_atomically(self.folder / KEYWORD_STATE, {"write_id": write_id})
        except OSError as exc:  # the collection stays marked mid-write: the next open rebuilds the keyword index
            raise StorageError(
                f"cannot save the keyword index in {self.folder} ({exc.strerror or exc}); "
                f"everything committed before is kept: fix the cause and run the same command again",
                location=str(self.folder),
            ) from exc

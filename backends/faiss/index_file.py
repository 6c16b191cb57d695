"""index.faiss and index.json: the derived index, saved with the generation of SQLite it reflects.

The index is saved atomically (temp file, fsync, rename) with the generation it reflects, its CRC-32 and the
collection's id (kept in SQLite); on open a missing, stale, damaged or foreign index is rebuilt from SQLite (with
a warning, and a line for `check_integrity`), so a crash or a stray copy never leaves a half-written or
out-of-step index. An HNSW index's deleted points are kept in index.json with it.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecguard.atomic import fsync_directory, write_json_atomically

from . import kinds, policy
from .points import DATABASE, PointTable

log = logging.getLogger("vecguard.backends.faiss")
INDEX_FILE = "index.faiss"
STATE_FILE = "index.json"


class IndexFileProblem(Exception):
    """A saved index that cannot be used (damaged, foreign, or of a kind that answers wrongly): rebuilt from SQLite."""


@dataclass(frozen=True)
class SavedIndex:
    """What index.faiss and index.json held."""

    index: Any
    spec: str | None
    tuning: dict[str, Any] | None
    built_on: int
    deleted: set[int] | None
    checked_at: int
    checked_after: int | None  # None: not recorded (an earlier version): the highest num now
    generation: int  # of SQLite, that the saved index reflects (a later one is caught up from the change feed)
    highest_num: int | None  # the highest num it holds (None: an earlier version, saved at the current generation)


def file_crc32(path: Path) -> int:
    """CRC-32 of a file, read in 16 MiB blocks (an index file can hold gigabytes)."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


def load(
    faiss: Any,
    folder: Path,
    *,
    generation: int,
    feed_from: int,
    requested: str,
    collection: str | None,
    count: Callable[[], int],
) -> SavedIndex | None:
    """The saved index when it was built for the ``requested`` spec and reflects SQLite's ``generation`` (then it
    must hold ``count`` stored points), or an earlier one the change feed still covers (from ``feed_from``; the
    caller catches it up); None when there is none or it is too stale. Raises IndexFileProblem for files that are
    there but cannot be used."""
    index_file, state_file = folder / INDEX_FILE, folder / STATE_FILE
    if not index_file.exists() or not state_file.exists():
        return None
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("generation"), int):
            raise ValueError(f"a {type(state).__name__} without a whole-number generation")
    except (OSError, ValueError) as exc:
        raise IndexFileProblem(f"{state_file} is unreadable ({exc})") from exc
    saved_at = state["generation"]
    current = saved_at == generation
    catchable = feed_from <= saved_at < generation and isinstance(state.get("highest_num"), int)
    if not (current or catchable) or state.get("requested") != requested:
        return None  # stale: rebuilt from SQLite on first use
    if "collection" in state and state["collection"] != collection:  # earlier versions named none
        raise IndexFileProblem(
            f"{index_file} belongs to another collection (index.json names {state.get('collection')!r})"
        )
    # Checked before FAISS parses the file: a damaged header can ask it for any amount of memory.
    if "crc32" in state and state["crc32"] != file_crc32(index_file):
        raise IndexFileProblem(
            f"{index_file} does not match the checksum index.json recorded for it (damaged or replaced)"
        )
    try:
        index = faiss.read_index(str(index_file))
    except RuntimeError as exc:
        raise IndexFileProblem(f"{index_file} is unreadable ({str(exc).splitlines()[0]})") from exc
    if isinstance(index, faiss.IndexIDMap) and kinds.holds_its_own_ids(faiss, faiss.downcast_index(index.index)):
        raise IndexFileProblem(
            f"{index_file} wraps an IVF index in an id map, which earlier vecguard versions wrote and "
            f"which answers with wrong ids after a delete"
        )
    deleted = state.get("deleted") if isinstance(state.get("deleted"), list) else []
    spec = state.get("spec")
    hnsw = kinds.is_hnsw(str(spec))
    stored = count() if current else None
    if stored is not None and index.ntotal != stored + (len(deleted) if hnsw else 0):
        raise IndexFileProblem(f"{index_file} holds {index.ntotal} vectors, {DATABASE} {stored}")
    built_on = int(state.get("built_on") or index.ntotal)
    return SavedIndex(
        index=index,
        spec=spec,
        tuning=state.get("tuning"),
        built_on=built_on,
        deleted=set(deleted) if hnsw else None,
        checked_at=int(state.get("checked_at") or built_on),
        checked_after=int(state["checked_after"]) if "checked_after" in state else None,
        generation=saved_at,
        highest_num=state.get("highest_num"),
    )


def save(faiss: Any, folder: Path, index: Any, state: dict[str, Any]) -> bool:
    """Write index.faiss, then index.json with ``state`` and the file's CRC-32; False (logged) when it could not be
    written: derived data, the next open rebuilds it from SQLite."""
    index_file, state_file = folder / INDEX_FILE, folder / STATE_FILE
    tmp = index_file.with_name(f".{index_file.name}.tmp")
    try:
        checksum = 0
        with open(tmp, "wb") as f:

            def write(block: bytes) -> int:  # FAISS writes through this: the checksum costs no second read
                nonlocal checksum
                checksum = zlib.crc32(block, checksum)
                return f.write(block)

            faiss.write_index(index, faiss.PyCallbackIOWriter(write))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, index_file)
        fsync_directory(index_file.parent)
        write_json_atomically(state_file, {**state, "crc32": checksum})
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        log.warning(
            "could not save the FAISS index to %s (%s); the next open rebuilds it from %s",
            index_file,
            str(exc).splitlines()[0],
            DATABASE,
        )
        return False
    return True


class IndexFiles:
    """The index files beside a store's database (none in memory), and what is known of them: the (generation,
    spec) last written or loaded, and what opening found wrong with them."""

    def __init__(self, faiss: Any, points: PointTable, requested: str) -> None:
        self._faiss = faiss
        self._points = points
        self._requested = requested
        self._saved: tuple[int, str | None] | None = None
        self.problems: list[str] = []  # `vecguard check` reports them

    def load(self) -> SavedIndex | None:
        """The saved index if it is usable; a problem with it is logged and kept, and the index rebuilt."""
        folder = self._points.path
        if folder is None:
            return None
        try:
            saved = load(
                self._faiss,
                folder,
                generation=self._points.generation,
                feed_from=int(self._points.meta("changes_from") or 0),
                requested=self._requested,
                collection=self._points.meta("collection"),
                count=self._points.count,
            )
        except IndexFileProblem as exc:
            self.problems.append(f"{exc}; rebuilt from {DATABASE}")
            log.warning("%s; rebuilding the index from %s", exc, DATABASE)
            return None
        if saved is not None:
            self._saved = (saved.generation, saved.spec)
        return saved

    def problem(self, text: str) -> None:
        """Something wrong with the loaded files found after loading them: kept for `check`, and logged."""
        self.problems.append(f"{text}; rebuilt from {DATABASE}")
        log.warning("%s; rebuilding the index from %s", text, DATABASE)

    def outdated(self) -> None:
        """The files no longer hold the index in service (or its report): the next save writes them."""
        self._saved = None

    def save(self, index: Any, state: dict[str, Any], generation: int) -> None:
        """Write ``index`` with ``state`` (its ``spec`` first), the ``generation`` of SQLite it reflects (at least),
        the spec asked for and the collection's id, unless the files hold it already (a read-only open writes
        nothing)."""
        folder = self._points.path
        if folder is None:
            return
        spec = state["spec"]
        if self._saved is not None and self._saved[1] == spec:
            saved_at = self._saved[0]
            if saved_at == generation or (
                saved_at < generation
                and saved_at >= int(self._points.meta("changes_from") or 0)
                and not policy.save_due(self._points.changes_after(saved_at), self._points.count())
            ):
                return  # these files, of this build, are caught up from the change feed when loaded
        written = {
            "generation": generation,
            "spec": spec,
            "requested": self._requested,
            **state,
            "collection": self._points.meta("collection"),
        }
        if save(self._faiss, folder, index, written):
            self._saved = (generation, spec)

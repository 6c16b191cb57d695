"""The keyword index's folder: segment files and ``bm25-segments.json``, the manifest that names the published ones.

A save writes its new segment files in full (fsync each, then the folder), then publishes them by replacing the
manifest atomically (temporary file, fsync, rename, fsync of the folder). A load reads only what the manifest
names, so a save killed at any point leaves the previous one loadable; files no manifest names (a killed save's)
are removed by the next save. Saves run one at a time (the caller holds the collection's write lock) and each
starts from the manifest on disk, not from what its own process loaded: another process may have saved since.

Replay is last write wins: a segment saves the current state of some chunk ids, as documents (held) or deletion
records (deleted), and a newer segment's record of an id supersedes every older one. The manifest records, for
each segment, how many of its documents newer segments supersede, so a load finds them (by id digest, in the
newer segments' sorted keys) without reading the rest, and a merge knows which segments to rewrite.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from vecguard.atomic import fsync_directory, write_json_atomically
from vecguard.errors import StorageError

from .digests import digests
from .merge import merge, next_merge
from .segment import NO_KEYS, Segment, from_documents, open_segment, superseded, write

MANIFEST = "bm25-segments.json"
FORMAT = "vecguard-bm25-segments-1"
OLD_FILE = "bm25.json"  # earlier versions saved everything in it: a folder holding only it loads as nothing saved
_SEGMENT_FILE = re.compile(r"bm25-(\d{6,})-[0-9a-f]{8}\.seg")


@dataclass(frozen=True)
class Entry:
    """One published segment file, as the manifest lists it."""

    file: str
    docs: int
    deletions: int
    dead: int  # documents that newer segments supersede


@dataclass(frozen=True)
class Manifest:
    settings: dict[str, Any]
    token: int | None  # the store change the files reflect; None after a complete save, until save_changes
    segments: tuple[Entry, ...]  # oldest first


class SegmentFiles:
    """The segment files of one folder, and the segments this process opened from it (files never change)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._opened: dict[str, Segment] = {}

    def manifest(self) -> Manifest | None:
        """The published manifest; None when there is none. StorageError naming it when it is damaged."""
        path = self.directory / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return _parse(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise StorageError(
                f"keyword index manifest {path} is unreadable ({exc}); delete the folder and reopen to rebuild it "
                "from stored texts",
                location=str(path),
            ) from exc

    def load(self, settings: dict[str, Any]) -> tuple[Manifest, list[Segment]] | None:
        """The latest complete save and its segments; None when nothing is saved with ``settings``."""
        for attempt in range(3):
            manifest = self.manifest()
            if manifest is None or manifest.settings != settings:
                return None
            try:
                return manifest, self._segments(manifest)
            except FileNotFoundError as exc:
                if attempt == 2 or self.manifest() == manifest:  # not a save replacing it meanwhile
                    raise StorageError(
                        f"keyword index manifest {self.directory / MANIFEST} names {exc.filename}, which is missing; "
                        "delete the folder and reopen to rebuild it",
                        location=str(self.directory),
                    ) from exc
        raise AssertionError("unreachable")

    def _segments(self, manifest: Manifest) -> list[Segment]:
        segments = []
        for entry in manifest.segments:
            segment = self._opened.get(entry.file) or open_segment(self.directory / entry.file)
            if (segment.docs, segment.deletions) != (entry.docs, entry.deletions):
                raise StorageError(
                    f"keyword index file {segment.file} holds {segment.docs} chunks and {segment.deletions} "
                    f"deletions, its manifest says {entry.docs} and {entry.deletions}; delete the folder and reopen",
                    location=segment.file,
                )
            self._opened[entry.file] = segment
            segments.append(segment)
        return segments

    def replace(self, segments: Iterable[Segment], settings: dict[str, Any], token: int | None) -> list[Segment]:
        """Publish ``segments`` (oldest first, each written as it comes) as everything saved: a complete save.
        The published segments, memory-mapped."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            previous = self.manifest()
        except StorageError:
            previous = None
        entries = []
        for number, segment in enumerate(segments, _last_number(previous) + 1):
            entries.append(Entry(self._write(segment, number), segment.docs, segment.deletions, 0))
        fsync_directory(self.directory)
        self._publish(Manifest(settings, token, tuple(entries)))
        return [self._opened[entry.file] for entry in entries]

    def save_changes(
        self,
        documents: dict[str, tuple[list[str], list[int]]],
        deleted: list[str],
        settings: dict[str, Any],
        token: int,
        everything: Callable[[], Segment | None],
    ) -> None:
        """Save ``documents`` (id -> distinct terms, frequencies) and the deletion of ``deleted`` on top of what is
        published; ``everything`` gives the complete index, saved instead when nothing usable is published."""
        try:
            manifest = self.manifest()
            segments = self._segments(manifest) if manifest and manifest.settings == settings else None
        except (StorageError, FileNotFoundError):
            manifest = segments = None  # damaged: the complete save replaces it
        if manifest is None or segments is None:
            whole = everything()
            self.replace([whole] if whole is not None else [], settings, token)
            return
        entries = list(manifest.segments)
        keys = [*documents, *deleted]
        hi, lo = digests(keys)
        dead = [entry.dead for entry in entries]
        held_before = np.zeros(len(keys), dtype=bool)  # the newest record of the id was a live document
        unresolved = np.ones(len(keys), dtype=bool)
        for i in reversed(range(len(segments))):
            rest = np.flatnonzero(unresolved)
            if not len(rest):
                break
            saved = segments[i].find_docs(hi[rest], lo[rest]) >= 0
            dead[i] += int(saved.sum())
            held_before[rest[saved]] = True
            unresolved[rest[saved | segments[i].find_deletions(hi[rest], lo[rest])]] = False
        entries = [replace(entry, dead=count) for entry, count in zip(entries, dead)]
        number = _last_number(manifest) + 1
        drop = np.flatnonzero(held_before[len(documents) :]) + len(documents)  # a deletion of nothing is not saved
        if documents or len(drop):
            segment = from_documents(documents, (hi[drop], lo[drop]))
            name = self._write(segment, number)
            number += 1
            entries.append(Entry(name, segment.docs, segment.deletions, 0))
            segments.append(self._opened[name])
        while (run := next_merge([(e.docs, e.dead, e.deletions) for e in entries])) is not None:
            start, end = run
            merged = self._merge(entries, segments, start, end)
            entries[start:end], segments[start:end] = [], []
            if merged is not None:
                name = self._write(merged, number)
                number += 1
                entries.insert(start, Entry(name, merged.docs, merged.deletions, 0))
                segments.insert(start, self._opened[name])
        fsync_directory(self.directory)
        self._publish(Manifest(settings, token, tuple(entries)))

    def _merge(self, entries: list[Entry], segments: list[Segment], start: int, end: int) -> Segment | None:
        """The segments [start, end) as one: their live documents, and the deletion records still needed (none
        when the oldest segment is among them: nothing older is left to delete)."""
        parts = []
        for i in range(start, end):
            segments[i].verify()
            mask = None
            if entries[i].dead:
                docs = superseded(segments[i], segments[i + 1 :])
                if len(docs) != entries[i].dead:
                    raise StorageError(
                        f"keyword index file {segments[i].file} has {len(docs)} chunks that later saves replaced, "
                        f"its manifest records {entries[i].dead}; delete the folder and reopen to rebuild it",
                        location=segments[i].file,
                    )
                mask = np.ones(segments[i].docs, dtype=bool)
                mask[docs] = False
            parts.append((segments[i], mask))
        kept_hi, kept_lo = [NO_KEYS[0]], [NO_KEYS[1]]
        for i in range(start, end) if start else ():
            segment, newer = segments[i], segments[i + 1 : end]
            superseded_here = np.zeros(segment.deletions, dtype=bool)
            for later in newer:
                superseded_here |= later.find_docs(segment.del_hi, segment.del_lo) >= 0
                superseded_here |= later.find_deletions(segment.del_hi, segment.del_lo)
            kept_hi.append(segment.del_hi[~superseded_here])
            kept_lo.append(segment.del_lo[~superseded_here])
        return merge(parts, (np.concatenate(kept_hi), np.concatenate(kept_lo)))

    def _write(self, segment: Segment, number: int) -> str:
        """Write ``segment`` to a new file (fsynced, not yet published) and open it; its name."""
        name = f"bm25-{number:06d}-{secrets.token_hex(4)}.seg"
        write(segment, self.directory / name)
        self._opened[name] = open_segment(self.directory / name)
        return name

    def _publish(self, manifest: Manifest) -> None:
        """Replace the manifest atomically, then remove the files it no longer names."""
        write_json_atomically(
            self.directory / MANIFEST,
            {
                "format": FORMAT,
                "settings": manifest.settings,
                "token": manifest.token,
                "segments": [vars(entry) for entry in manifest.segments],
            },
        )
        named = {entry.file for entry in manifest.segments}
        for path in self.directory.iterdir():
            leftover = _SEGMENT_FILE.fullmatch(path.name) and path.name not in named
            if leftover or path.name == OLD_FILE or (path.name.startswith(f".{MANIFEST}.") and path.suffix == ".tmp"):
                try:
                    path.unlink()
                except OSError:  # removed by someone else, or still open where that forbids it: the next save retries
                    pass
        self._opened = {name: segment for name, segment in self._opened.items() if name in named}


def _parse(data: Any) -> Manifest:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} manifest")
    settings, token, entries = data["settings"], data["token"], data["segments"]
    if not isinstance(settings, dict) or not isinstance(entries, list):
        raise ValueError("settings is not an object or segments not a list")
    if token is not None and (isinstance(token, bool) or not isinstance(token, int)):
        raise ValueError(f"token {token!r} is not a whole number")
    segments = []
    for entry in entries:
        file, counts = entry["file"], (entry["docs"], entry["deletions"], entry["dead"])
        if not isinstance(file, str) or not _SEGMENT_FILE.fullmatch(file):
            raise ValueError(f"segment file name {file!r}")
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts) or counts[2] > counts[0]:
            raise ValueError(f"segment {file} has counts {counts}")
        segments.append(Entry(file, *counts))
    return Manifest(settings, token, tuple(segments))


def _last_number(manifest: Manifest | None) -> int:
    """The highest file number the manifest names (new files count on from it)."""
    if manifest is None or not manifest.segments:
        return 0
    return max(int(_SEGMENT_FILE.fullmatch(entry.file).group(1)) for entry in manifest.segments)

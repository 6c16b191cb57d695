"""A segment: chunks saved together, never changed once written, as numpy arrays in one file.

A segment holds documents (each chunk's id, token count and distinct terms with their frequencies, the forward
index), the postings of its terms (CSR: for each term the documents holding it and how often) and deletion
records (ids a later save deleted). Terms and ids are kept sorted by digest (``digests``) beside their UTF-8 text.

The file: 8 magic bytes, the header's length (uint64, little-endian), the header (JSON: each array's dtype,
length, offset and CRC-32), then the arrays, each at a 64-byte boundary, opened as memory-mapped numpy views: opening
reads the header and checks the arrays a load reads whole; the rest are read only where a search or a merge needs
them (a merge checks every array's CRC first).
"""

from __future__ import annotations

import json
import mmap
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from vecguard.errors import StorageError

from .digests import digests, find, key_order

MAGIC = b"VGBM25S1"
ALIGN = 64
TF_DTYPES = ("|u1", "<u2", "<u4")
# What a load reads whole, so it is checked when the file is opened; the rest is checked by a merge.
CHECKED_ON_OPEN = ("lengths", "term_hi", "term_lo", "post_offsets", "del_hi", "del_lo")
NO_KEYS = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64))  # no deletion records


@dataclass(frozen=True, eq=False)
class Segment:
    """The arrays of one segment; documents are numbered 0..docs-1 and terms 0..terms-1 within it."""

    id_hi: np.ndarray  # uint64 (docs,): the ids' digests, sorted
    id_lo: np.ndarray  # uint64 (docs,)
    id_doc: np.ndarray  # uint32 (docs,): the document with the id at each sorted place
    id_offsets: np.ndarray  # int64 (docs + 1,): document i's id is id_blob[id_offsets[i]:id_offsets[i + 1]]
    id_blob: np.ndarray  # uint8: the ids, UTF-8, by document
    lengths: np.ndarray  # uint32 (docs,): tokens per document, as rank-bm25 counts them (an empty one counts 1)
    fwd_offsets: np.ndarray  # int64 (docs + 1,): document i's terms are fwd_terms[fwd_offsets[i]:fwd_offsets[i + 1]]
    fwd_terms: np.ndarray  # uint32: distinct terms of each document
    fwd_tfs: np.ndarray  # uint8/16/32: how often the document holds each
    term_hi: np.ndarray  # uint64 (terms,): the terms' digests, sorted; term t is the t-th
    term_lo: np.ndarray  # uint64 (terms,)
    term_offsets: np.ndarray  # int64 (terms + 1,)
    term_blob: np.ndarray  # uint8: the terms, UTF-8
    post_offsets: np.ndarray  # int64 (terms + 1,): term t's postings are post_*[post_offsets[t]:post_offsets[t + 1]]
    post_docs: np.ndarray  # uint32: documents holding the term, ascending
    post_tfs: np.ndarray  # uint8/16/32: how often each holds it
    del_hi: np.ndarray  # uint64 (deletions,): digests of the ids this save deleted, sorted
    del_lo: np.ndarray  # uint64 (deletions,)
    file: str = ""  # the path it was opened from; "" while only in memory

    @property
    def docs(self) -> int:
        return len(self.lengths)

    @property
    def terms(self) -> int:
        return len(self.term_hi)

    @property
    def deletions(self) -> int:
        return len(self.del_hi)

    def term(self, term: int) -> str:
        return self.term_blob[self.term_offsets[term] : self.term_offsets[term + 1]].tobytes().decode("utf-8")

    def document(self, doc: int) -> tuple[list[str], list[int]]:
        """The document's distinct terms and their frequencies."""
        start, end = self.fwd_offsets[doc], self.fwd_offsets[doc + 1]
        return [self.term(int(t)) for t in self.fwd_terms[start:end]], self.fwd_tfs[start:end].tolist()

    def find_docs(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """The document holding each id digest, -1 where none does (int64)."""
        at = find(self.id_hi, self.id_lo, hi, lo)
        return np.where(at >= 0, self.id_doc[np.maximum(at, 0)].astype(np.int64), -1) if self.docs else at

    def find_deletions(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Whether this save deleted each id digest (bool)."""
        return find(self.del_hi, self.del_lo, hi, lo) >= 0

    def find_terms(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Each term digest's number here, -1 where the segment does not hold it (int64)."""
        return find(self.term_hi, self.term_lo, hi, lo)

    def id_keys_by_document(self) -> tuple[np.ndarray, np.ndarray]:
        place = np.empty(self.docs, dtype=np.int64)
        place[self.id_doc] = np.arange(self.docs)
        return self.id_hi[place], self.id_lo[place]

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "file"}

    def verify(self) -> None:
        """Check every array against the CRC-32 written with it (a merge reads them all)."""
        if self.file:
            header, _ = _header(Path(self.file))
            _check_crcs(Path(self.file), self.arrays(), header["arrays"])


def build(
    ids: Sequence[str],
    fwd_offsets: np.ndarray,
    fwd_terms: np.ndarray,
    fwd_tfs: np.ndarray,
    terms: Sequence[str],
    deleted: tuple[np.ndarray, np.ndarray],
) -> Segment:
    """A segment of documents given by their forward index, whose ``fwd_terms`` number the strings of ``terms``."""
    docs, fwd_offsets = len(ids), np.asarray(fwd_offsets, dtype=np.int64)
    term_hi, term_lo = digests(terms)
    by_term = key_order(term_hi, term_lo)
    sorted_hi, sorted_lo = term_hi[by_term], term_lo[by_term]
    if ((sorted_hi[1:] == sorted_hi[:-1]) & (sorted_lo[1:] == sorted_lo[:-1])).any():
        raise StorageError("two different terms share a 128-bit digest; please report it, with the collection")
    renumber = np.empty(len(terms), dtype=np.uint32)
    renumber[by_term] = np.arange(len(terms), dtype=np.uint32)
    fwd_terms = renumber[np.asarray(fwd_terms, dtype=np.int64)]
    fwd_tfs = np.asarray(fwd_tfs)
    fwd_tfs = fwd_tfs.astype(tf_dtype(int(fwd_tfs.max()) if len(fwd_tfs) else 0))
    term_offsets, term_blob = encode([terms[i] for i in by_term])
    entry_docs = np.repeat(np.arange(docs, dtype=np.uint32), np.diff(fwd_offsets))
    by_posting = stable_argsort(fwd_terms)
    id_hi, id_lo = digests(ids)
    by_id = key_order(id_hi, id_lo)
    id_offsets, id_blob = encode(ids)
    del_order = key_order(*deleted)
    return Segment(
        id_hi=id_hi[by_id],
        id_lo=id_lo[by_id],
        id_doc=by_id.astype(np.uint32),
        id_offsets=id_offsets,
        id_blob=id_blob,
        lengths=np.diff(np.concatenate([[0], np.cumsum(fwd_tfs, dtype=np.int64)])[fwd_offsets]).astype(np.uint32),
        fwd_offsets=fwd_offsets,
        fwd_terms=fwd_terms,
        fwd_tfs=fwd_tfs,
        term_hi=sorted_hi,
        term_lo=sorted_lo,
        term_offsets=term_offsets,
        term_blob=term_blob,
        post_offsets=np.concatenate([[0], np.cumsum(np.bincount(fwd_terms, minlength=len(terms)))]).astype(np.int64),
        post_docs=entry_docs[by_posting],
        post_tfs=fwd_tfs[by_posting],
        del_hi=deleted[0][del_order],
        del_lo=deleted[1][del_order],
    )


def from_documents(
    documents: dict[str, tuple[list[str], list[int]]], deleted: tuple[np.ndarray, np.ndarray]
) -> Segment:
    """A segment of ``documents`` (id -> its distinct terms and their frequencies) and deletion records."""
    numbers: dict[str, int] = {}
    offsets, terms, tfs = [0], [], []
    for doc_terms, doc_tfs in documents.values():
        terms.extend([numbers.setdefault(term, len(numbers)) for term in doc_terms])
        tfs.extend(doc_tfs)
        offsets.append(len(terms))
    return build(
        list(documents),
        np.array(offsets, dtype=np.int64),
        np.array(terms, dtype=np.int64),
        np.array(tfs, dtype=np.int64),
        list(numbers),
        deleted,
    )


def superseded(segment: Segment, newer: Sequence[Segment]) -> np.ndarray:
    """The documents of ``segment`` whose id a newer segment saves again or deletes (ascending numbers)."""
    hit = np.zeros(segment.docs, dtype=bool)
    for later in newer:
        for hi, lo in ((later.id_hi, later.id_lo), (later.del_hi, later.del_lo)):
            docs = segment.find_docs(hi, lo)
            hit[docs[docs >= 0]] = True
    return np.flatnonzero(hit)


def tf_dtype(largest: int) -> np.dtype:
    return np.dtype(next(d for d in TF_DTYPES if largest <= np.iinfo(np.dtype(d)).max))


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` of uint32 values, by two 16-bit radix passes (numpy sorts those in
    linear time; a 32-bit stable sort is a merge sort, twice as slow on a million chunks' postings)."""
    if len(values) < 1 << 16:
        return np.argsort(values, kind="stable")
    low = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((values[low] >> 16).astype(np.uint16), kind="stable")]


def encode(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 (n + 1,), UTF-8 bytes uint8) of the strings laid end to end."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def take_ranges(offsets: np.ndarray, data: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of the ranges ``data[offsets[i]:offsets[i + 1]]`` for i in ``which``, end to end."""
    starts = offsets[which]
    lengths = offsets[which + 1] - starts
    new_offsets = np.zeros(len(which) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    index = np.repeat(starts - new_offsets[:-1], lengths)
    index += np.arange(new_offsets[-1], dtype=np.int64)
    return new_offsets, data[index]


# ------------------------------------------------------------------ the file


def write(segment: Segment, path: Path) -> None:
    """Write the segment to ``path`` and fsync it (the caller publishes it afterwards)."""
    arrays = {name: np.ascontiguousarray(a, dtype=_file_dtype(name, a)) for name, a in segment.arrays().items()}
    specs, end = {}, 0
    for name, array in arrays.items():
        offset = -(-end // ALIGN) * ALIGN
        specs[name] = {"dtype": array.dtype.str, "length": len(array), "offset": offset, "crc32": zlib.crc32(array)}
        end = offset + array.nbytes
    header = json.dumps({"arrays": specs}, separators=(",", ":")).encode("utf-8")
    data_start = _data_start(len(header))
    with open(path, "wb") as f:
        f.write(MAGIC + len(header).to_bytes(8, "little") + header)
        for name, array in arrays.items():
            if array.nbytes:
                f.seek(data_start + specs[name]["offset"])
                f.write(array.data)
        f.truncate(data_start + end)
        f.flush()
        os.fsync(f.fileno())


def open_segment(path: Path) -> Segment:
    """The segment saved in ``path``, its arrays memory-mapped. FileNotFoundError when it is not there; StorageError
    naming the file when it is damaged."""
    header, header_length = _header(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise _damaged(path, f"cannot be mapped ({exc})") from exc
    specs = header.get("arrays")
    names = [f.name for f in fields(Segment) if f.name != "file"]
    if not isinstance(specs, dict) or sorted(specs) != sorted(names):
        raise _damaged(path, "its header does not list the arrays of a segment")
    data_start = _data_start(header_length)
    arrays = {}
    for name in names:
        spec = specs[name]
        try:
            dtype, length, offset = np.dtype(spec["dtype"]), int(spec["length"]), int(spec["offset"])
            if spec["dtype"] not in _allowed_dtypes(name) or length < 0 or offset < 0:
                raise ValueError(f"array {name} is {spec['dtype']} of length {length} at {offset}")
            if data_start + offset + length * dtype.itemsize > size:
                raise ValueError(f"array {name} runs past the end of the file ({size} bytes)")
        except (KeyError, TypeError, ValueError) as exc:
            raise _damaged(path, str(exc)) from exc
        if length:
            arrays[name] = np.frombuffer(mapped, dtype=dtype, count=length, offset=data_start + offset)
        else:
            arrays[name] = np.zeros(0, dtype=dtype)
    _check_crcs(path, {name: arrays[name] for name in CHECKED_ON_OPEN}, specs)
    segment = Segment(**arrays, file=str(path))
    _check_shape(path, segment)
    return segment


def _header(path: Path) -> tuple[dict, int]:
    """The header of the segment file and its length in bytes."""
    with open(path, "rb") as f:
        start = f.read(16)
        length = int.from_bytes(start[8:16], "little") if len(start) == 16 else -1
        if start[:8] != MAGIC or not 0 < length < 1 << 24:
            raise _damaged(path, "it does not start as a segment file does")
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _damaged(path, f"its header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _damaged(path, "its header is not an object")
    return header, length


def _check_crcs(path: Path, arrays: dict[str, np.ndarray], specs: dict) -> None:
    for name, array in arrays.items():
        if zlib.crc32(array) != specs[name].get("crc32"):
            raise _damaged(path, f"array {name} does not match its CRC-32")


def _check_shape(path: Path, s: Segment) -> None:
    """Lengths and offsets that agree with one another (read by a load: checked before anything indexes by them)."""
    problems = []
    for what, offsets, count, data in (
        ("id_offsets", s.id_offsets, s.docs, len(s.id_blob)),
        ("fwd_offsets", s.fwd_offsets, s.docs, len(s.fwd_terms)),
        ("term_offsets", s.term_offsets, s.terms, len(s.term_blob)),
        ("post_offsets", s.post_offsets, s.terms, len(s.post_docs)),
    ):
        if len(offsets) != count + 1 or offsets[0] != 0 or offsets[-1] != data:
            problems.append(f"{what} does not span its data")
    if not (len(s.id_lo) == len(s.id_doc) == s.docs and len(s.term_lo) == s.terms and len(s.del_lo) == s.deletions):
        problems.append("its key arrays differ in length")
    if len(s.fwd_tfs) != len(s.fwd_terms) or len(s.post_tfs) != len(s.post_docs):
        problems.append("its term frequencies differ in length from their terms")
    if len(s.post_offsets) > 1 and (np.diff(s.post_offsets) < 0).any():
        problems.append("post_offsets decrease")
    if problems:
        raise _damaged(path, "; ".join(problems))


def _file_dtype(name: str, array: np.ndarray) -> str:
    return array.dtype.newbyteorder("<").str if name.endswith("_tfs") else _allowed_dtypes(name)[0]


def _allowed_dtypes(name: str) -> tuple[str, ...]:
    if name.endswith("_tfs"):
        return TF_DTYPES
    if name.endswith(("_hi", "_lo")):
        return ("<u8",)
    if name.endswith("_offsets"):
        return ("<i8",)
    if name.endswith("_blob"):
        return ("|u1",)
    return ("<u4",)  # id_doc, lengths, fwd_terms, post_docs


def _data_start(header_length: int) -> int:
    return -(-(16 + header_length) // ALIGN) * ALIGN


def _damaged(path: Path, why: str) -> StorageError:
    return StorageError(
        f"keyword index file {path} is damaged: {why}; delete the folder and reopen to rebuild it from stored texts",
        location=str(path),
    )

"""Segments merged into one, and when to merge them.

Merging is vectorised: documents keep their order (segment by segment), so each term's postings from the merged
segments land one segment after another and their places are counted, not sorted.

The policy is tiered by size, like Lucene's segments or an LSM tree: a segment's level grows by one each time its
size (records: live documents and deletion records) grows ``FANOUT`` times past ``FLOOR``, and ``FANOUT``
neighbours of one level merge into one of the next (``next_merge``). A record is rewritten about once per level it
climbs, so a save costs, amortised, its own size times a few levels (about 4 at a million chunks). A segment that
later saves superseded for the most part is rewritten alone, without them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .digests import key_order, union
from .segment import Segment, take_ranges

FANOUT = 8  # segments merged at once
FLOOR = 1024  # records: smaller segments all count as this size (merging them costs little)
LEVEL_SPAN = 0.75  # segments within this many levels of the largest after them merge together
# A merge handles postings and documents in slices of these, so its temporary arrays stay small at a million chunks.
POSTINGS_AT_ONCE = 1 << 22
DOCS_AT_ONCE = 1 << 16


def level(records: int) -> float:
    return math.log(max(records, FLOOR) / FLOOR, FANOUT)


def next_merge(sizes: Sequence[tuple[int, int, int]]) -> tuple[int, int] | None:
    """The run [start, end) of segments to merge next, from each segment's (documents, superseded documents,
    deletion records), oldest first; None when none needs it.

    Lucene's LogMergePolicy, on neighbours only (a newer segment's records supersede older ones, so merged segments
    must be adjacent): from the oldest, the segments down to the last one within ``LEVEL_SPAN`` of the largest form a
    group, and ``FANOUT`` of a group merge into one of the next level. Each group's largest is smaller than the last
    group's by more than ``LEVEL_SPAN``, so a group that does not merge yet holds fewer than ``FANOUT`` segments and
    the files stay few: under ``FANOUT`` per level.
    """
    for i, (docs, dead, _) in enumerate(sizes):
        if dead and 2 * dead >= docs:
            return i, i + 1
    levels = [level(docs - dead + deletions) for docs, dead, deletions in sizes]
    start = 0
    while start < len(levels):
        top = max(levels[start:])
        bottom = top - LEVEL_SPAN if top > 0 else -1.0
        last = max(i for i in range(start, len(levels)) if levels[i] >= bottom)
        if last + 1 - start >= FANOUT:
            return start, start + FANOUT
        start = last + 1
    return None


def merge(parts: Sequence[tuple[Segment, np.ndarray | None]], deleted: tuple[np.ndarray, np.ndarray]) -> Segment | None:
    """One segment holding the documents of ``parts`` that their mask keeps (None: all), in order, and the deletion
    records ``deleted``; None when that is nothing."""
    kept = [np.flatnonzero(mask) if mask is not None else None for _, mask in parts]
    counts = [len(k) if k is not None else segment.docs for (segment, _), k in zip(parts, kept)]
    if not sum(counts) and not len(deleted[0]):
        return None
    firsts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    renumbered = []  # each part's documents' numbers in the merged segment, -1 for those left out
    for (segment, _), k, first in zip(parts, kept, firsts):
        if k is None:
            renumbered.append(None)
        else:
            numbers = np.full(segment.docs, -1, dtype=np.int64)
            numbers[k] = first + np.arange(len(k))
            renumbered.append(numbers)

    # Terms: the union, less those only left-out documents held.
    term_hi, term_lo, numbers, occurrence = union([(s.term_hi, s.term_lo) for s, _ in parts])
    live_df = [_live_df(segment, mask) for segment, mask in parts]
    df = np.zeros(len(term_hi), dtype=np.int64)
    for term_numbers, df_here in zip(numbers, live_df):
        df[term_numbers] += df_here  # a part's terms are distinct: no two add to the same place
    held = df > 0
    final = np.cumsum(held) - 1  # merged term number of each union term that is held
    post_offsets = np.concatenate([[0], np.cumsum(df[held])]).astype(np.int64)
    tf_dtype = np.result_type(*[s.post_tfs.dtype for s, _ in parts])

    # Postings: each term's from one part after another's, at counted places.
    post_docs = np.empty(post_offsets[-1], dtype=np.uint32)
    post_tfs = np.empty(post_offsets[-1], dtype=tf_dtype)
    filled = np.zeros(int(held.sum()), dtype=np.int64)
    for (segment, mask), numbers_here, term_numbers, df_here, first in zip(parts, renumbered, numbers, live_df, firsts):
        if not df_here.any():
            continue  # (a term no live document holds has no merged number: ``final`` is meaningless there)
        target = final[term_numbers]
        goes_to = post_offsets[target] + filled[target]  # where each of the part's terms' live postings start
        for begin, end in _blocks(segment.post_offsets):
            docs = segment.post_docs[segment.post_offsets[begin] : segment.post_offsets[end]]
            tfs = segment.post_tfs[segment.post_offsets[begin] : segment.post_offsets[end]]
            if numbers_here is None:
                docs = docs.astype(np.int64) + first
            else:
                keep = mask[docs]
                docs, tfs = numbers_here[docs[keep]], tfs[keep]
            counts = df_here[begin:end]
            place = np.repeat(goes_to[begin:end] - (np.cumsum(counts) - counts), counts)
            place += np.arange(len(docs), dtype=np.int64)
            post_docs[place], post_tfs[place] = docs, tfs
        present = df_here > 0
        filled[target[present]] += df_here[present]

    # Forward index, ids and lengths of the documents kept, in order.
    chosen = [np.arange(segment.docs) if k is None else k for (segment, _), k in zip(parts, kept)]
    fwd_offsets = _offsets([np.diff(segment.fwd_offsets)[k] for (segment, _), k in zip(parts, chosen)])
    id_offsets = _offsets([np.diff(segment.id_offsets)[k] for (segment, _), k in zip(parts, chosen)])
    fwd_terms = np.empty(fwd_offsets[-1], dtype=np.uint32)
    fwd_tfs = np.empty(fwd_offsets[-1], dtype=tf_dtype)
    id_blob = np.empty(id_offsets[-1], dtype=np.uint8)
    done, id_hi, id_lo, lengths = 0, [], [], []
    for (segment, _), k, term_numbers in zip(parts, chosen, numbers):
        renumber = final[term_numbers].astype(np.uint32)
        for piece in np.array_split(k, -(-len(k) // DOCS_AT_ONCE)) if len(k) else ():
            start, end = fwd_offsets[done], fwd_offsets[done + len(piece)]
            fwd_terms[start:end] = renumber[take_ranges(segment.fwd_offsets, segment.fwd_terms, piece)[1]]
            fwd_tfs[start:end] = take_ranges(segment.fwd_offsets, segment.fwd_tfs, piece)[1]
            id_blob[id_offsets[done] : id_offsets[done + len(piece)]] = take_ranges(
                segment.id_offsets, segment.id_blob, piece
            )[1]
            done += len(piece)
        hi, lo = segment.id_keys_by_document()
        id_hi.append(hi[k])
        id_lo.append(lo[k])
        lengths.append(segment.lengths[k])
    id_hi, id_lo = np.concatenate(id_hi), np.concatenate(id_lo)
    by_id = key_order(id_hi, id_lo)
    term_offsets, term_blob = _strings_of(parts, occurrence[held])
    del_order = key_order(*deleted)
    return Segment(
        id_hi=id_hi[by_id],
        id_lo=id_lo[by_id],
        id_doc=by_id.astype(np.uint32),
        id_offsets=id_offsets,
        id_blob=id_blob,
        lengths=np.concatenate(lengths).astype(np.uint32),
        fwd_offsets=fwd_offsets,
        fwd_terms=fwd_terms,
        fwd_tfs=fwd_tfs,
        term_hi=term_hi[held],
        term_lo=term_lo[held],
        term_offsets=term_offsets,
        term_blob=term_blob,
        post_offsets=post_offsets,
        post_docs=post_docs,
        post_tfs=post_tfs,
        del_hi=deleted[0][del_order],
        del_lo=deleted[1][del_order],
    )


def _live_df(segment: Segment, mask: np.ndarray | None) -> np.ndarray:
    """How many documents the mask keeps (None: all) hold each of the segment's terms."""
    if mask is None:
        return np.diff(segment.post_offsets)
    df = np.empty(segment.terms, dtype=np.int64)
    for begin, end in _blocks(segment.post_offsets):
        first, last = segment.post_offsets[begin], segment.post_offsets[end]
        live = np.concatenate([[0], np.cumsum(mask[segment.post_docs[first:last]])])
        offsets = segment.post_offsets[begin : end + 1] - first
        df[begin:end] = live[offsets[1:]] - live[offsets[:-1]]
    return df


def _blocks(post_offsets: np.ndarray) -> list[tuple[int, int]]:
    """Runs of terms [begin, end) with about POSTINGS_AT_ONCE postings each (one term's may be more)."""
    cuts = np.searchsorted(post_offsets, np.arange(POSTINGS_AT_ONCE, post_offsets[-1], POSTINGS_AT_ONCE))
    bounds = np.unique(np.concatenate([[0], cuts, [len(post_offsets) - 1]])).tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def _offsets(lengths: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)


def _strings_of(
    parts: Sequence[tuple[Segment, np.ndarray | None]], occurrence: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, UTF-8) of the merged terms, each copied from the part where ``occurrence`` (its place among the
    parts' terms laid end to end) finds it."""
    bounds = np.cumsum([0] + [s.terms for s, _ in parts])
    part = np.searchsorted(bounds, occurrence, side="right") - 1
    gathered_offsets, gathered, order = [np.zeros(1, dtype=np.int64)], [], []
    for p, (segment, _) in enumerate(parts):
        mine = np.flatnonzero(part == p)
        offsets, blob = take_ranges(segment.term_offsets, segment.term_blob, occurrence[mine] - bounds[p])
        gathered_offsets.append(offsets[1:] + sum(len(b) for b in gathered))
        gathered.append(blob)
        order.append(mine)
    back = np.empty(len(occurrence), dtype=np.int64)
    back[np.concatenate(order)] = np.arange(len(occurrence))
    return take_ranges(np.concatenate(gathered_offsets), np.concatenate(gathered).astype(np.uint8), back)

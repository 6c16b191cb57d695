"""The chunks held, their postings, and BM25Okapi exactly as rank-bm25 computes it.

Chunks come from two places: loaded segments, memory-mapped and never changed (a chunk rewritten or deleted since
the load is only marked dead), and chunks added since, held in memory with their tokens and postings appended in
place. Both share one slot numbering (the segments' documents first, in order, then the chunks added) and one term
numbering (``Vocabulary``), so the live document frequency of every term is one array that add and delete keep
exact: rank-bm25 replaces a negative idf by ``epsilon`` times the mean idf over the whole vocabulary.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import Counter
from collections.abc import Sequence

import numpy as np
from vecguard.errors import StorageError

from .digests import digests, find, union
from .merge import merge
from .segment import NO_KEYS, Segment, build, stable_argsort, superseded, take_ranges


class Vocabulary:
    """Every term's number and live document frequency: the segments' terms numbered by digest, then terms first
    seen since the load."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray, df: np.ndarray) -> None:
        self._hi, self._lo = hi, lo  # the segments' terms, sorted: term i is the i-th
        self._numbers: dict[str, int] = {}  # terms an add looked up, and terms first seen since the load
        self._df = df
        self.size = len(df)

    @property
    def df(self) -> np.ndarray:
        """Live document frequency by term number (int64, a view: changes write through)."""
        return self._df[: self.size]

    def numbers(self, terms: list[str]) -> np.ndarray:
        """The terms' numbers, new terms numbered as they come (int64)."""
        missing = [term for term in terms if term not in self._numbers]
        if missing:
            found = find(self._hi, self._lo, *digests(missing)).tolist()
            for term, number in zip(missing, found):
                if number < 0:
                    number = self.size
                    self.size += 1
                    if self.size > len(self._df):
                        self._df = np.concatenate([self._df, np.zeros(max(1024, len(self._df)), dtype=np.int64)])
                self._numbers[term] = number
        return np.fromiter(map(self._numbers.__getitem__, terms), dtype=np.int64, count=len(terms))

    def terms(self, numbers: np.ndarray) -> list[str]:
        """The terms an add numbered (``numbers`` holds no other)."""
        by_number = {number: term for term, number in self._numbers.items()}
        return [by_number[number] for number in numbers.tolist()]

    def lookup(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(numbers, -1 for a term never seen; the terms' digests hi, lo), numbering nothing new."""
        hi, lo = digests(terms)
        numbers = find(self._hi, self._lo, hi, lo)
        for i in np.flatnonzero(numbers < 0):
            numbers[i] = self._numbers.get(terms[i], -1)
        return numbers, hi, lo


class Postings:
    """The live chunks: ids, lengths, postings and document frequencies, and their BM25 scores.

    ``dead`` gives, for each segment, how many of its documents later segments superseded (the manifest records
    it): they are found by id and checked against that count.
    """

    def __init__(
        self, k1: float, b: float, epsilon: float, segments: Sequence[Segment] = (), dead: Sequence[int] = ()
    ) -> None:
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self.segments = list(segments)
        self.starts = np.concatenate([[0], np.cumsum([s.docs for s in self.segments])]).astype(np.int64)
        self.saved_slots = int(self.starts[-1])
        hi, lo, self._term_numbers, _ = union([(s.term_hi, s.term_lo) for s in self.segments])
        df = np.zeros(len(hi), dtype=np.int64)
        for segment, numbers in zip(self.segments, self._term_numbers):
            df[numbers] += np.diff(segment.post_offsets)  # a segment's terms are distinct
        self.vocabulary = Vocabulary(hi, lo, df)
        self.lengths = np.concatenate([np.zeros(0), *(s.lengths for s in self.segments)]).astype(np.float64)
        self.alive = np.ones(self.saved_slots, dtype=bool)
        for i, count in enumerate(dead):
            if count:
                docs = superseded(self.segments[i], self.segments[i + 1 :])
                if len(docs) != count:
                    raise StorageError(
                        f"keyword index file {self.segments[i].file} has {len(docs)} chunks that later saves "
                        f"replaced, where its manifest records {count}; delete the folder and reopen to rebuild it",
                        location=self.segments[i].file,
                    )
                self._kill_saved(i, docs)
        self.live = int(self.alive.sum())
        self.length_total = float(self.lengths[self.alive].sum())
        self._added_ids: list[str] = []  # by slot - saved_slots, dead ones included
        self._added_slot: dict[str, int] = {}  # live chunks added since the load
        self._tokens: dict[str, list[str]] = {}  # their tokens
        self._added_postings: dict[int, tuple[array, array]] = {}  # term number -> (slots, term frequencies)
        self._added_dead = 0
        self._stats: tuple[float, float] | None = None  # (mean document length, epsilon floor)

    @property
    def slots(self) -> int:
        """Slots numbered so far, dead ones included."""
        return self.saved_slots + len(self._added_ids)

    def add(self, key: str, tokens: list[str]) -> None:
        """Hold a chunk that is not held (``remove`` it first)."""
        counts = Counter(tokens or [""])  # rank-bm25 counts an empty document as one empty token
        numbers = self.vocabulary.numbers(list(counts))
        slot = self._place(key, tokens, numbers, list(counts.values()))
        self.vocabulary.df[numbers] += 1
        self.live += 1
        self.length_total += self.lengths[slot]
        self._stats = None

    def _place(self, key: str, tokens: list[str], numbers: np.ndarray, tfs: list[int]) -> int:
        slot = self.slots
        if slot >= len(self.lengths):
            grown = max(1024, len(self.lengths))
            self.lengths = np.concatenate([self.lengths, np.zeros(grown)])
            self.alive = np.concatenate([self.alive, np.zeros(grown, dtype=bool)])
        self._added_ids.append(key)
        self._added_slot[key] = slot
        self._tokens[key] = tokens
        self.lengths[slot] = len(tokens) or 1
        self.alive[slot] = True
        for number, tf in zip(numbers.tolist(), tfs):
            slots, frequencies = self._added_postings.setdefault(number, (array("i"), array("i")))
            slots.append(slot)
            frequencies.append(tf)
        return slot

    def remove(self, keys: Sequence[str]) -> None:
        """Stop holding the chunks (keys not held are ignored)."""
        keys = list(dict.fromkeys(keys))
        for key, slot in zip(keys, self.slots_of(keys).tolist()):
            if slot < 0:
                continue
            if slot >= self.saved_slots:
                self.alive[slot] = False
                del self._added_slot[key]
                self.vocabulary.df[self.vocabulary.numbers(list(set(self._tokens.pop(key) or [""])))] -= 1
                self._added_dead += 1
            else:
                segment = bisect.bisect_right(self.starts, slot) - 1
                self._kill_saved(segment, np.array([slot - self.starts[segment]]))
            self.live -= 1
            self.length_total -= self.lengths[slot]
            self._stats = None
        if self._added_dead > 1024 and self._added_dead > len(self._added_slot):
            self._compact_added()

    def _kill_saved(self, segment: int, docs: np.ndarray) -> None:
        self.alive[self.starts[segment] + docs] = False
        _, terms = take_ranges(self.segments[segment].fwd_offsets, self.segments[segment].fwd_terms, docs)
        numbers = self._term_numbers[segment][terms]
        if len(docs) == 1:
            self.vocabulary.df[numbers] -= 1  # one document's terms are distinct
        else:
            self.vocabulary.df[:] -= np.bincount(numbers, minlength=self.vocabulary.size)

    def _compact_added(self) -> None:
        """Renumber the chunks added since the load without the dead ones (frequencies and totals are unchanged)."""
        held = [(key, self._tokens[key]) for key in self._added_slot]
        self._added_ids, self._added_slot, self._tokens, self._added_postings = [], {}, {}, {}
        self._added_dead = 0
        self.alive[self.saved_slots :] = False
        for key, tokens in held:
            counts = Counter(tokens or [""])
            self._place(key, tokens, self.vocabulary.numbers(list(counts)), list(counts.values()))

    def slots_of(self, keys: Sequence[str]) -> np.ndarray:
        """Each key's live slot, -1 where it is not held (int64)."""
        slots = np.fromiter((self._added_slot.get(key, -1) for key in keys), dtype=np.int64, count=len(keys))
        rest = np.flatnonzero(slots < 0)
        if len(rest) and self.segments:
            hi, lo = digests([keys[i] for i in rest])
            found = np.full(len(rest), -1, dtype=np.int64)
            for i, segment in enumerate(self.segments):
                docs = segment.find_docs(hi, lo)
                candidate = np.where(docs >= 0, self.starts[i] + docs, 0)
                live = (docs >= 0) & self.alive[candidate]
                found[live] = candidate[live]
            slots[rest] = found
        return slots

    def ids_of(self, slots: np.ndarray) -> list[str]:
        """The id in each slot."""
        keys: list[str] = [""] * len(slots)
        segment_of = np.searchsorted(self.starts, slots, side="right") - 1
        for i in np.unique(segment_of).tolist():
            where = np.flatnonzero(segment_of == i)
            if i == len(self.segments):  # added since the load
                for at, slot in zip(where.tolist(), slots[where].tolist()):
                    keys[at] = self._added_ids[slot - self.saved_slots]
                continue
            segment = self.segments[i]
            offsets, blob = take_ranges(segment.id_offsets, segment.id_blob, slots[where] - self.starts[i])
            data, bounds = blob.tobytes(), offsets.tolist()
            for n, at in enumerate(where.tolist()):
                keys[at] = data[bounds[n] : bounds[n + 1]].decode("utf-8")
        return keys

    def ids(self) -> set[str]:
        return set(self._added_slot).union(self.ids_of(np.flatnonzero(self.alive[: self.saved_slots])))

    def document(self, slot: int) -> tuple[list[str], list[int]]:
        """The distinct terms of the chunk in ``slot`` and their frequencies."""
        if slot >= self.saved_slots:
            counts = Counter(self._tokens[self._added_ids[slot - self.saved_slots]] or [""])
            return list(counts), list(counts.values())
        segment = bisect.bisect_right(self.starts, slot) - 1
        return self.segments[segment].document(slot - int(self.starts[segment]))

    def token_lists(self) -> tuple[np.ndarray, list[list[str]]]:
        """The live slots and each chunk's tokens (a saved chunk's in term order: the counts are what scores use)."""
        slots = np.flatnonzero(self.alive[: self.slots])
        tokens = []
        for slot in slots.tolist():
            if slot >= self.saved_slots:
                tokens.append(self._tokens[self._added_ids[slot - self.saved_slots]] or [""])
            else:
                terms, tfs = self.document(slot)
                tokens.append([term for term, tf in zip(terms, tfs) for _ in range(tf)])
        return slots, tokens

    def as_segment(self) -> Segment | None:
        """Every live chunk in one segment (a complete save); None when none is held."""
        added = self._added_segment()
        if not self.segments:  # nothing loaded: the chunks added are everything
            return added if added.docs else None
        parts = [(s, self.alive[self.starts[i] : self.starts[i + 1]]) for i, s in enumerate(self.segments)]
        return merge([*parts, (added, None)], NO_KEYS)

    def _added_segment(self) -> Segment:
        """The live chunks added since the load as a segment, from their postings (no per-token work)."""
        keys, slots = list(self._added_slot), np.fromiter(self._added_slot.values(), dtype=np.int64)
        doc_of_slot = np.full(self.slots - self.saved_slots, -1, dtype=np.int64)
        doc_of_slot[slots - self.saved_slots] = np.arange(len(keys))
        numbers = list(self._added_postings)
        lists = [self._added_postings[number] for number in numbers]
        counts = np.fromiter((len(postings) for postings, _ in lists), dtype=np.int64, count=len(lists))
        entry_docs = doc_of_slot[
            np.frombuffer(b"".join(p.tobytes() for p, _ in lists), dtype=np.int32) - self.saved_slots
        ]
        entry_tfs = np.frombuffer(b"".join(t.tobytes() for _, t in lists), dtype=np.int32)
        entry_terms = np.repeat(np.arange(len(numbers)), counts)
        live = entry_docs >= 0
        held = np.bincount(entry_terms[live], minlength=len(numbers)) > 0  # terms a live chunk holds
        renumber = np.cumsum(held) - 1
        entry_docs, entry_terms, entry_tfs = entry_docs[live], renumber[entry_terms[live]], entry_tfs[live]
        by_doc = stable_argsort(entry_docs.astype(np.uint32))  # postings come by term; a segment is built by chunk
        return build(
            keys,
            np.concatenate([[0], np.cumsum(np.bincount(entry_docs, minlength=len(keys)))]),
            entry_terms[by_doc],
            entry_tfs[by_doc],
            self.vocabulary.terms(np.asarray(numbers)[held]),
            NO_KEYS,
        )

    def _postings(self, number: int, local: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(slots int64, term frequencies float64) of the term numbered ``number`` (dead slots included), whose
        number in each segment is ``local`` (-1: not there)."""
        slots, tfs = [], []
        for segment, start, term in zip(self.segments, self.starts.tolist(), local):
            if term >= 0:
                begin, end = segment.post_offsets[term], segment.post_offsets[term + 1]
                slots.append(segment.post_docs[begin:end].astype(np.int64) + start)
                tfs.append(segment.post_tfs[begin:end])
        added = self._added_postings.get(number)
        if added is not None:
            slots.append(np.frombuffer(added[0], dtype=np.int32))
            tfs.append(np.frombuffer(added[1], dtype=np.int32))
        if len(slots) == 1:
            return slots[0].astype(np.int64, copy=False), tfs[0].astype(np.float64)
        return np.concatenate(slots).astype(np.int64), np.concatenate(tfs).astype(np.float64)

    def _locals(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """(terms, segments): each term digest's number in each segment, -1 where absent."""
        if not self.segments:
            return np.zeros((len(hi), 0), dtype=np.int64)
        return np.stack([segment.find_terms(hi, lo) for segment in self.segments], axis=1)

    def vocabulary_df(self, terms: list[str]) -> dict[str, int]:
        """Each distinct term's live document frequency (0 for a term no live chunk holds), reading no postings."""
        distinct = list(dict.fromkeys(terms))
        if not distinct:
            return {}
        numbers, _, _ = self.vocabulary.lookup(distinct)
        return {term: int(self.vocabulary.df[n]) if n >= 0 else 0 for term, n in zip(distinct, numbers.tolist())}

    def holders(self, term: str) -> tuple[int, np.ndarray]:
        """(live document frequency, live slots) of ``term``."""
        numbers, hi, lo = self.vocabulary.lookup([term])
        number = int(numbers[0])
        if number < 0 or not self.vocabulary.df[number]:
            return 0, np.zeros(0, dtype=np.int64)
        slots, _ = self._postings(number, self._locals(hi, lo)[0].tolist())
        return int(self.vocabulary.df[number]), slots[self.alive[slots]]

    def _statistics(self) -> tuple[float, float]:
        if self._stats is None:
            df = self.vocabulary.df
            df = df[df > 0].astype(np.float64)
            idfs = np.log(self.live - df + 0.5) - np.log(df + 0.5)
            self._stats = (self.length_total / self.live, self.epsilon * float(idfs.mean()))
        return self._stats

    def scores(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(slots, scores) of the live chunks whose score is positive (the only ones a search returns)."""
        n = self.live
        if not n:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        mean_length, floor = self._statistics()
        numbers, hi, lo = self.vocabulary.lookup(terms)
        df = self.vocabulary.df
        known = [i for i, number in enumerate(numbers.tolist()) if number >= 0 and df[number]]
        local = self._locals(hi[known], lo[known]).tolist()
        touched, contributions = [], []
        for i, local_numbers in zip(known, local):  # a repeated query term counts again, as in rank-bm25
            term_df = int(df[numbers[i]])
            idf = math.log(n - term_df + 0.5) - math.log(term_df + 0.5)
            if idf < 0:
                idf = floor
            slots, tfs = self._postings(int(numbers[i]), local_numbers)
            norm = self.k1 * (1 - self.b + self.b * self.lengths[slots] / mean_length)
            touched.append(slots)
            contributions.append(idf * (tfs * (self.k1 + 1) / (tfs + norm)))
        if not touched:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        # Summed term by term in query order either way, as rank-bm25 sums them: the same floats.
        slots = np.concatenate(touched)
        if len(slots) * 32 > self.slots:  # dense: one pass over every slot beats sorting this many postings
            total = np.bincount(slots, weights=np.concatenate(contributions), minlength=self.slots)
            positive = np.flatnonzero(total > 0)
            positive = positive[self.alive[positive]]
            return positive, total[positive]
        unique, where = np.unique(slots, return_inverse=True)
        total = np.zeros(len(unique))
        for term_where, contribution in zip(np.split(where, np.cumsum([len(t) for t in touched])[:-1]), contributions):
            total[term_where] += contribution  # slots are unique within one term, so += is exact
        keep = self.alive[unique] & (total > 0)
        return unique[keep], total[keep]

"""Terms and chunk ids found by their 128-bit BLAKE2b digest, held as two uint64 arrays (``hi``, ``lo``).

Sorting and searching uint64 arrays is what numpy does fastest, and 16 bytes a string are far smaller than a
dict of Python strings, so a million chunks open without building one. Two different strings would have to share
all 128 bits to be taken for one another (odds about 1e-26 among ten million strings); two that share only the
``hi`` half are told apart by ``lo``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import blake2b

import numpy as np


def digests(strings: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo): the two uint64 halves of each string's digest (of its UTF-8 bytes), in order."""
    raw = b"".join([blake2b(s.encode("utf-8"), digest_size=16).digest() for s in strings])
    pairs = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
    return pairs[:, 0].astype(np.uint64), pairs[:, 1].astype(np.uint64)


def key_order(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The permutation that sorts the keys by (hi, lo)."""
    order = np.argsort(hi)
    sorted_hi = hi[order]
    same_hi = sorted_hi[1:] == sorted_hi[:-1]
    if same_hi.any():
        sorted_lo = lo[order]
        if (same_hi & (sorted_lo[1:] != sorted_lo[:-1])).any():  # two keys share a half: sort on both
            order = np.lexsort((lo, hi))
    return order


def union(keys: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """The distinct keys of several key sets: (hi, lo) sorted, the number (int64) of each set's keys among them,
    and for each distinct key the place of one of its occurrences in the sets laid end to end."""
    hi = np.concatenate([h for h, _ in keys]) if keys else np.zeros(0, np.uint64)
    lo = np.concatenate([lo for _, lo in keys]) if keys else np.zeros(0, np.uint64)
    if len(keys) == 1:  # one set is already sorted and distinct
        return hi, lo, [np.arange(len(hi), dtype=np.int64)], np.arange(len(hi), dtype=np.int64)
    order = key_order(hi, lo)
    sorted_hi, sorted_lo = hi[order], lo[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (sorted_hi[1:] != sorted_hi[:-1]) | (sorted_lo[1:] != sorted_lo[:-1])
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.cumsum(first) - 1
    bounds = np.cumsum([len(h) for h, _ in keys])[:-1]
    return sorted_hi[first], sorted_lo[first], np.split(position, bounds), order[first]


def find(sorted_hi: np.ndarray, sorted_lo: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Where each key (hi, lo) sits among the sorted keys, -1 where it is absent (int64)."""
    n = len(sorted_hi)
    if n == 0 or len(hi) == 0:
        return np.full(len(hi), -1, dtype=np.int64)
    at = np.searchsorted(sorted_hi, hi)
    clipped = np.minimum(at, n - 1)
    same_hi = (at < n) & (sorted_hi[clipped] == hi)
    exact = same_hi & (sorted_lo[clipped] == lo)
    found = np.where(exact, at, -1)
    for i in np.flatnonzero(same_hi & ~exact):  # a run of keys sharing hi, sorted by lo
        end = int(np.searchsorted(sorted_hi, hi[i], side="right"))
        j = int(at[i]) + int(np.searchsorted(sorted_lo[at[i] : end], lo[i]))
        if j < end and sorted_lo[j] == lo[i]:
            found[i] = j
    return found

"""Conformance suite for VectorStore adapters: the checks every vecguard backend passes.

A contributor writes, in a pytest module of their own::

    import pytest
    from vecguard.testing import VectorStoreConformance

    class TestMyStore(VectorStoreConformance):
        plugin = "mystore"            # the entry point name the store is registered under

        @pytest.fixture
        def store_options(self, tmp_path):
            return {"path": str(tmp_path / "db")}   # options for an empty collection

pytest then runs every ``test_*`` below against the store, built through the
registry exactly as ``vecguard.open`` builds it. Class attributes tune it:
``persistent`` (reopen in a fresh process), ``exact`` (results must equal the
``memory`` reference within 1e-4; approximate stores must overlap >= 0.9).

A store that offers an optional capability adds its class, with the same
``plugin`` and ``store_options``: ``SharesCollectionConformance`` for
``SharesCollection`` (``across_processes = True`` where several processes may
open one collection: a database server).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .errors import CollectionBusyError, DimensionError, FilterError, InvalidArgumentError
from .filters import matches, validate
from .protocols import DeclaresExactSearch, SearchesWithPayloads, SharesCollection
from .registry import Registry

DIMENSION = 16
SCORE_TOLERANCE = 1e-4


def unit_vectors(n: int, dimension: int = DIMENSION, seed: int = 0) -> np.ndarray:
    """float32 (n, dimension), L2-normalised, reproducible."""
    vectors = np.random.default_rng(seed).normal(size=(n, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def metadata_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Metadata with ints, floats, strings, bools, a missing field every 7th row and a type clash every 11th."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "year": rng.choice([2019, 2020, 2021]),
            "court": rng.choice(["UK", "EU", "US"]),
            "public": rng.random() < 0.5,
            "score": rng.choice([0.1, 0.5, 0.9, 1]),
            "name": f"n{i % 5}",
            "odd key: a.b": rng.choice(["x", "y"]),
        }
        if i % 7 == 0:
            del row["court"]
        if i % 11 == 0:
            row["year"] = "2020"
        rows.append(row)
    return rows


def random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A random filter over ``metadata_rows`` fields using every operator, nesting and type mismatches."""
    values: dict[str, list[Any]] = {
        "year": [2019, 2020, 2021, 2020.0, 2020.5, "2020"],
        "court": ["UK", "EU", "US", 1],
        "public": [True, False, 0],
        "score": [0.1, 0.5, 0.9, 1, 1.5, "x"],
        "name": ["n1", "n3", "a", "z"],
        "missing": [1, "a"],
        "odd key: a.b": ["x", "y", 1],
    }
    if depth < 2 and rng.random() < 0.35:
        op = rng.choice(["$and", "$or", "$not"])
        if op == "$not":
            return {"$not": random_filter(rng, depth + 1)}
        return {op: [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    field = rng.choice(list(values))
    if rng.random() < 0.15:  # several operators on one field: a range
        numbers = [v for v in values[field] if isinstance(v, (int, float)) and not isinstance(v, bool)]
        low, high = sorted(rng.sample(numbers if len(numbers) >= 2 else [0, 2.5], k=2))
        return {field: {rng.choice(["$gt", "$gte"]): low, rng.choice(["$lt", "$lte"]): high}}
    op = rng.choice(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "bare"])
    if op == "bare":
        return {field: rng.choice(values[field])}
    if op in ("$in", "$nin"):
        return {field: {op: rng.sample(values[field], k=min(rng.randint(1, 3), len(values[field])))}}
    choices = [v for v in values[field] if not (op in ("$gt", "$gte", "$lt", "$lte") and isinstance(v, bool))]
    return {field: {op: rng.choice(choices)}}


def _fill(store: Any, n: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    ids = [f"p{i}" for i in range(n)]
    vectors = unit_vectors(n, seed=seed)
    payloads = [{"text": f"point {i}", "metadata": row} for i, row in enumerate(metadata_rows(n, seed))]
    store.upsert(ids, vectors, payloads)
    return ids, vectors, payloads


def _reference(ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> Any:
    from vecguard.backends.memory import MemoryStore

    reference = MemoryStore(None)
    reference.upsert(ids, vectors, payloads)
    return reference


class StoreUnderTest:
    """What every conformance class shares: the store, built from ``plugin`` and the ``store_options`` fixture."""

    plugin: str = ""

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        raise NotImplementedError("define a store_options fixture returning options for an empty collection")

    def build(self, options: dict[str, Any], base_dir: Path) -> Any:
        return Registry.discover().build("store", self.plugin, dict(options), base_dir)

    @pytest.fixture
    def store(self, store_options: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
        built = self.build(store_options, tmp_path)
        yield built
        built.close()


class VectorStoreConformance(StoreUnderTest):
    """Subclass with ``plugin`` set and a ``store_options`` fixture; see the module docstring."""

    persistent: bool = True
    exact: bool = True

    # ------------------------------------------------------------ basics

    def test_an_empty_store_holds_nothing(self, store: Any) -> None:
        assert store.count() == 0
        assert store.get(["p0"]) == {}
        assert store.search(unit_vectors(1)[0], 5) == []
        assert list(store.scan()) == []
        assert store.read_manifest() is None
        store.delete(["p0"])  # deleting from an empty store is no error

    def test_upsert_then_get_returns_vectors_and_payloads(self, store: Any) -> None:
        ids, vectors, payloads = _fill(store, 20)
        got = store.get(["p3", "p17", "absent"])
        assert set(got) == {"p3", "p17"}
        for key in ("p3", "p17"):
            vector, payload = got[key]
            assert vector.dtype == np.float32 and vector.shape == (DIMENSION,)
            np.testing.assert_allclose(vector, vectors[int(key[1:])], atol=1e-6)
            assert payload == payloads[int(key[1:])]
        assert store.count() == 20

    def test_upsert_of_an_existing_id_replaces_vector_and_payload(self, store: Any) -> None:
        _, vectors, _ = _fill(store, 20)
        replacement = -vectors[5]
        store.upsert(["p5"], replacement.reshape(1, -1), [{"text": "new", "metadata": {"year": 1999}}])
        assert store.count() == 20
        vector, payload = store.get(["p5"])["p5"]
        np.testing.assert_allclose(vector, replacement, atol=1e-6)
        assert payload == {"text": "new", "metadata": {"year": 1999}}
        assert store.search(replacement, 1)[0][0] == "p5"
        assert [key for key, _ in store.search(replacement, 20, {"year": 1999})] == ["p5"]

    def test_delete_removes_and_ignores_missing_ids(self, store: Any) -> None:
        _, vectors, _ = _fill(store, 20)
        store.delete(["p1", "p2", "never-stored"])
        assert store.count() == 18
        assert store.get(["p1", "p2"]) == {}
        assert {key for key, _ in store.search(vectors[1], 20)}.isdisjoint({"p1", "p2"})

    def test_the_exact_vector_comes_first_with_cosine_one(self, store: Any) -> None:
        _, vectors, _ = _fill(store, 50)
        for row in (0, 17, 49):
            hits = store.search(vectors[row], 5)
            assert hits[0][0] == f"p{row}"
            assert hits[0][1] == pytest.approx(1.0, abs=SCORE_TOLERANCE)
            scores = [score for _, score in hits]
            assert scores == sorted(scores, reverse=True)
            assert all(-1 - SCORE_TOLERANCE <= s <= 1 + SCORE_TOLERANCE for s in scores)

    def test_results_equal_the_memory_reference(self, store: Any) -> None:
        ids, vectors, payloads = _fill(store, 300)
        reference = _reference(ids, vectors, payloads)
        for query in unit_vectors(12, seed=99):
            expected = reference.search(query, 10)
            found = store.search(query, 10)
            if self.exact:
                assert [key for key, _ in found] == [key for key, _ in expected]
                np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=SCORE_TOLERANCE)
            else:
                assert len({k for k, _ in found} & {k for k, _ in expected}) >= 9

    def test_deletes_and_replacements_after_searching_keep_every_id_right(self, store: Any) -> None:
        ids, vectors, _ = _fill(store, 60, seed=6)
        store.search(vectors[0], 1)  # a store that builds its index lazily has built it now
        store.delete(["p3", "p4", "p30"])
        store.upsert(["p0"], -vectors[:1], [{"metadata": {"replaced": True}}])
        for row in (1, 5, 29, 31, 59):
            assert store.search(vectors[row], 1)[0][0] == f"p{row}", f"p{row} no longer finds itself after a delete"
        assert store.search(-vectors[0], 1)[0][0] == "p0"
        assert not {"p3", "p4", "p30"} & {key for key, _ in store.search(vectors[3], 10)}

    def test_search_with_payloads_equals_search_then_get(self, store: Any) -> None:
        if not isinstance(store, SearchesWithPayloads):
            pytest.skip("the store does not offer search_with_payloads (optional)")
        with_payloads = store.search_with_payloads
        ids, _, payloads = _fill(store, 120, seed=4)
        query = unit_vectors(1, seed=8)[0]
        for flt in (None, {"year": {"$gte": 2020}}):
            expected = store.search(query, 10, flt)
            found = with_payloads(query, 10, flt)
            assert [(key, score) for key, score, _ in found] == expected
            assert [payload for _, _, payload in found] == [payloads[int(key[1:])] for key, _ in expected]
        assert with_payloads(query, 5, {"year": {"$gt": 10**6}}) == []

    # ------------------------------------------------------------ filters

    def test_every_filter_operator_matches_the_reference(self, store: Any) -> None:
        ids, vectors, payloads = _fill(store, 120, seed=3)
        rng = random.Random(11)
        query = unit_vectors(1, seed=5)[0]
        for _ in range(120):
            flt = random_filter(rng)
            validate(flt)
            expected = {key for key, payload in zip(ids, payloads) if matches(flt, payload["metadata"])}
            found = {key for key, _ in store.search(query, len(ids), flt)}
            missing, extra = sorted(expected - found)[:5], sorted(found - expected)[:5]
            assert found == expected, f"filter {json.dumps(flt)}: missing {missing}, extra {extra}"

    @pytest.mark.parametrize(
        "bad",
        [
            {"year": {"$between": [1, 2]}},
            {"$xor": [{"a": 1}]},
            {"year": {"$in": 2020}},
            {"year": {"$gt": True}},
            ["year"],
            {"$or": []},
            {"year": {"$eq": {"nested": 1}}},
            {"year": {"$in": []}},
        ],
    )
    def test_a_malformed_filter_raises_filter_error(self, store: Any, bad: Any) -> None:
        _fill(store, 5)
        with pytest.raises(FilterError):
            store.search(unit_vectors(1)[0], 3, bad)

    def test_a_malformed_filter_is_refused_by_an_empty_store_too(self, store: Any) -> None:
        with pytest.raises(FilterError):  # validated before any "nothing stored" shortcut
            store.search(unit_vectors(1)[0], 3, {"year": {"$between": [1, 2]}})

    # ------------------------------------------------------------ bulk, scan, manifest

    def test_scan_returns_every_point_exactly_once(self, store: Any) -> None:
        _, vectors, payloads = _fill(store, 257)
        seen: list[str] = []
        for keys, batch, batch_payloads in store.scan(batch_size=100):
            assert len(keys) == len(batch) == len(batch_payloads) <= 100
            for key, vector, payload in zip(keys, batch, batch_payloads):
                np.testing.assert_allclose(vector, vectors[int(key[1:])], atol=1e-6)
                assert payload == payloads[int(key[1:])]
            seen += keys
        assert sorted(seen) == sorted(f"p{i}" for i in range(257))

    def test_scan_order_is_the_same_every_time_whatever_the_batch_size(self, store: Any) -> None:
        _fill(store, 157)
        orders = [[key for keys, _, _ in store.scan(batch_size=size) for key in keys] for size in (50, 50, 7, 1000)]
        assert all(order == orders[0] for order in orders), "a resumed migration skips copied points by scan position"

    def test_exact_search_is_declared_truthfully(self, store: Any) -> None:
        declared = store.exact_search if isinstance(store, DeclaresExactSearch) else False
        assert isinstance(declared, bool)
        if declared:
            assert self.exact, "a store that says exact_search = True must pass the suite with exact = True"

    def test_large_batches_are_split_for_the_caller(self, store: Any) -> None:
        n = 6000  # above Chroma's max batch size (5461) and any sane request size
        vectors = unit_vectors(n, seed=8)
        store.upsert([f"b{i}" for i in range(n)], vectors, [{"metadata": {"i": i}} for i in range(n)])
        assert store.count() == n
        assert store.search(vectors[5999], 1)[0][0] == "b5999"
        store.delete([f"b{i}" for i in range(0, n, 2)])
        assert store.count() == n // 2

    def test_unicode_and_very_long_payloads_round_trip(self, store: Any) -> None:
        text = ("Grüße aus Köln — 東京 ✓ 🙂 " * 5000)[:100_000]
        payload = {"text": text, "nested": {"list": [1, "zwei", None]}, "metadata": {"ort": "Köln ✓", "n": 1}}
        store.upsert(["ü-1 #🙂"], unit_vectors(1), [payload])
        assert store.get(["ü-1 #🙂"])["ü-1 #🙂"][1] == payload
        assert [key for key, _ in store.search(unit_vectors(1)[0], 1, {"ort": "Köln ✓"})] == ["ü-1 #🙂"]

    def test_manifest_write_read_round_trip(self, store: Any) -> None:
        manifest = {
            "schema_version": 1,
            "id": "abc123",
            "encoder": {"name": "m", "dimension": DIMENSION, "settings": {"a": [1, 2]}},
            "probe": {"vectors": unit_vectors(18, dimension=384).round(7).tolist()},
            "note": "ünïcødé",
        }
        store.write_manifest(manifest)
        assert store.read_manifest() == manifest
        _fill(store, 3)
        manifest["counts"] = {"documents": 3}
        store.write_manifest(manifest)
        assert store.read_manifest() == manifest

    def test_bad_writes_are_refused_and_lose_nothing(self, store: Any) -> None:
        _fill(store, 10)
        with pytest.raises(DimensionError):
            store.upsert(["x"], unit_vectors(1, dimension=DIMENSION + 1), [{}])
        with pytest.raises(DimensionError):
            store.search(unit_vectors(1, dimension=DIMENSION + 1)[0], 3)
        with pytest.raises(InvalidArgumentError):
            store.upsert(["x"], np.full((1, DIMENSION), np.nan, dtype=np.float32), [{}])
        with pytest.raises(InvalidArgumentError):
            store.upsert(["x", "y"], unit_vectors(1), [{}, {}])
        with pytest.raises(InvalidArgumentError):
            store.upsert(["x", "x"], unit_vectors(2), [{}, {}])
        for bad_id in ("", 5):
            with pytest.raises(InvalidArgumentError):
                store.upsert([bad_id], unit_vectors(1), [{}])
        assert store.count() == 10

    @pytest.mark.parametrize("k", [0, -1, True, 2.0, "3"])
    def test_a_k_that_is_not_a_count_is_refused(self, store: Any, k: Any) -> None:
        _fill(store, 5)
        with pytest.raises(InvalidArgumentError):  # the caller's mistake, not the store's: not a StorageError
            store.search(unit_vectors(1)[0], k)

    # ------------------------------------------------------------ persistence

    def test_persistence_across_a_reopen_in_a_fresh_process(
        self, store_options: dict[str, Any], tmp_path: Path
    ) -> None:
        if not self.persistent:
            pytest.skip(f"{type(self).__name__} keeps nothing across processes (persistent = False)")
        store = self.build(store_options, tmp_path)
        store.write_manifest({"schema_version": 1, "id": "persisted"})  # before any point, as the engine does
        ids, vectors, payloads = _fill(store, 40)
        store.delete(["p7"])
        store.close()
        code = textwrap.dedent("""
            import json, sys
            from pathlib import Path
            from vecguard import Registry
            plugin, options, base = json.loads(sys.argv[1])
            store = Registry.discover().build("store", plugin, options, Path(base))
            batches = store.scan(batch_size=16)
            everything = {k: [v.tolist(), p] for ids, vs, ps in batches for k, v, p in zip(ids, vs, ps)}
            print(json.dumps({"count": store.count(), "manifest": store.read_manifest(), "points": everything,
                              "top": store.search(json.loads(sys.argv[2]), 1)}))
            store.close()
        """)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                json.dumps([self.plugin, store_options, str(tmp_path)]),
                json.dumps(vectors[3].tolist()),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        reopened = json.loads(result.stdout.strip().splitlines()[-1])
        assert reopened["count"] == 39
        assert reopened["manifest"] == {"schema_version": 1, "id": "persisted"}
        assert reopened["top"][0][0] == "p3"
        assert set(reopened["points"]) == set(ids) - {"p7"}
        for key, (vector, payload) in reopened["points"].items():
            np.testing.assert_allclose(vector, vectors[int(key[1:])], atol=1e-6)
            assert payload == payloads[int(key[1:])]


def _in_threads(work: Callable[[int], None], threads: int) -> None:
    """Run ``work(i)`` in ``threads`` threads; re-raise the first failure here (an assert in a thread only warns)."""
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's own thread
            failures.append(exc)

    started = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=120)
    if failures:
        raise failures[0]


_CHILD = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import numpy as np
    from vecguard import Registry
    plugin, options, base, action = json.loads(sys.argv[1])
    store = Registry.discover().build("store", plugin, options, Path(base))
    if action == "hold":
        with store.lock_writes(60, f"the child process {os.getpid()}"):
            print("held", flush=True)
            sys.stdin.readline()
    else:
        vectors = np.eye(4, 16, dtype=np.float32)
        store.upsert(["a", "b", "c"], vectors[:3], [{"text": "a"}, {"text": "b"}, {"text": "c"}])
        store.delete(["a"])
        store.write_manifest({"schema_version": 1, "id": "from the child"})
        print(json.dumps(store.change_token()), flush=True)
    store.close()
""")


class SharesCollectionConformance(StoreUnderTest):
    """The checks every ``SharesCollection`` store passes: one holder of the write lock at a time, a busy error that
    names the holder, a change token that moves with every committed change and the changed ids listed.

    ``across_processes = True``: another process opens the same collection while this one has it (a database
    server); the lock and the feed are then checked across the two processes too.
    """

    across_processes: bool = False

    def _child(self, store_options: dict[str, Any], base: Path, action: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps([self.plugin, store_options, str(base), action])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def test_the_store_declares_the_capability(self, store: Any) -> None:
        assert isinstance(store, SharesCollection)

    def test_lock_writes_lets_one_holder_in_at_a_time(self, store: Any) -> None:
        inside: list[int] = []
        overlaps: list[tuple[int, ...]] = []

        def writer(i: int) -> None:
            for _ in range(4):
                with store.lock_writes(60, f"thread {i}"):
                    inside.append(i)
                    if len(inside) > 1:
                        overlaps.append(tuple(inside))
                    time.sleep(0.02)
                    inside.remove(i)

        _in_threads(writer, 3)
        assert not overlaps, f"holders of the write lock at the same time: {overlaps}"

    def test_a_waiter_past_its_timeout_gets_a_busy_error_naming_the_holder(self, store: Any) -> None:
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with store.lock_writes(10, "the first holder (pid 1 on host h)"):
                held.set()
                release.wait(60)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(60)
            started = time.monotonic()
            with pytest.raises(CollectionBusyError) as raised:
                with store.lock_writes(0.3, "the second"):
                    pass
            waited = time.monotonic() - started
        finally:
            release.set()
            holder.join(60)
        assert "the first holder (pid 1 on host h)" in str(raised.value)
        assert raised.value.holder == "the first holder (pid 1 on host h)"
        assert 0.3 <= waited < 10, f"a 0.3 s timeout waited {waited:.2f} s"
        with store.lock_writes(10, "the third"):  # released once the first holder left
            pass

    def test_the_lock_is_free_again_after_a_block_that_raised(self, store: Any) -> None:
        with pytest.raises(KeyError):
            with store.lock_writes(10, "a failing writer"):
                raise KeyError("the block failed")
        with store.lock_writes(1, "the next writer"):
            pass

    def test_every_committed_change_moves_the_token_and_lists_its_ids(self, store: Any) -> None:
        start = store.change_token()
        ids, _, _ = _fill(store, 5)
        after_upsert = store.change_token()
        assert after_upsert > start
        assert sorted(store.changes_since(start)) == ids
        store.delete(["p1", "never-stored"])
        after_delete = store.change_token()
        assert after_delete > after_upsert
        assert set(store.changes_since(after_upsert)) - {"never-stored"} == {"p1"}
        store.write_manifest({"schema_version": 1, "id": "shared"})
        after_manifest = store.change_token()
        assert after_manifest > after_delete
        assert store.changes_since(after_delete) == []
        assert set(store.changes_since(start)) - {"never-stored"} == set(ids)
        assert store.changes_since(after_manifest) == []

    def test_the_changes_made_under_one_hold_are_listed_once_it_ends(self, store: Any) -> None:
        ids, _, _ = _fill(store, 4)
        start = store.change_token()
        with store.lock_writes(10, "a batch"):
            store.upsert(["q0"], unit_vectors(1, seed=3), [{"text": "q0"}])
            store.delete(["p2"])
            store.write_manifest({"schema_version": 1, "id": "batch"})
        assert store.change_token() > start
        assert set(store.changes_since(start)) == {"q0", "p2"}

    def test_changes_since_a_token_the_store_never_gave_is_none(self, store: Any) -> None:
        _fill(store, 3)
        # A token ahead of the store: its collection was deleted and made again. The caller must reread everything.
        assert store.changes_since(store.change_token() + 1000) is None

    def test_the_stores_own_records_are_never_points(self, store: Any) -> None:
        with store.lock_writes(10, "a writer"):
            ids, _, _ = _fill(store, 30)
            extra = ["lock", "head", "change-1-x-0"]  # names a store might give its own records
            store.upsert(extra, unit_vectors(3, seed=1), [{"text": key} for key in extra])
            store.write_manifest({"schema_version": 1, "id": "shared"})
        stored = set(ids) | set(extra)
        assert store.count() == len(stored)
        assert {key for keys, _, _ in store.scan() for key in keys} == stored
        assert {key for key, _ in store.search(unit_vectors(1, seed=2)[0], 100)} <= stored
        assert set(store.get(extra)) == set(extra)

    def test_a_holder_in_another_process_keeps_this_one_out(
        self, store: Any, store_options: dict[str, Any], tmp_path: Path
    ) -> None:
        if not self.across_processes:
            pytest.skip(f"{type(self).__name__}: one process opens the collection (across_processes = False)")
        child = self._child(store_options, tmp_path, "hold")
        try:
            line = child.stdout.readline()
            assert line.strip() == "held", child.stderr.read()[-3000:]
            with pytest.raises(CollectionBusyError, match=f"the child process {child.pid}"):
                with store.lock_writes(0.5, "the parent"):
                    pass
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(60) == 0, child.stderr.read()[-3000:]
        finally:
            if child.poll() is None:
                child.kill()
        with store.lock_writes(10, "the parent"):
            pass

    def test_a_change_in_another_process_moves_the_token_here(
        self, store: Any, store_options: dict[str, Any], tmp_path: Path
    ) -> None:
        if not self.across_processes:
            pytest.skip(f"{type(self).__name__}: one process opens the collection (across_processes = False)")
        start = store.change_token()  # opened before the collection exists: the child creates it
        child = self._child(store_options, tmp_path, "write")
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-3000:]
        token = store.change_token()
        assert token == json.loads(out.strip().splitlines()[-1]) and token > start
        assert set(store.changes_since(start)) == {"a", "b", "c"}
        assert set(store.get(["a", "b", "c"])) == {"b", "c"}
        assert store.read_manifest() == {"schema_version": 1, "id": "from the child"}

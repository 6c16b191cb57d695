"""The portable filter language: reference semantics, validation, and every store agreeing with it."""

from __future__ import annotations

import random

import numpy as np
import pytest
from vecguard import FilterError
from vecguard.backends.faiss import FaissStore
from vecguard.backends.memory import MemoryStore
from vecguard.filters import matches, validate

ROW = {"year": 2021, "court": "UK", "public": True, "score": 0.5}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"year": 2021}, True),
        ({"year": {"$eq": 2021.0}}, True),
        ({"year": {"$ne": 2021}}, False),
        ({"year": {"$gt": 2020, "$lte": 2021}}, True),
        ({"year": {"$lt": 2021}}, False),
        ({"court": {"$in": ["UK", "EU"]}}, True),
        ({"court": {"$nin": ["UK", "EU"]}}, False),
        ({"court": "UK", "year": 2020}, False),
        ({"$or": [{"year": 2020}, {"court": "UK"}]}, True),
        ({"$and": [{"year": 2021}, {"$not": {"court": "UK"}}]}, False),
        ({"$not": {"$or": [{"year": 1999}, {"public": False}]}}, True),
        ({"missing": {"$eq": 1}}, False),
        ({"missing": {"$ne": 1}}, True),
        ({"missing": {"$nin": [1]}}, True),
        ({"missing": {"$in": [1]}}, False),
        ({"missing": {"$gt": 1}}, False),
        ({"year": {"$gt": "2000"}}, False),  # string vs number: no order across types
        ({"year": {"$ne": "2021"}}, True),
        ({"public": 1}, False),  # bool is not a number
        ({"public": {"$in": [True]}}, True),
        ({"score": {"$gte": 0.5}}, True),
    ],
)
def test_reference_semantics(flt: dict, expected: bool) -> None:
    validate(flt)
    assert matches(flt, ROW) is expected


@pytest.mark.parametrize(
    ("flt", "named"),
    [
        ([{"year": 1}], "must be an object"),
        ({"year": {"$between": [1, 2]}}, r"\$between"),
        ({"$xor": [{"a": 1}]}, r"\$xor"),
        ({"$and": {"a": 1}}, r"filter.\$and"),
        ({"$or": []}, r"\$or"),
        ({"year": {"$in": 2021}}, r"filter.year.\$in"),
        ({"year": {"$nin": []}}, r"filter.year.\$nin takes a non-empty list"),
        ({"year": {"$gt": [1]}}, r"filter.year.\$gt"),
        ({"year": {"$gt": True}}, "bool"),
        ({"year": {}}, "empty"),
        ({"year": {"$eq": {"nested": 1}}}, r"filter.year.\$eq"),
        ({"$and": [{"a": {"$in": [None]}}]}, r"\$and\[0\].a.\$in\[0\]"),
        ({"x": float("nan")}, "NaN"),
    ],
)
def test_a_malformed_filter_raises_filter_error_naming_the_part(flt, named: str) -> None:
    with pytest.raises(FilterError, match=named):
        validate(flt)


@pytest.mark.parametrize(
    ("flt", "path"),
    [
        ([{"year": 1}], ()),
        ({"year": {"$between": [1, 2]}}, ("year",)),  # an unknown operator is placed at the field that holds it
        ({"$xor": [{"a": 1}]}, ("$xor",)),
        ({"$or": []}, ("$or",)),
        ({"year": {"$gt": True}}, ("year", "$gt")),
        ({"$and": [{"a": {"$in": [None]}}]}, ("$and", 0, "a", "$in", 0)),
        ({"$not": {"$or": [{"x": 1}, {"y": {"$nin": [float("nan")]}}]}}, ("$not", "$or", 1, "y", "$nin", 0)),
        ({"year": {"$nin": list(range(10_001))}}, ("year", "$nin")),
    ],
)
def test_a_filter_error_carries_the_part_it_names_as_keys_and_positions(flt, path: tuple) -> None:
    with pytest.raises(FilterError) as raised:
        validate(flt)
    assert raised.value.path == path


def _random_filter(rng: random.Random, depth: int = 0) -> dict:
    fields = ["year", "court", "public", "score", "missing"]
    values = {
        "year": [2019, 2020, 2021, 2020.0, "2020"],
        "court": ["UK", "EU", "US", 1],
        "public": [True, False, 0],
        "score": [0.1, 0.5, 0.9, "x"],
        "missing": [1, "a"],
    }
    if depth < 2 and rng.random() < 0.3:
        op = rng.choice(["$and", "$or", "$not"])
        if op == "$not":
            return {"$not": _random_filter(rng, depth + 1)}
        return {op: [_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    field = rng.choice(fields)
    op = rng.choice(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"])
    if op in ("$in", "$nin"):
        return {field: {op: rng.sample(values[field], k=min(2, len(values[field])))}}
    value = rng.choice([v for v in values[field] if not (op in ("$gt", "$gte", "$lt", "$lte") and isinstance(v, bool))])
    return {field: {op: value}}


def test_memory_and_faiss_filters_match_the_reference_on_random_filters() -> None:
    rng = random.Random(7)
    n, dim = 120, 8
    vectors = np.random.default_rng(7).normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = []
    for i in range(n):
        row = {
            "year": rng.choice([2019, 2020, 2021]),
            "court": rng.choice(["UK", "EU", "US"]),
            "public": rng.random() < 0.5,
            "score": rng.choice([0.1, 0.5, 0.9]),
        }
        if i % 7 == 0:
            del row["court"]
        rows.append(row)
    ids = [f"p{i}" for i in range(n)]
    payloads = [{"metadata": row} for row in rows]
    stores = [MemoryStore(None), FaissStore(None)]
    for store in stores:
        store.upsert(ids, vectors, payloads)
    for _ in range(150):
        flt = _random_filter(rng)
        validate(flt)
        expected = {ids[i] for i in range(n) if matches(flt, rows[i])}
        for store in stores:
            found = {key for key, _ in store.search(vectors[0], n, flt)}
            assert found == expected, (type(store).__name__, flt)


def test_the_compiled_predicate_equals_the_reference_on_random_filters() -> None:
    from vecguard.filters import compile
    from vecguard.testing import metadata_rows, random_filter

    rng = random.Random(11)
    rows = metadata_rows(200, seed=3) + [{}, {"year": True}, {"court": 1.0}, {"score": -0.0}]
    for _ in range(400):
        flt = random_filter(rng)
        validate(flt)
        predicate = compile(flt)
        assert [predicate(row) for row in rows] == [matches(flt, row) for row in rows], flt


def _nested(depth: int) -> dict:
    flt: dict = {"year": 2021}
    for _ in range(depth - 1):
        flt = {"$not": flt}
    return flt


def test_a_filter_may_nest_32_levels_and_no_deeper() -> None:
    validate(_nested(32))
    with pytest.raises(FilterError, match="deeper than 32 levels"):
        validate(_nested(33))
    with pytest.raises(FilterError, match="deeper than 32 levels"):
        validate(_nested(5000))  # refused before Python's own recursion limit is reached


def test_a_filter_may_hold_10000_values_and_no_more() -> None:
    validate({"court": {"$nin": [f"c{i}" for i in range(10_000)]}})
    with pytest.raises(FilterError, match=r"filter.court.\$nin: the filter holds more than 10000 values"):
        validate({"court": {"$nin": [f"c{i}" for i in range(10_001)]}})
    with pytest.raises(FilterError, match="more than 10000 values"):
        validate({"$or": [{"court": {"$in": [f"c{i}" for i in range(5_000)]}}] * 3})


def test_a_long_in_list_costs_one_lookup_a_point() -> None:
    from vecguard.filters import compile

    flt = {"court": {"$nin": [f"c{i}" for i in range(10_000)]}}
    validate(flt)
    predicate = compile(flt)
    rows = [{"court": f"c{i}"} for i in range(9_990, 10_010)]
    assert [predicate(row) for row in rows] == [matches(flt, row) for row in rows] == [False] * 10 + [True] * 10


@pytest.mark.parametrize("flt", [{"court": "UK\ud800"}, {"court": {"$in": ["UK", "\udcff"]}}, {"a\ud800": 1}])
def test_a_string_that_is_not_valid_unicode_is_a_filter_error(flt: dict) -> None:
    with pytest.raises(FilterError, match="not valid Unicode"):
        validate(flt)

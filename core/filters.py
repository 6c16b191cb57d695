"""The portable filter language: Mongo-style dicts over flat metadata.

    {"year": {"$gte": 2020}, "court": {"$in": ["UK", "EU"]}}

Field operators: ``$eq $ne $gt $gte $lt $lte $in $nin``; a bare value means
``$eq``. Logical operators: ``$and`` and ``$or`` (lists of filters) and
``$not`` (one filter). Several keys in one dict are combined with AND.

Semantics every backend must match (``matches`` is the reference):
- A missing field satisfies only ``$ne`` and ``$nin``.
- Values compare only within a type family: numbers with numbers (bool is not
  a number), strings with strings, bools with bools. A comparison across
  families is simply false (``$ne`` / ``$nin``: true).

Limits, so one request cannot cost unbounded CPU or recursion: at most
``MAX_DEPTH`` (32) levels of nesting and ``MAX_VALUES`` (10,000) values in one
filter, ``$in``/``$nin`` lists included. ``compile`` turns a validated filter
into a predicate for testing many points (``$in`` by set lookup); ``matches``
is the plain reading of the semantics that the predicate is tested against.
A backend's translator raises ``Untranslatable`` for a valid filter its own
query language cannot express exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import FilterError
from .protocols import unicode_problem

FIELD_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
LOGICAL_OPERATORS = ("$and", "$or", "$not")
_ORDERED = ("$gt", "$gte", "$lt", "$lte")
MAX_DEPTH = 32
MAX_VALUES = 10_000
# Where in a filter, as keys and list positions from its root: what FilterError.path holds.
FilterPath = tuple[str | int, ...]


class Untranslatable(Exception):
    """A valid filter has no exact equivalent in a backend's query language.

    Raised by a backend's filter translator (Chroma ``where``, Qdrant ``Filter``); the store then evaluates the filter
    by the reference semantics (``BaseVectorStore.matching_ids``) and passes the matching ids instead. Never reaches
    a caller.
    """


class _Budget:
    """What validation has counted so far: values seen, against MAX_VALUES."""

    def __init__(self) -> None:
        self.values = 0

    def take(self, count: int, name: str, path: FilterPath) -> None:
        self.values += count
        if self.values > MAX_VALUES:
            raise FilterError(
                f"{name}: the filter holds more than {MAX_VALUES} values; split the request, or filter on a field "
                f"that groups these points",
                path=path,
            )


def validate(filter: Any, path: str = "filter") -> None:
    """Raise FilterError naming the first malformed part of ``filter``.

    ``path`` is how messages name the filter's root. The error's ``path`` attribute holds the same place as keys
    and list positions from the root (``("$and", 0, "year")``), as far as they are well-formed: a bad key or an
    unknown field operator is placed at the object that holds it.
    """
    _validate(filter, path, (), 1, _Budget())


def _validate(filter: Any, name: str, path: FilterPath, depth: int, budget: _Budget) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(f"{name}: the filter nests deeper than {MAX_DEPTH} levels; flatten it", path=path)
    if not isinstance(filter, Mapping):
        raise FilterError(
            f'{name} must be an object like {{"year": {{"$gte": 2020}}}}, got {type(filter).__name__}', path=path
        )
    for key, value in filter.items():
        key_name, key_path = f"{name}.{key}", (*path, key)
        if not isinstance(key, str) or not key:
            raise FilterError(
                f"{name} has a key {key!r:.60}; keys must be non-empty field names or operators", path=path
            )
        if problem := unicode_problem(key):
            raise FilterError(f"{name} key {problem}", path=path)
        if key.startswith("$"):
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise FilterError(f"{key_name} takes a non-empty list of filters, got {value!r:.60}", path=key_path)
                budget.take(len(value), key_name, key_path)
                for i, sub in enumerate(value):
                    _validate(sub, f"{key_name}[{i}]", (*key_path, i), depth + 1, budget)
            elif key == "$not":
                _validate(value, key_name, key_path, depth + 1, budget)
            else:
                raise FilterError(
                    f"{key_name}: unknown logical operator {key!r}; use one of {', '.join(LOGICAL_OPERATORS)} "
                    f"at the top level, or put field operators under a field name",
                    path=key_path,
                )
        else:
            _validate_condition(value, key_name, key_path, budget)


def _validate_condition(condition: Any, name: str, path: FilterPath, budget: _Budget) -> None:
    if not isinstance(condition, Mapping):
        budget.take(1, name, path)
        _validate_scalar(condition, name, path)
        return
    if not condition:
        raise FilterError(f'{name} is an empty object; give a value or an operator like {{"$eq": ...}}', path=path)
    for op, operand in condition.items():
        if op not in FIELD_OPERATORS:
            raise FilterError(
                f"{name}: unknown operator {op!r}; field operators are {', '.join(FIELD_OPERATORS)}", path=path
            )
        op_name, op_path = f"{name}.{op}", (*path, op)
        if op in ("$in", "$nin"):
            if not isinstance(operand, list) or not operand:
                raise FilterError(f"{op_name} takes a non-empty list of values, got {operand!r:.60}", path=op_path)
            budget.take(len(operand), op_name, op_path)
            for i, item in enumerate(operand):
                _validate_scalar(item, f"{op_name}[{i}]", (*op_path, i))
        else:
            budget.take(1, name, path)
            _validate_scalar(operand, op_name, op_path)
            if op in _ORDERED and isinstance(operand, bool):
                raise FilterError(f"{op_name} compares order; give a number or a string, not a bool", path=op_path)


def _validate_scalar(value: Any, name: str, path: FilterPath) -> None:
    if isinstance(value, float) and value != value:
        raise FilterError(f"{name}: NaN never equals anything; remove it", path=path)
    if not isinstance(value, (str, int, float, bool)):
        raise FilterError(
            f"{name} must be a string, number or bool, got {type(value).__name__} {value!r:.60}", path=path
        )
    if isinstance(value, str) and (problem := unicode_problem(value)):
        raise FilterError(f"{name} {problem}", path=path)


def _family(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def _same_family(a: Any, b: Any) -> bool:
    return _family(a) == _family(b)


def _test(op: str, value: Any, operand: Any, present: bool) -> bool:
    if op == "$ne":
        return not (present and _same_family(value, operand) and value == operand)
    if op == "$nin":
        return not (present and any(_same_family(value, o) and value == o for o in operand))
    if not present:
        return False
    if op == "$eq":
        return _same_family(value, operand) and value == operand
    if op == "$in":
        return any(_same_family(value, o) and value == o for o in operand)
    if not _same_family(value, operand):
        return False
    if op == "$gt":
        return value > operand
    if op == "$gte":
        return value >= operand
    if op == "$lt":
        return value < operand
    return value <= operand  # $lte


def matches(filter: Mapping[str, Any] | None, metadata: Mapping[str, Any]) -> bool:
    """The reference semantics: does ``metadata`` satisfy a validated ``filter``?"""
    if not filter:
        return True
    for key, condition in filter.items():
        if key == "$and":
            if not all(matches(sub, metadata) for sub in condition):
                return False
        elif key == "$or":
            if not any(matches(sub, metadata) for sub in condition):
                return False
        elif key == "$not":
            if matches(condition, metadata):
                return False
        else:
            present = key in metadata
            value = metadata.get(key)
            ops = condition.items() if isinstance(condition, Mapping) else (("$eq", condition),)
            if not all(_test(op, value, operand, present) for op, operand in ops):
                return False
    return True


Predicate = Callable[[Mapping[str, Any]], bool]


def compile(filter: Mapping[str, Any] | None) -> Predicate:  # noqa: A001
    """A predicate equal to ``matches(filter, metadata)`` for a validated ``filter``, built once for many points:
    an ``$in`` or ``$nin`` list becomes a set per type family, so a long list costs one lookup a point."""
    if not filter:
        return lambda metadata: True
    tests = [_compile_entry(key, condition) for key, condition in filter.items()]
    if len(tests) == 1:
        return tests[0]
    return lambda metadata: all(test(metadata) for test in tests)


def _compile_entry(key: str, condition: Any) -> Predicate:
    if key == "$and":
        parts = [compile(sub) for sub in condition]
        return lambda metadata: all(part(metadata) for part in parts)
    if key == "$or":
        parts = [compile(sub) for sub in condition]
        return lambda metadata: any(part(metadata) for part in parts)
    if key == "$not":
        inner = compile(condition)
        return lambda metadata: not inner(metadata)
    ops = condition.items() if isinstance(condition, Mapping) else (("$eq", condition),)
    tests = [_compile_test(op, operand) for op, operand in ops]
    missing = object()

    def test(metadata: Mapping[str, Any]) -> bool:
        value = metadata.get(key, missing)
        return all(t(value, value is not missing) for t in tests)

    return test


def _compile_test(op: str, operand: Any) -> Callable[[Any, bool], bool]:
    if op in ("$in", "$nin"):
        by_family: dict[str, set[Any]] = {}
        for item in operand:
            by_family.setdefault(_family(item), set()).add(item)
        empty: set[Any] = set()

        def found(value: Any, present: bool) -> bool:
            return present and value in by_family.get(_family(value), empty)

        if op == "$in":
            return found
        return lambda value, present: not found(value, present)
    return lambda value, present: _test(op, value, operand, present)

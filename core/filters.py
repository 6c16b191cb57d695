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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import FilterError

FIELD_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
LOGICAL_OPERATORS = ("$and", "$or", "$not")
_ORDERED = ("$gt", "$gte", "$lt", "$lte")


def validate(filter: Any, path: str = "filter") -> None:
    """Raise FilterError naming the first malformed part of ``filter``."""
    if not isinstance(filter, Mapping):
        raise FilterError(f"{path} must be an object like {{\"year\": {{\"$gte\": 2020}}}}, got {type(filter).__name__}")
    for key, value in filter.items():
        where = f"{path}.{key}"
        if not isinstance(key, str) or not key:
            raise FilterError(f"{path} has a key {key!r}; keys must be non-empty field names or operators")
        if key.startswith("$"):
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise FilterError(f"{where} takes a non-empty list of filters, got {value!r}")
                for i, sub in enumerate(value):
                    validate(sub, f"{where}[{i}]")
            elif key == "$not":
                validate(value, where)
            else:
                raise FilterError(
                    f"{where}: unknown logical operator {key!r}; use one of {', '.join(LOGICAL_OPERATORS)} "
                    f"at the top level, or put field operators under a field name"
                )
        else:
            _validate_condition(value, where)


def _validate_condition(condition: Any, where: str) -> None:
    if not isinstance(condition, Mapping):
        _validate_scalar(condition, where)
        return
    if not condition:
        raise FilterError(f"{where} is an empty object; give a value or an operator like {{\"$eq\": ...}}")
    for op, operand in condition.items():
        if op not in FIELD_OPERATORS:
            raise FilterError(f"{where}: unknown operator {op!r}; field operators are {', '.join(FIELD_OPERATORS)}")
        if op in ("$in", "$nin"):
            if not isinstance(operand, list) or not operand:
                raise FilterError(f"{where}.{op} takes a non-empty list of values, got {operand!r}")
            for i, item in enumerate(operand):
                _validate_scalar(item, f"{where}.{op}[{i}]")
        elif op in _ORDERED:
            _validate_scalar(operand, f"{where}.{op}")
            if isinstance(operand, bool):
                raise FilterError(f"{where}.{op} compares order; give a number or a string, not a bool")
        else:
            _validate_scalar(operand, f"{where}.{op}")


def _validate_scalar(value: Any, where: str) -> None:
    if isinstance(value, float) and value != value:
        raise FilterError(f"{where}: NaN never equals anything; remove it")
    if not isinstance(value, (str, int, float, bool)):
        raise FilterError(f"{where} must be a string, number or bool, got {type(value).__name__} {value!r}")


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

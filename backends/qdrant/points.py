"""What every Qdrant store of vecguard writes the same way, so a collection moves between them unchanged: point
ids, the payload layout and the filter translation.

Point ids are UUIDv5 of vecguard's string ids (Qdrant accepts only unsigned ints and UUIDs); the original id is
kept in the payload under ``vecguard_id``. Every portable filter has an exact Qdrant ``Filter``: numbers compare
through a range (so 2 equals 2.0), strings and bools through ``MatchValue``/``MatchAny``, and ``$not`` through
``must_not``; string order, which Qdrant lacks, raises Untranslatable and is evaluated by vecguard.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from vecguard.filters import Untranslatable

ID_NAMESPACE = uuid.UUID("6f1c9a52-7d0b-5c8e-9a3e-2b1f4d6c8e10")
ID_KEY = "vecguard_id"
INDEX_TYPES = ("keyword", "integer", "float", "bool")
PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def point_id(key: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, key))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_qdrant_filter(flt: Mapping[str, Any], models: Any) -> Any:
    """Translate a validated portable filter into an equivalent ``models.Filter`` (or raise Untranslatable).

    ``models`` is qdrant-client's ``models`` or ``EDGE_MODELS``: the same classes under the same names."""
    must: list[Any] = []
    for key, value in flt.items():
        if key == "$and":
            must.append(models.Filter(must=[to_qdrant_filter(sub, models) for sub in value]))
        elif key == "$or":
            must.append(models.Filter(should=[to_qdrant_filter(sub, models) for sub in value]))
        elif key == "$not":
            must.append(models.Filter(must_not=[to_qdrant_filter(value, models)]))
        else:
            if not PLAIN_KEY.fullmatch(key):
                raise Untranslatable  # Qdrant would parse dots, brackets, spaces or quotes as a path
            ops = value.items() if isinstance(value, Mapping) else (("$eq", value),)
            must.extend(_condition(f"metadata.{key}", op, operand, models) for op, operand in ops)
    return models.Filter(must=must)


def _equals(key: str, value: Any, models: Any) -> Any:
    if _is_number(value):
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _condition(key: str, op: str, operand: Any, models: Any) -> Any:
    if op == "$eq":
        return _equals(key, operand, models)
    if op == "$ne":
        return models.Filter(must_not=[_equals(key, operand, models)])
    if op in ("$in", "$nin"):
        strings = [v for v in operand if isinstance(v, str)]
        others = [_equals(key, v, models) for v in operand if not isinstance(v, str)]
        if strings:
            others.append(models.FieldCondition(key=key, match=models.MatchAny(any=strings)))
        any_of = models.Filter(should=others)
        return any_of if op == "$in" else models.Filter(must_not=[any_of])
    if not _is_number(operand):
        raise Untranslatable  # Qdrant ranges are numeric
    bound = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}[op]
    return models.FieldCondition(key=key, range=models.Range(**{bound: operand}))

"""Metadata filters compiled to SQL with bound parameters only.

A filter is a dict ``{key: value | {"$op": value, ...}}``; several keys are ANDed, and
``{"$and": [f, ...]}`` / ``{"$or": [f, ...]}`` combine filters.  Operators: ``$eq``, ``$ne``,
``$in``, ``$nin``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$exists``.

Keys and values always travel as query parameters (``metadata -> %s``, jsonb containment),
never as SQL text, so no key or value can change the statement.  Anything not understood
raises ``ValueError`` naming the offending operator or key.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", *COMPARISONS})
MAX_DEPTH = 8


def compile_filter(
    flt: dict[str, Any] | None, column: str = "metadata"
) -> tuple[sql.Composable, list[Any]]:
    """Return ``(condition, params)`` for ``flt``; ``TRUE`` when there is no filter."""
    if flt is None:
        return sql.SQL("TRUE"), []
    if not isinstance(flt, dict):
        raise ValueError(f"filter must be a dict, got {type(flt).__name__}")
    params: list[Any] = []
    cond = _compile(flt, sql.Identifier(column), params, 0)
    return cond, params


def _compile(
    flt: dict[str, Any], col: sql.Identifier, params: list[Any], depth: int
) -> sql.Composable:
    if depth > MAX_DEPTH:
        raise ValueError(f"filter nested deeper than {MAX_DEPTH} levels")
    parts: list[sql.Composable] = []
    for key, value in flt.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"filter key must be a non-empty string, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ValueError(f"{key} expects a list of filter dicts")
            if not value:
                parts.append(sql.SQL("TRUE" if key == "$and" else "FALSE"))
                continue
            joiner = sql.SQL(" AND " if key == "$and" else " OR ")
            subs = [_compile(v, col, params, depth + 1) for v in value]
            parts.append(sql.SQL("({})").format(joiner.join(subs)))
        elif key.startswith("$"):
            raise ValueError(f"unknown filter operator {key!r} at the top level")
        elif isinstance(value, dict):
            if not value:
                raise ValueError(f"empty operator dict for filter key {key!r}")
            for op, operand in value.items():
                parts.append(_operator(key, op, operand, col, params))
        else:
            parts.append(_operator(key, "$eq", value, col, params))
    if not parts:
        return sql.SQL("TRUE")
    return sql.SQL("({})").format(sql.SQL(" AND ").join(parts))


def _scalar(key: str, op: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, dict)) and op in ("$eq", "$ne"):
        return value
    raise ValueError(f"unsupported value type {type(value).__name__} for {op} on key {key!r}")


def _operator(
    key: str, op: Any, value: Any, col: sql.Identifier, params: list[Any]
) -> sql.Composable:
    if op not in OPERATORS:
        raise ValueError(
            f"unknown filter operator {op!r} for key {key!r}; expected one of {sorted(OPERATORS)}"
        )
    if op == "$eq":
        params.append(Jsonb({key: _scalar(key, op, value)}))
        return sql.SQL("{} @> %s").format(col)
    if op == "$ne":
        params.append(Jsonb({key: _scalar(key, op, value)}))
        return sql.SQL("NOT ({} @> %s)").format(col)
    if op in ("$in", "$nin"):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{op} on key {key!r} expects a list")
        params.extend([key, [Jsonb(_scalar(key, op, v)) for v in value]])
        expr = sql.SQL("COALESCE(({} -> %s) = ANY(%s::jsonb[]), FALSE)").format(col)
        return expr if op == "$in" else sql.SQL("NOT {}").format(expr)
    if op == "$exists":
        if not isinstance(value, bool):
            raise ValueError(f"$exists on key {key!r} expects true or false")
        params.append(key)
        return sql.SQL("({} ? %s)" if value else "NOT ({} ? %s)").format(col)
    # Range comparison: only between values of the same JSON type (number or string), which
    # jsonb orders naturally; other types never match instead of comparing across types.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{op} on key {key!r} expects a number or a string")
    operand = Jsonb(value)
    params.extend([key, operand, key, operand])
    return sql.SQL(
        "(jsonb_typeof({c} -> %s) = jsonb_typeof(%s::jsonb) AND ({c} -> %s) {o} %s::jsonb)"
    ).format(c=col, o=sql.SQL(COMPARISONS[op]))

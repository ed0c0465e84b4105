"""JSON schemas, as structured output uses them: a deterministic value valid against one
(:func:`fill_schema`), and OpenAI's rules for a ``strict`` schema
(:func:`strict_schema_problem`)."""

from __future__ import annotations

import re
from typing import Any

_ANSWER_FIELDS = ("answer", "response", "reply", "content", "text", "summary", "explanation")
_FORMATS = {"date": "1970-01-01", "date-time": "1970-01-01T00:00:00Z", "time": "00:00:00",
            "email": "user@example.com", "uri": "https://example.com/",
            "uuid": "00000000-0000-0000-0000-000000000000", "ipv4": "127.0.0.1"}
_MAX_DEPTH = 12


def fill_schema(schema: dict[str, Any], *, topic: str = "", order_id: str | None = None,
                answer: str = "") -> Any:
    """A value valid against the JSON schema ``schema``, filled from the seeds given.

    Deterministic.  Objects get every property (strict structured output requires them all);
    a string property named like an id gets ``order_id``, one named like an answer
    (``answer``, ``response``, ``text``, …) gets ``answer``, any other string ``topic`` (what
    the question is about); numbers the smallest allowed value from 0, booleans False, arrays
    ``minItems`` items.  ``enum``/``const``, ``anyOf``/``oneOf`` (first non-null choice),
    ``allOf``, local ``$ref`` (``#/$defs/...``), ``format``, string lengths and numeric bounds
    are honoured;
    type names are case-insensitive (Gemini's ``responseSchema`` spells them ``STRING``).
    A ``pattern`` is met only if one of a few variants of the value (capitalised, upper case,
    the order id, ``A``, ``a``, ``0``) matches it: there is no regex inversion.
    """
    return _fill(schema, schema, "", _Seeds(topic or "question", order_id, answer), 0)


class _Seeds:
    def __init__(self, topic: str, order_id: str | None, answer: str) -> None:
        self.topic, self.order_id, self.answer = topic, order_id, answer


def _resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return {}
    return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}


def _kind(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), kind[0] if kind else None)
    if kind is None:
        if "properties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return None
    return str(kind).lower()


def _fill(root: dict[str, Any], schema: Any, name: str, seeds: _Seeds, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    schema = _resolve(root, schema)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        choices = schema.get(key)
        if isinstance(choices, list) and choices:
            non_null = [c for c in choices if not (isinstance(c, dict) and _kind(
                _resolve(root, c)) == "null")]
            return _fill(root, (non_null or choices)[0], name, seeds, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(_resolve(root, part))
        return _fill(root, {**merged, **{k: v for k, v in schema.items() if k != "allOf"}},
                     name, seeds, depth + 1)
    kind = _kind(schema)
    if kind == "object":
        props: dict[str, Any] = schema.get("properties") or {}
        return {prop: _fill(root, sub, prop, seeds, depth + 1) for prop, sub in props.items()}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [_fill(root, schema.get("items") or {}, name, seeds, depth + 1)
                for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(schema, name, seeds)


def _number(schema: dict[str, Any], kind: str) -> int | float:
    value: float = 0
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = 1 if kind == "integer" else 0.5
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(ex_low, int | float) and value <= ex_low:
        value = ex_low + step
    if isinstance(high, int | float) and value > high:
        value = high
    if isinstance(ex_high, int | float) and value >= ex_high:
        value = ex_high - step
    return int(value) if kind == "integer" else float(value)


def _string(schema: dict[str, Any], name: str, seeds: _Seeds) -> str:
    lowered = name.lower()
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        value = _FORMATS[fmt]
    elif seeds.order_id and (lowered == "id" or lowered.endswith(("_id", "id"))):
        value = seeds.order_id
    elif seeds.answer and any(f in lowered for f in _ANSWER_FIELDS):
        value = seeds.answer
    else:
        value = seeds.topic
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        value = _matching(pattern, [value, value.capitalize(), value.upper(),
                                    seeds.order_id or "", "A", "a", "0"])
    longest = schema.get("maxLength")
    if isinstance(longest, int) and len(value) > longest:
        value = value[:longest]
    shortest = schema.get("minLength")
    if isinstance(shortest, int) and len(value) < shortest:
        value = value + "." * (shortest - len(value))
    return value


def _matching(pattern: str, candidates: list[str]) -> str:
    """The first candidate ``pattern`` matches (the first candidate if none does)."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return candidates[0]
    return next((c for c in candidates if c and compiled.search(c)), candidates[0])


def strict_schema_problem(schema: Any, context: tuple[str, ...] = ()) -> str | None:
    """Why ``schema`` is not allowed with ``strict: true`` (OpenAI's wording), or None."""
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object" or "properties" in schema:
        where = f"In context={context!r}, " if context else "In context=(), "
        if schema.get("additionalProperties") is not False:
            return (where + "'additionalProperties' is required to be supplied and to be "
                    "false.")
        required = schema.get("required") or []
        missing = [p for p in schema.get("properties") or {} if p not in required]
        if missing:
            return (where + "'required' is required to be supplied and to be an array "
                    f"including every key in properties. Missing '{missing[0]}'.")
    subs: list[tuple[tuple[str, ...], Any]] = []
    for name, sub in (schema.get("properties") or {}).items():
        subs.append(((*context, "properties", name), sub))
    for key in ("$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            subs.append(((*context, key, name), sub))
    if "items" in schema:
        subs.append(((*context, "items"), schema["items"]))
    for key in ("anyOf", "allOf"):
        for i, sub in enumerate(schema.get(key) or []):
            subs.append(((*context, key, str(i)), sub))
    for inner, sub in subs:
        problem = strict_schema_problem(sub, inner)
        if problem:
            return problem
    return None

"""Metadata filter compilation and text chunking: pure logic, no database."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.types.json import Jsonb

from langchain_ha.store.filters import compile_filter
from langchain_ha.store.ingest import chunk_documents, split_text


def _sql(flt: dict[str, Any] | None) -> tuple[str, list[Any]]:
    cond, params = compile_filter(flt)
    return cond.as_string(None), params


def test_no_filter_is_true() -> None:
    assert _sql(None) == ("TRUE", [])
    assert _sql({}) == ("TRUE", [])


@pytest.mark.parametrize(
    "flt",
    [
        {"a'); DROP TABLE x; --": 1},
        {"k": {"$in": ["'; DELETE FROM t; --"]}},
        {'x"y': {"$gt": "z' OR '1'='1"}},
        {"$or": [{"a%sb": {"$exists": True}}, {"c": {"$ne": "%(name)s"}}]},
    ],
)
def test_keys_and_values_are_parameters_never_sql(flt: dict[str, Any]) -> None:
    text, params = _sql(flt)
    for bad in ("DROP", "DELETE", "'1'='1", 'x"y', "a%sb", "%(name)s"):
        assert bad not in text
    assert params  # everything user-supplied travels as a parameter
    assert text.count("%s") == len(params)


def test_operators_compile_to_the_expected_shape() -> None:
    text, params = _sql({"year": {"$gte": 2020, "$lt": 2024}, "lang": "en"})
    assert ">=" in text and "<" in text and "@>" in text
    assert isinstance(params[-1], Jsonb) and params[-1].obj == {"lang": "en"}
    text, params = _sql({"lang": {"$in": ["en", "de"]}})
    assert "ANY" in text and params[0] == "lang" and [p.obj for p in params[1]] == ["en", "de"]


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"a": {"$regex": "x"}}, r"unknown filter operator '\$regex'"),
        ({"$where": "1"}, r"unknown filter operator '\$where'"),
        ({"a": {"$gt": None}}, r"\$gt on key 'a' expects a number or a string"),
        ({"a": {"$gt": True}}, r"\$gt"),
        ({"a": {"$in": 3}}, r"\$in on key 'a' expects a list"),
        ({"a": {"$exists": "yes"}}, r"\$exists"),
        ({"a": {}}, "empty operator dict"),
        ({"": 1}, "non-empty string"),
        ({"$or": {"a": 1}}, r"\$or expects a list"),
        ({"a": {"$eq": object()}}, "unsupported value type"),
    ],
)
def test_invalid_filters_name_the_problem(flt: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_filter(flt)


def test_deep_nesting_is_refused() -> None:
    flt: dict[str, Any] = {"a": 1}
    for _ in range(12):
        flt = {"$and": [flt]}
    with pytest.raises(ValueError, match="nested deeper"):
        compile_filter(flt)


def test_split_text_respects_size_boundaries_and_overlap() -> None:
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 40 for i in range(10))
    chunks = split_text(text, chunk_size=300, overlap=50)
    assert all(len(c) <= 300 for c in chunks)
    assert len(chunks) > 5
    assert "".join(chunks).count("Paragraph 9") >= 1
    # Every paragraph heading survives somewhere.
    assert all(any(f"Paragraph {i}." in c for c in chunks) for i in range(10))
    assert split_text("short", 100, 10) == ["short"]
    assert split_text("   ", 100, 10) == []
    with pytest.raises(ValueError):
        split_text("x", 10, 10)


def test_chunk_ids_are_stable_and_jsonl_is_parsed() -> None:
    payload = {
        "source": "/d/faq.jsonl",
        "format": "jsonl",
        "chunk_size": 200,
        "overlap": 20,
        "content": '{"id": "q1", "text": "How to reset?", "metadata": {"topic": "acct"}}\n\n'
        '{"text": "Refunds take five days"}\n',
    }
    first, second = chunk_documents(payload), chunk_documents(payload)
    assert [d.id for d in first] == [d.id for d in second]
    assert first[0].metadata == {"topic": "acct", "source": "/d/faq.jsonl", "chunk": 0}
    assert first[1].page_content == "Refunds take five days"
    with pytest.raises(ValueError, match=r"faq\.jsonl:1"):
        chunk_documents({**payload, "content": "{not json"})

"""Input limits through a real replica: deep or huge JSON is a 422 naming the limit (never a
500, never a traceback); keys count as prompt characters; message lists count wherever they
are."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.fixtures_serve import Replica

KEY = "limits-key"
AUTH = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
MSG = {"role": "user", "content": "x"}


@pytest.fixture(scope="module")
def echo(serve_factory: Callable[..., Replica]) -> Replica:
    return serve_factory("tests.support.apps:echo", env={"LCHA_API_KEYS": KEY})


def _post(replica: Replica, body: bytes | dict[str, Any], path: str = "/v1/invoke",
          ) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(replica.url + path, content=content, headers=AUTH, timeout=30)


def _nested(depth: int) -> bytes:
    """``{"input": [[...]]}`` with ``depth`` arrays inside ``input`` (depth + 1 in all)."""
    return b'{"input": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [64, 470, 960, 5_000, 100_000])
def test_deep_json_is_a_422_naming_max_depth(echo: Replica, depth: int) -> None:
    resp = _post(echo, _nested(depth))
    assert resp.status_code == 422, resp.text[:300]
    error = resp.json()["error"]
    assert "max_depth" in error["message"] and error["limit"] == 64
    assert error["field"] == "body"


def test_nesting_within_the_limit_is_answered(echo: Replica) -> None:
    resp = _post(echo, _nested(63))
    assert resp.status_code == 200


def test_too_many_values_is_a_422_naming_max_nodes(echo: Replica) -> None:
    resp = _post(echo, {"input": [0] * 20_000})
    assert resp.status_code == 422 and "max_nodes" in resp.json()["error"]["message"]
    assert resp.json()["error"]["limit"] == 20_000
    assert _post(echo, {"input": [0] * 19_000}).status_code == 200


def test_no_traceback_reaches_the_log(echo: Replica) -> None:
    for body in (_nested(900), _nested(100_000), json.dumps({"input": [0] * 50_000}).encode()):
        assert _post(echo, body).status_code == 422
    assert "Traceback" not in echo.log() and "RecursionError" not in echo.log()


@pytest.mark.parametrize(("path", "body", "needle"), [
    ("/v1/invoke", {"input": {"k" * 40_000: 1}}, "max_prompt_chars"),
    ("/v1/invoke", {"input": {f"key-{i:05d}-" + "k" * 30: i for i in range(1_000)}},
     "max_prompt_chars"),
    ("/v1/invoke", {"input": [MSG] * 101}, "max_messages"),
    ("/v1/invoke", {"input": [["user", "hi"]] * 101}, "max_messages"),
    ("/v1/invoke", {"input": {"chat_history": [MSG] * 101, "question": "q"}}, "max_messages"),
    ("/v1/batch", {"inputs": [1, [MSG] * 101]}, "max_messages"),
    ("/v1/batch", {"inputs": [{"k" * 40_000: 1}]}, "max_prompt_chars"),
    ("/v1/stream", {"input": {"k" * 40_000: 1}}, "max_prompt_chars"),
    ("/v1/chat/completions", {"messages": [MSG] * 101}, "max_messages"),
])
def test_keys_and_message_lists_count(echo: Replica, path: str, body: dict[str, Any],
                                      needle: str) -> None:
    resp = _post(echo, body, path)
    # The OpenAI-compatible route answers a validation error as OpenAI does: a 400.
    assert resp.status_code == (400 if path == "/v1/chat/completions" else 422), resp.text[:300]
    assert needle in resp.json()["error"]["message"]


def test_message_limit_names_where_the_list_is(echo: Replica) -> None:
    resp = _post(echo, {"inputs": [1, {"chat_history": [MSG] * 101}]}, "/v1/batch")
    assert resp.json()["error"]["message"].startswith("inputs[1].chat_history:")


def test_within_the_limits_is_answered(echo: Replica) -> None:
    for body in ({"input": [MSG] * 100}, {"input": {"k" * 31_000: 1}},
                 {"input": [f"plain string {i}" for i in range(500)]}):
        assert _post(echo, body).status_code == 200

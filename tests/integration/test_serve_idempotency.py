"""Idempotency keys belong to the caller: another API client reusing a key gets its own answer,
and the same key with another body is refused (422), through a real replica."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.support.fixtures_serve import Replica

KEY_A, KEY_B = "client-a-key", "client-b-key"


def _auth(key: str, idem: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Idempotency-Key": idem}


@pytest.fixture(scope="module")
def echo(serve_factory: Callable[..., Replica]) -> Replica:
    return serve_factory("tests.support.apps:echo", env={"LCHA_API_KEYS": f"{KEY_A},{KEY_B}"})


def test_another_client_with_the_same_key_gets_its_own_answer(echo: Replica) -> None:
    before = len(echo.calls())
    a = httpx.post(echo.url + "/v1/invoke", json={"input": "a's payment"},
                   headers=_auth(KEY_A, "pay-1"))
    b = httpx.post(echo.url + "/v1/invoke", json={"input": "b's payment"},
                   headers=_auth(KEY_B, "pay-1"))
    assert a.status_code == b.status_code == 200
    assert b.json()["output"] == {"echo": "b's payment"}
    assert "idempotent-replayed" not in b.headers
    ran = echo.calls()[before:]
    assert len(ran) == 2 and ran[0] != ran[1]  # each ran, under a request key of its own
    # Each client's retry still replays its own answer, byte for byte.
    again_a = httpx.post(echo.url + "/v1/invoke", json={"input": "a's payment"},
                         headers=_auth(KEY_A, "pay-1"))
    again_b = httpx.post(echo.url + "/v1/invoke", json={"input": "b's payment"},
                         headers=_auth(KEY_B, "pay-1"))
    assert again_a.content == a.content and again_a.headers["idempotent-replayed"] == "true"
    assert again_b.content == b.content and again_b.headers["idempotent-replayed"] == "true"
    assert len(echo.calls()) == before + 2


def test_chat_completions_keys_are_per_client_too(echo: Replica) -> None:
    def ask(key: str, text: str) -> httpx.Response:
        return httpx.post(echo.url + "/v1/chat/completions", headers=_auth(key, "chat-1"),
                          json={"messages": [{"role": "user", "content": text}]})

    a, b = ask(KEY_A, "a asks about refunds"), ask(KEY_B, "b asks about invoices")
    assert a.status_code == b.status_code == 200
    assert "invoices" in b.json()["choices"][0]["message"]["content"]
    assert "refunds" not in b.text and "idempotent-replayed" not in b.headers


def test_the_same_key_with_another_body_is_a_422(echo: Replica) -> None:
    first = httpx.post(echo.url + "/v1/invoke", json={"input": 1}, headers=_auth(KEY_A, "k-2"))
    assert first.status_code == 200
    other = httpx.post(echo.url + "/v1/invoke", json={"input": 2}, headers=_auth(KEY_A, "k-2"))
    assert other.status_code == 422
    error = other.json()["error"]
    assert error["field"] == "Idempotency-Key" and "Idempotency-Key" in error["message"]
    replay = httpx.post(echo.url + "/v1/invoke", json={"input": 1}, headers=_auth(KEY_A, "k-2"))
    assert replay.content == first.content and replay.headers["idempotent-replayed"] == "true"


def test_a_key_is_per_route(echo: Replica) -> None:
    invoke = httpx.post(echo.url + "/v1/invoke", json={"input": 5}, headers=_auth(KEY_A, "k-3"))
    batch = httpx.post(echo.url + "/v1/batch", json={"inputs": [5]}, headers=_auth(KEY_A, "k-3"))
    assert invoke.status_code == batch.status_code == 200
    assert batch.json()["outputs"] == [{"echo": 5}] and "idempotent-replayed" not in batch.headers

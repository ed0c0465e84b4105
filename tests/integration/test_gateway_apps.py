"""The OpenAI-compatible route over what is not a router: a served application keeps getting
its question (and refuses, naming the field, what it cannot honour); a plain chat model is
gateway mode with one provider."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from langchain_ha.providers import expected_answer
from tests.support.fixtures_serve import Replica
from tests.support.fixtures_sim import SimProcess

KEY = "apps-key"
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def echo(serve_factory: Callable[..., Replica]) -> Replica:
    return serve_factory("tests.support.apps:echo", env={"LCHA_API_KEYS": KEY})


@pytest.fixture(scope="module")
def claude(serve_factory: Callable[..., Replica], sim_factory: Callable[..., SimProcess]
           ) -> Replica:
    sim = sim_factory("apps-claude")
    return serve_factory("tests.support.apps:claude",
                         env={"LCHA_API_KEYS": KEY, "LCHA_TEST_ANTHROPIC_URL": sim.url})


def _client(replica: Replica) -> openai.OpenAI:
    return openai.OpenAI(base_url=replica.url + "/v1", api_key=KEY, max_retries=0)


def test_an_application_gets_the_question_and_any_model_name(echo: Replica) -> None:
    answer = _client(echo).chat.completions.create(model="my-bot", messages=[
        {"role": "system", "content": "be nice"}, *USER], user="session-9")
    echo_of: dict[str, Any] = json.loads(answer.choices[0].message.content or "")
    assert echo_of["echo"]["question"] == "hello there"
    assert echo_of["echo"]["session_id"] == "session-9"
    assert echo_of["echo"]["messages"][0] == {"role": "system", "content": "be nice"}
    assert answer.model == "my-bot" and answer.usage is None
    assert (answer.model_extra or {})["lcha"]["degraded"] == []
    assert [m.id for m in _client(echo).models.list()] == ["langchain-ha"]


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"n": 2}, "n"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"temperature": 0.3}, "temperature"),
    ({"max_tokens": 5}, "max_tokens"),
    ({"seed": 1}, "seed"),
    ({"stop": ["x"]}, "stop"),
    ({"stream": True, "stream_options": {"include_usage": True}}, "stream_options.include_usage"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     "messages[0].content[1]"),
])
def test_an_application_refuses_what_it_cannot_honour(echo: Replica, extra: dict[str, Any],
                                                      param: str) -> None:
    body = {"model": "bot", "messages": USER, **extra}
    resp = httpx.post(echo.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert set(error) == {"message", "type", "param", "code"}


def test_an_application_streams_its_deltas(serve_factory: Callable[..., Replica]) -> None:
    replica = serve_factory("tests.support.apps:streaming")
    client = openai.OpenAI(base_url=replica.url + "/v1", api_key="none", max_retries=0)
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].model_extra or {})["lcha"]["degraded"] == []


def test_a_plain_chat_model_is_gateway_mode(claude: Replica) -> None:
    client = _client(claude)
    q = "Where is order AB-1234?"
    answer = client.chat.completions.create(model="langchain-ha",
                                            messages=[{"role": "user", "content": q}])
    assert answer.choices[0].message.content == expected_answer([("user", q)])
    assert answer.model == "sim-claude" and answer.usage is not None
    tool = {"type": "function", "function": {"name": "order_status", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}}}}
    call = client.chat.completions.create(model="langchain-ha", tools=[tool],  # type: ignore[list-item]
                                          messages=[{"role": "user", "content": q}])
    assert call.choices[0].finish_reason == "tool_calls"
    with pytest.raises(openai.BadRequestError) as seeded:
        client.chat.completions.create(model="langchain-ha", messages=USER, seed=1)
    assert seeded.value.body["param"] == "seed"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):  # no providers to pin: only the alias
        client.chat.completions.create(model="anthropic", messages=USER)
    cards = {m.id: m for m in client.models.list()}
    assert list(cards) == ["langchain-ha"]
    assert (cards["langchain-ha"].model_extra or {})["lcha"]["kind"] == "anthropic-chat"
    with pytest.raises(openai.NotFoundError):  # no embeddings configured
        client.embeddings.create(model="sim-embed", input="x")

"""The gateway's surface beyond the common path: /v1/models and pinning a provider, what each
provider kind honours (and the 400 when none can), failures mapped to OpenAI's statuses, a
stream that cannot be finished, and the token metrics.  One replica, faults set per test."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from pydantic import BaseModel

from langchain_ha.providers import expected_answer
from tests.support.fixtures_gateway import (
    GATEWAY_KEY,
    PROVIDER_MODELS,
    ROUTER_APP,
    Gateway,
    gateway_env,
)
from tests.support.fixtures_serve import Replica

Q = "Where is order AB-1234?"
ANSWER = expected_answer([("user", Q)])
USER = [{"role": "user", "content": Q}]


class Order(BaseModel):
    answer: str
    order_id: str


@pytest.fixture
def gw(healthy_gateway: Gateway) -> Iterator[Gateway]:
    healthy_gateway.reset()
    yield healthy_gateway
    healthy_gateway.reset()


def _lcha(obj: object) -> dict[str, object]:
    return dict((getattr(obj, "model_extra", None) or {}).get("lcha") or {})


def test_models_list_the_alias_the_providers_and_the_embedding_model(gw: Gateway) -> None:
    client = gw.client()
    listed = {m.id: m for m in client.models.list()}
    assert list(listed) == ["langchain-ha", "openai", "anthropic", "gemini", "sim-embed"]
    assert _lcha(listed["langchain-ha"]) == {"kind": "router",
                                             "providers": ["openai", "anthropic", "gemini"]}
    assert _lcha(listed["anthropic"])["model"] == "sim-claude"
    assert _lcha(listed["gemini"])["kind"] == "chat-google-generative-ai"
    assert client.models.retrieve("gemini").id == "gemini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_provider_name_pins_the_request(gw: Gateway, provider: str) -> None:
    """Each kind does tools, structured output, max_tokens and usage in its own terms."""
    client = gw.client()
    plain = client.chat.completions.create(model=provider, messages=USER)  # type: ignore[arg-type]
    assert plain.choices[0].message.content == ANSWER
    assert plain.model == PROVIDER_MODELS[provider] and _lcha(plain)["provider"] == provider
    assert _lcha(plain)["degraded"] == ([] if provider == "openai" else ["primary_llm"])
    parsed = client.chat.completions.parse(model=provider, messages=USER,  # type: ignore[arg-type]
                                           response_format=Order)
    assert parsed.choices[0].message.parsed == Order(answer=ANSWER, order_id="AB-1234")
    assert parsed.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model=provider, messages=USER, max_tokens=2)  # type: ignore[arg-type]
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 2
    tool = {"type": "function", "function": {"name": "order_status", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}}}}
    two = "Where are orders AB-1234 and CD-5678?"
    single = client.chat.completions.create(
        model=provider, messages=[{"role": "user", "content": two}],  # type: ignore[arg-type]
        tools=[tool], parallel_tool_calls=False)  # type: ignore[list-item]
    assert len(single.choices[0].message.tool_calls or []) == 1  # Gemini: enforced on the answer
    assert single.choices[0].finish_reason == "tool_calls"


def test_a_parameter_some_providers_cannot_honour_skips_them(gw: Gateway) -> None:
    client = gw.client()
    gw.sims["openai"].set_faults(status=500)
    seeded = client.chat.completions.create(model="langchain-ha", messages=USER, seed=7)
    # Anthropic has no seed: the request went to Gemini, and the answer says so.
    lcha = _lcha(seeded)
    assert lcha["provider"] == "gemini" and "anthropic" in lcha["skipped"]  # type: ignore[operator]
    assert seeded.choices[0].message.content == ANSWER
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="anthropic", messages=USER, seed=7)
    assert refused.value.body["param"] == "seed"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as no_user:
        client.chat.completions.create(model="gemini", messages=USER, user="u-1")
    assert no_user.value.body["param"] == "user"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as penalty:
        client.chat.completions.create(model="anthropic", messages=USER,
                                       max_completion_tokens=5, presence_penalty=0.5)
    assert penalty.value.body["param"] == "presence_penalty"  # type: ignore[index]


def test_fields_accepted_as_no_ops_and_fields_refused(gw: Gateway) -> None:
    client = gw.client()
    ok = client.chat.completions.create(model="langchain-ha", messages=USER, store=False,
                                        service_tier="auto", logprobs=False, metadata={},
                                        modalities=["text"])
    assert ok.choices[0].message.content == ANSWER
    for field, value in [("store", True), ("logprobs", True), ("service_tier", "flex"),
                         ("metadata", {"k": "v"}), ("logit_bias", {"50256": -100}),
                         ("reasoning_effort", "low"), ("audio", {"voice": "alloy"})]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="langchain-ha", messages=USER,
                                           **{field: value})  # type: ignore[call-overload]
        assert refused.value.body["param"] == field, field  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as options:
        client.chat.completions.create(model="langchain-ha", messages=USER,
                                       stream_options={"include_usage": True})
    assert options.value.body["param"] == "stream_options"  # type: ignore[index]


def test_the_provider_rejecting_the_request_is_a_400_with_its_message(gw: Gateway) -> None:
    # OpenAI wants the word "json" in the messages for json_object; the sim says so.
    with pytest.raises(openai.BadRequestError) as rejected:
        gw.client().chat.completions.create(model="openai", messages=USER,
                                            response_format={"type": "json_object"})
    assert "json" in rejected.value.body["message"]  # type: ignore[index]
    assert rejected.value.body["code"] == "provider_rejected"  # type: ignore[index]


def test_failures_map_to_openais_statuses(gw: Gateway) -> None:
    client = gw.client()
    gw.sims["openai"].set_faults(status=500)
    with pytest.raises(openai.InternalServerError) as pinned_down:
        client.chat.completions.create(model="openai", messages=USER)
    assert pinned_down.value.status_code == 503
    assert pinned_down.value.response.headers["retry-after"] == "1"
    for sim in gw.sims.values():
        sim.set_faults(status=429, retry_after_s=3)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="langchain-ha", messages=USER)
    assert limited.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) >= 1
    for sim in gw.sims.values():
        sim.set_faults(status=503)
    with pytest.raises(openai.InternalServerError) as down:
        client.chat.completions.create(model="langchain-ha", messages=USER, stream=True)
    # Nothing of the answer existed yet: a plain 503, which a client (or the SDK) retries.
    assert down.value.status_code == 503
    assert set(down.value.response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_stream_no_provider_can_finish_ends_with_an_error_event(gw: Gateway) -> None:
    """Cut mid-answer, and every fallback restarts the answer instead of continuing it: the
    OpenAI stream cannot say "discard", so the SDK raises APIError; no truncated success."""
    gw.sims["openai"].set_faults(disconnect_after_chunks=4)
    for kind in ("anthropic", "gemini"):
        gw.sims[kind].set_faults(ignore_continuation=True, restart_style="reword")
    stream = gw.client().chat.completions.create(model="langchain-ha", messages=USER,
                                                 stream=True)
    received = ""
    with pytest.raises(openai.APIError) as ended:
        for chunk in stream:
            if chunk.choices:
                received += chunk.choices[0].delta.content or ""
    assert not isinstance(ended.value, openai.APIStatusError)  # mid-stream: an event, not a status
    assert ended.value.code == "stream_interrupted"
    assert received and ANSWER.startswith(received) and received != ANSWER


def _sample(metrics: str, provider: str, direction: str) -> float:
    pattern = (rf'^lcha_llm_tokens_total\{{direction="{direction}",provider="{provider}"\}} '
               r"(\S+)$")
    found = re.search(pattern, metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_token_metrics_count_invoked_and_streamed_usage(gw: Gateway) -> None:
    client = gw.client()

    def tokens() -> tuple[float, float]:
        page = httpx.get(gw.replica.url + "/metrics", timeout=10).text
        return _sample(page, "gemini", "input"), _sample(page, "gemini", "output")

    before = tokens()
    plain = client.chat.completions.create(model="gemini", messages=USER)
    after_plain = tokens()
    assert plain.usage is not None
    assert after_plain[0] - before[0] == plain.usage.prompt_tokens
    assert after_plain[1] - before[1] == plain.usage.completion_tokens
    chunks = list(client.chat.completions.create(model="gemini", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    after_stream = tokens()
    assert usage is not None
    assert after_stream[0] - after_plain[0] == usage.prompt_tokens
    assert after_stream[1] - after_plain[1] == usage.completion_tokens > 0
    # A stream the client asked no usage of is still counted (the providers are asked).
    list(client.chat.completions.create(model="gemini", messages=USER, stream=True))
    assert tokens()[1] - after_stream[1] == usage.completion_tokens


def test_embeddings_requests_checked(gw: Gateway) -> None:
    client = gw.client()
    base = gw.base_url + "/embeddings"
    auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-large", input="x")
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model="sim-embed", input="x", dimensions=64)
    assert dims.value.body["param"] == "dimensions"  # type: ignore[index]
    tokens = httpx.post(base, headers=auth, json={"model": "sim-embed", "input": [[1, 2, 3]]})
    assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "input"
    extra = httpx.post(base, headers=auth, json={"input": "x", "truncate": True})
    assert extra.status_code == 400 and extra.json()["error"]["param"] == "truncate"
    many = httpx.post(base, headers=auth, json={"input": ["x"] * 300})
    assert many.status_code == 400 and "max_embedding_inputs" in many.json()["error"]["message"]
    same = client.embeddings.create(model="sim-embed", input="hello", dimensions=256,
                                    encoding_format="float")
    assert len(same.data[0].embedding) == 256
    assert same.usage.prompt_tokens == same.usage.total_tokens == 2  # five characters, estimated
    assert _lcha(same)["usage_estimated"] is True


def test_embeddings_fail_over_to_another_endpoint_of_the_model(gw: Gateway) -> None:
    client = gw.client()
    gw.sims["openai"].set_faults(status=500)
    served = client.embeddings.create(model="sim-embed", input=["a", "b"], encoding_format="float")
    assert _lcha(served)["endpoint"] == "anthropic" and _lcha(served)["fallback"] is True
    gw.sims["anthropic"].set_faults(status=500)
    gw.sims["gemini"].set_faults(status=500)
    with pytest.raises(openai.InternalServerError) as down:
        client.embeddings.create(model="sim-embed", input="a")
    assert down.value.status_code == 503
    assert json.loads(down.value.response.text)["error"]["type"] == "server_error"


@pytest.mark.parametrize(("provider", "finish"), [("openai", "stop"), ("anthropic", "stop"),
                                                  ("gemini", "content_filter")])
def test_a_refusal_is_said_as_openai_says_it(gw: Gateway, provider: str, finish: str) -> None:
    gw.sims[provider].set_faults(refuse=True)
    answer = gw.client().chat.completions.create(model=provider, messages=USER)  # type: ignore[arg-type]
    choice = answer.choices[0]
    assert choice.finish_reason == finish and not choice.message.content
    if finish == "stop":  # the model declined: its words as `refusal`
        assert choice.message.refusal == "I'm sorry, but I can't help with that request."
    assert _lcha(answer)["refusal"] in ("refusal", "safety")


def test_the_request_deadline_is_a_504(gw: Gateway, serve_factory: Callable[..., Replica]
                                       ) -> None:
    replica = serve_factory(ROUTER_APP, env=gateway_env(gw.sims, LCHA_REQUEST_TIMEOUT_S="1.5"))
    for sim in gw.sims.values():
        sim.set_faults(hang=True)
    client = openai.OpenAI(base_url=replica.url + "/v1", api_key=GATEWAY_KEY, max_retries=0,
                           timeout=20)
    with pytest.raises(openai.APIStatusError) as late:
        client.chat.completions.create(model="langchain-ha", messages=USER)
    assert late.value.status_code == 504 and late.value.body["code"] == "timeout"  # type: ignore[index]

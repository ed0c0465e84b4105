"""The gateway as OpenAI clients see it: the official ``openai`` SDK (sync, async, streaming
and its stream helpers) and LangChain's ``ChatOpenAI`` pointed at ``lcha serve`` of a
ResilientChatModel over OpenAI-, Anthropic- and Gemini-kind simulators.

Every test runs three times (``gateway`` is parametrized): the primary healthy, the primary
down (HTTP 500 on every call), and every stream of the primary cut mid-answer.  The answers
must be the same in all three (the simulator's answers are deterministic and the same for
every provider); only the ``lcha`` provenance and the degraded markers say what happened.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel

from langchain_ha.providers import expected_answer
from tests.support.fixtures_gateway import PROVIDER_MODELS, Gateway

Q = "Where is order AB-1234?"
Q2 = "Where are orders AB-1234 and CD-5678?"
ANSWER = expected_answer([("user", Q)])
TOOL = {"type": "function", "function": {
    "name": "order_status", "description": "Look up the status of an order by its id.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                   "required": ["order_id"]}}}
RESULT = json.dumps({"order_id": "AB-1234", "status": "shipped", "eta_days": 2,
                     "carrier": "DHL"})
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
       "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


class Order(BaseModel):
    """An order and what the assistant says about it."""

    answer: str
    order_id: str


def _lcha(obj: Any) -> dict[str, Any]:
    extra = obj.model_extra or {}
    return dict(extra.get("lcha") or {})


def _user(text: str = Q) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# -- plain answers -------------------------------------------------------------------------


def test_plain_answer_with_usage_model_and_provenance(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="langchain-ha", messages=_user())
    answer = raw.parse()
    provider = gateway.answering(stream=False)
    choice = answer.choices[0]
    assert choice.message.content == ANSWER and choice.finish_reason == "stop"
    assert choice.message.tool_calls is None and choice.message.role == "assistant"
    assert answer.model == PROVIDER_MODELS[provider]
    usage = answer.usage
    assert usage is not None and usage.completion_tokens == len(ANSWER.split())
    assert usage.prompt_tokens == len(Q.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    lcha = _lcha(answer)
    assert lcha["provider"] == provider and lcha["degraded"] == gateway.degraded(stream=False)
    assert raw.headers["x-lcha-degraded"] == ",".join(gateway.degraded(stream=False))
    assert lcha["request_id"] == raw.headers["x-request-id"]


async def test_async_client_system_developer_and_content_parts(gateway: Gateway) -> None:
    client = gateway.aclient()
    doc = "[doc:faq-7] Refunds are paid within five days of the return."
    # (Anthropic takes one system text: a provider of that kind gets the two joined)
    messages: list[Any] = [
        {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
        {"role": "developer", "content": doc},
        {"role": "user", "content": [{"type": "text", "text": "How are refunds paid?"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
    ]
    answer = await client.chat.completions.create(model="langchain-ha", messages=messages)
    expected = expected_answer([("system", "Answer briefly."), ("system", doc),
                                ("user", "How are refunds paid?")])
    assert answer.choices[0].message.content == expected
    assert "[doc:faq-7]" in expected  # grounded in the developer message: it reached the model
    assert _lcha(answer)["provider"] == gateway.answering(stream=False)
    await client.close()


# -- tools ---------------------------------------------------------------------------------


def test_forced_tool_call(gateway: Gateway) -> None:
    answer = gateway.client().chat.completions.create(
        model="langchain-ha", messages=_user(), tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "order_status"}})
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["order_status"]  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"order_id": "AB-1234"}  # type: ignore[union-attr]
    assert calls[0].id and calls[0].type == "function"
    assert answer.usage is not None and answer.usage.completion_tokens >= 1


def test_auto_and_parallel_tool_calls(gateway: Gateway) -> None:
    client = gateway.client()
    plain = client.chat.completions.create(model="langchain-ha", tools=[TOOL],  # type: ignore[list-item]
                                           messages=_user("What is the capital of France?"))
    assert plain.choices[0].message.tool_calls is None  # auto: the model chose to answer
    assert plain.choices[0].finish_reason == "stop"
    both = client.chat.completions.create(model="langchain-ha", messages=_user(Q2),
                                          tools=[TOOL])  # type: ignore[list-item]
    calls = both.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments)["order_id"] for c in calls] == [  # type: ignore[union-attr]
        "AB-1234", "CD-5678"]
    assert len({c.id for c in calls}) == 2
    one = client.chat.completions.create(model="langchain-ha", messages=_user(Q2),
                                         tools=[TOOL], parallel_tool_calls=False)  # type: ignore[list-item]
    assert len(one.choices[0].message.tool_calls or []) == 1


def test_tool_round_trip(gateway: Gateway) -> None:
    client = gateway.client()
    first = client.chat.completions.create(model="langchain-ha", messages=_user(),
                                           tools=[TOOL], tool_choice="required")  # type: ignore[list-item]
    call = (first.choices[0].message.tool_calls or [])[0]
    messages: list[Any] = [
        *_user(), first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": RESULT}]
    final = client.chat.completions.create(model="langchain-ha", messages=messages,
                                           tools=[TOOL])  # type: ignore[list-item]
    text = final.choices[0].message.content
    assert text == expected_answer([("user", Q), ("assistant", ""), ("tool", RESULT)])
    assert text == "Order AB-1234: shipped, expected in 2 days with DHL."
    assert final.choices[0].finish_reason == "stop"


# -- streams -------------------------------------------------------------------------------


def test_stream_text_with_usage_and_markers(gateway: Gateway) -> None:
    stream = gateway.client().chat.completions.create(
        model="langchain-ha", messages=_user(), stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == ANSWER
    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens > 0
    assert usage_chunk.usage.total_tokens == (usage_chunk.usage.prompt_tokens
                                              + usage_chunk.usage.completion_tokens)
    assert all(c.usage is None for c in chunks[:-1])
    final = _lcha(with_choices[-1])
    provider = gateway.answering(stream=True)
    assert final["provider"] == provider and final["degraded"] == gateway.degraded(stream=True)
    assert with_choices[-1].model == PROVIDER_MODELS[provider]
    markers = [_lcha(c)["failover"] for c in chunks if not c.choices and _lcha(c)]
    if gateway.condition == "stream_cut":  # invisible in the text, visible in the markers
        assert [(m["from"], m["to"]) for m in markers] == [("openai", "anthropic")]
        assert final["continued_after"] == ["openai"]
    else:
        assert markers == [] and "continued_after" not in final


def test_stream_helper_reassembles_parallel_tool_calls(gateway: Gateway) -> None:
    with gateway.client().chat.completions.stream(
            model="langchain-ha", messages=_user(Q2), tools=[TOOL]) as stream:  # type: ignore[list-item]
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["order_status", "order_status"]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"order_id": "AB-1234"}, {"order_id": "CD-5678"}]
    assert [json.loads(e.arguments) for e in done] == [  # type: ignore[union-attr]
        {"order_id": "AB-1234"}, {"order_id": "CD-5678"}]
    assert final.choices[0].finish_reason == "tool_calls"


def test_stream_helper_text(gateway: Gateway) -> None:
    with gateway.client().chat.completions.stream(
            model="langchain-ha", messages=_user()) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == ANSWER == final.choices[0].message.content


async def test_async_stream_of_a_forced_tool_call(gateway: Gateway) -> None:
    client = gateway.aclient()
    stream = await client.chat.completions.create(
        model="langchain-ha", messages=_user(), tools=[TOOL], stream=True,  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "order_status"}})
    pieces: list[str] = []
    heads = []
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                assert delta.index == 0
                if delta.id:
                    heads.append((delta.id, delta.function.name))  # type: ignore[union-attr]
                pieces.append(delta.function.arguments or "")  # type: ignore[union-attr]
            finish = choice.finish_reason or finish
    assert len(heads) == 1 and heads[0][1] == "order_status"
    assert json.loads("".join(pieces)) == {"order_id": "AB-1234"}
    assert finish == "tool_calls"
    await client.close()


# -- structured output, n, limits ------------------------------------------------------------


def test_structured_output_parsed_by_the_sdk(gateway: Gateway) -> None:
    parsed = gateway.client().chat.completions.parse(
        model="langchain-ha", messages=_user(), response_format=Order)
    order = parsed.choices[0].message.parsed
    assert order == Order(answer=ANSWER, order_id="AB-1234")
    assert _lcha(parsed)["provider"] == gateway.answering(stream=False)


def test_json_object_format(gateway: Gateway) -> None:
    answer = gateway.client().chat.completions.create(
        model="langchain-ha", messages=_user("Where is order AB-1234? Reply in JSON."),
        response_format={"type": "json_object"})
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


def test_n_answers_with_usage_summed(gateway: Gateway) -> None:
    client = gateway.client()
    one = client.chat.completions.create(model="langchain-ha", messages=_user())
    three = client.chat.completions.create(model="langchain-ha", messages=_user(), n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert {c.message.content for c in three.choices} == {ANSWER}
    assert one.usage is not None and three.usage is not None
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert [c["provider"] for c in _lcha(three)["choices"]] == [gateway.answering(stream=False)] * 3
    stream = client.chat.completions.create(model="langchain-ha", messages=_user(), n=2,
                                            stream=True)
    texts = ["", ""]
    finishes = [None, None]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index] = choice.finish_reason or finishes[choice.index]
    assert texts == [ANSWER, ANSWER] and finishes == ["stop", "stop"]


def test_max_tokens_ends_with_length(gateway: Gateway) -> None:
    client = gateway.client()
    short = client.chat.completions.create(model="langchain-ha", messages=_user(), max_tokens=3)
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content == "Answer: you asked"
    assert short.usage is not None and short.usage.completion_tokens == 3
    newer = client.chat.completions.create(model="langchain-ha", messages=_user(),
                                           max_completion_tokens=3)
    assert newer.choices[0].message.content == "Answer: you asked"
    stream = client.chat.completions.create(model="langchain-ha", messages=_user(),
                                            max_tokens=3, stream=True)
    finishes = [c.choices[0].finish_reason for c in stream if c.choices]
    assert finishes[-1] == "length"


def test_stop_sequences_and_sampling_parameters(gateway: Gateway) -> None:
    answer = gateway.client().chat.completions.create(
        model="langchain-ha", messages=_user(), stop=["deterministic"], temperature=0.2,
        top_p=0.9, user="customer-42")
    assert answer.choices[0].message.content == ANSWER.split("deterministic")[0]
    assert answer.choices[0].finish_reason == "stop"


# -- errors --------------------------------------------------------------------------------


def test_errors_in_openais_shape(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="langchain-ha", messages=_user(),
                                       extra_body={"frobnicate": True})
    assert unknown.value.status_code == 400
    assert unknown.value.body == {"message": "Unrecognized request argument supplied: frobnicate",
                                  "type": "invalid_request_error", "param": "frobnicate",
                                  "code": "unknown_parameter"}
    with pytest.raises(openai.BadRequestError) as bad_value:
        client.chat.completions.create(model="langchain-ha", messages=_user(), temperature=5)
    assert bad_value.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as orphan:
        client.chat.completions.create(model="langchain-ha", messages=[
            *_user(), {"role": "tool", "tool_call_id": "call_nope", "content": "x"}])
    assert orphan.value.body["param"] == "messages[1].tool_call_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-nonexistent", messages=_user())
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert missing.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError) as nokey:
        gateway.client(key="wrong-key").chat.completions.create(model="langchain-ha",
                                                                messages=_user())
    assert nokey.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    bare = httpx.post(gateway.base_url + "/chat/completions", json={"messages": _user()})
    assert bare.status_code == 401
    assert set(bare.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="langchain-ha", messages=_user(), n=50)
    assert too_many.value.body["param"] == "n"  # type: ignore[index]


# -- LangChain's ChatOpenAI as the client ----------------------------------------------------


def test_langchain_chat_openai_bind_tools_and_round_trip(gateway: Gateway) -> None:
    model = gateway.chat_openai()
    with_tools = model.bind_tools([TOOL])
    call = with_tools.invoke(Q)
    assert isinstance(call, AIMessage)
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [
        ("order_status", {"order_id": "AB-1234"})]
    assert call.usage_metadata is not None and call.usage_metadata["input_tokens"] == 4
    final = with_tools.invoke([HumanMessage(Q), call,
                               ToolMessage(RESULT, tool_call_id=call.tool_calls[0]["id"])])
    assert final.content == "Order AB-1234: shipped, expected in 2 days with DHL."
    streamed = "".join(str(c.content) for c in model.stream(Q))
    assert streamed == ANSWER


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(gateway: Gateway, method: str) -> None:
    structured = gateway.chat_openai().with_structured_output(Order, method=method)  # type: ignore[arg-type]
    assert structured.invoke(Q) == Order(answer=ANSWER, order_id="AB-1234")


def test_langchain_stream_usage(gateway: Gateway) -> None:
    chunks = list(gateway.chat_openai(stream_usage=True).stream(Q))
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(usage) == 1 and usage[0]["output_tokens"] > 0
    assert "".join(str(c.content) for c in chunks) == ANSWER


# -- embeddings ------------------------------------------------------------------------------


def test_embeddings_are_the_models_whichever_endpoint_answers(gateway: Gateway) -> None:
    texts = ["reset my password", "where is my order"]
    client = gateway.client()
    served = client.embeddings.create(model="sim-embed", input=texts, encoding_format="float")
    direct = openai.OpenAI(base_url=gateway.sims["anthropic"].url + "/v1", api_key="k",
                           max_retries=0).embeddings.create(model="sim-embed", input=texts,
                                                            dimensions=256,
                                                            encoding_format="float")
    assert [d.embedding for d in served.data] == [d.embedding for d in direct.data]
    assert len(served.data[0].embedding) == 256 and served.model == "sim-embed"
    expected = "anthropic" if gateway.condition == "primary_down" else "openai"
    assert _lcha(served)["endpoint"] == expected
    # The SDK's default: base64 (float32, as OpenAI sends it), decoded by the SDK.
    packed = client.embeddings.create(model="sim-embed", input=texts)
    for got, want in zip(packed.data, direct.data, strict=True):
        assert got.embedding == pytest.approx(want.embedding, rel=1e-6, abs=1e-7)

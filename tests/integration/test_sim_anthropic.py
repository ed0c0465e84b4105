"""The simulator's Messages API through ChatAnthropic and the ``anthropic`` SDK over HTTP."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from langchain_anthropic.chat_models import AnthropicContextOverflowError
from langchain_core.exceptions import ContextOverflowError, ModelAPIError, ModelRateLimitError
from langchain_core.messages import AIMessage, HumanMessage

from langchain_ha.providers._answers import REFUSAL_TEXT, expected_answer
from tests.support.sim_clients import TWO_ORDERS, Q, an, joined, order_status

HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def _raw(sim, **body: object) -> httpx.Response:
    return httpx.post(sim.url + "/v1/messages", headers=HEADERS,
                      json={"model": "m", "max_tokens": 100, **body})


async def test_usage_and_stop_reason_plain_and_streamed(sim_pair) -> None:
    sim, _ = sim_pair
    expected = expected_answer([("user", Q)])
    plain = await an(sim).ainvoke(Q)
    assert plain.content == expected
    assert plain.response_metadata["stop_reason"] == "end_turn"
    assert plain.usage_metadata is not None
    assert plain.usage_metadata["input_tokens"] == len(Q.split())
    assert plain.usage_metadata["output_tokens"] == len(expected.split())
    streamed = joined([c async for c in an(sim).astream(Q)])
    assert streamed.content == expected
    assert streamed.usage_metadata is not None
    assert streamed.usage_metadata["input_tokens"] == plain.usage_metadata["input_tokens"]
    assert streamed.usage_metadata["output_tokens"] == plain.usage_metadata["output_tokens"]
    assert streamed.response_metadata["stop_reason"] == "end_turn"


async def test_tool_use_streamed_in_pieces_with_text_first_then_answered(sim_pair) -> None:
    sim, _ = sim_pair
    model = an(sim).bind_tools([order_status])
    chunks = [c async for c in model.astream(TWO_ORDERS)]
    arg_pieces = [tc for c in chunks for tc in c.tool_call_chunks if tc["args"]]
    assert len(arg_pieces) > 4  # input_json_delta in several pieces
    first = joined(chunks)
    assert first.response_metadata["stop_reason"] == "tool_use"
    assert isinstance(first.content, list) and first.content[0]["type"] == "text"
    assert [c["args"] for c in first.tool_calls] == [{"order_id": "AB-1234"},
                                                     {"order_id": "CD-5678"}]
    results = [await order_status.ainvoke(call) for call in first.tool_calls]
    final = await model.ainvoke([HumanMessage(content=TWO_ORDERS), first, *results])
    assert final.content == ("Order AB-1234: the order system said: status of AB-1234 "
                             "Order CD-5678: the order system said: status of CD-5678")


async def test_tool_choice_any_tool_none_and_disable_parallel(sim_pair) -> None:
    sim, _ = sim_pair
    single = await an(sim).bind_tools([order_status], parallel_tool_calls=False).ainvoke(
        TWO_ORDERS)
    assert [c["args"] for c in single.tool_calls] == [{"order_id": "AB-1234"}]
    for choice in ("any", "order_status"):
        forced = await an(sim).bind_tools([order_status], tool_choice=choice).ainvoke(Q)
        assert forced.tool_calls and forced.tool_calls[0]["name"] == "order_status"
        assert all(b["type"] == "tool_use" for b in forced.content)  # type: ignore[union-attr]
    resp = _raw(sim, messages=[{"role": "user", "content": TWO_ORDERS}],
                tools=[{"name": "order_status", "input_schema": {"type": "object"}}],
                tool_choice={"type": "none"})
    assert resp.json()["stop_reason"] == "end_turn"
    assert resp.json()["content"] == [{"type": "text",
                                       "text": expected_answer([("user", TWO_ORDERS)])}]


async def test_max_tokens_and_stop_sequences(sim_pair) -> None:
    sim, _ = sim_pair
    expected = expected_answer([("user", Q)])
    cut = await an(sim, max_tokens=4).ainvoke(Q)
    assert cut.content == " ".join(expected.split()[:4])
    assert cut.response_metadata["stop_reason"] == "max_tokens"
    stopped = await an(sim).ainvoke(Q, stop=["grounded"])
    assert stopped.content == expected[:expected.index("grounded")]
    assert stopped.response_metadata["stop_reason"] == "stop_sequence"
    assert stopped.response_metadata["stop_sequence"] == "grounded"


async def test_prefill_continues_and_trailing_whitespace_is_refused(sim_pair) -> None:
    sim, _ = sim_pair
    expected = expected_answer([("user", Q)])
    partial = expected[:30].rstrip()
    got = await an(sim).ainvoke([HumanMessage(content=Q), AIMessage(content=partial)])
    assert got.content == expected[len(partial):]
    text = "".join([str(c.content) async for c in an(sim).astream(
        [HumanMessage(content=Q), AIMessage(content=partial)])])
    assert partial + text == expected
    # ChatAnthropic strips a final assistant message's trailing whitespace itself ...
    spaced = await an(sim).ainvoke([HumanMessage(content=Q), AIMessage(content=partial + " ")])
    assert spaced.content == expected[len(partial):]
    # ... the SDK sends it as it is, and gets Anthropic's 400
    client = anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.BadRequestError,
                       match="final assistant content cannot end with trailing whitespace"):
        await client.messages.create(model="m", max_tokens=100, messages=[
            {"role": "user", "content": Q}, {"role": "assistant", "content": partial + " "}])


async def test_refusal_stop_reason(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(refuse=True)
    got = await an(sim).ainvoke(Q)
    assert got.content == REFUSAL_TEXT
    assert got.response_metadata["stop_reason"] == "refusal"
    streamed = joined([c async for c in an(sim).astream(Q)])
    assert streamed.response_metadata["stop_reason"] == "refusal"


async def test_errors_have_anthropics_shape(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(status=529)
    with pytest.raises(anthropic.OverloadedError) as over:
        await an(sim).ainvoke(Q)
    assert isinstance(over.value, ModelAPIError)  # langchain's AnthropicOverloadedError
    assert over.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                          "message": "Overloaded"},
                               "request_id": over.value.request_id}
    assert over.value.response.headers["request-id"] == over.value.request_id
    sim.set_faults(status=429, retry_after_s=3)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await an(sim).ainvoke(Q)
    assert isinstance(limited.value, ModelRateLimitError)
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    sim.set_faults(context_window_chars=40)
    with pytest.raises(AnthropicContextOverflowError, match=r"prompt is too long: 11 tokens > "
                                                            r"10 maximum") as info:
        await an(sim).ainvoke(Q)
    assert isinstance(info.value, ContextOverflowError)
    sim.clear_faults()
    with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
        await an(sim, key="invalid-k").ainvoke(Q)
    assert _raw(sim, messages=[{"role": "user", "content": Q}], max_tokens=None).json()[
        "error"]["message"] == "max_tokens: Field required"
    system_role = _raw(sim, messages=[{"role": "system", "content": "x"}])
    assert system_role.status_code == 400 and "top-level `system`" in system_role.text

"""The simulator's Gemini API through ChatGoogleGenerativeAI (google-genai underneath)."""

from __future__ import annotations

import httpx
import pytest
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelRateLimitError,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_google_genai.chat_models import (
    GoogleAPIError,
    GoogleAuthenticationError,
    GoogleContextOverflowError,
    GoogleInvalidRequestError,
    GoogleRateLimitError,
)

from langchain_ha.providers._answers import expected_answer
from tests.support.sim_clients import TWO_ORDERS, Q, Verdict, gm, joined, order_status


def _post(sim, path: str, body: dict, **params: str) -> httpx.Response:
    return httpx.post(f"{sim.url}/v1beta/models/gemini-2.5-flash:{path}", json=body,
                      params=params, headers={"x-goog-api-key": "k"})


async def test_invoke_and_stream_with_usage_metadata(sim_pair) -> None:
    sim, _ = sim_pair
    messages = [SystemMessage(content="[doc:faq-7] Refunds take 5 days. Extra."),
                HumanMessage(content=Q)]
    expected = expected_answer(messages)
    plain = await gm(sim).ainvoke(messages)
    assert plain.content == expected
    assert plain.response_metadata["finish_reason"] == "STOP"
    assert plain.response_metadata["model_name"] == "gemini-2.5-flash"
    prompt = sum(len(str(m.content).split()) for m in messages)
    assert plain.usage_metadata is not None
    assert plain.usage_metadata["input_tokens"] == prompt
    assert plain.usage_metadata["output_tokens"] == len(expected.split())
    chunks = [c async for c in gm(sim).astream(messages)]
    assert len(chunks) > 5
    streamed = joined(chunks)
    assert streamed.content == expected
    assert streamed.usage_metadata is not None
    assert streamed.usage_metadata["output_tokens"] == len(expected.split())
    assert streamed.usage_metadata["input_tokens"] == prompt


async def test_bind_tools_auto_any_none_and_function_responses(sim_pair) -> None:
    sim, _ = sim_pair
    model = gm(sim).bind_tools([order_status])
    first = await model.ainvoke(TWO_ORDERS)
    assert [c["args"] for c in first.tool_calls] == [{"order_id": "AB-1234"},
                                                     {"order_id": "CD-5678"}]
    streamed = joined([c async for c in model.astream(TWO_ORDERS)])
    assert [c["args"] for c in streamed.tool_calls] == [c["args"] for c in first.tool_calls]
    assert (await model.ainvoke(Q)).tool_calls == []
    forced = await gm(sim).bind_tools([order_status], tool_choice="any").ainvoke(Q)
    assert forced.tool_calls[0]["name"] == "order_status"
    results = [await order_status.ainvoke(call) for call in first.tool_calls]
    final = await model.ainvoke([HumanMessage(content=TWO_ORDERS), first, *results])
    assert final.content == ("Order AB-1234: the order system said: status of AB-1234 "
                             "Order CD-5678: the order system said: status of CD-5678")
    none = _post(sim, "generateContent", {
        "contents": [{"role": "user", "parts": [{"text": TWO_ORDERS}]}],
        "tools": [{"functionDeclarations": [{"name": "order_status"}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}})
    assert none.json()["candidates"][0]["content"]["parts"] == [
        {"text": expected_answer([("user", TWO_ORDERS)])}]


async def test_structured_output(sim_pair) -> None:
    sim, _ = sim_pair
    got = await gm(sim).with_structured_output(Verdict).ainvoke(Q)
    assert got == Verdict(answer=expected_answer([("user", Q)]), confidence=0)
    openapi = _post(sim, "generateContent", {
        "contents": [{"parts": [{"text": Q}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
            "type": "OBJECT", "properties": {"n": {"type": "INTEGER", "minimum": 2},
                                             "ok": {"type": "BOOLEAN"}}}}})
    assert openapi.json()["candidates"][0]["content"]["parts"][0]["text"] == '{"n":2,"ok":false}'


async def test_max_output_tokens_stop_and_prefill(sim_pair) -> None:
    sim, _ = sim_pair
    expected = expected_answer([("user", Q)])
    cut = await gm(sim, max_output_tokens=3).ainvoke(Q)
    assert cut.content == " ".join(expected.split()[:3])
    assert cut.response_metadata["finish_reason"] == "MAX_TOKENS"
    stopped = await gm(sim).ainvoke(Q, stop=["grounded"])
    assert stopped.content == expected[:expected.index("grounded")]
    partial = expected[:25].rstrip()
    more = await gm(sim).ainvoke([HumanMessage(content=Q), AIMessage(content=partial)])
    assert partial + str(more.content) == expected


async def test_refusal_and_blocked_prompt(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(refuse=True)
    refused = await gm(sim).ainvoke(Q)
    assert refused.response_metadata["finish_reason"] == "SAFETY"
    assert any(r.get("blocked") for r in refused.response_metadata["safety_ratings"])
    sim.set_faults(content_filter="prompt")
    body = _post(sim, "generateContent", {"contents": [{"parts": [{"text": Q}]}]}).json()
    assert "candidates" not in body and body["promptFeedback"]["blockReason"] == "SAFETY"
    blocked = await gm(sim).ainvoke(Q)
    assert blocked.content == ""
    assert blocked.response_metadata["prompt_feedback"]["block_reason"] == "SAFETY"
    sim.set_faults(content_filter="output")
    filtered = await gm(sim).ainvoke(Q)
    assert filtered.response_metadata["finish_reason"] == "SAFETY"
    assert 0 < len(str(filtered.content)) < len(expected_answer([("user", Q)]))


async def test_errors_raise_langchains_classes(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(status=429, retry_after_s=7)
    with pytest.raises(GoogleRateLimitError) as limited:
        await gm(sim).ainvoke(Q)
    assert isinstance(limited.value, ModelRateLimitError)
    raw = _post(sim, "generateContent", {"contents": [{"parts": [{"text": Q}]}]})
    error = raw.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": "7s"} in error["details"]
    sim.set_faults(status=503)
    with pytest.raises(GoogleAPIError) as unavailable:
        await gm(sim).ainvoke(Q)
    assert isinstance(unavailable.value, ModelAPIError)
    assert unavailable.value.status == "UNAVAILABLE"
    with pytest.raises(GoogleAPIError):  # a stream's error surfaces while iterating
        [c async for c in gm(sim).astream(Q)]
    sim.set_faults(status=401)
    with pytest.raises(GoogleAuthenticationError) as auth:
        await gm(sim).ainvoke(Q)
    assert isinstance(auth.value, ModelAuthenticationError)
    sim.set_faults(context_window_chars=40)
    with pytest.raises(GoogleContextOverflowError) as over:
        await gm(sim).ainvoke(Q)
    assert isinstance(over.value, ContextOverflowError)
    assert "The input token count (11) exceeds the maximum number of tokens allowed (10)." in str(
        over.value)
    sim.clear_faults()
    # as Google does: a bad key is a 400 API_KEY_INVALID, a missing one a 403
    with pytest.raises(GoogleInvalidRequestError, match="API key not valid"):
        await gm(sim, key="invalid-key").ainvoke(Q)
    missing = httpx.post(sim.url + "/v1beta/models/gemini-2.5-flash:generateContent",
                         json={"contents": [{"parts": [{"text": Q}]}]})
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"


def test_routes_keys_and_model_list(sim_pair) -> None:
    sim, _ = sim_pair
    body = {"contents": [{"role": "user", "parts": [{"text": Q}]}]}
    by_query = httpx.post(sim.url + "/v1beta/models/gemini-2.5-flash:generateContent",
                          params={"key": "k"}, json=body)
    by_header = _post(sim, "generateContent", body)
    assert by_query.status_code == by_header.status_code == 200
    answer = by_query.json()
    assert answer["modelVersion"] == "gemini-2.5-flash" and answer["responseId"]
    assert answer["usageMetadata"]["totalTokenCount"] == (
        answer["usageMetadata"]["promptTokenCount"]
        + answer["usageMetadata"]["candidatesTokenCount"])
    sse = _post(sim, "streamGenerateContent", body, alt="sse")
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert sse.text.count("data: ") > 5 and '"finishReason":"STOP"' in sse.text
    listed = httpx.get(sim.url + "/v1beta/models", headers={"x-goog-api-key": "k"}).json()
    assert "models/gemini-2.5-flash" in [m["name"] for m in listed["models"]]
    as_openai = httpx.get(sim.url + "/v1/models").json()  # no Gemini key: OpenAI's list
    assert as_openai["object"] == "list"
    assert httpx.get(sim.url + "/v1/models", params={"key": "k"}).json()["models"]
    assert _post(sim, "embedContent", body).status_code == 404
    bad_role = _post(sim, "generateContent", {"contents": [{"role": "bot", "parts": []}]})
    assert bad_role.status_code == 400 and "valid role" in bad_role.json()["error"]["message"]
    assert sim.calls("chat") == 5

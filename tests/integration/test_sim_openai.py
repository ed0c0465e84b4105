"""The simulator's OpenAI API through ChatOpenAI and the official ``openai`` SDK over HTTP."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from langchain_core.exceptions import ContextOverflowError, ModelRefusalError
from langchain_core.messages import HumanMessage

from langchain_ha.providers._answers import REFUSAL_TEXT, expected_answer
from tests.support.sim_clients import TWO_ORDERS, Q, Verdict, joined, oa, order_status, sdk


async def test_usage_in_plain_answers_and_in_the_stream_usage_chunk(sim_pair) -> None:
    sim, _ = sim_pair
    words = len(expected_answer([("user", Q)]).split())
    plain = await oa(sim).ainvoke(Q)
    assert plain.usage_metadata is not None
    assert plain.usage_metadata["input_tokens"] == len(Q.split())
    assert plain.usage_metadata["output_tokens"] == words
    assert plain.response_metadata["finish_reason"] == "stop"
    chunks = [c async for c in oa(sim, stream_usage=True).astream(Q)]
    assert joined(chunks).usage_metadata == plain.usage_metadata


async def test_bind_tools_auto_forced_none_and_parallel(sim_pair) -> None:
    sim, _ = sim_pair
    auto = await oa(sim).bind_tools([order_status]).ainvoke(TWO_ORDERS)
    assert [c["args"] for c in auto.tool_calls] == [{"order_id": "AB-1234"},
                                                    {"order_id": "CD-5678"}]
    assert auto.response_metadata["finish_reason"] == "tool_calls"
    single = await oa(sim).bind_tools([order_status], parallel_tool_calls=False).ainvoke(
        TWO_ORDERS)
    assert [c["args"] for c in single.tool_calls] == [{"order_id": "AB-1234"}]
    # no order id: auto answers in text, "required" and a named function force the call
    assert (await oa(sim).bind_tools([order_status]).ainvoke(Q)).tool_calls == []
    for choice in ("required", "order_status"):
        forced = await oa(sim).bind_tools([order_status], tool_choice=choice).ainvoke(Q)
        assert forced.tool_calls[0]["name"] == "order_status"
    none = await oa(sim).bind_tools([order_status], tool_choice="none").ainvoke(TWO_ORDERS)
    assert none.tool_calls == [] and none.content == expected_answer([("user", TWO_ORDERS)])


async def test_streamed_tool_calls_and_the_answer_from_several_results(sim_pair) -> None:
    sim, _ = sim_pair
    model = oa(sim).bind_tools([order_status])
    chunks = [c async for c in model.astream(TWO_ORDERS)]
    pieces = [tc for c in chunks for tc in c.tool_call_chunks if tc["id"] is None]
    assert len(pieces) > 4  # the arguments arrive in several chunks, as OpenAI sends them
    first = joined(chunks)
    assert [c["args"]["order_id"] for c in first.tool_calls] == ["AB-1234", "CD-5678"]
    results = [await order_status.ainvoke(call) for call in first.tool_calls]
    final = await model.ainvoke([HumanMessage(content=TWO_ORDERS), first, *results])
    assert final.content == ("Order AB-1234: the order system said: status of AB-1234 "
                             "Order CD-5678: the order system said: status of CD-5678")


async def test_structured_output_json_schema_and_function_calling(sim_pair) -> None:
    sim, _ = sim_pair
    expected = expected_answer([("user", Q)])
    for method in ("json_schema", "function_calling"):
        got = await oa(sim).with_structured_output(Verdict, method=method).ainvoke(Q)
        assert got == Verdict(answer=expected, confidence=0)


async def test_response_format_json_object_schema_strict_and_errors(sim_pair) -> None:
    sim, _ = sim_pair
    client = sdk(sim)
    schema = {"type": "object", "additionalProperties": False, "required": ["order", "items"],
              "properties": {"order": {"type": "string", "pattern": "^[A-Z]"},
                             "items": {"type": "array", "minItems": 2, "items": {
                                 "type": "object", "additionalProperties": False,
                                 "required": ["sku", "qty"],
                                 "properties": {"sku": {"enum": ["A1", "B2"]},
                                                "qty": {"type": "integer", "minimum": 3}}}}}}
    resp = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "List order AB-1234"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "o", "schema": schema, "strict": True}})
    content = json.loads(resp.choices[0].message.content or "")
    jsonschema.validate(content, {k: v for k, v in schema.items()})
    assert content["items"] == [{"sku": "A1", "qty": 3}] * 2
    loose = {**schema, "additionalProperties": True}
    with pytest.raises(openai.BadRequestError, match="'additionalProperties' is required") as e:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "o", "schema": loose, "strict": True}})
    assert e.value.param == "response_format"
    ok = await client.chat.completions.create(  # without strict, the same schema is accepted
        model="m", messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": loose}})
    jsonschema.validate(json.loads(ok.choices[0].message.content or ""), loose)
    mode = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Answer in JSON: " + Q}],
        response_format={"type": "json_object"})
    assert json.loads(mode.choices[0].message.content or "") == {
        "answer": expected_answer([("user", "Answer in JSON: " + Q)])}
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        await client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                  "content": Q}],
                                             response_format={"type": "json_object"})


async def test_max_tokens_cuts_with_finish_reason_length(sim_pair) -> None:
    sim, _ = sim_pair
    expected = expected_answer([("user", Q)])
    cut = await oa(sim, max_tokens=5).ainvoke(Q)
    assert cut.content == " ".join(expected.split()[:5])
    assert cut.response_metadata["finish_reason"] == "length"
    assert cut.usage_metadata is not None and cut.usage_metadata["output_tokens"] == 5
    chunks = [c async for c in oa(sim, max_completion_tokens=5).astream(Q)]
    assert "".join(str(c.content) for c in chunks) == cut.content
    assert [c.response_metadata.get("finish_reason") for c in chunks
            if c.response_metadata.get("finish_reason")] == ["length"]


async def test_stop_sequences_cut_before_the_stop_string(sim_pair) -> None:
    sim, _ = sim_pair
    expected = expected_answer([("user", Q)])
    got = await oa(sim).ainvoke(Q, stop=["deterministic", "zzz"])
    assert got.content == expected[:expected.index("deterministic")]
    assert got.response_metadata["finish_reason"] == "stop"


async def test_n_choices_with_the_sdk_plain_and_streamed(sim_pair) -> None:
    sim, _ = sim_pair
    client = sdk(sim)
    expected = expected_answer([("user", Q)])
    messages = [{"role": "user", "content": Q}]
    resp = await client.chat.completions.create(model="m", messages=messages, n=2)  # type: ignore[arg-type]
    assert [(c.index, c.message.content) for c in resp.choices] == [(0, expected),
                                                                    (1, expected)]
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 2 * len(expected.split())
    texts = {0: "", 1: ""}
    stream = await client.chat.completions.create(model="m", messages=messages, n=2,  # type: ignore[arg-type]
                                                  stream=True)
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: expected, 1: expected}


async def test_sdk_reassembles_tool_call_deltas_and_gets_the_usage_chunk(sim_pair) -> None:
    sim, _ = sim_pair
    client = sdk(sim)
    tools = [{"type": "function", "function": {
        "name": "order_status", "parameters": {
            "type": "object", "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"]}}}]
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": TWO_ORDERS}], tools=tools,  # type: ignore[arg-type]
        stream=True, stream_options={"include_usage": True})
    calls: dict[int, dict[str, str]] = {}
    chunks = [c async for c in stream]
    for chunk in chunks[:-1]:
        assert chunk.usage is None and len(chunk.choices) == 1
        for tc in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
            entry["id"] += tc.id or ""
            assert tc.function is not None
            entry["name"] += tc.function.name or ""
            entry["args"] += tc.function.arguments or ""
    assert [json.loads(c["args"]) for c in calls.values()] == [{"order_id": "AB-1234"},
                                                              {"order_id": "CD-5678"}]
    assert all(c["id"].startswith("call_") and c["name"] == "order_status"
               for c in calls.values())
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    raw = httpx.post(sim.url + "/v1/chat/completions", headers={"authorization": "Bearer k"},
                     json={"model": "m", "stream": True,
                           "messages": [{"role": "user", "content": Q}]})
    assert b'"usage"' not in raw.content  # without include_usage, no usage key at all


async def test_refusal_and_content_filters(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(refuse=True)
    refused = await sdk(sim).chat.completions.create(
        model="m", messages=[{"role": "user", "content": Q}])
    message = refused.choices[0].message
    assert message.content is None and message.refusal == REFUSAL_TEXT
    stream = await sdk(sim).chat.completions.create(
        model="m", messages=[{"role": "user", "content": Q}], stream=True)
    assert "".join([c.choices[0].delta.refusal or "" async for c in stream
                    if c.choices]) == REFUSAL_TEXT
    with pytest.raises(ModelRefusalError):
        await oa(sim).with_structured_output(Verdict).ainvoke(Q)
    sim.set_faults(content_filter="output")
    cut = await oa(sim).ainvoke(Q)
    assert cut.response_metadata["finish_reason"] == "content_filter"
    assert 0 < len(str(cut.content)) < len(expected_answer([("user", Q)]))
    sim.set_faults(content_filter="prompt")
    with pytest.raises(openai.BadRequestError) as info:
        await oa(sim).ainvoke(Q)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "content_filter"
    assert body["innererror"]["content_filter_result"]["violence"]["filtered"] is True


async def test_context_length_error_has_openais_body(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(context_window_chars=400)
    long_q = "refund " * 100  # 700 characters
    with pytest.raises(openai.BadRequestError) as info:
        await oa(sim).ainvoke(long_q)
    err = info.value
    assert err.body == {
        "message": "This model's maximum context length is 100 tokens. However, your messages "
                   "resulted in 175 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
    # langchain-openai 1.7 looks for "context_length_exceeded" in str(error), which openai 3.x
    # no longer puts there (only the message): so ChatOpenAI does not raise its
    # ContextOverflowError for OpenAI's real body, and a router must classify by ``code``.
    assert not isinstance(err, ContextOverflowError)
    assert (await oa(sim).ainvoke("refund " * 50)).content  # 350 characters fit


@pytest.mark.parametrize(("status", "error", "kind", "code"), [
    (400, openai.BadRequestError, "invalid_request_error", None),
    (401, openai.AuthenticationError, "invalid_request_error", "invalid_api_key"),
    (403, openai.PermissionDeniedError, "request_forbidden",
     "unsupported_country_region_territory"),
    (404, openai.NotFoundError, "invalid_request_error", "model_not_found"),
    (429, openai.RateLimitError, "requests", "rate_limit_exceeded"),
    (500, openai.InternalServerError, "server_error", None),
    (503, openai.InternalServerError, "server_error", None),
])
async def test_errors_have_openais_type_code_and_headers(sim_pair, status, error, kind,
                                                         code) -> None:
    sim, _ = sim_pair
    sim.set_faults(status=status, retry_after_s=1.5)
    with pytest.raises(error) as info:
        await sdk(sim).chat.completions.create(model="m",
                                               messages=[{"role": "user", "content": Q}])
    err = info.value
    assert err.status_code == status and err.type == kind and err.code == code
    assert err.request_id is not None and err.request_id.startswith("req_")
    assert err.response.headers["retry-after"] == "1.5"
    assert err.response.headers["retry-after-ms"] == "1500"


async def test_missing_and_invalid_keys_and_bad_input_name_the_field(sim_pair) -> None:
    sim, _ = sim_pair
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key") as info:
        await sdk(sim, key="invalid-0123456789").chat.completions.create(
            model="m", messages=[{"role": "user", "content": Q}])
    assert "0123456789" not in str(info.value)  # the key is masked
    missing = httpx.post(sim.url + "/v1/chat/completions", json={"model": "m", "messages": []})
    assert missing.status_code == 401 and "didn't provide an API key" in missing.text
    for body, param in [({"model": "m", "messages": []}, "messages"),
                        ({"model": "m", "messages": [{"role": "user", "content": Q}],
                          "max_tokens": 0}, "max_tokens"),
                        ({"model": "m", "messages": [{"role": "user", "content": Q}],
                          "n": 500}, "n"),
                        ({"model": "m", "messages": [{"role": "user", "content": Q}],
                          "tool_choice": "required"}, "tool_choice"),
                        ({"model": "m", "messages": [{"role": "user", "content": Q}],
                          "stop": ["a", "b", "c", "d", "e"]}, "stop")]:
        resp = httpx.post(sim.url + "/v1/chat/completions",
                          headers={"authorization": "Bearer k"}, json=body)
        assert resp.status_code == 400, body
        assert resp.json()["error"]["param"] == param
        assert resp.json()["error"]["message"]

"""The simulator's injectable faults, as real clients see them, and its authenticated admin API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import google.genai.errors
import httpx
import httpx2
import openai
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from langchain_ha._proc import Child, free_port, python_argv
from langchain_ha.providers._answers import (
    RESTART_PREAMBLE,
    expected_answer,
    reword,
)
from langchain_ha.resilience.continuation import CONTINUATION_INSTRUCTION
from tests.support.sim_clients import an, gm, oa, sdk

Q = "How long do refunds take for annual plans?"
FULL = expected_answer([("user", Q)])
PARTIAL = FULL[:31].rstrip()  # "Answer: you asked about long"
CONNECTION_ERRORS = (openai.APIConnectionError, anthropic.APIConnectionError, httpx.HTTPError,
                     httpx2.HTTPError)


async def _collect(stream: AsyncIterator[Any], into: list[Any]) -> None:
    async for item in stream:
        into.append(item)


async def _stalls(stream: AsyncIterator[Any], got: list[Any], wait_s: float = 1.5) -> bool:
    """True if ``stream`` is still open and silent after ``wait_s`` (then it is closed)."""
    try:
        await asyncio.wait_for(_collect(stream, got), wait_s)
    except TimeoutError:
        return True
    return False


def _continue_by_instruction(partial: str) -> list[BaseMessage]:
    return [HumanMessage(content=Q), AIMessage(content=partial),
            HumanMessage(content=CONTINUATION_INSTRUCTION)]


def _continue_by_prefill(partial: str) -> list[BaseMessage]:
    return [HumanMessage(content=Q), AIMessage(content=partial)]


async def test_continuations_continue_until_the_model_ignores_them(sim_pair) -> None:
    sim, _ = sim_pair
    rest = FULL[len(PARTIAL):]
    assert (await oa(sim).ainvoke(_continue_by_instruction(PARTIAL))).content == rest
    assert (await an(sim).ainvoke(_continue_by_prefill(PARTIAL))).content == rest
    restarts = {"replay": FULL, "preamble": RESTART_PREAMBLE + FULL, "reword": reword(FULL)}
    for style, restart in restarts.items():
        sim.set_faults(ignore_continuation=True, restart_style=style)
        assert (await oa(sim).ainvoke(_continue_by_instruction(PARTIAL))).content == restart
        assert (await an(sim).ainvoke(_continue_by_prefill(PARTIAL))).content == restart
        text = "".join([str(c.content) async for c in gm(sim).astream(
            _continue_by_prefill(PARTIAL))])
        assert text == restart
    assert not reword(FULL).startswith(PARTIAL[:5])
    # a plain question is answered as always
    assert (await oa(sim).ainvoke(Q)).content == FULL


async def test_reject_prefill_gives_each_providers_400(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(reject_prefill=True)
    with pytest.raises(anthropic.BadRequestError) as refused:
        await an(sim).ainvoke(_continue_by_prefill(PARTIAL))
    assert refused.value.body["error"] == {  # type: ignore[index]
        "type": "invalid_request_error",
        "message": "This model does not support assistant message prefill. The conversation "
                   "must end with a user message."}
    with pytest.raises(openai.BadRequestError, match="does not support assistant message "
                                                     "prefill") as oa_refused:
        await oa(sim).ainvoke(_continue_by_prefill(PARTIAL))
    assert oa_refused.value.param == "messages"
    with pytest.raises(Exception, match="multiturn requests end with a user role") as g:
        await gm(sim).ainvoke(_continue_by_prefill(PARTIAL))
    assert isinstance(g.value.__cause__, google.genai.errors.ClientError)
    # the continuation instruction ends with a user message: accepted
    assert (await an(sim).ainvoke(_continue_by_instruction(PARTIAL))).content == FULL[
        len(PARTIAL):]


@pytest.mark.parametrize("client", [oa, an, gm])
async def test_stall_keeps_the_stream_open_and_silent(sim_pair, client) -> None:
    sim, _ = sim_pair
    sim.set_faults(stall_after_chunks=4)
    got: list[Any] = []
    assert await _stalls(client(sim).astream(Q), got)
    assert got and "".join(str(c.content) for c in got) != FULL
    sim.clear_faults()
    assert "".join([str(c.content) async for c in client(sim).astream(Q)]) == FULL


@pytest.mark.parametrize("client", [oa, an, gm])
async def test_malformed_event_makes_the_client_raise(sim_pair, client) -> None:
    sim, _ = sim_pair
    sim.set_faults(malformed_after_chunks=3)
    got: list[Any] = []
    with pytest.raises((json.JSONDecodeError, google.genai.errors.UnknownApiResponseError)):
        await _collect(client(sim).astream(Q), got)
    raw = httpx.post(sim.url + "/v1/chat/completions", headers={"authorization": "Bearer k"},
                     json={"model": "m", "stream": True,
                           "messages": [{"role": "user", "content": Q}]})
    events = raw.text.split("\n\n")
    assert events[3] == 'data: {"id":"chatcmpl-' and events[4:] == [""]


async def test_truncated_stream_ends_cleanly_without_a_finish(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(truncate_after_chunks=6)
    chunks = [c async for c in oa(sim).astream(Q)]  # no error: a normal end of stream
    assert chunks and not any(c.response_metadata.get("finish_reason") for c in chunks)
    text = "".join(str(c.content) for c in chunks)
    assert FULL.startswith(text) and text != FULL
    anthropic_chunks = [c async for c in an(sim).astream(Q)]
    assert not any(c.response_metadata.get("stop_reason") for c in anthropic_chunks)


async def test_drop_terminator_sends_the_finish_then_holds(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(drop_terminator=True)
    stream = await sdk(sim).chat.completions.create(
        model="m", messages=[{"role": "user", "content": Q}], stream=True,
        stream_options={"include_usage": True})
    got: list[Any] = []
    assert await _stalls(stream.__aiter__(), got)
    await stream.close()
    assert got[-2].choices[0].finish_reason == "stop" and got[-1].usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == FULL
    client = anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0)
    events: list[Any] = []
    async with client.messages.stream(model="m", max_tokens=100,
                                      messages=[{"role": "user", "content": Q}]) as s:
        assert await _stalls(s.__aiter__(), events)
    assert events[-1].type == "message_delta" and events[-1].delta.stop_reason == "end_turn"
    g_chunks: list[Any] = []
    assert await _stalls(gm(sim).astream(Q), g_chunks)
    assert g_chunks[-1].response_metadata.get("finish_reason") == "STOP"


async def test_first_token_delay_comes_after_the_headers(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(first_token_ms=800)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": Q}]}
    async with httpx.AsyncClient(base_url=sim.url) as client:
        began = time.monotonic()
        async with client.stream("POST", "/v1/chat/completions", json=body,
                                 headers={"authorization": "Bearer k"}) as resp:
            headers_s = time.monotonic() - began
            first_content_s = None
            async for line in resp.aiter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    first_content_s = time.monotonic() - began
                    break
    assert resp.status_code == 200 and headers_s < 0.4
    assert first_content_s is not None and first_content_s >= 0.79
    began = time.monotonic()
    assert (await oa(sim).ainvoke(Q)).content == FULL
    assert time.monotonic() - began >= 0.79  # a plain answer waits as long as a whole


@pytest.mark.parametrize("client", [oa, an])
async def test_reset_before_headers_is_a_connection_error(sim_pair, client) -> None:
    sim, _ = sim_pair
    sim.set_faults(reset_before_headers=True)
    with pytest.raises(CONNECTION_ERRORS):
        await client(sim).ainvoke(Q)
    with pytest.raises(httpx.ReadError, match="Connection reset by peer"):
        httpx.post(sim.url + "/v1/chat/completions", json={})
    assert sim.stats()["by_status"]["chat"] == {"reset": 2}


async def _outcome(sim) -> str:
    try:
        await oa(sim).ainvoke(Q)
    except openai.InternalServerError:
        return "down"
    return "up"


async def _at(began: float, offset_s: float) -> None:
    await asyncio.sleep(max(0.0, began + offset_s - time.monotonic()))


async def test_flapping_down_then_up_repeating(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(status=503, down_for_s=1.0, up_for_s=1.0)
    began = time.monotonic()
    seen = []
    for offset in (0.5, 1.5, 2.5, 3.5):  # the middle of each period
        await _at(began, offset)
        seen.append((await _outcome(sim), sim.faults()["active"]))
    assert seen == [("down", True), ("up", False), ("down", True), ("up", False)]


async def test_flapping_down_once_then_up_for_good(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(status=503, down_for_s=1.0)
    began = time.monotonic()
    seen = []
    for offset in (0.4, 1.6, 2.4):
        await _at(began, offset)
        seen.append(await _outcome(sim))
    assert seen == ["down", "up", "up"]
    assert sim.faults()["down_for_s"] == 1.0 and sim.faults()["active"] is False


def test_bad_faults_are_422s_naming_the_field(sim_pair) -> None:
    sim, _ = sim_pair
    for body, field in [({"restart_style": "shout"}, "restart_style"),
                        ({"stall_after_chunks": -1}, "stall_after_chunks"),
                        ({"content_filter": "both"}, "content_filter"),
                        ({"up_for_s": 2}, "up_for_s"),
                        ({"down_for_s": 0}, "down_for_s"),
                        ({"first_token_ms": "soon"}, "first_token_ms"),
                        ({"context_window_chars": 0}, "context_window_chars"),
                        ({"drop_terminators": True}, "drop_terminators")]:
        resp = httpx.post(sim.url + "/_faults", json=body, headers=sim.admin_headers)
        assert resp.status_code == 422, body
        assert resp.json()["error"]["field"] == field
    assert sim.faults()["active"] is False


def test_admin_api_needs_the_token_and_changes_nothing_without_it(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(status=500, routes=["chat"])
    assert httpx.get(sim.url + "/v1/models").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": sim.admin_token}):
        for method, path, body in [("POST", "/_faults", {"status": 503}),
                                   ("DELETE", "/_faults", None), ("GET", "/_faults", None),
                                   ("GET", "/_stats", None), ("DELETE", "/_stats", None)]:
            resp = httpx.request(method, sim.url + path, json=body, headers=headers)
            assert resp.status_code == 401, (method, path, headers)
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert "status" not in resp.text
    assert sim.faults()["status"] == 500
    assert sim.stats()["received"] == {"models": 1}


def test_admin_api_is_refused_when_no_token_was_given(tmp_path) -> None:
    port = free_port()
    child = Child(python_argv("-m", "langchain_ha.providers.simulator", "--port", str(port)),
                  name="sim-tokenless", log_path=tmp_path / "sim.log",
                  env={"LCHA_SIM_ADMIN_TOKEN": ""})
    try:
        url = f"http://127.0.0.1:{port}"
        child.wait_http(url + "/v1/models", timeout=30)
        for method, path in [("POST", "/_faults"), ("GET", "/_faults"), ("GET", "/_stats")]:
            resp = httpx.request(method, url + path, json={"status": 500},
                                 headers={"Authorization": "Bearer x"})
            assert resp.status_code == 403 and "LCHA_SIM_ADMIN_TOKEN" in resp.text
        answer = httpx.post(url + "/v1/chat/completions", headers={"authorization": "Bearer k"},
                            json={"model": "m", "messages": [{"role": "user", "content": Q}]})
        assert answer.json()["choices"][0]["message"]["content"] == FULL
    finally:
        child.stop()

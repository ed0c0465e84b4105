"""The provider simulator, driven by the real LangChain clients over HTTP."""

from __future__ import annotations

import asyncio
import math

import anthropic
import httpx
import httpx2
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from langchain_ha.providers._answers import expected_answer
from tests.support.fixtures_sim import SimProcess

Q = "How long do refunds take for annual plans?"


def oa(sim: SimProcess, key: str = "k", **kw: object) -> ChatOpenAI:
    return ChatOpenAI(base_url=sim.url + "/v1", api_key=key, model="sim-chat",  # type: ignore[arg-type]
                      max_retries=0, **kw)


def an(sim: SimProcess, key: str = "k", **kw: object) -> ChatAnthropic:
    return ChatAnthropic(base_url=sim.url, api_key=key, model="sim-claude",  # type: ignore[arg-type,call-arg]
                         max_retries=0, **kw)


@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order by its id."""
    return f"status of {order_id}"


async def test_openai_plain_and_stream_give_the_deterministic_answer(sim_pair) -> None:
    sim, _ = sim_pair
    messages = [HumanMessage(content=Q)]
    expected = expected_answer(messages)
    assert (await oa(sim).ainvoke(messages)).content == expected
    chunks = [c async for c in oa(sim, stream_usage=True).astream(messages)]
    assert "".join(str(c.content) for c in chunks) == expected
    assert len(chunks) > 10
    assert sum((c.usage_metadata or {}).get("output_tokens", 0) for c in chunks) > 0


async def test_anthropic_plain_and_stream_give_the_deterministic_answer(sim_pair) -> None:
    sim, _ = sim_pair
    messages = [SystemMessage(content="[doc:faq-7] Refunds take 5 days. Extra."),
                HumanMessage(content=Q)]
    expected = expected_answer(messages)
    assert expected.startswith("According to [doc:faq-7]: Refunds take 5 days.")
    assert (await an(sim).ainvoke(messages)).content == expected
    text = "".join([str(c.content) async for c in an(sim).astream(messages)])
    assert text == expected


@pytest.mark.parametrize("client", [oa, an])
async def test_tool_call_round_trip(sim_pair, client) -> None:
    sim, _ = sim_pair
    model = client(sim).bind_tools([order_status])
    question = HumanMessage(content="Where is my order AB-1234?")
    first = await model.ainvoke([question])
    assert first.tool_calls[0]["name"] == "order_status"
    assert first.tool_calls[0]["args"] == {"order_id": "AB-1234"}
    observation = await order_status.ainvoke(first.tool_calls[0])
    final = await model.ainvoke([question, first, observation])
    assert "AB-1234" in str(final.content)


async def test_embeddings_are_normalised_and_similar_texts_are_closer(sim_pair) -> None:
    sim, _ = sim_pair
    emb = OpenAIEmbeddings(base_url=sim.url + "/v1", api_key="k", model="sim-embed",  # type: ignore[arg-type]
                           check_embedding_ctx_length=False, dimensions=64)
    a, b, c = await emb.aembed_documents(
        ["refund policy for annual plans", "refund policy for yearly plans", "GPU driver crash"])
    assert len(a) == 64 and math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-6)
    dot = lambda x, y: sum(p * q for p, q in zip(x, y, strict=True))  # noqa: E731
    assert dot(a, b) > dot(a, c) + 0.3
    assert await emb.aembed_query("refund policy for annual plans") == a


async def test_500_and_529_raise_the_sdk_server_errors(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(status=500)
    with pytest.raises(openai.InternalServerError):
        await oa(sim).ainvoke(Q)
    sim.set_faults(status=529)
    with pytest.raises(anthropic.APIStatusError) as info:
        await an(sim).ainvoke(Q)
    assert info.value.status_code == 529
    assert sim.stats()["by_status"]["chat"] == {"500": 1, "529": 1}


async def test_429_carries_retry_after(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(status=429, retry_after_s=2)
    with pytest.raises(openai.RateLimitError) as info:
        await oa(sim).ainvoke(Q)
    assert info.value.response.headers["retry-after"] == "2"


async def test_error_rate_fails_only_a_share(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(status=503, error_rate=0.5)
    outcomes = []
    for _ in range(40):
        try:
            await oa(sim).ainvoke(Q)
            outcomes.append(True)
        except openai.InternalServerError:
            outcomes.append(False)
    assert 5 < outcomes.count(False) < 35


async def test_latency_and_hang_are_seen_as_timeouts(sim_pair) -> None:
    sim, _ = sim_pair
    sim.set_faults(latency_ms=300)
    with pytest.raises(openai.APITimeoutError):
        await oa(sim, timeout=0.1).ainvoke(Q)
    sim.set_faults(hang=True)
    with pytest.raises(openai.APITimeoutError):
        await oa(sim, timeout=0.3).ainvoke(Q)
    assert sim.stats()["received"]["chat"] == 2


@pytest.mark.parametrize("client", [oa, an])
async def test_disconnect_after_chunks_breaks_the_stream(sim_pair, client) -> None:
    sim, _ = sim_pair
    sim.set_faults(disconnect_after_chunks=4)
    got = []
    with pytest.raises((openai.APIError, anthropic.APIError, httpx.HTTPError, httpx2.HTTPError)):
        async for c in client(sim).astream(Q):
            got.append(str(c.content))
    assert "".join(got) and "".join(got) != expected_answer([("user", Q)])


async def test_invalid_key_and_context_length(sim_pair) -> None:
    sim, _ = sim_pair
    with pytest.raises(openai.AuthenticationError):
        await oa(sim, key="invalid-key").ainvoke(Q)
    with pytest.raises(openai.BadRequestError, match="maximum context length") as info:
        await oa(sim).ainvoke("x " * 60_000)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        await an(sim).ainvoke("x " * 60_000)


def test_bad_fault_json_is_a_422_naming_the_field(sim_pair) -> None:
    sim, _ = sim_pair
    for body, field in [({"error_rate": 2}, "error_rate"), ({"hang": "soon"}, "hang"),
                        ({"nope": 1}, "nope"), ({"routes": ["chat", "x"]}, "routes.1")]:
        resp = httpx.post(sim.url + "/_faults", json=body, headers=sim.admin_headers)
        assert resp.status_code == 422
        assert resp.json()["error"]["field"] == field
    assert httpx.post(sim.url + "/_faults", content=b"{not json",
                      headers=sim.admin_headers).status_code == 422
    assert sim.faults()["hang"] is False


def test_tool_api_and_route_scoped_faults(sim_pair) -> None:
    sim, _ = sim_pair
    ok = httpx.get(sim.url + "/tools/order_status/AB-1234").json()
    assert ok["order_id"] == "AB-1234" and ok == httpx.get(
        sim.url + "/tools/order_status/AB-1234").json()
    assert httpx.get(sim.url + "/tools/order_status/bad id!").status_code == 400
    assert httpx.get(sim.url + "/tools/order_status/MISSING-1").status_code == 404
    sim.set_faults(status=503, routes=["tools"])
    assert httpx.get(sim.url + "/tools/order_status/AB-1234").status_code == 503
    assert oa(sim).invoke(Q).content == expected_answer([("user", Q)])


async def test_refund_api_executes_once_per_idempotency_key(sim_pair) -> None:
    sim, _ = sim_pair
    sim.reset_stats()
    url = sim.url + "/tools/refunds"
    async with httpx.AsyncClient(timeout=10) as c:
        first = await c.post(url, json={"order_id": "AB-1234"}, headers={"Idempotency-Key": "k1"})
        again = await c.post(url, json={"order_id": "AB-1234"}, headers={"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json() and first.json()["refund_id"]
        assert again.headers["idempotent-replayed"] == "true"
        other = await c.post(url, json={"order_id": "CD-5678"}, headers={"Idempotency-Key": "k1"})
        assert other.status_code == 422
        bad = await c.post(url, json={"order": "AB-1234"})
        assert bad.status_code == 400 and "order_id" in bad.text
        # A twin sent while the first is executing gets 409; its retry gets the answer.
        sim.set_faults(latency_ms=400, routes=["tools"])
        slow = asyncio.ensure_future(
            c.post(url, json={"order_id": "EF-9012"}, headers={"Idempotency-Key": "k2"}))
        await asyncio.sleep(0.15)
        twin = await c.post(url, json={"order_id": "EF-9012"}, headers={"Idempotency-Key": "k2"})
        assert twin.status_code == 409
        done = await slow
        sim.clear_faults()
        retry = await c.post(url, json={"order_id": "EF-9012"}, headers={"Idempotency-Key": "k2"})
        assert retry.json() == done.json()
        # A fault before execution releases the key: the retry executes.
        sim.set_faults(status=503, routes=["tools"])
        failed = await c.post(url, json={"order_id": "GH-3456"}, headers={"Idempotency-Key": "k3"})
        assert failed.status_code == 503
        sim.clear_faults()
        ok = await c.post(url, json={"order_id": "GH-3456"}, headers={"Idempotency-Key": "k3"})
        assert ok.status_code == 200
        # No key: every request executes (what a non-idempotent retry costs).
        await c.post(url, json={"order_id": "AB-1234"})
        await c.post(url, json={"order_id": "AB-1234"})
    ledger = sim.stats()["refunds"]
    assert ledger["executed"] == 5  # k1, k2, k3 once each, and two without a key
    assert ledger["requests_by_key"] == {"k1": 3, "k2": 3, "k3": 2}

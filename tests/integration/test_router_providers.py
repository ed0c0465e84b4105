"""The router across provider kinds over HTTP: Gemini's errors, context windows, refusals,
tools and structured output, LangChain agents, and a primary that comes back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.exceptions import ModelRefusalError
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from langchain_ha.providers import expected_answer
from langchain_ha.resilience.breaker import BreakerConfig
from langchain_ha.resilience.chat import Provider, ResilientChatModel
from langchain_ha.resilience.errors import AllProvidersFailed
from langchain_ha.store.breakers import PgBreakerStore
from tests.support.fixtures_sim import SimProcess
from tests.support.sim_clients import an, gm, oa

Q = "Which plans include priority support?"
ANSWER = expected_answer([("user", Q)])


@pytest.fixture
def kinds(sim_trio: tuple[SimProcess, SimProcess, SimProcess]
         ) -> tuple[SimProcess, SimProcess, SimProcess]:
    """Three clean simulators: here a Gemini, an OpenAI and an Anthropic provider."""
    return sim_trio


def gemini_first(kinds: tuple[SimProcess, SimProcess, SimProcess], **kw: Any
                 ) -> ResilientChatModel:
    g, o, a = kinds
    return ResilientChatModel(providers=[
        Provider(name="gemini", model=gm(g)), Provider(name="openai", model=oa(o)),
        Provider(name="anthropic", model=an(a))], **kw)


@pytest.mark.parametrize("fault", [
    {"status": 429, "retry_after_s": 3}, {"status": 503}, {"status": 401}, {"status": 500},
])
async def test_gemini_errors_fail_over(kinds, fault: dict[str, Any]) -> None:
    """langchain-google-genai raises LangChain's taxonomy without a status: still failed over."""
    g, _o, _ = kinds
    g.set_faults(**fault, routes=["chat"])
    llm = gemini_first(kinds)
    for _ in range(5):
        msg = await llm.ainvoke(Q)
        assert msg.content == ANSWER and msg.response_metadata["lcha"]["provider"] == "openai"
    assert g.calls() <= 3  # the breaker (429: its Retry-After) keeps the failing key out
    text = "".join([str(c.content) async for c in llm.astream(Q)])
    assert text == ANSWER


async def test_a_context_overflow_goes_only_to_a_larger_window(kinds) -> None:
    g, o, a = kinds
    question = "Summarise this: " + "word " * 2000
    g.set_faults(context_window_chars=2000, routes=["chat"])
    o.set_faults(context_window_chars=4000, routes=["chat"])
    llm = ResilientChatModel(providers=[
        Provider(name="gemini", model=gm(g), context_window=500),
        Provider(name="openai-small", model=oa(o), context_window=500),
        Provider(name="anthropic-big", model=an(a), context_window=200_000)])
    msg = await llm.ainvoke(question)
    assert msg.response_metadata["lcha"]["provider"] == "anthropic-big"
    assert (g.calls(), o.calls(), a.calls()) == (1, 0, 1)


async def test_a_refusal_is_not_retried_and_says_why(kinds) -> None:
    g, o, _ = kinds
    o.set_faults(refuse=True, routes=["chat"])
    llm = ResilientChatModel(providers=[Provider(name="openai", model=oa(o)),
                                        Provider(name="gemini", model=gm(g))])
    msg = await llm.ainvoke(Q)
    assert msg.response_metadata["lcha"]["refusal"] == "refusal"
    assert (o.calls(), g.calls()) == (1, 0)
    o.set_faults(content_filter="prompt", routes=["chat"])
    with pytest.raises(ModelRefusalError) as info:
        await llm.ainvoke(Q)
    assert getattr(info.value, "reason", None) == "content_filter"
    assert g.calls() == 0
    fallback = ResilientChatModel(providers=llm.providers, refusal_fallback=True)
    msg = await fallback.ainvoke(Q)
    assert msg.content == ANSWER and msg.response_metadata["lcha"]["provider"] == "gemini"


async def test_a_bad_request_is_not_sent_to_every_provider(kinds) -> None:
    g, o, a = kinds
    g.set_faults(status=400, routes=["chat"])
    with pytest.raises(AllProvidersFailed):
        await gemini_first(kinds).ainvoke(Q)
    assert (o.calls(), a.calls()) == (0, 0)


@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order by its id."""
    return (f'{{"order_id": "{order_id}", "status": "shipped", "eta_days": 2, "carrier": "DHL"}}')


class Ticket(BaseModel):
    """A support ticket."""

    order_id: str


@pytest.mark.parametrize("down", ["gemini", "openai"])
async def test_tools_and_structured_output_across_provider_kinds(kinds, down: str) -> None:
    g, o, _ = kinds
    {"gemini": g, "openai": o}[down].set_faults(status=503, routes=["chat"])
    llm = gemini_first(kinds)
    msg = await llm.bind_tools([order_status]).ainvoke("Where is order AB-1234?")
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [
        ("order_status", {"order_id": "AB-1234"})]
    assert msg.response_metadata["lcha"]["provider"] != down
    ticket = await llm.with_structured_output(Ticket).ainvoke("Open a ticket for order CD-9876")
    assert ticket == Ticket(order_id="CD-9876")
    streamed = [c async for c in llm.bind_tools([order_status]).astream("Where is order EF-5555?")]
    total = streamed[0]
    for c in streamed[1:]:
        total = total + c
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [  # type: ignore[attr-defined]
        ("order_status", {"order_id": "EF-5555"})]


async def test_an_agent_finishes_a_multi_step_tool_task_while_the_primary_goes_down(
        kinds) -> None:
    """LangChain's create_agent over the router: the primary answers the first step (a tool
    call for each order), then goes down; the fallbacks of other kinds finish the task."""
    g, o, a = kinds
    llm = ResilientChatModel(providers=[
        Provider(name="openai", model=oa(o)), Provider(name="anthropic", model=an(a)),
        Provider(name="gemini", model=gm(g))])
    steps: list[str] = []

    @tool
    def order_lookup(order_id: str) -> str:
        """Look up the status of an order by its id."""
        steps.append(order_id)
        if len(steps) == 1:
            o.set_faults(status=500, routes=["chat"])  # the primary dies mid-conversation
        return order_status.invoke({"order_id": order_id})

    agent = create_agent(llm, tools=[order_lookup])
    out = await agent.ainvoke({"messages": [HumanMessage(
        content="Where are orders AB-1234 and CD-5678?")]})
    messages = out["messages"]
    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    assert sorted(c["args"]["order_id"] for c in calls) == ["AB-1234", "CD-5678"]
    assert len([m for m in messages if isinstance(m, ToolMessage)]) == 2
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert "AB-1234" in str(final.content) and "CD-5678" in str(final.content)
    providers = [m.response_metadata["lcha"]["provider"] for m in messages
                 if isinstance(m, AIMessage)]
    assert providers[0] == "openai" and providers[-1] != "openai"


@pytest.mark.slow
async def test_a_primary_down_60_s_is_used_again_within_30_s_of_recovery(
        kinds, store_db: Any) -> None:
    """Two replicas' routers share their breakers through PostgreSQL.  The primary is down
    for 60 s; 20 requests spread over 90 s are all answered, the primary serves again within
    30 s of its recovery, and it was probed at most once per open interval meanwhile."""
    g, o, _ = kinds
    o.set_faults(status=503, down_for_s=60, routes=["chat"])
    began = time.monotonic()
    namespace = f"t{int(time.time() * 1000)}:"
    replicas = [ResilientChatModel(
        providers=[Provider(name="openai", model=oa(o)), Provider(name="gemini", model=gm(g))],
        breaker_store=PgBreakerStore(store_db, namespace=namespace),
        breaker=BreakerConfig(sync_interval_s=0.5)) for _ in range(2)]
    served: list[tuple[float, str]] = []
    for i in range(20):
        at = began + i * 90 / 19
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        msg = await replicas[i % 2].ainvoke(Q)
        assert msg.content == ANSWER
        served.append((time.monotonic() - began, msg.response_metadata["lcha"]["provider"]))
    back = [t for t, p in served if p == "openai" and t >= 60]
    print(served)
    assert back and back[0] - 60 <= 30
    assert all(p == "openai" for t, p in served if t >= back[0])
    # calls during the outage: the cold probes, then one per open interval (5, 10, 20, 20 s)
    errors = o.stats()["by_status"]["chat"].get("503", 0)
    assert errors <= 3 + 6

"""ResilientChatModel over real ChatOpenAI / ChatAnthropic clients and simulator processes."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from langchain_ha.providers._answers import expected_answer
from langchain_ha.resilience.breaker import BreakerState
from langchain_ha.resilience.chat import Provider, ResilientChatModel
from langchain_ha.resilience.degrade import degradation_scope
from langchain_ha.resilience.errors import AllProvidersFailed
from tests.support.fixtures_sim import SimProcess

Q = "Which plans include priority support?"
EXPECTED = expected_answer([("user", Q)])


def router(primary: SimProcess, secondary: SimProcess, **kw: object) -> ResilientChatModel:
    return ResilientChatModel(providers=[
        Provider(name="openai", model=ChatOpenAI(
            base_url=primary.url + "/v1", api_key="k", model="sim-chat", max_retries=0)),  # type: ignore[arg-type]
        Provider(name="anthropic", model=ChatAnthropic(  # type: ignore[call-arg]
            base_url=secondary.url, api_key="k", model="sim-claude", max_retries=0)),  # type: ignore[arg-type]
    ], **kw)  # type: ignore[arg-type]


async def _many(model: ResilientChatModel, n: int, concurrency: int = 10) -> list[str]:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> str:
        async with sem:
            return str((await model.ainvoke([HumanMessage(content=Q)])).content)

    return await asyncio.gather(*(one() for _ in range(n)))


@pytest.mark.parametrize("fault", [
    {"status": 500}, {"status": 503}, {"status": 529}, {"status": 429, "retry_after_s": 2},
    {"error_rate": 0.5, "status": 502},
])
async def test_provider_errors_cost_no_failed_answers(sim_pair, fault) -> None:
    primary, secondary = sim_pair
    primary.set_faults(**fault)
    answers = await _many(router(primary, secondary), 60)
    assert answers == [EXPECTED] * 60
    if fault.get("error_rate") is None:
        assert primary.calls() <= 4  # the cold gate and the breaker keep the dead primary out


async def test_hanging_primary_is_hedged(sim_pair) -> None:
    primary, secondary = sim_pair
    primary.set_faults(hang=True)
    began = time.monotonic()
    answers = await _many(router(primary, secondary), 40)
    assert answers == [EXPECTED] * 40
    assert time.monotonic() - began < 5


async def test_slow_primary_loses_to_the_hedge_and_the_breaker_opens(sim_pair) -> None:
    primary, secondary = sim_pair
    model = router(primary, secondary)
    await _many(model, 20)  # warm: the primary is proven and has a latency history
    primary.set_faults(latency_ms=2000)
    answers = await _many(model, 40)
    assert answers == [EXPECTED] * 40
    assert model.breakers["openai"].state is BreakerState.OPEN


async def test_mid_stream_disconnect_is_continued_on_the_fallback(sim_pair) -> None:
    primary, secondary = sim_pair
    primary.set_faults(disconnect_after_chunks=3)
    with degradation_scope() as degraded:
        chunks = [c async for c in router(primary, secondary).astream(Q)]
    assert "".join(str(c.content) for c in chunks) == EXPECTED
    assert degraded == {"primary_llm"}
    assert any(c.response_metadata.get("lcha_failovers") for c in chunks)


async def test_sync_stream_and_invoke_work_with_real_clients(sim_pair) -> None:
    primary, secondary = sim_pair
    primary.set_faults(status=500)
    model = router(primary, secondary)
    assert await asyncio.to_thread(lambda: model.invoke(Q).content) == EXPECTED
    text = await asyncio.to_thread(lambda: "".join(str(c.content) for c in model.stream(Q)))
    assert text == EXPECTED


async def test_bad_key_on_primary_falls_back(sim_pair) -> None:
    primary, _secondary = sim_pair
    model = ResilientChatModel(providers=[
        Provider(name="key1", model=ChatOpenAI(base_url=primary.url + "/v1",
                 api_key="invalid-1", model="sim-chat", max_retries=0)),  # type: ignore[arg-type]
        Provider(name="key2", model=ChatOpenAI(base_url=primary.url + "/v1",
                 api_key="good", model="sim-chat", max_retries=0)),  # type: ignore[arg-type]
    ])
    msg = await model.ainvoke(Q)
    assert msg.content == EXPECTED and msg.response_metadata["lcha"]["provider"] == "key2"


async def test_all_down_raises_an_exception_group(sim_pair) -> None:
    primary, secondary = sim_pair
    primary.set_faults(status=500)
    secondary.set_faults(status=503)
    with pytest.raises(AllProvidersFailed) as info:
        await router(primary, secondary).ainvoke(Q)
    assert len(info.value.exceptions) >= 2


@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order by its id."""
    return f"order {order_id} is packed"


class Ticket(BaseModel):
    """A support ticket."""

    order_id: str


async def test_bind_tools_and_structured_output_survive_failover(sim_pair) -> None:
    primary, secondary = sim_pair
    primary.set_faults(status=500)
    model = router(primary, secondary)
    msg = await model.bind_tools([order_status]).ainvoke("Where is order AB-1234?")
    assert msg.tool_calls[0]["args"] == {"order_id": "AB-1234"}
    assert msg.response_metadata["lcha"]["provider"] == "anthropic"
    ticket = await model.with_structured_output(Ticket).ainvoke("Open a ticket for order CD-9876")
    assert ticket == Ticket(order_id="CD-9876")

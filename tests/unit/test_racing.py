"""The inline lead attempt and its hedges: who wins, who is cancelled, and whose cancel it is."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.outputs import ChatResult

from langchain_ha.resilience.chat import Provider, ResilientChatModel
from langchain_ha.resilience.errors import AllProvidersFailed
from langchain_ha.resilience.events import RecordingEvents
from langchain_ha.resilience.hedging import HedgePolicy
from tests.support.scripted import FULL, ProviderError, Scripted

HEDGE = HedgePolicy(cold_delay_s=0.1)


def router(*models: Scripted, **kw: Any) -> ResilientChatModel:
    providers = [Provider(name=m.label, model=m) for m in models]
    kw.setdefault("hedge", HEDGE)
    return ResilientChatModel(providers=providers, **kw)


def _others_running() -> list[asyncio.Task[Any]]:
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me and not t.done()]


class CancelsCaller(Scripted):
    """Answers, and has ``victim`` cancelled in the same loop turn (a caller giving up then).

    Scheduled, so the cancel lands after our hedge callback has interrupted the lead: both
    cancellations are pending at once, and the caller's must win.
    """

    victim: Any = None

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        result = await super()._agenerate(messages, stop, run_manager, **kwargs)
        asyncio.get_running_loop().call_soon(self.victim.cancel)
        return result


async def test_a_winning_hedge_interrupts_the_lead_and_leaves_the_caller_uncancelled() -> None:
    events = RecordingEvents()
    a, b = Scripted(label="a", delay_s=30), Scripted(label="b", delay_s=0.01)
    msg = await router(a, b, events=events).ainvoke("hi")
    assert msg.response_metadata["lcha"] == {
        "provider": "b", "fallback": True, "attempts": 2, "hedged": True}
    assert ("on_hedge", "a", "b") in events.events
    await router(a, b)._agenerate([HumanMessage("hi")])  # in this very task, no gather between
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # the caller's task is still usable: no cancellation left over
    assert _others_running() == []


async def test_a_failed_hedge_starts_the_next_provider_while_the_lead_runs() -> None:
    a = Scripted(label="a", delay_s=30)
    b = Scripted(label="b", delay_s=0.05, fail=ProviderError(503))
    c = Scripted(label="c", delay_s=0.01)
    began = time.monotonic()
    msg = await router(a, b, c).ainvoke("hi")
    assert msg.response_metadata["lcha"]["provider"] == "c"
    assert time.monotonic() - began < 1.0
    assert (a.calls, b.calls, c.calls) == (1, 1, 1)


async def test_a_fatal_hedge_failure_ends_the_request_without_waiting_for_the_lead() -> None:
    a = Scripted(label="a", delay_s=30)
    b = Scripted(label="b", delay_s=0.01, fail=ProviderError(400, "bad request"))
    began = time.monotonic()
    with pytest.raises(AllProvidersFailed):
        await router(a, b).ainvoke("hi")
    assert time.monotonic() - began < 1.0
    assert _others_running() == []


async def test_the_lead_winning_cancels_a_hedge_in_flight() -> None:
    a, b = Scripted(label="a", delay_s=0.3), Scripted(label="b", delay_s=5)
    began = time.monotonic()
    msg = await router(a, b).ainvoke("hi")
    assert msg.response_metadata["lcha"]["provider"] == "a"
    assert msg.response_metadata["lcha"]["hedged"] is True
    assert time.monotonic() - began < 1.0
    assert b.calls == 1 and _others_running() == []


async def test_cancelling_the_caller_cancels_the_lead_and_its_hedges() -> None:
    a, b = Scripted(label="a", delay_s=30), Scripted(label="b", delay_s=30)
    r = router(a, b)
    call = asyncio.create_task(r.ainvoke("hi"))
    await asyncio.sleep(0.3)  # past the hedge delay: both providers are in flight
    assert (a.calls, b.calls) == (1, 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.01)
    assert _others_running() == []
    # Both permits were given back: the providers can be called again at once.
    a.delay_s = b.delay_s = 0.0
    msg = await r.ainvoke("hi")
    assert msg.content == FULL


async def test_a_caller_cancelling_as_a_hedge_wins_is_not_swallowed() -> None:
    a = Scripted(label="a", delay_s=30)
    b = CancelsCaller(label="b", delay_s=0.01)
    # The router's own coroutine in the caller's task: ainvoke would add LangChain's gather,
    # whose own cancel flag would hide a swallowed cancellation.
    call = asyncio.create_task(router(a, b)._agenerate([HumanMessage("hi")]))
    b.victim = call
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.01)
    assert _others_running() == []


async def test_a_stream_whose_lead_hangs_opens_on_the_hedge() -> None:
    a, b = Scripted(label="a", delay_s=30), Scripted(label="b", delay_s=0.01)
    began = time.monotonic()
    chunks = [c async for c in router(a, b).astream("hi")]
    assert "".join(str(c.content) for c in chunks) == FULL
    meta = next(c.response_metadata["lcha"] for c in chunks if "lcha" in c.response_metadata)
    assert meta["provider"] == "b" and meta["hedged"] is True
    assert time.monotonic() - began < 1.0
    assert _others_running() == []


async def test_the_leads_attempt_timeout_is_a_timeout_failure_then_the_next_provider() -> None:
    events = RecordingEvents()
    a, b = Scripted(label="a", delay_s=30), Scripted(label="b")
    # The hedge would come after 5 s; the attempt timeout (0.2 s) ends the lead first.
    r = router(a, b, events=events, attempt_timeout_s=0.2, hedge=HedgePolicy(cold_delay_s=5.0))
    began = time.monotonic()
    msg = await r._agenerate([HumanMessage("hi")])
    assert 0.2 <= time.monotonic() - began < 1.0
    assert msg.generations[0].message.response_metadata["lcha"]["provider"] == "b"
    failures = [e for e in events.events if e[0] == "on_failure"]
    assert [(e[1], e[3]) for e in failures] == [("a", "timeout")]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0

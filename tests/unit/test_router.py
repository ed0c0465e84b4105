"""ResilientChatModel routing: fallbacks, breakers, hedging, streams, deadlines."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_core.messages import HumanMessage

from langchain_ha.resilience.breaker import BreakerConfig, BreakerState
from langchain_ha.resilience.chat import CONTINUATION_INSTRUCTION, Provider, ResilientChatModel
from langchain_ha.resilience.deadline import deadline
from langchain_ha.resilience.degrade import degradation_scope
from langchain_ha.resilience.errors import AllProvidersFailed, StreamInterrupted
from langchain_ha.resilience.events import RecordingEvents
from langchain_ha.resilience.hedging import HedgePolicy
from langchain_ha.resilience.retry import RetryPolicy
from tests.support.scripted import FULL, ProviderError, Scripted


def router(*models: Scripted, **kw: object) -> ResilientChatModel:
    providers = [Provider(name=m.label, model=m) for m in models]
    return ResilientChatModel(providers=providers, **kw)  # type: ignore[arg-type]


async def test_healthy_primary_answers_and_is_not_degraded() -> None:
    a, b = Scripted(label="a"), Scripted(label="b")
    with degradation_scope() as degraded:
        msg = await router(a, b).ainvoke("hi")
    assert msg.content == FULL
    assert msg.response_metadata["lcha"] == {
        "provider": "a", "fallback": False, "attempts": 1, "hedged": False}
    assert (a.calls, b.calls) == (1, 0)
    assert degraded == set()


async def test_outage_fails_over_and_breaker_bounds_primary_calls() -> None:
    a = Scripted(label="a", fail=ProviderError(500))
    b = Scripted(label="b")
    events = RecordingEvents()
    r = router(a, b, events=events, breaker=BreakerConfig(minimum_calls=5, cold_probes=3))
    for _ in range(30):
        with degradation_scope() as degraded:
            msg = await r.ainvoke("hi")
        assert msg.content == FULL
        assert msg.response_metadata["lcha"]["provider"] == "b"
        assert degraded == {"primary_llm"}
    assert a.calls == 3  # never answered: cold_probes failures in a row open the breaker
    assert r.breakers["a"].state is BreakerState.OPEN
    assert ("on_breaker_transition", "a", "closed", "open") in events.events


async def test_outage_of_a_proven_provider_opens_on_the_failure_rate() -> None:
    a, b = Scripted(label="a"), Scripted(label="b")
    r = router(a, b, breaker=BreakerConfig(window_size=20, minimum_calls=5))
    for _ in range(10):
        await r.ainvoke("hi")
    a.fail = ProviderError(503)
    for _ in range(30):
        assert (await r.ainvoke("hi")).content == FULL
    assert a.calls == 10 + 10  # 10 failures next to 10 successes reach the 50 % threshold
    assert r.breakers["a"].state is BreakerState.OPEN


async def test_concurrent_outage_wave_is_bounded_by_cold_gate() -> None:
    a = Scripted(label="a", fail=ProviderError(500), delay_s=0.01)
    b = Scripted(label="b", delay_s=0.01)
    r = router(a, b)
    results = await asyncio.gather(*(r.ainvoke("hi") for _ in range(40)))
    assert all(m.content == FULL for m in results)
    assert a.calls <= 8


async def test_rate_limit_with_retry_after_opens_breaker_at_once() -> None:
    a = Scripted(label="a", fail=ProviderError(429, headers={"retry-after": "2"}))
    b = Scripted(label="b")
    r = router(a, b)
    for _ in range(10):
        assert (await r.ainvoke("hi")).content == FULL
    assert a.calls == 1
    assert r.breakers["a"].state is BreakerState.OPEN


async def test_fatal_client_error_is_not_retried_elsewhere() -> None:
    a = Scripted(label="a", fail=ProviderError(400, "bad request: messages malformed"))
    b = Scripted(label="b")
    with pytest.raises(AllProvidersFailed) as info:
        await router(a, b).ainvoke("hi")
    assert b.calls == 0
    assert [type(e) for e in info.value.exceptions] == [ProviderError]


async def test_auth_error_falls_back_for_that_key_only() -> None:
    a = Scripted(label="a", fail=ProviderError(401, "invalid api key"))
    b = Scripted(label="b")
    r = router(a, b, retry=RetryPolicy(max_rounds=3))
    assert (await r.ainvoke("hi")).response_metadata["lcha"]["provider"] == "b"
    assert a.calls == 1  # not retried in later rounds of the same request


async def test_context_length_only_goes_to_a_larger_window() -> None:
    small = Scripted(label="small", fail=ProviderError(400, "context_length_exceeded: too long"))
    also_small = Scripted(label="also_small")
    big = Scripted(label="big")
    r = ResilientChatModel(providers=[
        Provider(name="small", model=small, context_window=8000),
        Provider(name="also_small", model=also_small, context_window=8000),
        Provider(name="big", model=big, context_window=128000),
    ])
    msg = await r.ainvoke("hi")
    assert msg.response_metadata["lcha"]["provider"] == "big"
    assert also_small.calls == 0


async def test_every_failure_is_reported_and_input_is_not_mutated() -> None:
    a = Scripted(label="a", fail=ProviderError(503))
    b = Scripted(label="b", fail=ConnectionError("refused"))
    messages = [HumanMessage(content="hi")]
    before = [m.model_copy(deep=True) for m in messages]
    r = router(a, b, retry=RetryPolicy(max_rounds=2, base_delay_s=0.001))
    with pytest.raises(AllProvidersFailed) as info:
        await r.ainvoke(messages)
    kinds = [type(e).__name__ for e in info.value.exceptions]
    assert kinds.count("ProviderError") == 2 and kinds.count("ConnectionError") == 2
    assert messages == before


async def test_hang_is_hedged_to_the_next_provider() -> None:
    a = Scripted(label="a", delay_s=30)
    b = Scripted(label="b", delay_s=0.01)
    r = router(a, b, hedge=HedgePolicy(cold_delay_s=0.1))
    began = time.monotonic()
    msg = await r.ainvoke("hi")
    assert msg.response_metadata["lcha"]["provider"] == "b"
    assert msg.response_metadata["lcha"]["hedged"] is True
    assert time.monotonic() - began < 1.0


async def test_hedging_off_waits_for_the_attempt_timeout() -> None:
    a = Scripted(label="a", delay_s=30)
    b = Scripted(label="b")
    r = router(a, b, hedge=HedgePolicy(enabled=False), attempt_timeout_s=0.2)
    began = time.monotonic()
    msg = await r.ainvoke("hi")
    assert msg.response_metadata["lcha"]["provider"] == "b"
    assert 0.2 <= time.monotonic() - began < 1.0


async def test_deadline_bounds_the_whole_request() -> None:
    a, b = Scripted(label="a", delay_s=30), Scripted(label="b", delay_s=30)
    r = router(a, b, hedge=HedgePolicy(cold_delay_s=0.05))
    began = time.monotonic()
    with deadline(0.3), pytest.raises(AllProvidersFailed):
        await r.ainvoke("hi")
    assert time.monotonic() - began < 0.8


async def test_stream_failover_before_first_chunk_is_transparent() -> None:
    a = Scripted(label="a", fail=ProviderError(502))
    b = Scripted(label="b")
    chunks = [c async for c in router(a, b).astream("hi")]
    assert "".join(str(c.content) for c in chunks) == FULL


async def test_stream_cut_mid_way_continues_on_the_fallback() -> None:
    a = Scripted(label="a", cut_after=3)
    b = Scripted(label="b")
    with degradation_scope() as degraded:
        chunks = [c async for c in router(a, b).astream("hi")]
    assert "".join(str(c.content) for c in chunks) == FULL
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    meta = total.response_metadata
    assert meta["lcha_failovers"][0]["from"] == "a" and meta["lcha_failovers"][0]["to"] == "b"
    assert meta["lcha"]["continued_after"] == ["a"]
    assert degraded == {"primary_llm"}
    assert str(b.seen[0][-1].content).startswith(CONTINUATION_INSTRUCTION)


async def test_stream_cut_can_raise_with_the_partial_text() -> None:
    a = Scripted(label="a", cut_after=3)
    b = Scripted(label="b")
    got = []
    with pytest.raises(StreamInterrupted) as info:
        async for c in router(a, b, stream_failover="raise").astream("hi"):
            got.append(str(c.content))
    assert info.value.partial_text == "".join(got) == "the quick brown "
    assert info.value.provider == "a"


def test_sync_invoke_and_stream_use_the_same_core_with_sync_clients() -> None:
    a = Scripted(label="a", fail=ProviderError(500))
    b = Scripted(label="b")
    r = router(a, b)
    with degradation_scope() as degraded:
        assert r.invoke("hi").content == FULL
        assert "".join(str(c.content) for c in r.stream("hi")) == FULL
    assert degraded == {"primary_llm"}


async def test_batch_answers_every_input() -> None:
    r = router(Scripted(label="a"), Scripted(label="b"))
    out = await r.abatch(["x", "y", "z"])
    assert [m.content for m in out] == [FULL] * 3


def test_duplicate_provider_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate provider name"):
        router(Scripted(label="a"), Scripted(label="a"))


async def test_a_content_filter_rejection_is_a_refusal_and_is_not_sent_elsewhere() -> None:
    from langchain_core.exceptions import ModelRefusalError

    from langchain_ha.resilience.errors import ProviderRefused

    a = Scripted(label="a", fail=ProviderError(
        400, "The response was filtered due to the prompt triggering Azure OpenAI's content "
             "management policy (content_filter)"))
    b = Scripted(label="b")
    r = router(a, b)
    with pytest.raises(ModelRefusalError) as info:
        await r.ainvoke("hi")
    assert isinstance(info.value, ProviderRefused)
    assert (info.value.provider, info.value.reason) == ("a", "content_filter")
    assert isinstance(info.value.__cause__, ProviderError)
    assert (a.calls, b.calls) == (1, 0)
    assert r.breakers["a"].state is BreakerState.CLOSED  # a healthy provider said no


async def test_a_refused_answer_is_returned_with_its_reason_and_not_retried() -> None:
    a, b = Scripted(label="a", refuse=True), Scripted(label="b")
    msg = await router(a, b).ainvoke("hi")
    assert msg.response_metadata["lcha"]["refusal"] == "refusal"
    assert msg.additional_kwargs["refusal"]
    assert (a.calls, b.calls) == (1, 0)


async def test_with_refusal_fallback_the_next_provider_is_asked() -> None:
    a, b = Scripted(label="a", refuse=True), Scripted(label="b")
    msg = await router(a, b, refusal_fallback=True).ainvoke("hi")
    assert msg.content == FULL and msg.response_metadata["lcha"]["provider"] == "b"
    assert (a.calls, b.calls) == (1, 1)

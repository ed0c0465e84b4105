"""The router's streaming failover over HTTP, with the real clients and disobedient models.

ChatOpenAI, ChatAnthropic and ChatGoogleGenerativeAI talk to simulator processes whose faults
make the models misbehave the way real ones do: ignore a request to continue, reject a
prefill, stall, send a malformed chunk, end a stream without its finish reason.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage

from langchain_ha.providers import expected_answer
from langchain_ha.resilience.chat import Provider, ResilientChatModel
from langchain_ha.resilience.continuation import accept_restarts, assemble
from langchain_ha.resilience.errors import StreamInterrupted
from tests.support.fixtures_sim import SimProcess
from tests.support.sim_clients import an, gm, oa

QUESTIONS = [f"What is the status of refund request number {i} for the annual plan?"
             for i in range(11)]


def model(*providers: Provider, **kw: Any) -> ResilientChatModel:
    return ResilientChatModel(providers=list(providers), **kw)


async def stream_text(llm: ResilientChatModel, question: str) -> tuple[str, list[AIMessageChunk]]:
    chunks = [c async for c in llm.astream([HumanMessage(content=question)])]
    return "".join(str(c.content) for c in chunks), chunks


@pytest.fixture
def trio(sim_trio: tuple[SimProcess, SimProcess, SimProcess]
         ) -> tuple[SimProcess, SimProcess, SimProcess]:
    """Three clean simulators: here an OpenAI, an Anthropic and a Gemini API in turn."""
    return sim_trio


async def test_400_cut_streams_with_a_fallback_that_ignores_continuation(trio) -> None:
    """Streams cut at random points; the fallback restarts instead of continuing (word for
    word, after a preamble, or in other words).  Every caller gets the answer exactly once,
    or a clean StreamInterrupted holding only text of the answer: never a repeat or a gap."""
    primary, fallback, _ = trio
    rng = random.Random(12)
    outcomes: Counter[str] = Counter()
    for style in ("replay", "preamble", "reword"):
        fallback.set_faults(ignore_continuation=True, restart_style=style, routes=["chat"])
        for cut in range(1, 13):
            primary.set_faults(disconnect_after_chunks=cut, routes=["chat"])
            kinds = ["openai", "anthropic"] if cut % 2 else ["anthropic", "openai"]
            for kind in kinds:  # the fallback with a prefill (Anthropic) or a user message
                asked = rng.sample(QUESTIONS, 5 if kind == "openai" else 6)

                async def one(question: str, kind: str = kind) -> str:
                    # A fresh router per stream: each one meets the cut (a shared one would
                    # soon open the primary's breaker and skip it).
                    fb = (Provider(name="fb", model=an(fallback), accepts_prefill=True)
                          if kind == "anthropic" else Provider(name="fb", model=oa(fallback)))
                    llm = model(Provider(name="primary", model=oa(primary)), fb)
                    want = expected_answer([("user", question)])
                    try:
                        text, chunks = await stream_text(llm, question)
                    except StreamInterrupted as exc:
                        assert want.startswith(exc.partial_text), exc.partial_text
                        return "clean_error"
                    assert text == want
                    meta = next(c.response_metadata["lcha"] for c in chunks
                                if "lcha" in c.response_metadata)
                    return "continued" if meta.get("continued_after") else "answered"

                outcomes.update(await asyncio.gather(*(one(q) for q in asked)))
    print(dict(outcomes))
    assert sum(outcomes.values()) == 3 * 12 * 11 == 396
    # A word-for-word restart is always spliced; only a restart in other words may end in a
    # clean error (the router will not guess where the new wording has got to).  A cut after
    # the first event (the role) comes before any text: a plain failover.
    assert outcomes["continued"] >= 2 * 11 * 11
    assert outcomes["clean_error"] <= 11 * 11


async def test_a_reworded_restart_is_a_restart_signal_for_a_consumer_that_honours_it(
        trio) -> None:
    primary, fallback, _ = trio
    primary.set_faults(disconnect_after_chunks=6, routes=["chat"])
    fallback.set_faults(ignore_continuation=True, restart_style="reword", routes=["chat"])
    llm = model(Provider(name="primary", model=oa(primary)),
                Provider(name="fb", model=oa(fallback)))
    with accept_restarts():
        _, chunks = await stream_text(llm, QUESTIONS[0])
    total = assemble(chunks)
    from langchain_ha.providers._answers import reword

    assert total is not None
    assert total.content == reword(expected_answer([("user", QUESTIONS[0])]))
    assert total.response_metadata["lcha"]["restarted"] is True


@pytest.mark.parametrize("fault", [
    {"stall_after_chunks": 5},
    {"malformed_after_chunks": 5},
    {"malformed_after_chunks": 1},
    {"truncate_after_chunks": 5},
    {"reset_before_headers": True},
])
async def test_stream_faults_of_the_primary_cost_nothing(trio, fault: dict[str, Any]) -> None:
    primary, secondary, third = trio
    primary.set_faults(**fault, routes=["chat"])
    llm = model(Provider(name="primary", model=oa(primary)),
                Provider(name="anthropic", model=an(secondary)),
                Provider(name="gemini", model=gm(third)), stream_idle_timeout_s=0.5)
    began = time.monotonic()
    for question in QUESTIONS[:3]:
        text, _chunks = await stream_text(llm, question)
        assert text == expected_answer([("user", question)])
    assert time.monotonic() - began < 6


async def test_a_primary_that_holds_the_stream_after_finishing_is_not_waited_for(trio) -> None:
    primary, secondary, _ = trio
    primary.set_faults(drop_terminator=True, routes=["chat"])
    llm = model(Provider(name="primary", model=oa(primary)),
                Provider(name="anthropic", model=an(secondary)), stream_finish_grace_s=0.3)
    began = time.monotonic()
    text, _chunks = await stream_text(llm, QUESTIONS[1])
    assert text == expected_answer([("user", QUESTIONS[1])])
    assert time.monotonic() - began < 2
    assert secondary.calls() == 0


async def test_a_rejected_prefill_is_retried_as_a_user_message(trio) -> None:
    primary, secondary, _ = trio
    primary.set_faults(disconnect_after_chunks=6, routes=["chat"])
    secondary.set_faults(reject_prefill=True, routes=["chat"])
    llm = model(Provider(name="primary", model=oa(primary)),
                Provider(name="anthropic", model=an(secondary), accepts_prefill=True))
    text, _ = await stream_text(llm, QUESTIONS[2])
    assert text == expected_answer([("user", QUESTIONS[2])])
    by_status = secondary.stats()["by_status"]["chat"]
    assert by_status.get("400") == 1 and by_status.get("200") == 1


async def test_a_slow_first_token_is_hedged(trio) -> None:
    primary, secondary, _ = trio
    llm = model(Provider(name="primary", model=oa(primary)),
                Provider(name="anthropic", model=an(secondary)))
    for question in QUESTIONS[:10]:  # a latency history for both
        await stream_text(llm, question)
    primary.set_faults(first_token_ms=5000, routes=["chat"])
    began = time.monotonic()
    text, _chunks = await stream_text(llm, QUESTIONS[3])
    assert text == expected_answer([("user", QUESTIONS[3])])
    assert time.monotonic() - began < 2

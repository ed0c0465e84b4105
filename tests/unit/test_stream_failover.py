"""Streaming failover with fallbacks that disobey: the caller never gets repeated or lost text.

Scripted models stand in for providers (see tests/support/scripted.py); the same behaviours
over HTTP with the real clients are in tests/integration/test_router_streams.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage

from langchain_ha.resilience.chat import CONTINUATION_INSTRUCTION, Provider, ResilientChatModel
from langchain_ha.resilience.continuation import RESTART_KEY, accept_restarts, assemble
from langchain_ha.resilience.errors import AllProvidersFailed, StreamInterrupted
from langchain_ha.resilience.hedging import HedgePolicy
from tests.support.scripted import FULL, PREFILL_REJECTED, REWORDED, ProviderError, Scripted


def router(*models: Scripted, prefill: set[str] | None = None, **kw: Any) -> ResilientChatModel:
    providers = [Provider(name=m.label, model=m, finish_marker=True,
                          accepts_prefill=m.label in (prefill or set())) for m in models]
    return ResilientChatModel(providers=providers, **kw)


async def collect(model: ResilientChatModel, question: str = "hi") -> list[AIMessageChunk]:
    return [c async for c in model.astream(question)]


def text(chunks: list[AIMessageChunk]) -> str:
    return "".join(str(c.content) for c in chunks)


def lcha(chunks: list[AIMessageChunk]) -> dict[str, Any]:
    metas = [c.response_metadata["lcha"] for c in chunks if "lcha" in c.response_metadata]
    assert len(metas) == 1
    meta: dict[str, Any] = metas[0]
    return meta


@pytest.mark.parametrize("style", ["replay", "preamble"])
async def test_a_fallback_that_restarts_word_for_word_is_spliced(style: str) -> None:
    a = Scripted(label="a", cut_after=4)
    b = Scripted(label="b", ignore_continuation=True, restart_style=style)  # type: ignore[arg-type]
    chunks = await collect(router(a, b))
    assert text(chunks) == FULL
    assert lcha(chunks)["continued_after"] == ["a"]
    assert str(b.seen[0][-1].content).startswith(CONTINUATION_INSTRUCTION)


async def test_a_fallback_that_repeats_the_last_words_has_them_dropped() -> None:
    class Overlapping(Scripted):  # echoes one word of its own choosing, not the cue
        def _answer(self, messages: list[Any]) -> str:
            if str(messages[-1].content).startswith(CONTINUATION_INSTRUCTION):
                return "brown fox jumps over the lazy dog near the river bank today"
            return FULL

    chunks = await collect(router(Scripted(label="a", cut_after=3), Overlapping(label="b")))
    assert text(chunks) == FULL  # "the quick brown " + "fox ...", not "brown brown"


async def test_a_reworded_restart_goes_to_the_next_provider() -> None:
    a = Scripted(label="a", cut_after=5)
    b = Scripted(label="b", ignore_continuation=True, restart_style="reword")
    c = Scripted(label="c")
    chunks = await collect(router(a, b, c))
    assert text(chunks) == FULL
    meta = lcha(chunks)
    assert meta["provider"] == "c" and meta["continued_after"] == ["a", "b"]
    assert b.calls == 1 and c.calls == 1


async def test_a_reworded_restart_with_no_one_left_is_a_clean_error() -> None:
    a = Scripted(label="a", cut_after=5)
    b = Scripted(label="b", ignore_continuation=True, restart_style="reword")
    got: list[AIMessageChunk] = []
    with pytest.raises(StreamInterrupted) as info:
        async for c in router(a, b).astream("hi"):
            got.append(c)
    assert text(got) == info.value.partial_text == "the quick brown fox jumps "
    assert REWORDED.split()[2] not in text(got)  # nothing of the restart reached the caller
    group = info.value.cause
    assert isinstance(group, AllProvidersFailed)
    assert isinstance(group.exceptions[0], ConnectionError)  # the cut comes first
    assert [getattr(e, "reason", None) for e in group.exceptions[1:2]] == ["unverified"]


async def test_a_consumer_that_honours_restarts_gets_the_signal_and_the_new_answer() -> None:
    a = Scripted(label="a", cut_after=5)
    b = Scripted(label="b", ignore_continuation=True, restart_style="reword")
    with accept_restarts():
        chunks = await collect(router(a, b))
    signals = [c for c in chunks if RESTART_KEY in c.response_metadata]
    assert len(signals) == 1
    assert signals[0].response_metadata[RESTART_KEY]["discard_chars"] == len("the quick brown "
                                                                             "fox jumps ")
    after = chunks[chunks.index(signals[0]):]
    assert text(after) == REWORDED
    total = assemble(chunks)
    assert total is not None and total.content == REWORDED
    assert lcha(chunks)["restarted"] is True


async def test_restart_mode_restarts_from_the_top_with_the_signal() -> None:
    a = Scripted(label="a", cut_after=3)
    b = Scripted(label="b")
    chunks = await collect(router(a, b, stream_failover="restart"))
    total = assemble(chunks)
    assert total is not None and total.content == FULL
    assert b.seen[0] == [HumanMessage(content="hi")]  # asked afresh, not to continue


async def test_a_provider_that_accepts_prefill_continues_the_partial_answer() -> None:
    a = Scripted(label="a", cut_after=3)
    b = Scripted(label="b")
    chunks = await collect(router(a, b, prefill={"b"}))
    assert text(chunks) == FULL
    last = b.seen[0][-1]
    assert isinstance(last, AIMessage) and last.content == "the quick brown"  # no trailing space


async def test_a_rejected_prefill_is_retried_with_a_user_message_and_not_again() -> None:
    a = Scripted(label="a", cut_after=3)
    b = Scripted(label="b", reject_prefill=True)
    model = router(a, b, prefill={"b"})
    chunks = await collect(model)
    assert text(chunks) == FULL
    assert [type(m[-1]).__name__ for m in b.seen] == ["AIMessage", "HumanMessage"]
    a.cut_after = 2
    assert text(await collect(model)) == FULL
    assert type(b.seen[-1][-1]).__name__ == "HumanMessage"  # learned: no prefill any more


async def test_a_rejected_prefill_does_not_hide_the_cut_when_everything_fails() -> None:
    a = Scripted(label="a", cut_after=3)
    b = Scripted(label="b", reject_prefill=True)

    class Bad(Scripted):
        def _answer(self, messages: list[Any]) -> str:
            raise ProviderError(400, PREFILL_REJECTED)

    with pytest.raises(StreamInterrupted) as info:
        await collect(router(a, Bad(label="b", reject_prefill=True), prefill={"b"}))
    group = info.value.cause
    assert isinstance(group, AllProvidersFailed)
    assert isinstance(group.exceptions[0], ConnectionError)
    del b


async def test_a_stalled_stream_is_ended_by_the_idle_timeout() -> None:
    a = Scripted(label="a", stall_after=4)
    b = Scripted(label="b")
    began = time.monotonic()
    chunks = await collect(router(a, b, stream_idle_timeout_s=0.2))
    assert text(chunks) == FULL
    assert time.monotonic() - began < 1.5
    assert any(c.response_metadata.get("lcha_failovers", [{}])[0].get("reason") == "stalled"
               for c in chunks if "lcha_failovers" in c.response_metadata)


async def test_a_stream_without_its_finish_marker_is_continued() -> None:
    a = Scripted(label="a", truncate_after=5)
    b = Scripted(label="b")
    chunks = await collect(router(a, b))
    assert text(chunks) == FULL
    switch = next(c.response_metadata["lcha_failovers"][0] for c in chunks
                  if "lcha_failovers" in c.response_metadata)
    assert switch["reason"] == "truncated"


async def test_without_a_declared_finish_marker_a_clean_end_is_an_answer() -> None:
    a = Scripted(label="a", truncate_after=5)
    model = ResilientChatModel(providers=[Provider(name="a", model=a)])
    assert text(await collect(model)) == "the quick brown fox jumps "


@pytest.mark.parametrize("after", [0, 4])
async def test_a_malformed_chunk_ends_the_attempt(after: int) -> None:
    a = Scripted(label="a", malformed_after=after)
    b = Scripted(label="b")
    assert text(await collect(router(a, b))) == FULL


async def test_a_provider_holding_the_stream_open_after_finishing_is_not_waited_for() -> None:
    a = Scripted(label="a", hold_after_finish=True)
    b = Scripted(label="b")
    began = time.monotonic()
    chunks = await collect(router(a, b, stream_finish_grace_s=0.2))
    assert text(chunks) == FULL and lcha(chunks)["provider"] == "a"
    assert time.monotonic() - began < 1.0
    assert b.calls == 0


async def test_a_slow_first_token_is_hedged_at_open() -> None:
    a = Scripted(label="a", first_token_delay_s=5)
    b = Scripted(label="b", delay_s=0.01)
    began = time.monotonic()
    chunks = await collect(router(a, b, hedge=HedgePolicy(cold_delay_s=0.1)))
    assert text(chunks) == FULL and lcha(chunks)["provider"] == "b"
    assert time.monotonic() - began < 1.5


async def test_a_tool_call_is_never_split_across_providers() -> None:
    call = {"name": "order_status", "args": {"order_id": "AB-1234", "detail": "full history"}}
    a = Scripted(label="a", tool_call=call, tool_parts=4, cut_after=2)
    b = Scripted(label="b", tool_call=call, tool_parts=3)
    chunks = await collect(router(a, b))
    assert not any(tc.get("id") == "call_a" for c in chunks for tc in c.tool_call_chunks)
    total = assemble(chunks)
    assert total is not None
    assert [(t["name"], t["args"], t["id"]) for t in total.tool_calls] == [
        ("order_status", call["args"], "call_b")]


async def test_everything_failing_after_text_raises_with_the_partial_and_every_error() -> None:
    a = Scripted(label="a", cut_after=3)
    b = Scripted(label="b", fail=ProviderError(503))
    got: list[AIMessageChunk] = []
    with pytest.raises(StreamInterrupted) as info:
        async for c in router(a, b).astream("hi"):
            got.append(c)
    assert info.value.partial_text == text(got) == "the quick brown "
    group = info.value.cause
    assert isinstance(group, AllProvidersFailed)
    assert isinstance(group.exceptions[0], ConnectionError)
    assert any(isinstance(e, ProviderError) for e in group.exceptions)


@settings(max_examples=60, deadline=None)
# From two words on: a single short word ("the ") is too little to tell a replay after a
# preamble from a continuation; the router then ends with a clean error rather than guess.
@given(cut=st.integers(min_value=2, max_value=len(FULL.split()) - 1),
       style=st.sampled_from(["replay", "preamble", "polite"]))
async def test_any_cut_with_any_obedience_gives_the_answer_exactly_once(cut: int,
                                                                        style: str) -> None:
    a = Scripted(label="a", cut_after=cut)
    b = Scripted(label="b", ignore_continuation=style != "polite",
                 restart_style="replay" if style == "polite" else style)  # type: ignore[arg-type]
    assert text(await collect(router(a, b))) == FULL


async def test_a_provider_that_cannot_stream_answers_a_stream_whole() -> None:
    """A chat model with no streaming of its own (like the demo's local model) still serves a
    stream, as one chunk, and can continue one that another provider started."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Plain(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "plain"

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            answer = Scripted(label="x")._answer(messages)
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])

    alone = ResilientChatModel(providers=[Provider(name="plain", model=Plain())])
    assert text(await collect(alone)) == FULL
    cut = Scripted(label="a", cut_after=4)
    chunks = await collect(ResilientChatModel(providers=[
        Provider(name="a", model=cut, finish_marker=True), Provider(name="plain", model=Plain())]))
    assert text(chunks) == FULL and lcha(chunks)["continued_after"] == ["a"]

"""The demo support bot against simulator processes: grounded answers and every
degradation path."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import BaseMessage

from langchain_ha._context import request_key_scope
from langchain_ha.demo.corpus import load_corpus, load_questions
from langchain_ha.demo.support_bot import BotSettings, SupportBot, build_support_bot
from langchain_ha.resilience.degrade import degradation_scope
from tests.support.fixtures_sim import SimProcess


@pytest.fixture(scope="module")
def sims(sim_factory: Callable[..., SimProcess]) -> tuple[SimProcess, SimProcess]:
    return sim_factory("bot-primary"), sim_factory("bot-secondary")


@pytest.fixture
def bot(sims: tuple[SimProcess, SimProcess]) -> SupportBot:
    for sim in sims:
        sim.clear_faults()
    primary, secondary = sims
    return build_support_bot(BotSettings.simulated(primary.url, secondary.url))


def test_corpus_is_large_enough_and_questions_point_at_real_documents() -> None:
    ids = {d.id for d in load_corpus()}
    assert len(ids) >= 100
    assert len(load_questions()) >= 40
    assert {doc for _, doc in load_questions()} <= ids


async def test_known_questions_cite_the_right_document(bot: SupportBot) -> None:
    wrong = []
    for question, doc_id in load_questions():
        with degradation_scope() as degraded:
            out = await bot.ainvoke({"question": question})
        if out["sources"][:1] != [doc_id] or degraded:
            wrong.append((question, doc_id, out["sources"], sorted(degraded)))
    assert wrong == []


async def test_primary_down_is_answered_by_the_fallback(bot, sims) -> None:
    sims[0].set_faults(status=503, routes=["chat"])
    question, doc_id = load_questions()[0]
    with degradation_scope() as degraded:
        out = await bot.ainvoke(question)
    assert out["sources"][0] == doc_id and out["provider"] == "secondary"
    assert degraded == {"primary_llm"}


async def test_both_remote_providers_down_uses_the_local_model(bot, sims) -> None:
    sims[0].set_faults(status=500, routes=["chat"])
    sims[1].set_faults(status=500, routes=["chat"])
    question, doc_id = load_questions()[1]
    with degradation_scope() as degraded:
        out = await bot.ainvoke(question)
    assert out["provider"] == "local" and out["sources"][0] == doc_id
    assert f"[doc:{doc_id}]" in out["answer"]
    assert degraded == {"primary_llm"}


async def test_embeddings_down_falls_back_to_keywords(bot, sims) -> None:
    sims[0].set_faults(status=503, routes=["embeddings"])
    question, doc_id = load_questions()[2]
    with degradation_scope() as degraded:
        out = await bot.ainvoke(question)
    assert out["sources"][0] == doc_id
    assert degraded == {"embeddings"}


async def test_retrieval_failure_still_answers(bot) -> None:
    bot.retriever.timeout_s = 0.000_001  # retrieval cannot finish in time
    with degradation_scope() as degraded:
        out = await bot.ainvoke("How do refunds work?")
    assert out["answer"] and out["sources"] == []
    assert degraded == {"retrieval"}


async def test_order_tool_answers_and_its_outage_is_reported(bot, sims) -> None:
    with degradation_scope() as degraded:
        out = await bot.ainvoke("Where is my order AB-12345?")
    assert "AB-12345" in out["answer"] and degraded == set()
    sims[0].set_faults(status=503, routes=["tools"])
    with degradation_scope() as degraded:
        out = await bot.ainvoke("Where is my order AB-12345?")
    assert "unavailable" in out["answer"] or "could not" in out["answer"]
    assert degraded == {"tool:order_status"}


async def test_history_is_appended_once_per_request_key(bot) -> None:
    turn = {"question": "How do refunds work?", "session_id": "s-1"}
    with request_key_scope("req-1"):
        await bot.ainvoke(turn)
        await bot.ainvoke(turn)  # a retry of the same request
    with request_key_scope("req-2"):
        await bot.ainvoke(turn)
    assert len(await bot.history("s-1").aget_messages()) == 4


class _HalfBrokenHistory(InMemoryChatMessageHistory):
    """A history store whose reads or whose writes fail (a replica's view of a sick store)."""

    broken: str = "read"

    async def aget_messages(self) -> list[BaseMessage]:
        if self.broken == "read":
            raise ConnectionError("store unreadable")
        return await super().aget_messages()

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        if self.broken == "write":
            raise ConnectionError("store read-only")
        await super().aadd_messages(messages)


@pytest.mark.parametrize("broken", ["read", "write"])
async def test_history_read_and_write_failures_are_told_apart(bot, broken: str) -> None:
    store = _HalfBrokenHistory(broken=broken)
    bot.history = lambda _session: store
    with request_key_scope(f"req-{broken}"), degradation_scope() as degraded:
        out = await bot.ainvoke({"question": "How do refunds work?", "session_id": "s-half"})
    assert out["answer"]
    assert degraded == {f"history:{broken}"}
    # Only a failed write means the turn is missing: a drill counts it as not acknowledged.
    assert len(store.messages) == (2 if broken == "read" else 0)


async def test_the_local_model_answers_an_order_question_with_the_order_status(bot, sims) -> None:
    """With both remote providers down, the local model still calls the order tool: its
    answer is the simulator's own sentence for that order (what a drill requires of a
    ``primary_llm`` fallback), not an FAQ quote."""
    from langchain_ha.drills.mix import order_answer

    sims[0].set_faults(status=500, routes=["chat"])
    sims[1].set_faults(status=500, routes=["chat"])
    with degradation_scope() as degraded:
        out = await bot.ainvoke("Where is my order AB-12345?")
    assert out["provider"] == "local" and degraded == {"primary_llm"}
    assert out["answer"] == order_answer("AB-12345")

"""The support bot with its state in PostgreSQL (``LCHA_DB_WRITER``): vectors and history in
the database, shared by replicas, and so are the providers' breakers; a database outage
degrades to keyword retrieval and no memory, and says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from langchain_ha._context import request_key_scope
from langchain_ha._proc import free_port
from langchain_ha.demo.corpus import load_questions
from langchain_ha.demo.support_bot import BotSettings, SupportBot, build_support_bot
from langchain_ha.resilience.breaker import BreakerState
from langchain_ha.resilience.degrade import degradation_scope
from tests.support.fixtures_sim import SimProcess


@pytest.fixture(scope="module")
def pg_sims(sim_factory: Callable[..., SimProcess]) -> tuple[SimProcess, SimProcess]:
    return sim_factory("pgbot-primary"), sim_factory("pgbot-secondary")


def _settings(sims: tuple[SimProcess, SimProcess], writer: str) -> BotSettings:
    primary, secondary = sims
    # No LLM cache: these tests watch the providers answer (the cache has its own tests, and
    # questions other tests asked would be answered from it).
    return BotSettings.simulated(primary.url, secondary.url, db_writer=writer,
                                 collection="bot_test", llm_cache_ttl_s=0)


@pytest.fixture
async def pg_bots(pg_sims, store_conninfo: str) -> AsyncIterator[tuple[SupportBot, SupportBot]]:
    for sim in pg_sims:
        sim.clear_faults()
    bots = (build_support_bot(_settings(pg_sims, store_conninfo)),
            build_support_bot(_settings(pg_sims, store_conninfo)))
    assert await bots[0].retriever.retriever.ensure_indexed()  # what `lcha up --demo` does
    yield bots
    for bot in bots:
        await bot.aclose()


async def test_answers_from_pgvector_and_history_is_shared(pg_bots) -> None:
    first, second = pg_bots  # two replicas of the same app
    for question, doc_id in load_questions()[:8]:
        with degradation_scope() as degraded:
            out = await second.ainvoke(question)
        assert out["sources"][:1] == [doc_id] and degraded == set(), (question, out)
    turn = {"question": "How do refunds work?", "session_id": "pg-s1"}
    with request_key_scope("pg-req-1"):
        await first.ainvoke(turn)
        await second.ainvoke(turn)  # the balancer retried the request on another replica
    with request_key_scope("pg-req-2"):
        await second.ainvoke(turn)
    messages = await second.history("pg-s1").aget_messages()
    assert [m.type for m in messages] == ["human", "ai", "human", "ai"]


async def test_embeddings_down_uses_full_text_search(pg_bots, pg_sims) -> None:
    bot = pg_bots[0]
    pg_sims[0].set_faults(status=503, routes=["embeddings"])
    question, doc_id = load_questions()[3]
    with degradation_scope() as degraded:
        out = await bot.ainvoke(question)
    assert out["sources"][:1] == [doc_id] and degraded == {"embeddings"}


async def test_database_down_degrades_and_says_so(pg_sims) -> None:
    for sim in pg_sims:
        sim.clear_faults()
    dead = f"host=127.0.0.1 port={free_port()} user=postgres dbname=postgres"
    bot = build_support_bot(_settings(pg_sims, dead))
    try:
        for question, doc_id in load_questions()[10:14]:
            with degradation_scope() as degraded:
                out = await bot.ainvoke({"question": question, "session_id": "pg-down"})
            assert out["sources"][:1] == [doc_id]  # keyword search over the shipped corpus
            assert degraded == {"retrieval", "history:read", "history:write"}
    finally:
        await bot.aclose()


async def test_one_replicas_breaker_trip_keeps_the_other_off_the_failing_provider(
    pg_bots, pg_sims
) -> None:
    first, second = pg_bots
    questions = load_questions()
    for question, _ in questions[:6]:  # both replicas have seen the primary answer
        await first.ainvoke(question)
        await second.ainvoke(question)
    pg_sims[0].set_faults(status=500, routes=["chat"])
    try:
        for question, doc_id in questions[6:16]:
            with degradation_scope() as degraded:
                out = await first.ainvoke(question)
            assert out["sources"][:1] == [doc_id] and degraded == {"primary_llm"}
        assert first.breakers["primary"].state is BreakerState.OPEN
        await asyncio.sleep(1.2)  # past the breakers' sync interval
        before = pg_sims[0].calls("chat")
        for question, _ in questions[16:24]:
            with degradation_scope() as degraded:
                await second.ainvoke(question)
            assert degraded == {"primary_llm"}
        # Alone, the second replica would have spent 6 failed calls (half of its window of
        # 6 successes + 6 failures) before tripping; the shared state costs it at most the
        # one call that fetched it.
        assert pg_sims[0].calls("chat") - before <= 1
        assert second.breakers["primary"].state is BreakerState.OPEN
    finally:
        pg_sims[0].clear_faults()

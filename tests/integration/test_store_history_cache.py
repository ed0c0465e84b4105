"""Chat history and LLM caches against a real PostgreSQL + pgvector."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, Generation

from langchain_ha._context import request_key_scope
from langchain_ha.resilience.degrade import degradation_scope
from langchain_ha.store.cache import PgCache, SemanticCache, aserve_stale
from langchain_ha.store.history import PgChatMessageHistory
from tests.integration.store_embeddings import DIMS, WordEmbeddings


async def test_history_append_is_idempotent_per_request_key(store_db: Any) -> None:
    history = PgChatMessageHistory(store_db, f"s-{uuid.uuid4()}")
    turn = [HumanMessage("hello"), AIMessage("hi there")]
    with request_key_scope("req-1"):
        await history.aadd_messages(turn)
        # The client retried the same request (possibly via another replica): a no-op.
        await history.aadd_messages(turn)
        await PgChatMessageHistory(store_db, history.session_id).aadd_messages(turn)
    with request_key_scope("req-2"):
        await history.aadd_messages([HumanMessage("again"), AIMessage("sure")])
    # Concurrent retries of one request still store it once.
    with request_key_scope("req-3"):
        await asyncio.gather(*(history.aadd_messages([HumanMessage("x")]) for _ in range(5)))
    # Without a request key every append is stored.
    await history.aadd_messages([HumanMessage("no key")])
    await history.aadd_messages([HumanMessage("no key")])

    got = await history.aget_messages()
    assert [m.content for m in got] == [
        "hello",
        "hi there",
        "again",
        "sure",
        "x",
        "no key",
        "no key",
    ]
    assert isinstance(got[1], AIMessage)
    other = PgChatMessageHistory(store_db, f"s-{uuid.uuid4()}")
    assert await other.aget_messages() == []
    await history.aclear()
    assert await history.aget_messages() == []


async def test_the_last_messages_are_read_alone_oldest_first(store_db: Any) -> None:
    history = PgChatMessageHistory(store_db, f"s-{uuid.uuid4()}")
    assert await history.aget_last(4) == []
    for turn in range(5):
        with request_key_scope(f"turn-{turn}"):
            await history.aadd_messages([HumanMessage(f"q{turn}"), AIMessage(f"a{turn}")])
    assert [m.content for m in await history.aget_last(3)] == ["a3", "q4", "a4"]
    assert await history.aget_last(100) == await history.aget_messages()
    assert await history.aget_last(0) == []


async def test_exact_cache_ttl_and_stale(store_db: Any) -> None:
    llm = f"llm-{uuid.uuid4()}"
    cache = PgCache(store_db, ttl_s=0.5)
    gens = [ChatGeneration(message=AIMessage("cached answer"))]
    assert await cache.alookup("q", llm) is None
    await cache.aupdate("q", llm, gens)
    hit = await cache.alookup("q", llm)
    assert hit is not None and hit[0].text == "cached answer"
    assert await cache.alookup("q", "other-llm") is None
    await asyncio.sleep(0.7)
    assert await cache.alookup("q", llm) is None  # expired for normal use
    stale = await cache.alookup_stale("q", llm)
    assert stale is not None and stale[0].text == "cached answer"
    with degradation_scope() as degraded:
        served = await aserve_stale([cache], "q", llm)
    assert served is not None and degraded == {"cache"}
    with degradation_scope() as degraded:
        assert await aserve_stale([cache], "never asked", llm) is None
    assert degraded == set()
    assert await cache.apurge(older_than_s=0.1) >= 1
    assert await cache.alookup_stale("q", llm) is None


async def test_semantic_cache_threshold_and_stale(store_db: Any) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    emb = WordEmbeddings()
    cache = SemanticCache(store_db, emb, dimensions=DIMS, threshold=0.8, ttl_s=0.5, name=name)
    await cache.aupdate("how do I reset my password", "m", [Generation(text="use the link")])
    await cache.aupdate("what is the refund policy", "m", [Generation(text="five days")])

    near = await cache.alookup("how do I reset my password please", "m")
    assert near is not None and near[0].text == "use the link"
    assert await cache.alookup("tell me about dogs and cats", "m") is None  # below threshold
    assert await cache.alookup("how do I reset my password", "other-model") is None

    await asyncio.sleep(0.7)
    assert await cache.alookup("how do I reset my password", "m") is None
    # Every provider down, embeddings too: the exact prompt is still served, marked degraded.
    emb.fail_queries = True
    with degradation_scope() as degraded:
        served = await aserve_stale([cache], "what is the refund policy", "m")
    assert served is not None and served[0].text == "five days"
    assert degraded == {"cache"}
    emb.fail_queries = False
    stale = await cache.alookup_stale("how do I reset my password please", "m")
    assert stale is not None and stale[0].text == "use the link"
    await cache.aclear()
    assert await cache.alookup_stale("what is the refund policy", "m") is None

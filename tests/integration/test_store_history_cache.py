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


class _Counted:
    """Collects what a cache reports (a CacheEvents)."""

    def __init__(self) -> None:
        self.lookups: list[str] = []
        self.updates: list[str] = []

    def on_cache_lookup(self, cache: str, outcome: str) -> None:
        self.lookups.append(f"{cache}:{outcome}")

    def on_cache_update(self, cache: str, outcome: str) -> None:
        self.updates.append(f"{cache}:{outcome}")


def _answer(text: str, **lcha: Any) -> list[ChatGeneration]:
    meta = {"lcha": lcha} if lcha else {}
    return [ChatGeneration(message=AIMessage(text, response_metadata=meta))]


async def test_tool_calls_fallbacks_and_refusals_are_not_cached(store_db: Any) -> None:
    events, llm = _Counted(), f"m-{uuid.uuid4()}"
    cache = PgCache(store_db, label="t", events=events)
    call = [ChatGeneration(message=AIMessage("", tool_calls=[
        {"name": "refund_order", "args": {"order_id": "AB-1"}, "id": "call_1"}]))]
    await cache.aupdate("refund AB-1", llm, call)
    await cache.aupdate("q-fallback", llm, _answer("from b", provider="b", fallback=True))
    await cache.aupdate("q-refused", llm, _answer("no", provider="a", fallback=False,
                                                  refusal="content_filter"))
    await cache.aupdate("q-full", llm, _answer("from a", provider="a", fallback=False))
    assert events.updates == ["t:skipped"] * 3 + ["t:stored"]
    for prompt in ("refund AB-1", "q-fallback", "q-refused"):
        assert await cache.alookup(prompt, llm) is None
    hit = await cache.alookup("q-full", llm)
    assert hit is not None and hit[0].text == "from a"
    assert events.lookups == ["t:miss"] * 3 + ["t:hit"]
    # Asked to, a cache keeps tool calls (an app whose tools have no side effects).
    keeping = PgCache(store_db, cache_tool_calls=True)
    await keeping.aupdate("refund AB-1", llm, call)
    kept = await keeping.alookup("refund AB-1", llm)
    assert kept is not None and kept[0].message.tool_calls[0]["id"] == "call_1"  # type: ignore[attr-defined]


async def test_an_unreachable_database_is_a_miss_and_never_fails_the_answer() -> None:
    from langchain_ha._proc import free_port
    from langchain_ha.store.connect import Database

    db = Database.from_conninfo(f"host=127.0.0.1 port={free_port()} dbname=gone",
                                connect_timeout_s=0.3, pool_timeout_s=0.3)
    await db.open()
    try:
        events = _Counted()
        cache = PgCache(db, events=events, timeout_s=0.5)
        assert await cache.alookup("q", "m") is None
        await cache.aupdate("q", "m", _answer("given anyway"))  # logged and dropped
        assert events.lookups == ["llm:error"] and events.updates == ["llm:error"]
    finally:
        await db.close()

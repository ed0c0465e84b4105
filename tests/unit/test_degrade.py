"""Retriever and tool wrappers: a failure becomes a degraded answer, never an exception."""

from __future__ import annotations

import asyncio

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_ha.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from langchain_ha.resilience.degrade import (
    ResilientRetriever,
    degradation_scope,
    resilient_tool,
)


class BrokenRetriever(BaseRetriever):
    """A user's retriever whose backend is down (or hangs)."""

    hang: bool = False
    calls: int = 0

    def _get_relevant_documents(self, query: str, *, run_manager: object) -> list[Document]:
        raise ConnectionError("vector db unreachable")

    async def _aget_relevant_documents(self, query: str, *, run_manager: object) -> list[Document]:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(30)
        raise ConnectionError("vector db unreachable")


def _store() -> InMemoryVectorStore:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document(page_content="refunds take five days", id="d1")])
    return store


async def test_healthy_retriever_passes_documents_through() -> None:
    wrapped = ResilientRetriever(retriever=_store().as_retriever())
    with degradation_scope() as degraded:
        docs = await wrapped.ainvoke("refunds")
    assert [d.id for d in docs] == ["d1"] and degraded == set()


async def test_failing_retriever_returns_nothing_and_says_so() -> None:
    broken = BrokenRetriever()
    wrapped = ResilientRetriever(retriever=broken, breaker=CircuitBreaker(
        "r", BreakerConfig(cold_probes=2)))
    for _ in range(5):
        with degradation_scope() as degraded:
            assert await wrapped.ainvoke("refunds") == []
        assert degraded == {"retrieval"}
    assert broken.calls == 2  # then the breaker keeps the broken store out
    assert wrapped.breaker.state is BreakerState.OPEN


async def test_hanging_retriever_times_out() -> None:
    wrapped = ResilientRetriever(retriever=BrokenRetriever(hang=True), timeout_s=0.05)
    with degradation_scope() as degraded:
        assert await wrapped.ainvoke("q") == []
    assert degraded == {"retrieval"}


def test_sync_retriever_path_shares_the_logic() -> None:
    wrapped = ResilientRetriever(retriever=BrokenRetriever())
    with degradation_scope() as degraded:
        assert wrapped.invoke("q") == []
    assert degraded == {"retrieval"}


@tool
def order_status(order_id: str) -> str:
    """Look up an order."""
    raise ConnectionError("order API down")


@tool
def shipping_time(country: str) -> str:
    """Shipping time to a country."""
    return f"3 days to {country}"


async def test_failing_tool_gives_a_clear_observation() -> None:
    wrapped = resilient_tool(order_status)
    assert wrapped.name == "order_status" and "order_id" in wrapped.args
    with degradation_scope() as degraded:
        observation = await wrapped.ainvoke({"order_id": "AB-1"})
    assert "order_status is unavailable" in observation
    assert degraded == {"tool:order_status"}


def test_working_tool_is_unchanged_sync_and_async() -> None:
    wrapped = resilient_tool(shipping_time)
    with degradation_scope() as degraded:
        assert wrapped.invoke({"country": "NL"}) == "3 days to NL"
        assert asyncio.run(wrapped.ainvoke({"country": "DE"})) == "3 days to DE"
    assert degraded == set()

"""Retriever and tool wrappers: a failure becomes a degraded answer, never an exception."""

from __future__ import annotations

import asyncio

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import ToolMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import Tool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
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


def test_tool_call_gets_an_error_tool_message() -> None:
    wrapped = resilient_tool(order_status)
    call = {"type": "tool_call", "name": "order_status", "args": {"order_id": "AB-1"}, "id": "c1"}
    with degradation_scope() as degraded:
        message = wrapped.invoke(call)
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert message.tool_call_id == "c1" and "unavailable right now" in message.text
    assert degraded == {"tool:order_status"}


def test_wrapped_tool_binds_with_the_same_schema() -> None:
    assert convert_to_openai_tool(resilient_tool(order_status)) == convert_to_openai_tool(
        order_status)


async def test_open_tool_breaker_stops_calling_the_tool() -> None:
    calls = []

    @tool
    async def flaky(x: int) -> str:
        """Always down."""
        calls.append(x)
        raise TimeoutError

    wrapped = resilient_tool(flaky, breaker=CircuitBreaker("t", BreakerConfig(cold_probes=1)))
    reasons = [await wrapped.ainvoke({"x": i}) for i in range(3)]
    assert len(calls) == 1
    assert "reason: timeout" in reasons[0] and "reason: breaker_open" in reasons[2]


async def test_slow_tool_times_out() -> None:
    @tool
    async def slow(x: int) -> str:
        """Hangs."""
        await asyncio.sleep(30)
        return "late"

    with degradation_scope() as degraded:
        out = await resilient_tool(slow, timeout_s=0.05).ainvoke({"x": 1})
    assert "reason: timeout" in out and degraded == {"tool:slow"}


def test_single_input_and_artifact_tools_keep_their_shape() -> None:
    echo = Tool(name="echo", func=lambda s: s.upper(), description="Echo upper-cased.")
    assert resilient_tool(echo).invoke("hi") == "HI"

    @tool(response_format="content_and_artifact")
    def lookup(key: str) -> tuple[str, dict[str, str]]:
        """Look up a key."""
        return f"found {key}", {"key": key}

    call = {"type": "tool_call", "name": "lookup", "args": {"key": "k"}, "id": "c2"}
    message = resilient_tool(lookup).invoke(call)
    assert message.text == "found k" and message.artifact == {"key": "k"}


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.parents: dict[str, str | None] = {}

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kw):
        self.parents[str(run_id)] = str(parent_run_id) if parent_run_id else None

    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, **kw):
        self.parents[str(run_id)] = str(parent_run_id) if parent_run_id else None


async def test_inner_runs_are_children_of_the_wrapper_run() -> None:
    recorder = _Recorder()
    await ResilientRetriever(retriever=_store().as_retriever()).ainvoke(
        "refunds", {"callbacks": [recorder]})
    await resilient_tool(shipping_time).ainvoke({"country": "NL"}, {"callbacks": [recorder]})
    roots = [r for r, p in recorder.parents.items() if p is None]
    assert len(recorder.parents) == 4 and len(roots) == 2

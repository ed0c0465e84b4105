"""Degraded answers: recording which component fell back, and wrappers that degrade.

A request runs inside a :func:`degradation_scope`; anything on its path (the router when a
fallback provider answered, a retriever wrapper that returned nothing, a tool wrapper, a cache
serving a stale entry) calls :func:`record_degraded`.  The server reads the scope's entries and
puts them in the answer body (``degraded``) and the ``X-LCHA-Degraded`` header.

The scope is a mutable set held in a context variable: asyncio tasks and LangChain's executor
threads copy the context, so they all add to the same set.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import ConfigDict, Field

from langchain_ha.resilience._sync import run_sync
from langchain_ha.resilience.breaker import CircuitBreaker
from langchain_ha.resilience.errors import classify

log = logging.getLogger("langchain_ha.degrade")

_SCOPE: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "lcha_degraded", default=None
)


@contextlib.contextmanager
def degradation_scope() -> Iterator[set[str]]:
    """Collect the degraded components recorded while the block runs."""
    entries: set[str] = set()
    token = _SCOPE.set(entries)
    try:
        yield entries
    finally:
        _SCOPE.reset(token)


def record_degraded(component: str) -> None:
    """Mark the current answer as degraded in ``component`` (no-op outside a scope)."""
    entries = _SCOPE.get()
    if entries is not None:
        entries.add(component)


def current_degraded() -> list[str]:
    """The components recorded so far in the current scope, sorted."""
    entries = _SCOPE.get()
    return sorted(entries) if entries else []


class ResilientRetriever(BaseRetriever):
    """Wraps any retriever: a timeout and a circuit breaker; on failure, no documents.

    A failed, slow or breaker-rejected retrieval returns ``[]`` and records the ``retrieval``
    degradation (or ``component``), so the answer goes on without context and says so.
    """

    retriever: BaseRetriever
    timeout_s: float = 2.0
    component: str = "retrieval"
    breaker: CircuitBreaker = Field(default_factory=lambda: CircuitBreaker("retrieval"))
    observe: Callable[[str, float], None] | None = None
    """Called with (outcome, seconds) after each retrieval, e.g. for a latency histogram."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        permit = self.breaker.try_acquire()
        if permit is None:
            self._observe("breaker_open", 0.0)
            return self._without("breaker open")
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                docs = await self.retriever.ainvoke(query)
        except Exception as exc:
            elapsed = time.monotonic() - began
            permit.failure(elapsed)
            reason = classify(exc).reason
            self._observe(reason, elapsed)
            return self._without(reason)
        except BaseException:
            permit.release()
            raise
        elapsed = time.monotonic() - began
        permit.success(elapsed)
        self._observe("success", elapsed)
        return docs

    def _observe(self, outcome: str, seconds: float) -> None:
        if self.observe is not None:
            try:
                self.observe(outcome, seconds)
            except Exception:
                log.exception("retrieval observer failed")

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return run_sync(self._aget_relevant_documents(query, run_manager=None))  # type: ignore[arg-type]

    def _without(self, reason: str) -> list[Document]:
        log.warning("retrieval degraded (%s): answering without documents", reason)
        record_degraded(self.component)
        return []


def resilient_tool(
    tool: BaseTool, *, timeout_s: float = 5.0, breaker: CircuitBreaker | None = None
) -> BaseTool:
    """Wrap ``tool`` so a failure becomes a clear observation instead of an exception.

    The agent is told the tool is unavailable (and why, in one word) and the answer records
    ``tool:<name>``; name, description and argument schema are kept, so ``bind_tools`` works.
    """
    guard = breaker or CircuitBreaker(f"tool:{tool.name}")

    def unavailable(reason: str) -> str:
        record_degraded(f"tool:{tool.name}")
        log.warning("tool %s unavailable (%s)", tool.name, reason)
        return (f"Tool {tool.name} is unavailable right now (reason: {reason}). "
                "Answer without it and tell the user this information could not be checked.")

    async def call(**kwargs: Any) -> Any:
        permit = guard.try_acquire()
        if permit is None:
            return unavailable("breaker_open")
        began = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                result = await tool.ainvoke(kwargs)
        except Exception as exc:
            permit.failure(time.monotonic() - began)
            return unavailable(classify(exc).reason)
        except BaseException:
            permit.release()
            raise
        permit.success(time.monotonic() - began)
        return result

    def call_sync(**kwargs: Any) -> Any:
        return run_sync(call(**kwargs))

    return StructuredTool(name=tool.name, description=tool.description,
                          args_schema=tool.args_schema or tool.get_input_schema(),
                          coroutine=call, func=call_sync)

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
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    AsyncCallbackManagerForToolRun,
    CallbackManagerForRetrieverRun,
    CallbackManagerForToolRun,
    Callbacks,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from pydantic import ConfigDict, Field

from langchain_ha._sync import run_sync
from langchain_ha.resilience.breaker import CircuitBreaker
from langchain_ha.resilience.errors import classify

log = logging.getLogger("langchain_ha.degrade")
T = TypeVar("T")

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


class Unavailable(Exception):
    """A guarded call did not produce a result; ``reason`` is a bounded label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def guarded(breaker: CircuitBreaker, timeout_s: float | None,
                  call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` under ``breaker`` and a timeout: the one decision both wrappers share.

    Returns the call's result, or raises :class:`Unavailable` (``breaker_open``, ``timeout``,
    ``connect``, ``server_error``...) after recording the outcome in the breaker.  Cancellation
    releases the permit without counting against the dependency.
    """
    permit = breaker.try_acquire()
    if permit is None:
        raise Unavailable("breaker_open")
    began = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            result = await call()
    except Exception as exc:
        permit.failure(time.monotonic() - began)
        raise Unavailable(classify(exc).reason) from exc
    except BaseException:
        permit.release()
        raise
    permit.success(time.monotonic() - began)
    return result


class ResilientRetriever(BaseRetriever):
    """Wraps any retriever: a timeout and a circuit breaker; on failure, no documents.

    A failed, slow or breaker-rejected retrieval returns ``[]`` and records the ``retrieval``
    degradation (or ``component``), so the answer goes on without context and says so.  The
    sync path runs the same async core (so the timeout holds for sync callers too); a
    sync-only inner retriever is run in LangChain's executor by its default ``ainvoke``.
    """

    retriever: BaseRetriever
    timeout_s: float = 2.0
    component: str = "retrieval"
    breaker: CircuitBreaker = Field(default_factory=lambda: CircuitBreaker("retrieval"))
    observe: Callable[[str, float], None] | None = None
    """Called with (outcome, seconds) after each retrieval, e.g. for a latency histogram."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    async def _retrieve(self, query: str, callbacks: Callbacks) -> list[Document]:
        began = time.monotonic()
        config: RunnableConfig = {"callbacks": callbacks}
        try:
            docs = await guarded(self.breaker, self.timeout_s,
                                 lambda: self.retriever.ainvoke(query, config))
        except Unavailable as exc:
            self._observe(exc.reason, time.monotonic() - began)
            log.warning("retrieval degraded (%s): answering without documents", exc.reason)
            record_degraded(self.component)
            return []
        self._observe("success", time.monotonic() - began)
        return docs

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return await self._retrieve(query, run_manager.get_child())

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return run_sync(self._retrieve(query, run_manager.get_child()))

    def _observe(self, outcome: str, seconds: float) -> None:
        if self.observe is not None:
            try:
                self.observe(outcome, seconds)
            except Exception:
                log.exception("retrieval observer failed")


class ResilientTool(BaseTool):
    """Wraps any tool: a timeout and a circuit breaker; on failure, a clear observation.

    The agent gets "Tool NAME is unavailable right now (reason: ...)" (as a ``ToolMessage``
    with ``status="error"`` when called with a tool call) and the answer records
    ``tool:NAME``.  Name, description and argument schema are the inner tool's, so
    ``bind_tools`` offers it unchanged.
    """

    tool: BaseTool
    timeout_s: float | None = 5.0
    breaker: CircuitBreaker

    model_config = ConfigDict(arbitrary_types_allowed=True)

    async def _call(self, kwargs: dict[str, Any], callbacks: Callbacks) -> Any:
        config: RunnableConfig = {"callbacks": callbacks}
        try:
            return await guarded(self.breaker, self.timeout_s, lambda: self._inner(kwargs, config))
        except Unavailable as exc:
            record_degraded(f"tool:{self.name}")
            log.warning("tool %s unavailable (%s)", self.name, exc.reason)
            raise ToolException(
                f"Tool {self.name} is unavailable right now (reason: {exc.reason}). Answer "
                "without it and tell the user this information could not be checked."
            ) from None

    async def _inner(self, kwargs: Any, config: RunnableConfig) -> Any:
        if self.tool.response_format != "content_and_artifact":
            return await self.tool.ainvoke(kwargs, config)
        # Only a tool call makes the inner tool hand back its artifact (in a ToolMessage).
        args = kwargs if isinstance(kwargs, dict) else {"tool_input": kwargs}
        msg = await self.tool.ainvoke(
            {"type": "tool_call", "name": self.tool.name, "args": args, "id": "lcha-inner"},
            config)
        return msg.content, msg.artifact

    async def _arun(self, *args: Any, run_manager: AsyncCallbackManagerForToolRun | None = None,
                    **kwargs: Any) -> Any:
        kwargs.pop("config", None)
        return await self._call(_as_kwargs(args, kwargs),
                                run_manager.get_child() if run_manager else None)

    def _run(self, *args: Any, run_manager: CallbackManagerForToolRun | None = None,
             **kwargs: Any) -> Any:
        kwargs.pop("config", None)
        return run_sync(self._call(_as_kwargs(args, kwargs),
                                   run_manager.get_child() if run_manager else None))


def _as_kwargs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # A single-input tool (``Tool``) is called with one positional string.
    return args[0] if args and not kwargs and len(args) == 1 else kwargs


def resilient_tool(
    tool: BaseTool, *, timeout_s: float | None = 5.0, breaker: CircuitBreaker | None = None
) -> ResilientTool:
    """Wrap ``tool`` so a failure becomes a clear observation instead of an exception.

    The agent is told the tool is unavailable (and why, in one word) and the answer records
    ``tool:<name>``; name, description and argument schema are kept, so ``bind_tools`` works.
    """
    return ResilientTool(
        name=tool.name, description=tool.description, args_schema=tool.args_schema,
        return_direct=tool.return_direct, response_format=tool.response_format,
        handle_tool_error=True, tool=tool, timeout_s=timeout_s,
        breaker=breaker or CircuitBreaker(f"tool:{tool.name}"),
    )

"""Durable agents: a LangGraph agent whose turns survive the replica that was running them.

A turn of a tool-calling agent is several steps (model, tools, model, ...) and a replica can
die between any two.  :class:`DurableAgent` serves a compiled LangGraph graph (``create_agent``
or your own) whose checkpointer is the deployment's
(:meth:`~langchain_ha.store.stores.DeploymentStores.checkpointer`, in the HA cluster), and gives
every turn an id that a retry repeats: the client's ``Idempotency-Key`` (what ``lcha serve``
passes on as the request key) or an explicit ``turn_id``.  When the same turn arrives again, on
any replica:

- the turn is in the thread and finished: its answer is replayed, nothing runs;
- the turn is in the thread but unfinished (the replica running it died): the graph resumes
  from its last checkpoint (``ainvoke(None)``), so the steps already checkpointed, tool calls
  included, are not run again;
- else the turn starts.

Checkpoints are written before the next step starts (``durability="sync"``), so a step whose
result was checkpointed never runs twice.  A step that was running when the replica died runs
again: a tool with a side effect needs an idempotency key of its own, and the tool call's id
(``InjectedToolCallId``) is one — the model's message that asked for the call is checkpointed
before the call, so the resumed run calls the tool with the same id (see
``examples/agent/app.py``).

Two live replicas running the same turn at once (a client that retries while the first is
still running) are not serialised here: each would run the next step.  Clients retry after a
failure, and balancers retry on connection errors, which is when the first runner is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import uuid4

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_ha._context import caller_scoped, current_caller, current_request_key
from langchain_ha._sync import run_sync
from langchain_ha._usage import InvalidInput

__all__ = ["MAX_MESSAGE_CHARS", "MAX_THREAD_ID_CHARS", "DurableAgent", "turn_message_id"]

MAX_MESSAGE_CHARS = 32_000
MAX_THREAD_ID_CHARS = 128


def turn_message_id(turn_id: str) -> str:
    """The id of the ``HumanMessage`` that opens turn ``turn_id`` in its thread (how a turn is
    found again, by a retry or by a drill checking acknowledged turns)."""
    return "lcha-turn:" + turn_id


GraphFactory = Callable[[], Awaitable[Any]]
"""Builds the compiled graph on the serving loop (a checkpointer's pool needs a running loop)."""


class DurableAgent(Runnable[Any, dict[str, Any]]):
    """``{"message", "thread_id", "turn_id"?}`` → ``{"answer", "thread_id", "turn_id",
    "resumed", "replayed", "tool_calls"}``: one turn of a checkpointed LangGraph agent.

    ``build`` returns the compiled graph (its state has ``messages``, as ``create_agent``'s
    does); it is called once, on the serving loop (``lcha serve`` calls :meth:`awarm` before
    the replica reports ready).  ``close`` releases what ``build`` opened.  Threads belong to
    their caller: served by ``lcha serve``, the checkpoint thread is the caller's id plus the
    client's ``thread_id``.
    """

    def __init__(self, build: GraphFactory, *, close: Callable[[], Awaitable[None]] | None = None,
                 recursion_limit: int = 25) -> None:
        self._build = build
        self._close = close
        self.recursion_limit = recursion_limit
        self._graph: Any = None
        self._lock = asyncio.Lock()

    async def graph(self) -> Any:
        """The compiled graph (built on first use)."""
        if self._graph is None:
            async with self._lock:
                if self._graph is None:
                    self._graph = await self._build()
        return self._graph

    async def awarm(self) -> None:
        """Build the graph (open the checkpointer's pool) before the replica says ready."""
        await self.graph()

    async def aclose(self) -> None:
        """Release what ``build`` opened."""
        if self._close is not None:
            await self._close()

    def invoke(self, input: Any, config: RunnableConfig | None = None,
               **kwargs: Any) -> dict[str, Any]:
        return run_sync(self.ainvoke(input, config))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> dict[str, Any]:
        message, thread_id, turn_id = _parse(input)
        graph = await self.graph()
        run_config: RunnableConfig = {
            **(config or {}), "recursion_limit": self.recursion_limit,
            "configurable": {**(config or {}).get("configurable", {}),
                             "thread_id": caller_scoped(thread_id, current_caller())}}
        msg_id = turn_message_id(turn_id)
        state = await graph.aget_state(run_config)
        messages: list[BaseMessage] = list((state.values or {}).get("messages", []))
        start = _index(messages, msg_id)
        resumed = replayed = False
        if start is not None and messages[start].text != message:
            raise InvalidInput("turn_id: this turn was sent with another message (a retry "
                               "repeats its turn's message; a new turn needs a new key)")
        if start is None:
            result = await graph.ainvoke({"messages": [HumanMessage(message, id=msg_id)]},
                                         run_config, durability="sync")
        elif state.next:
            resumed = True
            result = await graph.ainvoke(None, run_config, durability="sync")
        else:
            replayed = True
            result = state.values
        turn = _turn_of(list(result.get("messages", [])), msg_id)
        answer = next((m for m in reversed(turn) if isinstance(m, AIMessage)), None)
        return {"answer": answer.text if answer is not None else "", "thread_id": thread_id,
                "turn_id": turn_id, "resumed": resumed, "replayed": replayed,
                "tool_calls": sum(isinstance(m, ToolMessage) for m in turn)}


def _turn_of(messages: list[BaseMessage], msg_id: str) -> list[BaseMessage]:
    """The messages of one turn: its own human message up to the next one."""
    start = _index(messages, msg_id) or 0
    end = next((i for i in range(start + 1, len(messages))
                if isinstance(messages[i], HumanMessage)), len(messages))
    return messages[start:end]


def _index(messages: Sequence[BaseMessage], msg_id: str) -> int | None:
    return next((i for i, m in enumerate(messages) if m.id == msg_id), None)


def _parse(value: Any) -> tuple[str, str, str]:
    if not isinstance(value, dict):
        raise InvalidInput("input must be {'message': str, 'thread_id': str, 'turn_id'?: str}")
    message, thread_id = value.get("message"), value.get("thread_id")
    if not isinstance(message, str) or not message.strip():
        raise InvalidInput("message: a non-empty string is required")
    if len(message) > MAX_MESSAGE_CHARS:
        raise InvalidInput(f"message: at most {MAX_MESSAGE_CHARS} characters")
    if not isinstance(thread_id, str) or not thread_id:
        raise InvalidInput("thread_id: a non-empty string is required")
    if len(thread_id) > MAX_THREAD_ID_CHARS:
        raise InvalidInput(f"thread_id: at most {MAX_THREAD_ID_CHARS} characters")
    turn = value.get("turn_id")
    if turn is not None and (not isinstance(turn, str) or not 0 < len(turn) <= 255):
        raise InvalidInput("turn_id: a string of 1-255 characters")
    # The request key is the client's Idempotency-Key (or, without one, the request's own id,
    # which a retry does not repeat: such a turn starts over).
    return message, thread_id, turn or current_request_key() or uuid4().hex

"""``ResilientChatModel``: a LangChain chat model that routes over ordered providers.

It is a real :class:`~langchain_core.language_models.BaseChatModel` (invoke, ainvoke, stream,
astream, batch, ``bind_tools``, ``with_structured_output``).  Each provider has a circuit
breaker shared by every request (and, through a :class:`BreakerStore`, by every replica); a
request walks the providers in order, hedges a slow one, fails over on retryable errors, backs
off between rounds and never outlives its deadline.  Streams fail over transparently until the
first chunk; after it, the next provider is asked to continue the partial answer (or, with
``stream_failover="raise"``, a :class:`StreamInterrupted` carries the partial text).

Every answer says how it was produced in ``response_metadata["lcha"]``, and an answer from any
provider but the first records the ``primary_llm`` degradation for the server to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from langchain_ha.resilience._calls import (
    Stream,
    aclose,
    as_generation_chunks,
    close_stream,
    default_name,
    result_usage,
    runnable_result,
    threaded,
    unwrap,
)
from langchain_ha.resilience._clock import SYSTEM_CLOCK, Clock
from langchain_ha.resilience._engine import Engine
from langchain_ha.resilience._route import Attempt, Route
from langchain_ha.resilience._sync import iterate_sync, run_sync
from langchain_ha.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from langchain_ha.resilience.deadline import Deadline, current_deadline
from langchain_ha.resilience.degrade import record_degraded
from langchain_ha.resilience.errors import StreamInterrupted, classify
from langchain_ha.resilience.events import NullEvents, RouterEvents
from langchain_ha.resilience.hedging import HedgePolicy
from langchain_ha.resilience.retry import RetryPolicy

CONTINUATION_INSTRUCTION = (
    "Continue your previous answer exactly where it stopped. Do not repeat any of it."
)
"""The request a fallback provider gets after a stream died mid-way (after the partial text)."""


# Set by the sync entry points: the shared async core then calls the providers' sync clients
# (in worker threads), because their async clients may be bound to another event loop.
_SYNC_CLIENTS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lcha_sync_clients", default=False
)


class Provider(BaseModel):
    """One provider (model + endpoint + key) the router may use, in priority order."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str = Field(min_length=1, max_length=64)
    model: Runnable[Any, Any]
    timeout_s: float | None = Field(default=None, gt=0)
    context_window: int | None = Field(default=None, gt=0)


class ResilientChatModel(BaseChatModel):
    """A chat model that keeps answering while providers fail.

    Args:
        providers: ordered providers (or bare chat models, named after their model); the first
            is the primary, the rest fallbacks.
        retry: rounds over the providers and backoff between rounds.
        breaker: circuit-breaker settings, one breaker per provider.
        breaker_store: optional shared state (e.g. PostgreSQL) so every replica sees a trip.
        hedge: when to also ask the next provider if the current one is slow.
        attempt_timeout_s: per-attempt timeout (to the whole answer, or the first chunk).
        stream_idle_timeout_s: longest silence between two chunks of a stream.
        deadline_s: the whole request's budget; an enclosing ``deadline()`` may shorten it.
        stream_failover: ``"continue"`` on the next provider, or ``"raise"``.
        events: hooks for metrics, e.g. ``langchain_ha.resilience.prometheus.PrometheusEvents``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    providers: list[Provider]
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    breaker_store: Any = None
    hedge: HedgePolicy = Field(default_factory=HedgePolicy)
    attempt_timeout_s: float | None = Field(default=60.0, gt=0)
    stream_idle_timeout_s: float | None = Field(default=30.0, gt=0)
    deadline_s: float | None = Field(default=120.0, gt=0)
    stream_failover: Literal["continue", "raise"] = "continue"
    events: Any = None
    degraded_component: str = "primary_llm"
    clock: Any = SYSTEM_CLOCK

    _engine: Engine = PrivateAttr()

    @field_validator("providers", mode="before")
    @classmethod
    def _as_providers(cls, value: Sequence[Any]) -> list[Provider]:
        if not value:
            raise ValueError("at least one provider is required")
        out: list[Provider] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            provider = item if isinstance(item, Provider) else Provider(
                name=default_name(item, i), model=item
            )
            if provider.name in seen:
                raise ValueError(f"providers[{i}]: duplicate provider name {provider.name!r}")
            seen.add(provider.name)
            out.append(provider)
        return out

    def model_post_init(self, context: Any, /) -> None:
        events: RouterEvents = self.events or NullEvents()
        clock: Clock = self.clock

        def transition(name: str, old: BreakerState, new: BreakerState) -> None:
            events.on_breaker_transition(name, old.value, new.value)

        routes = [
            Route(
                name=p.name,
                index=i,
                breaker=CircuitBreaker(
                    p.name, self.breaker, clock=clock, store=self.breaker_store,
                    on_transition=transition,
                ),
                timeout_s=p.timeout_s,
                context_window=p.context_window,
            )
            for i, p in enumerate(self.providers)
        ]
        self._engine = Engine(
            routes, retry=self.retry, hedge=self.hedge, attempt_timeout_s=self.attempt_timeout_s,
            events=events, clock=clock,
        )

    # -- introspection ------------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "langchain-ha-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"providers": [p.name for p in self.providers]}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # BaseChatModel's default probes attributes we do not have (each miss is a pydantic
        # AttributeError): a fifth of the router's own per-call cost.
        params = LangSmithParams(ls_provider="langchain_ha", ls_model_type="chat",
                                 ls_model_name=self.providers[0].name)
        if stop:
            params["ls_stop"] = stop
        return params

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The per-provider circuit breakers, by provider name (for health and admin views)."""
        return {r.name: r.breaker for r in self._engine.routes}

    # -- invoke ---------------------------------------------------------------------------------

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        engine = self._engine  # a pydantic private attribute: each access costs a lookup
        call = partial(self._invoke_one, messages, stop, kwargs)
        attempt = await engine.run(
            "invoke", call, usage=result_usage, deadline=self._deadline(engine.clock)
        )
        result = attempt.value
        for gen in result.generations:
            gen.message.response_metadata["lcha"] = self._provenance(attempt)
        self._note_degraded(attempt.route)
        return result

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        token = _SYNC_CLIENTS.set(True)
        try:
            return run_sync(self._agenerate(messages, stop, None, **kwargs))
        finally:
            _SYNC_CLIENTS.reset(token)

    def _invoke_one(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any],
        route: Route,
    ) -> Awaitable[ChatResult]:
        # Returns the provider's own coroutine rather than awaiting it in one more frame.
        model, bound = unwrap(self.providers[route.index].model)
        args = {**bound, **kwargs}
        if isinstance(model, BaseChatModel):
            if _SYNC_CLIENTS.get():
                return asyncio.to_thread(model._generate, messages, stop, None, **args)
            return model._agenerate(messages, stop=stop, **args)
        return runnable_result(model, messages, stop, args, sync=_SYNC_CLIENTS.get())

    # -- stream ---------------------------------------------------------------------------------

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        deadline = self._deadline(self._engine.clock)
        conversation = messages
        text = ""
        switches: list[dict[str, Any]] = []
        excluded: frozenset[str] = frozenset()
        while True:
            opener = partial(self._open_stream, conversation, stop, kwargs)
            attempt = await self._engine.run(
                "stream", opener, exclude=excluded, discard=close_stream, settle=False,
                deadline=deadline,
            )
            if switches:
                switches[-1]["to"] = attempt.route.name
                yield ChatGenerationChunk(
                    message=AIMessageChunk(content="", response_metadata={
                        "lcha_failovers": [dict(switches[-1])]})
                )
            first, rest = attempt.value
            tool_calls = False
            try:
                chunk: ChatGenerationChunk | None = first
                while chunk is not None:
                    text += chunk.text
                    tool_calls = tool_calls or bool(
                        getattr(chunk.message, "tool_call_chunks", None)
                    )
                    yield chunk
                    chunk = await self._next_chunk(rest, deadline)
            except Exception as exc:
                await close_stream((first, rest))
                elapsed = self._engine.clock.monotonic() - attempt.started
                attempt.permit.failure(elapsed)
                self._engine.events.on_failure(
                    attempt.route.name, "stream", classify(exc).reason, elapsed
                )
                if self.stream_failover == "raise" or tool_calls:
                    raise StreamInterrupted(text, attempt.route.name, exc) from exc
                switches.append({"from": attempt.route.name, "at_chars": len(text),
                                 "reason": classify(exc).reason})
                excluded = excluded | {attempt.route.name}
                conversation = continuation_messages(messages, text) if text else messages
                continue
            except BaseException:
                attempt.permit.release()
                await close_stream((first, rest))
                raise
            attempt.permit.success(self._engine.clock.monotonic() - attempt.started)
            meta = self._provenance(attempt)
            if switches:
                meta["continued_after"] = [s["from"] for s in switches]
                meta["fallback"] = True
                record_degraded(self.degraded_component)
            self._note_degraded(attempt.route)
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", response_metadata={"lcha": meta})
            )
            return

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        token = _SYNC_CLIENTS.set(True)
        try:
            yield from iterate_sync(self._astream(messages, stop, None, **kwargs))
        finally:
            _SYNC_CLIENTS.reset(token)

    async def _open_stream(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any],
        route: Route,
    ) -> Stream:
        model, bound = unwrap(self.providers[route.index].model)
        if _SYNC_CLIENTS.get() and isinstance(model, BaseChatModel):
            stream = threaded(model._stream(messages, stop, None, **{**bound, **kwargs}))
        elif isinstance(model, BaseChatModel):
            stream = model._astream(messages, stop=stop, **{**bound, **kwargs})
        else:
            stream = as_generation_chunks(
                model.astream(messages, stop=stop, **{**bound, **kwargs})
            )
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            raise StreamInterrupted("", route.name) from None
        except BaseException:
            with contextlib.suppress(Exception):
                await aclose(stream)
            raise
        return first, stream

    async def _next_chunk(
        self, stream: AsyncIterator[ChatGenerationChunk], deadline: Deadline | None
    ) -> ChatGenerationChunk | None:
        limit = self.stream_idle_timeout_s
        if deadline is not None:
            left = deadline.remaining()
            limit = left if limit is None else min(limit, left)
        try:
            async with asyncio.timeout(limit):
                return await anext(stream)
        except StopAsyncIteration:
            return None

    # -- tools and structured output ---------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on every provider; a provider without tool support answers plainly."""
        providers = []
        for p in self.providers:
            model, _ = unwrap(p.model)
            try:
                bound = model.bind_tools(tools, tool_choice=tool_choice, **kwargs)
            except (NotImplementedError, AttributeError):
                bound = p.model
            providers.append(p.model_copy(update={"model": bound}))
        copy = self.model_copy(update={"providers": providers})
        copy._engine = self._engine  # same breakers and latency history: same providers
        return copy

    # -- helpers ------------------------------------------------------------------------------

    def _deadline(self, clock: Clock) -> Deadline | None:
        outer = current_deadline()
        if self.deadline_s is None:
            return outer
        own = Deadline(clock.monotonic() + self.deadline_s, clock)
        if outer is None or own.remaining() < outer.remaining():
            return own
        return outer

    def _provenance(self, attempt: Attempt[Any]) -> dict[str, Any]:
        return {
            "provider": attempt.route.name,
            "fallback": attempt.route.index > 0,
            "attempts": attempt.attempts,
            "hedged": attempt.hedged,
        }

    def _note_degraded(self, route: Route) -> None:
        if route.index > 0:
            record_degraded(self.degraded_component)


def continuation_messages(messages: Sequence[BaseMessage], partial_text: str) -> list[BaseMessage]:
    """The conversation a fallback provider gets to continue ``partial_text`` (a new list)."""
    return [
        *messages,
        AIMessage(content=partial_text),
        HumanMessage(content=CONTINUATION_INSTRUCTION),
    ]


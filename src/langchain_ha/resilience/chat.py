"""``ResilientChatModel``: a LangChain chat model that routes over ordered providers.

It is a real :class:`~langchain_core.language_models.BaseChatModel` (invoke, ainvoke, stream,
astream, batch, ``bind_tools``, ``with_structured_output``).  Each provider has a circuit
breaker shared by every request (and, through a :class:`BreakerStore`, by every replica); a
request walks the providers in order, hedges a slow one, fails over on retryable errors, backs
off between rounds and never outlives its deadline.  Streams fail over transparently until the
first chunk with content; after it, the next provider is asked to continue the partial answer
and its continuation is checked before it is passed on (see
:mod:`langchain_ha.resilience._stream` and :mod:`langchain_ha.resilience.continuation`).

A refusal (the model declined, or a content filter rejected the request) is not retried: a
refused answer is returned as it is, with ``response_metadata["lcha"]["refusal"]`` saying why,
and a request the provider rejected raises :class:`ProviderRefused` (a LangChain
``ModelRefusalError``) naming the reason; with ``refusal_fallback=True`` both go to the next
provider instead.

Every answer says how it was produced in ``response_metadata["lcha"]``, and an answer from any
provider but the first records the ``primary_llm`` degradation for the server to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from langchain_ha._sync import iterate_sync, run_sync
from langchain_ha.resilience._calls import (
    Stream,
    aclose,
    as_generation_chunks,
    as_one_chunk,
    default_name,
    has_content,
    is_final,
    refusal_reason,
    result_usage,
    runnable_result,
    streams,
    threaded,
    unwrap,
)
from langchain_ha.resilience._clock import SYSTEM_CLOCK, Clock
from langchain_ha.resilience._engine import Engine
from langchain_ha.resilience._route import Attempt, Route
from langchain_ha.resilience._stream import StreamFailover, StreamFailoverMode, StreamSettings
from langchain_ha.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from langchain_ha.resilience.continuation import CONTINUATION_INSTRUCTION, continuation_messages
from langchain_ha.resilience.deadline import Deadline, current_deadline
from langchain_ha.resilience.degrade import record_degraded
from langchain_ha.resilience.errors import ProviderRefused, StreamInterrupted
from langchain_ha.resilience.events import NullEvents, RouterEvents
from langchain_ha.resilience.hedging import HedgePolicy
from langchain_ha.resilience.options import (
    CallOptions,
    Unsupported,
    bind_options,
    bind_tools_on,
)
from langchain_ha.resilience.retry import RetryPolicy

__all__ = ["CONTINUATION_INSTRUCTION", "Provider", "ResilientChatModel", "continuation_messages"]

# The integrations whose streams are known to end with a finish reason (a stream without one
# was cut); others declare it with ``Provider(finish_marker=True)``.
_FINISH_MARKED = frozenset({
    "openai-chat", "azure-openai-chat", "anthropic-chat", "chat-google-generative-ai",
})


# Set by the sync entry points: the shared async core then calls the providers' sync clients
# (in worker threads), because their async clients may be bound to another event loop.
_SYNC_CLIENTS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lcha_sync_clients", default=False
)


class Provider(BaseModel):
    """One provider (model + endpoint + key) the router may use, in priority order.

    Args:
        name: a short unique label (metrics, breakers, provenance).
        model: the chat model (or any Runnable answering messages), with its own retries off.
        timeout_s: this provider's attempt timeout, instead of the router's.
        context_window: its context window in tokens; after a context-length error only
            providers with a larger window are tried.
        accepts_prefill: it continues an answer from an assistant prefill (a conversation that
            ends with the partial answer), as older Claude models do; otherwise a stream cut
            mid-answer is continued with a user message.  A provider that answers a prefill
            with a 400 is asked again with the user message, and not given a prefill again.
        finish_marker: its streams end with a finish reason, so a stream that ends without one
            was cut; None: decided by the model's kind (true for OpenAI, Anthropic, Gemini...).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str = Field(min_length=1, max_length=64)
    model: Runnable[Any, Any]
    timeout_s: float | None = Field(default=None, gt=0)
    context_window: int | None = Field(default=None, gt=0)
    accepts_prefill: bool = False
    finish_marker: bool | None = None

    def sends_finish_marker(self) -> bool:
        """Whether this provider's streams end with a finish reason (see ``finish_marker``)."""
        if self.finish_marker is not None:
            return self.finish_marker
        model, _ = unwrap(self.model)
        return isinstance(model, BaseChatModel) and model._llm_type in _FINISH_MARKED


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
        stream_finish_grace_s: how long trailing chunks (usage) are awaited after a stream's
            finish marker before the answer is complete without them.
        deadline_s: the whole request's budget; an enclosing ``deadline()`` may shorten it.
        stream_failover: after a stream died mid-answer: ``"continue"`` it on the next
            provider, checked (default); ``"restart"`` the answer on the next provider with a
            restart signal (for consumers that honour it, see
            :mod:`langchain_ha.resilience.continuation`); or ``"raise"``
            :class:`StreamInterrupted` with the partial text.
        refusal_fallback: ask the next provider when one refuses (default: a refusal is
            final; its reason reaches the caller).
        events: hooks for metrics, e.g. ``langchain_ha.resilience.prometheus.PrometheusEvents``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    providers: list[Provider]
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    breaker_store: Any = None
    hedge: HedgePolicy = Field(default_factory=HedgePolicy)
    attempt_timeout_s: float | None = Field(default=60.0, gt=0)
    stream_idle_timeout_s: float | None = Field(default=15.0, gt=0)
    stream_finish_grace_s: float = Field(default=1.0, ge=0)
    deadline_s: float | None = Field(default=120.0, gt=0)
    stream_failover: StreamFailoverMode = "continue"
    refusal_fallback: bool = False
    events: Any = None
    degraded_component: str = "primary_llm"
    clock: Any = SYSTEM_CLOCK

    _engine: Engine = PrivateAttr()
    _excluded: dict[str, str] = PrivateAttr(default_factory=dict)

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
                prefill=p.accepts_prefill,
                finish_marker=p.sends_finish_marker(),
            )
            for i, p in enumerate(self.providers)
        ]
        self._engine = Engine(
            routes, retry=self.retry, hedge=self.hedge, attempt_timeout_s=self.attempt_timeout_s,
            events=events, clock=clock, refusal_fallback=self.refusal_fallback,
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
            "invoke", call, usage=result_usage, deadline=self._deadline(engine.clock),
            exclude=frozenset(self._excluded),
        )
        result = attempt.value
        usage = result_usage(result)
        if usage:
            engine.events.on_usage(attempt.route.name, "invoke", usage)
        for gen in result.generations:
            meta = self._provenance(attempt)
            refusal = refusal_reason(gen.message)
            if refusal:
                meta["refusal"] = refusal
            gen.message.response_metadata["lcha"] = meta
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
        stop, args = _call_args(stop, bound, kwargs)
        if isinstance(model, BaseChatModel):
            if _SYNC_CLIENTS.get():
                call = asyncio.to_thread(model._generate, messages, stop, None, **args)
            else:
                call = model._agenerate(messages, stop=stop, **args)
        else:
            call = runnable_result(model, messages, stop, args, sync=_SYNC_CLIENTS.get())
        return _refusing(call, route.name) if self.refusal_fallback else call

    # -- stream ---------------------------------------------------------------------------------

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        engine = self._engine
        settings = StreamSettings(failover=self.stream_failover,
                                  idle_timeout_s=self.stream_idle_timeout_s,
                                  finish_grace_s=self.stream_finish_grace_s)
        run = StreamFailover(engine, partial(self._open_stream, stop, kwargs), messages,
                             settings, self._deadline(engine.clock),
                             exclude=frozenset(self._excluded))
        async for chunk in run.run():
            meta = chunk.message.response_metadata.get("lcha") if chunk.message.response_metadata \
                else None
            if meta is not None and meta["fallback"]:
                record_degraded(self.degraded_component)
            yield chunk

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
        self, stop: list[str] | None, kwargs: Mapping[str, Any], route: Route,
        messages: list[BaseMessage],
    ) -> Stream:
        """Open ``route``'s stream: its chunks up to the first with content, and the rest."""
        model, bound = unwrap(self.providers[route.index].model)
        if isinstance(model, BaseChatModel) and not streams(model):
            stream = as_one_chunk(self._invoke_one(messages, stop, kwargs, route))
        else:
            call_stop, args = _call_args(stop, bound, kwargs)
            if _SYNC_CLIENTS.get() and isinstance(model, BaseChatModel):
                stream = threaded(model._stream(messages, call_stop, None, **args))
            elif isinstance(model, BaseChatModel):
                stream = model._astream(messages, stop=call_stop, **args)
            else:
                stream = as_generation_chunks(model.astream(messages, stop=call_stop, **args))
        leading: list[ChatGenerationChunk] = []
        try:
            while True:
                chunk = await anext(stream)
                leading.append(chunk)
                if has_content(chunk) or is_final(chunk):
                    return leading, stream
        except StopAsyncIteration:
            if not route.finish_marker and leading:
                return leading, stream  # ended before any content: an empty answer
            raise StreamInterrupted("", route.name, reason="truncated") from None
        except BaseException:
            with contextlib.suppress(Exception):
                await aclose(stream)
            raise

    # -- tools and structured output ---------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on every provider; a provider without tool support answers plainly.
        ``parallel_tool_calls`` is given to each in its integration's terms (see
        :func:`~langchain_ha.resilience.options.bind_tools_on`)."""
        providers = []
        for p in self.providers:
            model, _ = unwrap(p.model)
            try:
                bound = bind_tools_on(model, tools, tool_choice=tool_choice, **kwargs)
            except (NotImplementedError, AttributeError):
                bound = p.model
            providers.append(p.model_copy(update={"model": bound}))
        copy = self.model_copy(update={"providers": providers})
        copy._engine = self._engine  # same breakers and latency history: same providers
        copy._excluded = dict(self._excluded)
        return copy

    def with_options(self, options: CallOptions, *, only: str | None = None
                     ) -> ResilientChatModel:
        """A copy that asks ``options`` of whichever provider answers (see
        :mod:`langchain_ha.resilience.options`); same breakers and latency history.

        Each provider gets the options in its integration's terms.  A provider that cannot
        honour one of them is skipped by requests through the copy (:attr:`excluded` says
        which and why), and so is every provider but ``only`` when it is given (a request
        pinned to one provider).  Raises :class:`~langchain_ha.resilience.options.Unsupported`
        when no provider is left (naming the first option refused), ``KeyError`` for an
        unknown ``only``.
        """
        names = [p.name for p in self.providers]
        if only is not None and only not in names:
            raise KeyError(only)
        excluded = dict(self._excluded)
        refused: list[Unsupported] = []
        providers = []
        for p in self.providers:
            if p.name in excluded:
                providers.append(p)
                continue
            if only is not None and p.name != only:
                excluded[p.name] = f"the request is pinned to {only}"
                providers.append(p)
                continue
            try:
                bound = bind_options(p.model, options)
            except Unsupported as exc:
                excluded[p.name] = str(exc)
                refused.append(exc)
                providers.append(p)
                continue
            providers.append(p if bound is p.model else p.model_copy(update={"model": bound}))
        if len(excluded) == len(providers):
            if refused:
                raise refused[0]
            raise Unsupported("model", "this router", "every provider is excluded")
        copy = self.model_copy(update={"providers": providers})
        copy._engine = self._engine
        copy._excluded = excluded
        return copy

    @property
    def excluded(self) -> Mapping[str, str]:
        """Providers this copy does not use, with the reason (see :meth:`with_options`)."""
        return dict(self._excluded)

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


def _call_args(stop: list[str] | None, bound: Mapping[str, Any], kwargs: Mapping[str, Any]
               ) -> tuple[list[str] | None, dict[str, Any]]:
    """The stop sequences and keyword arguments of one provider call: the call's own over
    those bound on the provider (``model.bind(stop=...)`` binds a keyword the provider's
    ``_agenerate`` also takes positionally)."""
    args = {**bound, **kwargs}
    bound_stop = args.pop("stop", None)
    return (stop if stop is not None else bound_stop), args


async def _refusing(call: Awaitable[ChatResult], provider: str) -> ChatResult:
    """``call``'s result, or :class:`ProviderRefused` if the model refused (for the engine to
    fail over, with ``refusal_fallback``)."""
    result = await call
    for gen in result.generations:
        reason = refusal_reason(gen.message)
        if reason:
            raise ProviderRefused(provider, reason, str(gen.message.content)[:200])
    return result

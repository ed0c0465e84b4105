"""Streaming with failover: one stream request over the router's providers.

Until the first chunk with content, a stream fails over like any call (the engine hedges, backs
off and respects the deadline).  After it, the stream is watched chunk by chunk:

- a silence longer than the idle timeout ends the attempt (``stalled``); so do an error from
  the provider or its SDK (a cut connection, a malformed chunk), and the end of a stream that
  never sent the provider's finish marker (``truncated``) where the provider sends one;
- once the finish marker has arrived, trailing chunks (usage) are awaited for a short grace
  only: a provider that then holds the connection open does not hold the answer;
- tool-call chunks are held back until the attempt has finished, so a tool call never spans
  two providers: a stream cut inside one starts the call afresh elsewhere;
- an attempt that failed after text reached the caller is continued on the next provider,
  whose output is checked by :class:`~langchain_ha.resilience.continuation.Splicer` before any
  of it is passed on (see that module for what happens when it does not continue the text).

Every attempt's outcome is reported to its breaker and to the router's events; when no
provider can finish the answer, the caller gets a :class:`StreamInterrupted` holding the
partial text and every attempt's error (or, if no text had been passed on yet, the engine's
:class:`AllProvidersFailed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGenerationChunk

from langchain_ha.resilience._calls import Stream, close_stream, is_final, refusal_reason
from langchain_ha.resilience._engine import Engine
from langchain_ha.resilience._route import Attempt, Route
from langchain_ha.resilience.continuation import (
    RESTART_KEY,
    ContinuationMismatch,
    Splicer,
    continuation_cue,
    continuation_messages,
    restarts_accepted,
)
from langchain_ha.resilience.deadline import Deadline
from langchain_ha.resilience.errors import (
    AllProvidersFailed,
    ErrorKind,
    StreamInterrupted,
    classify,
)

log = logging.getLogger("langchain_ha.router")

OpenFn = Callable[[Route, list[BaseMessage]], Awaitable[Stream]]
StreamFailoverMode = Literal["continue", "restart", "raise"]


@dataclass(frozen=True)
class StreamSettings:
    """How a stream is watched and failed over (see :class:`ResilientChatModel`)."""

    failover: StreamFailoverMode = "continue"
    idle_timeout_s: float | None = 15.0
    finish_grace_s: float = 1.0


class _Unverified(Exception):
    """The fallback answered but did not continue the partial text, and no restart is allowed."""


class StreamFailover:
    """One streaming request: yields the answer's chunks, failing over as the module says."""

    def __init__(self, engine: Engine, open_fn: OpenFn, messages: Sequence[BaseMessage],
                 settings: StreamSettings, deadline: Deadline | None,
                 exclude: frozenset[str] = frozenset()) -> None:
        self._engine = engine
        self._open_fn = open_fn
        self._messages = list(messages)
        self._settings = settings
        self._deadline = deadline
        self.text = ""  # what the caller has received
        self._excluded: set[str] = set(exclude)
        self._usage: UsageMetadata | None = None  # the current attempt's token usage
        self._switches: list[dict[str, Any]] = []
        self._cut_errors: list[Exception] = []
        self._splicer: Splicer | None = None
        self._held: list[ChatGenerationChunk] = []
        self._cues: dict[str, str | None] = {}  # per provider: the cue it was asked to echo
        self._finished = False
        self._restarted = False
        self._last: ChatGenerationChunk | None = None

    # -- the request ---------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[ChatGenerationChunk]:
        """The answer's chunks, then one carrying the provenance (``response_metadata["lcha"]``)."""
        clock = self._engine.clock
        while True:
            attempt = await self._open()
            route = attempt.route
            leading, rest = attempt.value
            self._finished = False
            self._usage = None
            self._held = []
            self._splicer = (Splicer(self.text, cue=self._cues.get(route.name)) if self.text
                             and self._settings.failover == "continue" else None)
            if self._switches:
                self._switches[-1]["to"] = route.name
                yield _meta_chunk({"lcha_failovers": [dict(self._switches[-1])]})
            if self.text and self._settings.failover == "restart":
                yield self._restart_signal(route.name)
            try:
                for first in leading:
                    for out in self._take(first, route):
                        yield out
                while (chunk := await self._next(rest, route)) is not None:
                    for out in self._take(chunk, route):
                        yield out
                for out in self._end(route):
                    yield out
            except _Unverified as exc:
                self._report_usage(route)
                await close_stream(attempt.value)
                attempt.permit.success(clock.monotonic() - attempt.started)  # it is up
                self._switch(route, StreamInterrupted(self.text, route.name, exc,
                                                      reason="unverified"))
                continue
            except Exception as exc:
                self._report_usage(route)
                await close_stream(attempt.value)
                self._failed(attempt, exc)
                continue
            except BaseException:
                self._report_usage(route)
                attempt.permit.release()
                await close_stream(attempt.value)
                raise
            self._report_usage(route)
            await close_stream(attempt.value)  # ended by the finish grace: let the rest go
            attempt.permit.success(clock.monotonic() - attempt.started)
            for held in self._held:
                yield held
            yield _meta_chunk({"lcha": self._provenance(attempt)})
            return

    async def _open(self) -> Attempt[Stream]:
        try:
            return await self._engine.run(
                "stream", self._opener, exclude=frozenset(self._excluded), discard=close_stream,
                settle=False, deadline=self._deadline,
            )
        except AllProvidersFailed as exc:
            if not self._cut_errors:
                raise
            group = AllProvidersFailed(
                f"stream interrupted, and no provider finished it: {exc.message}",
                [*self._cut_errors, *exc.exceptions],
            )
            if not self.text:
                raise group from None
            first = self._switches[0]["from"]
            reason = self._switches[-1]["reason"]
            raise StreamInterrupted(self.text, first, group, reason=reason) from group

    async def _opener(self, route: Route) -> Stream:
        if not self.text or self._settings.failover == "restart":
            return await self._open_fn(route, self._messages)
        prefill = route.prefill
        self._cues[route.name] = None if prefill else continuation_cue(self.text)
        try:
            return await self._open_fn(
                route, continuation_messages(self._messages, self.text, prefill=prefill))
        except Exception as exc:
            if not prefill or classify(exc).kind is not ErrorKind.FATAL:
                raise
            # The provider refused the assistant prefill: the cut stays the error that counts.
            route.prefill = False
            log.warning("provider %s refused an assistant prefill (%s); continuing with a user "
                        "message from now on", route.name, classify(exc).reason)
            self._cues[route.name] = continuation_cue(self.text)
            return await self._open_fn(route, continuation_messages(self._messages, self.text))

    # -- one attempt's chunks ------------------------------------------------------------------

    def _take(self, chunk: ChatGenerationChunk, route: Route) -> list[ChatGenerationChunk]:
        """What to pass on of ``chunk`` now (tool calls and what follows them are held)."""
        self._last = chunk
        usage = getattr(chunk.message, "usage_metadata", None)
        if usage:
            self._usage = add_usage(self._usage, usage)
        if is_final(chunk):
            self._finished = True
        if self._held or getattr(chunk.message, "tool_call_chunks", None):
            self._held.append(chunk)
            return []
        if self._splicer is None:
            self.text += chunk.text
            return [chunk]
        try:
            out = self._splicer.feed(chunk.text)
        except ContinuationMismatch as exc:
            return self._restart(exc.text, route, chunk)
        return self._rebuilt(chunk, out)

    def _end(self, route: Route) -> list[ChatGenerationChunk]:
        """The attempt's stream ended: is it complete, and what is still to pass on."""
        if route.finish_marker and not self._finished:
            raise StreamInterrupted(self.text, route.name, reason="truncated")
        if self._splicer is None:
            return []
        try:
            tail = self._splicer.end()
        except ContinuationMismatch as exc:
            return self._restart(exc.text, route, None)
        return self._rebuilt(None, tail)

    async def _next(self, stream: AsyncIterator[ChatGenerationChunk], route: Route
                    ) -> ChatGenerationChunk | None:
        limit = self._settings.idle_timeout_s
        if self._finished:
            limit = self._settings.finish_grace_s if limit is None else min(
                limit, self._settings.finish_grace_s)
        if self._deadline is not None:
            left = self._deadline.remaining()
            limit = left if limit is None else min(limit, left)
        try:
            async with asyncio.timeout(limit) as timer:
                return await anext(stream)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if not timer.expired():
                raise
            if self._finished:
                return None  # finished; a provider holding the connection open is not waited for
            raise StreamInterrupted(self.text, route.name, reason="stalled") from None

    def _rebuilt(self, chunk: ChatGenerationChunk | None, text: str
                 ) -> list[ChatGenerationChunk]:
        """``chunk`` with its text replaced by ``text`` (spliced output is plain text)."""
        self.text += text
        if chunk is None:
            return [ChatGenerationChunk(message=AIMessageChunk(content=text))] if text else []
        msg = chunk.message
        usage = getattr(msg, "usage_metadata", None)
        if not text and not usage and not msg.response_metadata and not chunk.generation_info:
            return []
        return [ChatGenerationChunk(
            message=AIMessageChunk(content=text, id=msg.id, usage_metadata=usage,
                                   response_metadata=dict(msg.response_metadata)),
            generation_info=chunk.generation_info,
        )]

    def _restart(self, text: str, route: Route, chunk: ChatGenerationChunk | None
                 ) -> list[ChatGenerationChunk]:
        """The fallback restarted the answer: signal a restart, if the consumer honours one."""
        if not restarts_accepted():
            raise _Unverified(f"{route.name} restarted the answer instead of continuing it")
        signal = self._restart_signal(route.name)
        self._splicer = None
        self.text = ""
        return [signal, *self._rebuilt(chunk, text)]

    def _restart_signal(self, provider: str) -> ChatGenerationChunk:
        discarded, self.text, self._restarted = len(self.text), "", True
        return _meta_chunk({RESTART_KEY: {"discard_chars": discarded, "provider": provider}})

    # -- outcomes ------------------------------------------------------------------------------

    def _report_usage(self, route: Route) -> None:
        """The attempt's token usage, as its chunks reported it, to the router's events."""
        usage, self._usage = self._usage, None
        if usage:
            self._engine.events.on_usage(route.name, "stream", {
                "input_tokens": int(usage.get("input_tokens", 0)),
                "output_tokens": int(usage.get("output_tokens", 0))})

    def _failed(self, attempt: Attempt[Stream], exc: Exception) -> None:
        """Settle a failed attempt; raise if the stream may not fail over."""
        engine = self._engine
        elapsed = engine.clock.monotonic() - attempt.started
        attempt.permit.failure(elapsed)
        verdict = classify(exc)
        engine.events.on_failure(attempt.route.name, "stream", verdict.reason, elapsed)
        if self._settings.failover == "raise":
            if isinstance(exc, StreamInterrupted):
                raise exc
            raise StreamInterrupted(self.text, attempt.route.name, exc,
                                    reason=verdict.reason) from exc
        self._switch(attempt.route, exc)

    def _switch(self, route: Route, exc: Exception) -> None:
        reason = classify(exc).reason
        log.info("stream on %s ended after %d characters (%s); failing over", route.name,
                 len(self.text), reason)
        self._cut_errors.append(exc)
        self._excluded.add(route.name)
        self._switches.append({"from": route.name, "at_chars": len(self.text), "reason": reason})

    def _provenance(self, attempt: Attempt[Stream]) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "provider": attempt.route.name,
            "fallback": attempt.route.index > 0 or bool(self._switches),
            "attempts": attempt.attempts + len(self._switches),
            "hedged": attempt.hedged,
        }
        if self._switches:
            meta["continued_after"] = [s["from"] for s in self._switches]
        if self._restarted:
            meta["restarted"] = True
        last = self._held[-1] if self._held else self._last
        refusal = refusal_reason(last.message) if last is not None else None
        if refusal:
            meta["refusal"] = refusal
        return meta


def _meta_chunk(metadata: dict[str, Any]) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=metadata))

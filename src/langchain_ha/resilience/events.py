"""Hooks the router calls on every attempt, outcome, breaker transition, fallback and hedge,
and with the token usage of every answer that reports it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger("langchain_ha.events")


class RouterEvents(Protocol):
    """Receives the router's events; implementations must be cheap and must not raise."""

    def on_attempt(self, provider: str, mode: str) -> None: ...

    def on_success(self, provider: str, mode: str, latency_s: float,
                   usage: Mapping[str, int] | None) -> None: ...

    def on_failure(self, provider: str, mode: str, reason: str, latency_s: float) -> None: ...

    def on_breaker_transition(self, provider: str, old: str, new: str) -> None: ...

    def on_fallback(self, from_provider: str, to_provider: str, reason: str) -> None: ...

    def on_hedge(self, provider: str, hedged_to: str) -> None: ...

    def on_usage(self, provider: str, mode: str, usage: Mapping[str, int]) -> None:
        """Tokens an answer used (``input_tokens``, ``output_tokens``), once per answer: an
        invoke's, or a stream attempt's as its chunks reported it (a stream cut before its
        usage arrived reports nothing)."""
        ...


class NullEvents:
    """Ignores every event."""

    def on_attempt(self, provider: str, mode: str) -> None:
        pass

    def on_success(self, provider: str, mode: str, latency_s: float,
                   usage: Mapping[str, int] | None) -> None:
        pass

    def on_failure(self, provider: str, mode: str, reason: str, latency_s: float) -> None:
        pass

    def on_breaker_transition(self, provider: str, old: str, new: str) -> None:
        pass

    def on_fallback(self, from_provider: str, to_provider: str, reason: str) -> None:
        pass

    def on_hedge(self, provider: str, hedged_to: str) -> None:
        pass

    def on_usage(self, provider: str, mode: str, usage: Mapping[str, int]) -> None:
        pass


class _Fanout:
    """Calls the same method on every sink; one failing sink never breaks the others."""

    def __init__(self, sinks: tuple[RouterEvents, ...], method: str) -> None:
        self._calls = [getattr(s, method) for s in sinks]
        self._method = method

    def __call__(self, *args: Any) -> None:
        for call in self._calls:
            try:
                call(*args)
            except Exception:
                log.exception("event hook %s failed", self._method)


class MultiEvents(NullEvents):
    """Sends every event to several sinks."""

    def __init__(self, *sinks: RouterEvents) -> None:
        for method in ("on_attempt", "on_success", "on_failure", "on_breaker_transition",
                       "on_fallback", "on_hedge", "on_usage"):
            setattr(self, method, _Fanout(sinks, method))


class RecordingEvents(NullEvents):
    """Keeps every event as ``(name, *args)``: for tests and debugging."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_attempt(self, provider: str, mode: str) -> None:
        self.events.append(("on_attempt", provider, mode))

    def on_success(self, provider: str, mode: str, latency_s: float,
                   usage: Mapping[str, int] | None) -> None:
        self.events.append(("on_success", provider, mode, latency_s, usage))

    def on_failure(self, provider: str, mode: str, reason: str, latency_s: float) -> None:
        self.events.append(("on_failure", provider, mode, reason, latency_s))

    def on_breaker_transition(self, provider: str, old: str, new: str) -> None:
        self.events.append(("on_breaker_transition", provider, old, new))

    def on_fallback(self, from_provider: str, to_provider: str, reason: str) -> None:
        self.events.append(("on_fallback", from_provider, to_provider, reason))

    def on_hedge(self, provider: str, hedged_to: str) -> None:
        self.events.append(("on_hedge", provider, hedged_to))

    def on_usage(self, provider: str, mode: str, usage: Mapping[str, int]) -> None:
        self.events.append(("on_usage", provider, mode, dict(usage)))

    def names(self) -> list[str]:
        """The event names, in order."""
        return [e[0] for e in self.events]

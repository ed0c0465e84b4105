"""Error classification: what a provider error means for routing.

Duck-typed, so it works with the openai, anthropic and httpx exception classes without
importing them: an error's ``status_code``, its response headers and its class name decide.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    """What the router may do after an error."""

    RETRYABLE = "retryable"
    FALLBACK_ONLY = "fallback_only"
    CONTEXT_LENGTH = "context_length"
    FATAL = "fatal"


@dataclass(frozen=True)
class Classified:
    """An error's kind, a bounded reason label, its HTTP status and Retry-After (seconds)."""

    kind: ErrorKind
    reason: str
    status: int | None = None
    retry_after: float | None = None


class BreakerOpenError(Exception):
    """The provider's circuit breaker is open; the call was not made."""

    def __init__(self, provider: str, retry_in: float | None = None) -> None:
        when = f"; next probe in {retry_in:.1f}s" if retry_in is not None else ""
        super().__init__(f"circuit breaker of provider {provider!r} is open{when}")
        self.provider = provider
        self.retry_in = retry_in


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed."""


class StreamInterrupted(Exception):
    """A stream died after yielding ``partial_text``."""

    def __init__(
        self, partial_text: str, provider: str, cause: BaseException | None = None
    ) -> None:
        super().__init__(
            f"stream from {provider!r} interrupted after {len(partial_text)} characters"
            + (f": {cause!r}" if cause is not None else "")
        )
        self.partial_text = partial_text
        self.provider = provider
        self.cause = cause


class AllProvidersFailed(ExceptionGroup):
    """Every attempt failed; holds every attempt's error, in order."""

    def __new__(cls, message: str, exceptions: Sequence[Exception]) -> AllProvidersFailed:
        return super().__new__(cls, message, list(exceptions))

    def derive(self, excs: Sequence[Exception]) -> AllProvidersFailed:  # type: ignore[override]
        return AllProvidersFailed(self.message, excs)


_CONNECT_NAMES = frozenset({
    "APIConnectionError", "ConnectError", "ConnectTimeout", "ReadError", "WriteError",
    "RemoteProtocolError", "NetworkError", "ProtocolError", "ServerDisconnectedError",
    "ClientConnectionError", "IncompleteRead",
})
_TIMEOUT_NAMES = frozenset({"APITimeoutError", "ReadTimeout", "WriteTimeout", "PoolTimeout",
                            "TimeoutException"})
_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "prompt is too long",
                    "too many tokens", "context window")


def classify(exc: BaseException) -> Classified:
    """Classify ``exc`` for routing (retry, fall back only, larger window only, or give up)."""
    if isinstance(exc, DeadlineExceeded):
        return Classified(ErrorKind.FATAL, "deadline")
    if isinstance(exc, StreamInterrupted):
        return Classified(ErrorKind.RETRYABLE, "stream_cut")
    if isinstance(exc, BreakerOpenError):
        return Classified(ErrorKind.RETRYABLE, "breaker_open", retry_after=exc.retry_in)
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = _status(exc)
    if status is None:
        if names & _TIMEOUT_NAMES or isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return Classified(ErrorKind.RETRYABLE, "timeout")
        if names & _CONNECT_NAMES or isinstance(exc, ConnectionError):
            return Classified(ErrorKind.RETRYABLE, "connect")
        return Classified(ErrorKind.FATAL, "other")
    if status == 429:
        return Classified(ErrorKind.RETRYABLE, "rate_limit", status, _retry_after(exc))
    if status in (408, 409) or status >= 500:
        return Classified(ErrorKind.RETRYABLE, "server_error", status, _retry_after(exc))
    if status in (401, 403):
        return Classified(ErrorKind.FALLBACK_ONLY, "auth", status)
    if status in (400, 413, 422) and _mentions_context(exc):
        return Classified(ErrorKind.CONTEXT_LENGTH, "context_length", status)
    return Classified(ErrorKind.FATAL, "bad_request", status)


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) and 100 <= value <= 599 else None


def _headers(exc: BaseException) -> Mapping[str, Any]:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return {}
    try:
        return {str(k).lower(): v for k, v in dict(headers).items()}
    except (TypeError, ValueError):
        return {}


def _retry_after(exc: BaseException) -> float | None:
    headers = _headers(exc)
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(str(raw)) if raw else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def _mentions_context(exc: BaseException) -> bool:
    texts = [str(exc), str(getattr(exc, "message", "")), str(getattr(exc, "body", "")),
             str(getattr(exc, "code", ""))]
    blob = " ".join(texts).lower()
    return any(marker in blob for marker in _CONTEXT_MARKERS)

"""Error classification: what a provider error means for routing.

LangChain's own taxonomy decides first (``langchain_core.exceptions``: every current integration
raises those classes, some without any HTTP status); then, duck-typed so it works with the
openai, anthropic, google-genai and httpx exception classes without importing them, an error's
HTTP status (on it or on the SDK error it was raised from), its response headers and its class
name.  A refusal (the model declined, or a content filter rejected the prompt) is its own kind:
the provider is healthy, so it is neither retried there nor counted against its breaker.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelRefusalError,
    ModelTimeoutError,
)


class ErrorKind(StrEnum):
    """What the router may do after an error."""

    RETRYABLE = "retryable"
    FALLBACK_ONLY = "fallback_only"
    CONTEXT_LENGTH = "context_length"
    REFUSAL = "refusal"
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
    """A stream ended before its answer was complete, after yielding ``partial_text``.

    ``reason`` says how: ``stream_cut`` (the connection or the provider failed mid-way),
    ``stalled`` (no chunk within the idle timeout), ``truncated`` (the stream ended without
    the provider's finish marker), ``unverified`` (no provider continued the partial answer
    in a way that could be checked, see :mod:`langchain_ha.resilience.continuation`).
    """

    def __init__(
        self, partial_text: str, provider: str, cause: BaseException | None = None,
        *, reason: str = "stream_cut",
    ) -> None:
        super().__init__(
            f"stream from {provider!r} interrupted ({reason}) after {len(partial_text)} "
            "characters" + (f": {cause!r}" if cause is not None else "")
        )
        self.partial_text = partial_text
        self.provider = provider
        self.cause = cause
        self.reason = reason


class ProviderRefused(ModelRefusalError):
    """A provider refused the request (the model declined, or a content filter rejected it).

    A :class:`langchain_core.exceptions.ModelRefusalError`, so LangChain code that handles
    refusals handles this one; ``provider`` and ``reason`` say who refused and why, and the
    provider's own error is the ``__cause__``.
    """

    def __init__(self, provider: str, reason: str, detail: str = "") -> None:
        text = f"provider {provider!r} refused the request ({reason})"
        super().__init__(text + (f": {detail}" if detail else ""))
        self.provider = provider
        self.reason = reason


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
# A chunk or body that is not the JSON the SDK expected: the provider (or a proxy) sent a broken
# answer, which another attempt may not repeat.
_MALFORMED_NAMES = frozenset({"JSONDecodeError", "IncompleteJSONError"})
_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "prompt is too long",
                    "too many tokens", "context window", "exceeds the maximum number of tokens",
                    "input token count")
_FILTER_MARKERS = ("content_filter", "content management policy", "content_policy_violation",
                   "responsibleaipolicyviolation", "prohibited_content")
_RETRY_DELAY = re.compile(r"""["']retryDelay["']\s*:\s*["'](\d+(?:\.\d+)?)s["']""")


def classify(exc: BaseException) -> Classified:
    """Classify ``exc`` for routing (retry, fall back only, larger window only, or give up).

    In order: our own errors; LangChain's error taxonomy (``langchain_core.exceptions``, which
    integrations such as ``langchain-google-genai`` raise without any HTTP status); the SDK's
    HTTP status and headers; then connection, timeout and malformed-answer errors by type.
    """
    if isinstance(exc, DeadlineExceeded):
        return Classified(ErrorKind.FATAL, "deadline")
    if isinstance(exc, StreamInterrupted):
        return Classified(ErrorKind.RETRYABLE, exc.reason)
    if isinstance(exc, BreakerOpenError):
        return Classified(ErrorKind.RETRYABLE, "breaker_open", retry_after=exc.retry_in)
    if isinstance(exc, ModelError):
        return _by_taxonomy(exc)
    status = _status(exc)
    if status is None:
        return _by_type(exc)
    return _by_status(exc, status)


def _by_taxonomy(exc: ModelError) -> Classified:
    status = _status(exc)
    if isinstance(exc, ModelRefusalError):
        return Classified(ErrorKind.REFUSAL, "refusal", status)
    if isinstance(exc, ContextOverflowError):
        return Classified(ErrorKind.CONTEXT_LENGTH, "context_length", status)
    if isinstance(exc, ModelRateLimitError):
        return Classified(ErrorKind.RETRYABLE, "rate_limit", status or 429, _retry_after(exc))
    if isinstance(exc, (ModelAuthenticationError, ModelPermissionDeniedError)):
        return Classified(ErrorKind.FALLBACK_ONLY, "auth", status)
    if isinstance(exc, ModelTimeoutError):
        return Classified(ErrorKind.RETRYABLE, "timeout", status)
    if isinstance(exc, ModelConnectionError):
        return Classified(ErrorKind.RETRYABLE, "connect", status)
    if isinstance(exc, ModelAPIError):
        return Classified(ErrorKind.RETRYABLE, "server_error", status, _retry_after(exc))
    if status is not None:  # e.g. ModelInvalidRequestError, ModelNotFoundError
        return _by_status(exc, status)
    if _mentions(exc, _FILTER_MARKERS):
        return Classified(ErrorKind.REFUSAL, "content_filter")
    if exc.is_retryable:
        return Classified(ErrorKind.RETRYABLE, "server_error")
    return Classified(ErrorKind.FATAL, "bad_request")


def _by_status(exc: BaseException, status: int) -> Classified:
    if status == 429:
        return Classified(ErrorKind.RETRYABLE, "rate_limit", status, _retry_after(exc))
    if status in (408, 409) or status >= 500:
        return Classified(ErrorKind.RETRYABLE, "server_error", status, _retry_after(exc))
    if status in (401, 403):
        return Classified(ErrorKind.FALLBACK_ONLY, "auth", status)
    if status in (400, 413, 422) and _mentions(exc, _CONTEXT_MARKERS):
        return Classified(ErrorKind.CONTEXT_LENGTH, "context_length", status)
    if status == 400 and _mentions(exc, _FILTER_MARKERS):
        return Classified(ErrorKind.REFUSAL, "content_filter", status)
    return Classified(ErrorKind.FATAL, "bad_request", status)


def _by_type(exc: BaseException) -> Classified:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _TIMEOUT_NAMES or isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return Classified(ErrorKind.RETRYABLE, "timeout")
    if names & _CONNECT_NAMES or isinstance(exc, ConnectionError):
        return Classified(ErrorKind.RETRYABLE, "connect")
    if names & _MALFORMED_NAMES or isinstance(exc, json.JSONDecodeError):
        return Classified(ErrorKind.RETRYABLE, "malformed")
    return Classified(ErrorKind.FATAL, "other")


def _status(exc: BaseException) -> int | None:
    for err in _chain(exc):
        for attr in ("status_code", "status", "http_status", "code"):
            value = getattr(err, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
        response = getattr(err, "response", None)
        value = getattr(response, "status_code", None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it was raised from (integrations re-raise the SDK's error)."""
    out: list[BaseException] = []
    err: BaseException | None = exc
    while err is not None and len(out) < 4 and err not in out:
        out.append(err)
        err = err.__cause__
    return out


def _headers(exc: BaseException) -> Mapping[str, Any]:
    for err in _chain(exc):
        headers = getattr(getattr(err, "response", None), "headers", None)
        if headers is None:
            continue
        try:
            return {str(k).lower(): v for k, v in dict(headers).items()}
        except (TypeError, ValueError):
            continue
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
        # Google sends no header but a RetryInfo detail ("retryDelay": "12s") in the body, which
        # langchain-google-genai keeps only in the message text.
        match = _RETRY_DELAY.search(" ".join(str(e) for e in _chain(exc)))
        return float(match.group(1)) if match else None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(str(raw)) if raw else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def _mentions(exc: BaseException, markers: tuple[str, ...]) -> bool:
    texts = [str(exc), str(getattr(exc, "message", "")), str(getattr(exc, "body", "")),
             str(getattr(exc, "code", ""))]
    blob = " ".join(texts).lower()
    return any(marker in blob for marker in markers)

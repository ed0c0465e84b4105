"""Error classification with the real SDK exception classes, retry policy and deadlines."""

from __future__ import annotations

import asyncio
import random

import anthropic
import httpx
import httpx2
import openai
import pytest

from langchain_ha.resilience._clock import FakeClock
from langchain_ha.resilience.deadline import attempt_timeout, current_deadline, deadline
from langchain_ha.resilience.errors import (
    AllProvidersFailed,
    DeadlineExceeded,
    ErrorKind,
    StreamInterrupted,
    classify,
)
from langchain_ha.resilience.retry import RetryPolicy, retry_call


def _openai_error(cls: type, status: int, headers: dict[str, str] | None = None,
                  message: str = "boom") -> Exception:
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return cls(message, response=response, body=None)


@pytest.mark.parametrize(("exc", "kind", "reason"), [
    (_openai_error(openai.InternalServerError, 500), ErrorKind.RETRYABLE, "server_error"),
    (_openai_error(openai.RateLimitError, 429), ErrorKind.RETRYABLE, "rate_limit"),
    (_openai_error(openai.AuthenticationError, 401), ErrorKind.FALLBACK_ONLY, "auth"),
    (_openai_error(openai.PermissionDeniedError, 403), ErrorKind.FALLBACK_ONLY, "auth"),
    (_openai_error(openai.BadRequestError, 400, message="context_length_exceeded"),
     ErrorKind.CONTEXT_LENGTH, "context_length"),
    (_openai_error(openai.BadRequestError, 400, message="bad messages"), ErrorKind.FATAL,
     "bad_request"),
    (openai.APITimeoutError(request=httpx2.Request("POST", "http://x")), ErrorKind.RETRYABLE,
     "timeout"),
    (openai.APIConnectionError(request=httpx2.Request("POST", "http://x")),
     ErrorKind.RETRYABLE, "connect"),
    (anthropic.APIConnectionError(request=httpx2.Request("POST", "http://x")),
     ErrorKind.RETRYABLE, "connect"),
    (httpx.ConnectError("refused"), ErrorKind.RETRYABLE, "connect"),
    (httpx2.RemoteProtocolError("peer closed"), ErrorKind.RETRYABLE, "connect"),
    (TimeoutError(), ErrorKind.RETRYABLE, "timeout"),
    (ConnectionResetError(), ErrorKind.RETRYABLE, "connect"),
    (StreamInterrupted("abc", "p"), ErrorKind.RETRYABLE, "stream_cut"),
    (DeadlineExceeded(), ErrorKind.FATAL, "deadline"),
    (KeyError("bug"), ErrorKind.FATAL, "other"),
])
def test_classify(exc: Exception, kind: ErrorKind, reason: str) -> None:
    verdict = classify(exc)
    assert (verdict.kind, verdict.reason) == (kind, reason)


def test_retry_after_is_read_from_headers() -> None:
    assert classify(_openai_error(openai.RateLimitError, 429, {"retry-after": "3"})
                    ).retry_after == 3.0
    assert classify(_openai_error(openai.RateLimitError, 429, {"retry-after-ms": "250"})
                    ).retry_after == 0.25


def test_all_providers_failed_is_an_exception_group() -> None:
    group = AllProvidersFailed("2 failed", [ValueError("a"), TimeoutError("b")])
    assert isinstance(group, ExceptionGroup) and len(group.exceptions) == 2
    timeouts, rest = group.split(TimeoutError)
    assert isinstance(timeouts, AllProvidersFailed) and rest is not None


def test_backoff_is_bounded_full_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=1.0, retry_after_cap_s=5.0)
    rng = random.Random(7)
    for round_index in range(10):
        assert 0 <= policy.backoff(round_index, rng=rng) <= min(1.0, 0.1 * 2**round_index)
    assert policy.backoff(0, retry_after=3.0, rng=rng) >= 3.0
    assert policy.backoff(0, retry_after=60.0, rng=rng) <= 5.0


async def test_retry_call_retries_only_what_is_retryable() -> None:
    clock = FakeClock()
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    assert await retry_call(flaky, RetryPolicy(max_rounds=3), clock=clock) == "ok"

    async def fatal() -> str:
        calls.append(1)
        raise KeyError("bug")

    calls.clear()
    with pytest.raises(KeyError):
        await retry_call(fatal, RetryPolicy(max_rounds=5), clock=clock)
    assert len(calls) == 1


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError, match="max_rounds"):
        RetryPolicy(max_rounds=0)


def test_nested_deadlines_keep_the_earlier() -> None:
    clock = FakeClock()
    with deadline(10, clock) as outer:
        with deadline(30, clock) as inner:
            assert inner is outer
        with deadline(2, clock) as shorter:
            assert shorter.remaining() == 2
            assert attempt_timeout(5.0, clock) == 2
        clock.advance(11)
        with pytest.raises(DeadlineExceeded):
            attempt_timeout(5.0, clock)
    assert current_deadline() is None


async def test_deadline_travels_into_tasks() -> None:
    with deadline(5):
        seen = await asyncio.create_task(asyncio.sleep(0, result=current_deadline()))
    assert seen is not None


def _google(status: int, code: str, message: str, details: list[object] | None = None
            ) -> Exception:
    """What langchain-google-genai raises for a Gemini error: LangChain's own taxonomy classes,
    most of them without any HTTP status, raised from the google-genai SDK's error."""
    from google.genai.errors import ClientError, ServerError
    from langchain_google_genai.chat_models import _handle_client_error, _handle_server_error

    body = {"error": {"code": status, "message": message, "status": code,
                      "details": details or []}}
    sdk = (ServerError if status >= 500 else ClientError)(status, body, None)
    try:
        if status >= 500:
            _handle_server_error(sdk)  # type: ignore[arg-type]
        else:
            _handle_client_error(sdk, {"model": "gemini-2.5-flash"})  # type: ignore[arg-type]
    except Exception as exc:
        return exc
    raise AssertionError("the integration raised nothing")


@pytest.mark.parametrize(("status", "code", "message", "kind", "reason"), [
    (429, "RESOURCE_EXHAUSTED", "Quota exceeded", ErrorKind.RETRYABLE, "rate_limit"),
    (401, "UNAUTHENTICATED", "API key not valid", ErrorKind.FALLBACK_ONLY, "auth"),
    (403, "PERMISSION_DENIED", "denied", ErrorKind.FALLBACK_ONLY, "auth"),
    (503, "UNAVAILABLE", "The model is overloaded", ErrorKind.RETRYABLE, "server_error"),
    (500, "INTERNAL", "internal", ErrorKind.RETRYABLE, "server_error"),
    (400, "INVALID_ARGUMENT", "The input token count (2000000) exceeds the maximum number of "
     "tokens allowed (1048576).", ErrorKind.CONTEXT_LENGTH, "context_length"),
    (400, "INVALID_ARGUMENT", "Invalid JSON payload", ErrorKind.FATAL, "bad_request"),
])
def test_gemini_errors_are_classified_by_langchains_taxonomy(
        status: int, code: str, message: str, kind: ErrorKind, reason: str) -> None:
    exc = _google(status, code, message)
    assert not isinstance(getattr(exc, "status_code", None), int)  # no status on the error
    verdict = classify(exc)
    assert (verdict.kind, verdict.reason) == (kind, reason)


def test_gemini_retry_delay_is_honoured() -> None:
    exc = _google(429, "RESOURCE_EXHAUSTED", "Quota exceeded", [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}])
    assert classify(exc).retry_after == 12.0


def test_langchain_taxonomy_decides_before_status_and_names() -> None:
    from langchain_core.exceptions import (
        ModelAPIError,
        ModelConnectionError,
        ModelError,
        ModelRateLimitError,
        ModelRefusalError,
    )

    assert classify(ModelRateLimitError("slow down")).kind is ErrorKind.RETRYABLE
    assert classify(ModelAPIError("5xx")).reason == "server_error"
    assert classify(ModelConnectionError("reset")).reason == "connect"
    assert classify(ModelRefusalError("no")).kind is ErrorKind.REFUSAL

    class Retryable(ModelError):
        is_retryable = True

    assert classify(Retryable("?")).kind is ErrorKind.RETRYABLE
    assert classify(ModelError("?")).kind is ErrorKind.FATAL


def test_openai_integration_errors_keep_their_status_and_headers() -> None:
    from langchain_openai.chat_models.base import OpenAIRateLimitError

    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    response = httpx2.Response(429, headers={"retry-after": "4"}, request=request)
    verdict = classify(OpenAIRateLimitError("limited", response=response, body=None))
    assert (verdict.kind, verdict.status, verdict.retry_after) == (
        ErrorKind.RETRYABLE, 429, 4.0)


def test_content_filter_rejections_are_refusals_not_bad_requests() -> None:
    exc = _openai_error(openai.BadRequestError, 400, message=(
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. (code: content_filter)"))
    assert classify(exc).kind is ErrorKind.REFUSAL and classify(exc).reason == "content_filter"


def test_a_malformed_chunk_is_retryable() -> None:
    import json

    assert classify(json.JSONDecodeError("Expecting value", "{", 1)).reason == "malformed"

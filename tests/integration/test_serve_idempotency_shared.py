"""The idempotency store is the deployment's PostgreSQL: two real ``lcha serve`` replicas on one
database answer a key the same, so a balancer's retry on the other replica replays instead of
running again, waits for a request still running, and takes over one whose replica died."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fixtures_serve import Replica

LEASE_S = 1.5


def _idempotency(replica: Replica) -> dict[tuple[str, str], float]:
    page = httpx.get(replica.url + "/metrics").text
    return {(s.labels["store"], s.labels["outcome"]): s.value
            for family in text_string_to_metric_families(page)
            if family.name == "lcha_idempotency_requests"
            for s in family.samples if s.name.endswith("_total")}


def _post(replica: Replica, key: str, body: object, timeout: float = 30) -> httpx.Response:
    return httpx.post(replica.url + "/v1/invoke", json={"input": body}, timeout=timeout,
                      headers={"Idempotency-Key": key})


@pytest.fixture(scope="module")
def pair(serve_factory: Callable[..., Replica], store_conninfo: str) -> tuple[Replica, Replica]:
    env = {"LCHA_DB_WRITER": store_conninfo, "LCHA_IDEMPOTENCY_LEASE_S": str(LEASE_S)}
    return (serve_factory("tests.support.apps:nap", env=env),
            serve_factory("tests.support.apps:nap", env=env))


def test_a_retry_on_the_other_replica_replays(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    key, body = f"pay-{time.time_ns()}", {"amount": 12}
    first = _post(a, key, body)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    before_b = len(b.calls())
    again = _post(b, key, body)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert len(b.calls()) == before_b  # B did not run it
    assert _idempotency(b).get(("shared", "replayed"), 0) >= 1
    # The same key with another body is refused on the other replica too.
    other = _post(b, key, {"amount": 13})
    assert other.status_code == 422 and other.json()["error"]["field"] == "Idempotency-Key"


def test_a_retry_while_the_first_runs_waits_for_its_answer(
        pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    key, body = f"slow-{time.time_ns()}", {"sleep": 2.0, "n": 1}
    before = len(a.calls()) + len(b.calls())

    async def both() -> tuple[httpx.Response, httpx.Response]:
        first = asyncio.ensure_future(asyncio.to_thread(_post, a, key, body))
        await asyncio.sleep(0.5)  # A holds the key (and renews it past the 1.5 s lease)
        second = await asyncio.to_thread(_post, b, key, body)
        return await first, second

    first, second = asyncio.run(both())
    assert first.status_code == second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true" and second.content == first.content
    assert len(a.calls()) + len(b.calls()) == before + 1  # ran once, on A


def test_a_killed_replicas_key_is_taken_over_within_the_lease(
        serve_factory: Callable[..., Replica], store_conninfo: str,
        pair: tuple[Replica, Replica]) -> None:
    env = {"LCHA_DB_WRITER": store_conninfo, "LCHA_IDEMPOTENCY_LEASE_S": str(LEASE_S)}
    doomed, b = serve_factory("tests.support.apps:nap", env=env), pair[1]
    key, body = f"killed-{time.time_ns()}", {"sleep": 5.0, "n": 2}

    async def kill_then_retry() -> tuple[httpx.Response, float]:
        first = asyncio.ensure_future(asyncio.to_thread(_post, doomed, key, body))
        deadline = time.monotonic() + 10
        while not doomed.calls():
            assert time.monotonic() < deadline and not first.done()
            await asyncio.sleep(0.02)
        doomed.child.signal(signal.SIGKILL)
        with pytest.raises(httpx.TransportError):
            await first
        started = time.monotonic()
        retry = await asyncio.to_thread(_post, b, key, body)
        return retry, time.monotonic() - started

    retry, took = asyncio.run(kill_then_retry())
    assert retry.status_code == 200, retry.text
    assert "idempotent-replayed" not in retry.headers  # nothing was stored: B ran it
    assert retry.json()["output"] == {"echo": body}
    # B waited for the dead claim to lapse (one lease, tried every half lease), then ran the
    # request's own 5 s: not the request timeout's worth of 409s.
    assert took < LEASE_S * 2 + 5.0 + 2.0, took


def test_memory_keeps_keys_per_replica(serve_factory: Callable[..., Replica],
                                       store_conninfo: str) -> None:
    env = {"LCHA_DB_WRITER": store_conninfo, "LCHA_IDEMPOTENCY_STORE": "memory"}
    a, b = (serve_factory("tests.support.apps:nap", env=env),
            serve_factory("tests.support.apps:nap", env=env))
    key, body = f"local-{time.time_ns()}", {"n": 3}
    assert _post(a, key, body).status_code == 200
    again = _post(b, key, body)
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    assert len(b.calls()) == 1
    assert _idempotency(b) == {("local", "answered"): 1.0}

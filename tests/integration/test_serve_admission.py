"""Adaptive admission in a real uvicorn replica: a CPU-bound overload is queued while its
requests would start within the objective, and shed (503 + Retry-After, at once) past it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.fixtures_serve import Replica, gauge

CONCURRENCY = 48  # under the default ceiling: a fixed limit admits them all
CEILING = 256


async def _hammer(url: str, seconds: float) -> list[tuple[int, str | None]]:
    """CONCURRENCY closed-loop clients posting for ``seconds``; (status, Retry-After) each."""
    out: list[tuple[int, str | None]] = []
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(
            max_connections=CONCURRENCY)) as client:

        async def worker() -> None:
            while time.monotonic() < stop:
                r = await client.post(url + "/v1/invoke", json={"input": 1})
                out.append((r.status_code, r.headers.get("retry-after")))
                if r.status_code == 503:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return out


def _limit(url: str) -> float:
    return gauge(httpx.get(url + "/metrics").text, "lcha_admission_limit")


@pytest.mark.parametrize("adaptive", [True, False])
def test_a_cpu_bound_overload_is_shed_when_adaptive(
    serve_factory: Callable[..., Replica], adaptive: bool
) -> None:
    # Every request burns 40 ms of the replica's CPU, on its event loop: 25/s.  The lag cuts
    # the limit to a few running; with a 0.3 s objective about 7 more may wait for a slot,
    # so of the 48 clients most are refused.
    replica = serve_factory("tests.support.apps:burn", env={
        "LCHA_TEST_BURN_MS": "40", "LCHA_ADAPTIVE_ADMISSION": str(adaptive).lower(),
        "LCHA_ADMISSION_SLO_S": "0.3"})
    assert _limit(replica.url) == CEILING
    results = asyncio.run(_hammer(replica.url, 3.0))
    statuses = [s for s, _ in results]
    print(f"\nadaptive={adaptive}: {statuses.count(200)} answered, {statuses.count(503)} shed")
    assert statuses.count(200) > 20
    shed = [(s, ra) for s, ra in results if s == 503]
    if not adaptive:
        assert shed == []  # 48 in flight never reach the fixed ceiling
        assert _limit(replica.url) == CEILING
        return
    assert len(shed) > 10 and all(ra == "1" for _, ra in shed)
    assert set(statuses) == {200, 503}
    assert gauge(httpx.get(replica.url + "/metrics").text, "lcha_admission_rejected_total") >= 1
    # Idle again, the limit climbs back to its ceiling (one step per quiet tick).
    deadline = time.monotonic() + 15
    while _limit(replica.url) < CEILING and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _limit(replica.url) == CEILING


def test_a_burst_that_would_be_answered_in_time_waits_instead_of_being_shed(
    serve_factory: Callable[..., Replica]
) -> None:
    """The same CPU-bound burst with a 5 s objective: the 48 waiting are predicted to
    start within about 2 s, so the replica queues them (its limit still cut by the lag) and
    answers every one: no 503 for a request it would answer in time."""
    replica = serve_factory("tests.support.apps:burn", env={"LCHA_TEST_BURN_MS": "40",
                                                            "LCHA_ADMISSION_SLO_S": "5"})
    results = asyncio.run(_hammer(replica.url, 3.0))
    statuses = [s for s, _ in results]
    assert statuses.count(200) > 20 and set(statuses) == {200}
    text = httpx.get(replica.url + "/metrics").text
    assert gauge(text, "lcha_admission_rejected_total") == 0
    assert gauge(text, "lcha_admission_queued_total") >= 1  # they did wait: the limit was cut

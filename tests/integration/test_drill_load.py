"""The drills' load generator against a real replica: on schedule, latency from the schedule,
replays seen.

The replica serves the echo app, so answers are "wrong" for the drill's oracle; what is
checked here is the generator's timing and bookkeeping, not the demo bot.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from langchain_ha.drills.load import run_load, summarize
from tests.support.fixtures_serve import Replica

KEY = "drill-load-key"


@pytest.fixture(scope="module")
def echo(serve_factory: Callable[..., Replica]) -> Replica:
    return serve_factory("tests.support.apps:echo", env={"LCHA_API_KEYS": KEY})


async def test_requests_keep_their_schedule_and_latency_counts_from_it(echo: Replica) -> None:
    # As a drill does: the schedule starts now, before the generator has built its pools.
    outcomes = await run_load(echo.url, KEY, rps=50, duration_s=2, run_id="sched",
                              t0=time.monotonic())
    assert [o.start for o in outcomes] == [i / 50 for i in range(100)]
    assert all(o.sent >= o.start and o.end >= o.sent for o in outcomes)
    s = summarize(outcomes)
    # Building the client pools must not put the first requests behind schedule (it cost
    # ~0.45 s when each pool built its own TLS context); 250 ms leaves room on 2 busy cores.
    assert s["send_lag_ms"]["max"] < 250, s["send_lag_ms"]
    assert s["statuses"].get("200", 0) > 0 and s["replayed"] == 0


async def test_a_repeated_key_is_counted_as_a_replay(echo: Replica) -> None:
    await run_load(echo.url, KEY, rps=20, duration_s=1, run_id="again")
    again = await run_load(echo.url, KEY, rps=20, duration_s=1, run_id="again")
    invoked = [o for o in again if o.path == "/v1/invoke"]
    assert invoked and all(o.replayed for o in invoked)
    assert summarize(again)["replayed"] == len(invoked)

"""The drills' load generator against a real replica: on schedule, latency from the schedule,
replays seen.

The replica serves the echo app, so answers are "wrong" for the drill's oracle; what is
checked here is the generator's timing and bookkeeping, not the demo bot.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from langchain_ha.drills.load import client_session, run_load, send, summarize
from langchain_ha.drills.mix import request_for
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


async def test_a_stream_cut_under_way_is_sent_again_once_with_its_key() -> None:
    """A server that dies mid-stream, as a SIGKILLed replica does: the first try gets its
    headers and one event, then the connection closes; the client sends it again (same
    Idempotency-Key), is answered in full and counts one restart.  Cut twice, it fails."""
    req = request_for(7, "cut")
    assert req.kind == "stream"
    answer = {"answer": f"See [doc:{req.doc_id}]", "sources": [req.doc_id]}
    seen: list[str] = []
    cuts = [0]  # how many of the next tries are cut

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n")
                      if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        seen.append(next(h.split(b":", 1)[1].strip().decode() for h in head.split(b"\r\n")
                         if h.lower().startswith(b"idempotency-key")))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"x-lcha-replica: r1\r\nconnection: close\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        event = f"event: data\ndata: {json.dumps(answer)}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        if cuts[0] > 0:
            cuts[0] -= 1
            await writer.drain()
            writer.close()  # mid-body: no terminating chunk
            return
        end = f"event: end\ndata: {json.dumps({'replica': 'r1', 'degraded': []})}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(end), end))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with client_session(timeout_s=5) as client:
            cuts[0] = 1
            once = await send(client, url, KEY, 7, "cut", time.monotonic())
            cuts[0] = 2
            twice = await send(client, url, KEY, 7, "cut", time.monotonic())
    finally:
        server.close()
        await server.wait_closed()
    assert once.status == 200 and once.restarted and once.correct and once.replica == "r1"
    assert twice.status == 0 and twice.restarted and twice.begun
    assert "ClientPayloadError" in (twice.error or "")
    assert seen == ["cut-7"] * 4  # every try carried the request's own key

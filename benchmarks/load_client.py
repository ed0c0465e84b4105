"""The drills' load generator's own cost: CPU per request of its client, aiohttp vs httpx.

On a 2-core machine the generator shares the cores with the system it measures, so every
millisecond of client CPU per request is taken from the replicas (most at ``overload``, which
sends twice the capacity).  Both clients send the same requests, open loop at a fixed rate, to
a server in another process that answers every request with a canned 503 (as a shedding
balancer does), so only the client's work is on this process's CPU clock.  Prints CPU per
request for each, the send lag p99, and the ratio httpx / aiohttp.

Run: python benchmarks/load_client.py [requests] [rps]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from langchain_ha._percentile import percentile  # noqa: E402
from langchain_ha._proc import Child, free_port, python_argv  # noqa: E402
from langchain_ha.drills.load import client_session  # noqa: E402

REFUSER = """
import asyncio, uvloop
BODY = b'{{"error":{{"type":"overloaded"}}}}'
REPLY = (b"HTTP/1.1 503 Service Unavailable\\r\\ncontent-type: application/json\\r\\n"
         b"retry-after: 1\\r\\ncontent-length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY))

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = next((int(h.split(b":")[1]) for h in head.split(b"\\r\\n")
                           if h.lower().startswith(b"content-length")), 0)
            await reader.readexactly(length)
            writer.write(REPLY)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", {port}, backlog=4096)
    await server.serve_forever()

uvloop.run(main())
"""

BODY = {"question": "How do I reset my password?", "session_id": "bench"}


async def _open_loop(send: Callable[[int], Awaitable[int]], requests: int,
                     rps: float) -> tuple[float, float]:
    """CPU seconds per request and send lag p99 (ms) of ``requests`` sent at ``rps``."""
    cpu0, t0 = time.process_time(), time.monotonic()
    lags: list[float] = []
    tasks = []
    for i in range(requests):
        delay = t0 + i / rps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, -delay) * 1000)
        tasks.append(asyncio.create_task(send(i)))
    statuses = await asyncio.gather(*tasks)
    assert set(statuses) == {503}, set(statuses)
    return (time.process_time() - cpu0) / requests, percentile(lags, 0.99) or 0.0


async def _httpx(url: str, requests: int, rps: float) -> tuple[float, float]:
    # As the generator had it: 16 pools of 64 connections.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    clients = [httpx.AsyncClient(limits=limits, timeout=30) for _ in range(16)]

    async def send(i: int) -> int:
        resp = await clients[i % 16].post(url, json=BODY, headers={"Idempotency-Key": f"k{i}"})
        resp.json()
        return resp.status_code

    try:
        await asyncio.gather(*(send(i) for i in range(100)))  # warm-up: connections open
        return await _open_loop(send, requests, rps)
    finally:
        for client in clients:
            await client.aclose()


async def _aiohttp(url: str, requests: int, rps: float) -> tuple[float, float]:
    async with client_session(timeout_s=30) as session:
        async def send(i: int) -> int:
            async with session.post(url, json=BODY, headers={"Idempotency-Key": f"k{i}"}) as r:
                await r.json(content_type=None)
                return r.status

        await asyncio.gather(*(send(i) for i in range(100)))
        return await _open_loop(send, requests, rps)


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    rps = float(sys.argv[2]) if len(sys.argv) > 2 else 400.0
    port = free_port()
    refuser = Child(python_argv("-c", REFUSER.format(port=port)), name="refuser")
    url = f"http://127.0.0.1:{port}/v1/invoke"
    try:
        refuser.wait_http(url, status=503)
        slow, slow_lag = asyncio.run(_httpx(url, requests, rps))
        fast, fast_lag = asyncio.run(_aiohttp(url, requests, rps))
    finally:
        refuser.stop()
    print(f"{requests} requests at {rps:.0f} req/s, open loop, each answered 503 by a server "
          "in another process")
    print(f"httpx   (16 pools x 64):  {slow * 1000:.3f} ms CPU per request, "
          f"send lag p99 {slow_lag:.0f} ms")
    print(f"aiohttp (1 pool x 1024):  {fast * 1000:.3f} ms CPU per request, "
          f"send lag p99 {fast_lag:.0f} ms")
    print(f"ratio httpx / aiohttp: {slow / fast:.1f}x")


if __name__ == "__main__":
    main()

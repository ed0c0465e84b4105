"""HAProxy in front of real replicas: a request one replica sheds is answered by another; a
503 reaches the client only when every replica is at its limit; weights change live through
the runtime API; its control plane is a private socket."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from langchain_ha._proc import free_port
from langchain_ha.cluster.balancer import Upstream
from langchain_ha.cluster.haproxy import HaproxyBalancer, haproxy_binary
from langchain_ha.cluster.topology import Balancer, HealthChecks
from tests.support.fixtures_serve import Replica, gauge
from tests.support.stranger import UNIX_CONNECT, as_stranger

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed "
                                "(apt-get install haproxy)")

NAP_S = 3.0


def _nap_replica(serve_factory: Callable[..., Replica], limit: int) -> Replica:
    # A plain in-flight cap of ``limit``: requests that sleep hold their slot.
    return serve_factory("tests.support.apps:nap", env={"LCHA_MAX_INFLIGHT": str(limit)})


@pytest.fixture(scope="module")
def pair(serve_factory: Callable[..., Replica]) -> tuple[Replica, Replica]:
    return _nap_replica(serve_factory, 2), _nap_replica(serve_factory, 4)


@pytest.fixture
def haproxy(pair: tuple[Replica, Replica], tmp_path: Path
            ) -> Iterator[tuple[HaproxyBalancer, psutil.Process]]:
    spec = Balancer(checks=HealthChecks(interval_s=0.5, timeout_s=0.5))
    lb = HaproxyBalancer(spec, free_port(), tmp_path, server_timeout_s=30)
    child = lb.start([Upstream(r.port) for r in pair])
    try:
        deadline = time.monotonic() + 10
        while not all(s["status"] == "UP" for s in lb.view()):
            assert time.monotonic() < deadline, lb.view()
            time.sleep(0.1)
        yield lb, psutil.Process(child.pid)
    finally:
        child.stop()
        lb.cleanup()
    assert not lb.admin_socket.exists()


def _inflight(r: Replica) -> float:
    return gauge(httpx.get(r.url + "/metrics").text, "lcha_inflight_requests")


def _rejected(r: Replica) -> float:
    return gauge(httpx.get(r.url + "/metrics").text, "lcha_admission_rejected_total")


async def _fill(client: httpx.AsyncClient, r: Replica, n: int
                ) -> list[asyncio.Task[httpx.Response]]:
    """``n`` napping requests straight to ``r`` (not through the balancer), in flight."""
    tasks = [asyncio.create_task(client.post(f"{r.url}/v1/invoke",
                                             json={"input": {"sleep": NAP_S}}))
             for _ in range(n)]
    deadline = time.monotonic() + 5
    while _inflight(r) < n:
        assert time.monotonic() < deadline, f"{r.url} never held {n} requests"
        await asyncio.sleep(0.05)
    return tasks


def test_a_request_one_replica_sheds_is_answered_by_another(
        haproxy: tuple[HaproxyBalancer, psutil.Process], pair: tuple[Replica, Replica]) -> None:
    """A is at its limit (2 of 2), B has room for 4: four requests through HAProxy all get
    200, although A shed some of them (its rejected counter moves): HAProxy retried those
    503s on B.  (Caddy 2.11 passes A's 503 to the client.)"""
    lb, _ = haproxy
    a, b = pair

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            held = await _fill(client, a, 2)
            shed_before = _rejected(a)
            answers = await asyncio.gather(*(
                client.post(f"{lb.url}/v1/invoke", json={"input": {"sleep": 0.5}})
                for _ in range(4)))
            assert _rejected(a) > shed_before, "A shed nothing: the test did not exercise it"
            assert all(t.status_code == 200 for t in await asyncio.gather(*held))
            return answers

    answers = asyncio.run(run())
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert {r.headers["x-lcha-replica"] for r in answers} == {f"r{b.port}"}
    retried = sum(s["retries"] + s["redispatches"] for s in lb.view())
    assert retried >= 1, lb.view()


def test_a_503_reaches_the_client_only_when_every_replica_is_full(
        haproxy: tuple[HaproxyBalancer, psutil.Process], pair: tuple[Replica, Replica]) -> None:
    """Both replicas at their limit: the client gets the replica's 503 with Retry-After, fast
    (both replicas refused it; HAProxy tried each)."""
    lb, _ = haproxy
    a, b = pair

    async def run() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(timeout=30) as client:
            held = await _fill(client, a, 2) + await _fill(client, b, 4)
            began = time.monotonic()
            resp = await client.post(f"{lb.url}/v1/invoke", json={"input": 1})
            took = time.monotonic() - began
            await asyncio.gather(*held)
            return resp, took

    before = _rejected(a) + _rejected(b)
    resp, took = asyncio.run(run())
    assert resp.status_code == 503, resp.text
    assert resp.headers.get("retry-after") == "1"
    assert resp.json()["error"]["type"] == "overloaded"
    assert _rejected(a) + _rejected(b) - before >= 2  # each replica refused it
    assert took < 1.0


def test_with_every_replica_at_its_room_haproxy_refuses_without_asking_them(
        haproxy: tuple[HaproxyBalancer, psutil.Process], pair: tuple[Replica, Replica]) -> None:
    """Each replica's /readyz says its room (cold: its whole ceiling); the supervisor makes
    it the server's maxconn.  With both replicas at their room, the next request gets its 503
    from HAProxy itself, fast and with Retry-After, and neither replica is asked (their shed
    counters stay put); room given back, it is answered."""
    lb, _ = haproxy
    a, b = pair
    assert {r.port: httpx.get(r.url + "/readyz").json()["room"] for r in pair} == {
        a.port: 2, b.port: 4}
    lb.apply([Upstream(a.port, max_requests=1), Upstream(b.port, max_requests=1)])
    assert [s["max_requests"] for s in lb.view()] == [1, 1]

    async def run() -> tuple[httpx.Response, float, httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            held = [asyncio.create_task(client.post(f"{lb.url}/v1/invoke",
                                                    json={"input": {"sleep": NAP_S}}))
                    for _ in range(2)]
            deadline = time.monotonic() + 5
            while _inflight(a) + _inflight(b) < 2:
                assert time.monotonic() < deadline, "the napping requests never arrived"
                await asyncio.sleep(0.05)
            began = time.monotonic()
            refused = await client.post(f"{lb.url}/v1/invoke", json={"input": 1})
            took = time.monotonic() - began
            lb.apply([Upstream(a.port, max_requests=2), Upstream(b.port, max_requests=4)])
            answered = await client.post(f"{lb.url}/v1/invoke", json={"input": 1})
            assert all(t.status_code == 200 for t in await asyncio.gather(*held))
            return refused, took, answered

    before = _rejected(a) + _rejected(b)
    refused, took, answered = asyncio.run(run())
    assert refused.status_code == 503, refused.text
    assert refused.headers.get("retry-after") == "1"
    assert refused.json()["error"]["type"] == "overloaded"
    assert "x-lcha-replica" not in refused.headers  # HAProxy's answer, not a replica's
    assert _rejected(a) + _rejected(b) == before
    assert took < 0.5
    assert answered.status_code == 200, answered.text


def test_weights_change_live_and_the_runtime_socket_is_private(
        haproxy: tuple[HaproxyBalancer, psutil.Process], pair: tuple[Replica, Replica]) -> None:
    """A weight change goes through the runtime API (same PID, no reload) and HAProxy reports
    it; it listens on 127.0.0.1:port only; its socket is 0600 in a 0700 directory that
    another local user cannot connect to."""
    lb, proc = haproxy
    a, b = pair
    lb.apply([Upstream(a.port, weight=0), Upstream(b.port, weight=5)])
    weights = {s["address"]: s["weight"] for s in lb.view()}
    assert weights == {f"127.0.0.1:{a.port}": 0, f"127.0.0.1:{b.port}": 5}
    assert proc.is_running()
    replicas = {httpx.post(f"{lb.url}/v1/invoke", json={"input": 1}).headers["x-lcha-replica"]
                for _ in range(6)}
    assert replicas == {f"r{b.port}"}  # weight 0: no traffic
    with pytest.raises(RuntimeError, match="slots"):
        lb.apply([Upstream(a.port)])
    listening = {c.laddr for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", lb.port)}
    sock = lb.admin_socket
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        probe = UNIX_CONNECT.format(path=str(sock))
        assert as_stranger(probe, reach=[sock]) == "PermissionError"


def test_the_clients_idempotency_key_is_kept(
        haproxy: tuple[HaproxyBalancer, psutil.Process], pair: tuple[Replica, Replica]) -> None:
    """HAProxy adds a key only when the client sent none: the same client key twice is one
    answer (the second a replay), two requests without a key are two answers."""
    lb, _ = haproxy
    a, b = pair
    lb.apply([Upstream(a.port, weight=0), Upstream(b.port)])  # one replica's store
    key = {"Idempotency-Key": f"k-{time.time_ns()}"}
    first = httpx.post(f"{lb.url}/v1/invoke", json={"input": 1}, headers=key)
    again = httpx.post(f"{lb.url}/v1/invoke", json={"input": 1}, headers=key)
    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert again.headers.get("idempotent-replayed") == "true"
    keyless = [httpx.post(f"{lb.url}/v1/invoke", json={"input": 2}) for _ in range(2)]
    assert all(r.status_code == 200 and "idempotent-replayed" not in r.headers
               for r in keyless)


def test_with_no_replica_up_haproxy_answers_503_with_retry_after(tmp_path: Path) -> None:
    """HAProxy's own 503 (every server down) says when to retry, in the replica's JSON shape,
    like a replica's shed answer (the overload drill counts 503s without it as failures)."""
    spec = Balancer(checks=HealthChecks(interval_s=0.2, timeout_s=0.2))
    lb = HaproxyBalancer(spec, free_port(), tmp_path, server_timeout_s=5)
    child = lb.start([Upstream(free_port())])  # nothing listens there
    try:
        deadline = time.monotonic() + 10
        while not all(s["status"] == "DOWN" for s in lb.view()):
            assert time.monotonic() < deadline, lb.view()
            time.sleep(0.1)
        resp = httpx.post(f"{lb.url}/v1/invoke", json={"input": 1}, timeout=10)
    finally:
        child.stop()
        lb.cleanup()
    assert resp.status_code == 503
    assert resp.headers.get("retry-after") == "1"
    assert resp.json()["error"]["type"] == "overloaded"


def test_an_empty_slot_is_in_maintenance_until_a_replica_occupies_it(
        serve_factory: Callable[..., Replica], tmp_path: Path) -> None:
    """Right after HAProxy starts every server counts as up until its first failed check; an
    empty slot kept in maintenance is never tried, so no request is lost to it."""
    a = serve_factory("tests.support.apps:echo")
    empty = free_port()
    lb = HaproxyBalancer(Balancer(), free_port(), tmp_path, server_timeout_s=10)
    child = lb.start([Upstream(a.port), Upstream(empty, occupied=False)])
    try:
        states = {v["address"]: v["status"] for v in lb.view()}
        assert states[f"127.0.0.1:{empty}"] == "MAINT"
        with httpx.Client(timeout=10) as client:
            for _ in range(8):
                r = client.post(lb.url + "/v1/invoke", json={"input": 1})
                assert r.status_code == 200
        lb.apply([Upstream(a.port), Upstream(empty)])  # a replica takes the slot
        assert {v["address"]: v["status"] for v in lb.view()}[f"127.0.0.1:{empty}"] != "MAINT"
        lb.apply([Upstream(a.port), Upstream(empty, occupied=False)])
        assert {v["address"]: v["status"] for v in lb.view()}[f"127.0.0.1:{empty}"] == "MAINT"
    finally:
        child.stop()
        lb.cleanup()

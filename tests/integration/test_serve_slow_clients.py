"""Slow and greedy clients against a real replica: they hold connections, never the in-flight
slots; their bodies and headers time out; headers are bounded in size; connections in number."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.fixtures_serve import Replica, gauge

KEY = "slow-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SLOW = 70  # more than the replica's 64 in-flight slots (LCHA_MAX_INFLIGHT below)
BODY_TIMEOUT_S = 8.0  # long enough for the normal requests to finish first on a busy CI box
HEADER_TIMEOUT_S = 2.0


def _connect(port: int, first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def _status_and_json(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.fixture(scope="module")
def replica(serve_factory: Callable[..., Replica]) -> Replica:
    return serve_factory("tests.support.apps:echo", env={
        "LCHA_API_KEYS": KEY, "LCHA_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "LCHA_MAX_INFLIGHT": "64"})


def test_slow_bodies_hold_no_slot_and_time_out(replica: Replica) -> None:
    head = (b"POST /v1/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    began = time.monotonic()
    slow = [_connect(replica.port, head + b"{") for _ in range(SLOW)]  # one byte of 100
    time.sleep(0.5)

    def normal(i: int) -> int:
        return httpx.post(replica.url + "/v1/invoke", json={"input": i}, headers=AUTH,
                          timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(normal, range(40)))
    normal_done = time.monotonic() - began
    assert statuses == [200] * 40  # 0 failed while 70 slow clients are connected
    assert normal_done < BODY_TIMEOUT_S  # ...and they were still connected
    # /readyz says ready, and it is: nothing of the slow clients is in flight.
    ready = httpx.get(replica.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["inflight"] == 0
    metrics = httpx.get(replica.url + "/metrics").text
    assert gauge(metrics, "lcha_inflight_requests") == 0

    answers = [_status_and_json(_read_all(sock)) for sock in slow]
    waited = time.monotonic() - began
    assert [status for status, _ in answers] == [408] * SLOW
    error = answers[0][1]["error"]
    assert isinstance(error, dict) and error["limit"] == BODY_TIMEOUT_S
    assert "body_timeout_s" in error["message"]
    assert BODY_TIMEOUT_S - 1 < waited < BODY_TIMEOUT_S + 10
    assert httpx.get(replica.url + "/readyz").json()["inflight"] == 0
    assert "Traceback" not in replica.log()


def test_oversized_headers_are_a_431(replica: Replica) -> None:
    for headers in ({"X-Big": "a" * 40_000}, {"X-Huge": "a" * 1_000_000},
                    {f"X-Many-{i}": "b" * 100 for i in range(400)}):
        resp = httpx.get(replica.url + "/livez", headers=headers)
        assert resp.status_code == 431
        assert "max_header_bytes" in resp.json()["error"]["message"]
    assert httpx.get(replica.url + "/livez", headers={"X-Fine": "c" * 20_000}).status_code == 200


@pytest.fixture(scope="module")
def strict(serve_factory: Callable[..., Replica]) -> Replica:
    return serve_factory("tests.support.apps:echo", env={
        "LCHA_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "LCHA_MAX_CONNECTIONS": "40"})


def test_headers_must_arrive_in_time(strict: Replica) -> None:
    began = time.monotonic()
    partial = _connect(strict.port, b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # never finished
    silent = _connect(strict.port)  # never sends a byte
    status, body = _status_and_json(_read_all(partial))
    assert status == 408 and "header_timeout_s" in json.dumps(body)
    assert _read_all(silent) == b""  # closed without a word: it never asked anything
    assert HEADER_TIMEOUT_S - 0.5 < time.monotonic() - began < HEADER_TIMEOUT_S + 8


def test_connections_are_bounded_and_idle_ones_evicted(strict: Replica) -> None:
    idle = [_connect(strict.port) for _ in range(45)]
    time.sleep(0.3)
    assert httpx.get(strict.url + "/livez").status_code == 503  # uvicorn's limit_concurrency
    for sock in idle:  # evicted by the header timeout, so the replica serves again
        assert _read_all(sock) == b""
    assert httpx.get(strict.url + "/livez").status_code == 200

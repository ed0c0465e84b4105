"""The replica server as a real uvicorn process: contract, auth, limits, idempotency."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.support.fixtures_serve import Replica, gauge

KEY, ADMIN = "test-key-1", "admin-token-1"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def echo(serve_factory: Callable[..., Replica]) -> Replica:
    return serve_factory("tests.support.apps:echo",
                         env={"LCHA_API_KEYS": KEY, "LCHA_ADMIN_TOKEN": ADMIN})


def test_invoke_answers_with_the_envelope(echo: Replica) -> None:
    resp = httpx.post(echo.url + "/v1/invoke", json={"input": {"q": "hi"}}, headers=AUTH)
    assert resp.status_code == 200
    body = resp.json()
    assert body["output"] == {"echo": {"q": "hi"}}
    assert body["degraded"] == [] and resp.headers["x-lcha-degraded"] == ""
    assert body["zone"] == "az-test" and body["replica"] == resp.headers["x-lcha-replica"]
    assert body["request_id"] == resp.headers["x-request-id"]
    traced = httpx.post(echo.url + "/v1/invoke", json={"input": 1},
                        headers={**AUTH, "X-Request-ID": "trace-42"})
    assert traced.headers["x-request-id"] == "trace-42"


def test_batch_answers_in_order(echo: Replica) -> None:
    resp = httpx.post(echo.url + "/v1/batch", json={"inputs": [1, 2, 3]}, headers=AUTH)
    assert resp.json()["outputs"] == [{"echo": 1}, {"echo": 2}, {"echo": 3}]


def test_auth_for_api_and_admin(echo: Replica) -> None:
    url = echo.url
    assert httpx.post(url + "/v1/invoke", json={"input": 1}).status_code == 401
    bad = httpx.post(url + "/v1/invoke", json={"input": 1}, headers={"Authorization": "Bearer x"})
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "unauthorized"
    assert httpx.get(url + "/admin/breakers").status_code == 401
    assert httpx.get(url + "/admin/breakers", headers=AUTH).status_code == 403
    admin = httpx.get(url + "/admin/breakers", headers={"Authorization": f"Bearer {ADMIN}"})
    assert admin.status_code == 200
    assert KEY not in echo.log() and ADMIN not in echo.log()
    assert httpx.get(url + "/livez").status_code == 200  # probes need no key


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b'{"input": ', 422, "json"),
    (b'\xff\xfe{"input": 1}', 422, ""),
    (b'{"inputs": 3}', 422, "input"),
    (json.dumps({"input": "x" * 40_000}).encode(), 422, "max_prompt_chars"),
    (json.dumps({"input": {"messages": [{"role": "user", "content": "x"}] * 101}}).encode(),
     422, "max_messages"),
    (b'{"input": "' + b"y" * (1 << 20) + b'"}', 413, "max_body_bytes"),
])
def test_bad_input_is_a_clear_4xx(echo: Replica, body: bytes, status: int, needle: str) -> None:
    resp = httpx.post(echo.url + "/v1/invoke", content=body,
                      headers={**AUTH, "content-type": "application/json"})
    assert resp.status_code == status
    assert needle in json.dumps(resp.json()).lower()


def test_batch_limit(echo: Replica) -> None:
    resp = httpx.post(echo.url + "/v1/batch", json={"inputs": list(range(33))}, headers=AUTH)
    assert resp.status_code == 422 and "max_batch" in resp.text


def test_idempotent_retry_runs_once(echo: Replica) -> None:
    headers = {**AUTH, "Idempotency-Key": "order-77-attempt"}
    before = len(echo.calls())
    first = httpx.post(echo.url + "/v1/invoke", json={"input": "pay"}, headers=headers)
    again = httpx.post(echo.url + "/v1/invoke", json={"input": "pay"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    assert again.headers["idempotent-replayed"] == "true"
    ran = echo.calls()[before:]
    # Once, under the request key the app sees: scoped to the caller, not the client's key.
    assert len(ran) == 1 and ran[0] != "order-77-attempt"
    bad = httpx.post(echo.url + "/v1/invoke", json={"input": 1},
                     headers={**AUTH, "Idempotency-Key": "no spaces allowed"})
    assert bad.status_code == 400


def test_openai_sdk_is_a_client(echo: Replica) -> None:
    client = openai.OpenAI(base_url=echo.url + "/v1", api_key=KEY, max_retries=0)
    answer = client.chat.completions.create(
        model="bot", messages=[{"role": "user", "content": "hello there"}])
    assert "hello there" in (answer.choices[0].message.content or "")


def test_degraded_and_failing_runnables(serve_factory: Callable[..., Replica]) -> None:
    degraded = serve_factory("tests.support.apps:degraded")
    resp = httpx.post(degraded.url + "/v1/invoke", json={"input": "q"})
    assert resp.status_code == 200 and resp.json()["degraded"] == ["retrieval"]
    assert resp.headers["x-lcha-degraded"] == "retrieval"
    metrics = httpx.get(degraded.url + "/metrics").text
    assert 'lcha_degraded_answers_total{component="retrieval"} 1.0' in metrics
    failing = serve_factory("tests.support.apps:failing")
    err = httpx.post(failing.url + "/v1/invoke", json={"input": "q"})
    assert err.status_code == 502
    assert err.json()["error"]["error_id"] and "secret" not in err.text


def test_stream_sends_chunks_then_the_envelope(serve_factory: Callable[..., Replica]) -> None:
    replica = serve_factory("tests.support.apps:streaming")
    with httpx.stream("POST", replica.url + "/v1/stream", json={"input": "q"}) as resp:
        text = "".join(resp.iter_text())
    events = [e for e in text.split("\n\n") if e]
    assert [e.split("\n")[0] for e in events] == ["event: data"] * 3 + ["event: end"]
    assert json.loads(events[-1].split("data: ", 1)[1])["degraded"] == []
    client = openai.OpenAI(base_url=replica.url + "/v1", api_key="none", max_retries=0)
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "q"}], stream=True) if c.choices]
    assert "".join(parts) == "one two three"


def test_admission_control_sheds_fast(serve_factory: Callable[..., Replica]) -> None:
    replica = serve_factory("tests.support.apps:slow", "--max-inflight", "2",
                            env={"LCHA_TEST_SLOW_S": "1.5"})
    import concurrent.futures

    def call() -> tuple[int, float, str | None]:
        began = time.monotonic()
        r = httpx.post(replica.url + "/v1/invoke", json={"input": 1}, timeout=10)
        return r.status_code, time.monotonic() - began, r.headers.get("retry-after")

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: call(), range(5)))
    shed = [r for r in results if r[0] == 503]
    assert sorted(r[0] for r in results) == [200, 200, 503, 503, 503]
    assert all(r[1] < 0.5 and r[2] == "1" for r in shed)


def test_sigterm_drains_without_failing_a_request(serve_factory: Callable[..., Replica]) -> None:
    replica = serve_factory("tests.support.apps:slow",
                            env={"LCHA_TEST_SLOW_S": "1.0", "LCHA_DRAIN_GRACE_S": "1.5"})
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        inflight = [pool.submit(httpx.post, replica.url + "/v1/invoke", json={"input": i},
                                timeout=20) for i in range(20)]
        time.sleep(0.3)
        replica.child.signal(signal.SIGTERM)
        time.sleep(0.2)
        ready = httpx.get(replica.url + "/readyz")
        during = httpx.post(replica.url + "/v1/invoke", json={"input": "late"}, timeout=20)
        statuses = [f.result().status_code for f in inflight]
    assert ready.status_code == 503 and ready.json()["reason"] == "draining"
    assert statuses == [200] * 20
    assert during.status_code == 200
    assert replica.child.proc.wait(30) == 0


def test_the_start_up_heap_is_frozen_unless_turned_off(
    echo: Replica, serve_factory: Callable[..., Replica]
) -> None:
    # Full collections must not walk the modules and clients loaded at start-up.
    assert gauge(httpx.get(echo.url + "/metrics").text, "lcha_gc_frozen_objects") > 10_000
    plain = serve_factory("tests.support.apps:echo", env={"LCHA_GC_FREEZE": "false"})
    assert gauge(httpx.get(plain.url + "/metrics").text, "lcha_gc_frozen_objects") == 0

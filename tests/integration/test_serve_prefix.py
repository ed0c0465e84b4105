"""The replica under a path prefix: auth, the body limit and admission hold exactly as at the
root, whichever way the prefix comes (Starlette ``Mount``, uvicorn ``--root-path``, or
``lcha serve`` with ``LCHA_ROOT_PATH``), and the gate fails closed."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable

import httpx
import pytest

from tests.support.fixtures_serve import Replica

KEY, ADMIN = "prefix-key", "prefix-admin"
ENV = {"LCHA_API_KEYS": KEY, "LCHA_ADMIN_TOKEN": ADMIN, "LCHA_MAX_INFLIGHT": "2",
       "LCHA_MAX_BODY_BYTES": "65536"}
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"input": {"q": "hi"}}
API_PATHS = [("POST", "/v1/invoke"), ("POST", "/v1/batch"), ("POST", "/v1/stream"),
             ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
             ("GET", "/v1/models/langchain-ha"), ("POST", "/v1/embeddings"),
             ("GET", "/openapi.json"), ("GET", "/v1/nope"),
             ("POST", "/nope"), ("GET", ""), ("GET", "/"), ("GET", "/livez/"),
             ("GET", "/api/v1/invoke")]
ADMIN_PATHS = [("POST", "/admin/drain"), ("GET", "/admin/breakers"),
               ("POST", "/admin/breakers/primary/reset"), ("GET", "/admin/nope"),
               ("GET", "/admin")]


@pytest.fixture(scope="module", params=["mount", "uvicorn-root-path", "lcha-serve-root-path"])
def base(request: pytest.FixtureRequest, serve_factory: Callable[..., Replica]) -> str:
    """The URL a client (behind the proxy that strips the prefix, for root_path) uses."""
    if request.param == "mount":
        replica = serve_factory("tests.support.mounted:app", env=ENV, asgi=True,
                                ready_path="/api/readyz")
        return replica.url + "/api"
    if request.param == "uvicorn-root-path":
        return serve_factory("tests.support.mounted:replica", "--root-path", "/api", env=ENV,
                             asgi=True).url
    return serve_factory("tests.support.apps:nap", env={**ENV, "LCHA_ROOT_PATH": "/api"}).url


def test_every_api_path_needs_a_key(base: str) -> None:
    for method, path in API_PATHS:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN}):
            # (GET /api with a Mount: the outer app's router redirects to /api/ first)
            resp = httpx.request(method, base + path, json=BODY, headers=headers,
                                 follow_redirects=True)
            assert resp.status_code == 401, (method, path, headers, resp.status_code, resp.text)
            error = resp.json()["error"]
            if path == "/v1/chat/completions" or path.startswith(("/v1/models", "/v1/emb")):
                # OpenAI's paths answer in OpenAI's shape (its SDK raises AuthenticationError)
                assert set(error) == {"message", "type", "param", "code"}, error
                assert error["code"] in ("missing_api_key", "invalid_api_key"), error
            else:
                assert error["type"] == "unauthorized"


def test_admin_paths_need_the_admin_token(base: str) -> None:
    for method, path in ADMIN_PATHS:
        assert httpx.request(method, base + path).status_code == 401, path
        assert httpx.request(method, base + path, headers=AUTH).status_code == 403, path
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert httpx.get(base + "/admin/breakers", headers=admin).status_code == 200
    assert httpx.get(base + "/admin/nope", headers=admin).status_code == 404


def test_with_a_key_it_answers_and_unknown_paths_are_404(base: str) -> None:
    resp = httpx.post(base + "/v1/invoke", json=BODY, headers=AUTH)
    assert resp.status_code == 200 and resp.json()["output"] == {"echo": {"q": "hi"}}
    assert httpx.get(base + "/openapi.json", headers=AUTH).status_code == 200
    for method, path in [("GET", "/v1/nope"), ("POST", "/nope"), ("GET", "/api/v1/invoke")]:
        assert httpx.request(method, base + path, headers=AUTH).status_code == 404, path


def test_probes_need_no_key(base: str) -> None:
    for path in ("/livez", "/readyz", "/health", "/metrics"):
        assert httpx.get(base + path).status_code == 200, path


def test_the_body_limit_applies(base: str) -> None:
    big = json.dumps({"input": "x" * 100_000}).encode()
    for path, headers in (("/v1/invoke", AUTH), ("/admin/breakers",
                                                 {"Authorization": f"Bearer {ADMIN}"})):
        resp = httpx.post(base + path, content=big,
                          headers={**headers, "content-type": "application/json"})
        assert resp.status_code == 413, (path, resp.status_code)
        assert resp.json()["error"]["limit"] == 65536 and "max_body_bytes" in resp.text


def test_admission_applies(base: str) -> None:
    def call(_: int) -> int:
        return httpx.post(base + "/v1/invoke", json={"input": {"sleep": 1.5}}, headers=AUTH,
                          timeout=15).status_code

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        statuses = sorted(pool.map(call, range(5)))
    assert statuses == [200, 200, 503, 503, 503]

"""Schemathesis over the replica's own OpenAPI, against a real server process: no 5xx."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

from tests.support.fixtures_serve import Replica  # noqa: E402

KEY = "fuzz-key"


@pytest.fixture(scope="module")
def replica_schema(serve_factory: Callable[..., Replica]) -> Any:
    replica = serve_factory("tests.support.apps:echo",
                            env={"LCHA_API_KEYS": KEY, "LCHA_ADMIN_TOKEN": "fuzz-admin"})
    # The API description is part of the API: it needs a key like the rest.
    return schemathesis.openapi.from_url(replica.url + "/openapi.json",
                                         headers={"Authorization": f"Bearer {KEY}"})


schema = schemathesis.pytest.from_fixture("replica_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {KEY}"}
    response = case.call(timeout=10)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])

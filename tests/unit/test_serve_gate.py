"""The gate's route path is the router's: the same rule as Starlette's own."""

from __future__ import annotations

import pytest
from starlette._utils import get_route_path  # the rule the router uses; the gate must agree

from langchain_ha.serve.gate import route_path


@pytest.mark.parametrize(("path", "root"), [
    ("/v1/invoke", ""), ("/api/v1/invoke", "/api"), ("/api", "/api"), ("/api/", "/api"),
    ("/apiv1/invoke", "/api"), ("/v1/invoke", "/api"), ("/a/b/livez", "/a/b"),
    ("/a/b/admin/drain", "/a/b"), ("/api/api/v1/invoke", "/api"), ("", ""),
])
def test_route_path_is_starlettes(path: str, root: str) -> None:
    scope = {"type": "http", "path": path, "root_path": root}
    assert route_path(scope) == get_route_path(scope)

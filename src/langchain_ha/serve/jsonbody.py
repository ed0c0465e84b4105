"""JSON request bodies parsed within limits: nesting depth and value count are checked by an
iterative walk, before any code that recurses (validation, the limit checks, the app, the
encoder of the answer) sees the value.

The parser is the standard library's (what Starlette uses); its C scanner guards its own
recursion, so a body nested past Python's recursion limit (100 000 deep, say) raises
``RecursionError`` instead of overflowing the stack: that is reported as too deep as well.
Either way the answer is a 422 naming the limit, never a 500.

FastAPI's documented hook for this is a custom ``APIRoute`` whose handler gets a custom
``Request`` (:func:`limited_json_route`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope


class BodyLimitExceeded(HTTPException):
    """A JSON body over ``max_depth`` or ``max_nodes`` (the app answers 422 naming it)."""

    def __init__(self, message: str, limit_name: str, limit: int) -> None:
        super().__init__(422, message)
        self.limit_name = limit_name
        self.limit = limit


def check_shape(value: Any, max_depth: int, max_nodes: int) -> BodyLimitExceeded | None:
    """The first limit ``value`` breaks, or None; the top-level array/object is depth 1."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return _too_deep(max_depth)
        stack.extend((child, depth + 1) for child in children)
        if nodes + len(stack) > max_nodes:  # every value on the stack will be counted
            return BodyLimitExceeded(f"body: more than {max_nodes} JSON values (max_nodes)",
                                     "max_nodes", max_nodes)
    return None


def _too_deep(max_depth: int) -> BodyLimitExceeded:
    return BodyLimitExceeded(f"body: nested deeper than {max_depth} arrays/objects (max_depth)",
                             "max_depth", max_depth)


class LimitedJsonRequest(Request):
    """A request whose ``json()`` refuses bodies over the limits (see the module docstring)."""

    def __init__(self, scope: Scope, receive: Receive, *, max_depth: int,
                 max_nodes: int) -> None:
        super().__init__(scope, receive)
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self._parsed: tuple[Any] | None = None

    async def json(self) -> Any:
        if self._parsed is None:
            body = await self.body()
            try:
                value = json.loads(body)
            except RecursionError:
                raise _too_deep(self.max_depth) from None
            problem = check_shape(value, self.max_depth, self.max_nodes)
            if problem is not None:
                raise problem
            self._parsed = (value,)
        return self._parsed[0]


def limited_json_route(max_depth: int, max_nodes: int) -> type[APIRoute]:
    """An ``APIRoute`` class (for ``APIRouter(route_class=...)``) parsing with these limits."""

    class LimitedJsonRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def limited(request: Request) -> Response:
                return await handler(LimitedJsonRequest(
                    request.scope, request.receive, max_depth=max_depth, max_nodes=max_nodes))

            return limited

    return LimitedJsonRoute

"""The LLM provider simulator: OpenAI- and Anthropic-compatible APIs with fault injection.

The one stand-in for SaaS we cannot reach in tests and demos.  Real LangChain clients
(``ChatOpenAI``, ``ChatAnthropic``, ``OpenAIEmbeddings``) talk to it over HTTP.  Answers are
deterministic and grounded in the prompt (see :mod:`langchain_ha.providers._answers`), so a
drill can check that an answer is right.

Routes: ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models``,
``POST /v1/messages``, ``GET /tools/order_status/{order_id}``; admin: ``POST|GET|DELETE
/_faults`` and ``GET|DELETE /_stats``.  Base latency plus uniform jitter model a real
provider's answer time; a chat request's jitter is derived from its last message, so the same
question always takes as long (benchmarks compare contenders on paired samples).
"""

from __future__ import annotations

import re
import zlib
from functools import partial

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from langchain_ha.providers import _anthropic_api, _openai_api
from langchain_ha.providers._core import Sim, json_response, read_json
from langchain_ha.providers._faults import NO_FAULTS, Faults

_ORDER = re.compile(r"^[A-Z0-9-]{3,20}$")
_STATUSES = ("processing", "packed", "shipped", "in transit", "out for delivery", "delivered")
_CARRIERS = ("UPS", "DHL", "FedEx", "PostNL")


def order_status(order_id: str) -> dict[str, object]:
    """The simulated order API's (deterministic) answer for ``order_id``: drills' oracle."""
    h = zlib.crc32(order_id.encode())
    return {"order_id": order_id, "status": _STATUSES[h % len(_STATUSES)],
            "eta_days": h % 7, "carrier": _CARRIERS[(h >> 8) % len(_CARRIERS)]}


def _tool_error(status: int, message: str) -> dict[str, object]:
    return {"error": {"message": message, "status": status}}


async def _order_status(sim: Sim, request: Request) -> Response:
    early = await sim.gate(request, "tools", _tool_error, auth=False)
    if early is not None:
        return early
    order_id = request.path_params["order_id"]
    if not _ORDER.match(order_id):
        return sim.fail("tools", 400, "order_id must be 3-20 characters of A-Z, 0-9 and '-'",
                        _tool_error)
    if order_id.startswith("MISSING"):
        return sim.fail("tools", 404, f"no order {order_id}", _tool_error)
    return sim.ok("tools", order_status(order_id))


async def _set_faults(sim: Sim, request: Request) -> Response:
    body = await read_json(request)
    if body is None:
        return json_response({"error": {"message": "body must be a JSON object",
                                        "field": None}}, 422)
    try:
        sim.faults = Faults.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        return json_response({"error": {"message": f"{field}: {first['msg']}",
                                        "field": field}}, 422)
    return json_response(sim.faults.model_dump())


async def _get_faults(sim: Sim, request: Request) -> Response:
    return json_response(sim.faults.model_dump())


async def _clear_faults(sim: Sim, request: Request) -> Response:
    sim.faults = NO_FAULTS
    return json_response(sim.faults.model_dump())


async def _get_stats(sim: Sim, request: Request) -> Response:
    return json_response(sim.stats.as_dict(sim.name))


async def _reset_stats(sim: Sim, request: Request) -> Response:
    sim.stats.received.clear()
    sim.stats.by_status.clear()
    return json_response(sim.stats.as_dict(sim.name))


def create_app(name: str = "sim", latency_ms: float = 0.0, jitter_ms: float = 0.0) -> Starlette:
    """The simulator as an ASGI app (one provider named ``name``)."""
    sim = Sim(name, latency_ms, jitter_ms)
    routes = [
        Route("/v1/chat/completions", partial(_openai_api.chat, sim), methods=["POST"]),
        Route("/v1/embeddings", partial(_openai_api.embeddings, sim), methods=["POST"]),
        Route("/v1/models", partial(_openai_api.models, sim), methods=["GET"]),
        Route("/v1/messages", partial(_anthropic_api.messages, sim), methods=["POST"]),
        Route("/tools/order_status/{order_id}", partial(_order_status, sim), methods=["GET"]),
        Route("/_faults", partial(_set_faults, sim), methods=["POST"]),
        Route("/_faults", partial(_get_faults, sim), methods=["GET"]),
        Route("/_faults", partial(_clear_faults, sim), methods=["DELETE"]),
        Route("/_stats", partial(_get_stats, sim), methods=["GET"]),
        Route("/_stats", partial(_reset_stats, sim), methods=["DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


def run_simulator(*, host: str = "127.0.0.1", port: int = 8900, name: str = "sim",
                  latency_ms: float = 0.0, jitter_ms: float = 0.0) -> None:
    """Serve the simulator until interrupted (blocking)."""
    import uvicorn

    uvicorn.run(create_app(name, latency_ms, jitter_ms), host=host, port=port,
                log_level="warning", access_log=False, http="httptools",
                loop="uvloop", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    import sys

    from langchain_ha.cli import main

    sys.exit(main(["sim", *sys.argv[1:]]))

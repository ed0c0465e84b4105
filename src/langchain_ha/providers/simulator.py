"""The LLM provider simulator: OpenAI-, Anthropic- and Gemini-compatible APIs with faults.

The one stand-in for SaaS we cannot reach in tests and demos.  Real LangChain clients
(``ChatOpenAI``, ``ChatAnthropic``, ``ChatGoogleGenerativeAI``, ``OpenAIEmbeddings``) and the
official SDKs talk to it over HTTP, with the request and response shapes the real providers
use (tool calls, usage, structured output, errors).  Answers are deterministic and grounded in
the prompt (see :mod:`langchain_ha.providers._answers`), so a drill can check that an answer
is right.

Routes:

- OpenAI: ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models``;
- Anthropic: ``POST /v1/messages``;
- Gemini: ``POST /v1beta/models/{model}:generateContent``, ``…:streamGenerateContent``
  (also under ``/v1/``, which google-genai 3.x uses by default), ``GET /v1beta/models`` (and
  ``GET /v1/models`` with a Gemini key: ``x-goog-api-key`` or ``?key=``);
- the order API the demo's tool calls: ``GET /tools/order_status/{order_id}``, and a tool
  with a side effect, ``POST /tools/refunds`` (idempotent by ``Idempotency-Key``, see
  :mod:`langchain_ha.providers._refunds`);
- admin (``Authorization: Bearer $LCHA_SIM_ADMIN_TOKEN``; refused when the simulator was
  started without that variable): ``POST|GET|DELETE /_faults`` and ``GET|DELETE /_stats``.

Base latency plus uniform jitter model a real provider's answer time; a chat request's jitter
is derived from its last message, so the same question always takes as long (benchmarks
compare contenders on paired samples).  Faults (:class:`~langchain_ha.providers._faults.Faults`)
inject errors, slow or broken streams, connection resets and model misbehaviour at run time.
"""

from __future__ import annotations

import hmac
import os
import re
from functools import partial

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from langchain_ha.providers import ADMIN_TOKEN_ENV, _gemini_api, _openai_api, order_status
from langchain_ha.providers._anthropic_api import AnthropicApi
from langchain_ha.providers._core import Api, Sim, json_response, read_json
from langchain_ha.providers._faults import Faults
from langchain_ha.providers._gemini_api import GeminiApi
from langchain_ha.providers._openai_api import OpenAIApi
from langchain_ha.providers._refunds import KeyConflict, RefundLedger, order_id_of

_ORDER = re.compile(r"^[A-Z0-9-]{3,20}$")


async def _order_status(sim: Sim, api: Api, request: Request) -> Response:
    early = await sim.gate(request, "tools", api, auth=False)
    if early is not None:
        return early
    order_id = request.path_params["order_id"]
    if not _ORDER.match(order_id):
        return sim.fail("tools", api.error(
            400, "order_id must be 3-20 characters of A-Z, 0-9 and '-'"))
    if order_id.startswith("MISSING"):
        return sim.fail("tools", api.error(404, f"no order {order_id}"))
    return sim.ok("tools", order_status(order_id))


async def _refund(sim: Sim, api: Api, ledger: RefundLedger, request: Request) -> Response:
    order_id = order_id_of(await read_json(request))
    if order_id is None or not _ORDER.match(order_id):
        sim.stats.arrive("tools")
        return sim.fail("tools", api.error(
            400, "the body must be {\"order_id\": ...} with 3-20 characters of A-Z, 0-9 "
                 "and '-'"))
    key = request.headers.get("idempotency-key")
    try:
        replay = ledger.begin(key, order_id)
    except KeyConflict as err:
        sim.stats.arrive("tools")
        return sim.fail("tools", api.error(err.status, err.message))
    if replay is not None:
        sim.stats.arrive("tools")
        response = sim.ok("tools", replay)
        response.headers["idempotent-replayed"] = "true"
        return response
    # The claim is held while the refund "executes" (the route's latency and faults), so a
    # twin sent meanwhile gets 409, as from a payment API.
    early = await sim.gate(request, "tools", api, auth=False)
    if early is not None:
        ledger.abandon(key)
        return early
    return sim.ok("tools", ledger.finish(key, order_id))


async def _models(sim: Sim, openai: OpenAIApi, gemini: GeminiApi, request: Request) -> Response:
    if _gemini_api.wants_gemini(request):
        return await _gemini_api.models(sim, gemini, request)
    return await _openai_api.models(sim, openai, request)


def _admin_refusal(token: str | None, request: Request) -> Response | None:
    """A 401/403 unless ``request`` carries the admin token (compared in constant time)."""
    if not token:
        return json_response({"error": {"message": f"admin API disabled: start the simulator "
                                                   f"with {ADMIN_TOKEN_ENV} set",
                                        "field": None}}, 403)
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        return json_response({"error": {"message": "admin API: missing or wrong bearer token",
                                        "field": "authorization"}}, 401,
                             {"www-authenticate": 'Bearer realm="lcha-sim-admin"'})
    return None


async def _faults(sim: Sim, token: str | None, request: Request) -> Response:
    refused = _admin_refusal(token, request)
    if refused is not None:
        return refused
    if request.method == "DELETE":
        sim.faults.clear()
    elif request.method == "POST":
        body = await read_json(request)
        if body is None:
            return json_response({"error": {"message": "body must be a JSON object",
                                            "field": None}}, 422)
        try:
            sim.faults.set(Faults.model_validate(body))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or None
            return json_response({"error": {"message": f"{field}: {first['msg']}",
                                            "field": field}}, 422)
    return json_response(sim.faults.as_dict())


async def _stats(sim: Sim, ledger: RefundLedger, token: str | None,
                 request: Request) -> Response:
    refused = _admin_refusal(token, request)
    if refused is not None:
        return refused
    if request.method == "DELETE":
        sim.stats.clear()
        ledger.clear()
    return json_response({**sim.stats.as_dict(sim.name), "refunds": ledger.as_dict()})


def create_app(name: str = "sim", latency_ms: float = 0.0, jitter_ms: float = 0.0,
               admin_token: str | None = None) -> Starlette:
    """The simulator as an ASGI app (one provider named ``name``).

    ``admin_token`` guards ``/_faults`` and ``/_stats``; by default it is read from
    ``LCHA_SIM_ADMIN_TOKEN``, and without one the admin API is refused.
    """
    sim = Sim(name, latency_ms, jitter_ms)
    token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
    openai, anthropic, gemini, tools = OpenAIApi(name), AnthropicApi(), GeminiApi(), Api()
    refunds = RefundLedger()
    routes = [
        Route("/v1/chat/completions", partial(sim.chat, api=openai), methods=["POST"]),
        Route("/v1/embeddings", partial(_openai_api.embeddings, sim, openai), methods=["POST"]),
        Route("/v1/models", partial(_models, sim, openai, gemini), methods=["GET"]),
        Route("/v1/messages", partial(sim.chat, api=anthropic), methods=["POST"]),
        *(Route(f"/{version}/models/{{target}}", partial(sim.chat, api=gemini),
                methods=["POST"]) for version in ("v1beta", "v1")),
        Route("/v1beta/models", partial(_gemini_api.models, sim, gemini), methods=["GET"]),
        Route("/tools/order_status/{order_id}", partial(_order_status, sim, tools),
              methods=["GET"]),
        Route("/tools/refunds", partial(_refund, sim, tools, refunds), methods=["POST"]),
        Route("/_faults", partial(_faults, sim, token), methods=["GET", "POST", "DELETE"]),
        Route("/_stats", partial(_stats, sim, refunds, token), methods=["GET", "DELETE"]),
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

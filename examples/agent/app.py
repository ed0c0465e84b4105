"""An order-desk agent: LangChain's ``create_agent`` with tools, retrieval and memory, all on
the deployment's stores, served as ``examples.agent.app:agent``.

- the model is the deployment's router (``router_from_env``: the providers of ``lcha.yaml``,
  each with its breaker, retries and fallbacks);
- memory is the LangGraph thread, checkpointed in the HA cluster (``stores.checkpointer()``),
  so a turn survives the replica running it and a database failover (:class:`DurableAgent`);
- retrieval puts the help articles nearest the question (pgvector, ``stores.vector_store``)
  into the system prompt; a failed search answers without them and says so (``retrieval``);
- ``order_status`` reads the order API; ``refund_order`` has a side effect and sends the tool
  call's id as its ``Idempotency-Key``, so a step run again after a crash refunds once.

The model is asked for one tool call per step (``parallel_tool_calls=False``): each refund is
checkpointed before the next starts.  Answers come from the deployment's LLM cache when the
same prompt was answered before (a policy question: the same articles, the same words); steps
that call tools are never cached (``PgCache`` skips them: a cached tool call would hand a new
refund an old call's id), so every refund is asked of a model.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import httpx
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, dynamic_prompt, wrap_model_call
from langchain_core.documents import Document
from langchain_core.tools import InjectedToolCallId, tool
from langchain_openai import OpenAIEmbeddings
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from langchain_ha import (
    AppEnvironment,
    DeploymentStores,
    DurableAgent,
    PrometheusEvents,
    ResilientRetriever,
    record_degraded,
    router_from_env,
    stores_from_env,
)

log = logging.getLogger(__name__)

DIMENSIONS = 256
COLLECTION = "order_desk_help"
HELP = [
    Document(id="refunds", page_content=(
        "Refunds go back to the original payment method within 5 business days. "
        "Orders can be refunded up to 30 days after delivery.")),
    Document(id="shipping", page_content=(
        "Standard shipping takes 2 to 4 days; express orders ship the same day when placed "
        "before noon.")),
    Document(id="returns", page_content=(
        "Returns need the order id and a photo of the item; the label is emailed within an "
        "hour.")),
]
SYSTEM = ("You are the order desk. Use the tools for anything about a specific order; "
          "answer other questions from the help articles below, citing them as [doc:ID].\n\n"
          "Help articles:\n{articles}")


def _transient(exc: BaseException) -> bool:
    """Worth another try: the tool API was unreachable, overloaded, or (for a refund) still
    executing the same key (409)."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (
        409, 429, 500, 502, 503, 504)


def _give_up(state: RetryCallState) -> bool:
    """Three tries for an error; up to 6 s while a twin request is still executing (409)."""
    exc = state.outcome.exception() if state.outcome else None
    busy = isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 409
    return (state.seconds_since_start or 0.0) > 6 or (not busy and state.attempt_number >= 3)


async def _call(name: str, send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
                ) -> str:
    """The tool API's JSON answer, or (after the retries) a notice that the tool is down,
    which the answer then carries as the ``tool:NAME`` degradation."""
    try:
        async with httpx.AsyncClient(base_url=_env().tools_url or "", timeout=10.0) as client:
            async for attempt in AsyncRetrying(retry=retry_if_exception(_transient),
                                               stop=_give_up,
                                               wait=wait_exponential_jitter(0.1, 1.0),
                                               reraise=True):
                with attempt:
                    response = await send(client)
                    response.raise_for_status()
        return json.dumps(response.json())
    except httpx.HTTPError as exc:
        record_degraded(f"tool:{name}")
        why = (exc.response.status_code if isinstance(exc, httpx.HTTPStatusError)
               else type(exc).__name__)
        return f"Tool {name} is unavailable right now (reason: {why}). Answer without it."


@tool
async def order_status(order_id: str) -> str:
    """Look up an order's status, carrier and expected delivery by its id (like AB-1234)."""
    return await _call("order_status", lambda c: c.get(f"/tools/order_status/{order_id}"))


@tool
async def refund_order(order_id: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
    """Refund an order in full by its id (like AB-1234)."""
    # The call's id is checkpointed with the model's message before the call is made, so a
    # resumed run repeats it: the refund API executes the key once.
    return await _call("refund_order", lambda c: c.post(
        "/tools/refunds", json={"order_id": order_id},
        headers={"Idempotency-Key": f"order-desk-{tool_call_id}"}))


@wrap_model_call
async def one_tool_call_per_step(request: ModelRequest,
                                 handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
                                 ) -> ModelResponse:
    """Ask for one tool call at a time, so each side effect gets its own checkpoint."""
    settings = {**request.model_settings, "parallel_tool_calls": False}
    return await handler(request.override(model_settings=settings))


@functools.cache
def _env() -> AppEnvironment:
    """What the deployment told this replica (read once: tools call it on every request)."""
    return AppEnvironment.from_env()


_stores: DeploymentStores | None = None


async def build() -> Any:
    """The compiled agent on the deployment's stores (``DurableAgent`` calls this once)."""
    global _stores
    env = _env()
    events = PrometheusEvents()  # the router's and the cache's metrics on /metrics
    _stores = stores = stores_from_env(namespace="order-desk:", cache_events=events)
    await stores.open()
    embeddings = OpenAIEmbeddings(
        base_url=(env.embeddings_url or "") + "/v1", model="sim-embed", dimensions=DIMENSIONS,
        api_key=os.environ.get("LCHA_EMBEDDINGS_API_KEY", "sim-key"),  # type: ignore[arg-type]
        check_embedding_ctx_length=False, max_retries=1)
    vectors = stores.vector_store(embeddings, dimensions=DIMENSIONS, collection=COLLECTION)
    try:
        await vectors.aadd_documents(HELP)  # idempotent by id: every replica may do it
    except Exception as exc:  # the database or the embeddings API is down: answer without
        log.warning("help articles not loaded (%s); another replica's start may load them", exc)
    retriever = ResilientRetriever(retriever=vectors.as_retriever(search_kwargs={"k": 2}))

    @dynamic_prompt
    async def with_articles(request: ModelRequest) -> str:
        question = next((m.text for m in reversed(request.state["messages"])
                         if m.type == "human"), "")
        docs = await retriever.ainvoke(question)
        return SYSTEM.format(articles="\n".join(f"[doc:{d.id}] {d.page_content}" for d in docs))

    return create_agent(
        router_from_env(breaker_store=stores.breakers, cache=stores.cache, events=events),
        tools=[order_status, refund_order],
        middleware=[with_articles, one_tool_call_per_step],
        checkpointer=await stores.checkpointer(),
    )


async def close() -> None:
    """Close the stores' pools."""
    if _stores is not None:
        await _stores.close()


agent = DurableAgent(build, close=close)

"""The contenders of ``lcha bench router``, each built fresh (cold) for every run, each configured
the way its own documentation recommends.

A contender is a :class:`Contender`: its settings (printed in the table and written to the
JSON, with the documentation page every value comes from) and an async ``call`` that takes a
question and returns the answer text.  All talk to the same two simulators over HTTP with real
clients; only the resilience layer differs.  Three kinds of work (:data:`Task`): a plain chat
request, a streamed one (the text is what the caller saw, chunk by chunk, joined), and a
tool-calling task where each contender runs the tool loop its documentation shows.

LiteLLM is a comparison only, never a dependency: when it is not importable, the contender is
built with ``call=None`` and the bench prints "not installed".
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI

Task = Literal["chat", "stream", "tools"]
Call = Callable[[str], Awaitable[str]]
API_KEY = "bench-key"
MODEL = "sim-chat"
# One request timeout for every client that takes one, so the hang row compares recipes, not
# timeouts: 30 s is the value LangChain's support article uses with max_retries=0
# (https://support.langchain.com/articles/1557730279-configuring-timeout-for-init-chat-model-in-langchain)
# and the one LiteLLM's timeout page uses (https://docs.litellm.ai/docs/proxy/timeout).
REQUEST_TIMEOUT_S = 30.0
MAX_TOOL_ROUNDS = 4  # the manual tool loops give up after this many model calls

LANGCHAIN_FALLBACKS_DOC = "https://python.langchain.com/docs/how_to/fallbacks/"
LANGCHAIN_TIMEOUT_DOC = ("https://support.langchain.com/articles/"
                         "1557730279-configuring-timeout-for-init-chat-model-in-langchain")
LANGCHAIN_MIDDLEWARE_DOC = "https://docs.langchain.com/oss/python/langchain/middleware/built-in"
LANGCHAIN_STREAMING_DOC = "https://docs.langchain.com/oss/python/langchain/streaming"
LANGCHAIN_TOOLS_DOC = "https://docs.langchain.com/oss/python/langchain/models#tool-calling"
LITELLM_RELIABILITY_DOC = "https://docs.litellm.ai/docs/router/learn/reliability"
LITELLM_CONFIG_DOC = "https://docs.litellm.ai/docs/router/api_reference/configuration"
LITELLM_ORDER_DOC = "https://docs.litellm.ai/docs/routing#deployment-ordering-priority"
LITELLM_PROXY_RELIABILITY_DOC = "https://docs.litellm.ai/docs/proxy/reliability"
LITELLM_TIMEOUT_DOC = "https://docs.litellm.ai/docs/proxy/timeout"
LITELLM_TOOLS_DOC = "https://docs.litellm.ai/docs/completion/function_call"
OURS_DOC = "README.md, section 'The router: ResilientChatModel'"


@dataclass(frozen=True)
class Endpoints:
    """Base URLs of the primary and secondary simulators."""

    primary: str
    secondary: str
    fault_free: bool = False  # no fault on the primary: raw may use it too

    @property
    def healthy(self) -> str:
        """Where ``raw`` goes: the provider the other contenders try first, unless faulty."""
        return self.primary if self.fault_free else self.secondary


@dataclass
class Contender:
    """One contender, built for one run: what it is, and how to ask it.

    ``call`` is None when the contender's library is not installed; ``settings`` and ``docs``
    are filled either way, so the report says what would have been measured.
    """

    name: str
    tag: str
    settings: dict[str, Any]
    docs: list[str]
    call: Call | None
    close: Callable[[], None] = field(default=lambda: None)

    @property
    def installed(self) -> bool:
        return self.call is not None


# --- the tool of the ``tools`` task -----------------------------------------------------------

_STATUSES = ("shipped", "processing", "delivered")


def order_record(order_id: str) -> str:
    """The order system's deterministic JSON for ``order_id`` (what the tool returns)."""
    digits = int(re.sub(r"\D", "", order_id) or "0")
    return json.dumps({"order_id": order_id, "status": _STATUSES[digits % 3],
                       "eta_days": 1 + digits % 5, "carrier": "DHL"})


@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order by its id (two letters, a dash and digits: AB-1234)."""
    return order_record(order_id)


TOOLS: list[BaseTool] = [order_status]
_TOOLS_BY_NAME = {t.name: t for t in TOOLS}


def _run_tool(name: str, args: dict[str, Any]) -> str:
    chosen = _TOOLS_BY_NAME.get(name)
    if chosen is None:
        return json.dumps({"error": f"no tool named {name!r}"})
    return str(chosen.invoke(args))


# --- LangChain building blocks ------------------------------------------------------------------

def _openai(url: str, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=url + "/v1", api_key=API_KEY, model=MODEL,  # type: ignore[arg-type]
                      **kw)


def _text(message: BaseMessage) -> str:
    return str(message.text)


def _model_call(model: Any, task: Task) -> Call:
    """Ask a chat model (or any Runnable taking messages) directly, plain or streamed."""
    async def call(question: str) -> str:
        messages = [HumanMessage(content=question)]
        if task == "stream":
            return "".join([_text(c) async for c in model.astream(messages)])
        return _text(await model.ainvoke(messages))

    return call


def _agent_call(agent: Any, task: Task) -> Call:
    """Ask a LangChain ``create_agent`` graph; streamed with ``stream_mode="messages"``, the
    documented way to stream an agent's LLM tokens (the text is every token the caller saw)."""
    async def call(question: str) -> str:
        state = {"messages": [HumanMessage(content=question)]}
        if task == "stream":
            parts = []
            async for chunk, meta in agent.astream(state, stream_mode="messages"):
                if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == "model":
                    parts.append(_text(chunk))
            return "".join(parts)
        result = await agent.ainvoke(state)
        return _text(result["messages"][-1])

    return call


def _manual_tool_loop(model: Any) -> Call:
    """The tool loop LangChain's tool-calling docs show, for a Runnable with tools bound: call,
    run every tool call, send the results back, until the model answers in text."""
    async def call(question: str) -> str:
        messages: list[BaseMessage] = [HumanMessage(content=question)]
        reply: AIMessage | None = None
        for _ in range(MAX_TOOL_ROUNDS):
            reply = await model.ainvoke(messages)
            assert isinstance(reply, AIMessage)
            messages.append(reply)
            if not reply.tool_calls:
                return _text(reply)
            for tc in reply.tool_calls:
                messages.append(ToolMessage(content=_run_tool(tc["name"], tc["args"]),
                                            tool_call_id=tc["id"] or ""))
        return _text(reply) if reply is not None else ""

    return call


def _create_agent(model: Any, middleware: list[Any] | None = None) -> Any:
    from langchain.agents import create_agent

    return create_agent(model=model, tools=TOOLS, middleware=middleware or [])


# --- the contenders -------------------------------------------------------------------------------

def _raw(ends: Endpoints, task: Task) -> Contender:
    # ChatOpenAI as its docs show it (SDK retries left at their default); the baseline.
    model = _openai(ends.healthy, timeout=REQUEST_TIMEOUT_S)
    call = _create_agent(model) if task == "tools" else model
    return Contender(
        name="raw", tag=f"ChatOpenAI defaults, timeout {REQUEST_TIMEOUT_S:g}s",
        settings={"client": "ChatOpenAI", "provider": "a healthy one (no failover)",
                  "max_retries": "SDK default (2)", "timeout_s": REQUEST_TIMEOUT_S,
                  "tools_task": "create_agent(model, tools)"},
        docs=[LANGCHAIN_TIMEOUT_DOC, LANGCHAIN_TOOLS_DOC],
        call=_agent_call(call, task) if task == "tools" else _model_call(call, task),
    )


def _langchain_fallbacks(ends: Endpoints, task: Task) -> Contender:
    # LangChain's "Fallback for LLM API Errors" recipe: the primary's retries off ("Otherwise
    # the first wrapper will keep on retrying and not failing"), the fallback as the page shows
    # it (default retries); both with the support article's timeout.
    primary = _openai(ends.primary, max_retries=0, timeout=REQUEST_TIMEOUT_S)
    secondary = _openai(ends.secondary, timeout=REQUEST_TIMEOUT_S)
    if task == "tools":  # tools bound on both sides, then the fallbacks, as the docs show
        chain = primary.bind_tools(TOOLS).with_fallbacks([secondary.bind_tools(TOOLS)])
        call = _manual_tool_loop(chain)
    else:
        call = _model_call(primary.with_fallbacks([secondary]), task)
    return Contender(
        name="langchain_fallbacks",
        tag=f"p(max_retries=0).with_fallbacks([s]) t={REQUEST_TIMEOUT_S:g}s",
        settings={"recipe": "primary.with_fallbacks([secondary])",
                  "primary": {"max_retries": 0, "timeout_s": REQUEST_TIMEOUT_S},
                  "secondary": {"max_retries": "SDK default (2)", "timeout_s": REQUEST_TIMEOUT_S},
                  "tools_task": "primary.bind_tools(tools).with_fallbacks("
                                "[secondary.bind_tools(tools)]) in a manual tool loop"},
        docs=[LANGCHAIN_FALLBACKS_DOC, LANGCHAIN_TIMEOUT_DOC, LANGCHAIN_TOOLS_DOC],
        call=call,
    )


def _langchain_agent_mw(ends: Endpoints, task: Task) -> Contender:
    from langchain.agents.middleware import ModelFallbackMiddleware, ModelRetryMiddleware

    # As the built-in middleware page's example shows it; the arguments it leaves out keep
    # their documented defaults (max_delay 60 s, jitter, retry_on: retryable model errors and
    # unclassified exceptions, on_failure "continue": an AIMessage saying that it failed).
    retry = ModelRetryMiddleware(max_retries=3, backoff_factor=2.0, initial_delay=1.0)
    # The primary's SDK retries off for the same reason as in the fallbacks recipe: the
    # middleware retries, and the fallback must be reached.
    primary = _openai(ends.primary, max_retries=0, timeout=REQUEST_TIMEOUT_S)
    secondary = _openai(ends.secondary, timeout=REQUEST_TIMEOUT_S)
    # Retry outermost: every retry tries the primary, then the fallback.
    agent = _create_agent(primary, [retry, ModelFallbackMiddleware(secondary)])
    return Contender(
        name="langchain_agent_mw",
        tag=f"agent+ModelRetry(3,x2,1s)+ModelFallback t={REQUEST_TIMEOUT_S:g}s",
        settings={"recipe": "create_agent(model=primary, tools=[order_status], middleware="
                            "[ModelRetryMiddleware(...), ModelFallbackMiddleware(secondary)])",
                  "ModelRetryMiddleware": {"max_retries": retry.max_retries,
                                           "backoff_factor": retry.backoff_factor,
                                           "initial_delay": retry.initial_delay,
                                           "max_delay": retry.max_delay,
                                           "jitter": retry.jitter,
                                           "on_failure": retry.on_failure,
                                           "retry_on": "default (retryable model errors and "
                                                       "unclassified exceptions)"},
                  "primary": {"max_retries": 0, "timeout_s": REQUEST_TIMEOUT_S},
                  "secondary": {"max_retries": "SDK default (2)", "timeout_s": REQUEST_TIMEOUT_S},
                  "streaming": 'agent.astream(..., stream_mode="messages"), model tokens joined',
                  "chat_tasks": "the same agent (it answers a question without a tool call)"},
        docs=[f"{LANGCHAIN_MIDDLEWARE_DOC}#model-retry",
              f"{LANGCHAIN_MIDDLEWARE_DOC}#model-fallback",
              "langchain/agents/middleware/model_retry.py (docstring, defaults)",
              LANGCHAIN_FALLBACKS_DOC, LANGCHAIN_STREAMING_DOC],
        call=_agent_call(agent, task),
    )


# LiteLLM Router: one model group holding both deployments, the primary first by ``order``
# (docs: routing#deployment-ordering-priority; "order fallbacks" on the reliability page: a
# failing order-1 deployment sends the request to order 2, and a cooled-down deployment is not
# picked).  num_retries 2 as on the configuration page (also the documented default);
# allowed_fails 3 / cooldown_time 30 s as on the reliability page's example; the shared timeout.
# RetryPolicy / AllowedFailsPolicy are shown as optional per-error tuning, with no recommended
# values, so they are not set.  Mid-stream recovery is off by default and documented in the
# Router's docstring (enable_mid_stream_fallback_continuation): it continues a cut stream on a
# deployment whose model takes an assistant prefill, which LiteLLM reads from
# model_info.supports_assistant_prefill; the simulator's OpenAI API does take one, but its model
# name is not in LiteLLM's model map, so the deployments declare it.
LITELLM_ROUTER = {"num_retries": 2, "allowed_fails": 3, "cooldown_time": 30.0,
                  "timeout": REQUEST_TIMEOUT_S, "enable_mid_stream_fallback_continuation": True}
LITELLM_GROUP = "chat"


def _litellm_deployment(url: str, order: int) -> dict[str, Any]:
    return {"model_name": LITELLM_GROUP,
            "litellm_params": {"model": f"openai/{MODEL}", "api_base": url + "/v1",
                               "api_key": API_KEY, "order": order},
            "model_info": {"supports_assistant_prefill": True}}


def _litellm_router(ends: Endpoints, task: Task) -> Contender:
    settings = {"model_list": [
        {"model_name": LITELLM_GROUP, "deployment": name, "order": order,
         "model": f"openai/{MODEL}", "model_info": {"supports_assistant_prefill": True}}
        for name, order in (("primary", 1), ("secondary", 2))],
        **LITELLM_ROUTER, "routing_strategy": "simple-shuffle (default; one deployment per order)",
        "streaming": "router.acompletion(..., stream=True)",
        "tools_task": "router.acompletion(..., tools=[order_status]) in a manual tool loop"}
    docs = [LITELLM_RELIABILITY_DOC, LITELLM_ORDER_DOC, LITELLM_CONFIG_DOC,
            LITELLM_PROXY_RELIABILITY_DOC, LITELLM_TIMEOUT_DOC, LITELLM_TOOLS_DOC,
            "litellm Router.__init__ docstring (enable_mid_stream_fallback_continuation)"]
    tag = "order 1/2 retries 2 fails 3 cool 30s midstream"
    try:  # a comparison only, never a dependency: typed loosely on purpose
        litellm: Any = importlib.import_module("litellm")
    except ImportError:
        return Contender("litellm_router", tag, settings, docs, call=None)
    litellm.suppress_debug_info = True
    router = litellm.Router(
        model_list=[_litellm_deployment(ends.primary, 1), _litellm_deployment(ends.secondary, 2)],
        **LITELLM_ROUTER,
    )
    settings["version"] = getattr(litellm, "__version__", None) or _dist_version("litellm")
    openai_tools = [convert_to_openai_tool(t) for t in TOOLS]

    async def call(question: str) -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
        if task == "stream":
            parts = []
            stream = await router.acompletion(model=LITELLM_GROUP, messages=messages,
                                              stream=True)
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
            return "".join(parts)
        if task == "chat":
            resp = await router.acompletion(model=LITELLM_GROUP, messages=messages)
            return str(resp.choices[0].message.content or "")
        text = ""
        for _ in range(MAX_TOOL_ROUNDS):
            resp = await router.acompletion(model=LITELLM_GROUP, messages=messages,
                                            tools=openai_tools)
            message = resp.choices[0].message
            text = str(message.content or "")
            if not message.tool_calls:
                return text
            messages.append({"role": "assistant", "content": message.content, "tool_calls": [
                {"id": tc.id, "type": "function",
                 "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
                for tc in message.tool_calls]})
            for tc in message.tool_calls:
                messages.append({"role": "tool", "tool_call_id": tc.id, "content": _run_tool(
                    tc.function.name, json.loads(tc.function.arguments or "{}"))})
        return text

    return Contender("litellm_router", tag, settings, docs, call=call, close=router.retire)


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _plain(value: Any) -> Any:
    """A settings value as JSON: dataclasses as dicts, functions by name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(value):
        return getattr(value, "__qualname__", repr(value))
    return value


def _langchain_ha(ends: Endpoints, task: Task, name: str = "langchain_ha",
                  **settings: Any) -> Contender:
    from langchain_ha import Provider, ResilientChatModel

    # Our README: give the inner clients max_retries=0; everything else is the defaults.
    model = ResilientChatModel(providers=[
        Provider(name="primary", model=_openai(ends.primary, max_retries=0)),
        Provider(name="secondary", model=_openai(ends.secondary, max_retries=0)),
    ], **settings)
    shown = {f: _plain(getattr(model, f)) for f in (
        "attempt_timeout_s", "deadline_s", "stream_idle_timeout_s", "stream_failover",
        "retry", "breaker", "hedge")}
    return Contender(
        name=name,
        tag="ResilientChatModel defaults but hedge off" if settings
        else "ResilientChatModel defaults, inner retries 0",
        settings={"providers": ["primary (max_retries=0)", "secondary (max_retries=0)"],
                  "overrides": {k: _plain(v) for k, v in settings.items()}, **shown,
                  "tools_task": "create_agent(model=router, tools)"},
        docs=[OURS_DOC],
        call=_agent_call(_create_agent(model), task) if task == "tools"
        else _model_call(model, task),
    )


def _langchain_ha_nohedge(ends: Endpoints, task: Task) -> Contender:
    from langchain_ha import HedgePolicy

    return _langchain_ha(ends, task, "langchain_ha_nohedge", hedge=HedgePolicy(enabled=False))


CONTENDERS: dict[str, Callable[[Endpoints, Task], Contender]] = {
    "raw": _raw,
    "langchain_fallbacks": _langchain_fallbacks,
    "langchain_agent_mw": _langchain_agent_mw,
    "litellm_router": _litellm_router,
    "langchain_ha": _langchain_ha,
    "langchain_ha_nohedge": _langchain_ha_nohedge,
}
PEERS = ("langchain_fallbacks", "langchain_agent_mw", "litellm_router")
OURS = ("langchain_ha", "langchain_ha_nohedge")


def build_contender(name: str, ends: Endpoints, task: Task) -> Contender:
    """A fresh, cold ``name`` for ``task`` (``call`` is None if its library is not installed)."""
    return CONTENDERS[name](ends, task)

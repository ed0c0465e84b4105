"""The contenders of ``lcha bench router``, each built fresh (cold) for every run.

Each contender is an async function ``question -> answer text``.  All talk to the same two
simulators over HTTP with real clients; only the resilience layer differs.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

Call = Callable[[str], Awaitable[str]]
API_KEY = "bench-key"
REQUEST_TIMEOUT_S = 10.0  # "a sensible request timeout" for the recipes that need one


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


def _openai(url: str, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=url + "/v1", api_key=API_KEY, model="sim-chat",  # type: ignore[arg-type]
                      **kw)


def _langchain_call(model: Any, streaming: bool) -> Call:
    async def call(question: str) -> str:
        messages = [HumanMessage(content=question)]
        if streaming:
            return "".join([str(c.content) async for c in model.astream(messages)])
        return str((await model.ainvoke(messages)).content)

    return call


def _raw(ends: Endpoints, streaming: bool) -> Call:
    return _langchain_call(_openai(ends.healthy, max_retries=0, timeout=REQUEST_TIMEOUT_S),
                           streaming)


def _langchain_fallbacks(ends: Endpoints, streaming: bool) -> Call:
    primary = _openai(ends.primary, max_retries=2, timeout=REQUEST_TIMEOUT_S).with_retry()
    secondary = _openai(ends.secondary, max_retries=2, timeout=REQUEST_TIMEOUT_S).with_retry()
    return _langchain_call(primary.with_fallbacks([secondary]), streaming)


def _langchain_ha(ends: Endpoints, streaming: bool, **settings: Any) -> Call:
    from langchain_ha.resilience.chat import Provider, ResilientChatModel

    model = ResilientChatModel(providers=[
        Provider(name="primary", model=_openai(ends.primary, max_retries=0)),
        Provider(name="secondary", model=_openai(ends.secondary, max_retries=0)),
    ], **settings)
    return _langchain_call(model, streaming)


def _langchain_ha_nohedge(ends: Endpoints, streaming: bool) -> Call:
    from langchain_ha.resilience.hedging import HedgePolicy

    return _langchain_ha(ends, streaming, hedge=HedgePolicy(enabled=False))


def _litellm_router(ends: Endpoints, streaming: bool) -> Call | None:
    try:  # a comparison only, never a dependency: typed loosely on purpose
        litellm: Any = importlib.import_module("litellm")
    except ImportError:
        return None
    litellm.suppress_debug_info = True
    router = litellm.Router(
        model_list=[
            {"model_name": "primary", "litellm_params": {
                "model": "openai/sim-chat", "api_base": ends.primary + "/v1", "api_key": API_KEY}},
            {"model_name": "secondary", "litellm_params": {
                "model": "openai/sim-chat", "api_base": ends.secondary + "/v1",
                "api_key": API_KEY}},
        ],
        fallbacks=[{"primary": ["secondary"]}],
        timeout=REQUEST_TIMEOUT_S,
    )

    async def call(question: str) -> str:
        messages = [{"role": "user", "content": question}]
        if streaming:
            parts = []
            stream = await router.acompletion(model="primary", messages=messages, stream=True)
            async for chunk in stream:
                parts.append(chunk.choices[0].delta.content or "")
            return "".join(parts)
        resp = await router.acompletion(model="primary", messages=messages)
        return str(resp.choices[0].message.content)

    return call


CONTENDERS: dict[str, Callable[[Endpoints, bool], Call | None]] = {
    "raw": _raw,
    "langchain_fallbacks": _langchain_fallbacks,
    "litellm_router": _litellm_router,
    "langchain_ha": _langchain_ha,
    "langchain_ha_nohedge": _langchain_ha_nohedge,
}


def build_contender(name: str, ends: Endpoints, *, streaming: bool) -> Call | None:
    """A fresh client for ``name``, or None if its library is not installed."""
    return CONTENDERS[name](ends, streaming)

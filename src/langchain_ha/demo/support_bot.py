"""The demo app: a customer-support RAG bot that degrades instead of failing.

Retrieval over the shipped FAQ corpus (vector search through the embeddings provider; word
overlap when that provider is down, recorded as ``embeddings``; nothing at all, recorded as
``retrieval``, when retrieval itself fails), an order-status tool (``tool:order_status`` when
its API fails), chat memory per ``session_id`` and caller (appends once per request key;
``history:read`` when the history store cannot be read, so the answer lacked the earlier
turns, ``history:write`` when this turn could not be saved), and a
:class:`ResilientChatModel` over the deployment's providers (``router_from_env``'s entries,
``LCHA_PROVIDERS``) and a local extractive model last (``primary_llm`` when a fallback
answered).

With ``LCHA_DB_WRITER`` set, vectors and chat history live in the HA PostgreSQL cluster
(:mod:`langchain_ha.demo.pg_backend`), the providers' circuit breakers are shared by every
replica through it (one replica's trip keeps the others off a failing provider), and so is
the LLM cache (``LCHA_LLM_CACHE_TTL_S``, 300 s; a question asked again with the same
documents and history is answered from it, by every replica, also while the providers are
out; ``lcha_llm_cache_lookups_total`` counts hits and misses); otherwise all of it is in
memory, per replica, without a cache.

Served with ``lcha serve langchain_ha.demo.support_bot:bot``; settings from ``LCHA_*``
variables (simulators by default, so no API keys are needed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, runtime_checkable

import httpx
from langchain_core.chat_history import BaseChatMessageHistory, InMemoryChatMessageHistory
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import OpenAIEmbeddings

from langchain_ha._context import caller_scoped, current_caller, current_request_key
from langchain_ha._sync import run_sync
from langchain_ha._usage import InvalidInput
from langchain_ha.demo.corpus import CorpusRetriever, load_corpus
from langchain_ha.demo.local_model import LocalExtractiveModel
from langchain_ha.deployment import PROVIDERS_ENV, SIM_KEY, AppEnvironment, ProviderEntry
from langchain_ha.providers import ORDER_ID
from langchain_ha.resilience.breaker import BreakerConfig, CircuitBreaker
from langchain_ha.resilience.chat import Provider, ResilientChatModel
from langchain_ha.resilience.continuation import RESTART_KEY, is_restart
from langchain_ha.resilience.degrade import (
    ResilientRetriever,
    Unavailable,
    degradation_scope,
    guarded,
    record_degraded,
    resilient_tool,
)
from langchain_ha.resilience.prometheus import PrometheusEvents

log = logging.getLogger("langchain_ha.demo")
_CITED = re.compile(r"\[doc:([A-Za-z0-9_.-]+)\]")
SYSTEM = ("You are the support assistant of Northwind Cloud Storage. Answer from the documents "
          "below and cite the one you used by its doc marker.\n")
EMBED_DIMENSIONS = 256
_SEEN_MAX = 10_000
MAX_SESSION_ID = 200
WARM_QUESTIONS = ("How do I reset my password?", "Where is my order AB-1234?",
                  "How many family members can share the Family plan?")


@dataclass(frozen=True)
class BotSettings:
    """Where the bot's providers, tools, embeddings and (optionally) database are."""

    providers: tuple[ProviderEntry, ...]
    """The deployment's providers in priority order (the local extractive model comes last)."""
    tools_url: str
    embeddings_url: str
    embeddings_key: str = "sim-key"
    top_k: int = 3
    db_writer: str | None = None
    """libpq conninfo of the cluster's writer side; None keeps everything in memory."""
    db_reader: str | None = None
    collection: str = "support_faq"
    llm_cache_ttl_s: float = 300.0
    """How long a cached answer stays fresh in the database's LLM cache (0: no cache)."""

    @classmethod
    def simulated(cls, primary_url: str, secondary_url: str, **settings: Any) -> BotSettings:
        """The demo topology's two providers as simulators (``primary`` of the OpenAI kind,
        ``secondary`` of the Anthropic kind); the tool API and embeddings at the primary."""
        app = sim_environment(primary_url, secondary_url)
        return cls(providers=tuple(app.providers), tools_url=str(app.tools_url),
                   embeddings_url=str(app.embeddings_url), **settings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        """What the deployment set (:class:`~langchain_ha.deployment.AppEnvironment`:
        ``LCHA_PROVIDERS``, ``LCHA_TOOLS_URL``, ``LCHA_EMBEDDINGS_URL``, ``LCHA_DB_WRITER``,
        ``LCHA_DB_READER``); ``LCHA_EMBEDDINGS_API_KEY`` (default: the simulator's) and
        ``LCHA_LLM_CACHE_TTL_S``.  A :class:`ValueError` names what is missing."""
        env = os.environ if env is None else env
        app = AppEnvironment.from_env(env)
        # A simulator serves the tool API and the embeddings too (lcha up points both at the
        # first one; a hand-made LCHA_PROVIDERS may leave them out).
        sim = next((e.sim_root for e in app.providers if e.sim_root), None)
        tools_url, embeddings_url = app.tools_url or sim, app.embeddings_url or sim
        missing = [n for n, v in ((PROVIDERS_ENV, app.providers), ("LCHA_TOOLS_URL", tools_url),
                                  ("LCHA_EMBEDDINGS_URL", embeddings_url)) if not v]
        if missing:
            raise ValueError(f"set {', '.join(missing)} (lcha up and the Kubernetes manifests "
                             "set them; langchain_ha.demo.support_bot.sim_env builds them for "
                             "two simulators)")
        return cls(
            providers=tuple(app.providers), tools_url=str(tools_url),
            embeddings_url=str(embeddings_url),
            embeddings_key=env.get("LCHA_EMBEDDINGS_API_KEY", SIM_KEY),
            db_writer=app.db_writer, db_reader=app.db_reader,
            llm_cache_ttl_s=_seconds(env, "LCHA_LLM_CACHE_TTL_S", 300.0),
        )


def sim_env(primary_url: str, secondary_url: str) -> dict[str, str]:
    """The environment ``lcha up`` gives the bot for two simulators (``lcha sim``), for
    serving it by hand (:func:`sim_environment` as variables)."""
    return sim_environment(primary_url, secondary_url).to_env()


def sim_environment(primary_url: str, secondary_url: str) -> AppEnvironment:
    """Two simulators as the demo topology's providers: ``primary`` (OpenAI kind),
    ``secondary`` (Anthropic kind), the tool API and the embeddings at the primary."""
    primary, secondary = primary_url.rstrip("/"), secondary_url.rstrip("/")
    return AppEnvironment(providers=[
        ProviderEntry(name="primary", kind="openai", model="sim-chat",
                      base_url=primary + "/v1", simulated=True),
        ProviderEntry(name="secondary", kind="anthropic", model="sim-claude",
                      base_url=secondary, simulated=True),
    ], tools_url=primary, embeddings_url=primary)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ValueError(f"{name}={raw!r}: seconds, a number >= 0 (0 turns it off)")
    return value


def order_status_tool(tools_url: str) -> BaseTool:
    """The order-status tool, calling the order API (the simulator's tool API in the demo)."""

    clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    async def order_status(order_id: str) -> str:
        """Look up the shipping status of an order by its id (e.g. AB-1234)."""
        # One client per loop: a new client per call builds an SSL context (~10 ms of CPU).
        loop = asyncio.get_running_loop()
        client = clients.get(loop)
        if client is None:
            client = clients[loop] = httpx.AsyncClient(timeout=3.0)
        resp = await client.get(f"{tools_url}/tools/order_status/{order_id}")
        resp.raise_for_status()
        return resp.text

    return StructuredTool.from_function(coroutine=order_status, name="order_status")


HistoryFactory = Callable[[str], BaseChatMessageHistory]
HISTORY_MESSAGES = 6
"""The earlier messages a prompt carries (the last three turns)."""


@runtime_checkable
class _LastMessages(Protocol):
    """A history that can read its last ``n`` messages alone
    (:meth:`~langchain_ha.store.history.PgChatMessageHistory.aget_last`)."""

    async def aget_last(self, n: int) -> list[BaseMessage]: ...


class SupportBot(Runnable[Any, dict[str, Any]]):
    """``{"question", "session_id"}`` (or a plain question) → ``{"answer", "sources", ...}``.

    A session belongs to its caller: served by ``lcha serve``, the history key is the
    caller's id (:func:`langchain_ha._context.current_caller`, derived from the API key)
    plus the client's ``session_id``, so a client that sends another's ``session_id`` gets a
    session of its own, not theirs.

    ``history`` makes the chat history of a session (default: in memory); ``prepare`` runs
    before each answer (e.g. opening database pools on the serving loop; it must be cheap once
    done).  History reads and writes run under their own breaker and timeout: when the store
    cannot serve them the bot answers without memory and records ``history:read`` (the answer
    lacked the earlier turns) or ``history:write`` (the turn was not saved), so a client knows
    which.
    """

    def __init__(self, model: ResilientChatModel, retriever: BaseRetriever,
                 tool: BaseTool, history: HistoryFactory | None = None, *,
                 prepare: Callable[[], Awaitable[None]] | None = None,
                 close: Callable[[], Awaitable[None]] | None = None,
                 history_timeout_s: float = 2.0) -> None:
        self.model = model
        self.retriever = retriever
        self.tool = tool
        self.prepare = prepare
        self._close = close
        self.history_timeout_s = history_timeout_s
        self.history_breaker = CircuitBreaker("history", BreakerConfig(cold_probes=3))
        self._memory: dict[str, InMemoryChatMessageHistory] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.history: HistoryFactory = history or self._in_memory

    async def awarm(self) -> None:
        """Open the pools and answer a few questions end to end (``lcha serve`` runs this
        before the replica reports ready); failures are fine, the replica serves anyway."""
        if self.prepare is not None:
            await self.prepare()
        with degradation_scope():
            for i, question in enumerate(WARM_QUESTIONS):
                await self.ainvoke({"question": question, "session_id": f"lcha-warm-{i}"})
                async for _ in self.astream({"question": question}):
                    pass

    async def aclose(self) -> None:
        """Release what ``prepare`` opened (database pools)."""
        if self._close is not None:
            await self._close()

    def _in_memory(self, session_id: str) -> BaseChatMessageHistory:
        return self._memory.setdefault(session_id, InMemoryChatMessageHistory())

    @property
    def breakers(self) -> dict[str, Any]:
        """The LLM providers' breakers (what ``/health`` and ``/admin/breakers`` show)."""
        return self.model.breakers

    def invoke(self, input: Any, config: RunnableConfig | None = None,
               **kwargs: Any) -> dict[str, Any]:
        return run_sync(self.ainvoke(input, config))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> dict[str, Any]:
        question, session_id = _parse(input)
        history, docs, messages = await self._prompt(question, session_id, config)
        reply = await self._answer(messages, question, config)
        answer = reply.text
        if history is not None:
            await self._remember(history, session_id or "", question, answer)
        cited = _CITED.findall(answer)
        return {"answer": answer, "sources": cited or [str(d.id) for d in docs],
                "provider": reply.response_metadata.get("lcha", {}).get("provider"),
                "session_id": session_id}

    async def astream(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        """``{"delta": text}`` chunks as the model writes, then the full answer (as from
        :meth:`ainvoke`).  A provider whose stream dies mid-way is continued by the next one
        (the router's streaming failover); where the consumer accepts restarts and the next
        provider restarted the answer, a ``{RESTART_KEY: ...}`` chunk says to discard the
        deltas so far.  Order questions (a tool round trip) come whole."""
        question, session_id = _parse(input)
        if ORDER_ID.search(question):
            yield await self.ainvoke(input, config)
            return
        history, docs, messages = await self._prompt(question, session_id, config)
        parts: list[str] = []
        provider = None
        async for chunk in self.model.astream(messages, config):
            if is_restart(chunk):  # the answer starts over: so do we, and we say so
                parts.clear()
                yield {RESTART_KEY: chunk.response_metadata[RESTART_KEY]}
                continue
            text = chunk.text
            if text:
                parts.append(text)
                yield {"delta": text}
            provider = chunk.response_metadata.get("lcha", {}).get("provider") or provider
        answer = "".join(parts)
        if history is not None:
            await self._remember(history, session_id or "", question, answer)
        cited = _CITED.findall(answer)
        yield {"answer": answer, "sources": cited or [str(d.id) for d in docs],
               "provider": provider, "session_id": session_id}

    async def _prompt(self, question: str, session_id: str | None, config: RunnableConfig | None,
                      ) -> tuple[BaseChatMessageHistory | None, list[Document], list[BaseMessage]]:
        """The session's history, the retrieved documents and the messages for the model."""
        if self.prepare is not None:
            await self.prepare()
        history = self.history(_session_key(session_id)) if session_id else None
        past = await self._recall(history) if history is not None else []
        docs = await self.retriever.ainvoke(question, config)
        context = "\n".join(f"[doc:{d.id}] {d.page_content}" for d in docs)
        messages: list[BaseMessage] = [SystemMessage(content=SYSTEM + context), *past,
                                       HumanMessage(content=question)]
        return history, docs, messages

    async def _answer(self, messages: list[BaseMessage], question: str,
                      config: RunnableConfig | None) -> AIMessage:
        if not ORDER_ID.search(question):
            return await self.model.ainvoke(messages, config)
        with_tools = self.model.bind_tools([self.tool])
        first = await with_tools.ainvoke(messages, config)
        if not first.tool_calls:
            return first
        observation = await self.tool.ainvoke(first.tool_calls[0], config)
        return await with_tools.ainvoke([*messages, first, observation], config)

    async def _recall(self, history: BaseChatMessageHistory) -> list[BaseMessage]:
        try:
            # Only the turns the prompt uses are read: a long session must not cost more.
            read = (partial(history.aget_last, HISTORY_MESSAGES)
                    if isinstance(history, _LastMessages) else history.aget_messages)
            past = await guarded(self.history_breaker, self.history_timeout_s, read)
        except Unavailable as exc:
            log.warning("chat history unreadable (%s): answering without it", exc.reason)
            record_degraded("history:read")
            return []
        return past[-HISTORY_MESSAGES:]

    async def _remember(self, history: BaseChatMessageHistory, session_id: str,
                        question: str, answer: str) -> None:
        key = current_request_key()
        session_id = _session_key(session_id)
        if key is not None:
            if (session_id, key) in self._seen:
                return  # a retried request: its turn is already in the history
            self._seen[(session_id, key)] = None
            if len(self._seen) > _SEEN_MAX:
                self._seen.popitem(last=False)
        turn = [HumanMessage(content=question), AIMessage(content=answer)]
        try:
            await guarded(self.history_breaker, self.history_timeout_s,
                          lambda: history.aadd_messages(turn))
        except Unavailable as exc:
            self._seen.pop((session_id, key or ""), None)  # a retry may still save it
            log.warning("chat history not saved (%s)", exc.reason)
            record_degraded("history:write")


def _session_key(session_id: str) -> str:
    """Where a session's history is kept: under the caller's id when there is a caller."""
    return caller_scoped(session_id, current_caller())


def _parse(value: Any) -> tuple[str, str | None]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and isinstance(value.get("question"), str):
        session = value.get("session_id")
        session_id = str(session) if session else None
        if session_id is not None and len(session_id) > MAX_SESSION_ID:
            raise InvalidInput(f"session_id: at most {MAX_SESSION_ID} characters")
        return value["question"], session_id
    raise InvalidInput("input must be a question string or {'question': str, 'session_id': str}")


def build_support_bot(settings: BotSettings, history: HistoryFactory | None = None,
                      retriever: BaseRetriever | None = None) -> SupportBot:
    """The support bot over the given providers (the simulators in the demo).

    ``history`` and ``retriever`` replace the defaults: chat history in memory (or in the
    database with ``settings.db_writer``) and vector search over the shipped corpus, which the
    bot wraps in a :class:`ResilientRetriever` either way.
    """
    events = PrometheusEvents()
    embeddings = OpenAIEmbeddings(
        base_url=settings.embeddings_url + "/v1", api_key=settings.embeddings_key,  # type: ignore[arg-type]
        model="sim-embed", check_embedding_ctx_length=False, dimensions=EMBED_DIMENSIONS,
        max_retries=0)
    backend = None
    if settings.db_writer:
        from langchain_ha.demo.pg_backend import PgBackend

        backend = PgBackend(settings.db_writer, settings.db_reader, embeddings,
                            dimensions=EMBED_DIMENSIONS, collection=settings.collection)
    model = ResilientChatModel(
        providers=[*(entry.provider() for entry in settings.providers),
                   Provider(name="local", model=LocalExtractiveModel())],
        events=events, breaker_store=backend.breakers if backend is not None else None,
        cache=(backend.cache(settings.llm_cache_ttl_s, events)
               if backend is not None and settings.llm_cache_ttl_s > 0 else None))
    prepare = close = None
    if backend is not None:
        prepare, close = backend.open, backend.close
        history = history or backend.history
        inner = retriever or backend.retriever(load_corpus(), k=settings.top_k)
    else:
        inner = retriever or CorpusRetriever(
            store=InMemoryVectorStore(embeddings), docs=load_corpus(), k=settings.top_k)
    wrapped = ResilientRetriever(retriever=inner, observe=events.on_retrieval)
    tool = resilient_tool(order_status_tool(settings.tools_url))
    return SupportBot(model, wrapped, tool, history, prepare=prepare, close=close)


def bot() -> SupportBot:
    """Factory used by ``lcha serve langchain_ha.demo.support_bot:bot`` (settings from the
    deployment's environment, :meth:`BotSettings.from_env`)."""
    return build_support_bot(BotSettings.from_env())

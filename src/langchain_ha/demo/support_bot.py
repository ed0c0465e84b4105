"""The demo app: a customer-support RAG bot that degrades instead of failing.

Retrieval over the shipped FAQ corpus (vector search through the embeddings provider; word
overlap when that provider is down, recorded as ``embeddings``; nothing at all, recorded as
``retrieval``, when retrieval itself fails), an order-status tool (``tool:order_status`` when
its API fails), chat memory per ``session_id`` (appends once per request key), and a
:class:`ResilientChatModel` over two providers and a local extractive model.

Served with ``lcha serve langchain_ha.demo.support_bot:bot``; settings from ``LCHA_*``
variables (simulators by default, so no API keys are needed).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from langchain_anthropic import ChatAnthropic
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.chat_history import BaseChatMessageHistory, InMemoryChatMessageHistory
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import PrivateAttr

from langchain_ha._context import current_request_key
from langchain_ha._usage import InvalidInput
from langchain_ha.demo.corpus import KeywordRetriever, load_corpus
from langchain_ha.demo.local_model import LocalExtractiveModel
from langchain_ha.providers._answers import ORDER_ID
from langchain_ha.resilience._sync import run_sync
from langchain_ha.resilience.chat import Provider, ResilientChatModel
from langchain_ha.resilience.degrade import ResilientRetriever, record_degraded, resilient_tool
from langchain_ha.resilience.prometheus import PrometheusEvents

log = logging.getLogger("langchain_ha.demo")
_CITED = re.compile(r"\[doc:([A-Za-z0-9_.-]+)\]")
SYSTEM = ("You are the support assistant of Northwind Cloud Storage. Answer from the documents "
          "below and cite the one you used by its doc marker.\n")


@dataclass(frozen=True)
class BotSettings:
    """Where the bot's providers and tools are (simulators in the demo)."""

    primary_url: str
    secondary_url: str
    tools_url: str
    embeddings_url: str
    primary_key: str = "sim-key"
    secondary_key: str = "sim-key"
    embeddings_key: str = "sim-key"
    top_k: int = 3

    @classmethod
    def from_env(cls) -> BotSettings:
        """Read ``LCHA_PRIMARY_URL`` etc.; keys from ``LCHA_*_API_KEY`` (default: sim key)."""
        env = os.environ
        missing = [n for n in ("LCHA_PRIMARY_URL", "LCHA_SECONDARY_URL") if not env.get(n)]
        if missing:
            raise ValueError(f"set {', '.join(missing)} (the providers' base URLs)")
        primary = env["LCHA_PRIMARY_URL"]
        return cls(
            primary_url=primary, secondary_url=env["LCHA_SECONDARY_URL"],
            tools_url=env.get("LCHA_TOOLS_URL", primary),
            embeddings_url=env.get("LCHA_EMBEDDINGS_URL", primary),
            primary_key=env.get("LCHA_PRIMARY_API_KEY", "sim-key"),
            secondary_key=env.get("LCHA_SECONDARY_API_KEY", "sim-key"),
            embeddings_key=env.get("LCHA_EMBEDDINGS_API_KEY", "sim-key"),
        )


class CorpusRetriever(BaseRetriever):
    """Vector search over the corpus; word overlap (``embeddings`` degraded) if it fails."""

    embeddings: Embeddings
    docs: tuple[Document, ...]
    k: int = 3
    _store: InMemoryVectorStore | None = PrivateAttr(default=None)
    _retry_at: float = PrivateAttr(default=0.0)

    async def _index(self) -> InMemoryVectorStore | None:
        if self._store is None and time.monotonic() >= self._retry_at:
            store = InMemoryVectorStore(self.embeddings)
            try:
                await store.aadd_documents(list(self.docs))
            except Exception as exc:
                self._retry_at = time.monotonic() + 10.0
                log.warning("cannot index the corpus yet (%s); keyword search meanwhile",
                            type(exc).__name__)
                return None
            self._store = store
        return self._store

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        store = await self._index()
        if store is not None:
            try:
                return await store.asimilarity_search(query, k=self.k)
            except Exception as exc:
                log.warning("vector search failed (%s): keyword search", type(exc).__name__)
        record_degraded("embeddings")
        return KeywordRetriever(docs=self.docs, k=self.k).invoke(query)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return run_sync(self._aget_relevant_documents(query, run_manager=None))  # type: ignore[arg-type]


def order_status_tool(tools_url: str) -> BaseTool:
    """The order-status tool, calling the order API (the simulator's tool API in the demo)."""

    async def order_status(order_id: str) -> str:
        """Look up the shipping status of an order by its id (e.g. AB-1234)."""
        async with httpx.AsyncClient(timeout=3.0) as client:
            resp = await client.get(f"{tools_url}/tools/order_status/{order_id}")
            resp.raise_for_status()
            return resp.text

    return StructuredTool.from_function(coroutine=order_status, name="order_status")


HistoryFactory = Callable[[str], BaseChatMessageHistory]


class SupportBot(Runnable[Any, dict[str, Any]]):
    """``{"question", "session_id"}`` (or a plain question) → ``{"answer", "sources", ...}``."""

    def __init__(self, model: ResilientChatModel, retriever: ResilientRetriever,
                 tool: BaseTool, history: HistoryFactory | None = None) -> None:
        self.model = model
        self.retriever = retriever
        self.tool = tool
        self._memory: dict[str, InMemoryChatMessageHistory] = {}
        self._seen: set[tuple[str, str]] = set()
        self.history: HistoryFactory = history or self._in_memory

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
        history = self.history(session_id) if session_id else None
        past = (await history.aget_messages())[-6:] if history is not None else []
        docs = await self.retriever.ainvoke(question)
        context = "\n".join(f"[doc:{d.id}] {d.page_content}" for d in docs)
        messages: list[BaseMessage] = [SystemMessage(content=SYSTEM + context), *past,
                                       HumanMessage(content=question)]
        reply = await self._answer(messages, question)
        answer = reply.text
        if history is not None:
            await self._remember(history, session_id or "", question, answer)
        cited = _CITED.findall(answer)
        return {"answer": answer, "sources": cited or [str(d.id) for d in docs],
                "provider": reply.response_metadata.get("lcha", {}).get("provider"),
                "session_id": session_id}

    async def _answer(self, messages: list[BaseMessage], question: str) -> AIMessage:
        if not ORDER_ID.search(question):
            return await self.model.ainvoke(messages)
        with_tools = self.model.bind_tools([self.tool])
        first = await with_tools.ainvoke(messages)
        if not first.tool_calls:
            return first
        observation = await self.tool.ainvoke(first.tool_calls[0])
        return await with_tools.ainvoke([*messages, first, observation])

    async def _remember(self, history: BaseChatMessageHistory, session_id: str,
                        question: str, answer: str) -> None:
        key = current_request_key()
        if key is not None and hasattr(history, "aadd_messages_once"):
            await history.aadd_messages_once(key, [HumanMessage(question), AIMessage(answer)])
            return
        if key is not None:
            if (session_id, key) in self._seen:
                return  # a retried request: its turn is already in the history
            self._seen.add((session_id, key))
        await history.aadd_messages([HumanMessage(content=question), AIMessage(content=answer)])


def _parse(value: Any) -> tuple[str, str | None]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and isinstance(value.get("question"), str):
        session = value.get("session_id")
        return value["question"], str(session) if session else None
    raise InvalidInput("input must be a question string or {'question': str, 'session_id': str}")


def build_support_bot(settings: BotSettings, history: HistoryFactory | None = None) -> SupportBot:
    """The support bot over the given providers (the simulators in the demo)."""
    events = PrometheusEvents()
    model = ResilientChatModel(providers=[
        Provider(name="primary", model=ChatOpenAI(
            base_url=settings.primary_url + "/v1", api_key=settings.primary_key,  # type: ignore[arg-type]
            model="sim-chat", max_retries=0)),
        Provider(name="secondary", model=ChatAnthropic(  # type: ignore[call-arg]
            base_url=settings.secondary_url, api_key=settings.secondary_key,  # type: ignore[arg-type]
            model="sim-claude", max_retries=0)),
        Provider(name="local", model=LocalExtractiveModel()),
    ], events=events)
    embeddings = OpenAIEmbeddings(
        base_url=settings.embeddings_url + "/v1", api_key=settings.embeddings_key,  # type: ignore[arg-type]
        model="sim-embed", check_embedding_ctx_length=False, dimensions=256, max_retries=0)
    retriever = ResilientRetriever(retriever=CorpusRetriever(
        embeddings=embeddings, docs=load_corpus(), k=settings.top_k),
        observe=events.on_retrieval)
    tool = resilient_tool(order_status_tool(settings.tools_url))
    return SupportBot(model, retriever, tool, history)


def bot() -> SupportBot:
    """Factory used by ``lcha serve langchain_ha.demo.support_bot:bot`` (settings from env)."""
    return build_support_bot(BotSettings.from_env())

"""The support bot's shipped corpus (package data) and the retrievers over it.

:class:`CorpusRetriever` searches a vector store holding the corpus (indexing it on first use,
idempotently by id) behind a breaker and a timeout; whenever that store cannot answer it falls
back to :class:`KeywordRetriever` (plain word overlap over the shipped corpus, no network) and
records the answer as degraded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_ha._sync import run_sync
from langchain_ha.providers import keywords, words
from langchain_ha.resilience.breaker import BreakerConfig, CircuitBreaker
from langchain_ha.resilience.degrade import Unavailable, guarded, record_degraded

log = logging.getLogger("langchain_ha.demo")
INDEX_RETRY_S = 10.0


@cache
def load_corpus() -> tuple[Document, ...]:
    """The FAQ documents shipped with the package (id, title, text)."""
    raw = resources.files("langchain_ha.demo").joinpath("corpus/faq.jsonl").read_text()
    docs = []
    for line in raw.splitlines():
        if line.strip():
            item = json.loads(line)
            docs.append(Document(id=item["id"], page_content=item["text"],
                                 metadata={"title": item["title"], "doc_id": item["id"]}))
    return tuple(docs)


@cache
def load_questions() -> tuple[tuple[str, str], ...]:
    """``(question, doc_id)`` pairs whose right source is known (for drills and tests)."""
    raw = resources.files("langchain_ha.demo").joinpath("corpus/questions.jsonl").read_text()
    return tuple((q["question"], q["doc_id"]) for q in map(json.loads, filter(None, (
        line.strip() for line in raw.splitlines()))))


class KeywordRetriever(BaseRetriever):
    """Documents ranked by shared words with the query (ties: corpus order)."""

    docs: tuple[Document, ...]
    k: int = 3

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        wanted = set(keywords(query))
        scored = [(len(wanted & set(words(d.page_content))), -i, d)
                  for i, d in enumerate(self.docs)]
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [d for score, _, d in scored[: self.k] if score > 0]


class CorpusRetriever(BaseRetriever):
    """Vector search over the corpus in ``store``; keyword search when the store cannot answer.

    The corpus is upserted into ``store`` on first use (only the ids it lacks; retried every
    ``INDEX_RETRY_S`` while that fails).  Searches run under ``breaker`` and ``timeout_s``, so
    a dead store costs one fast breaker check per question, not a timeout.  The keyword
    fallback records ``fallback_component``: ``embeddings`` for an in-memory store (the
    embedding provider is its only remote part), ``retrieval`` for a database-backed one (which
    handles an embeddings outage itself, with full-text search).
    """

    store: VectorStore
    docs: tuple[Document, ...]
    k: int = 3
    fallback_component: str = "embeddings"
    search_unindexed: bool = False
    """Search the store while indexing runs in the background (a shared store may be full
    already); otherwise the first question waits for indexing."""
    prepare: Callable[[], Awaitable[None]] | None = None
    """Run before the first indexing attempt (e.g. open the database pools)."""
    timeout_s: float = 1.5
    breaker: CircuitBreaker = Field(default_factory=lambda: CircuitBreaker(
        "corpus-store", BreakerConfig(cold_probes=3)))
    _indexed: bool = PrivateAttr(default=False)
    _retry_at: float = PrivateAttr(default=0.0)
    _lock: asyncio.Lock | None = PrivateAttr(default=None)
    _task: asyncio.Task[bool] | None = PrivateAttr(default=None)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    async def ensure_indexed(self) -> bool:
        """Upsert the corpus ids the store lacks (one attempt at a time); True once done."""
        if self._indexed or time.monotonic() < self._retry_at:
            return self._indexed
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # concurrent first questions wait for one indexing attempt
            if self._indexed or time.monotonic() < self._retry_at:
                return self._indexed
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._upsert_missing()
            except Exception as exc:
                self._retry_at = time.monotonic() + INDEX_RETRY_S
                log.warning("cannot index the corpus yet (%s); retrying in %ss",
                            type(exc).__name__, INDEX_RETRY_S)
                return False
            self._indexed = True
            return True

    def _index_in_background(self) -> None:
        # A shared store is searched while it is being (re)indexed: no request waits for it.
        if self._indexed or self._task is not None or time.monotonic() < self._retry_at:
            return
        self._task = asyncio.get_running_loop().create_task(self.ensure_indexed())
        self._task.add_done_callback(lambda _: setattr(self, "_task", None))

    async def _upsert_missing(self) -> None:
        if self.prepare is not None:
            await self.prepare()
        present = {d.id for d in await self.store.aget_by_ids([str(d.id) for d in self.docs])}
        missing = [d for d in self.docs if d.id not in present]
        if missing:
            await self.store.aadd_documents(missing)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.search_unindexed:
            self._index_in_background()
        if self.search_unindexed or await self.ensure_indexed():
            try:
                docs = await guarded(self.breaker, self.timeout_s,
                                     lambda: self.store.asimilarity_search(query, k=self.k))
            except Unavailable as exc:
                log.warning("vector search failed (%s): keyword search", exc.reason)
            else:
                if docs:
                    return docs
        record_degraded(self.fallback_component)
        return KeywordRetriever(docs=self.docs, k=self.k).invoke(query)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return run_sync(self._aget_relevant_documents(query, run_manager=None))  # type: ignore[arg-type]

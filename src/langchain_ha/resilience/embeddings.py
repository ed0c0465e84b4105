"""``ResilientEmbeddings``: LangChain ``Embeddings`` over several endpoints of ONE model.

Vectors from two different embedding models live in different spaces: a query embedded by one
cannot be compared with documents embedded by the other, so a fallback to "another embedding
model" silently breaks retrieval.  What may stand in for an endpoint is the *same* model
behind another key, region or deployment.  The router therefore refuses at construction to
mix models (by the name each endpoint declares, or its integration's ``model`` field) or
declared dimensions, and checks every answer's dimensions against the others' at run time
(an endpoint answering with other dimensions fails and the next one answers).

Routing is the chat router's engine (:mod:`langchain_ha.resilience._engine`): one circuit
breaker per endpoint (shareable through a :class:`~langchain_ha.resilience.breaker.BreakerStore`),
failover on retryable errors, rounds with backoff, hedging, per-attempt timeouts and the
request deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.exceptions import ModelAPIError
from pydantic import BaseModel, ConfigDict, Field

from langchain_ha._sync import run_sync
from langchain_ha.resilience._clock import SYSTEM_CLOCK, Clock
from langchain_ha.resilience._engine import Engine
from langchain_ha.resilience._route import Route
from langchain_ha.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
)
from langchain_ha.resilience.deadline import Deadline, current_deadline
from langchain_ha.resilience.degrade import record_degraded
from langchain_ha.resilience.events import NullEvents, RouterEvents
from langchain_ha.resilience.hedging import HedgePolicy
from langchain_ha.resilience.retry import RetryPolicy

__all__ = ["Embedded", "EmbeddingEndpoint", "ResilientEmbeddings", "WrongDimensions"]


class WrongDimensions(ModelAPIError):
    """An endpoint answered with vectors of other dimensions than the model's."""


class EmbeddingEndpoint(BaseModel):
    """One endpoint (key, region, deployment) of the embedding model.

    ``model`` and ``dimensions`` default to the integration's own fields (``model`` or
    ``model_name``, ``dimensions``); give them where those do not say (an Azure deployment
    name, a self-hosted server).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str = Field(min_length=1, max_length=64)
    embeddings: Embeddings
    model: str | None = None
    dimensions: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)

    def model_name(self) -> str | None:
        """The model this endpoint serves, as declared or as its integration names it."""
        if self.model:
            return self.model
        for attr in ("model", "model_name", "model_id", "deployment"):
            value = getattr(self.embeddings, attr, None)
            if isinstance(value, str) and value:
                return value
        return None

    def declared_dimensions(self) -> int | None:
        """The dimensions declared here or on the integration (None: learnt from answers)."""
        if self.dimensions is not None:
            return self.dimensions
        value = getattr(self.embeddings, "dimensions", None)
        return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True)
class Embedded:
    """Vectors and how they were produced."""

    vectors: list[list[float]]
    endpoint: str
    fallback: bool
    attempts: int


class ResilientEmbeddings(Embeddings):
    """Embeddings that keep answering while endpoints of the model fail.

    Args:
        endpoints: ordered endpoints (or bare ``Embeddings``, named ``0``, ``1``...), all of the
            same model and dimensions (else ``ValueError``).
        retry, breaker, breaker_store, hedge, attempt_timeout_s, deadline_s, events, clock: as
            for :class:`~langchain_ha.resilience.chat.ResilientChatModel`.
        degraded_component: recorded (see :mod:`~langchain_ha.resilience.degrade`) when an
            endpoint other than the first answered; None (default) records nothing, since the
            same model gives the same vectors.
    """

    def __init__(
        self,
        endpoints: Sequence[EmbeddingEndpoint | Embeddings],
        *,
        retry: RetryPolicy | None = None,
        breaker: BreakerConfig | None = None,
        breaker_store: BreakerStore | None = None,
        hedge: HedgePolicy | None = None,
        attempt_timeout_s: float | None = 30.0,
        deadline_s: float | None = 60.0,
        events: RouterEvents | None = None,
        clock: Clock = SYSTEM_CLOCK,
        degraded_component: str | None = None,
    ) -> None:
        self.endpoints = _checked(endpoints)
        self.model = self.endpoints[0].model_name() or ""
        declared = [e.declared_dimensions() for e in self.endpoints]
        self._dimensions: int | None = next((d for d in declared if d is not None), None)
        self.deadline_s = deadline_s
        self.degraded_component = degraded_component
        self._events: RouterEvents = events or NullEvents()
        config = breaker or BreakerConfig()
        events_ = self._events

        def transition(name: str, old: BreakerState, new: BreakerState) -> None:
            events_.on_breaker_transition(name, old.value, new.value)

        routes = [
            Route(name=e.name, index=i, timeout_s=e.timeout_s, context_window=None,
                  breaker=CircuitBreaker(e.name, config, clock=clock, store=breaker_store,
                                         on_transition=transition))
            for i, e in enumerate(self.endpoints)
        ]
        self._engine = Engine(routes, retry=retry or RetryPolicy(), hedge=hedge or HedgePolicy(),
                              attempt_timeout_s=attempt_timeout_s, events=self._events,
                              clock=clock)

    @property
    def dimensions(self) -> int | None:
        """The model's dimensions: declared, or learnt from the first answer (None before)."""
        return self._dimensions

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The per-endpoint circuit breakers, by endpoint name."""
        return {r.name: r.breaker for r in self._engine.routes}

    # -- LangChain's interface ------------------------------------------------------------------

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return (await self.aembed(texts)).vectors

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed([text], query=True)).vectors[0]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return run_sync(self.aembed(texts, sync=True)).vectors

    def embed_query(self, text: str) -> list[float]:
        return run_sync(self.aembed([text], query=True, sync=True)).vectors[0]

    # -- the request ----------------------------------------------------------------------------

    async def aembed(self, texts: list[str], *, query: bool = False, sync: bool = False
                     ) -> Embedded:
        """Embed ``texts`` (as documents, or one query) on the first endpoint that answers.

        ``sync`` calls the endpoints' sync methods in worker threads (their async clients may
        belong to another event loop).  Raises
        :class:`~langchain_ha.resilience.errors.AllProvidersFailed` when none does.
        """
        engine = self._engine

        async def start(route: Route) -> list[list[float]]:
            endpoint = self.endpoints[route.index].embeddings
            if query:
                one = (await asyncio.to_thread(endpoint.embed_query, texts[0]) if sync
                       else await endpoint.aembed_query(texts[0]))
                vectors = [one]
            else:
                vectors = (await asyncio.to_thread(endpoint.embed_documents, texts) if sync
                           else await endpoint.aembed_documents(texts))
            return self._checked_vectors(route.name, vectors, len(texts))

        attempt = await engine.run("embed", start, deadline=self._deadline())
        if attempt.route.index > 0 and self.degraded_component:
            record_degraded(self.degraded_component)
        return Embedded(vectors=attempt.value, endpoint=attempt.route.name,
                        fallback=attempt.route.index > 0, attempts=attempt.attempts)

    def _checked_vectors(self, endpoint: str, vectors: list[list[float]], count: int
                         ) -> list[list[float]]:
        if len(vectors) != count:
            raise WrongDimensions(f"endpoint {endpoint!r} answered {len(vectors)} vectors for "
                                  f"{count} inputs")
        for vector in vectors:
            if self._dimensions is None:
                self._dimensions = len(vector)
            if len(vector) != self._dimensions:
                raise WrongDimensions(f"endpoint {endpoint!r} answered {len(vector)} dimensions; "
                                      f"the model has {self._dimensions}")
        return vectors

    def _deadline(self) -> Deadline | None:
        outer = current_deadline()
        if self.deadline_s is None:
            return outer
        clock = self._engine.clock
        own = Deadline(clock.monotonic() + self.deadline_s, clock)
        return own if outer is None or own.remaining() < outer.remaining() else outer


def _checked(endpoints: Sequence[EmbeddingEndpoint | Embeddings]) -> list[EmbeddingEndpoint]:
    """The endpoints, refused unless they are one model with one set of dimensions."""
    if not endpoints:
        raise ValueError("at least one embedding endpoint is required")
    out = [e if isinstance(e, EmbeddingEndpoint) else EmbeddingEndpoint(name=str(i), embeddings=e)
           for i, e in enumerate(endpoints)]
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ValueError(f"endpoint names must be distinct, got {names}")
    models: Mapping[str, str | None] = {e.name: e.model_name() for e in out}
    unknown = [name for name, model in models.items() if model is None]
    if unknown:
        raise ValueError(f"endpoints {unknown}: cannot tell which embedding model they serve; "
                         "give EmbeddingEndpoint(model=...)")
    if len(set(models.values())) > 1:
        raise ValueError("embedding endpoints must all serve the same model (vectors of two "
                         f"models are not comparable), got {dict(models)}")
    dims: dict[str, Any] = {e.name: e.declared_dimensions() for e in out}
    declared = {d for d in dims.values() if d is not None}
    if len(declared) > 1:
        raise ValueError(f"embedding endpoints must all have the same dimensions, got {dims}")
    return out

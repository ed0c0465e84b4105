"""Router events as Prometheus metrics (``lcha_`` names, bounded labels).

Label values are provider names (from configuration), modes (``invoke``/``stream``) and the
bounded reason set of :func:`~langchain_ha.resilience.errors.classify`, never free text.

Tokens: ``lcha_llm_tokens_total{provider, direction="input"|"output"}`` counts what every
answer's usage reports, invoked or streamed (a stream cut before its usage arrived reports
nothing; its continuation reports its own).  Cost: with a price table
(``PrometheusEvents(prices={"primary": TokenPrice(input_per_mtok=2.5, output_per_mtok=10)})``,
in any currency, per million tokens) ``lcha_llm_cost_total{provider}`` adds each answer's
price; a provider missing from the table has no cost series.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}
_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class TokenPrice:
    """What a provider charges per million input and output tokens (any one currency)."""

    input_per_mtok: float
    output_per_mtok: float


class PrometheusEvents:
    """Implements :class:`~langchain_ha.resilience.events.RouterEvents` with metrics.

    Pass a ``registry`` per app (tests and several routers in one process); the default is the
    global registry, where a second instance reuses the first one's metrics (and adds the
    ``prices`` it is given to theirs).
    """

    _shared: weakref.WeakKeyDictionary[CollectorRegistry, PrometheusEvents] = (
        weakref.WeakKeyDictionary()
    )

    def __new__(cls, registry: CollectorRegistry | None = None,
                prices: Mapping[str, TokenPrice] | None = None) -> PrometheusEvents:
        reg = registry if registry is not None else REGISTRY
        existing = cls._shared.get(reg)
        if existing is None:
            existing = super().__new__(cls)
            cls._shared[reg] = existing
            existing._init(reg)
        existing.prices.update(prices or {})
        return existing

    def __init__(self, registry: CollectorRegistry | None = None,
                 prices: Mapping[str, TokenPrice] | None = None) -> None:
        pass  # everything is set up once per registry, in __new__

    def _init(self, reg: CollectorRegistry) -> None:
        self.calls = Counter("lcha_llm_calls", "LLM calls by provider, mode and outcome",
                             ["provider", "mode", "outcome"], registry=reg)
        self.seconds = Histogram("lcha_llm_call_seconds", "LLM call latency",
                                 ["provider", "mode"], buckets=_BUCKETS, registry=reg)
        self.prices: dict[str, TokenPrice] = {}
        self.tokens = Counter("lcha_llm_tokens", "LLM tokens by provider and direction",
                              ["provider", "direction"], registry=reg)
        self.cost = Counter("lcha_llm_cost", "What the LLM tokens cost, by provider (the "
                            "price table's currency)", ["provider"], registry=reg)
        self.breaker = Gauge("lcha_breaker_state", "Breaker state (0 closed, 1 half-open, 2 open)",
                             ["provider"], registry=reg)
        self.transitions = Counter("lcha_breaker_transitions", "Breaker transitions",
                                   ["provider", "to"], registry=reg)
        self.fallbacks = Counter("lcha_llm_fallbacks", "Requests passed to a fallback provider",
                                 ["from_provider", "to_provider", "reason"], registry=reg)
        self.hedges = Counter("lcha_llm_hedges", "Hedged requests by the slow provider",
                              ["provider"], registry=reg)
        self.retrieval = Histogram("lcha_retrieval_seconds", "Retrieval latency by outcome",
                                   ["outcome"], buckets=_BUCKETS, registry=reg)
        self.cache_lookups = Counter(
            "lcha_llm_cache_lookups", "LLM cache lookups by cache and outcome (hit, miss, "
            "error: the database did not answer, counted as a miss)", ["cache", "outcome"],
            registry=reg)
        self.cache_updates = Counter(
            "lcha_llm_cache_updates", "LLM cache updates by cache and outcome (stored, "
            "skipped: a tool call or no embedding, error)", ["cache", "outcome"], registry=reg)

    def on_attempt(self, provider: str, mode: str) -> None:
        pass  # attempts are counted by their outcome

    def on_success(self, provider: str, mode: str, latency_s: float,
                   usage: Mapping[str, int] | None) -> None:
        self.calls.labels(provider, mode, "success").inc()
        self.seconds.labels(provider, mode).observe(latency_s)

    def on_usage(self, provider: str, mode: str, usage: Mapping[str, int]) -> None:
        tokens_in = max(0, int(usage.get("input_tokens", 0)))
        tokens_out = max(0, int(usage.get("output_tokens", 0)))
        self.tokens.labels(provider, "input").inc(tokens_in)
        self.tokens.labels(provider, "output").inc(tokens_out)
        price = self.prices.get(provider)
        if price is not None:
            self.cost.labels(provider).inc(
                (tokens_in * price.input_per_mtok + tokens_out * price.output_per_mtok) / 1e6)

    def on_failure(self, provider: str, mode: str, reason: str, latency_s: float) -> None:
        self.calls.labels(provider, mode, reason).inc()
        self.seconds.labels(provider, mode).observe(latency_s)

    def on_breaker_transition(self, provider: str, old: str, new: str) -> None:
        self.breaker.labels(provider).set(_STATE_VALUE.get(new, -1))
        self.transitions.labels(provider, new).inc()

    def on_fallback(self, from_provider: str, to_provider: str, reason: str) -> None:
        self.fallbacks.labels(from_provider, to_provider, reason).inc()

    def on_hedge(self, provider: str, hedged_to: str) -> None:
        self.hedges.labels(provider).inc()

    def on_cache_lookup(self, cache: str, outcome: str) -> None:
        """For ``PgCache(events=...)`` (:class:`~langchain_ha.store.cache.CacheEvents`)."""
        self.cache_lookups.labels(cache, outcome).inc()

    def on_cache_update(self, cache: str, outcome: str) -> None:
        self.cache_updates.labels(cache, outcome).inc()

    def on_retrieval(self, outcome: str, seconds: float) -> None:
        """For ``ResilientRetriever(observe=...)``: retrieval latency by outcome."""
        self.retrieval.labels(outcome).observe(seconds)

"""langchain-ha: high availability for LangChain applications.

Public names are imported lazily, so ``import langchain_ha`` (and the ``lcha`` CLI) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ResilientChatModel": "langchain_ha.resilience.chat",
    "Provider": "langchain_ha.resilience.chat",
    "CONTINUATION_INSTRUCTION": "langchain_ha.resilience.chat",
    "CircuitBreaker": "langchain_ha.resilience.breaker",
    "BreakerConfig": "langchain_ha.resilience.breaker",
    "BreakerState": "langchain_ha.resilience.breaker",
    "BreakerStore": "langchain_ha.resilience.breaker",
    "InMemoryBreakerStore": "langchain_ha.resilience.breaker",
    "RetryPolicy": "langchain_ha.resilience.retry",
    "HedgePolicy": "langchain_ha.resilience.hedging",
    "deadline": "langchain_ha.resilience.deadline",
    "AllProvidersFailed": "langchain_ha.resilience.errors",
    "StreamInterrupted": "langchain_ha.resilience.errors",
    "classify": "langchain_ha.resilience.errors",
    "RouterEvents": "langchain_ha.resilience.events",
    "PrometheusEvents": "langchain_ha.resilience.prometheus",
    "degradation_scope": "langchain_ha.resilience.degrade",
    "record_degraded": "langchain_ha.resilience.degrade",
}

__all__ = [
    "CONTINUATION_INSTRUCTION",
    "AllProvidersFailed",
    "BreakerConfig",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "HedgePolicy",
    "InMemoryBreakerStore",
    "PrometheusEvents",
    "Provider",
    "ResilientChatModel",
    "RetryPolicy",
    "RouterEvents",
    "StreamInterrupted",
    "__version__",
    "classify",
    "deadline",
    "degradation_scope",
    "record_degraded",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_ha' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

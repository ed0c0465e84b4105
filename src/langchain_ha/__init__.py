"""langchain-ha: high availability for LangChain applications.

Public names are imported lazily, so ``import langchain_ha`` (and the ``lcha`` CLI) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ResilientChatModel": "langchain_ha.resilience.chat",
    "router_from_env": "langchain_ha.deployment",
    "AppEnvironment": "langchain_ha.deployment",
    "ProviderEntry": "langchain_ha.deployment",
    "DeploymentConfigError": "langchain_ha.deployment",
    "Provider": "langchain_ha.resilience.chat",
    "CONTINUATION_INSTRUCTION": "langchain_ha.resilience.continuation",
    "accept_restarts": "langchain_ha.resilience.continuation",
    "assemble": "langchain_ha.resilience.continuation",
    "RESTART_KEY": "langchain_ha.resilience.continuation",
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
    "ProviderRefused": "langchain_ha.resilience.errors",
    "classify": "langchain_ha.resilience.errors",
    "RouterEvents": "langchain_ha.resilience.events",
    "PrometheusEvents": "langchain_ha.resilience.prometheus",
    "TokenPrice": "langchain_ha.resilience.prometheus",
    "CallOptions": "langchain_ha.resilience.options",
    "ResilientEmbeddings": "langchain_ha.resilience.embeddings",
    "EmbeddingEndpoint": "langchain_ha.resilience.embeddings",
    "degradation_scope": "langchain_ha.resilience.degrade",
    "record_degraded": "langchain_ha.resilience.degrade",
    "ResilientRetriever": "langchain_ha.resilience.degrade",
    "resilient_tool": "langchain_ha.resilience.degrade",
    "create_app": "langchain_ha.serve.app",
    "current_caller": "langchain_ha._context",
    "ServeSettings": "langchain_ha.serve.settings",
    "Database": "langchain_ha.store.connect",
    "PgVectorStore": "langchain_ha.store.vectors",
    "PgChatMessageHistory": "langchain_ha.store.history",
    "PgCache": "langchain_ha.store.cache",
    "DeploymentStores": "langchain_ha.store.stores",
    "DurableCheckpointer": "langchain_ha.store.checkpoints",
    "DurableAgent": "langchain_ha.agents",
    "stores_from_env": "langchain_ha.store.stores",
    "PgBreakerStore": "langchain_ha.store.breakers",
    "TaskQueue": "langchain_ha.store.tasks",
    "PostgresCluster": "langchain_ha.cluster.postgres",
    "ClusterSpec": "langchain_ha.cluster.patroni_config",
}

__all__ = [
    "CONTINUATION_INSTRUCTION",
    "RESTART_KEY",
    "AllProvidersFailed",
    "AppEnvironment",
    "BreakerConfig",
    "BreakerState",
    "BreakerStore",
    "CallOptions",
    "CircuitBreaker",
    "ClusterSpec",
    "Database",
    "DeploymentConfigError",
    "DeploymentStores",
    "DurableAgent",
    "DurableCheckpointer",
    "EmbeddingEndpoint",
    "HedgePolicy",
    "InMemoryBreakerStore",
    "PgBreakerStore",
    "PgCache",
    "PgChatMessageHistory",
    "PgVectorStore",
    "PostgresCluster",
    "PrometheusEvents",
    "Provider",
    "ProviderEntry",
    "ProviderRefused",
    "ResilientChatModel",
    "ResilientEmbeddings",
    "ResilientRetriever",
    "RetryPolicy",
    "RouterEvents",
    "ServeSettings",
    "StreamInterrupted",
    "TaskQueue",
    "TokenPrice",
    "__version__",
    "accept_restarts",
    "assemble",
    "classify",
    "create_app",
    "current_caller",
    "deadline",
    "degradation_scope",
    "record_degraded",
    "resilient_tool",
    "router_from_env",
    "stores_from_env",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_ha' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

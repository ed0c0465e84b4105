"""A router served in gateway mode: one OpenAI-compatible model over the deployment's providers.

``lcha serve langchain_ha.demo.router_app:router`` serves the
:class:`~langchain_ha.resilience.chat.ResilientChatModel` that
:func:`~langchain_ha.deployment.router_from_env` builds from ``LCHA_PROVIDERS`` (``lcha up``
and the Kubernetes manifests set it from the topology; the tests give it an OpenAI-kind,
an Anthropic-kind and a Gemini-kind simulator), so any OpenAI SDK gets tool calls, structured
output and usage from whichever answers.  ``LCHA_EMBEDDINGS=langchain_ha.demo.router_app:
embeddings`` adds ``/v1/embeddings`` over one embedding model (``LCHA_EMBEDDINGS_MODEL``,
default ``sim-embed``) at every simulated provider in turn, or at ``LCHA_EMBEDDINGS_URL``.
"""

from __future__ import annotations

import os

from langchain_openai import OpenAIEmbeddings

from langchain_ha.deployment import SIM_KEY, AppEnvironment, DeploymentConfigError, router_from_env
from langchain_ha.resilience.breaker import BreakerConfig
from langchain_ha.resilience.chat import ResilientChatModel
from langchain_ha.resilience.embeddings import EmbeddingEndpoint, ResilientEmbeddings
from langchain_ha.resilience.prometheus import PrometheusEvents

EMBED_DIMENSIONS = 256


def router() -> ResilientChatModel:
    """The deployment's router, its breakers open 5 s."""
    return router_from_env(breaker=BreakerConfig(open_duration_s=5.0), events=PrometheusEvents())


def embeddings() -> ResilientEmbeddings:
    """The embedding model at each simulated provider (named as it is), in the deployment's
    order; without simulators, at ``LCHA_EMBEDDINGS_URL`` (key ``LCHA_EMBEDDINGS_API_KEY``)."""
    app = AppEnvironment.from_env()
    model = os.environ.get("LCHA_EMBEDDINGS_MODEL", "sim-embed")
    roots = {e.name: (root, SIM_KEY) for e in app.providers if (root := e.sim_root)}
    if not roots and app.embeddings_url:
        roots = {"embeddings": (app.embeddings_url.rstrip("/"),
                                os.environ.get("LCHA_EMBEDDINGS_API_KEY", SIM_KEY))}
    if not roots:
        raise DeploymentConfigError("set LCHA_PROVIDERS with a simulated provider, or "
                                    "LCHA_EMBEDDINGS_URL (the embeddings API)")
    endpoints = [
        EmbeddingEndpoint(name=name, embeddings=OpenAIEmbeddings(
            base_url=root + "/v1", api_key=key,  # type: ignore[arg-type]
            model=model, dimensions=EMBED_DIMENSIONS, check_embedding_ctx_length=False,
            max_retries=0))
        for name, (root, key) in roots.items()
    ]
    return ResilientEmbeddings(endpoints, events=PrometheusEvents())

"""A router served in gateway mode: one OpenAI-compatible model over three provider kinds.

``lcha serve langchain_ha.demo.router_app:router`` serves a
:class:`~langchain_ha.resilience.chat.ResilientChatModel` over an OpenAI-kind provider
(``ChatOpenAI``), then an Anthropic-kind one (``ChatAnthropic``), then a Gemini-kind one
(``ChatGoogleGenerativeAI``), so any OpenAI SDK gets tool calls, structured output and usage
from whichever answers.  ``LCHA_EMBEDDINGS=langchain_ha.demo.router_app:embeddings`` adds
``/v1/embeddings`` over the same embedding model at the primary and the secondary.

Settings from the environment, as the support bot reads them (``lcha up`` sets the first two):
``LCHA_PRIMARY_URL`` (OpenAI kind), ``LCHA_SECONDARY_URL`` (Anthropic kind),
``LCHA_TERTIARY_URL`` (Gemini kind; default: the secondary's URL), keys from
``LCHA_PRIMARY_API_KEY`` etc. (default: the simulator's), models from ``LCHA_PRIMARY_MODEL``
etc. (default: the simulator's names).
"""

from __future__ import annotations

import os

from langchain_anthropic import ChatAnthropic
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from langchain_ha.resilience.breaker import BreakerConfig
from langchain_ha.resilience.chat import Provider, ResilientChatModel
from langchain_ha.resilience.embeddings import EmbeddingEndpoint, ResilientEmbeddings
from langchain_ha.resilience.prometheus import PrometheusEvents

EMBED_DIMENSIONS = 256


def _url(slot: str, default: str | None = None) -> str:
    value = os.environ.get(f"LCHA_{slot}_URL") or default
    if not value:
        raise ValueError(f"set LCHA_{slot}_URL (the provider's base URL)")
    return value.rstrip("/")


def _key(slot: str) -> str:
    return os.environ.get(f"LCHA_{slot}_API_KEY", "sim-key")


def _model(slot: str, default: str) -> str:
    return os.environ.get(f"LCHA_{slot}_MODEL", default)


def router() -> ResilientChatModel:
    """The router: ``openai`` (primary), ``anthropic``, ``gemini``, each with retries off."""
    primary, secondary = _url("PRIMARY"), _url("SECONDARY")
    tertiary = _url("TERTIARY", secondary)
    return ResilientChatModel(
        providers=[
            Provider(name="openai", model=ChatOpenAI(
                base_url=primary + "/v1", api_key=_key("PRIMARY"),  # type: ignore[arg-type]
                model=_model("PRIMARY", "sim-chat"), max_retries=0)),
            Provider(name="anthropic", model=ChatAnthropic(  # type: ignore[call-arg]
                base_url=secondary, api_key=_key("SECONDARY"),  # type: ignore[arg-type]
                model=_model("SECONDARY", "sim-claude"), max_retries=0)),
            Provider(name="gemini", model=ChatGoogleGenerativeAI(
                base_url=tertiary, google_api_key=_key("TERTIARY"),
                model=_model("TERTIARY", "gemini-2.5-flash"), max_retries=0)),
        ],
        breaker=BreakerConfig(open_duration_s=5.0),
        events=PrometheusEvents(),
    )


def embeddings() -> ResilientEmbeddings:
    """``sim-embed`` (or ``LCHA_EMBEDDINGS_MODEL``) at the primary, then at the secondary."""
    model = os.environ.get("LCHA_EMBEDDINGS_MODEL", "sim-embed")
    endpoints = [
        EmbeddingEndpoint(name=name, embeddings=OpenAIEmbeddings(
            base_url=_url(slot) + "/v1", api_key=_key(slot),  # type: ignore[arg-type]
            model=model, dimensions=EMBED_DIMENSIONS, check_embedding_ctx_length=False,
            max_retries=0))
        for name, slot in (("primary", "PRIMARY"), ("secondary", "SECONDARY"))
    ]
    return ResilientEmbeddings(endpoints, events=PrometheusEvents())

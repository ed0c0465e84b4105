"""What a deployment gives its app: the providers by kind, the tool and embedding endpoints
and the database, as one typed model carried in the environment.

``lcha up`` (the supervisor) and ``lcha render k8s`` both render an :class:`AppEnvironment`
from the topology, so a replica sees the same variables on one machine and in Kubernetes:

- ``LCHA_PROVIDERS``: a JSON list of :class:`ProviderEntry` (name, kind, model, base URL, the
  *name* of the variable holding its key, timeouts and capabilities), in priority order;
- ``LCHA_TOOLS_URL``, ``LCHA_EMBEDDINGS_URL``: the tool API and the embeddings endpoint;
- ``LCHA_DB_WRITER``, ``LCHA_DB_READER``: libpq conninfo of the HA cluster's two sides.

An app builds the router it was given with :func:`router_from_env`::

    from langchain_ha import router_from_env
    model = router_from_env()          # a ResilientChatModel over the deployment's providers

Keys never travel in ``LCHA_PROVIDERS``: each entry names its variable (``api_key_env``),
which the replica inherits from ``lcha up``'s environment or a Kubernetes secret.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:  # the topology imports this module; LangChain loads only when a model is built
    from langchain_core.language_models import BaseChatModel

    from langchain_ha.resilience.chat import Provider, ResilientChatModel

PROVIDERS_ENV = "LCHA_PROVIDERS"
SIM_KEY = "sim-key"
ProviderKind = Literal["openai", "anthropic", "google", "openai-compatible"]
KIND_BASE_URLS: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "google": None,  # the SDK's own endpoint
    "openai-compatible": None,  # must be given
}
"""Where a real provider of each kind answers when ``base_url`` is not given."""


class DeploymentConfigError(ValueError):
    """The environment does not describe a usable deployment (the message names the fix)."""


class ProviderEntry(BaseModel):
    """One provider as a replica receives it: enough to build its LangChain chat model.

    ``base_url`` is the URL the kind's LangChain client takes (``…/v1`` for the OpenAI kinds);
    a simulated entry uses the simulator's key, a real one reads ``api_key_env``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    kind: ProviderKind
    model: str = Field(min_length=1)
    base_url: str | None = Field(default=None, pattern=r"^https?://")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    simulated: bool = False
    timeout_s: float | None = Field(default=None, gt=0)
    context_window: int | None = Field(default=None, gt=0)
    accepts_prefill: bool = False

    def api_key(self, env: Mapping[str, str] | None = None) -> str:
        """The key this provider is called with (the simulator's for a simulated entry)."""
        if self.simulated and not self.api_key_env:
            return SIM_KEY
        env = os.environ if env is None else env
        key = env.get(str(self.api_key_env), "") if self.api_key_env else ""
        if not key:
            raise DeploymentConfigError(
                f"provider {self.name!r}: set {self.api_key_env or 'api_key_env'} "
                f"(its API key) in the replica's environment")
        return key

    def chat_model(self, env: Mapping[str, str] | None = None) -> BaseChatModel:
        """The kind's LangChain chat model, with its own retries off (the router retries)."""
        key = self.api_key(env)
        url = self.base_url or KIND_BASE_URLS[self.kind]
        if self.kind in ("openai", "openai-compatible"):
            if url is None:
                raise DeploymentConfigError(
                    f"provider {self.name!r}: an openai-compatible provider needs base_url")
            from langchain_openai import ChatOpenAI

            return ChatOpenAI(base_url=url, api_key=key,  # type: ignore[arg-type]
                              model=self.model, max_retries=0, timeout=self.timeout_s)
        if self.kind == "anthropic":
            from langchain_anthropic import ChatAnthropic

            return ChatAnthropic(base_url=url, api_key=key,  # type: ignore[call-arg, arg-type]
                                 model=self.model, max_retries=0,
                                 default_request_timeout=self.timeout_s)
        from langchain_google_genai import ChatGoogleGenerativeAI

        extra: dict[str, Any] = {"base_url": url} if url else {}
        return ChatGoogleGenerativeAI(google_api_key=key, model=self.model, max_retries=0,
                                      timeout=self.timeout_s, **extra)

    @property
    def sim_root(self) -> str | None:
        """A simulated entry's simulator root URL (without OpenAI's ``/v1``; the simulator
        also serves the tool API and the embeddings there); None for a real provider."""
        if not self.simulated or not self.base_url:
            return None
        return self.base_url.removesuffix("/v1")

    def provider(self, env: Mapping[str, str] | None = None) -> Provider:
        """This entry as one of the router's providers."""
        from langchain_ha.resilience.chat import Provider

        return Provider(name=self.name, model=self.chat_model(env), timeout_s=self.timeout_s,
                        context_window=self.context_window,
                        accepts_prefill=self.accepts_prefill)


class AppEnvironment(BaseModel):
    """Everything a deployment tells its app, rendered as environment variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[ProviderEntry] = Field(default_factory=list)
    tools_url: str | None = None
    embeddings_url: str | None = None
    db_writer: str | None = None
    db_reader: str | None = None

    def to_env(self) -> dict[str, str]:
        """The variables a replica is started with (none for what is not set)."""
        env = {PROVIDERS_ENV: json.dumps([p.model_dump(exclude_none=True)
                                          for p in self.providers], separators=(",", ":"))}
        for name, value in (("LCHA_TOOLS_URL", self.tools_url),
                            ("LCHA_EMBEDDINGS_URL", self.embeddings_url),
                            ("LCHA_DB_WRITER", self.db_writer),
                            ("LCHA_DB_READER", self.db_reader)):
            if value:
                env[name] = value
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppEnvironment:
        """Read what :meth:`to_env` wrote; a :class:`DeploymentConfigError` names what is wrong."""
        env = os.environ if env is None else env
        return cls(providers=parse_providers(env.get(PROVIDERS_ENV, "")),
                   tools_url=env.get("LCHA_TOOLS_URL") or None,
                   embeddings_url=env.get("LCHA_EMBEDDINGS_URL") or None,
                   db_writer=env.get("LCHA_DB_WRITER") or None,
                   db_reader=env.get("LCHA_DB_READER") or None)


def parse_providers(text: str) -> list[ProviderEntry]:
    """The entries of an ``LCHA_PROVIDERS`` value (empty: none)."""
    if not text.strip():
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeploymentConfigError(f"{PROVIDERS_ENV} is not JSON ({exc.msg})") from None
    if not isinstance(raw, list):
        raise DeploymentConfigError(f"{PROVIDERS_ENV} must be a JSON list of providers")
    entries = []
    for i, item in enumerate(raw):
        try:
            entries.append(ProviderEntry.model_validate(item))
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(entry)'}: {e['msg']}"
                              for e in exc.errors())
            raise DeploymentConfigError(f"{PROVIDERS_ENV}[{i}]: {where}") from None
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise DeploymentConfigError(f"{PROVIDERS_ENV}: provider names must be distinct")
    return entries


def router_from_env(env: Mapping[str, str] | None = None, *, only: list[str] | None = None,
                    **router: Any) -> ResilientChatModel:
    """The :class:`ResilientChatModel` over the deployment's providers, in their order.

    Args:
        env: where to read ``LCHA_PROVIDERS`` and the keys (default: ``os.environ``).
        only: the names of the providers to use (default: all), in the deployment's order.
        router: any other :class:`ResilientChatModel` argument (retry, breaker, events, ...).
    """
    from langchain_ha.resilience.chat import ResilientChatModel

    entries = AppEnvironment.from_env(env).providers
    if only is not None:
        unknown = sorted(set(only) - {e.name for e in entries})
        if unknown:
            raise DeploymentConfigError(f"providers {unknown} are not in {PROVIDERS_ENV}")
        entries = [e for e in entries if e.name in only]
    if not entries:
        raise DeploymentConfigError(
            f"set {PROVIDERS_ENV} (lcha up and the Kubernetes manifests set it from the "
            "topology's providers)")
    return ResilientChatModel(providers=[e.provider(env) for e in entries], **router)

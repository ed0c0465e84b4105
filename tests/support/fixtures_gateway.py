"""A replica in gateway mode: ``lcha serve`` of a ResilientChatModel over three simulators of
three provider kinds (OpenAI, Anthropic, Gemini), under a condition of the primary provider.

``gateway`` is parametrized over the conditions (healthy; the primary down, every call an
HTTP 500; every stream of the primary cut mid-answer), each with a fresh replica so breaker
state never leaks from one condition into the next.  Clients are the real SDKs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from langchain_ha.cluster.topology import ProviderSpec
from langchain_ha.deployment import AppEnvironment

if TYPE_CHECKING:  # (importing the plugins themselves would load them twice)
    from tests.support.fixtures_serve import Replica
    from tests.support.fixtures_sim import SimProcess

GATEWAY_KEY = "gateway-key-1"
GATEWAY_ADMIN = "gateway-admin-1"
ROUTER_APP = "langchain_ha.demo.router_app:router"
EMBEDDINGS_APP = "langchain_ha.demo.router_app:embeddings"
CONDITIONS: dict[str, dict[str, Any]] = {
    "healthy": {},
    "primary_down": {"status": 500},
    "stream_cut": {"disconnect_after_chunks": 4},
}
PROVIDER_MODELS = {"openai": "sim-chat", "anthropic": "sim-claude", "gemini": "gemini-2.5-flash"}


@dataclass
class Gateway:
    """A gateway replica, its simulators and the condition the primary is in."""

    replica: Replica
    sims: dict[str, SimProcess]
    condition: str

    @property
    def base_url(self) -> str:
        return self.replica.url + "/v1"

    def client(self, key: str = GATEWAY_KEY, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, **kw)

    def aclient(self, key: str = GATEWAY_KEY, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, **kw)

    def chat_openai(self, **kw: Any) -> ChatOpenAI:
        """LangChain's own ChatOpenAI with the gateway as its base URL."""
        return ChatOpenAI(base_url=self.base_url, api_key=GATEWAY_KEY,  # type: ignore[arg-type]
                          model=kw.pop("model", "langchain-ha"), max_retries=0, **kw)

    def answering(self, *, stream: bool) -> str:
        """The provider expected to answer (a stream cut on the primary ends on the next)."""
        if self.condition == "primary_down" or (self.condition == "stream_cut" and stream):
            return "anthropic"
        return "openai"

    def degraded(self, *, stream: bool) -> list[str]:
        return [] if self.answering(stream=stream) == "openai" else ["primary_llm"]

    def reset(self) -> None:
        """Clear every simulator's faults and close every breaker (admin API)."""
        for sim in self.sims.values():
            sim.clear_faults()
        admin = {"Authorization": f"Bearer {GATEWAY_ADMIN}"}
        for name in ("openai", "anthropic", "gemini"):
            httpx.post(f"{self.replica.url}/admin/breakers/{name}/reset", headers=admin,
                       timeout=10).raise_for_status()


def gateway_env(sims: dict[str, SimProcess], **extra: str) -> dict[str, str]:
    """Three providers of three kinds, each a simulator, as ``lcha up`` would describe them."""
    specs = [ProviderSpec(name="openai", kind="openai"),
             ProviderSpec(name="anthropic", kind="anthropic"),
             ProviderSpec(name="gemini", kind="google")]
    app = AppEnvironment(providers=[s.entry(sims[s.name].url) for s in specs])
    return {**app.to_env(), "LCHA_EMBEDDINGS": EMBEDDINGS_APP, "LCHA_API_KEYS": GATEWAY_KEY,
            "LCHA_ADMIN_TOKEN": GATEWAY_ADMIN, **extra}


@pytest.fixture(scope="session")
def gateway_sims(sim_factory: Callable[..., SimProcess]) -> dict[str, SimProcess]:
    """One simulator per provider kind the router uses."""
    return {kind: sim_factory(f"gw-{kind}") for kind in ("openai", "anthropic", "gemini")}


@pytest.fixture(scope="module", params=list(CONDITIONS))
def gateway(request: pytest.FixtureRequest, serve_factory: Callable[..., Replica],
            gateway_sims: dict[str, SimProcess]) -> Iterator[Gateway]:
    """A fresh gateway replica with the primary in the condition the parameter names."""
    for sim in gateway_sims.values():
        sim.clear_faults()
    replica = serve_factory(ROUTER_APP, env=gateway_env(gateway_sims))
    faults = CONDITIONS[request.param]
    if faults:
        gateway_sims["openai"].set_faults(**faults)
    try:
        yield Gateway(replica, gateway_sims, request.param)
    finally:
        for sim in gateway_sims.values():
            sim.clear_faults()


@pytest.fixture(scope="module")
def healthy_gateway(serve_factory: Callable[..., Replica],
                    gateway_sims: dict[str, SimProcess]) -> Gateway:
    """A gateway replica for tests that set their own faults (they clear them after); its
    embeddings come from ``lcha serve --embeddings`` rather than ``LCHA_EMBEDDINGS``."""
    for sim in gateway_sims.values():
        sim.clear_faults()
    env = {k: v for k, v in gateway_env(gateway_sims).items() if k != "LCHA_EMBEDDINGS"}
    return Gateway(serve_factory(ROUTER_APP, "--embeddings", EMBEDDINGS_APP, env=env),
                   gateway_sims, "healthy")

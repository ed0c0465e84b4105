"""An app's router built from the deployment's environment talks to each kind over HTTP."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage

from langchain_ha import AppEnvironment, router_from_env
from langchain_ha.cluster.topology import ProviderSpec

pytestmark = pytest.mark.asyncio


async def test_each_kind_answers_and_the_router_fails_over(sim_trio):
    first, second, third = sim_trio
    specs = [ProviderSpec(name="gpt", kind="openai"),
             ProviderSpec(name="claude", kind="anthropic"),
             ProviderSpec(name="gemini", kind="google")]
    env = AppEnvironment(providers=[s.entry(sim.url) for s, sim in
                                    zip(specs, sim_trio, strict=True)]).to_env()
    for name, sim in (("gpt", first), ("claude", second), ("gemini", third)):
        sim.reset_stats()
        answer = await router_from_env(env, only=[name]).ainvoke("How do I reset my password?")
        assert isinstance(answer, AIMessage) and answer.text
        assert sim.calls() == 1, name
    # The primary down: the deployment's second provider (another kind) answers.
    first.set_faults(status=500)
    try:
        answer = await router_from_env(env).ainvoke("How do I reset my password?")
        assert answer.response_metadata["lcha"]["provider"] == "claude"
        assert answer.response_metadata["lcha"]["fallback"] is True
    finally:
        first.clear_faults()

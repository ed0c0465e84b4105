"""A multi-step agent turn survives the replica running it: ``examples/agent`` served by two
real ``lcha serve`` replicas on one PostgreSQL, the one mid-turn SIGKILLed."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from langchain_ha import AppEnvironment
from langchain_ha.cluster.topology import ProviderSpec
from tests.support.fixtures_serve import Replica
from tests.support.fixtures_sim import SimProcess

pytestmark = pytest.mark.asyncio
ASK = "Please refund orders AB-1234 and CD-5678."


@pytest.fixture
def agent_env(sim_trio: tuple[SimProcess, SimProcess, SimProcess],
              store_conninfo: str) -> dict[str, str]:
    """Three providers of three kinds (the simulators), the tools and the database."""
    specs = [ProviderSpec(name="gpt", kind="openai"),
             ProviderSpec(name="claude", kind="anthropic"),
             ProviderSpec(name="gemini", kind="google")]
    first = sim_trio[0]
    return AppEnvironment(
        providers=[s.entry(sim.url) for s, sim in zip(specs, sim_trio, strict=True)],
        tools_url=first.url, embeddings_url=first.url, db_writer=store_conninfo,
    ).to_env()


def _turn(replica: Replica, thread: str, key: str, message: str = ASK,
          turn_id: str | None = None) -> httpx.Response:
    body = {"message": message, "thread_id": thread} | ({"turn_id": turn_id} if turn_id else {})
    return httpx.post(replica.url + "/v1/invoke", timeout=60, json={"input": body},
                      headers={"Idempotency-Key": key})


async def test_a_turn_resumes_on_another_replica_and_each_refund_runs_once(
        agent_env: dict[str, str], sim_trio: tuple[SimProcess, SimProcess, SimProcess],
        serve_factory: Callable[..., Replica]) -> None:
    tools = sim_trio[0]
    a = serve_factory("examples.agent.app:agent", env=agent_env)
    b = serve_factory("examples.agent.app:agent", env=agent_env)
    thread, key = f"refunds-{time.time_ns()}", f"turn-{time.time_ns()}"
    tools.set_faults(latency_ms=1500, routes=["tools"])  # each refund takes 1.5 s to execute

    # Replica A runs the turn: refund one, then (a step later) refund two.  It dies while the
    # second refund is executing.
    first_try = asyncio.ensure_future(asyncio.to_thread(_turn, a, thread, key))
    deadline = time.monotonic() + 30
    while len(tools.stats()["refunds"]["requests_by_key"]) < 2:
        assert time.monotonic() < deadline, (tools.stats(), a.log()[-3000:])
        assert not first_try.done(), first_try.result().text
        await asyncio.sleep(0.05)
    a.child.signal(signal.SIGKILL)
    with pytest.raises(httpx.TransportError):
        await first_try
    first_key, second_key = tools.stats()["refunds"]["requests_by_key"]

    # The client retries the same turn (same Idempotency-Key) on B: it resumes from A's last
    # checkpoint, so refund one is not asked again and refund two replays its key.
    resp = await asyncio.to_thread(_turn, b, thread, key)
    assert resp.status_code == 200, resp.text
    out = resp.json()["output"]
    assert out["resumed"] is True and out["replayed"] is False
    assert out["tool_calls"] == 2
    ledger = tools.stats()["refunds"]
    assert ledger["executed"] == 2, ledger
    assert ledger["requests_by_key"][first_key] == 1, ledger
    assert set(ledger["requests_by_key"]) == {first_key, second_key}, ledger
    assert "AB-1234: refund RF-" in out["answer"] and "CD-5678: refund RF-" in out["answer"]

    # Sent again: the server replays its stored answer (the request key); the same turn
    # under another request key (turn_id in the body) is replayed by the agent from the
    # thread.  Nothing runs either way.
    tools.clear_faults()
    again = await asyncio.to_thread(_turn, b, thread, key)
    assert again.json()["output"] == out
    by_turn = (await asyncio.to_thread(_turn, b, thread, f"{key}-other", ASK,
                                       out["turn_id"])).json()["output"]
    assert by_turn["replayed"] is True and by_turn["answer"] == out["answer"]
    assert tools.stats()["refunds"]["executed"] == 2

    # The thread remembers (memory is the checkpoint); retrieval grounds a policy answer.
    policy = (await asyncio.to_thread(_turn, b, thread, f"{key}-2",
                                      "How long do refunds take to arrive?")).json()["output"]
    assert "5 business days" in policy["answer"], policy
    assert policy["resumed"] is False and policy["tool_calls"] == 0
    # The first turn replayed after a later one still gives its own answer; its id sent with
    # another message is a client mistake, refused.
    late = (await asyncio.to_thread(_turn, b, thread, f"{key}-3", ASK, out["turn_id"])).json()
    assert late["output"]["answer"] == out["answer"] and late["output"]["tool_calls"] == 2
    clash = await asyncio.to_thread(_turn, b, thread, f"{key}-4", "Refund EF-9012.",
                                    out["turn_id"])
    assert clash.status_code == 422 and "turn_id" in clash.text


async def test_bad_input_is_a_422_naming_the_field(
        agent_env: dict[str, str], serve_factory: Callable[..., Replica]) -> None:
    replica = serve_factory("examples.agent.app:agent", env=agent_env)
    for body, field in (({"message": "hi"}, "thread_id"), ({"thread_id": "t"}, "message"),
                        ({"message": "x" * 40_000, "thread_id": "t"}, "message")):
        resp = httpx.post(replica.url + "/v1/invoke", json={"input": body}, timeout=30)
        assert resp.status_code == 422, resp.text
        assert field in resp.text

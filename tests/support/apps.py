"""Tiny Runnables served in the replica-server tests (user code, not our components)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableGenerator, RunnableLambda

from langchain_ha._context import current_request_key
from langchain_ha.resilience.degrade import record_degraded

_CALLS = Path(os.environ.get("LCHA_TEST_CALLS", "/tmp/lcha-test-calls"))


def _count() -> None:
    with _CALLS.open("a") as f:
        f.write(f"{current_request_key()}\n")


async def _echo(value: Any) -> Any:
    _count()
    return {"echo": value}


async def _nap(value: Any) -> Any:
    # Counted as it starts (a request killed mid-sleep ran), sleeps for ``input["sleep"]``
    # seconds (at most 5) when asked to, then echoes.
    _count()
    if isinstance(value, dict) and isinstance(value.get("sleep"), int | float):
        await asyncio.sleep(min(float(value["sleep"]), 5.0))
    return {"echo": value}


async def _slow(value: Any) -> Any:
    await asyncio.sleep(float(os.environ.get("LCHA_TEST_SLOW_S", "1.0")))
    return {"done": value}


async def _degraded(value: Any) -> Any:
    record_degraded("retrieval")
    return {"answer": "no context found, answering from the model alone"}


async def _failing(value: Any) -> Any:
    raise RuntimeError("boom with a secret inside")


async def _leaky(value: Any) -> Any:
    raise RuntimeError("could not connect: host=db port=5432 user=app password=leaked-pw-31")


async def _chunks(values: AsyncIterator[Any]) -> AsyncIterator[str]:
    async for _ in values:
        for word in ("one ", "two ", "three"):
            await asyncio.sleep(float(os.environ.get("LCHA_TEST_CHUNK_S", "0.01")))
            yield word


echo = RunnableLambda(_echo)
nap = RunnableLambda(_nap)
slow = RunnableLambda(_slow)
degraded = RunnableLambda(_degraded)
failing = RunnableLambda(_failing)
leaky = RunnableLambda(_leaky)
streaming = RunnableGenerator(_chunks)


async def _trivial(value: Any) -> Any:
    return value


trivial = RunnableLambda(_trivial)


async def _burn(value: Any) -> Any:
    # CPU-bound work on the event loop (what LangChain's own per-call work is, in bulk).
    until = time.perf_counter() + float(os.environ.get("LCHA_TEST_BURN_MS", "20")) / 1000
    while time.perf_counter() < until:
        pass
    return {"burnt": value}


burn = RunnableLambda(_burn)


def claude() -> Any:
    """A plain ChatAnthropic at ``LCHA_TEST_ANTHROPIC_URL``: gateway mode without a router."""
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic(base_url=os.environ["LCHA_TEST_ANTHROPIC_URL"], api_key="k",  # type: ignore[call-arg,arg-type]
                         model="sim-claude", max_retries=0)

"""In-process overhead of ResilientChatModel over calling the provider's chat model directly.

No network: the provider is a scripted chat model, so the figure is the router's own cost per
call (callbacks, breaker, engine, hedging timer).  Prints both figures and the difference.
Run: python benchmarks/router_overhead.py [N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.scripted import Scripted

from langchain_ha.resilience.chat import Provider, ResilientChatModel


async def _time(call, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        began = time.perf_counter()
        await call("hello")
        out.append((time.perf_counter() - began) * 1e3)
    return out


async def main(n: int) -> None:
    raw = Scripted(label="raw")
    routed = ResilientChatModel(providers=[Provider(name="a", model=Scripted(label="a")),
                                           Provider(name="b", model=Scripted(label="b"))])
    await _time(raw.ainvoke, 200)
    await _time(routed.ainvoke, 200)
    raw_ms = statistics.median(await _time(raw.ainvoke, n))
    routed_ms = statistics.median(await _time(routed.ainvoke, n))
    print(f"raw chat model      p50 {raw_ms:.3f} ms")
    print(f"ResilientChatModel  p50 {routed_ms:.3f} ms")
    print(f"overhead            {routed_ms - raw_ms:+.3f} ms  ratio {routed_ms / raw_ms:.2f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))

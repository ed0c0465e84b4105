"""Serving overhead: ``/v1/invoke`` of ``lcha serve`` vs a bare FastAPI endpoint.

Both run the same trivial Runnable in a real uvicorn process with the same settings
(httptools, uvloop, one worker, no access log); the same load generator (async httpx,
closed loop) measures throughput and latency.  Prints both and the ratio.
Run: python benchmarks/serve_overhead.py [requests] [concurrency]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from langchain_ha._percentile import percentile  # noqa: E402
from langchain_ha._proc import Child, free_port, python_argv  # noqa: E402

BARE = """
import uvicorn
from fastapi import FastAPI
from tests.support.apps import trivial

app = FastAPI()

@app.post("/v1/invoke")
async def invoke(body: dict) -> dict:
    return {"output": await trivial.ainvoke(body["input"])}

uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False,
            http="httptools", loop="uvloop")
"""


async def _load(url: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def worker() -> None:
            for i in todo:
                began = time.perf_counter()
                resp = await client.post(url, json={"input": {"n": i}})
                resp.raise_for_status()
                latencies.append((time.perf_counter() - began) * 1000)

        for _ in range(200):  # warm-up
            await client.post(url, json={"input": {"n": 0}})
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return requests / elapsed, latencies


def _p(values: list[float], q: float) -> float:
    """The project's one (nearest-rank) percentile, 0 with no values."""
    return percentile(values, q) or 0.0


def main(requests: int = 4000, concurrency: int = 16) -> None:
    logdir = Path("/tmp/lcha-bench")
    logdir.mkdir(exist_ok=True)
    ours_port, bare_port = free_port(), free_port()
    env = {"PYTHONPATH": str(ROOT)}
    ours = Child(python_argv("-m", "langchain_ha.cli", "serve", "tests.support.apps:trivial",
                             "--port", str(ours_port), "--max-inflight", "1000"),
                 name="lcha-serve", cwd=ROOT, env=env, log_path=logdir / "serve-ours.log")
    bare = Child(python_argv("-c", BARE.replace("{port}", str(bare_port))), name="bare",
                 cwd=ROOT, env=env, log_path=logdir / "serve-bare.log")
    try:
        ours.wait_http(f"http://127.0.0.1:{ours_port}/readyz")
        bare.wait_http(f"http://127.0.0.1:{bare_port}/docs")
        results = {}
        for _ in range(2):  # alternate, so neither always runs on a warmer machine
            for name, port in (("bare FastAPI", bare_port), ("lcha serve", ours_port)):
                rps, lat = asyncio.run(_load(f"http://127.0.0.1:{port}/v1/invoke", requests,
                                             concurrency))
                best = results.get(name)
                if best is None or rps > best[0]:
                    results[name] = (rps, lat)
        for name, (rps, lat) in results.items():
            print(f"{name:13} {rps:8.0f} req/s  p50 {statistics.median(lat):6.2f} ms  "
                  f"p99 {_p(lat, 0.99):6.2f} ms")
        ratio = results["lcha serve"][0] / results["bare FastAPI"][0]
        print(f"throughput ratio lcha/bare: {ratio:.3f} (best of 2 runs each, "
              f"{requests} requests, concurrency {concurrency})")
    finally:
        ours.stop()
        bare.stop()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args)

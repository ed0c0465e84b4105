"""What keeping Idempotency-Keys in PostgreSQL costs a replica, against keeping them in memory.

Two real ``lcha serve`` processes serve the same trivial Runnable; one keeps keys in its memory
(``LCHA_IDEMPOTENCY_STORE=memory``), the other in a real PostgreSQL started here
(``postgres``: a read, a claim and the stored answer per new key; one read per replay).  The
same closed-loop load sends a fresh key with every request, then sends the same keys again
(replays).  Prints throughput and latency of each, and the ratio against memory.
Run: python benchmarks/idempotency_store.py [requests] [concurrency]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from langchain_ha._percentile import percentile  # noqa: E402
from langchain_ha._proc import Child, free_port, python_argv  # noqa: E402
from langchain_ha.cluster.pgbin import LocalPostgres, prepare_dir  # noqa: E402


async def _load(url: str, keys: list[str], concurrency: int) -> tuple[float, list[float], int]:
    """Send one request per key; throughput, latencies (ms) and how many were replays."""
    latencies: list[float] = []
    replayed = 0
    todo = iter(keys)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def worker() -> None:
            nonlocal replayed
            for key in todo:
                began = time.perf_counter()
                resp = await client.post(url, json={"input": {"k": key}},
                                         headers={"Idempotency-Key": key})
                resp.raise_for_status()
                latencies.append((time.perf_counter() - began) * 1000)
                replayed += resp.headers.get("idempotent-replayed") == "true"

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(keys) / elapsed, latencies, replayed


def _serve(store: str, env: dict[str, str], logdir: Path) -> tuple[Child, str]:
    port = free_port()
    child = Child(python_argv("-m", "langchain_ha.cli", "serve", "tests.support.apps:trivial",
                              "--port", str(port), "--max-inflight", "1000"),
                  name=f"serve-{store}", cwd=ROOT, log_path=logdir / f"serve-{store}.log",
                  env={"PYTHONPATH": str(ROOT), "LCHA_IDEMPOTENCY_STORE": store, **env})
    url = f"http://127.0.0.1:{port}"
    child.wait_http(url + "/readyz", timeout=60)
    return child, url + "/v1/invoke"


def _line(name: str, rps: float, lat: list[float], base: float | None) -> str:
    ratio = f"   {rps / base:.2f}x memory's throughput" if base else ""
    return (f"{name:<28} {rps:8.0f} req/s   p50 {statistics.median(lat):6.2f} ms   "
            f"p99 {percentile(lat, 99):6.2f} ms{ratio}")


def main(requests: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = prepare_dir(Path(tmp) / "pg")
        pg = LocalPostgres(base / "data", free_port(), password=uuid.uuid4().hex)
        pg.start()
        children: list[Child] = []
        try:
            results = {}
            for store, env in (("memory", {}), ("postgres", {"LCHA_DB_WRITER": pg.conninfo})):
                child, url = _serve(store, env, Path(tmp))
                children.append(child)
                warm = [f"warm-{store}-{i}" for i in range(200)]
                asyncio.run(_load(url, warm, concurrency))
                keys = [f"{store}-{uuid.uuid4().hex}" for _ in range(requests)]
                fresh = asyncio.run(_load(url, keys, concurrency))
                again = asyncio.run(_load(url, keys, concurrency))
                results[store] = (fresh, again)
            print(f"{requests} requests per phase, {concurrency} concurrent, one replica each; "
                  "PostgreSQL 18 on this machine (loopback)")
            for phase, i in (("new keys", 0), ("replays", 1)):
                base_rps = results["memory"][i][0]
                for store in ("memory", "postgres"):
                    rps, lat, replayed = results[store][i]
                    print(_line(f"{phase}, {store}", rps, lat,
                                base_rps if store != "memory" else None)
                          + f"   ({replayed}/{len(lat)} replayed)")
        finally:
            for child in children:
                child.stop()
            pg.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000,
         int(sys.argv[2]) if len(sys.argv) > 2 else 16)

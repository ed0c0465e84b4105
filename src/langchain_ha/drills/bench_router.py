"""``lcha bench router``: the router against the usual recipes, under provider faults.

Two provider simulators run as real processes (a primary and a secondary, each with a base
latency and jitter like a real provider).  Every contender gets the same workload (N requests,
concurrency C, closed loop) in every scenario, starting cold (a fresh client, as after a
deploy), with the fault already present on the primary:

- ``healthy``: no fault;  ``outage``: the primary answers 500 to everything;
- ``ratelimit``: 429 with Retry-After 2;  ``hang``: the primary never answers;
- ``stream_cut``: streaming requests whose primary streams die after 3 chunks.

Two more rows measure pure overhead against a zero-latency simulator: ``overhead_seq``
(sequential) and ``overhead_c`` (at concurrency C).  ``primary_calls`` is read from the
primary simulator's ``/_stats``.  An answer counts as failed if it raised, or if its text is
not the simulator's deterministic answer to the question (so a garbled continuation fails).

Small differences (the router's overhead is tens of microseconds) drown in run-to-run noise,
so ``--rounds R`` repeats every run R times, contenders interleaved in alternating order, and
pools the latencies; the simulators derive a question's jitter from its text, so every
contender waits the same for the same question (paired samples).  Without a fault, ``raw``
talks to the same simulator process as the others' first choice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from langchain_ha._proc import Child, free_port, python_argv
from langchain_ha._usage import UsageError
from langchain_ha.drills._contenders import CONTENDERS, Endpoints, build_contender
from langchain_ha.providers import ADMIN_TOKEN_ENV, admin_headers, expected_answer

SCENARIOS: dict[str, dict[str, Any]] = {
    "healthy": {},
    "outage": {"status": 500},
    "ratelimit": {"status": 429, "retry_after_s": 2},
    "hang": {"hang": True},
    "stream_cut": {"disconnect_after_chunks": 3},
    "overhead_seq": {},
    "overhead_c": {},
}
STREAMING = {"stream_cut"}
RUN_BUDGET_S = 90.0


@dataclass
class Row:
    """One contender in one scenario."""

    scenario: str
    contender: str
    requests: int
    failed: int
    p50_ms: float
    p99_ms: float
    primary_calls: int
    concurrency: int
    note: str = ""
    rounds: int = 1


class Simulators:
    """Two simulators with a realistic latency, and two with none (for overhead rows)."""

    def __init__(self, latency_ms: float, jitter_ms: float, logdir: Path) -> None:
        self.children: list[Child] = []
        self.admin_token = secrets.token_urlsafe(24)  # this run's simulators' admin API
        self.realistic = self._pair(latency_ms, jitter_ms, logdir, "lat")
        self.instant = self._pair(0.0, 0.0, logdir, "zero")

    def _pair(self, latency: float, jitter: float, logdir: Path, tag: str) -> Endpoints:
        urls = []
        for name in ("primary", "secondary"):
            port = free_port()
            child = Child(
                python_argv("-m", "langchain_ha.providers.simulator", "--port", str(port),
                            "--name", name, "--latency-ms", str(latency),
                            "--jitter-ms", str(jitter)),
                name=f"sim-{tag}-{name}", log_path=logdir / f"sim-{tag}-{name}.log",
                env={ADMIN_TOKEN_ENV: self.admin_token},
            )
            self.children.append(child)
            url = f"http://127.0.0.1:{port}"
            child.wait_http(url + "/v1/models", timeout=30, status=None)
            urls.append(url)
        return Endpoints(primary=urls[0], secondary=urls[1])

    def stop(self) -> None:
        for child in self.children:
            child.stop()


async def _admin(client: httpx.AsyncClient, url: str, faults: dict[str, Any]) -> None:
    (await client.delete(url + "/_faults")).raise_for_status()
    (await client.delete(url + "/_stats")).raise_for_status()
    if faults:
        resp = await client.post(url + "/_faults", json={**faults, "routes": ["chat"]})
        resp.raise_for_status()


async def _primary_calls(client: httpx.AsyncClient, url: str) -> int:
    stats = (await client.get(url + "/_stats")).raise_for_status().json()
    return int(stats.get("received", {}).get("chat", 0))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 1)))  # nearest rank
    return ordered[min(rank, len(ordered)) - 1]


async def _workload(
    call: Callable[[str], Awaitable[str]], requests: int, concurrency: int
) -> tuple[list[float], int, str]:
    """Closed loop: ``concurrency`` workers share ``requests`` questions."""
    latencies: list[float] = []
    failed = 0
    first_error = ""
    counter = iter(range(requests))

    async def worker() -> None:
        nonlocal failed, first_error
        for i in counter:
            question = f"What is the status of request number {i} in the queue?"
            began = time.perf_counter()
            try:
                text = await call(question)
                ok = text == expected_answer([("user", question)])
                if not ok and not first_error:
                    first_error = f"wrong answer: {text[:80]!r}"
            except Exception as exc:
                ok = False
                if not first_error:
                    first_error = f"{type(exc).__name__}: {str(exc)[:120]}"
            latencies.append((time.perf_counter() - began) * 1000)
            failed += 0 if ok else 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    _done, pending = await asyncio.wait(tasks, timeout=RUN_BUDGET_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    unfinished = requests - len(latencies)
    if unfinished:
        failed += unfinished
        first_error = first_error or f"{unfinished} requests unfinished after {RUN_BUDGET_S}s"
    return latencies, failed, first_error


async def _one(admin: httpx.AsyncClient, ends: Endpoints, scenario: str, name: str, n: int,
               conc: int) -> tuple[list[float], int, str, int] | None:
    """One cold run of one contender: latencies, failed, first error, primary calls."""
    # Without a fault, raw talks to the same simulator process as the others' first choice.
    ends = dataclasses.replace(ends, fault_free=not SCENARIOS[scenario])
    built = build_contender(name, ends, streaming=scenario in STREAMING)
    if built is None:
        return None
    await _admin(admin, ends.primary, SCENARIOS[scenario])
    await _admin(admin, ends.secondary, {})
    latencies, failed, err = await _workload(built, n, conc)
    return latencies, failed, err, await _primary_calls(admin, ends.primary)


async def _run(requests: int, concurrency: int, scenarios: list[str], contenders: list[str],
               sims: Simulators, rounds: int = 1) -> list[Row]:
    """Every scenario: ``rounds`` cold runs per contender, interleaved, pooled into one row.

    The order of contenders alternates between rounds, so a drift in the machine's speed
    (another process, thermal state) falls on every contender alike.
    """
    rows: list[Row] = []
    async with httpx.AsyncClient(timeout=10, headers=admin_headers(sims.admin_token)) as admin:
        for scenario in scenarios:
            overhead = scenario.startswith("overhead")
            ends = sims.instant if overhead else sims.realistic
            conc = 1 if scenario == "overhead_seq" else concurrency
            n = min(requests, 200) if scenario == "overhead_seq" else requests
            pooled: dict[str, tuple[list[float], int, str, int]] = {}
            missing: set[str] = set()
            for r in range(rounds):
                for name in contenders if r % 2 == 0 else contenders[::-1]:
                    if name in missing:
                        continue
                    got = await _one(admin, ends, scenario, name, n, conc)
                    if got is None:
                        missing.add(name)
                        continue
                    lat, failed, err, calls = pooled.get(name, ([], 0, "", 0))
                    pooled[name] = (lat + got[0], failed + got[1], err or got[2], calls + got[3])
            for name in contenders:
                if name in missing:
                    rows.append(Row(scenario, name, 0, 0, float("nan"), float("nan"), 0, conc,
                                    note="not installed"))
                else:
                    lat, failed, err, calls = pooled[name]
                    rows.append(Row(
                        scenario, name, n * rounds, failed, round(_percentile(lat, 0.50), 2),
                        round(_percentile(lat, 0.99), 2), calls, conc, note=err, rounds=rounds,
                    ))
                print(_format_row(rows[-1], rows), flush=True)
            await _admin(admin, ends.primary, {})
    return rows


def _baseline(row: Row, rows: list[Row]) -> Row | None:
    for r in rows:
        if r.scenario == row.scenario and r.contender == "raw" and r.requests:
            return r
    return None


def _format_row(row: Row, rows: list[Row]) -> str:
    base = _baseline(row, rows)
    ratio = ""
    if base and base.p50_ms and base.p99_ms and row.requests:
        ratio = (f"{row.p50_ms / base.p50_ms:6.2f}x {row.p99_ms / base.p99_ms:6.2f}x "
                 f"(p50 {row.p50_ms - base.p50_ms:+.2f} ms)")
    return (f"{row.scenario:13} {row.contender:20} n={row.requests:<4} c={row.concurrency:<3} "
            f"failed={row.failed:<4} p50={row.p50_ms:9.2f}ms p99={row.p99_ms:9.2f}ms "
            f"primary_calls={row.primary_calls:<5} vs raw {ratio} {row.note[:60]}")


def main(*, json_path: str | None, requests: int, concurrency: int, scenarios: list[str],
         contenders: list[str], rounds: int = 1, latency_ms: float = 60.0,
         jitter_ms: float = 40.0) -> int:
    """Run the benchmark; print a table (ratios against ``raw``); optionally write JSON."""
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise UsageError(f"--scenarios: unknown {unknown}; choose from {sorted(SCENARIOS)}")
    bad = [c for c in contenders if c not in CONTENDERS]
    if bad:
        raise UsageError(f"--contenders: unknown {bad}; choose from {sorted(CONTENDERS)}")
    if requests < 1 or concurrency < 1 or rounds < 1:
        raise UsageError("--requests, --concurrency and --rounds must be at least 1")
    if "raw" in contenders:  # baseline first, so ratios can be printed as rows arrive
        contenders = ["raw", *[c for c in contenders if c != "raw"]]
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    logdir = Path(os.environ.get("LCHA_BENCH_LOGDIR", "/tmp/lcha-bench"))
    logdir.mkdir(parents=True, exist_ok=True)
    sims = Simulators(latency_ms, jitter_ms, logdir)
    try:
        rows = asyncio.run(_run(requests, concurrency, scenarios, contenders, sims, rounds))
    finally:
        sims.stop()
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in rows], indent=2))
        print(f"wrote {json_path}")
    return 0

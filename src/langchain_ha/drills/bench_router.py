"""``lcha bench router``: the router against the usual recipes, each configured as its own docs
recommend, under provider faults.

Two provider simulators run as real processes (a primary and a secondary, each with a base
latency and jitter like a real provider).  Every contender (see
:mod:`langchain_ha.drills._contenders` for their settings and the pages they come from) gets
the same workload (N requests, concurrency C, closed loop) in every scenario, starting cold (a
fresh client, as after a deploy), with the fault already set when the run starts:

- ``healthy``: no fault;  ``outage``: the primary answers 500 to everything;
- ``ratelimit``: 429 with Retry-After 2;  ``hang``: the primary never answers;
- ``stream_cut``: streamed requests whose primary streams die after 3 chunks;
- ``stream_ignore`` (and ``_preamble``, ``_reword``): streams cut the same way, and the
  secondary ignores a request to continue a partial answer and starts over (the identical
  answer, a preamble then the answer, or the answer reworded);
- ``flapping``: the primary is down (503) for 3 s, up for 3 s, and so on;
- ``agent_tools``: a tool-calling task (look up an order, answer from the tool's result) while
  the primary is down (500); each contender runs the tool loop its docs show.

Two more rows measure pure overhead against a zero-latency simulator: ``overhead_seq``
(sequential) and ``overhead_c`` (at concurrency C).

Per contender and scenario: ``ok`` (the answer is the simulator's deterministic one,
:func:`langchain_ha.providers.expected_answer`; for the tool task the answer it gives from the
tool's result), ``wrong`` (an answer, but another text: a repeated or garbled stream, an error
message returned as the answer), ``errors`` (raised), ``unfinished`` (not done within the run
budget); ``completed_per_s`` (ok answers per second of the run's wall time); p50/p99
(nearest-rank) of the ok answers and of all finished requests; ``primary_calls``, read from the
primary simulator's ``/_stats``; ratios against ``raw`` and against every other contender.

Small differences (the router's overhead is tens of microseconds) drown in run-to-run noise,
so ``--rounds R`` repeats every run R times, contenders interleaved in alternating order, and
pools the results; the simulators derive a question's jitter from its text, so every
contender waits the same for the same question (paired samples).  Without a fault, ``raw``
talks to the same simulator process as the others' first choice; with one, to the secondary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from langchain_ha._percentile import DEFINITION, percentile
from langchain_ha._proc import Child, free_port, python_argv
from langchain_ha._usage import UsageError
from langchain_ha.drills._contenders import (
    CONTENDERS,
    OURS,
    PEERS,
    Call,
    Contender,
    Endpoints,
    Task,
    build_contender,
    order_record,
)
from langchain_ha.providers import ADMIN_TOKEN_ENV, admin_headers, expected_answer

RUN_BUDGET_S = 90.0
PERCENTILES = DEFINITION


@dataclass(frozen=True)
class Scenario:
    """The faults on each simulator while a run goes, and the kind of work asked."""

    what: str
    primary: dict[str, Any] = field(default_factory=dict)
    secondary: dict[str, Any] = field(default_factory=dict)
    task: Task = "chat"
    overhead: bool = False  # against the zero-latency simulators
    sequential: bool = False  # concurrency 1 (and at most 200 requests)
    requests_factor: int = 1  # times --requests: a run long enough for the fault's rhythm


_CUT = {"disconnect_after_chunks": 3}
SCENARIOS: dict[str, Scenario] = {
    "healthy": Scenario("no fault"),
    "outage": Scenario("the primary answers 500", {"status": 500}),
    "ratelimit": Scenario("the primary answers 429, Retry-After 2",
                          {"status": 429, "retry_after_s": 2}),
    "hang": Scenario("the primary never answers", {"hang": True}),
    "stream_cut": Scenario("streams: the primary's die after 3 chunks", _CUT, task="stream"),
    "stream_ignore": Scenario(
        "streams cut after 3 chunks; the secondary ignores the continuation request and "
        "replays the whole answer", _CUT,
        {"ignore_continuation": True, "restart_style": "replay"}, task="stream"),
    "stream_ignore_preamble": Scenario(
        "as stream_ignore, the secondary restarts with a preamble", _CUT,
        {"ignore_continuation": True, "restart_style": "preamble"}, task="stream"),
    "stream_ignore_reword": Scenario(
        "as stream_ignore, the secondary restarts in other words", _CUT,
        {"ignore_continuation": True, "restart_style": "reword"}, task="stream"),
    "flapping": Scenario("the primary is down (503) 2 s, up 4 s, repeatedly; ten times the "
                         "requests, so a run spans several cycles",
                         {"status": 503, "down_for_s": 2, "up_for_s": 4}, requests_factor=10),
    "agent_tools": Scenario("a tool-calling task (order status) while the primary answers 500",
                            {"status": 500}, task="tools"),
    "overhead_seq": Scenario("no fault, zero-latency simulators, one request at a time",
                             overhead=True, sequential=True),
    "overhead_c": Scenario("no fault, zero-latency simulators, at concurrency C", overhead=True),
}
DEFAULT_SCENARIOS = [s for s, spec in SCENARIOS.items() if not spec.overhead]


@dataclass
class RunResult:
    """What one run (or several pooled) produced."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    wrong: int = 0
    unfinished: int = 0
    wall_s: float = 0.0
    ok_ms: list[float] = field(default_factory=list)
    finished_ms: list[float] = field(default_factory=list)
    primary_calls: int = 0
    first_error: str = ""
    first_wrong: str = ""

    def add(self, other: RunResult) -> None:
        for name in ("requests", "ok", "errors", "wrong", "unfinished", "wall_s",
                     "primary_calls"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.ok_ms += other.ok_ms
        self.finished_ms += other.finished_ms
        self.first_error = self.first_error or other.first_error
        self.first_wrong = self.first_wrong or other.first_wrong


@dataclass
class Row:
    """One contender in one scenario (every count None when the contender is not installed)."""

    scenario: str
    contender: str
    settings_tag: str
    not_installed: bool
    concurrency: int
    rounds: int
    requests: int | None = None
    ok: int | None = None
    errors: int | None = None
    wrong: int | None = None
    unfinished: int | None = None
    wall_s: float | None = None
    completed_per_s: float | None = None
    p50_ok_ms: float | None = None
    p99_ok_ms: float | None = None
    p50_finished_ms: float | None = None
    p99_finished_ms: float | None = None
    primary_calls: int | None = None
    vs_raw: dict[str, float | None] | None = None
    vs: dict[str, dict[str, float | None]] = field(default_factory=dict)
    first_error: str = ""
    first_wrong: str = ""


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def make_row(scenario: str, contender: Contender, conc: int, rounds: int,
             result: RunResult | None) -> Row:
    """The row of ``contender`` in ``scenario`` from its pooled ``result`` (None: not run)."""
    row = Row(scenario, contender.name, contender.tag, result is None, conc, rounds)
    if result is None:
        return row
    row.requests, row.ok, row.errors = result.requests, result.ok, result.errors
    row.wrong, row.unfinished = result.wrong, result.unfinished
    row.wall_s = round(result.wall_s, 3)
    row.completed_per_s = round(result.ok / result.wall_s, 3) if result.wall_s else None
    row.p50_ok_ms = _round(percentile(result.ok_ms, 0.50))
    row.p99_ok_ms = _round(percentile(result.ok_ms, 0.99))
    row.p50_finished_ms = _round(percentile(result.finished_ms, 0.50))
    row.p99_finished_ms = _round(percentile(result.finished_ms, 0.99))
    row.primary_calls = result.primary_calls
    row.first_error, row.first_wrong = result.first_error, result.first_wrong
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(row: Row, other: Row) -> dict[str, float | None]:
    """``row`` against ``other``: p50 and p99 of the ok answers, and completed/s
    (a p50 ratio below 1 is faster; a completed/s ratio above 1 is more answers per second)."""
    return {"p50": _ratio(row.p50_ok_ms, other.p50_ok_ms),
            "p99": _ratio(row.p99_ok_ms, other.p99_ok_ms),
            "completed_per_s": _ratio(row.completed_per_s, other.completed_per_s)}


def compare(rows: list[Row]) -> None:
    """Fill every row's ratios against ``raw`` and against every other contender."""
    by_scenario: dict[str, list[Row]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, []).append(row)
    for group in by_scenario.values():
        ran = [r for r in group if not r.not_installed]
        raw = next((r for r in ran if r.contender == "raw"), None)
        for row in ran:
            row.vs = {o.contender: ratios(row, o) for o in ran if o is not row}
            row.vs_raw = row.vs.get("raw") if raw is not None else None


# --- the work ------------------------------------------------------------------------------------

def questions(task: Task, n: int) -> list[tuple[str, str]]:
    """``n`` questions for ``task``, each with the answer a correct contender returns."""
    if task == "tools":
        out = []
        for i in range(n):
            order = f"AB-{1000 + i}"
            question = f"What is the status of order {order}?"
            out.append((question, expected_answer([("user", question),
                                                   ("tool", order_record(order))])))
        return out
    return [(q, expected_answer([("user", q)])) for q in (
        f"What is the status of request number {i} in the queue?" for i in range(n))]


async def workload(call: Call, work: list[tuple[str, str]], concurrency: int,
                   budget_s: float = RUN_BUDGET_S) -> RunResult:
    """Closed loop: ``concurrency`` workers share the questions, until done or out of budget."""
    result = RunResult(requests=len(work))
    pending = iter(work)

    async def worker() -> None:
        for question, expected in pending:
            began = time.perf_counter()
            try:
                text = await call(question)
            except Exception as exc:
                result.errors += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"[:200]
            else:
                if text == expected:
                    result.ok += 1
                    result.ok_ms.append((time.perf_counter() - began) * 1000)
                else:
                    result.wrong += 1
                    result.first_wrong = result.first_wrong or f"{text[:160]!r}"
            result.finished_ms.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    _done, unfinished = await asyncio.wait(tasks, timeout=budget_s)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    result.wall_s = time.perf_counter() - began
    result.unfinished = result.requests - result.ok - result.errors - result.wrong
    return result


# --- the simulators ------------------------------------------------------------------------------

class Simulators:
    """Two simulators with a realistic latency, and two with none (for overhead rows)."""

    def __init__(self, latency_ms: float, jitter_ms: float, logdir: Path) -> None:
        self.children: list[Child] = []
        self.admin_token = secrets.token_urlsafe(24)  # this run's simulators' admin API
        try:
            self.realistic = self._pair(latency_ms, jitter_ms, logdir, "lat")
            self.instant = self._pair(0.0, 0.0, logdir, "zero")
        except BaseException:
            self.stop()
            raise

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


async def _set_faults(client: httpx.AsyncClient, url: str, faults: dict[str, Any]) -> None:
    (await client.delete(url + "/_faults")).raise_for_status()
    (await client.delete(url + "/_stats")).raise_for_status()
    if faults:
        resp = await client.post(url + "/_faults", json={**faults, "routes": ["chat"]})
        resp.raise_for_status()


async def _primary_calls(client: httpx.AsyncClient, url: str) -> int:
    stats = (await client.get(url + "/_stats")).raise_for_status().json()
    return int(stats.get("received", {}).get("chat", 0))


async def _one(admin: httpx.AsyncClient, ends: Endpoints, spec: Scenario, contender: Contender,
               work: list[tuple[str, str]], conc: int) -> RunResult:
    """One cold run of one contender, the faults set just before it starts."""
    assert contender.call is not None
    await _set_faults(admin, ends.secondary, spec.secondary)
    await _set_faults(admin, ends.primary, spec.primary)  # last: flapping counts from here
    try:
        result = await workload(contender.call, work, conc)
    finally:
        contender.close()
    result.primary_calls = await _primary_calls(admin, ends.primary)
    return result


async def warm_up(admin: httpx.AsyncClient, ends: Endpoints, tasks: set[Task],
                  contenders: list[str]) -> None:
    """A few untimed requests of each task through each contender, so that whichever runs
    first does not pay this process's first-call costs (lazy imports, schema building)."""
    ends = dataclasses.replace(ends, fault_free=True)
    await _set_faults(admin, ends.primary, {})
    await _set_faults(admin, ends.secondary, {})
    for task in sorted(tasks):
        for name in contenders:
            contender = build_contender(name, ends, task)
            if contender.call is not None:
                try:
                    await workload(contender.call, questions(task, 3), 1)
                finally:
                    contender.close()


async def run(requests: int, concurrency: int, scenarios: list[str], contenders: list[str],
              sims: Simulators, rounds: int = 1) -> tuple[list[Row], dict[str, Contender]]:
    """Every scenario: ``rounds`` cold runs per contender, interleaved, pooled into one row.

    The order of contenders alternates between rounds, so a drift in the machine's speed
    (another process, thermal state) falls on every contender alike.  Returns the rows and one
    built instance of each contender (for its settings).
    """
    rows: list[Row] = []
    described: dict[str, Contender] = {}
    async with httpx.AsyncClient(timeout=10, headers=admin_headers(sims.admin_token)) as admin:
        await warm_up(admin, sims.instant, {SCENARIOS[s].task for s in scenarios}, contenders)
        for scenario in scenarios:
            spec = SCENARIOS[scenario]
            ends = dataclasses.replace(sims.instant if spec.overhead else sims.realistic,
                                       fault_free=not spec.primary)
            conc = 1 if spec.sequential else concurrency
            count = requests * spec.requests_factor
            work = questions(spec.task, min(count, 200) if spec.sequential else count)
            pooled: dict[str, RunResult] = {}
            shown: dict[str, Contender] = {}
            for r in range(rounds):
                for name in contenders if r % 2 == 0 else contenders[::-1]:
                    contender = build_contender(name, ends, spec.task)  # cold, every run
                    shown[name] = contender
                    if not contender.installed:
                        continue
                    got = await _one(admin, ends, spec, contender, work, conc)
                    pooled.setdefault(name, RunResult()).add(got)
            for name in contenders:
                row = make_row(scenario, shown[name], conc, rounds, pooled.get(name))
                rows.append(row)
                compare(rows)
                print(format_row(row), flush=True)
            described.update({k: v for k, v in shown.items() if k not in described})
            await _set_faults(admin, ends.primary, {})
            await _set_faults(admin, ends.secondary, {})
    return rows, described


# --- the report ----------------------------------------------------------------------------------

def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f}s" if value >= 10_000 else f"{value:.0f}" if value >= 100 \
        else f"{value:.2f}"


def _x(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}x" if value >= 100 else f"{value:.2f}x" if value >= 0.1 \
        else f"{value:.1g}x"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


HEADER = (f"{'scenario':22} {'contender':20} {'settings':46} {'n':>5} {'ok':>5} {'err':>5} "
          f"{'wrong':>5} {'unfin':>5} {'ok/s':>7} {'p50 ok':>7} {'p99 ok':>7} {'p50 all':>7} "
          f"{'p99 all':>7} {'primary':>7}  vs raw: {'p50':>6} {'p99':>6} {'ok/s':>6}")


def format_row(row: Row) -> str:
    """One line of the table."""
    head = f"{row.scenario:22} {row.contender:20} {row.settings_tag[:46]:46}"
    if row.not_installed:
        return f"{head} not installed"
    vs = row.vs_raw or {}
    cps = _rate(row.completed_per_s)
    return (f"{head} {row.requests:>5} {row.ok:>5} {row.errors:>5} {row.wrong:>5} "
            f"{row.unfinished:>5} {cps:>7} {_ms(row.p50_ok_ms):>7} {_ms(row.p99_ok_ms):>7} "
            f"{_ms(row.p50_finished_ms):>7} {_ms(row.p99_finished_ms):>7} "
            f"{row.primary_calls:>7}  {'':8}{_x(vs.get('p50')):>6} {_x(vs.get('p99')):>6} "
            f"{_x(vs.get('completed_per_s')):>6}")


def format_settings(contenders: dict[str, Contender]) -> Iterator[str]:
    """Every contender's settings and the documentation they come from."""
    for c in contenders.values():
        yield f"{c.name}: {c.tag}" + ("  [not installed]" if not c.installed else "")
        yield f"    settings: {json.dumps(c.settings, default=str)}"
        yield f"    docs: {'; '.join(c.docs)}"


def format_vs_peers(rows: list[Row]) -> Iterator[str]:
    """Ours against each peer, per scenario: p50, p99 (ok answers) and completed/s ratios."""
    for row in rows:
        if row.contender not in OURS or row.not_installed:
            continue
        parts = []
        for peer in PEERS:
            r = row.vs.get(peer)
            parts.append(f"{peer} " + ("not run" if r is None else
                                       f"p50 {_x(r['p50'])} p99 {_x(r['p99'])} "
                                       f"ok/s {_x(r['completed_per_s'])}"))
        yield f"{row.scenario:22} {row.contender:20} " + " | ".join(parts)


def format_notes(rows: list[Row]) -> Iterator[str]:
    for row in rows:
        if row.first_error:
            yield f"{row.scenario:22} {row.contender:20} first error: {row.first_error}"
        if row.first_wrong:
            yield f"{row.scenario:22} {row.contender:20} first wrong answer: {row.first_wrong}"


def report(rows: list[Row], contenders: dict[str, Contender], meta: dict[str, Any]
           ) -> dict[str, Any]:
    """The JSON document: the run's parameters, every contender's settings, every row."""
    return {
        **meta,
        "percentiles": PERCENTILES,
        "run_budget_s": RUN_BUDGET_S,
        "scenarios": {name: dataclasses.asdict(SCENARIOS[name]) for name in meta["scenarios"]},
        "contenders": {c.name: {"tag": c.tag, "settings": c.settings, "docs": c.docs,
                                "not_installed": not c.installed}
                       for c in contenders.values()},
        "rows": [dataclasses.asdict(r) for r in rows],
    }


@contextlib.contextmanager
def _logdir() -> Iterator[Path]:
    """``LCHA_BENCH_LOGDIR`` if set (kept), else a private temporary directory (removed)."""
    kept = os.environ.get("LCHA_BENCH_LOGDIR")
    if kept:
        path = Path(kept)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="lcha-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(*, json_path: str | None, requests: int, concurrency: int, scenarios: list[str],
         contenders: list[str], rounds: int = 1, latency_ms: float = 60.0,
         jitter_ms: float = 40.0) -> int:
    """Run the benchmark; print the settings, a table (ratios against ``raw``), ours against
    each peer and the first error or wrong answer of each row; optionally write JSON."""
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise UsageError(f"--scenarios: unknown {unknown}; choose from {sorted(SCENARIOS)}")
    bad = [c for c in contenders if c not in CONTENDERS]
    if bad or not contenders:
        raise UsageError(f"--contenders: unknown {bad}; choose from {sorted(CONTENDERS)}")
    if requests < 1 or concurrency < 1 or rounds < 1:
        raise UsageError("--requests, --concurrency and --rounds must be at least 1")
    if latency_ms < 0 or jitter_ms < 0:
        raise UsageError("--latency-ms and --jitter-ms must be at least 0")
    if "raw" in contenders:  # baseline first, so ratios can be printed as rows arrive
        contenders = ["raw", *[c for c in contenders if c != "raw"]]
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with _logdir() as logdir:
        sims = Simulators(latency_ms, jitter_ms, logdir)
        try:
            print(HEADER, flush=True)
            rows, built = asyncio.run(run(requests, concurrency, scenarios, contenders, sims,
                                          rounds))
        finally:
            sims.stop()
    print("\nsettings (percentiles are nearest-rank; ratios are contender / other, so p50 "
          "below 1x is faster and ok/s above 1x is more answers per second):")
    for line in format_settings(built):
        print("  " + line)
    peers_lines = list(format_vs_peers(rows))
    if peers_lines:
        print("\nvs peers (ours / peer):")
        for line in peers_lines:
            print("  " + line)
    notes = list(format_notes(rows))
    if notes:
        print("\nnotes:")
        for line in notes:
            print("  " + line)
    if json_path:
        meta = {"bench": "router", "requests": requests, "concurrency": concurrency,
                "rounds": rounds, "latency_ms": latency_ms, "jitter_ms": jitter_ms,
                "scenarios": scenarios, "contender_order": contenders}
        Path(json_path).write_text(json.dumps(report(rows, built, meta), indent=2,
                                              default=str))
        print(f"wrote {json_path}")
    return 0

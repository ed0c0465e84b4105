"""``lcha drill`` and ``lcha bench capacity`` from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from langchain_ha._usage import UsageError
from langchain_ha.cluster.state import StateDir
from langchain_ha.drills.scenarios import SCENARIOS


def drill(scenario: str, *, state_dir: Path, rps: float, duration_s: float,
          json_path: Path | None, html_path: Path | None, up: bool) -> int:
    """Run one scenario (or ``all``: each that applies to the deployment, in turn); exit 1
    if a promise was broken or a fault showed nothing."""
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise UsageError(f"SCENARIO: unknown {unknown[0]!r}; one of: all, "
                         + ", ".join(SCENARIOS))
    if rps <= 0 or duration_s < 5:
        raise UsageError("--rps must be > 0 and --duration at least 5 seconds")
    sd = StateDir(state_dir)
    started = False
    if sd.supervisor_pid() is None:
        if not up:
            raise UsageError(f"--state-dir {sd.root}: no deployment running; lcha up first, "
                             "or pass --up to start (and stop) one for the drill")
        from langchain_ha.cluster.topology import load_topology
        from langchain_ha.cluster.upcli import up as start

        start(load_topology(None, state_dir=sd.root, balancer__port=0))
        started = True
    try:
        skipped = not_applicable(sd, names)
        if scenario != "all" and skipped:
            raise UsageError(f"{scenario}: {skipped[scenario]}")
        for name, why in skipped.items():
            print(f"drill {name}: skipped, {why}", flush=True)
        reports = asyncio.run(_run_all(sd, [n for n in names if n not in skipped], rps,
                                       duration_s))
    finally:
        if started:
            from langchain_ha.cluster.upcli import down

            down(sd.root)
    from langchain_ha.drills.report import print_table, write_html, write_json

    print_table(reports)
    if json_path:
        write_json(reports, json_path)
    if html_path:
        write_html(reports, html_path)
    return 0 if all(r["passed"] for r in reports) else 1


def _delay_unsupported(sd: StateDir) -> str | None:
    from langchain_ha.cluster.lab import Lab

    record = sd.state().lab
    return Lab.from_record(record).can_delay() if record else None


def not_applicable(sd: StateDir, names: list[str]) -> dict[str, str]:
    """The scenarios that cannot show anything on this deployment, with the reason."""
    from langchain_ha.cluster.topology import Topology
    from langchain_ha.drills.profiles import profile_for

    topo = Topology.model_validate_json(sd.topology_file.read_text())
    profile = profile_for(topo)
    out = {}
    for name in names:
        sc = SCENARIOS[name]
        if sc.needs_db and not topo.database.enabled:
            out[name] = "it needs the database (database.enabled: true)"
        elif sc.needs_lab and not topo.lab:
            out[name] = "it cuts a zone's network: the deployment must run in a lab (lcha up --lab)"
        elif sc.needs_delay and (why := _delay_unsupported(sd)):
            out[name] = f"it delays a zone's packets, and {why}"
        elif sc.needs_streams and not profile.streams:
            out[name] = (f"the app's profile ({profile.name}) streams no model answers, so "
                         "cutting the provider's streams cannot reach it")
    return out


async def _run_all(sd: StateDir, names: list[str], rps: float,
                   duration_s: float) -> list[dict[str, Any]]:
    from langchain_ha.drills.drill import run_scenario

    reports = []
    for name in names:
        print(f"drill {name}: {SCENARIOS[name].summary} at {rps:g} req/s for {duration_s:g}s",
              flush=True)
        try:
            reports.append(await run_scenario(sd, SCENARIOS[name], rps=rps,
                                              duration_s=duration_s))
        except (ValueError, RuntimeError, TimeoutError) as exc:
            raise UsageError(f"{name}: {exc}") from None
    return reports


def capacity(*, state_dir: Path, p99_ms: float, start: float, step: float, step_s: float,
             hold_s: float, max_rps: float, json_path: Path | None) -> int:
    """Ramp through the balancer, then against one replica; print and save both."""
    from langchain_ha.cluster.topology import Topology
    from langchain_ha.drills.capacity import ramp
    from langchain_ha.drills.profiles import profile_for

    for name, value in (("--start", start), ("--step", step), ("--step-s", step_s),
                        ("--hold-s", hold_s), ("--p99-ms", p99_ms)):
        if value <= 0:
            raise UsageError(f"{name} must be positive (got {value:g})")

    sd = StateDir(state_dir)
    if sd.supervisor_pid() is None:
        raise UsageError(f"--state-dir {sd.root}: no deployment running (lcha up first)")
    state = sd.state()
    key = sd.secrets()["api_key"]
    replica = next(r for r in state.replicas if r.state == "ready")
    topo = Topology.model_validate_json(sd.topology_file.read_text())
    kw = {"p99_ms": p99_ms, "start": start, "step": step, "step_s": step_s, "hold_s": hold_s,
          "max_rps": max_rps}
    profile = profile_for(topo)
    print(f"cluster ({len(state.replicas)} replicas through the balancer):", flush=True)
    cluster = asyncio.run(ramp(str(state.balancer.url), key, label="cluster", profile=profile,
                                **kw))
    print(f"one replica ({replica.id}, direct):", flush=True)
    single = asyncio.run(ramp(f"http://{replica.host}:{replica.port}", key, label="replica",
                              profile=profile, **kw))
    result = {"cluster": cluster, "replica": single, "replicas": len(state.replicas),
              "ratio": round(cluster["capacity_rps"] / single["capacity_rps"], 2)
              if single["capacity_rps"] else None,
              "replayed": cluster["replayed"] + single["replayed"]}
    print(f"capacity: cluster {cluster['capacity_rps']:g} req/s, one replica "
          f"{single['capacity_rps']:g} req/s (ratio {result['ratio']}), each held {hold_s:g} s "
          f"at p99 <= {p99_ms:g} ms with no queue building up and send lag < "
          f"{cluster['max_send_lag_ms']:g} ms; {result['replayed']} replayed responses")
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
    (sd.root / "capacity.json").write_text(json.dumps(result, indent=2))  # for drill overload
    return 1 if result["replayed"] else 0

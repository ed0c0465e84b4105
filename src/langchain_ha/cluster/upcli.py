"""``lcha up|down|status|scale|rollout|logs|validate``: the deployment from the command line.

``up`` starts the supervisor as a detached process (it outlives the command) and follows its
progress until the first answer comes through the load balancer; every other command talks to
it through the state directory (see :mod:`langchain_ha.cluster.state`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from langchain_ha._files import write_private
from langchain_ha._proc import Adopted, Child, pid_matches, port_is_listening, python_argv
from langchain_ha._redact import redact
from langchain_ha._usage import UsageError
from langchain_ha.cluster.balancers import balancer_kind, live_view
from langchain_ha.cluster.dbcli import member_table, text_table
from langchain_ha.cluster.replicas import replica_marker, sim_marker
from langchain_ha.cluster.state import SUPERVISOR_MARKER, DeploymentState, StateDir
from langchain_ha.cluster.topology import Topology, load_topology
from langchain_ha.drills.profiles import profile_for
from langchain_ha.providers import admin_headers

UP_TIMEOUT_S = 300.0


def validate(path: Path) -> int:
    topo = load_topology(path)
    print(f"{path}: valid: {_shape(topo)}")
    return 0


def up(topo: Topology) -> int:
    """Start (or reconnect to) the deployment and wait until it answers."""
    sd = StateDir(topo.state_dir)
    running = sd.supervisor_pid()
    if running:
        print(f"already running (supervisor pid {running}) in {sd.root}")
        _banner(sd)
        return 0
    if topo.lab:
        from langchain_ha.cluster.lab import lab_unsupported

        reason = lab_unsupported()
        if reason:
            raise UsageError(f"--lab (lab: true): {reason}")
    for spec in topo.providers:
        if not spec.simulated and not os.environ.get(str(spec.api_key_env)):
            raise UsageError(f"providers.{spec.name}.api_key_env: set ${spec.api_key_env} "
                             "(the provider's API key) before lcha up")
    sd.create()
    write_private(sd.topology_file, topo.model_dump_json(indent=2))
    sd.secrets()
    adopting = bool(sd.state().replicas)
    print(f"lcha up: {_shape(topo)}; state in {sd.root}"
          + (" (adopting what is still running)" if adopting else ""), flush=True)
    # The supervisor is this command carried on: it gets the whole environment (provider
    # keys, LCHA_* settings) and hands each child only what that child needs.
    child = Child(python_argv("-m", SUPERVISOR_MARKER, str(sd.root)), name="supervisor",
                  inherit=("*",), log_path=sd.logs / "supervisor.log")
    shown = 0
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        state = sd.state()
        mine = state.supervisor.pid == child.pid
        progress = state.progress if mine else []
        for line in progress[shown:]:
            print(f"  {line}", flush=True)
        shown = max(shown, len(progress))
        if mine and state.phase == "ready":
            _banner(sd)
            return 0
        if not child.alive() or (mine and state.phase in ("failed", "stopped")):
            child.proc.wait(60)
            raise UsageError(f"the deployment did not come up; see {sd.logs}/supervisor.log"
                             f"{_tail(sd.logs / 'supervisor.log')}")
        time.sleep(0.3)
    child.stop(timeout=90)
    raise UsageError(f"not ready after {UP_TIMEOUT_S:.0f}s; stopped. See {sd.logs}")


def down(state_dir: Path) -> int:
    """Stop the supervisor (which stops everything), then sweep anything left by PID."""
    sd = StateDir(state_dir)
    pid = sd.supervisor_pid()
    if pid:
        print(f"stopping the deployment (supervisor pid {pid}) …", flush=True)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while pid_matches(pid, SUPERVISOR_MARKER) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_matches(pid, SUPERVISOR_MARKER):
            os.killpg(pid, signal.SIGKILL)
    left = _sweep(sd)
    lab = sd.state().lab
    if lab:
        from langchain_ha.cluster.lab import Lab

        Lab.from_record(lab).destroy()  # idempotent: the supervisor removed it if it could
        print(f"lab network {lab.get('lab_id')}: removed (namespaces, links, rules)")
    ports = [p for p in _ports(sd.state()) if port_is_listening(p)]
    if ports:
        raise UsageError(f"ports still listening after down: {ports}")
    print(f"stopped: nothing left running{f' (swept {left} stray processes)' if left else ''}")
    return 0


def _sweep(sd: StateDir) -> int:
    """Stop, by PID and command line, every process the state file still names."""
    state = sd.state()
    found = 0
    for proc in processes(state):
        marker = proc.get("marker")
        if marker and pid_matches(int(proc["pid"]), marker):
            Adopted(int(proc["pid"]), name=str(proc["name"]), marker=marker).stop(timeout=5)
            found += 1
    if (sd.db_dir / "state.json").exists():
        from langchain_ha.cluster.dbcli import cluster_at

        cluster = cluster_at(sd.db_dir)
        if any(cluster.guardian_pid(z) or cluster.postgres_pid(z) for z in cluster.spec.zones):
            cluster.stop()
            found += 1
    return found


def processes(state: DeploymentState) -> list[dict[str, Any]]:
    """Every process of the deployment: pid, role, zone, port, name (and a command marker)."""
    out: list[dict[str, Any]] = []
    if state.supervisor.pid:
        out.append({"name": "supervisor", "role": "supervisor", "zone": None, "port": None,
                    "pid": state.supervisor.pid, "marker": SUPERVISOR_MARKER})
    lb = state.balancer
    if lb.pid:
        kind = lb.kind or "caddy"
        out.append({"name": kind, "role": "balancer", "zone": None, "port": lb.port,
                    "pid": lb.pid, "marker": lb.marker or "/caddy/initial.json"})
    for name, sim in state.simulators.items():
        out.append({"name": f"sim-{name}", "role": "simulator", "zone": None,
                    "port": sim.port, "pid": sim.pid, "marker": sim_marker(name, sim.port)})
    prom = state.prometheus
    if prom.pid:
        out.append({"name": "prometheus", "role": "prometheus", "zone": None,
                    "port": prom.port, "pid": prom.pid, "marker": prom.marker})
    for r in state.replicas:
        out.append({"name": f"replica-{r.id}", "role": "replica", "zone": r.zone,
                    "port": r.port, "pid": r.pid, "marker": replica_marker(r.id)})
    for m in state.database.members:
        for role, pid in (("guardian", m.guardian_pid), ("patroni", m.patroni_pid),
                          ("postgres", m.postgres_pid)):
            if pid:
                out.append({"name": f"{m.name}-{role}", "role": f"db-{role}",
                            "zone": m.zone, "port": m.port if role == "postgres" else None,
                            "pid": pid, "db_role": m.role})
    return out


def _ports(state: DeploymentState) -> list[int]:
    return [int(p["port"]) for p in processes(state) if p.get("port")]


def status(state_dir: Path, as_json: bool) -> int:
    """Zones, replicas, balancer view, database members, breakers, simulator faults."""
    sd = StateDir(state_dir)
    state = sd.state()
    if state.updated_at is None:
        raise UsageError(f"--state-dir {sd.root}: nothing here (lcha up first)")
    report = collect_status(sd, state)
    # Nothing in the report should hold a secret; redact() makes sure none is printed.
    if as_json:
        print(redact(json.dumps(report, indent=2, default=str)))
    else:
        print(redact(render_status(report)))
    return 0 if report["supervisor"]["running"] else 1


def collect_status(sd: StateDir, state: DeploymentState) -> dict[str, Any]:
    """What ``status --json`` prints: the state file plus live views of each component."""
    secrets = sd.secrets()
    admin = {"Authorization": f"Bearer {secrets['admin_token']}"}
    lb = state.balancer.model_dump(mode="json")
    if state.balancer.admin_socket:
        lb["upstreams"] = live_view(state.balancer)
    sims = {}
    for name, sim in state.simulators.items():
        try:
            faults = httpx.get(f"{sim.url}/_faults", timeout=2,
                               headers=admin_headers(secrets["sim_admin_token"])
                               ).raise_for_status().json()
        except (httpx.HTTPError, ValueError):
            faults = None
        sims[name] = {**sim.model_dump(mode="json"), "faults": faults}
    breakers: dict[str, Any] = {}
    for r in state.replicas:
        if r.state == "ready":
            try:
                resp = httpx.get(f"http://{r.host}:{r.port}/admin/breakers", headers=admin,
                                 timeout=2)
                breakers = {"replica": r.id, "breakers": resp.json()}
                break
            except (httpx.HTTPError, ValueError):
                continue
    sup_pid = sd.supervisor_pid()
    return {
        "supervisor": {"pid": state.supervisor.pid, "running": sup_pid is not None},
        "phase": state.phase if sup_pid else "not running",
        "url": state.balancer.url, "generation": state.generation,
        "per_zone": state.per_zone,
        "rollout": state.rollout.model_dump(mode="json") if state.rollout else None,
        "balancer": lb, "replicas": [r.model_dump(mode="json") for r in state.replicas],
        "simulators": sims, "database": state.database.model_dump(mode="json"),
        "breakers": breakers,
        "processes": [{k: v for k, v in p.items() if k != "marker"} for p in processes(state)],
        "decisions": state.decisions[-10:],
    }


def render_status(report: dict[str, Any]) -> str:
    lines = [f"phase: {report['phase']}   url: {report['url']}   balancer: "
             f"{report['balancer'].get('kind') or 'caddy'}   generation: "
             f"{report['generation']}   replicas per zone: {report['per_zone']}"]
    ups = {u.get("address"): u for u in (report["balancer"].get("upstreams") or [])}
    rows: list[tuple[str, ...]] = [
        ("replica", "zone", "pid", "port", "state", "in-flight", "lb fails", "gen")]
    for r in report["replicas"]:
        u = ups.get(f"{r.get('host') or '127.0.0.1'}:{r['port']}")
        rows.append((str(r["id"]), str(r["zone"]), str(r["pid"]), str(r["port"]), str(r["state"]),
                     str(r["inflight"]), str(u.get("fails")) if u else "-", str(r["generation"])))
    lines += ["", text_table(rows)]
    members = report["database"].get("members", [])
    if members:
        lines += ["", member_table(members)]
    for name, sim in report["simulators"].items():
        lines.append(f"simulator {name}: {sim['url']} faults={sim.get('faults')}")
    for name, b in (report["breakers"].get("breakers") or {}).items():
        lines.append(f"breaker {name}: {b.get('state') if isinstance(b, dict) else b}")
    lines += ["", "recent decisions:", *[f"  {d}" for d in report["decisions"]]]
    return "\n".join(lines)


def scale(state_dir: Path, per_zone: int, wait_s: float = 180.0) -> int:
    sd = _running(state_dir)
    topo = Topology.model_validate_json(sd.topology_file.read_text())
    lo, hi = topo.replicas.min_per_zone, topo.replicas.max_per_zone
    if not lo <= per_zone <= hi:
        raise UsageError(f"N: replicas per zone must be within replicas.min_per_zone={lo} and "
                         f"replicas.max_per_zone={hi} (change them in lcha.yaml)")
    seq = sd.request("scale", per_zone=per_zone)
    want = per_zone * len(topo.zones)

    def done(state: DeploymentState) -> bool:
        reps = state.replicas
        return (state.applied_seq >= seq and len(reps) == want
                and all(r.state == "ready" for r in reps))

    _follow(sd, done, wait_s)
    print(f"scaled: {per_zone} per zone, {want} replicas ready")
    return 0


def rollout(state_dir: Path, canary: float | None, hold_s: float, app: str | None,
            wait_s: float = 600.0) -> int:
    sd = _running(state_dir)
    if canary is not None and not 0 < canary < 100:
        raise UsageError("--canary: a percentage between 0 and 100 (exclusive)")
    if app is not None and not re.fullmatch(r"[\w.]+:[\w.]+", app):
        raise UsageError("--app: module:attr of the Runnable to serve")
    seq = sd.request("rollout", canary=canary, hold_s=hold_s, app=app)

    def done(state: DeploymentState) -> bool:
        ro = state.rollout
        return ro is not None and ro.id == seq and ro.status in ("done", "aborted")

    ro = _follow(sd, done, wait_s).rollout
    assert ro is not None  # done() saw it
    print(f"rollout {ro.status}: {ro.message}")
    return 0 if ro.status == "done" else 1


LOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def logs(state_dir: Path, name: str, lines: int) -> int:
    """Print the last ``lines`` of the log ``name``: a file of the state directory only."""
    sd = StateDir(state_dir)
    have = sorted([p.stem for p in sd.logs.glob("*.log")]
                  + [d for d in ("caddy", "haproxy", "prometheus") if (sd.root / d).is_dir()])
    if not LOG_NAME.fullmatch(name) or ".." in name:
        raise UsageError(f"NAME: {name!r} is not a log name (letters, digits, '-', '_', '.'); "
                         f"have: {', '.join(have) or 'none'}")
    root = sd.root.resolve()
    candidates = [sd.logs / f"{name}.log", sd.root / name / f"{name}.log"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise UsageError(f"NAME: no log {name!r}; have: {', '.join(have) or 'none'}")
    if path.is_symlink() or not path.resolve().is_relative_to(root):
        raise UsageError(f"NAME: {name!r} points outside {root}; not shown")
    text = path.read_text(errors="replace").splitlines()
    print(redact("\n".join(text[-lines:])))
    return 0


def _running(state_dir: Path) -> StateDir:
    sd = StateDir(state_dir)
    if sd.supervisor_pid() is None:
        raise UsageError(f"--state-dir {sd.root}: no deployment running (lcha up first)")
    return sd


def _follow(sd: StateDir, done: Callable[[DeploymentState], bool],
            wait_s: float) -> DeploymentState:
    """Print the supervisor's decisions until ``done(state)``; the final state."""
    seen = set(sd.state().decisions)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state = sd.state()
        for d in state.decisions:
            if d not in seen:
                seen.add(d)
                print(f"  {d}", flush=True)
        if done(state):
            return state
        if sd.supervisor_pid() is None:
            raise UsageError("the supervisor stopped; see lcha logs supervisor")
        time.sleep(0.3)
    raise UsageError(f"not done after {wait_s:.0f}s; lcha status shows where it is")


def _banner(sd: StateDir) -> None:
    url = sd.state().balancer.url
    key = sd.secrets()["api_key"]
    # The app profile's warm-up request, as the example (the demo's: a support question).
    probe = profile_for(Topology.model_validate_json(sd.topology_file.read_text())).warmup()
    body = json.dumps(probe.body).replace("'", "'\\''")
    print(f"\n  URL:     {url}\n  API key: {key}\n  try:\n"
          f"    curl -s {url}{probe.path} -H 'Authorization: Bearer {key}' \\\n"
          f"      -H 'Content-Type: application/json' -d '{body}'\n"
          f"  then:    lcha status   |   lcha down\n", flush=True)


def _shape(topo: Topology) -> str:
    db = (f"{len(topo.zones)} PostgreSQL members ({topo.database.replication})"
          if topo.database.enabled else "no database")
    sims = sum(p.simulated for p in topo.providers)
    return (f"{len(topo.zones)} {'lab ' if topo.lab else ''}zones x "
            f"{topo.replicas.per_zone} replica(s) behind "
            f"{balancer_kind(topo)} "
            f"({topo.mode}), {db}, {sims} simulated provider(s)")


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return ""
    return "\n" + "\n".join(f"  | {line}" for line in lines)

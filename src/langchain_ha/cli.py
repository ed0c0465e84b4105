"""The ``lcha`` command: parses arguments and calls the modules that do the work.

Each subcommand has one ``_add_<name>`` function that declares its arguments and points at a
handler; handlers import their module lazily so ``lcha --help`` stays fast.  Errors the user
can fix are raised as :class:`UsageError` and printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_ha._usage import UsageError

__all__ = ["UsageError", "build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="run an LLM provider simulator (OpenAI, Anthropic, Gemini)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--name", default="sim", help="provider name shown in answers and stats")
    p.add_argument("--latency-ms", type=float, default=0.0, help="base latency of every answer")
    p.add_argument("--jitter-ms", type=float, default=0.0,
                   help="extra latency 0..J (for chat, derived from the question: repeatable)")

    def run(args: argparse.Namespace) -> int:
        from langchain_ha.providers.simulator import run_simulator

        run_simulator(host=args.host, port=args.port, name=args.name,
                      latency_ms=args.latency_ms, jitter_ms=args.jitter_ms)
        return 0

    p.set_defaults(handler=run)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", help="router demo: two simulated providers, an outage mid-way, answers kept"
    )
    p.add_argument("--requests", type=int, default=60)

    def run(args: argparse.Namespace) -> int:
        from langchain_ha.demo.router_demo import main as demo_main

        return demo_main(requests=args.requests)

    p.set_defaults(handler=run)


_BENCH_SCENARIOS = ("healthy,outage,ratelimit,hang,stream_cut,stream_ignore,stream_ignore_preamble,"
                    "stream_ignore_reword,flapping,agent_tools")
_BENCH_CONTENDERS = ("raw,langchain_fallbacks,langchain_agent_mw,litellm_router,langchain_ha,"
                     "langchain_ha_nohedge")


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True)
    r = bsub.add_parser(
        "router", help="router resilience benchmark against simulators",
        description="Every contender, configured as its own docs recommend, against two "
                    "simulated providers under faults; a table of ok / errors / wrong / "
                    "unfinished, completed/s, p50/p99 and primary calls, with ratios.")
    r.add_argument("--json", dest="json_path", help="write the settings and rows to this file")
    r.add_argument("--requests", type=int, default=400, help="requests per run (default 400)")
    r.add_argument("--concurrency", type=int, default=20, help="closed-loop workers (default 20)")
    # Spelled out rather than imported, so that ``lcha --help`` stays fast (a unit test keeps
    # them equal to bench_router.DEFAULT_SCENARIOS and _contenders.CONTENDERS).
    r.add_argument("--scenarios", default=_BENCH_SCENARIOS,
                   help="comma-separated (default: every scenario but overhead_seq and "
                        "overhead_c)")
    r.add_argument("--contenders", default=_BENCH_CONTENDERS,
                   help=f"comma-separated (default: {_BENCH_CONTENDERS})")
    r.add_argument("--rounds", type=int, default=1,
                   help="cold runs per contender, interleaved and pooled (overhead needs ~20)")
    r.add_argument("--latency-ms", type=float, default=60.0,
                   help="the simulators' base latency (default 60)")
    r.add_argument("--jitter-ms", type=float, default=40.0,
                   help="the simulators' latency jitter (default 40)")

    def run(args: argparse.Namespace) -> int:
        from langchain_ha.drills.bench_router import main as bench_main

        return bench_main(
            json_path=args.json_path,
            requests=args.requests,
            concurrency=args.concurrency,
            scenarios=[s for s in args.scenarios.split(",") if s],
            contenders=[c for c in args.contenders.split(",") if c],
            rounds=args.rounds,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
        )

    r.set_defaults(handler=run)

    c = bsub.add_parser("capacity", help="highest arrival rate with p99 under a bound")
    c.add_argument("--p99-ms", type=float, default=1000.0)
    c.add_argument("--start", type=float, default=20.0)
    c.add_argument("--step", type=float, default=10.0)
    c.add_argument("--step-s", type=float, default=10.0, help="seconds per step")
    c.add_argument("--hold-s", type=float, default=60.0,
                   help="seconds the rate found must then be held (else the next lower step)")
    c.add_argument("--max-rps", type=float, default=400.0)
    c.add_argument("--json", dest="json_path", type=Path)
    c.add_argument("--state-dir", type=Path, default=Path(".lcha"))

    def run_capacity(args: argparse.Namespace) -> int:
        from langchain_ha.drills.drillcli import capacity

        return capacity(state_dir=args.state_dir, p99_ms=args.p99_ms, start=args.start,
                        step=args.step, step_s=args.step_s, hold_s=args.hold_s,
                        max_rps=args.max_rps, json_path=args.json_path)

    c.set_defaults(handler=run_capacity)


def _add_ingest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``lcha ingest PATH`` enqueues ingestion tasks; ``lcha worker`` runs them."""
    from langchain_ha.store.commands import add_store_commands

    add_store_commands(sub)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a LangChain Runnable as an HA replica")
    p.add_argument("app", help="module:attr of a Runnable (or of a factory returning one)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--zone", default=None)
    p.add_argument("--replica-id", default=None)
    p.add_argument("--max-inflight", type=int, default=None)
    p.add_argument("--embeddings", default=None, metavar="MODULE:ATTR",
                   help="LangChain Embeddings that /v1/embeddings serves (LCHA_EMBEDDINGS)")

    def run(args: argparse.Namespace) -> int:
        from pydantic import ValidationError
        from pydantic_settings import SettingsError

        from langchain_ha.serve.server import serve
        from langchain_ha.serve.settings import ServeSettings

        overrides = {k: v for k, v in {
            "host": args.host, "port": args.port, "zone": args.zone,
            "replica_id": args.replica_id, "max_inflight": args.max_inflight,
            "embeddings": args.embeddings,
        }.items() if v is not None}
        try:
            settings = ServeSettings(**overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UsageError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        except SettingsError as exc:
            raise UsageError(f"environment: {exc}") from None
        return serve(args.app, settings)

    p.set_defaults(handler=run)


def _add_up(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``lcha up`` and the commands that operate the running deployment."""
    sd_help = "the deployment's state directory (default .lcha, or state_dir in lcha.yaml)"
    p = sub.add_parser("up", help="start the HA deployment: replicas in zones behind HAProxy "
                       "or Caddy, the PostgreSQL cluster, simulated providers, a supervisor")
    p.add_argument("-f", "--file", type=Path, help="topology file (default ./lcha.yaml)")
    p.add_argument("--demo", action="store_true",
                   help="the demo topology: 3 zones x 1 replica, 3 DB members, 2 simulators")
    p.add_argument("--port", type=int, help="the load balancer's port (0: a free one)")
    p.add_argument("--per-zone", type=int, help="replicas per zone")
    p.add_argument("--lab", action="store_true",
                   help="each zone in its own network namespace on an isolated bridge, so "
                        "lcha fault can cut, slow or drop its traffic (Linux, root)")
    p.add_argument("--state-dir", type=Path, help=sd_help)

    def run_up(args: argparse.Namespace) -> int:
        from langchain_ha.cluster.topology import load_topology
        from langchain_ha.cluster.upcli import up

        path = args.file
        if path is None and not args.demo:
            if not Path("lcha.yaml").exists():
                raise UsageError("no lcha.yaml here: pass -f FILE, or --demo for the demo")
            path = Path("lcha.yaml")
        topo = load_topology(path, balancer__port=args.port, replicas__per_zone=args.per_zone,
                             state_dir=args.state_dir, lab=True if args.lab else None)
        return up(topo)

    p.set_defaults(handler=run_up)

    v = sub.add_parser("validate", help="check a topology file; every error, with its field")
    v.add_argument("file", type=Path)
    v.set_defaults(handler=lambda a: _upcli().validate(a.file))

    d = sub.add_parser("down", help="stop the deployment; nothing left running or listening")
    d.add_argument("--state-dir", type=Path, default=Path(".lcha"), help=sd_help)
    d.set_defaults(handler=lambda a: _upcli().down(a.state_dir))

    st = sub.add_parser("status", help="zones, replicas, balancer, database, breakers, faults")
    st.add_argument("--state-dir", type=Path, default=Path(".lcha"), help=sd_help)
    st.add_argument("--json", action="store_true", help="machine-readable (pids, ports, conninfo)")
    st.set_defaults(handler=lambda a: _upcli().status(a.state_dir, a.json))

    sc = sub.add_parser("scale", help="set the replicas per zone (within min/max)")
    sc.add_argument("n", type=int, metavar="N")
    sc.add_argument("--state-dir", type=Path, default=Path(".lcha"), help=sd_help)
    sc.set_defaults(handler=lambda a: _upcli().scale(a.state_dir, a.n))

    ro = sub.add_parser("rollout", help="replace every replica, zone by zone, with draining")
    ro.add_argument("--canary", type=float, metavar="PERCENT",
                    help="first send PERCENT of traffic to one new replica, judge it, go on")
    ro.add_argument("--hold", type=float, default=30.0, help="seconds the canary is watched")
    ro.add_argument("--app", help="serve another module:attr from now on")
    ro.add_argument("--state-dir", type=Path, default=Path(".lcha"), help=sd_help)
    ro.set_defaults(handler=lambda a: _upcli().rollout(a.state_dir, a.canary, a.hold, a.app))

    lg = sub.add_parser("logs", help="the tail of a process's log (default: the supervisor)")
    lg.add_argument("name", nargs="?", default="supervisor",
                    help="supervisor, haproxy, caddy, prometheus, replica-az1-r1, sim-primary, ...")
    lg.add_argument("-n", "--lines", type=int, default=40)
    lg.add_argument("--state-dir", type=Path, default=Path(".lcha"), help=sd_help)
    lg.set_defaults(handler=lambda a: _upcli().logs(a.state_dir, a.name, a.lines))


def _add_drill(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``lcha drill``: load plus a real fault against a running deployment, measured."""
    from langchain_ha.drills.scenarios import SCENARIOS

    p = sub.add_parser("drill", help="load + a real fault, measured (see lcha drill all)")
    p.add_argument("scenario", metavar="SCENARIO",
                   help="all, " + ", ".join(SCENARIOS))
    p.add_argument("--rps", type=float, default=50.0, help="arrival rate (open loop)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds of load (the defaults send 3,000 requests)")
    p.add_argument("--json", dest="json_path", type=Path, help="write the report(s) here")
    p.add_argument("--html", dest="html_path", type=Path, help="write an HTML report here")
    p.add_argument("--up", action="store_true", help="start a demo deployment and stop it after")
    p.add_argument("--state-dir", type=Path, default=Path(".lcha"))

    def run(args: argparse.Namespace) -> int:
        from langchain_ha.drills.drillcli import drill

        return drill(args.scenario, state_dir=args.state_dir, rps=args.rps,
                     duration_s=args.duration, json_path=args.json_path,
                     html_path=args.html_path, up=args.up)

    p.set_defaults(handler=run)


def _add_fault(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``lcha fault``: network faults on a lab deployment's zones, by hand."""
    p = sub.add_parser("fault", help="cut, slow, drop or flap a lab zone's network "
                       "(lcha up --lab); heal it")
    p.add_argument("action", choices=["partition", "latency", "loss", "flap", "heal", "list"])
    p.add_argument("zone", nargs="?", metavar="ZONE",
                   help="a zone, or primary (the database primary's zone); heal: all if none")
    p.add_argument("--direction", choices=["both", "in", "out"], default="both",
                   help="partition: drop what arrives (in), what leaves (out), or both")
    p.add_argument("--from", dest="peers", action="append", metavar="ZONE",
                   help="partition: cut from this zone only (repeatable; default: from all)")
    p.add_argument("--ms", type=float, default=200.0, help="latency: added per packet sent")
    p.add_argument("--jitter", type=float, default=0.0, help="latency: ± this many ms")
    p.add_argument("--percent", type=float, default=10.0, help="loss: share of packets dropped")
    p.add_argument("--period", type=float, default=8.0, help="flap: seconds per cycle")
    p.add_argument("--down", type=float, default=2.0, help="flap: seconds cut per cycle")
    p.add_argument("--for", dest="for_s", type=float, default=60.0,
                   help="flap: seconds to keep flapping (in the foreground)")
    p.add_argument("--state-dir", type=Path, default=Path(".lcha"))

    def run(args: argparse.Namespace) -> int:
        from langchain_ha.drills.faultcli import fault

        return fault(args.state_dir, args.action, args.zone, direction=args.direction,
                     peers=args.peers, ms=args.ms, jitter_ms=args.jitter,
                     percent=args.percent, period_s=args.period, down_s=args.down,
                     for_s=args.for_s)

    p.set_defaults(handler=run)


def _add_render(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``lcha render k8s|prometheus``: the topology as Kubernetes / Prometheus artefacts."""
    from langchain_ha.deploy.render import add_render

    add_render(sub)


def _upcli() -> Any:
    from langchain_ha.cluster import upcli

    return upcli


def _add_db(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("db", help="the HA PostgreSQL + pgvector cluster (Patroni) alone")
    p.add_argument("--state-dir", default=".lcha/db", help="where members keep data and state")
    dsub = p.add_subparsers(dest="db_command", required=True)
    up = dsub.add_parser("up", help="start the members (one per zone) and wait for a leader")
    up.add_argument("--replication", choices=["async", "sync", "strict"], default="sync")
    up.add_argument("--show-secrets", action="store_true")
    up.add_argument("--etcd", metavar="HOST:PORT,...",
                    help="use these etcd members as the DCS (default: raft inside Patroni)")
    dsub.add_parser("down", help="stop every member; nothing left running")
    st = dsub.add_parser("status", help="members, roles, lag, timeline, conninfo")
    st.add_argument("--json", action="store_true")
    st.add_argument("--show-secrets", action="store_true")
    sw = dsub.add_parser("switchover", help="planned switchover (to the sync standby)")
    sw.add_argument("--to", default=None, help="candidate member name")
    bk = dsub.add_parser("backup", help="base backup of the leader (pg_basebackup + WAL)")
    bk.add_argument("--to", required=True, help="a new directory for the backup")
    rs = dsub.add_parser("restore", help="serve a backup from a fresh server (foreground)")
    rs.add_argument("--from", dest="source", required=True, help="a backup directory")
    rs.add_argument("--to", required=True, help="a new directory for the restored data")
    rs.add_argument("--port", type=int, default=None)
    rs.add_argument("--target-time", help="replay the WAL archive up to this moment (ISO 8601 "
                    "with zone); default: to the end of the archive")

    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        from langchain_ha.cluster import dbcli

        state_dir = Path(args.state_dir).resolve()
        if args.db_command == "up":
            return dbcli.up(state_dir, args.replication, args.show_secrets, args.etcd)
        if args.db_command == "down":
            return dbcli.down(state_dir)
        if args.db_command == "status":
            return dbcli.status(state_dir, args.json, args.show_secrets)
        if args.db_command == "backup":
            return dbcli.backup_cmd(state_dir, Path(args.to).resolve())
        if args.db_command == "restore":
            return dbcli.restore_cmd(state_dir, Path(args.source).resolve(),
                                     Path(args.to).resolve(), args.port, args.target_time)
        return dbcli.switchover(state_dir, args.to)

    p.set_defaults(handler=run)


# Further subcommands (serve, db, up, drill, render) register here, one _add_* each.
_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_sim,
    _add_demo,
    _add_bench,
    _add_ingest,
    _add_serve,
    _add_db,
    _add_up,
    _add_drill,
    _add_fault,
    _add_render,
]


def build_parser() -> argparse.ArgumentParser:
    """The full ``lcha`` argument parser."""
    parser = argparse.ArgumentParser(prog="lcha", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lcha`` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        from langchain_ha._redact import redact

        print(redact(f"lcha {args.command}: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

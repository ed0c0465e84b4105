"""The ``lcha`` command: parses arguments and calls the modules that do the work.

Each subcommand has one ``_add_<name>`` function that declares its arguments and points at a
handler; handlers import their module lazily so ``lcha --help`` stays fast.  Errors the user
can fix are raised as :class:`UsageError` and printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A mistake the user can fix; printed without a traceback."""


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="run an LLM provider simulator (OpenAI + Anthropic APIs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--name", default="sim", help="provider name shown in answers and stats")
    p.add_argument("--latency-ms", type=float, default=0.0, help="base latency of every answer")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="random extra latency (0..J)")

    def run(args: argparse.Namespace) -> int:
        from langchain_ha.providers.simulator import run_simulator

        run_simulator(
            host=args.host,
            port=args.port,
            name=args.name,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
        )
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


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True)
    r = bsub.add_parser("router", help="router resilience benchmark against simulators")
    r.add_argument("--json", dest="json_path", help="write the result rows to this file")
    r.add_argument("--requests", type=int, default=400)
    r.add_argument("--concurrency", type=int, default=20)
    r.add_argument("--scenarios", default="healthy,outage,ratelimit,hang,stream_cut")
    r.add_argument("--contenders", default="raw,langchain_fallbacks,litellm_router,langchain_ha")

    def run(args: argparse.Namespace) -> int:
        from langchain_ha.drills.bench_router import main as bench_main

        return bench_main(
            json_path=args.json_path,
            requests=args.requests,
            concurrency=args.concurrency,
            scenarios=[s for s in args.scenarios.split(",") if s],
            contenders=[c for c in args.contenders.split(",") if c],
        )

    r.set_defaults(handler=run)


# Further subcommands (serve, db, up, drill, render) register here, one _add_* each.
_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_sim,
    _add_demo,
    _add_bench,
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
        print(f"lcha {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The README's drill and capacity tables, made from the JSON committed under docs/results/.

    python benchmarks/results_table.py drill docs/results/drill-*.json
    python benchmarks/results_table.py capacity docs/results/capacity.json
    python benchmarks/results_table.py readme README.md      # rewrite every generated table

``drill`` takes the files ``lcha drill SCENARIO --json FILE`` (or ``lcha drill all --json``)
wrote and prints one Markdown row per scenario; ``capacity`` takes the file ``lcha bench
capacity --json FILE`` wrote and prints one row per target (cluster, one replica).  The
README's tables are this output, between ``<!-- generated: COMMAND -->`` and ``<!-- end
generated -->``; ``readme`` reruns each block's COMMAND and rewrites the block, and a unit test
fails when a block differs from what its JSON gives.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import shlex
from pathlib import Path
from typing import Any

from langchain_ha.drills.report import acked_cell, correct_cell, verdict_text


def _n(value: int | float) -> str:
    return f"{value:,}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _opt(value: object) -> str:
    return "—" if value is None else f"{value}"


def load_reports(paths: list[Path]) -> list[dict[str, Any]]:
    """Every drill report in ``paths`` (a file holds one report or a list of them)."""
    reports: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(path.read_text())
        reports.extend(data if isinstance(data, list) else [data])
    return reports


def drill_table(reports: list[dict[str, Any]]) -> str:
    """One row per drill: outcomes, correctness, latency, send lag, recovery, writes, verdict."""
    lines = ["| scenario | req/s x s | requests | ok | degraded | failed | availability | "
             "right / judged | p50 / p99 ms | send lag p99 / max ms | recovery s | "
             "write gap s | acked lost / checked (fault window) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        req, lat, lag = r["requests"], r["latency_ms"], r.get("send_lag_ms") or {}
        lines.append(
            f"| {r['scenario']} | {r['rps']:g} x {r['duration_s']:g} | {_n(req['total'])} | "
            f"{_n(req['ok'])} | {_n(req['degraded'])} | {_n(req['failed'])} | "
            f"{100 * r['availability']:.2f} % | {correct_cell(r)} | "
            f"{_ms(lat['p50'])} / {_ms(lat['p99'])} | {_ms(lag.get('p99'))} / "
            f"{_ms(lag.get('max'))} | {_opt(r.get('recovery_s'))} | "
            f"{_opt(r.get('write_gap_s'))} | {acked_cell(r)} | "
            f"{verdict_text(r).replace('|', '/')} |")
    return "\n".join(lines)


def capacity_table(doc: dict[str, Any]) -> str:
    """One row per target of ``lcha bench capacity``: the rate, and what held at it."""
    lines = ["| target | capacity req/s | held | p50 / p99 ms held | answered req/s held | "
             "send lag p99 / max ms held | replayed | steps (last: why it stopped) |",
             "|---|---|---|---|---|---|---|---|"]
    for target in ("cluster", "replica"):
        ramp = doc[target]
        steps = ramp["steps"]
        holds = ramp.get("holds") or []
        # Before the hold existed the rate was judged on its step alone.
        at = next((h for h in holds if h["passed"]), None) or (
            None if holds else next((s for s in reversed(steps) if s["passed"]), None))
        stop = next((s for s in steps if not s["passed"]), None)
        why = f"{stop['rps']:g}: {'; '.join(stop.get('why') or ['over'])}" if stop else "none"
        failed_holds = ", ".join(f"{h['rps']:g}" for h in holds if not h["passed"])
        held = (f"{at.get('duration_s', 0):g} s" if holds and at else "no") + (
            f" (not held: {failed_holds})" if failed_holds else "")
        lines.append(
            f"| {target} | {ramp['capacity_rps']:g} | {held} | "
            f"{_ms(at['p50_ms']) if at else '—'} / {_ms(at['p99_ms']) if at else '—'} | "
            f"{_opt(at.get('answered_per_s')) if at else '—'} | "
            f"{_ms(at['send_lag_ms']['p99']) if at else '—'} / "
            f"{_ms(at['send_lag_ms']['max']) if at else '—'} | {ramp.get('replayed', '—')} | "
            f"{len(steps)} ({why}) |")
    return "\n".join(lines)


ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"(<!-- generated: (?P<cmd>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                    re.S)


def table_for(command: str, root: Path = ROOT) -> str:
    """The table ``python benchmarks/results_table.py KIND FILES...`` prints (globs expanded
    from ``root``)."""
    words = shlex.split(command)
    if words[:2] != ["python", "benchmarks/results_table.py"] or len(words) < 4:
        raise ValueError(f"not a results_table command: {command!r}")
    kind = words[2]
    files = [Path(f) for w in words[3:] for f in sorted(glob.glob(str(root / w)))]
    if not files:
        raise ValueError(f"{command!r}: no file matches")
    if kind == "drill":
        return drill_table(load_reports(files))
    if kind == "capacity":
        return "\n".join(capacity_table(json.loads(f.read_text())) for f in files)
    raise ValueError(f"{command!r}: unknown kind {kind!r}")


def refresh(text: str, root: Path = ROOT) -> str:
    """``text`` with every generated block rewritten from its command."""
    return _BLOCK.sub(lambda m: m.group(1) + table_for(m.group("cmd"), root) + "\n"
                      + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("drill", "capacity", "readme"))
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.kind == "readme":
        for path in args.files:
            path.write_text(refresh(path.read_text()))
        return 0
    if args.kind == "drill":
        print(drill_table(load_reports(args.files)))
    else:
        for path in args.files:
            print(capacity_table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The README's router-benchmark tables, made from the JSON of one ``lcha bench router`` run.

    python benchmarks/bench_router_table.py docs/results/bench-router.json

prints two Markdown tables (outcomes, and latency with primary calls), one row per scenario and
one column per contender, so the README's figures can be checked against the committed run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.0f}"


def tables(doc: dict[str, Any]) -> str:
    """Markdown for the outcome and the latency tables of ``doc`` (the bench's JSON)."""
    order: list[str] = doc["contender_order"]
    rows = {(r["scenario"], r["contender"]): r for r in doc["rows"]}
    head = "| scenario | " + " | ".join(f"`{c}`" for c in order) + " |"
    rule = "|---|" + "---|" * len(order)
    outcome, latency = [head, rule], [head, rule]
    for scenario in doc["scenarios"]:
        counts = {r["requests"] for (s, _), r in rows.items() if s == scenario and r["requests"]}
        label = scenario if counts <= {doc["requests"]} else f"{scenario} (n={max(counts)})"
        cells_o, cells_l = [], []
        for name in order:
            r = rows.get((scenario, name))
            if r is None or r["not_installed"]:
                cells_o.append("not installed")
                cells_l.append("not installed")
                continue
            cells_o.append(f"{r['ok']} / {r['errors']} / {r['wrong']} / {r['unfinished']}")
            cells_l.append(f"{_ms(r['p50_ok_ms'])} / {_ms(r['p99_ok_ms'])} · "
                           f"{r['completed_per_s']:.0f}/s · {r['primary_calls']}")
        outcome.append(f"| {label} | " + " | ".join(cells_o) + " |")
        latency.append(f"| {label} | " + " | ".join(cells_l) + " |")
    return ("ok / errors / wrong / unfinished, of "
            f"{doc['requests']} requests at concurrency {doc['concurrency']}:\n\n"
            + "\n".join(outcome)
            + "\n\np50 / p99 of the ok answers in ms · ok answers per second · calls that "
              "reached the primary:\n\n" + "\n".join(latency) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(tables(json.loads(Path(argv[0]).read_text())), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Drill reports: JSON for machines, a self-contained HTML page for people, a terminal table."""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

_W, _H, _PAD = 760, 260, 40


def write_json(reports: Sequence[dict[str, Any]], path: Path) -> None:
    data: Any = reports[0] if len(reports) == 1 else list(reports)
    path.write_text(json.dumps(data, indent=2))


def print_table(reports: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """One row per scenario: requests by outcome, availability, correctness, latency, send
    lag, recovery, writes and the verdict."""
    table = Table(title="lcha drill")
    for col in ("scenario", "rps", "total", "ok", "degraded", "failed", "availability",
                "correct", "p50 ms", "p99 ms", "send lag p99/max ms", "recovery s",
                "write gap s", "acked lost/checked (window)", "verdict"):
        table.add_column(col, justify="left" if col in ("scenario", "verdict") else "right")
    for r in reports:
        req = r["requests"]
        table.add_row(
            r["scenario"], f"{r['rps']:g}", str(req["total"]), str(req["ok"]),
            str(req["degraded"]), str(req["failed"]), f"{100 * r['availability']:.2f}%",
            correct_cell(r), _opt(r["latency_ms"]["p50"], "{:.0f}"),
            _opt(r["latency_ms"]["p99"], "{:.0f}"), send_lag_cell(r),
            _opt(r.get("recovery_s")), _opt(r.get("write_gap_s")), acked_cell(r),
            _verdict_markup(r))
    out = console or Console(width=None if sys.stdout.isatty() else 200)
    out.print(table)
    for r in reports:
        shed, served = r.get("shed") or {}, r.get("served") or {}
        if shed.get("count"):
            out.print(f"{r['scenario']}: {shed['count']} shed (503 + Retry-After, p99 "
                      f"{_opt(shed['p99_ms'], '{:.0f}')} ms); {served.get('count', 0)} answered "
                      f"at {served.get('per_s', 0):g}/s, p50 {_opt(served.get('p50_ms'), '{:.0f}')}"
                      f" ms, p99 {_opt(served.get('p99_ms'), '{:.0f}')} ms")
        for component, c in ((r.get("correctness") or {}).get("by_component") or {}).items():
            out.print(f"{r['scenario']}: degraded by {component}: {c['correct']} of "
                      f"{c['judged']} right")
        if r.get("restarted_streams"):
            out.print(f"{r['scenario']}: {r['restarted_streams']} stream(s) cut under way were "
                      "sent again by the client (same Idempotency-Key); they count as failed "
                      "only if the second try failed too")
        failures = [f for f in r.get("failures") or [] if f["status"] != 503]
        for f in failures[:FAILURES_PRINTED]:
            begun = ", the response under way" if f.get("response_begun") else ""
            out.print(escape(f"{r['scenario']}: failed at {f['t']:g}s: {f['kind']} got "
                             f"{f['status']}{begun} (replica {f.get('replica') or '?'}): "
                             f"{f.get('error') or ''}"))


FAILURES_PRINTED = 5
"""Failed requests (other than shed ones) printed under the table, from the report's list."""


def verdict_text(r: dict[str, Any]) -> str:
    """``passed``, ``not exercised: why`` or ``failed: problems`` (older reports: by
    ``passed``)."""
    name = r.get("verdict") or ("passed" if r["passed"] else "failed")
    if name == "not exercised":
        return f"not exercised: {r.get('not_exercised')}"
    if name == "failed":
        return "failed: " + "; ".join(r["problems"])
    return name


def _verdict_markup(r: dict[str, Any]) -> str:
    colour = {"passed": "green", "not exercised": "yellow"}.get(r.get("verdict", ""), "red")
    return f"[{colour}]{escape(verdict_text(r))}[/]"


def correct_cell(r: dict[str, Any]) -> str:
    """Right answers over answers judged (degraded ones included), or ``not judged``."""
    c = r.get("correctness") or {}
    if not c.get("judged"):
        return "not judged"
    return f"{c['correct']}/{c['judged']}"


def send_lag_cell(r: dict[str, Any]) -> str:
    lag = r.get("send_lag_ms") or {}
    return f"{_opt(lag.get('p99'), '{:.0f}')} / {_opt(lag.get('max'), '{:.0f}')}"


def acked_cell(r: dict[str, Any]) -> str:
    """Acknowledged writes lost of checked, overall and (in brackets) in the fault window."""
    a = r.get("acked_writes")
    if not a:
        return "no database"
    return (f"{a['lost']}/{a['checked']} ({a['lost_in_window']}/{a['checked_in_window']})")


def _opt(value: object, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def write_html(reports: Sequence[dict[str, Any]], path: Path) -> None:
    """A page with one timeline chart per scenario (answers per second by outcome, p99, faults)."""
    sections = "\n".join(_section(r) for r in reports)
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8">
<title>lcha drill report</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}
table{{border-collapse:collapse}}
td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}
th:first-child,td:first-child{{text-align:left}}.pass{{color:#197a33}}.fail{{color:#b42318}}
.legend span{{margin-right:14px}}</style></head><body><h1>lcha drill report</h1>
{_summary(reports)}{sections}</body></html>""")


def _summary(reports: Sequence[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r['scenario'])}</td><td>{r['rps']:g}</td>"
        f"<td>{r['requests']['total']}</td><td>{r['requests']['failed']}</td>"
        f"<td>{100 * r['availability']:.2f}%</td><td>{html.escape(correct_cell(r))}</td>"
        f"<td>{_opt(r['latency_ms']['p99'], '{:.0f}')}</td>"
        f"<td>{html.escape(send_lag_cell(r))}</td>"
        f"<td>{_opt(r.get('recovery_s'))}</td><td>{_opt(r.get('write_gap_s'))}</td>"
        f"<td>{html.escape(acked_cell(r))}</td>"
        f"<td class={'pass' if r['passed'] else 'fail'}>{html.escape(verdict_text(r))}</td></tr>"
        for r in reports)
    return ("<table><tr><th>scenario</th><th>rps</th><th>requests</th><th>failed</th>"
            "<th>availability</th><th>correct</th><th>p99 ms</th><th>send lag p99/max ms</th>"
            "<th>recovery s</th><th>write gap s</th><th>acked lost/checked (window)</th>"
            f"<th>verdict</th></tr>{rows}</table>")


def _section(r: dict[str, Any]) -> str:
    return (f"<h2>{html.escape(r['scenario'])}</h2><p>{html.escape(r.get('summary', ''))}</p>"
            f"{chart_svg(r)}<p class=legend><span style='color:#2e9d57'>■ ok</span>"
            "<span style='color:#e0a100'>■ degraded</span><span style='color:#d03b3b'>■ failed"
            "</span><span>— p99 ms (right axis)</span><span style='color:#555'>┆ fault</span></p>")


def chart_svg(r: dict[str, Any]) -> str:
    """Stacked bars (ok, degraded, failed per second), the p99 line and fault markers."""
    rows = r["timeline"] or [{"t": 0, "ok": 0, "degraded": 0, "failed": 0, "p99_ms": 0}]
    n = len(rows)
    top = max(1, *(x["ok"] + x["degraded"] + x["failed"] for x in rows))
    p99_top = max(1.0, *(float(x["p99_ms"]) for x in rows))
    bw = (_W - 2 * _PAD) / n
    plot_h = _H - 2 * _PAD
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}' "
             "style='background:#fff;border:1px solid #ddd'>"]
    for i, x in enumerate(rows):
        y = _H - _PAD
        for key, colour in (("ok", "#2e9d57"), ("degraded", "#e0a100"), ("failed", "#d03b3b")):
            h = plot_h * x[key] / top
            if h:
                parts.append(f"<rect x='{_PAD + i * bw:.1f}' y='{y - h:.1f}' "
                             f"width='{max(1.0, bw - 1):.1f}' height='{h:.1f}' fill='{colour}'/>")
            y -= h
    line = " ".join(f"{_PAD + (i + 0.5) * bw:.1f},{_H - _PAD - plot_h * x['p99_ms'] / p99_top:.1f}"
                    for i, x in enumerate(rows))
    parts.append(f"<polyline points='{line}' fill='none' stroke='#333' stroke-width='1.5'/>")
    for f in r.get("faults", []):
        fx = _PAD + float(f["t"]) * bw
        parts.append(f"<line x1='{fx:.1f}' x2='{fx:.1f}' y1='{_PAD - 10}' y2='{_H - _PAD}' "
                     "stroke='#555' stroke-dasharray='4 3'/>")
        parts.append(f"<text x='{fx + 3:.1f}' y='{_PAD - 14}' font-size='11'>"
                     f"{html.escape(str(f['action']))}</text>")
    parts.append(f"<text x='{_PAD}' y='14' font-size='13' font-weight='bold'>"
                 f"{html.escape(str(r.get('scenario', '')))} at {r.get('rps', '?')} req/s</text>")
    parts.append(f"<text x='4' y='{_PAD}' font-size='11'>{top}/s</text>")
    parts.append(f"<text x='{_W - 2}' y='{_PAD - 2}' font-size='11' text-anchor='end'>"
                 f"p99 {p99_top:.0f} ms</text>")
    parts.append(f"<text x='{_W / 2 - 30:.0f}' y='{_H - 8}' font-size='11'>seconds ({n})</text>")
    parts.append("</svg>")
    return "".join(parts)

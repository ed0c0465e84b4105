"""The README's main job (``lcha demo``) and ``lcha bench router`` run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil


def _lcha(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "langchain_ha.cli", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def _children_of_nobody_left(before: set[int]) -> list[str]:
    leftovers = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["pid"] not in before and "langchain_ha.providers.simulator" in cmd:
            leftovers.append(cmd)
    return leftovers


def test_demo_answers_through_an_outage_and_cleans_up() -> None:
    before = {p.pid for p in psutil.process_iter()}
    result = _lcha("demo", "--requests", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed or wrong: 0" in result.stdout
    assert "answer intact: True" in result.stdout
    assert _children_of_nobody_left(before) == []


def test_bench_router_outage_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = _lcha("bench", "router", "--requests", "60", "--concurrency", "10",
                   "--scenarios", "outage,stream_cut", "--contenders", "raw,langchain_ha",
                   "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {(r["scenario"], r["contender"]): r for r in json.loads(out.read_text())}
    for scenario in ("outage", "stream_cut"):
        ours = rows[(scenario, "langchain_ha")]
        assert ours["failed"] == 0 and ours["requests"] == 60
        assert ours["primary_calls"] <= 10
    assert rows[("outage", "raw")]["failed"] == 0


def test_bench_rejects_unknown_scenarios() -> None:
    result = _lcha("bench", "router", "--scenarios", "nope")
    assert result.returncode == 2
    assert "--scenarios" in result.stderr and "Traceback" not in result.stderr

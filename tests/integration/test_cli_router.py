"""The README's main job (``lcha demo``) and ``lcha bench router`` run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil

ROW_KEYS = {"scenario", "contender", "settings_tag", "not_installed", "concurrency", "rounds",
            "requests", "ok", "errors", "wrong", "unfinished", "wall_s", "completed_per_s",
            "p50_ok_ms", "p99_ok_ms", "p50_finished_ms", "p99_finished_ms", "primary_calls",
            "vs_raw", "vs", "first_error", "first_wrong"}
COUNTS = ("requests", "ok", "errors", "wrong", "unfinished", "completed_per_s", "p50_ok_ms",
          "primary_calls")
COLUMNS = ("settings", "n", "ok", "err", "wrong", "unfin", "ok/s", "p50 ok", "p99 ok",
           "p50 all", "p99 all", "primary", "vs raw")


def _lcha(*args: str, timeout: float = 300,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "langchain_ha.cli", *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def _simulators_left(logdir: Path) -> list[str]:
    """Simulators still running whose log is in ``logdir`` (this run's, not another test
    session's: the machine may be running others)."""
    leftovers = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "langchain_ha.providers.simulator" not in cmd:
            continue
        try:
            files = [f.path for f in proc.open_files()]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(Path(f).is_relative_to(logdir) for f in files):
            leftovers.append(cmd)
    return leftovers


def test_demo_answers_through_an_outage_and_cleans_up(tmp_path: Path) -> None:
    logdir = tmp_path / "demo-logs"
    result = _lcha("demo", "--requests", "30", env={"LCHA_DEMO_LOGDIR": str(logdir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed or wrong: 0" in result.stdout
    assert "answer intact: True" in result.stdout
    assert (logdir / "primary.log").exists()  # the check below looks at this run's simulators
    assert _simulators_left(logdir) == []


def test_bench_router_rows_settings_and_not_installed(tmp_path: Path) -> None:
    """Two scenarios, every contender of the main environment plus LiteLLM (absent there, as
    in CI): the table's columns, every row's counts adding up, every contender's settings with
    their docs, LiteLLM's row kept and marked not installed, and the router's own rows right."""
    out = tmp_path / "bench.json"
    n = 20
    result = _lcha("bench", "router", "--requests", str(n), "--concurrency", "5",
                   "--scenarios", "outage,stream_ignore",
                   "--contenders", "raw,langchain_fallbacks,langchain_agent_mw,litellm_router,"
                                   "langchain_ha",
                   "--json", str(out), env={"LCHA_BENCH_LOGDIR": str(tmp_path / "logs")})
    assert result.returncode == 0, result.stdout + result.stderr
    header = result.stdout.splitlines()[0]
    assert all(col in header for col in COLUMNS), header
    doc = json.loads(out.read_text())
    assert doc["percentiles"] == "nearest-rank"
    rows = {(r["scenario"], r["contender"]): r for r in doc["rows"]}
    assert len(rows) == 10
    for row in rows.values():
        assert set(row) == ROW_KEYS
        if row["contender"] == "litellm_router":
            continue
        assert row["requests"] == n
        assert row["ok"] + row["errors"] + row["wrong"] + row["unfinished"] == n, row
        # raw asks the healthy secondary while the primary is faulty; the others start there
        assert (row["primary_calls"] == 0) is (row["contender"] == "raw"), row
        assert set(row["vs"]) == {"raw", "langchain_fallbacks", "langchain_agent_mw",
                                  "langchain_ha"} - {row["contender"]}
    for name, contender in doc["contenders"].items():
        assert contender["settings"] and contender["docs"], name
        assert contender["not_installed"] is (name == "litellm_router")
    assert doc["contenders"]["langchain_fallbacks"]["settings"]["primary"]["max_retries"] == 0
    assert doc["contenders"]["litellm_router"]["settings"]["num_retries"] == 2

    for scenario in ("outage", "stream_ignore"):
        absent = rows[(scenario, "litellm_router")]
        assert absent["not_installed"] is True
        assert all(absent[k] is None for k in COUNTS), absent
        assert [line for line in result.stdout.splitlines()
                if line.startswith(scenario) and "litellm_router" in line
                and line.rstrip().endswith("not installed")]
        ours = rows[(scenario, "langchain_ha")]
        assert ours["ok"] == n and ours["wrong"] == 0, ours
        assert ours["primary_calls"] <= 10
        assert ours["vs_raw"]["p50"] is not None
        assert rows[(scenario, "raw")]["ok"] == n
    # the fallback recipe cannot continue a stream cut mid-answer: each ends in a clean error
    cut = rows[("stream_ignore", "langchain_fallbacks")]
    assert cut["errors"] == n and cut["first_error"], cut
    assert "vs peers" in result.stdout and "settings" in result.stdout
    assert _simulators_left(tmp_path / "logs") == []


def test_the_leftover_check_sees_a_running_simulator(tmp_path: Path) -> None:
    from langchain_ha._proc import Child, free_port, python_argv

    port = free_port()
    child = Child(python_argv("-m", "langchain_ha.providers.simulator", "--port", str(port)),
                  name="sim-leftover", log_path=tmp_path / "sim.log")
    try:
        child.wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=30, status=None)
        assert len(_simulators_left(tmp_path)) == 1
        assert _simulators_left(tmp_path / "elsewhere") == []
    finally:
        child.stop()
    assert _simulators_left(tmp_path) == []


def test_bench_rejects_unknown_scenarios() -> None:
    result = _lcha("bench", "router", "--scenarios", "nope")
    assert result.returncode == 2
    assert "--scenarios" in result.stderr and "Traceback" not in result.stderr


def test_bench_rejects_unknown_contenders() -> None:
    result = _lcha("bench", "router", "--contenders", "raw,nope")
    assert result.returncode == 2
    assert "--contenders" in result.stderr and "nope" in result.stderr
    assert "Traceback" not in result.stderr

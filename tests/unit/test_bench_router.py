"""``lcha bench router``'s accounting: what counts as ok, wrong, an error or unfinished, the
nearest-rank percentiles, the ratios, and rows for contenders that are not installed."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from langchain_ha.cli import build_parser
from langchain_ha.drills import bench_router as bench
from langchain_ha.drills.bench_router import Row, RunResult
from langchain_ha.providers import expected_answer


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert bench.percentile(values, 0.50) == 50.0
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile([3.0, 1.0], 0.50) == 1.0
    assert bench.percentile([3.0, 1.0], 0.99) == 3.0
    assert bench.percentile([], 0.5) is None


async def test_the_workload_counts_ok_wrong_errors_and_unfinished_apart() -> None:
    work = bench.questions("chat", 8)

    async def contender(question: str) -> str:
        n = int(question.split("number ")[1].split(maxsplit=1)[0])
        if n in (0, 1, 2):
            return expected_answer([("user", question)])
        if n == 3:
            return expected_answer([("user", question)]) * 2  # a repeated answer
        if n in (4, 5):
            raise RuntimeError(f"provider down for {n}")
        await asyncio.sleep(30)  # 6 and 7 never finish within the budget
        return ""

    result = await bench.workload(contender, work, concurrency=8, budget_s=0.5)
    assert (result.ok, result.wrong, result.errors, result.unfinished) == (3, 1, 2, 2)
    assert len(result.ok_ms) == 3 and len(result.finished_ms) == 6
    assert result.first_error.startswith("RuntimeError: provider down for")
    assert result.first_wrong.startswith("'Answer: you asked about")
    assert 0.5 <= result.wall_s < 5.0


def test_tool_questions_expect_the_answer_from_the_tool_result() -> None:
    (question, expected), = bench.questions("tools", 1)
    assert "AB-1000" in question
    assert expected.startswith("Order AB-1000: ") and "DHL" in expected
    assert expected != expected_answer([("user", question)])


def _row(name: str, ok: int, p50: float | None, p99: float | None, cps: float | None) -> Row:
    return Row("outage", name, name, False, 4, 1, requests=10, ok=ok, errors=10 - ok,
               wrong=0, unfinished=0, completed_per_s=cps, p50_ok_ms=p50, p99_ok_ms=p99)


def test_ratios_against_raw_and_every_other_contender() -> None:
    rows = [_row("raw", 10, 100.0, 200.0, 50.0), _row("langchain_ha", 10, 110.0, 300.0, 45.0),
            _row("langchain_fallbacks", 0, None, None, 0.0)]
    bench.compare(rows)
    raw, ours, peer = rows
    assert ours.vs_raw == {"p50": 1.1, "p99": 1.5, "completed_per_s": 0.9}
    assert ours.vs["langchain_fallbacks"] == {"p50": None, "p99": None, "completed_per_s": None}
    assert peer.vs["langchain_ha"]["completed_per_s"] == 0.0
    assert raw.vs_raw is None and raw.vs["langchain_ha"]["p50"] == pytest.approx(0.909, abs=1e-3)


def test_a_contender_that_is_not_installed_has_no_numbers() -> None:
    contender = bench.Contender("litellm_router", "tag", {"num_retries": 2}, ["doc"], call=None)
    row = bench.make_row("outage", contender, 4, 1, None)
    assert row.not_installed
    assert (row.requests, row.ok, row.errors, row.wrong, row.unfinished) == (None,) * 5
    assert row.completed_per_s is None and row.primary_calls is None
    assert "not installed" in bench.format_row(row)
    ran = bench.make_row("outage", contender, 4, 1, RunResult(requests=2, ok=2, wall_s=1.0,
                                                              ok_ms=[5.0, 7.0]))
    assert (ran.ok, ran.completed_per_s, ran.p50_ok_ms, ran.p99_ok_ms) == (2, 2.0, 5.0, 7.0)


@pytest.mark.skipif(importlib.util.find_spec("litellm") is not None, reason="litellm installed")
def test_litellm_is_reported_not_installed_with_its_settings() -> None:
    ends = bench.Endpoints("http://127.0.0.1:1", "http://127.0.0.1:2")
    contender = bench.build_contender("litellm_router", ends, "chat")
    assert not contender.installed
    assert contender.settings["num_retries"] == 2
    assert contender.settings["enable_mid_stream_fallback_continuation"] is True
    assert [d["order"] for d in contender.settings["model_list"]] == [1, 2]
    assert any("docs.litellm.ai" in d for d in contender.docs)


def test_every_contender_cites_the_pages_its_settings_come_from() -> None:
    ends = bench.Endpoints("http://127.0.0.1:1", "http://127.0.0.1:2")
    for name in bench.CONTENDERS:
        for task in ("chat", "stream", "tools"):
            contender = bench.build_contender(name, ends, task)  # type: ignore[arg-type]
            assert contender.name == name and contender.docs and contender.settings
            assert len(contender.tag) <= 46, contender.tag  # the table's column


def test_the_cli_defaults_name_every_contender_and_scenario() -> None:
    args = build_parser().parse_args(["bench", "router"])
    assert args.scenarios.split(",") == bench.DEFAULT_SCENARIOS
    assert args.contenders.split(",") == list(bench.CONTENDERS)

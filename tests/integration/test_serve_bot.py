"""The support bot served by a real replica: every degradation path answers 200 and says so."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from langchain_ha.demo.corpus import load_questions
from tests.support.fixtures_serve import Replica
from tests.support.fixtures_sim import SimProcess


@pytest.fixture(scope="module")
def served_bot(sim_factory: Callable[..., SimProcess],
               serve_factory: Callable[..., Replica]) -> tuple[Replica, SimProcess, SimProcess]:
    primary, secondary = sim_factory("served-primary"), sim_factory("served-secondary")
    replica = serve_factory("langchain_ha.demo.support_bot:bot", env={
        "LCHA_PRIMARY_URL": primary.url, "LCHA_SECONDARY_URL": secondary.url})
    return replica, primary, secondary


def _ask(replica: Replica, question: str) -> httpx.Response:
    return httpx.post(replica.url + "/v1/invoke", timeout=30,
                      json={"input": {"question": question, "session_id": "s-http"}})


@pytest.mark.parametrize(("faults", "expected"), [
    ({}, ""),
    ({"status": 503, "routes": ["chat"]}, "primary_llm"),
    ({"status": 500, "routes": ["embeddings"]}, "embeddings"),
    ({"status": 503, "routes": ["tools"]}, "tool:order_status"),
])
def test_degradation_paths_over_http(served_bot, faults, expected) -> None:
    replica, primary, _ = served_bot
    primary.clear_faults()
    if faults:
        primary.set_faults(**faults)
    question, doc_id = load_questions()[5]
    if expected.startswith("tool"):
        question = "Where is my order AB-2024?"
    resp = _ask(replica, question)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-lcha-degraded"] == expected
    body = resp.json()
    assert body["degraded"] == ([expected] if expected else [])
    if not expected.startswith("tool"):
        assert body["output"]["sources"][0] == doc_id
    primary.clear_faults()


def test_all_remote_providers_down_still_answers_grounded(served_bot) -> None:
    replica, primary, secondary = served_bot
    primary.set_faults(status=500, routes=["chat"])
    secondary.set_faults(status=500, routes=["chat"])
    try:
        question, doc_id = load_questions()[7]
        resp = _ask(replica, question)
        assert resp.status_code == 200
        assert resp.json()["output"]["provider"] == "local"
        assert f"[doc:{doc_id}]" in resp.json()["output"]["answer"]
        metrics = httpx.get(replica.url + "/metrics").text
        assert "lcha_llm_calls_total" in metrics and "lcha_breaker_state" in metrics
        assert 'lcha_retrieval_seconds_count{outcome="success"}' in metrics
        health = httpx.get(replica.url + "/health").json()
        assert health["can_answer"] is True
    finally:
        primary.clear_faults()
        secondary.clear_faults()


def test_bad_bot_input_is_a_422(served_bot) -> None:
    replica, _, _ = served_bot
    resp = httpx.post(replica.url + "/v1/invoke", json={"input": {"nope": 1}})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "input"

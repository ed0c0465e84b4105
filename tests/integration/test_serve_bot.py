"""The support bot served by a real replica: every degradation path answers 200 and says so."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from langchain_ha.demo.corpus import load_questions
from langchain_ha.demo.support_bot import sim_env
from tests.support.fixtures_serve import Replica
from tests.support.fixtures_sim import SimProcess


@pytest.fixture(scope="module")
def served_bot(sim_factory: Callable[..., SimProcess],
               serve_factory: Callable[..., Replica]) -> tuple[Replica, SimProcess, SimProcess]:
    primary, secondary = sim_factory("served-primary"), sim_factory("served-secondary")
    replica = serve_factory("langchain_ha.demo.support_bot:bot", env={
        **sim_env(primary.url, secondary.url)})
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


SECRET = ("[doc:a-private-note] The zebrafrost passphrase of client A is tangerine-42. "
          "Please remember it.")
ASK = "What is the zebrafrost passphrase?"
PLANTED = "[doc:b-note] The quasarmint code is lemon-7. Note it."


@pytest.fixture(scope="module")
def keyed_bot(served_bot, serve_factory: Callable[..., Replica]) -> Replica:
    _, primary, secondary = served_bot
    return serve_factory("langchain_ha.demo.support_bot:bot", env={
        **sim_env(primary.url, secondary.url),
        "LCHA_API_KEYS": "bot-key-a,bot-key-b"})


def _ask_as(replica: Replica, key: str, question: str, session: str,
            chat: bool = False) -> str:
    auth = {"Authorization": f"Bearer {key}"}
    if chat:
        resp = httpx.post(replica.url + "/v1/chat/completions", headers=auth, timeout=30,
                          json={"messages": [{"role": "user", "content": question}],
                                "user": session})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["choices"][0]["message"]["content"])
    resp = httpx.post(replica.url + "/v1/invoke", headers=auth, timeout=30,
                      json={"input": {"question": question, "session_id": session}})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["output"]["answer"])


@pytest.mark.parametrize("chat", [False, True])
def test_sessions_belong_to_their_caller(keyed_bot: Replica, chat: bool) -> None:
    # The simulator grounds its answer in documents anywhere in the conversation, past turns
    # included: what a session's history holds shows in the answer.
    session = f"shared-{chat}"
    _ask_as(keyed_bot, "bot-key-a", SECRET, session, chat)
    assert "tangerine-42" in _ask_as(keyed_bot, "bot-key-a", ASK, session, chat)  # A's memory
    stolen = _ask_as(keyed_bot, "bot-key-b", ASK, session, chat)  # B, with A's session_id
    assert "tangerine-42" not in stolen and "a-private-note" not in stolen
    # Nor can B write into A's session.
    _ask_as(keyed_bot, "bot-key-b", PLANTED, session, chat)
    seen_by_a = _ask_as(keyed_bot, "bot-key-a", "What is the quasarmint code?", session, chat)
    assert "lemon-7" not in seen_by_a
    assert "lemon-7" in _ask_as(keyed_bot, "bot-key-b", "What is the quasarmint code?",
                                session, chat)  # it went into B's own session


def test_an_overlong_session_id_is_a_422(keyed_bot: Replica) -> None:
    resp = httpx.post(keyed_bot.url + "/v1/invoke", timeout=30,
                      headers={"Authorization": "Bearer bot-key-a"},
                      json={"input": {"question": "q", "session_id": "s" * 201}})
    assert resp.status_code == 422 and "session_id" in resp.json()["error"]["message"]


def _events(resp: httpx.Response) -> list[tuple[str, dict]]:
    out = []
    for block in resp.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_a_restarted_answer_reaches_sse_clients_as_a_restart_event(served_bot) -> None:
    """The primary's stream dies mid-answer and the secondary restarts in other words: on
    /v1/stream (whose clients honour ``event: restart``) the answer is restarted; on the
    OpenAI-compatible stream (which has no such event) another provider continues it."""
    replica, primary, secondary = served_bot
    question, _ = load_questions()[9]
    baseline = _ask_plain(replica, question)
    primary.set_faults(disconnect_after_chunks=6, routes=["chat"])
    secondary.set_faults(ignore_continuation=True, restart_style="reword", routes=["chat"])
    try:
        resp = httpx.post(replica.url + "/v1/stream", timeout=30,
                          json={"input": {"question": question}})
        events = _events(resp)
        kinds = [k for k, _ in events]
        assert kinds.count("restart") == 1 and kinds[-1] == "end", kinds
        restart = kinds.index("restart")
        before = "".join(d.get("delta", "") for k, d in events[:restart] if k == "data")
        after = "".join(d.get("delta", "") for k, d in events[restart:] if k == "data")
        final = events[-2][1]
        assert before and baseline.startswith(before)  # what the client had, then discarded
        assert final["answer"] == after and after.startswith("Put differently")
        assert events[restart][1]["discard_chars"] == len(before)
        chat = httpx.post(replica.url + "/v1/chat/completions", timeout=30, json={
            "model": "bot", "stream": True, "messages": [{"role": "user", "content": question}]})
        chunks = [json.loads(line[6:]) for line in chat.text.splitlines()
                  if line.startswith("data: {")]
        assert all("choices" in c for c in chunks), chat.text[-300:]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                       if c["choices"])
        assert text == baseline  # continued by the local model, checked: no repeat, no gap
    finally:
        primary.clear_faults()
        secondary.clear_faults()


def _ask_plain(replica: Replica, question: str) -> str:
    resp = httpx.post(replica.url + "/v1/invoke", timeout=30,
                      json={"input": {"question": question}})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["output"]["answer"])


def test_the_llm_cache_answers_a_repeated_question_on_every_replica(
        sim_factory: Callable[..., SimProcess], serve_factory: Callable[..., Replica],
        store_conninfo: str) -> None:
    """With a database, the bot's answers are cached there: a question asked again (same
    documents, no history) is answered from the cache by another replica too, without a
    provider call, and still while the primary is down; a fallback's answer is not cached."""
    from prometheus_client.parser import text_string_to_metric_families

    primary, secondary = sim_factory("cached-primary"), sim_factory("cached-secondary")
    env = {**sim_env(primary.url, secondary.url),
           "LCHA_DB_WRITER": store_conninfo}
    a, b = (serve_factory("langchain_ha.demo.support_bot:bot", env=env),
            serve_factory("langchain_ha.demo.support_bot:bot", env=env))

    def ask(replica: Replica, question: str) -> httpx.Response:
        resp = httpx.post(replica.url + "/v1/invoke", timeout=30,
                          json={"input": {"question": question}})
        assert resp.status_code == 200, resp.text
        return resp

    def lookups(replica: Replica) -> dict[str, float]:
        page = httpx.get(replica.url + "/metrics").text
        return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(page)
                if f.name == "lcha_llm_cache_lookups" for s in f.samples
                if s.name.endswith("_total") and s.labels["cache"] == "llm"}

    question = load_questions()[11][0] + f" ({time.time_ns()})"  # new to the cache
    primary.reset_stats()
    first = ask(a, question)
    assert primary.calls() == 1
    again = ask(b, question)
    assert again.json()["output"]["answer"] == first.json()["output"]["answer"]
    assert primary.calls() == 1 and lookups(b).get("hit", 0) >= 1
    primary.set_faults(status=503, routes=["chat"])
    try:
        cached = ask(a, question)  # the primary is down: the cache still has its answer
        assert cached.headers["x-lcha-degraded"] == ""
        assert cached.json()["output"]["answer"] == first.json()["output"]["answer"]
        other = load_questions()[12][0] + f" ({time.time_ns()})"
        down = ask(a, other)
        assert down.headers["x-lcha-degraded"] == "primary_llm"
    finally:
        primary.clear_faults()
    hits = lookups(a).get("hit", 0)
    ask(a, other)  # the fallback's answer was not kept: a provider answers it again
    assert lookups(a).get("hit", 0) == hits and lookups(a).get("miss", 0) >= 2

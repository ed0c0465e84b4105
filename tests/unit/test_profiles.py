"""App profiles: the topology names one, each gives a warm-up, a deterministic mix and a judge."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from langchain_ha.cluster.topology import Topology
from langchain_ha.drills.profiles import (
    GenericProfile,
    OrderDeskProfile,
    SupportBotProfile,
    load_profile,
    profile_for,
)
from langchain_ha.providers import expected_answer, order_status


def test_the_topology_picks_the_profile() -> None:
    assert isinstance(profile_for(Topology()), SupportBotProfile)
    other = Topology(app="examples.agent.app:agent", providers=[{"name": "p"}])
    assert isinstance(profile_for(other), GenericProfile)
    desk = Topology(app="examples.agent.app:agent", providers=[{"name": "p"}],
                    profile={"name": "order-desk"})
    assert isinstance(profile_for(desk), OrderDeskProfile)
    with pytest.raises(ValidationError, match=r"profile\.name"):
        Topology(profile={"name": "chatbot"})
    with pytest.raises(ValueError, match="support-bot, order-desk or generic"):
        load_profile("chatbot")


def test_order_desk_mix_is_deterministic_and_judged_like_the_simulator_answers() -> None:
    desk = OrderDeskProfile()
    probes = [desk.request_for(i, "run") for i in range(10)]
    assert probes == [desk.request_for(i, "run") for i in range(10)]
    assert {p.kind for p in probes} == {"status", "policy", "refund"}
    assert len({p.session for p in probes}) == 10  # one turn per thread
    status = probes[0]
    question = status.body["input"]["message"]
    order = question.split()[-1].rstrip("?")
    right = expected_answer([("user", question), ("tool", json.dumps(order_status(order)))])
    assert status.correct({"answer": right}, [])
    assert not status.correct({"answer": "Order " + order + ": delivered"}, [])
    assert status.correct({"answer": f"Order {order}: the order system said: 503"},
                          ["tool:order_status"])
    refund = next(p for p in probes if p.kind == "refund")
    a, b = (w.rstrip(".") for w in refund.body["input"]["message"].split()[-3::2])
    assert refund.correct({"answer": f"Order {a}: refund RF-000001 of 9.0 EUR issued. "
                                     f"Order {b}: refund RF-000002 of 7.0 EUR issued."}, [])
    assert not refund.correct({"answer": f"Order {a}: refund RF-000001 of 9.0 EUR issued."}, [])
    policy = next(p for p in probes if p.kind == "policy")
    assert policy.correct({"answer": "According to [doc:refunds]: 5 business days"}, [])
    assert not policy.correct({"answer": "Answer: you asked about refunds."}, [])


def test_generic_profile_sends_the_input_and_wants_an_output() -> None:
    g = load_profile("generic", input={"topic": "x"})
    probe = g.request_for(3, "run")
    assert probe.body == {"input": {"topic": "x"}} and g.warmup().body == probe.body
    assert probe.correct("some text", []) and probe.correct({"answer": "a"}, [])
    assert not probe.correct("", []) and not probe.correct(None, [])


def test_a_drill_that_cannot_reach_the_app_is_skipped_with_its_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from langchain_ha.cluster.state import StateDir
    from langchain_ha.drills.drillcli import not_applicable
    from langchain_ha.drills.scenarios import SCENARIOS

    sd = StateDir(tmp_path)
    agent = Topology(app="examples.agent.app:agent", profile={"name": "order-desk"})
    sd.topology_file.write_text(agent.model_dump_json())
    skipped = not_applicable(sd, list(SCENARIOS))
    network = {n for n, s in SCENARIOS.items() if s.needs_lab}
    assert set(skipped) == {"stream-interrupt", *network}
    assert "order-desk" in skipped["stream-interrupt"]
    assert all("lcha up --lab" in skipped[n] for n in network)
    sd.topology_file.write_text(agent.model_copy(update={"lab": True}).model_dump_json())
    assert list(not_applicable(sd, list(SCENARIOS))) == ["stream-interrupt"]
    no_db = Topology(database={"enabled": False})  # the support bot streams; no database
    sd.topology_file.write_text(no_db.model_dump_json())
    skipped = not_applicable(sd, list(SCENARIOS))
    assert set(skipped) == {n for n, s in SCENARIOS.items() if s.needs_db or s.needs_lab}
    assert all("database.enabled" in skipped[n] for n, s in SCENARIOS.items() if s.needs_db)

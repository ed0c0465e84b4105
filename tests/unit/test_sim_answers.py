"""The simulator's pure parts: answers, continuations, rewording, schema filling, replies,
fault timing and the stream writer."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
from pydantic import BaseModel

from langchain_ha.providers._answers import (
    REFUSAL_TEXT,
    RESTART_PREAMBLE,
    answer_for,
    argument_pieces,
    chunks,
    continuation_of,
    cut_at_stop,
    expected_answer,
    first_tokens,
    reword,
    tool_calls_for,
    words,
)
from langchain_ha.providers._faults import Faults, FaultSetting
from langchain_ha.providers._reply import Ask, context_overflow, reply
from langchain_ha.providers._schema import fill_schema, strict_schema_problem
from langchain_ha.providers._stream import Event, malformed, write
from langchain_ha.resilience.continuation import (
    CONTINUATION_INSTRUCTION,
    continuation_cue,
    continuation_request,
)

Q = "How long do refunds take for annual plans?"
PLAIN = ("Answer: you asked about long refunds take annual plans. This reply is deterministic "
         "and grounded only in your question, so every provider gives the same one.")
ORDER_TOOL = ("order_status", {"type": "object", "properties": {"order_id": {"type": "string"}},
                               "required": ["order_id"]})


def test_plain_answers_are_unchanged_and_expected_answer_agrees() -> None:
    assert answer_for([("user", Q)]) == PLAIN
    assert expected_answer([{"role": "user", "content": Q}]) == PLAIN
    docs = [("system", "[doc:faq-7] Refunds take 5 days. Extra."), ("user", Q)]
    assert answer_for(docs) == ("According to [doc:faq-7]: Refunds take 5 days. (asked about: "
                                "long refunds take annual plans)")


def test_continuations_by_prefill_and_by_instruction() -> None:
    partial = PLAIN[:20]
    assert continuation_of([("user", Q), ("assistant", partial)]) == ([("user", Q)], partial, "")
    by_instruction = [("user", Q), ("assistant", partial), ("user", CONTINUATION_INSTRUCTION)]
    assert continuation_of(by_instruction) == ([("user", Q)], partial, "")
    assert continuation_of([("user", Q)]) is None
    assert continuation_of([("user", CONTINUATION_INSTRUCTION)]) is None
    assert answer_for([("user", Q), ("assistant", partial)]) == PLAIN[20:]
    assert answer_for(by_instruction) == PLAIN[20:]
    assert answer_for([("user", Q), ("assistant", "something else")]) == PLAIN
    assert answer_for(by_instruction, "replay") == PLAIN
    assert answer_for(by_instruction, "preamble") == RESTART_PREAMBLE + PLAIN
    assert answer_for(by_instruction, "reword") == reword(PLAIN)


def test_the_routers_continuation_request_is_answered_from_its_cue() -> None:
    partial = PLAIN[:32]  # ends inside a word: "...about long re"
    asked = [("user", Q), ("assistant", partial), ("user", continuation_request(partial))]
    cue = continuation_cue(partial)
    assert continuation_of(asked) == ([("user", Q)], partial, cue)
    reply = answer_for(asked)
    assert reply.startswith(cue) and partial + reply[len(cue):] == PLAIN


def test_reword_changes_the_opening_and_the_words_of_the_first_sentence() -> None:
    assert reword(PLAIN) == ("Put differently, your question was regarding long refunds need "
                             "annual plans, in other words. This reply is deterministic and "
                             "grounded only in your question, so every provider gives the same "
                             "one.")
    doc = "According to [doc:faq-7]: Refunds take 5 days with the courier. (asked about: x)"
    assert reword(doc) == ("Put differently, as [doc:faq-7] puts it, Refunds need 5 days' time "
                           "via this courier, in other words. (asked about: x)")
    order = "Order AB-1234: shipped, expected in 3 days with UPS."
    assert reword(order) == ("Put differently, order AB-1234 is shipped, due within 3 days' "
                             "time via UPS, in other words.")
    for text in (PLAIN, doc, order):
        assert reword(text) == reword(text)
        assert reword(text)[:1] != text[:1]
        first_old = set(words(text.split(". ")[0]))
        first_new = set(words(reword(text).split(", in other words")[0]))
        assert len(first_new - first_old) >= 3


def test_several_tool_results_are_answered_in_order() -> None:
    conv = [("user", "Where are AB-1234 and CD-5678?"), ("assistant", ""),
            ("tool", json.dumps({"order_id": "AB-1234", "status": "shipped", "eta_days": 2,
                                 "carrier": "UPS"})),
            ("tool", "not found")]
    assert answer_for(conv) == ("Order AB-1234: shipped, expected in 2 days with UPS. "
                                "Order CD-5678: the order system said: not found")


def test_tool_calls_auto_forced_and_parallel() -> None:
    two = [("user", "Where are AB-1234 and CD-5678?")]
    assert tool_calls_for(two, [ORDER_TOOL]) == [("order_status", {"order_id": "AB-1234"}),
                                                 ("order_status", {"order_id": "CD-5678"})]
    assert tool_calls_for(two, [ORDER_TOOL], parallel=False) == [
        ("order_status", {"order_id": "AB-1234"})]
    assert tool_calls_for([("user", Q)], [ORDER_TOOL]) == []
    assert tool_calls_for([("user", Q)], [ORDER_TOOL], forced=True) == [
        ("order_status", {"order_id": "long refunds take annual plans"})]
    other = ("Verdict", {"type": "object", "properties": {"answer": {"type": "string"}}})
    assert tool_calls_for(two, [ORDER_TOOL, other], forced="Verdict") == [
        ("Verdict", {"answer": answer_for(two)})]
    assert tool_calls_for([*two, ("tool", "x")], [ORDER_TOOL], forced=True) == []


def test_sequential_tool_calls_pick_the_verb_and_chain_one_step_at_a_time() -> None:
    refund = ("refund_order", ORDER_TOOL[1])
    tools = [ORDER_TOOL, refund]
    ask = [("user", "Please refund AB-1234 and CD-5678")]
    assert tool_calls_for(ask, tools, parallel=False) == [("refund_order", {"order_id": "AB-1234"})]
    first = json.dumps({"order_id": "AB-1234", "refund_id": "R-1", "amount": 10, "currency": "EUR"})
    step2 = [*ask, ("assistant", ""), ("tool", first)]
    assert tool_calls_for(step2, tools, parallel=False) == [
        ("refund_order", {"order_id": "CD-5678"})]
    second = json.dumps({"order_id": "CD-5678", "refund_id": "R-2", "amount": 5, "currency": "EUR"})
    done = [*step2, ("assistant", ""), ("tool", second)]
    assert tool_calls_for(done, tools, parallel=False) == []
    assert tool_calls_for(step2, tools) == []  # parallel: one step, then the answer
    # An error result still counts as the step done: no endless retry loop.
    assert tool_calls_for([*ask, ("tool", "error: 503"), ("tool", "error")], tools,
                          parallel=False) == []
    assert tool_calls_for([*ask, ("assistant", ""), ("tool", "error: 503")], tools,
                          parallel=False) == [("refund_order", {"order_id": "CD-5678"})]
    text = answer_for(done)
    assert "refund R-1 of 10 EUR" in text and "refund R-2 of 5 EUR" in text


class Line(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):
    order_id: str
    lines: list[Line]
    note: str | None = None
    rush: bool
    total: float


def test_fill_schema_is_valid_for_nested_refs_unions_and_bounds() -> None:
    schema = Order.model_json_schema()
    value = fill_schema(schema, topic="order ab 1234", order_id="AB-1234", answer="A")
    jsonschema.validate(value, schema)
    assert value == {"order_id": "AB-1234", "lines": [], "note": "order ab 1234", "rush": False,
                     "total": 0.0}
    bounded = {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 3, "maximum": 9},
        "x": {"type": "number", "exclusiveMinimum": 1},
        "kind": {"enum": ["b", "a"]}, "fixed": {"const": 7},
        "when": {"type": "string", "format": "date-time"},
        "code": {"type": "string", "maxLength": 4},
        "tags": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/Tag"}},
        "maybe": {"type": ["null", "string"]}},
        "$defs": {"Tag": {"type": "object", "properties": {"name": {"type": "string",
                                                                    "pattern": "^[A-Z]"}}}}}
    got = fill_schema(bounded, topic="summer sale")
    jsonschema.validate(got, bounded)
    assert got["tags"] == [{"name": "Summer sale"}] * 2 and got["n"] == 3
    gemini = {"type": "OBJECT", "properties": {"count": {"type": "INTEGER"},
                                               "answer": {"type": "STRING"}}}
    assert fill_schema(gemini, topic="q", answer="yes") == {"count": 0, "answer": "yes"}


def test_stream_pieces_join_back_and_cuts() -> None:
    assert "".join(chunks(" about x  y ")) == " about x  y "
    args = json.dumps({"order_id": "AB-1234", "note": "ünïcode 42"})
    assert "".join(argument_pieces(args)) == args and len(argument_pieces(args)) > 5
    assert first_tokens(PLAIN, 3) == "Answer: you asked"
    assert first_tokens("two words", 2) is None
    assert cut_at_stop(PLAIN, ["reply", "asked"]) == ("Answer: you ", "asked")
    assert cut_at_stop(PLAIN, ["zzz"]) is None


def test_reply_follows_the_request_and_the_model_behaviours() -> None:
    ask = Ask(conversation=[("user", Q)], model="m")
    none = Faults()
    plain = reply(ask, none)
    assert (plain.text, plain.finish, plain.prompt_tokens, plain.completion_tokens) == (
        PLAIN, "stop", 8, len(PLAIN.split()))
    cut = reply(Ask(conversation=[("user", Q)], model="m", max_tokens=4, stop=["grounded"]),
                none)
    assert (cut.text, cut.finish) == ("Answer: you asked about", "length")
    stopped = reply(Ask(conversation=[("user", Q)], model="m", stop=["grounded"]), none)
    assert stopped.finish == "stop_sequence" and stopped.stop_sequence == "grounded"
    assert reply(ask, Faults(refuse=True)).text == REFUSAL_TEXT
    filtered = reply(ask, Faults(content_filter="output"))
    assert filtered.finish == "content_filter" and PLAIN.startswith(filtered.text)
    assert reply(ask, Faults(content_filter="prompt")).finish == "blocked"
    as_json = reply(Ask(conversation=[("user", Q)], model="m", json_object=True), none)
    assert json.loads(as_json.text) == {"answer": PLAIN}
    assert context_overflow([("user", "x" * 401)], 400) == (101, 100)
    assert context_overflow([("user", "x" * 400)], 400) is None


def test_flapping_timing() -> None:
    cycle = Faults(status=503, down_for_s=2, up_for_s=1)
    assert [cycle.active_after(t) for t in (0, 1.9, 2.1, 2.9, 3.1, 5.5)] == [
        True, True, False, False, True, False]
    once = Faults(status=503, down_for_s=2)
    assert [once.active_after(t) for t in (0, 1.9, 2.1, 100)] == [True, True, False, False]
    now = [10.0]
    setting = FaultSetting(clock=lambda: now[0])
    setting.set(once)
    assert setting.for_route("chat") is once and setting.as_dict()["active"] is True
    now[0] = 12.5
    assert setting.for_route("chat").status is None and setting.as_dict()["active"] is False
    with pytest.raises(ValueError, match="up_for_s"):
        Faults(up_for_s=1)


def test_strict_schema_rules() -> None:
    ok = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
          "additionalProperties": False}
    assert strict_schema_problem(ok) is None
    assert "'additionalProperties' is required" in str(strict_schema_problem(
        {**ok, "additionalProperties": True}))
    nested = {**ok, "properties": {"a": {"type": "object", "properties": {"b": {}},
                                         "additionalProperties": False}}}
    assert strict_schema_problem(nested) == (
        "In context=('properties', 'a'), 'required' is required to be supplied and to be an "
        "array including every key in properties. Missing 'b'.")


async def _drain(events: list[Event], fault: Faults, wait_s: float = 0.5) -> tuple[bytes, bool]:
    out: list[bytes] = []

    async def run() -> None:
        async for data in write(events, fault):
            out.append(data)

    try:
        await asyncio.wait_for(run(), wait_s)
    except TimeoutError:
        return b"".join(out), True
    return b"".join(out), False


async def test_stream_writer_applies_each_fault() -> None:
    events = [Event(b"data: {\"n\":%d}\n\n" % i, content=i > 0) for i in range(4)]
    events.append(Event(b"data: [DONE]\n\n", terminator=True))
    everything = b"".join(e.data for e in events)
    assert await _drain(events, Faults()) == (everything, False)
    assert await _drain(events, Faults(truncate_after_chunks=2)) == (
        events[0].data + events[1].data, False)
    assert await _drain(events, Faults(stall_after_chunks=2)) == (
        events[0].data + events[1].data, True)
    assert await _drain(events, Faults(drop_terminator=True)) == (
        everything[:-len(events[-1].data)], True)
    assert await _drain(events, Faults(malformed_after_chunks=1)) == (
        events[0].data + b'data: {"n\n\n', False)
    assert malformed(events[-1]) == b"data: [DO\n\n"
    assert malformed(Event(b'event: ping\ndata: {"type":"ping"}\n\n')).startswith(
        b"event: ping\ndata: {")

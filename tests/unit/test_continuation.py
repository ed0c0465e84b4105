"""The continuation check: what of a fallback's output may follow the partial answer."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage

from langchain_ha.resilience.continuation import (
    CONTINUATION_INSTRUCTION,
    RESTART_KEY,
    ContinuationMismatch,
    Splicer,
    assemble,
    continuation_cue,
    continuation_messages,
    continuation_request,
    requested_cue,
)

ANSWERS = [
    "Answer: you asked about status request number 5 queue. This reply is deterministic and "
    "grounded only in your question, so every provider gives the same one.",
    "According to [doc:refunds]: Refunds are processed within 5 business days of receiving the "
    "returned item. (asked about: refund policy work)",
    "Order AB-1234: shipped, expected in 3 days with DHL.",
    "To reset your password, open Settings, choose Security and press Reset. A link arrives by "
    "e-mail within a minute; it expires after 24 hours.",
]
# Each answer restarted in other words, as a different model would after ignoring "continue".
REWORDED = [
    "In short: your question concerned status request number 5 queue. This reply is "
    "deterministic and grounded only in your question, so every provider gives the same one.",
    "Per [doc:refunds], refunds get handled inside 5 business days once the item comes back.",
    "Your order AB-1234 has shipped and should arrive within 3 days via DHL.",
    "You can reset the password from Settings: pick Security, then Reset. An e-mail with a link "
    "follows shortly and the link stays valid for a day.",
]
PREAMBLE = "Sure, here is the full answer again: "


def words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def splice(partial: str, fallback: str, piece: int, *, cue: str | None = None) -> str:
    """``partial`` followed by what the splicer passes on of ``fallback`` fed in pieces."""
    s = Splicer(partial, cue=cue)
    out = "".join(s.feed(fallback[i:i + piece]) for i in range(0, len(fallback), piece))
    return partial + out + s.end()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), style=st.sampled_from(["echo", "replay", "preamble", "overlap"]),
       piece=st.integers(min_value=1, max_value=40))
def test_every_obedient_or_word_for_word_fallback_gives_the_answer_once(
        data: st.DataObject, style: str, piece: int) -> None:
    """Asked to begin with the cue, a fallback that does so, or that replays the partial
    answer (after a preamble or not), or repeats its last words, gives the answer once."""
    full = data.draw(st.sampled_from(ANSWERS))
    parts = words(full)
    # A preamble before a one-word partial ("To ") cannot be told from other text: see the
    # module's docstring (a clean error, not a guess).
    first = 2 if style == "preamble" else 1
    cut = data.draw(st.integers(min_value=first, max_value=len(parts) - 1))
    partial = "".join(parts[:cut])
    cue = continuation_cue(partial)
    fallback = {
        "echo": full[len(partial.rstrip()) - len(cue):],
        "replay": full,
        "preamble": PREAMBLE + full,
        "overlap": "".join(parts[max(0, cut - 2):]),
    }[style]
    assert splice(partial, fallback, piece, cue=cue) == full


@settings(max_examples=200, deadline=None)
@given(data=st.data(), piece=st.integers(min_value=1, max_value=40))
def test_a_continuation_without_the_cue_is_judged_by_how_it_opens(
        data: st.DataObject, piece: int) -> None:
    """A prefill's continuation (or a model that left the cue out) carries on in lower case
    here; the opening check lets it through."""
    full = data.draw(st.sampled_from(ANSWERS[:3]))
    parts = words(full)
    cut = data.draw(st.integers(min_value=1, max_value=len(parts) - 1))
    partial = "".join(parts[:cut])
    assert splice(partial, full[len(partial):], piece) == full


@pytest.mark.parametrize("index", range(len(ANSWERS)))
def test_a_restart_in_other_words_is_never_spliced(index: int) -> None:
    parts = words(ANSWERS[index])
    for cut in range(2, len(parts)):
        partial = "".join(parts[:cut])
        with pytest.raises(ContinuationMismatch) as info:
            splice(partial, REWORDED[index], 7, cue=continuation_cue(partial))
        assert REWORDED[index].startswith(info.value.text)


def test_nothing_is_passed_on_while_the_opening_is_undecided() -> None:
    s = Splicer("Order AB-1234: shipped, ")
    assert s.feed("Order AB-1234") == ""  # could still be a replay
    assert s.feed(": shipped, expected in 3 days with DHL.") == "expected in 3 days with DHL."
    assert s.passing and s.feed(" More.") == " More."


def test_an_empty_continuation_means_the_partial_answer_was_complete() -> None:
    s = Splicer("Order AB-1234: shipped.")
    assert s.feed("  ") == ""
    assert s.end() == ""


def test_a_partial_replay_that_stops_short_is_a_mismatch() -> None:
    s = Splicer("Refunds are processed within 5 business days of receiving the item.")
    s.feed("Refunds are processed within")
    with pytest.raises(ContinuationMismatch):
        s.end()


def test_a_proper_noun_after_the_cue_is_no_restart() -> None:
    partial = "To reset your password, open "
    cue = continuation_cue(partial)
    assert cue == "To reset your password, open"
    rest = "Settings, choose Security and press Reset."
    assert splice(partial, cue + " " + rest, 6, cue=cue) == partial + rest


def test_continuation_messages_use_a_prefill_or_a_user_request_with_the_cue() -> None:
    asked = [HumanMessage(content="q")]
    assert continuation_messages(asked, "part one ", prefill=True) == [
        *asked, AIMessage(content="part one")]
    partial = "one two three four five six seven "
    request = continuation_messages(asked, partial)[-1]
    assert request == HumanMessage(content=continuation_request(partial))
    assert str(request.content).startswith(CONTINUATION_INSTRUCTION)
    assert requested_cue(str(request.content)) == "three four five six seven"
    assert requested_cue("an ordinary question") is None


def test_assemble_honours_the_restart_signal() -> None:
    chunks = [AIMessageChunk(content="the quick "),
              AIMessageChunk(content="", response_metadata={RESTART_KEY: {"discard_chars": 10}}),
              AIMessageChunk(content="A fast "), AIMessageChunk(content="fox")]
    total = assemble(chunks)
    assert total is not None and total.content == "A fast fox"
    assert assemble([]) is None

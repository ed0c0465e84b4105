"""Deterministic, grounded answers: the simulator's "model".

The answer depends only on the conversation (never on which simulator answers), so a drill can
check that an answer is right, and a stream continued on another provider ends up identical to
an uninterrupted one.  Everything here is a pure function of its arguments.

A *continuation request* is a conversation that ends with an assistant prefill (the answer
continues that text) or with the router's continuation request after an assistant turn
(:func:`langchain_ha.resilience.continuation.continuation_request`: go on from the partial
answer, starting with its last words, the *cue*).  An obedient model sends the rest of the full
answer, after the cue when it was asked to echo one.  A model that ignores such a request
restarts in one of the styles of :func:`restarted`.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from typing import Any

from langchain_ha.providers._faults import RestartStyle
from langchain_ha.providers._schema import fill_schema
from langchain_ha.resilience.continuation import requested_cue

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
RESTART_PREAMBLE = "Sure, here is the full answer again: "
ORDER_ID = re.compile(r"\b([A-Z]{2}-?\d{4,8})\b")
_DOC = re.compile(r"\[doc:([A-Za-z0-9_.-]+)\]\s*(.*?)(?=\[doc:|\Z)", re.S)
_WORD = re.compile(r"[a-z0-9]+")
_ARG_PIECE = re.compile(r"[A-Za-z]{1,8}|\d{1,3}|\s+|[^A-Za-z\d\s]{1,2}")
STOP_WORDS = frozenset({
    "a", "about", "an", "and", "are", "at", "be", "by", "can", "could", "did", "do", "does",
    "for", "from", "how", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our",
    "please", "should", "tell", "that", "the", "their", "them", "there", "they", "this", "to",
    "was", "we", "were", "what", "when", "where", "which", "who", "why", "with", "would",
    "you", "your",
})

Turn = tuple[str, str]
ToolSpec = tuple[str, dict[str, Any]]  # (name, JSON schema of its parameters)
ToolCall = tuple[str, dict[str, Any]]  # (name, arguments)


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words of ``text``."""
    return _WORD.findall(text.lower())


def keywords(text: str) -> list[str]:
    """The words of ``text`` that carry meaning (no stop words), in order, without repeats."""
    seen: dict[str, None] = {}
    for w in words(text):
        if w not in STOP_WORDS and w not in seen:
            seen[w] = None
    return list(seen)


def topic(question: str) -> str:
    """What ``question`` is about: its first eight keywords ('' if it has none)."""
    return " ".join(keywords(question)[:8])


def documents(conversation: Sequence[Turn]) -> list[tuple[str, str]]:
    """``(id, text)`` of every ``[doc:ID] text`` block in system and user turns."""
    found: list[tuple[str, str]] = []
    for role, text in conversation:
        if role in ("system", "user") and "[doc:" in text:
            found.extend((m.group(1), " ".join(m.group(2).split())) for m in _DOC.finditer(text))
    return found


def _split_first_sentence(text: str) -> tuple[str, str]:
    match = re.match(r"(.+?[.!?])(\s|$)", text, re.S)
    if not match:
        return text.strip(), ""
    return match.group(1).strip(), text[match.end(1):]


def _first_sentence(text: str) -> str:
    return _split_first_sentence(text)[0]


def _last(conversation: Sequence[Turn], role: str) -> str:
    for r, text in reversed(conversation):
        if r == role:
            return text
    return ""


def best_document(question: str, docs: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """The document sharing most keywords with ``question`` (ties: the first)."""
    wanted = set(keywords(question))
    best, best_score = None, -1
    for doc in docs:
        score = len(wanted & set(words(doc[1])))
        if score > best_score:
            best, best_score = doc, score
    return best


def continuation_of(conversation: Sequence[Turn]) -> tuple[list[Turn], str, str] | None:
    """``(conversation before the partial answer, partial answer, cue)`` for a continuation
    request, or None for any other conversation.

    Either the last turn is an assistant prefill (the cue is ``""``: the model extends the
    text), or it is the router's continuation request from the user right after an assistant
    turn (the cue is the partial answer's last words, which the reply is to begin with).
    """
    if len(conversation) >= 2 and conversation[-1][0] == "assistant":
        return list(conversation[:-1]), conversation[-1][1], ""
    if len(conversation) >= 3 and conversation[-1][0] == "user" and \
            conversation[-2][0] == "assistant":
        cue = requested_cue(conversation[-1][1])
        if cue is not None:
            return list(conversation[:-2]), conversation[-2][1], cue
    return None


def answer_for(conversation: Sequence[Turn], restart: RestartStyle | None = None) -> str:
    """The deterministic answer to ``conversation`` (a list of ``(role, text)``).

    A continuation request gets the rest of the full answer after the partial one, beginning
    with the cue if one was asked for (the full answer if the partial one is not a prefix of
    it).  With ``restart`` set the model ignores the continuation and starts over in that
    style (see :func:`restarted`).
    """
    cont = continuation_of(conversation)
    if cont is not None:
        before, partial, cue = cont
        full = answer_for(before)
        if restart is not None:
            return restarted(full, restart)
        if not full.startswith(partial):
            return full
        if cue and partial.rstrip().endswith(cue):
            return full[len(partial.rstrip()) - len(cue):]
        return full[len(partial):]
    if conversation and conversation[-1][0] == "tool":
        return _tool_answer(conversation)
    question = _last(conversation, "user")
    docs = documents(conversation)
    about = topic(question) or "your question"
    if docs:
        doc = best_document(question, docs)
        assert doc is not None
        return f"According to [doc:{doc[0]}]: {_first_sentence(doc[1])} (asked about: {about})"
    return (f"Answer: you asked about {about}. This reply is deterministic and grounded only "
            f"in your question, so every provider gives the same one.")


def restarted(full: str, style: RestartStyle) -> str:
    """How a model that ignores a continuation request starts over.

    ``replay``: the identical full answer.  ``preamble``: :data:`RESTART_PREAMBLE` then the
    full answer.  ``reword``: :func:`reword` of the full answer.
    """
    if style == "preamble":
        return RESTART_PREAMBLE + full
    if style == "reword":
        return reword(full)
    return full


_OPENINGS = [
    (re.compile(r"^Answer: you asked about "), "your question was regarding "),
    (re.compile(r"^According to (\[doc:[^\]]+\]): "), r"as \1 puts it, "),
    (re.compile(r"^Order ([A-Z0-9-]+): "), r"order \1 is "),
]
_SYNONYMS = {
    "about": "regarding", "according": "as per", "answer": "reply", "asked": "enquired",
    "can": "may", "days": "days' time", "expected": "due", "get": "obtain", "in": "within",
    "is": "stands", "must": "has to", "need": "require", "needs": "requires", "order": "purchase",
    "said": "reported", "take": "need", "takes": "needs", "the": "this", "to": "towards",
    "with": "via", "your": "the", "you": "one",
}
_TOKEN = re.compile(r"[A-Za-z']+|[^A-Za-z']+")


def reword(text: str) -> str:
    """``text`` said differently, deterministically (what a model restarting in its own words
    sends; no prefix of it matches the original).

    The rules, applied to the first sentence only (the rest is kept as it is):

    1. The opening ``"Put differently, "`` is put in front.
    2. The template opening of the simulator's answers is rephrased: ``"Answer: you asked
       about X"`` becomes ``"your question was regarding X"``, ``"According to [doc:ID]: S"``
       becomes ``"as [doc:ID] puts it, S"`` and ``"Order ID: S"`` becomes ``"order ID is S"``.
    3. Every other word found in a small synonym table (``the`` → ``this``, ``with`` → ``via``,
       ``takes`` → ``needs``, ``in`` → ``within``, …) is replaced, keeping a leading capital.
    4. The sentence's final ``.``/``!``/``?`` becomes ``", in other words."``.
    """
    first, rest = _split_first_sentence(text)
    opening = ""
    for pattern, replacement in _OPENINGS:
        match = pattern.match(first)
        if match:
            opening, first = match.expand(replacement), first[match.end():]
            break
    out = [opening]
    for token in _TOKEN.findall(first):
        synonym = _SYNONYMS.get(token.lower())
        if synonym is None:
            out.append(token)
        else:
            out.append(synonym.capitalize() if token[0].isupper() else synonym)
    sentence = "".join(out)
    if sentence and sentence[-1] in ".!?":
        sentence = sentence[:-1] + ", in other words."
    return "Put differently, " + sentence + rest


def _tool_results(conversation: Sequence[Turn]) -> list[str]:
    """The tool results since the last user turn (one tool-calling step or several)."""
    results: list[str] = []
    for role, text in reversed(conversation):
        if role == "user":
            break
        if role == "tool":
            results.append(text)
    return results[::-1]


def _answered_ids(conversation: Sequence[Turn]) -> set[str]:
    """Order ids the tool results since the last user turn answered."""
    done: set[str] = set()
    for result in _tool_results(conversation):
        try:
            data = json.loads(result)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("order_id"), str):
            done.add(data["order_id"])
    return done


def _tool_answer(conversation: Sequence[Turn]) -> str:
    """The answer after the trailing tool results: one sentence per result, in order."""
    asked = ORDER_ID.findall(_last(conversation, "user"))
    sentences = []
    for i, result in enumerate(_tool_results(conversation)):
        try:
            data = json.loads(result)
        except ValueError:
            data = None
        if isinstance(data, dict) and "refund_id" in data:
            sentences.append(f"Order {data.get('order_id')}: refund {data['refund_id']} of "
                             f"{data.get('amount', '?')} {data.get('currency', 'EUR')} issued.")
            continue
        if isinstance(data, dict) and "order_id" in data:
            sentences.append(
                f"Order {data['order_id']}: {data.get('status', 'unknown')}, expected in "
                f"{data.get('eta_days', '?')} days with {data.get('carrier', 'the carrier')}.")
            continue
        order = asked[i] if i < len(asked) else (asked[0] if asked else "unknown")
        sentences.append(f"Order {order}: the order system said: {' '.join(result.split())[:160]}")
    return " ".join(sentences)


def tool_calls_for(
    conversation: Sequence[Turn], tools: Sequence[ToolSpec], forced: str | bool = False,
    parallel: bool = True,
) -> list[ToolCall]:
    """The tool calls the conversation calls for next (``[]`` for none: answer).

    Auto (``forced`` False): an order id in the question selects a tool whose name mentions
    "order" (among several, the one whose other words the question uses: ``refund_order``
    for "refund order AB-1234").  Two order ids ask for two calls in one step, or, when
    ``parallel`` is False, for one call per step, the next after the previous one's result
    (as real models chain calls).  Forced (``forced`` is a tool's name, or True for "any
    tool"): that tool (for "any", an order tool when the question has an order id, else the
    first) is called once, with arguments filled from its schema (structured output works
    this way).
    """
    if not conversation or not tools:
        return []
    last = conversation[-1][0]
    if last == "tool" and (forced or parallel):
        return []
    if last not in ("user", "tool"):
        return []
    question = _last(conversation, "user")
    ids = list(dict.fromkeys(ORDER_ID.findall(question)))
    if last == "tool":
        # A result that names no order id (an error text) still counts as one step done.
        if len(_tool_results(conversation)) >= len(ids):
            return []
        answered = _answered_ids(conversation)
        # A result naming no id (an error) answered the next id in the question's order.
        unnamed = len(_tool_results(conversation)) - len(answered)
        ids = [i for i in ids if i not in answered][max(0, unnamed):]
        if not ids:
            return []
    order_tools = [t for t in tools if "order" in t[0].lower()]
    chosen: ToolSpec | None = None
    if forced:
        if isinstance(forced, str):
            chosen = next((t for t in tools if t[0] == forced), None)
        if chosen is None:
            chosen = _order_tool(question, order_tools) if ids and order_tools else tools[0]
    elif ids and order_tools:
        chosen = _order_tool(question, order_tools)
    if chosen is None:
        return []
    name, schema = chosen
    targets: list[str | None] = list(ids) if parallel and "order" in name.lower() else ids[:1]
    answer = answer_for(conversation)
    return [(name, fill_schema(schema, topic=topic(question), order_id=oid, answer=answer))
            for oid in targets or [None]]


def _order_tool(question: str, order_tools: Sequence[ToolSpec]) -> ToolSpec:
    asked = set(words(question))
    for spec in order_tools:
        verbs = set(re.split(r"[^a-z]+", spec[0].lower())) - {"order", "orders", "get", ""}
        if verbs & asked:
            return spec
    return order_tools[0]


def chunks(text: str) -> list[str]:
    """How a stream splits ``text``: one word with its trailing space per chunk (the first
    also with any leading space, so the chunks always join to ``text``)."""
    return re.findall(r"\s*\S+\s*", text) or [text]


def argument_pieces(arguments: str) -> list[str]:
    """How a stream splits a tool call's JSON arguments: token-sized pieces, as OpenAI and
    Anthropic send them (they join to ``arguments``)."""
    return _ARG_PIECE.findall(arguments) or [arguments]


def token_count(text: str) -> int:
    """Tokens in ``text`` as the simulator counts them: whitespace-separated words."""
    return len(text.split())


def first_tokens(text: str, limit: int) -> str | None:
    """``text`` cut to its first ``limit`` tokens (no trailing space), or None if shorter."""
    pieces = chunks(text)
    if len(text.split()) <= limit:
        return None
    return "".join(pieces[:limit]).rstrip()


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str] | None:
    """``(text before the earliest stop sequence, that sequence)``, or None if none occurs."""
    found = [(text.find(s), s) for s in stops if s and s in text]
    if not found:
        return None
    at, stop = min(found)
    return text[:at], stop


def expected_answer(messages: Sequence[Any]) -> str:
    """The answer the simulator gives to ``messages``: ``(role, text)`` pairs, dicts with
    ``role``/``content``, or LangChain messages."""
    return answer_for([_as_turn(m) for m in messages])


def _as_turn(message: Any) -> Turn:
    if isinstance(message, tuple):
        return str(message[0]), str(message[1])
    if isinstance(message, dict):
        return str(message["role"]), str(message.get("content") or "")
    role = {"human": "user", "ai": "assistant"}.get(message.type, message.type)
    return role, str(message.content)


_STATUSES = ("processing", "packed", "shipped", "in transit", "out for delivery", "delivered")
_CARRIERS = ("UPS", "DHL", "FedEx", "PostNL")


def order_status(order_id: str) -> dict[str, object]:
    """The simulated order API's (deterministic) answer for ``order_id``: drills' oracle."""
    h = zlib.crc32(order_id.encode())
    return {"order_id": order_id, "status": _STATUSES[h % len(_STATUSES)],
            "eta_days": h % 7, "carrier": _CARRIERS[(h >> 8) % len(_CARRIERS)]}

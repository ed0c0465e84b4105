"""Deterministic, grounded answers: the simulator's "model".

The answer depends only on the conversation (never on which simulator answers), so a drill can
check that an answer is right, and a stream continued on another provider ends up identical to
an uninterrupted one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

CONTINUATION_INSTRUCTION = (
    "Continue your previous answer exactly where it stopped. Do not repeat any of it."
)
ORDER_ID = re.compile(r"\b([A-Z]{2}-?\d{4,8})\b")
_DOC = re.compile(r"\[doc:([A-Za-z0-9_.-]+)\]\s*(.*?)(?=\[doc:|\Z)", re.S)
_WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset({
    "a", "about", "an", "and", "are", "at", "be", "by", "can", "could", "did", "do", "does",
    "for", "from", "how", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our",
    "please", "should", "tell", "that", "the", "their", "them", "there", "they", "this", "to",
    "was", "we", "were", "what", "when", "where", "which", "who", "why", "with", "would",
    "you", "your",
})

Turn = tuple[str, str]


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


def documents(conversation: Sequence[Turn]) -> list[tuple[str, str]]:
    """``(id, text)`` of every ``[doc:ID] text`` block in system and user turns."""
    found: list[tuple[str, str]] = []
    for role, text in conversation:
        if role in ("system", "user") and "[doc:" in text:
            found.extend((m.group(1), " ".join(m.group(2).split())) for m in _DOC.finditer(text))
    return found


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return (match.group(1) if match else text).strip()


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


def answer_for(conversation: Sequence[Turn]) -> str:
    """The deterministic answer to ``conversation`` (a list of ``(role, text)``)."""
    if (
        len(conversation) >= 2
        and conversation[-1][0] == "user"
        and conversation[-1][1].startswith(CONTINUATION_INSTRUCTION)
        and conversation[-2][0] == "assistant"
    ):
        partial = conversation[-2][1]
        full = answer_for(conversation[:-2])
        return full[len(partial):] if full.startswith(partial) else full
    if conversation and conversation[-1][0] == "tool":
        return _tool_answer(conversation)
    question = _last(conversation, "user")
    docs = documents(conversation)
    topic = " ".join(keywords(question)[:8]) or "your question"
    if docs:
        doc = best_document(question, docs)
        assert doc is not None
        return f"According to [doc:{doc[0]}]: {_first_sentence(doc[1])} (asked about: {topic})"
    return (f"Answer: you asked about {topic}. This reply is deterministic and grounded only "
            f"in your question, so every provider gives the same one.")


def _tool_answer(conversation: Sequence[Turn]) -> str:
    result = conversation[-1][1]
    try:
        data = json.loads(result)
    except ValueError:
        data = None
    if isinstance(data, dict) and "order_id" in data:
        return (f"Order {data['order_id']}: {data.get('status', 'unknown')}, expected in "
                f"{data.get('eta_days', '?')} days with {data.get('carrier', 'the carrier')}.")
    match = ORDER_ID.search(_last(conversation, "user"))
    order = match.group(1) if match else "unknown"
    return f"Order {order}: the order system said: {' '.join(result.split())[:160]}"


ToolSpec = tuple[str, dict[str, Any]]  # (name, JSON schema of its parameters)


def tool_call_for(
    conversation: Sequence[Turn], tools: Sequence[ToolSpec], forced: str | bool = False
) -> tuple[str, dict[str, Any]] | None:
    """``(tool name, arguments)`` when the last user turn calls for a tool.

    An order id in the question selects a tool whose name mentions "order".  When the caller
    forces a tool (``forced`` is its name, or True for "any"), that tool is called with
    arguments filled from the question (structured output works this way).
    """
    if not conversation or conversation[-1][0] != "user" or not tools:
        return None
    question = conversation[-1][1]
    match = ORDER_ID.search(question)
    if forced:
        name, schema = next((t for t in tools if t[0] == forced), tools[0])
        return name, _fill(schema, question, match.group(1) if match else None)
    if match is None:
        return None
    for name, _schema in tools:
        if "order" in name.lower():
            return name, {"order_id": match.group(1)}
    return None


def _fill(schema: dict[str, Any], question: str, order_id: str | None) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties") or {}
    wanted = schema.get("required") or list(props)
    topic = " ".join(keywords(question)[:8])
    args: dict[str, Any] = {}
    for prop in wanted:
        kind = (props.get(prop) or {}).get("type", "string")
        if kind in ("integer", "number"):
            args[prop] = 0
        elif kind == "boolean":
            args[prop] = False
        elif kind == "array":
            args[prop] = []
        elif "id" in prop.lower() and order_id:
            args[prop] = order_id
        else:
            args[prop] = topic
    return args


def chunks(text: str) -> list[str]:
    """How a stream splits ``text``: one word with its trailing space per chunk."""
    return re.findall(r"\S+\s*", text) or [text]


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

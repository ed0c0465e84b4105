"""One chat request as every API asks it (:class:`Ask`), and the model's reply (:class:`Reply`).

Each API module translates its wire format into an :class:`Ask` and a :class:`Reply` back into
its wire format; :func:`reply` is the one place that decides what the model says, including
the model behaviours a fault asks for (refusing, ignoring a continuation, an output filter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from langchain_ha.providers._answers import (
    ORDER_ID,
    REFUSAL_TEXT,
    ToolCall,
    ToolSpec,
    Turn,
    answer_for,
    cut_at_stop,
    first_tokens,
    token_count,
    tool_calls_for,
    topic,
)
from langchain_ha.providers._faults import Faults
from langchain_ha.providers._schema import fill_schema

Finish = Literal["stop", "stop_sequence", "length", "tool_calls", "refusal", "content_filter",
                 "blocked"]
CHARS_PER_TOKEN = 4  # the context window is measured in characters; errors speak tokens


@dataclass
class Ask:
    """A chat request, API-neutral.

    ``tool_choice``: False lets the model decide (auto), True forces some tool (any/required),
    a string forces that tool, None forbids tools (none).
    """

    conversation: list[Turn]
    model: str
    stream: bool = False
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str | bool | None = False
    parallel: bool = True
    schema: dict[str, Any] | None = None
    json_object: bool = False
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    stream_usage: bool = False
    sse: bool = True  # a stream's framing: SSE events, or one JSON array (Gemini without alt=sse)

    @property
    def ends_with_assistant(self) -> bool:
        """True for an assistant prefill (the conversation's last turn is the assistant's)."""
        return bool(self.conversation) and self.conversation[-1][0] == "assistant"

    @property
    def question(self) -> str:
        """The last user turn's text."""
        return next((t for r, t in reversed(self.conversation) if r == "user"), "")


@dataclass
class Reply:
    """What the model answers: text or tool calls, why it stopped, and token counts."""

    text: str
    calls: list[ToolCall]
    finish: Finish
    prompt_tokens: int
    completion_tokens: int
    stop_sequence: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def prompt_tokens(conversation: Sequence[Turn]) -> int:
    """The prompt's tokens as usage reports them (whitespace words; at least 1)."""
    return max(1, sum(token_count(t) for _, t in conversation))


def context_overflow(conversation: Sequence[Turn], window_chars: int) -> tuple[int, int] | None:
    """``(prompt tokens, window tokens)`` if the prompt exceeds the window, else None.

    The window is measured in characters; the numbers an error reports are tokens of
    :data:`CHARS_PER_TOKEN` characters (the prompt's rounded up, so it always exceeds).
    """
    chars = sum(len(t) for _, t in conversation)
    if chars <= window_chars:
        return None
    return math.ceil(chars / CHARS_PER_TOKEN), window_chars // CHARS_PER_TOKEN


def reply(ask: Ask, fault: Faults) -> Reply:
    """The model's reply to ``ask`` under ``fault`` (deterministic)."""
    prompt = prompt_tokens(ask.conversation)
    if fault.content_filter == "prompt":
        return Reply("", [], "blocked", prompt, 0)
    if fault.refuse:
        return Reply(REFUSAL_TEXT, [], "refusal", prompt, token_count(REFUSAL_TEXT))
    if ask.tools and ask.tool_choice is not None:
        calls = tool_calls_for(ask.conversation, ask.tools, ask.tool_choice, ask.parallel)
        if calls:
            used = sum(token_count(orjson.dumps(args).decode().replace(",", ", "))
                       for _, args in calls)
            return Reply("", calls, "tool_calls", prompt, max(1, used))
    text = answer_for(ask.conversation,
                      fault.restart_style if fault.ignore_continuation else None)
    if ask.schema is not None:
        ids = ORDER_ID.findall(ask.question)
        value = fill_schema(ask.schema, topic=topic(ask.question),
                            order_id=ids[0] if ids else None, answer=text)
        text = orjson.dumps(value).decode()
    elif ask.json_object:
        text = orjson.dumps({"answer": text}).decode()
    finish: Finish = "stop"
    stop_sequence = None
    cut = cut_at_stop(text, ask.stop)
    if cut is not None:
        (text, stop_sequence), finish = cut, "stop_sequence"
    if ask.max_tokens is not None:
        short = first_tokens(text, ask.max_tokens)
        if short is not None:
            text, finish, stop_sequence = short, "length", None
    if fault.content_filter == "output":
        text = first_tokens(text, max(1, token_count(text) // 2)) or ""
        finish, stop_sequence = "content_filter", None
    return Reply(text, [], finish, prompt, max(1, token_count(text)), stop_sequence)

"""Request bodies of the replica's own API, and the limits checked on them (the
OpenAI-compatible bodies are in :mod:`langchain_ha.serve.openai_wire`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from langchain_ha.serve.settings import ServeSettings


class InvokeRequest(BaseModel):
    """``POST /v1/invoke`` and ``/v1/stream``: the Runnable's input."""

    model_config = ConfigDict(extra="forbid")

    input: Any = Field(description="the served Runnable's input (e.g. {'question': ...})")


class BatchRequest(BaseModel):
    """``POST /v1/batch``: several inputs, answered in order."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(min_length=1)


_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "human", "ai",
                    "function"})


def _is_message(item: Any) -> bool:
    """A message as LangChain takes one: ``{"role"|"type", "content"}`` or ``[role, text]``."""
    if isinstance(item, dict):
        return "content" in item and ("role" in item or "type" in item)
    return (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)
            and item[0] in _ROLES)


def check_input(value: Any, settings: ServeSettings, field: str) -> str | None:
    """A message naming the broken limit, or None.

    One iterative walk (the body's depth and size are already bounded, see
    :mod:`~langchain_ha.serve.jsonbody`): every string counts toward ``max_prompt_chars``,
    dictionary keys included; a list holding messages, wherever it is (``input`` itself,
    ``input.messages``, ``input.chat_history``...), may hold at most ``max_messages`` items.
    """
    limit_chars, limit_messages = settings.max_prompt_chars, settings.max_messages
    chars = 0
    stack: list[tuple[Any, str]] = [(value, field)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                chars += len(key) if isinstance(key, str) else 0
                if isinstance(child, str):
                    chars += len(child)
                elif isinstance(child, dict | list):
                    stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            if len(item) > limit_messages and any(map(_is_message, item)):
                return f"{where[:200]}: at most {limit_messages} messages (max_messages)"
            for i, child in enumerate(item):
                if isinstance(child, str):
                    chars += len(child)
                elif isinstance(child, dict | list):
                    stack.append((child, f"{where}[{i}]"))
        if chars > limit_chars:
            return (f"{field}: at most {limit_chars} characters, keys included "
                    "(max_prompt_chars)")
    return None

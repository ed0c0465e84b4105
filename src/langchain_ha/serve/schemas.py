"""Request bodies of the replica API, and the limits checked on them."""

from __future__ import annotations

from typing import Any, Literal

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


class ChatMessage(BaseModel):
    """One OpenAI chat message (text content)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``: an OpenAI-compatible request (other fields ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str = "langchain-ha"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = Field(default=None, max_length=200)


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


def check_input(value: Any, settings: ServeSettings, field: str) -> str | None:
    """A message naming the broken limit, or None."""
    messages = value.get("messages") if isinstance(value, dict) else None
    if isinstance(messages, list) and len(messages) > settings.max_messages:
        return f"{field}.messages: at most {settings.max_messages} messages (max_messages)"
    if _chars(value) > settings.max_prompt_chars:
        return f"{field}: at most {settings.max_prompt_chars} characters (max_prompt_chars)"
    return None


def check_chat(req: ChatRequest, settings: ServeSettings) -> str | None:
    if len(req.messages) > settings.max_messages:
        return f"messages: at most {settings.max_messages} messages (max_messages)"
    if sum(len(text_of(m.content)) for m in req.messages) > settings.max_prompt_chars:
        return f"messages: at most {settings.max_prompt_chars} characters (max_prompt_chars)"
    if not any(m.role == "user" for m in req.messages):
        return "messages: at least one message must have role 'user'"
    return None

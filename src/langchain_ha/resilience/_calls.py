"""Calling the wrapped chat models: unwrapping bindings, sync clients in threads, chunks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableBinding

Stream = tuple[list[ChatGenerationChunk], AsyncIterator[ChatGenerationChunk]]
"""An opened stream: its chunks up to the first with content, and the rest."""

# The finish reasons with which providers report a refusal or a content filter.
_REFUSALS = {"content_filter": "content_filter", "refusal": "refusal", "SAFETY": "safety",
             "PROHIBITED_CONTENT": "safety", "BLOCKLIST": "safety", "SPII": "safety"}


def default_name(model: Any, index: int) -> str:
    inner, _ = unwrap(model)
    label = getattr(inner, "model_name", None) or getattr(inner, "model", None)
    kind = getattr(inner, "_llm_type", type(inner).__name__)
    return f"{index}:{kind}:{label}" if isinstance(label, str) else f"{index}:{kind}"


def unwrap(model: Any) -> tuple[Any, dict[str, Any]]:
    """The chat model under any RunnableBindings, and the kwargs they bound (outer wins)."""
    kwargs: dict[str, Any] = {}
    while isinstance(model, RunnableBinding):
        kwargs = {**model.kwargs, **kwargs}
        model = model.bound
    # Tracing hints that BaseChatModel.invoke would strip; we call the model's _agenerate.
    return model, {k: v for k, v in kwargs.items() if not k.startswith("ls_")}


async def runnable_result(model: Any, messages: list[BaseMessage], stop: list[str] | None,
                          args: dict[str, Any], *, sync: bool) -> ChatResult:
    """A provider that is a Runnable but no chat model: its message as a ChatResult."""
    if sync:
        message = await asyncio.to_thread(model.invoke, messages, stop=stop, **args)
    else:
        message = await model.ainvoke(messages, stop=stop, **args)
    return ChatResult(generations=[ChatGeneration(message=message)])


def result_usage(result: ChatResult) -> Mapping[str, int] | None:
    if not result.generations:
        return None
    usage = getattr(result.generations[0].message, "usage_metadata", None)
    if not usage:
        return None
    return {"input_tokens": int(usage.get("input_tokens", 0)),
            "output_tokens": int(usage.get("output_tokens", 0))}


async def aclose(stream: AsyncIterator[Any]) -> None:
    aclose: Callable[[], Any] | None = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def close_stream(value: Stream) -> None:
    with contextlib.suppress(Exception):
        await aclose(value[1])


async def threaded(items: Iterator[ChatGenerationChunk]) -> AsyncIterator[ChatGenerationChunk]:
    """A sync client's stream, pulled item by item in worker threads."""
    end = object()
    try:
        while True:
            item = await asyncio.to_thread(next, items, end)
            if item is end:
                return
            yield item  # type: ignore[misc]
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


async def as_generation_chunks(
    stream: AsyncIterator[BaseMessage],
) -> AsyncIterator[ChatGenerationChunk]:
    async for message in stream:
        chunk = message if isinstance(message, AIMessageChunk) else AIMessageChunk(
            content=message.content
        )
        yield ChatGenerationChunk(message=chunk)


def is_final(chunk: ChatGenerationChunk) -> bool:
    """True for the chunk that carries the provider's finish marker (finish or stop reason)."""
    message = chunk.message
    if getattr(message, "chunk_position", None) == "last":
        return True
    info = chunk.generation_info
    if info and (info.get("finish_reason") or info.get("stop_reason")):
        return True
    meta = message.response_metadata
    return bool(meta) and bool(meta.get("finish_reason") or meta.get("stop_reason"))


def has_content(chunk: ChatGenerationChunk) -> bool:
    """True for a chunk with text or a tool call (not a role, usage or empty chunk)."""
    return bool(chunk.text) or bool(getattr(chunk.message, "tool_call_chunks", None))


def refusal_reason(message: BaseMessage) -> str | None:
    """Why ``message`` is a refusal (``refusal``, ``content_filter``, ``safety``), or None.

    Read from the metadata the integrations set (OpenAI's ``refusal`` and ``finish_reason``,
    Anthropic's ``stop_reason``, Gemini's finish reasons), which costs a few dict lookups.
    """
    if message.additional_kwargs.get("refusal"):
        return "refusal"
    meta = message.response_metadata
    for key in ("finish_reason", "stop_reason"):
        value = meta.get(key)
        if isinstance(value, str) and value in _REFUSALS:
            return _REFUSALS[value]
    return None


def streams(model: BaseChatModel) -> bool:
    """True if ``model`` implements streaming (else its ``_astream`` raises)."""
    cls = type(model)
    return cls._stream is not BaseChatModel._stream or cls._astream is not BaseChatModel._astream


async def as_one_chunk(call: Awaitable[ChatResult]) -> AsyncIterator[ChatGenerationChunk]:
    """A model that does not stream, as a stream of one chunk (its whole answer, finished)."""
    result = await call
    message = result.generations[0].message
    yield ChatGenerationChunk(
        message=AIMessageChunk(content=message.content, id=message.id,
                               response_metadata=message.response_metadata,
                               usage_metadata=getattr(message, "usage_metadata", None),
                               tool_call_chunks=[
                                   {"name": c["name"], "args": json.dumps(c["args"]),
                                    "id": c["id"], "index": i, "type": "tool_call_chunk"}
                                   for i, c in enumerate(getattr(message, "tool_calls", []))]),
        generation_info=result.generations[0].generation_info)

"""A scripted chat model: a stand-in for an external LLM provider in fast unit tests.

It is not one of our components; the integration tests use the provider simulator over HTTP
with the real ChatOpenAI / ChatAnthropic / ChatGoogleGenerativeAI clients instead.  Like a real
model it can disobey: ignore a request to continue (and restart, word for word, after a
preamble or in other words), refuse an assistant prefill, stall, send a malformed chunk, or end
a stream without its finish reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from langchain_ha.resilience.continuation import requested_cue


class ProviderError(Exception):
    """Shaped like an SDK's HTTP status error (status_code + response headers)."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None):
        super().__init__(message or f"HTTP {status}")
        self.status_code = status
        self.message = message or f"HTTP {status}"
        self.response = type("R", (), {"headers": headers or {}, "status_code": status})()


FULL = "the quick brown fox jumps over the lazy dog near the river bank today"
REWORDED = "A fast auburn fox leaps above a sleepy hound close to the riverside this day"
PREAMBLE = "Sure, here is the whole answer again: "
PREFILL_REJECTED = ("This model does not support assistant message prefill. The conversation "
                    "must end with a user message.")


class Scripted(BaseChatModel):
    """Answers ``FULL`` (or its continuation); fails, hangs or cuts streams on demand.

    ``cut_after``/``stall_after``/``truncate_after``/``malformed_after`` count stream chunks
    (one per word, then a final chunk with ``finish_reason``); ``hold_after_finish`` keeps the
    stream open after the final chunk.  ``tool_call`` answers with that tool call, streamed in
    ``tool_parts`` argument pieces.
    """

    label: str = "scripted"
    fail: Any = None
    delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    cut_after: int | None = None
    stall_after: int | None = None
    truncate_after: int | None = None
    malformed_after: int | None = None
    hold_after_finish: bool = False
    ignore_continuation: bool = False
    restart_style: Literal["replay", "preamble", "reword"] = "replay"
    reject_prefill: bool = False
    tool_call: dict[str, Any] | None = None
    tool_parts: int = 3
    refuse: bool = False
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def calls(self) -> int:
        return len(self._calls)

    @property
    def seen(self) -> list[list[BaseMessage]]:
        return self._calls

    def _answer(self, messages: list[BaseMessage]) -> str:
        last = messages[-1]
        cue = requested_cue(str(last.content)) if last.type == "human" else None
        if cue is not None:  # asked to continue, starting with the partial's last words
            partial = str(messages[-2].content).rstrip()
        elif isinstance(last, AIMessage):  # an assistant prefill: extended as it is
            partial, cue = str(last.content), ""
        else:
            return FULL
        if self.ignore_continuation:
            return {"replay": FULL, "preamble": PREAMBLE + FULL, "reword": REWORDED}[
                self.restart_style]
        if not FULL.startswith(partial):
            return FULL
        return FULL[len(partial) - len(cue):]

    async def _begin(self, messages: list[BaseMessage]) -> None:
        self._calls.append(list(messages))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        if self.reject_prefill and isinstance(messages[-1], AIMessage):
            raise ProviderError(400, PREFILL_REJECTED)

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        await self._begin(messages)
        usage = {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}
        if self.refuse:  # as ChatOpenAI reports a refusal: no content, the reason aside
            msg = AIMessage(content="", additional_kwargs={"refusal": "I can't help with that."},
                            response_metadata={"finish_reason": "stop"}, usage_metadata=usage)
        else:
            msg = AIMessage(content=self._answer(messages), usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return asyncio.run(self._agenerate(messages))

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        async def collect() -> list[ChatGenerationChunk | BaseException]:
            out: list[ChatGenerationChunk | BaseException] = []
            try:
                async for c in self._astream(messages):
                    out.append(c)
            except Exception as exc:
                out.append(exc)
            return out

        for item in asyncio.run(collect()):
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _astream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        await self._begin(messages)
        yield ChatGenerationChunk(message=AIMessageChunk(content=""))  # the role chunk
        if self.first_token_delay_s:
            await asyncio.sleep(self.first_token_delay_s)
        for i, chunk in enumerate(self._chunks(messages)):
            if self.cut_after is not None and i >= self.cut_after:
                raise ConnectionError("stream cut by the provider")
            if self.stall_after is not None and i >= self.stall_after:
                await asyncio.sleep(3600)
            if self.truncate_after is not None and i >= self.truncate_after:
                return  # the body ends cleanly, without the finish reason
            if self.malformed_after is not None and i >= self.malformed_after:
                raise json.JSONDecodeError("Unterminated string", '{"id": "chatcmpl-', 10)
            yield chunk
        if self.hold_after_finish:
            await asyncio.sleep(3600)

    def _chunks(self, messages: list[BaseMessage]) -> list[ChatGenerationChunk]:
        if self.tool_call is not None and messages[-1].type == "human":
            args = json.dumps(self.tool_call["args"])
            step = -(-len(args) // self.tool_parts)
            parts = [args[i:i + step] for i in range(0, len(args), step)]
            out = [ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[
                tool_call_chunk(name=self.tool_call["name"] if i == 0 else None, args=part,
                                id=f"call_{self.label}" if i == 0 else None, index=0)]))
                for i, part in enumerate(parts)]
            reason = "tool_calls"
        else:
            words = self._answer(messages).split(" ")
            out = [ChatGenerationChunk(message=AIMessageChunk(
                content=word if i == len(words) - 1 else word + " ")) for i, word in
                enumerate(words)]
            reason = "stop"
        out.append(ChatGenerationChunk(message=AIMessageChunk(content=""),
                                       generation_info={"finish_reason": reason}))
        return out

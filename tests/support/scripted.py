"""A scripted chat model: a stand-in for an external LLM provider in fast unit tests.

It is not one of our components; the integration tests use the provider simulator over HTTP
with the real ChatOpenAI / ChatAnthropic clients instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from langchain_ha.resilience.chat import CONTINUATION_INSTRUCTION


class ProviderError(Exception):
    """Shaped like an SDK's HTTP status error (status_code + response headers)."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None):
        super().__init__(message or f"HTTP {status}")
        self.status_code = status
        self.message = message or f"HTTP {status}"
        self.response = type("R", (), {"headers": headers or {}, "status_code": status})()


FULL = "the quick brown fox jumps over the lazy dog near the river bank today"


class Scripted(BaseChatModel):
    """Answers ``FULL`` (or its continuation); fails, hangs or cuts streams on demand."""

    label: str = "scripted"
    fail: Any = None
    delay_s: float = 0.0
    cut_after: int | None = None
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
        if last.content == CONTINUATION_INSTRUCTION:
            partial = str(messages[-2].content)
            return FULL[len(partial):] if FULL.startswith(partial) else FULL
        return FULL

    async def _begin(self, messages: list[BaseMessage]) -> None:
        self._calls.append(list(messages))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        await self._begin(messages)
        msg = AIMessage(content=self._answer(messages),
                        usage_metadata={"input_tokens": 3, "output_tokens": 5, "total_tokens": 8})
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
        words = self._answer(messages).split(" ")
        for i, word in enumerate(words):
            if self.cut_after is not None and i >= self.cut_after:
                raise ConnectionError("stream cut by the provider")
            text = word if i == len(words) - 1 else word + " "
            yield ChatGenerationChunk(message=AIMessageChunk(content=text))

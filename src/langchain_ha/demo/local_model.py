"""The demo's last-resort "local" model: extractive answers from the prompt's documents.

A real chat model with no network: it quotes the document in its context that best matches
the question (the same deterministic rule the provider simulator follows), so even with every
remote provider down the support bot's answers stay grounded and checkable.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_ha.providers import answer_for

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


class LocalExtractiveModel(BaseChatModel):
    """Answers by quoting the best-matching ``[doc:ID]`` block of its prompt."""

    @property
    def _llm_type(self) -> str:
        return "local-extractive"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        turns = [(_ROLES.get(m.type, m.type), m.text) for m in messages]
        answer = answer_for(turns)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])

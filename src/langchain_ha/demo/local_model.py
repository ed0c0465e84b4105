"""The demo's last-resort "local" model: extractive answers from the prompt's documents.

A real chat model with no network: it quotes the document in its context that best matches
the question (the same deterministic rule the provider simulator follows), so even with every
remote provider down the support bot's answers stay grounded and checkable.  With tools bound
it calls them as the simulator does (an order id in the question calls the order tool), so an
order question it answers carries the order system's status, not an FAQ quote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_ha.providers import answer_for, tool_calls_for

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
        specs = kwargs.get("local_tools") or []
        calls = tool_calls_for(turns, specs, kwargs.get("local_forced") or False)
        if calls:
            message = AIMessage(content="", tool_calls=[
                {"name": name, "args": args, "id": f"local-{i}", "type": "tool_call"}
                for i, (name, args) in enumerate(calls)])
        else:
            message = AIMessage(content=answer_for(turns))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
                   *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Call ``tools`` as the simulator would (``tool_choice``: a tool's name, ``any`` or
        ``required`` forces a call; ``auto``/None lets the question decide)."""
        specs = []
        for tool in tools:
            fn = convert_to_openai_tool(tool)["function"]
            specs.append((str(fn["name"]), dict(fn.get("parameters") or {})))
        forced: str | bool = False
        if tool_choice in ("any", "required"):
            forced = True
        elif tool_choice not in (None, "auto", "none"):
            forced = str(tool_choice)
        return self.bind(local_tools=specs, local_forced=forced, **kwargs)

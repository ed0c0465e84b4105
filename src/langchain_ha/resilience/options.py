"""Call options every provider kind either honours or refuses: OpenAI's chat parameters, bound
on each LangChain integration in its own terms.

:class:`CallOptions` holds what a request asks of the model (sampling, length, stop sequences,
seed, end-user id, tools, structured output).  :func:`bind_options` binds them on one chat
model, translated for its integration, or raises :class:`Unsupported` naming the option it
cannot honour: an option is never dropped silently.  The router binds them on each of its
providers (:meth:`~langchain_ha.resilience.chat.ResilientChatModel.with_options`) and skips,
for that request, a provider that cannot honour them.

What each integration gets (checked against langchain-openai 1.7, langchain-anthropic 1.7 and
langchain-google-genai 4.4):

===========================  ==============  =================  ======================
option                       ChatOpenAI      ChatAnthropic      ChatGoogleGenerativeAI
===========================  ==============  =================  ======================
temperature, top_p           as is           as is              as is
max_tokens                   max_tokens      max_tokens         max_output_tokens
stop                         stop            stop_sequences     stop_sequences
seed                         seed            refused            seed
user                         user            metadata.user_id   refused
frequency/presence_penalty   as is           refused            as is
tools, tool_choice           bind_tools      bind_tools         bind_tools
parallel_tool_calls=False    bind_tools      bind_tools         kept to the first call
response_format              sent as is      a forced tool      native
===========================  ==============  =================  ======================

Why not the obvious:

- ``ChatOpenAI`` sends any ``response_format`` through the SDK's ``parse`` helpers, which
  raise on ``finish_reason: length`` or ``content_filter`` instead of returning the partial
  answer OpenAI sent; so the format goes in the request body (``extra_body``) and the answer
  comes back exactly as OpenAI gives it.
- Anthropic's native structured output (``output_config.format``) exists only on recent
  models; a forced tool call works on every Claude model, so structured output goes through a
  tool named after the schema, whose arguments become the answer's text
  (:class:`ReshapedChatModel`).  Such a provider cannot also take the caller's own tools in
  the same request.
- Gemini has no switch for parallel function calls: with ``parallel_tool_calls=False`` the
  answer keeps its first tool call only, which is what the option promises.

A model of any other kind honours no option (its parameters are unknown, so any would be
dropped), except ``tools`` when it implements ``bind_tools``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict

from langchain_ha.resilience._calls import unwrap

__all__ = ["CallOptions", "ReshapedChatModel", "Unsupported", "bind_options", "bind_tools_on",
           "kind_of"]

OPENAI_KINDS = frozenset({"openai-chat", "azure-openai-chat"})
ANTHROPIC_KINDS = frozenset({"anthropic-chat"})
GEMINI_KINDS = frozenset({"chat-google-generative-ai"})
_JSON_OBJECT_TOOL = "json_object"


class Unsupported(ValueError):
    """A provider cannot honour option ``option`` (``reason`` says why)."""

    def __init__(self, option: str, kind: str, reason: str = "") -> None:
        text = f"{option}: not supported by {kind}" + (f" ({reason})" if reason else "")
        super().__init__(text)
        self.option = option
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class CallOptions:
    """What one request asks of the model, in OpenAI's terms (None: the model's default).

    ``tools`` are OpenAI tool definitions (``{"type": "function", "function": {...}}``);
    ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` or a function's name;
    ``response_format`` is OpenAI's (``{"type": "json_object"}`` or ``{"type":
    "json_schema", "json_schema": {"name", "schema", "strict"}}``).  ``stream_usage`` asks
    for token usage at the end of a stream (a hint: kinds that always report it ignore it).
    """

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | None = None
    parallel_tool_calls: bool | None = None
    response_format: Mapping[str, Any] | None = None
    stream_usage: bool = False

    def requested(self) -> list[str]:
        """The options set (``stream_usage`` aside, which is only a hint)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "stream_usage" and value is not None and value != ():
                out.append(f.name)
        return out

    def json_schema(self) -> Mapping[str, Any] | None:
        """The ``json_schema`` part of a ``json_schema`` response format, else None."""
        fmt = self.response_format
        if fmt is None or fmt.get("type") != "json_schema":
            return None
        spec = fmt.get("json_schema")
        return spec if isinstance(spec, Mapping) else {}


def kind_of(model: Runnable[Any, Any]) -> str:
    """The integration kind of ``model`` (under any bindings): its ``_llm_type``, or its class
    name for a Runnable that is no chat model."""
    inner, _ = unwrap(model)
    if isinstance(inner, BaseChatModel):
        return inner._llm_type
    return type(inner).__name__


def bind_tools_on(model: BaseChatModel, tools: Sequence[Any], *, tool_choice: Any = None,
                  **kwargs: Any) -> Runnable[Any, Any]:
    """``model.bind_tools(tools, ...)`` with ``parallel_tool_calls`` in the integration's terms.

    Gemini has no such switch (``ChatGoogleGenerativeAI`` passes the keyword on, and
    google-genai rejects it: ``GenerateContentConfig: Extra inputs are not permitted``), so
    there ``parallel_tool_calls=False`` keeps the answer's first tool call, as for
    :class:`CallOptions`.
    """
    parallel = kwargs.pop("parallel_tool_calls", None)
    if kind_of(model) not in GEMINI_KINDS:
        if parallel is not None:
            kwargs["parallel_tool_calls"] = parallel
        return model.bind_tools(tools, tool_choice=tool_choice, **kwargs)
    bound = model.bind_tools(tools, tool_choice=tool_choice, **kwargs)
    return ReshapedChatModel(inner=bound, single_tool_call=True) if parallel is False else bound


def bind_options(model: Runnable[Any, Any], options: CallOptions) -> Runnable[Any, Any]:
    """``model`` bound with ``options`` in its integration's terms (see the module docstring);
    raises :class:`Unsupported` for the first option it cannot honour."""
    if not options.requested() and not options.stream_usage:
        return model
    kind = kind_of(model)
    if kind in OPENAI_KINDS:
        return _bind_openai(model, options)
    if kind in ANTHROPIC_KINDS:
        return _bind_anthropic(model, options, kind)
    if kind in GEMINI_KINDS:
        return _bind_gemini(model, options, kind)
    return _bind_other(model, options, kind)


# -- per integration ---------------------------------------------------------------------------


def _sampling(options: CallOptions, *names: str) -> dict[str, Any]:
    return {n: getattr(options, n) for n in names if getattr(options, n) is not None}


def _refuse(options: CallOptions, kind: str, names: Sequence[str], reason: str = "") -> None:
    for name in names:
        if getattr(options, name) is not None:
            raise Unsupported(name, kind, reason)


def _bind_openai(model: Runnable[Any, Any], options: CallOptions) -> Runnable[Any, Any]:
    kwargs = _sampling(options, "temperature", "top_p", "max_tokens", "seed", "user",
                       "frequency_penalty", "presence_penalty")
    if options.stop is not None:
        kwargs["stop"] = list(options.stop)
    if options.response_format is not None:
        inner, _ = unwrap(model)
        extra = dict(getattr(inner, "extra_body", None) or {})
        extra["response_format"] = dict(options.response_format)
        kwargs["extra_body"] = extra
    if options.stream_usage:
        kwargs["stream_usage"] = True
    bound = _with_tools(model, options, tool_choice=options.tool_choice,
                        parallel=options.parallel_tool_calls)
    return bound.bind(**kwargs) if kwargs else bound


def _bind_anthropic(model: Runnable[Any, Any], options: CallOptions, kind: str
                    ) -> Runnable[Any, Any]:
    _refuse(options, kind, ("seed", "frequency_penalty", "presence_penalty"))
    kwargs = _sampling(options, "temperature", "top_p", "max_tokens")
    if options.stop is not None:
        kwargs["stop"] = list(options.stop)
    if options.user is not None:
        kwargs["metadata"] = {"user_id": options.user}
    if options.response_format is not None:
        if options.tools:
            raise Unsupported("response_format", kind, "structured output is a forced tool "
                              "call there, which cannot be combined with other tools")
        name, tool = _format_tool(options)
        inner, bound_kwargs = unwrap(model)
        forced = inner.bind_tools([tool], tool_choice=name, parallel_tool_calls=False)
        return ReshapedChatModel(inner=forced.bind(**{**bound_kwargs, **kwargs}), json_tool=name)
    choice: Any = {"required": "any", "none": {"type": "none"}}.get(options.tool_choice or "",
                                                                    options.tool_choice)
    bound = _with_tools(model, options, tool_choice=choice, parallel=options.parallel_tool_calls)
    return bound.bind(**kwargs) if kwargs else bound


def _bind_gemini(model: Runnable[Any, Any], options: CallOptions, kind: str
                 ) -> Runnable[Any, Any]:
    _refuse(options, kind, ("user",), "Gemini has no end-user identifier")
    kwargs = _sampling(options, "temperature", "top_p", "seed", "frequency_penalty",
                       "presence_penalty")
    if options.max_tokens is not None:
        kwargs["max_output_tokens"] = options.max_tokens
    if options.stop is not None:
        kwargs["stop"] = list(options.stop)
    if options.response_format is not None:
        kwargs["response_format"] = dict(options.response_format)
    bound = _with_tools(model, options, tool_choice=options.tool_choice, parallel=None)
    bound = bound.bind(**kwargs) if kwargs else bound
    if options.tools and options.parallel_tool_calls is False:
        return ReshapedChatModel(inner=bound, single_tool_call=True)
    return bound


def _bind_other(model: Runnable[Any, Any], options: CallOptions, kind: str
                ) -> Runnable[Any, Any]:
    requested = [n for n in options.requested()
                 if n not in ("tools", "tool_choice") and not (n == "parallel_tool_calls"
                                                             and options.parallel_tool_calls)]
    if requested:
        raise Unsupported(requested[0], kind, "its parameters are unknown to the router")
    choice = {"required": "any"}.get(options.tool_choice or "", options.tool_choice)
    return _with_tools(model, options, tool_choice=choice, parallel=None)


def _with_tools(model: Runnable[Any, Any], options: CallOptions, *, tool_choice: Any,
                parallel: bool | None) -> Runnable[Any, Any]:
    if not options.tools:
        if options.tool_choice is not None or options.parallel_tool_calls is not None:
            raise Unsupported("tool_choice" if options.tool_choice is not None
                              else "parallel_tool_calls", kind_of(model), "no tools given")
        return model
    inner, bound = unwrap(model)
    extra: dict[str, Any] = {}
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    try:
        with_tools: Runnable[Any, Any] = inner.bind_tools(
            [dict(t) for t in options.tools], tool_choice=tool_choice, **extra)
    except (NotImplementedError, AttributeError):
        raise Unsupported("tools", kind_of(model), "no tool calling") from None
    return with_tools.bind(**bound) if bound else with_tools


def _format_tool(options: CallOptions) -> tuple[str, dict[str, Any]]:
    """The tool that stands in for ``response_format``: its name and OpenAI definition."""
    spec = options.json_schema()
    if spec is None:  # json_object: any object
        return _JSON_OBJECT_TOOL, {"type": "function", "function": {
            "name": _JSON_OBJECT_TOOL, "description": "Answer with a JSON object.",
            "parameters": {"type": "object", "additionalProperties": True}}}
    name = str(spec.get("name") or "response")
    schema = spec.get("schema") or {"type": "object", "properties": {}}
    description = str(spec.get("description") or f"Answer in the {name} format.")
    return name, {"type": "function", "function": {"name": name, "description": description,
                                                   "parameters": dict(schema)}}


# -- answers reshaped --------------------------------------------------------------------------


class ReshapedChatModel(BaseChatModel):
    """A chat model whose answers are reshaped on the way out.

    ``json_tool``: the answer is that (forced) tool call's arguments, as JSON text, with the
    stop reason of a plain answer (structured output through tool calling).
    ``single_tool_call``: tool calls after the first are dropped.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: Runnable[Any, Any]
    json_tool: str | None = None
    single_tool_call: bool = False

    @property
    def _llm_type(self) -> str:
        return "lcha-reshaped"

    def _args(self, stop: list[str] | None, kwargs: Mapping[str, Any]
              ) -> tuple[BaseChatModel, list[str] | None, dict[str, Any]]:
        model, bound = unwrap(self.inner)
        args = {**bound, **kwargs}
        bound_stop = args.pop("stop", None)
        return model, stop if stop is not None else bound_stop, args

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        model, stop, args = self._args(stop, kwargs)
        return self._result(await model._agenerate(messages, stop=stop, **args))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        model, stop, args = self._args(stop, kwargs)
        return self._result(model._generate(messages, stop=stop, **args))

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        model, stop, args = self._args(stop, kwargs)
        state = _ChunkState()
        async for chunk in model._astream(messages, stop=stop, **args):
            yield self._chunk(chunk, state)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        model, stop, args = self._args(stop, kwargs)
        state = _ChunkState()
        for chunk in model._stream(messages, stop=stop, **args):
            yield self._chunk(chunk, state)

    # -- reshaping --------------------------------------------------------------------------

    def _result(self, result: ChatResult) -> ChatResult:
        generations = []
        for gen in result.generations:
            message = gen.message
            if isinstance(message, AIMessage):
                message = self._message(message)
            generations.append(ChatGeneration(message=message, generation_info=gen.generation_info))
        llm_output = result.llm_output
        if self.json_tool is not None and llm_output:  # merged into the message by LangChain
            llm_output = _plain_stop(llm_output)
        return ChatResult(generations=generations, llm_output=llm_output)

    def _message(self, message: AIMessage) -> AIMessage:
        if self.json_tool is not None:
            call = next((c for c in message.tool_calls if c["name"] == self.json_tool), None)
            if call is not None:
                text = json.dumps(call["args"], separators=(",", ":"), ensure_ascii=False)
            else:  # cut short (max_tokens): the partial arguments, as the model sent them
                broken = next((c for c in message.invalid_tool_calls
                               if c.get("name") == self.json_tool), None)
                text = str(broken.get("args") or "") if broken else message.text
            return AIMessage(content=text, id=message.id, usage_metadata=message.usage_metadata,
                             response_metadata=_plain_stop(message.response_metadata))
        if self.single_tool_call and len(message.tool_calls) > 1:
            kept = message.tool_calls[0]
            content = message.content
            if isinstance(content, list):
                content = [b for b in content if not _is_other_call(b, kept["id"])]
            return message.model_copy(update={"tool_calls": [kept], "content": content})
        return message

    def _chunk(self, chunk: ChatGenerationChunk, state: _ChunkState) -> ChatGenerationChunk:
        message = chunk.message
        if not isinstance(message, AIMessageChunk):
            return chunk
        if self.json_tool is not None:
            text = "".join(str(c.get("args") or "") for c in message.tool_call_chunks)
            if not message.tool_call_chunks:
                text = message.text
            return ChatGenerationChunk(
                message=AIMessageChunk(content=text, id=message.id,
                                       usage_metadata=message.usage_metadata,
                                       response_metadata=_plain_stop(message.response_metadata)),
                generation_info=chunk.generation_info)
        if self.single_tool_call and message.tool_call_chunks:
            kept = []
            for c in message.tool_call_chunks:
                if state.first_index is None:
                    state.first_index = c.get("index")
                if c.get("index") == state.first_index:
                    kept.append(tool_call_chunk(name=c.get("name"), args=c.get("args"),
                                                id=c.get("id"), index=c.get("index")))
            return ChatGenerationChunk(
                message=AIMessageChunk(content=message.content, id=message.id,
                                       tool_call_chunks=kept,
                                       usage_metadata=message.usage_metadata,
                                       response_metadata=message.response_metadata),
                generation_info=chunk.generation_info)
        return chunk


class _ChunkState:
    def __init__(self) -> None:
        self.first_index: int | None = None


def _plain_stop(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's metadata with ``tool_use`` (the forced tool) said as a plain ``end_turn``."""
    out = dict(metadata)
    if out.get("stop_reason") == "tool_use":
        out["stop_reason"] = "end_turn"
    return out


def _is_other_call(block: Any, kept_id: str | None) -> bool:
    return (isinstance(block, dict) and block.get("type") in ("tool_use", "function_call",
                                                              "tool_call")
            and block.get("id") != kept_id)

"""OpenAI chat completions <-> LangChain: messages, call options, answers and stream chunks.

Requests: system and developer messages become ``SystemMessage``; user messages keep their
content parts (text, and ``image_url`` parts passed through as content blocks, which every
LangChain integration converts); assistant turns become ``AIMessage`` with their
``tool_calls`` (arguments parsed, so any provider can be given them); ``tool`` messages become
``ToolMessage`` with their ``tool_call_id``.  Parameters become
:class:`~langchain_ha.resilience.options.CallOptions`, which each provider honours in its own
terms or refuses.

Answers: ``tool_calls`` from ``AIMessage.tool_calls`` (arguments as compact JSON),
``finish_reason`` from the answering provider's stop or finish reason mapped to OpenAI's
(``stop``, ``length``, ``tool_calls``, ``content_filter``), ``usage`` from ``usage_metadata``,
``model`` from the provider's own model name, ``refusal`` when the router reports one.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata, add_usage

from langchain_ha.resilience.continuation import RESTART_KEY
from langchain_ha.resilience.options import CallOptions
from langchain_ha.serve import openai_wire as wire
from langchain_ha.serve.openai_wire import BadRequest, ChatCompletionRequest

_FINISH = {
    # OpenAI
    "stop": "stop", "length": "length", "tool_calls": "tool_calls",
    "content_filter": "content_filter", "function_call": "tool_calls",
    # Anthropic
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
    "refusal": "stop", "pause_turn": "stop", "model_context_window_exceeded": "length",
    # Gemini
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
    "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_FILTER_REFUSALS = frozenset({"content_filter", "safety"})
_NO_OP_TIERS = (None, "auto", "default")


# -- requests ------------------------------------------------------------------------------


def to_messages(req: ChatCompletionRequest) -> list[BaseMessage]:
    """The conversation as LangChain messages (raises :class:`BadRequest` naming the field)."""
    out: list[BaseMessage] = []
    call_ids: set[str] = set()
    for i, m in enumerate(req.messages):
        if isinstance(m, wire.SystemMessage):
            out.append(SystemMessage(content=_text_blocks(m.content), name=m.name))
        elif isinstance(m, wire.UserMessage):
            out.append(HumanMessage(content=_user_content(m.content), name=m.name))
        elif isinstance(m, wire.AssistantMessage):
            calls = []
            for j, call in enumerate(m.tool_calls or []):
                where = f"messages[{i}].tool_calls[{j}].function.arguments"
                try:
                    args = json.loads(call.function.arguments or "{}")
                except ValueError:
                    raise BadRequest(where, f"{where}: not valid JSON") from None
                if not isinstance(args, dict):
                    raise BadRequest(where, f"{where}: must be a JSON object")
                calls.append({"name": call.function.name, "args": args, "id": call.id,
                              "type": "tool_call"})
                call_ids.add(call.id)
            out.append(AIMessage(content=_assistant_text(m), tool_calls=calls, name=m.name))
        else:
            if m.tool_call_id not in call_ids:
                raise BadRequest(f"messages[{i}].tool_call_id", "Invalid parameter: messages "
                                 "with role 'tool' must be a response to a preceding message "
                                 f"with 'tool_calls' (no call has id {m.tool_call_id!r}).")
            out.append(ToolMessage(content=_text_blocks(m.content), tool_call_id=m.tool_call_id))
    return out


def _text_blocks(content: str | list[wire.TextPart]) -> str | list[str | dict[str, Any]]:
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": p.text} for p in content]


def _user_content(content: str | list[wire.TextPart | wire.ImagePart]
                  ) -> str | list[str | dict[str, Any]]:
    if isinstance(content, str):
        return content
    blocks: list[str | dict[str, Any]] = []
    for part in content:
        if isinstance(part, wire.TextPart):
            blocks.append({"type": "text", "text": part.text})
        else:
            blocks.append({"type": "image_url",
                           "image_url": part.image_url.model_dump(exclude_none=True)})
    return blocks


def _assistant_text(m: wire.AssistantMessage) -> str:
    if isinstance(m.content, list):
        text = "".join(p.text if isinstance(p, wire.TextPart) else p.refusal for p in m.content)
    else:
        text = m.content or ""
    return text or (m.refusal or "")


def to_options(req: ChatCompletionRequest, *, stream: bool) -> CallOptions:
    """The request's parameters as call options; refuses (a 400 naming the field) what no
    provider can honour or what contradicts itself."""
    _refuse_unhonourable(req)
    if req.max_tokens is not None and req.max_completion_tokens is not None and \
            req.max_tokens != req.max_completion_tokens:
        raise BadRequest("max_tokens", "max_tokens and max_completion_tokens cannot both be "
                         "set (max_tokens is the deprecated name)")
    stop: tuple[str, ...] | None = None
    if req.stop is not None:
        stops = [req.stop] if isinstance(req.stop, str) else req.stop
        if not 1 <= len(stops) <= 4 or not all(stops):
            raise BadRequest("stop", "stop: one to four non-empty strings")
        stop = tuple(stops)
    tools = tuple(t.model_dump(exclude_none=True) for t in req.tools or ())
    names = {t.function.name for t in req.tools or ()}
    choice: str | None = None
    if req.tool_choice is not None:
        if not tools:
            raise BadRequest("tool_choice", "Invalid value for 'tool_choice': 'tool_choice' is "
                             "only allowed when 'tools' are specified.")
        choice = req.tool_choice if isinstance(req.tool_choice, str) else \
            req.tool_choice.function.name
        if not isinstance(req.tool_choice, str) and choice not in names:
            raise BadRequest("tool_choice", f"Invalid value for 'tool_choice': function "
                             f"'{choice}' is not in 'tools'.")
    if req.parallel_tool_calls is not None and not tools:
        raise BadRequest("parallel_tool_calls", "parallel_tool_calls is only allowed when "
                         "'tools' are specified.")
    fmt = req.response_format
    response_format = None
    if fmt is not None and fmt.type != "text":
        response_format = fmt.model_dump(by_alias=True, exclude_none=True)
    return CallOptions(
        temperature=req.temperature, top_p=req.top_p,
        max_tokens=req.max_completion_tokens or req.max_tokens, stop=stop, seed=req.seed,
        user=req.user, frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty, tools=tools, tool_choice=choice,
        parallel_tool_calls=req.parallel_tool_calls, response_format=response_format,
        stream_usage=stream)


def _refused(param: str, message: str) -> BadRequest:
    return BadRequest(param, message, code="unsupported_parameter")


def _refuse_unhonourable(req: ChatCompletionRequest) -> None:
    """Fields accepted only where they change nothing observable (see ChatCompletionRequest)."""
    if req.logprobs:
        raise _refused("logprobs", "logprobs: not every provider reports log probabilities")
    if req.top_logprobs is not None:
        raise _refused("top_logprobs", "top_logprobs: not every provider reports log "
                         "probabilities")
    if req.store:
        raise _refused("store", "store: completions are not stored by this gateway")
    if req.metadata:
        raise _refused("metadata", "metadata: only stored completions have metadata, and "
                         "this gateway stores none")
    if req.logit_bias:
        raise _refused("logit_bias", "logit_bias: not every provider accepts it")
    if req.modalities not in (None, ["text"]):
        raise _refused("modalities", "modalities: only ['text'] is supported")
    if req.service_tier not in _NO_OP_TIERS:
        raise _refused("service_tier", "service_tier: only 'auto' and 'default'")
    options = req.stream_options
    if options is not None and not req.stream:
        raise _refused("stream_options", "The 'stream_options' parameter is only allowed "
                         "when 'stream' is enabled.")
    if options is not None and options.include_obfuscation:
        raise _refused("stream_options.include_obfuscation", "stream_options."
                         "include_obfuscation: not supported")


APP_REFUSED = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
               "frequency_penalty", "presence_penalty", "tools", "tool_choice",
               "parallel_tool_calls")


def refuse_for_app(req: ChatCompletionRequest) -> None:
    """What a served application (not a chat model) cannot honour: a 400 naming the field."""
    _refuse_unhonourable(req)
    why = "the served application is not a chat model, so it cannot honour it"
    for name in APP_REFUSED:
        if getattr(req, name) is not None:
            raise _refused(name, f"{name}: {why}")
    if (req.n or 1) > 1:
        raise _refused("n", f"n: {why} (one answer per request)")
    if req.response_format is not None and req.response_format.type != "text":
        raise _refused("response_format", f"response_format: {why}")
    if req.stream_options is not None and req.stream_options.include_usage:
        raise _refused("stream_options.include_usage", "stream_options.include_usage: the "
                         "served application reports no token usage")
    for i, m in enumerate(req.messages):
        if isinstance(m, wire.AssistantMessage) and m.tool_calls:
            raise _refused(f"messages[{i}].tool_calls", f"messages[{i}].tool_calls: {why}")
        if isinstance(m, wire.UserMessage) and isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if not isinstance(part, wire.TextPart):
                    raise _refused(f"messages[{i}].content[{j}]", f"messages[{i}]."
                                     f"content[{j}]: the served application takes text only")


def text_turns(req: ChatCompletionRequest) -> list[dict[str, str]]:
    """``[{"role", "content"}]`` with text content (for a served application)."""
    turns = []
    for m in req.messages:
        role = "system" if m.role == "developer" else m.role
        if isinstance(m, wire.AssistantMessage):
            text = _assistant_text(m)
        elif isinstance(m.content, str):
            text = m.content
        else:
            text = "".join(p.text for p in m.content if isinstance(p, wire.TextPart))
        turns.append({"role": role, "content": text})
    return turns


def prompt_chars(req: ChatCompletionRequest) -> int:
    """Characters of the prompt: message texts, tool-call arguments and tool definitions."""
    total = 0
    for m in req.messages:
        if isinstance(m.content, str):
            total += len(m.content)
        elif isinstance(m.content, list):
            total += sum(len(getattr(p, "text", "") or getattr(p, "refusal", "") or "")
                         for p in m.content)
        if isinstance(m, wire.AssistantMessage):
            total += sum(len(c.function.arguments) for c in m.tool_calls or ())
    total += sum(len(json.dumps(t.model_dump(exclude_none=True))) for t in req.tools or ())
    if req.response_format is not None and req.response_format.type == "json_schema":
        total += len(json.dumps(req.response_format.json_schema.schema_ or {}))
    return total


# -- answers -------------------------------------------------------------------------------


def finish_reason(metadata: Mapping[str, Any], has_tool_calls: bool) -> str:
    """OpenAI's finish reason for an answer with this ``response_metadata``."""
    raw = metadata.get("finish_reason") or metadata.get("stop_reason")
    mapped = _FINISH.get(str(raw), "stop") if raw else "stop"
    lcha = metadata.get("lcha")
    if isinstance(lcha, Mapping) and lcha.get("refusal") in _FILTER_REFUSALS:
        return "content_filter"
    return "tool_calls" if has_tool_calls and mapped == "stop" else mapped


def usage_of(usage: UsageMetadata | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's ``usage`` from LangChain's ``usage_metadata`` (None if the provider gave none)."""
    if not usage:
        return None
    prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    cached = (usage.get("input_token_details") or {}).get("cache_read") or 0
    reasoning = (usage.get("output_token_details") or {}).get("reasoning") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": int(usage.get("total_tokens") or prompt + completion),
            "prompt_tokens_details": {"cached_tokens": int(cached)},
            "completion_tokens_details": {"reasoning_tokens": int(reasoning)}}


def sum_usage(usages: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The sum of several answers' ``usage`` (None if none reported any)."""
    known = [u for u in usages if u]
    if not known:
        return None
    total: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                             "prompt_tokens_details": {"cached_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 0}}
    for u in known:
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            total[key] += u[key]
        total["prompt_tokens_details"]["cached_tokens"] += u["prompt_tokens_details"][
            "cached_tokens"]
        total["completion_tokens_details"]["reasoning_tokens"] += u[
            "completion_tokens_details"]["reasoning_tokens"]
    return total


def provenance(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """How the router produced an answer (``response_metadata["lcha"]``), for ``lcha``."""
    lcha = metadata.get("lcha")
    if not isinstance(lcha, Mapping):
        return {}
    out = {k: lcha[k] for k in ("provider", "fallback", "attempts", "hedged", "refusal",
                                "restarted") if k in lcha}
    if lcha.get("continued_after"):
        out["continued_after"] = list(lcha["continued_after"])
    return out


def tool_call_json(call_id: str | None, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id or f"call_{secrets.token_hex(12)}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _args_json(args: Any) -> str:
    return json.dumps(args, separators=(",", ":"), ensure_ascii=False)


def model_of(metadata: Mapping[str, Any], default: str) -> str:
    """The answering provider's own model name, else ``default``."""
    name = metadata.get("model_name") or metadata.get("model")
    return name if isinstance(name, str) and name else default


def choice_of(index: int, message: AIMessage) -> dict[str, Any]:
    """One ``choices[]`` entry of a completion."""
    calls = [tool_call_json(c.get("id"), c["name"], _args_json(c["args"]))
             for c in message.tool_calls]
    calls += [tool_call_json(c.get("id"), str(c.get("name") or ""), str(c.get("args") or ""))
              for c in message.invalid_tool_calls]
    text = message.text
    body: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None,
                            "refusal": None, "annotations": []}
    if calls:
        body["tool_calls"] = calls
    lcha = message.response_metadata.get("lcha") or {}
    if lcha.get("refusal") == "refusal":  # as OpenAI says it: the text as ``refusal``
        said = message.additional_kwargs.get("refusal")
        body["refusal"], body["content"] = (said if isinstance(said, str) and said else text), None
    return {"index": index, "message": body, "logprobs": None,
            "finish_reason": finish_reason(message.response_metadata, bool(calls))}


class Restarted(Exception):
    """The router restarted an answer mid-stream; OpenAI's stream cannot say "discard"."""


class ChoiceStream:
    """One choice of a streamed completion: router chunks in, OpenAI chunk payloads out.

    Each payload is a dict with ``choices`` (and ``lcha`` for the router's markers); the
    caller adds ``id``, ``object``, ``created`` and ``model``.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.started = False
        self.usage: UsageMetadata | None = None
        self.model: str | None = None
        self.finish: str | None = None
        self.lcha: dict[str, Any] = {}
        self.failovers: list[dict[str, Any]] = []
        self._calls: dict[Any, int] = {}

    def feed(self, chunk: Any) -> list[dict[str, Any]]:
        """The payloads for one chunk of the router's stream."""
        if not isinstance(chunk, AIMessageChunk):
            return []
        meta = chunk.response_metadata
        out: list[dict[str, Any]] = []
        if meta:
            if RESTART_KEY in meta:
                raise Restarted(str(meta[RESTART_KEY]))
            self.model = model_of(meta, self.model or "") or None
            raw = meta.get("finish_reason") or meta.get("stop_reason")
            if raw:
                self.finish = str(raw)
            if isinstance(meta.get("lcha"), Mapping):
                self.lcha = provenance(meta)
            for switch in meta.get("lcha_failovers") or ():
                self.failovers.append(dict(switch))
                out.append({"choices": [], "lcha": {"failover": dict(switch),
                                                    "choice": self.index}})
        if chunk.usage_metadata:
            self.usage = add_usage(self.usage, chunk.usage_metadata)
        deltas: list[dict[str, Any]] = []
        text = chunk.text
        if text:
            deltas.append({"content": text})
        calls = [self._call_delta(c) for c in chunk.tool_call_chunks]
        if calls:
            deltas.append({"tool_calls": calls})
        if (deltas or chunk.tool_call_chunks) and not self.started:
            self.started = True
            out.append(self._payload({"role": "assistant", "content": "", "refusal": None}))
        out.extend(self._payload(d) for d in deltas)
        return out

    def _call_delta(self, c: Mapping[str, Any]) -> dict[str, Any]:
        key = c.get("index") if c.get("index") is not None else c.get("id")
        if key not in self._calls:
            self._calls[key] = len(self._calls)
            return {"index": self._calls[key], **tool_call_json(
                c.get("id"), str(c.get("name") or ""), str(c.get("args") or ""))}
        return {"index": self._calls[key], "function": {"arguments": str(c.get("args") or "")}}

    def _payload(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": self.index, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def end(self) -> dict[str, Any]:
        """The choice's last payload: its finish reason and how it was produced."""
        metadata: dict[str, Any] = {"lcha": self.lcha}
        if self.finish:
            metadata["finish_reason"] = self.finish
        out = self._payload({} if self.started else {"role": "assistant", "content": ""},
                            finish_reason(metadata, bool(self._calls)))
        lcha = dict(self.lcha)
        if self.failovers:
            lcha["failovers"] = self.failovers
        out["lcha"] = lcha
        return out

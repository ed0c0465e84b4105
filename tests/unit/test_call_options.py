"""Call options bound per provider kind, the router skipping what cannot honour them, answers
reshaped, the embedding router's refusal to mix models, and the token metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableBinding
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from prometheus_client import CollectorRegistry

from langchain_ha.resilience._calls import unwrap
from langchain_ha.resilience.chat import Provider, ResilientChatModel
from langchain_ha.resilience.embeddings import EmbeddingEndpoint, ResilientEmbeddings
from langchain_ha.resilience.events import RecordingEvents
from langchain_ha.resilience.options import (
    CallOptions,
    ReshapedChatModel,
    Unsupported,
    bind_options,
    bind_tools_on,
)
from langchain_ha.resilience.prometheus import PrometheusEvents, TokenPrice
from tests.support.scripted import FULL, Scripted

URL = "http://127.0.0.1:9"  # never called: binding is offline
TOOL = {"type": "function", "function": {"name": "order_status", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "Order", "schema": {
    "type": "object", "properties": {"order_id": {"type": "string"}}}}}


def _oa() -> ChatOpenAI:
    return ChatOpenAI(base_url=URL, api_key="k", model="m", max_retries=0)  # type: ignore[arg-type]


def _an() -> ChatAnthropic:
    return ChatAnthropic(base_url=URL, api_key="k", model="m", max_retries=0)  # type: ignore[call-arg,arg-type]


def _gm() -> ChatGoogleGenerativeAI:
    return ChatGoogleGenerativeAI(model="gemini-2.5-flash", google_api_key="k",  # type: ignore[call-arg]
                                  base_url=URL, max_retries=0)


def _kwargs(bound: Any) -> dict[str, Any]:
    inner = bound.inner if isinstance(bound, ReshapedChatModel) else bound
    return unwrap(inner)[1]


def test_each_kind_gets_the_options_in_its_own_terms() -> None:
    opts = CallOptions(max_tokens=7, temperature=0.1, stop=("x",), user="u", seed=3)
    assert _kwargs(bind_options(_oa(), opts)) == {
        "max_tokens": 7, "temperature": 0.1, "stop": ["x"], "user": "u", "seed": 3}
    gemini = _kwargs(bind_options(_gm(), CallOptions(max_tokens=7, seed=3, stop=("x",))))
    assert gemini == {"max_output_tokens": 7, "seed": 3, "stop": ["x"]}
    claude = _kwargs(bind_options(_an(), CallOptions(max_tokens=7, user="u")))
    assert claude == {"max_tokens": 7, "metadata": {"user_id": "u"}}


@pytest.mark.parametrize(("model", "opts", "option"), [
    (_an, CallOptions(seed=1), "seed"),
    (_an, CallOptions(presence_penalty=0.5), "presence_penalty"),
    (_an, CallOptions(response_format=SCHEMA, tools=(TOOL,)), "response_format"),
    (_gm, CallOptions(user="u"), "user"),
    (lambda: Scripted(label="local"), CallOptions(temperature=0.2), "temperature"),
    (lambda: Scripted(label="local"), CallOptions(tools=(TOOL,)), "tools"),
    (_oa, CallOptions(tool_choice="auto"), "tool_choice"),
])
def test_what_a_kind_cannot_honour_is_refused_by_name(model: Any, opts: CallOptions,
                                                      option: str) -> None:
    with pytest.raises(Unsupported) as refused:
        bind_options(model(), opts)
    assert refused.value.option == option


def test_tool_choice_and_formats_translated() -> None:
    claude = bind_options(_an(), CallOptions(tools=(TOOL,), tool_choice="required",
                                             parallel_tool_calls=False))
    assert _kwargs(claude)["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    none = bind_options(_an(), CallOptions(tools=(TOOL,), tool_choice="none"))
    assert _kwargs(none)["tool_choice"] == {"type": "none"}
    openai_json = _kwargs(bind_options(_oa(), CallOptions(response_format=SCHEMA)))
    assert openai_json["extra_body"] == {"response_format": SCHEMA}  # past ChatOpenAI's parse()
    structured = bind_options(_an(), CallOptions(response_format=SCHEMA))
    assert isinstance(structured, ReshapedChatModel) and structured.json_tool == "Order"
    assert _kwargs(structured)["tool_choice"] == {"type": "tool", "name": "Order",
                                                  "disable_parallel_tool_use": True}
    gemini = bind_options(_gm(), CallOptions(tools=(TOOL,), parallel_tool_calls=False))
    assert isinstance(gemini, ReshapedChatModel) and gemini.single_tool_call
    assert bind_options(_oa(), CallOptions()) is not None


async def test_a_forced_tool_call_becomes_the_answers_json() -> None:
    call = {"name": "Order", "args": {"order_id": "AB-1234"}}
    calling = GenericFakeChatModel(messages=iter([AIMessage(
        content="", tool_calls=[{**call, "id": "toolu_1"}],
        response_metadata={"stop_reason": "tool_use"})]))
    answer = await ReshapedChatModel(inner=calling, json_tool="Order").ainvoke("q")
    assert json.loads(str(answer.content)) == {"order_id": "AB-1234"}
    assert answer.tool_calls == [] and answer.response_metadata["stop_reason"] == "end_turn"
    model = ReshapedChatModel(inner=Scripted(label="s", tool_call=call, tool_parts=4),
                              json_tool="Order")
    chunks = [c async for c in model.astream([HumanMessage("q")])]
    text = "".join(str(c.content) for c in chunks)
    assert json.loads(text) == {"order_id": "AB-1234"}
    assert len([c for c in chunks if c.content]) == 4  # streamed in the call's pieces
    assert all(not c.tool_call_chunks for c in chunks)


async def test_the_router_skips_providers_that_cannot_honour_and_says_so() -> None:
    local = Scripted(label="local")
    openai_kind = _oa()
    router = ResilientChatModel(providers=[Provider(name="oa", model=openai_kind),
                                           Provider(name="local", model=local)])
    seeded = router.with_options(CallOptions(seed=1))
    assert seeded.excluded == {"local": "seed: not supported by scripted (its parameters are "
                                        "unknown to the router)"}
    assert seeded.breakers["oa"] is router.breakers["oa"]  # same providers, same breakers
    with pytest.raises(Unsupported):
        router.with_options(CallOptions(seed=1), only="local")
    pinned = router.with_options(CallOptions(), only="local")
    answer = await pinned.ainvoke("hi")  # the first provider is skipped: never called
    assert answer.content == FULL and answer.response_metadata["lcha"]["provider"] == "local"
    with pytest.raises(KeyError):
        router.with_options(CallOptions(), only="nobody")


async def test_a_stop_bound_on_a_provider_reaches_it() -> None:
    seen: list[Any] = []

    class Recording(Scripted):
        async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                             **kwargs: Any) -> Any:
            seen.append((stop, kwargs))
            return await super()._agenerate(messages, stop, run_manager, **kwargs)

    inner = Recording(label="r")
    bound = inner.bind(stop=["END"], temperature=0.5)
    assert isinstance(bound, RunnableBinding)
    router = ResilientChatModel(providers=[Provider(name="r", model=bound)])
    await router.ainvoke("hi")  # on the old router: TypeError (stop given twice)
    assert seen == [(["END"], {"temperature": 0.5})]


async def test_invoke_usage_is_an_event() -> None:
    events = RecordingEvents()
    router = ResilientChatModel(providers=[Scripted(label="a")], events=events)
    await router.ainvoke("hi")
    assert ("on_usage", "0:scripted", "invoke", {"input_tokens": 3, "output_tokens": 5}) in \
        events.events


def test_token_and_cost_metrics() -> None:
    registry = CollectorRegistry()
    events = PrometheusEvents(registry, prices={"a": TokenPrice(input_per_mtok=2.0,
                                                                output_per_mtok=8.0)})
    events.on_usage("a", "stream", {"input_tokens": 1_000, "output_tokens": 500})
    events.on_usage("b", "invoke", {"input_tokens": 10, "output_tokens": 20})
    value = registry.get_sample_value
    assert value("lcha_llm_tokens_total", {"provider": "a", "direction": "input"}) == 1_000
    assert value("lcha_llm_tokens_total", {"provider": "a", "direction": "output"}) == 500
    assert value("lcha_llm_tokens_total", {"provider": "b", "direction": "output"}) == 20
    assert value("lcha_llm_cost_total", {"provider": "a"}) == pytest.approx(0.006)
    assert value("lcha_llm_cost_total", {"provider": "b"}) is None  # no price: no cost series


class _Fixed(Embeddings):
    """An embedding "model" of its own (no model field: it must be named explicitly)."""

    def __init__(self, dims: int) -> None:
        self.dims = dims

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[0.5] * self.dims for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [0.5] * self.dims


def _embeddings(model: str, dims: int | None = None) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(base_url=URL, api_key="k", model=model, dimensions=dims,  # type: ignore[arg-type]
                            check_embedding_ctx_length=False)


def test_embeddings_of_different_models_or_dimensions_are_refused() -> None:
    with pytest.raises(ValueError, match="same model"):
        ResilientEmbeddings([_embeddings("text-embedding-3-small"),
                             _embeddings("text-embedding-3-large")])
    with pytest.raises(ValueError, match="same dimensions"):
        ResilientEmbeddings([_embeddings("m", 256), _embeddings("m", 512)])
    with pytest.raises(ValueError, match="cannot tell"):
        ResilientEmbeddings([_Fixed(4)])
    ok = ResilientEmbeddings([EmbeddingEndpoint(name="a", embeddings=_embeddings("m", 256)),
                              EmbeddingEndpoint(name="b", embeddings=_embeddings("m"))])
    assert ok.model == "m" and ok.dimensions == 256


async def test_an_endpoint_answering_other_dimensions_fails_over() -> None:
    router = ResilientEmbeddings([EmbeddingEndpoint(name="a", embeddings=_Fixed(3), model="f",
                                                    dimensions=4),
                                  EmbeddingEndpoint(name="b", embeddings=_Fixed(4), model="f")])
    done = await router.aembed(["x", "y"])
    assert done.endpoint == "b" and done.fallback and done.vectors == [[0.5] * 4] * 2
    assert router.embed_query("z") == [0.5] * 4  # the sync entry point, same routing


def test_parallel_tool_calls_false_is_bound_in_each_kinds_terms() -> None:
    oa = bind_tools_on(_oa(), [TOOL], parallel_tool_calls=False)
    assert unwrap(oa)[1]["parallel_tool_calls"] is False
    gm = bind_tools_on(_gm(), [TOOL], parallel_tool_calls=False)
    # google-genai rejects the keyword; the answer is trimmed to its first call instead.
    assert isinstance(gm, ReshapedChatModel) and gm.single_tool_call
    assert "parallel_tool_calls" not in _kwargs(gm)
    assert not isinstance(bind_tools_on(_gm(), [TOOL]), ReshapedChatModel)

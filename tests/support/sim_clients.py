"""Real LangChain clients and SDKs pointed at a simulator process (no retries: tests see all)."""

from __future__ import annotations

from typing import Any

import openai
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.support.fixtures_sim import SimProcess


def oa(sim: SimProcess, key: str = "k", **kw: Any) -> ChatOpenAI:
    """ChatOpenAI against the simulator's OpenAI API."""
    return ChatOpenAI(base_url=sim.url + "/v1", api_key=key, model="sim-chat",  # type: ignore[arg-type]
                      max_retries=0, **kw)


def an(sim: SimProcess, key: str = "k", **kw: Any) -> ChatAnthropic:
    """ChatAnthropic against the simulator's Messages API."""
    return ChatAnthropic(base_url=sim.url, api_key=key, model="sim-claude",  # type: ignore[arg-type,call-arg]
                         max_retries=0, **kw)


def gm(sim: SimProcess, key: str = "k", **kw: Any) -> ChatGoogleGenerativeAI:
    """ChatGoogleGenerativeAI (langchain-google-genai 4.x) against the simulator's Gemini API."""
    return ChatGoogleGenerativeAI(model="gemini-2.5-flash", google_api_key=key,  # type: ignore[call-arg]
                                  base_url=sim.url, max_retries=0, **kw)


def sdk(sim: SimProcess, key: str = "k", **kw: Any) -> openai.AsyncOpenAI:
    """The official async OpenAI SDK against the simulator."""
    return openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key=key, max_retries=0, **kw)


@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order by its id."""
    return f"status of {order_id}"


Q = "How long do refunds take for annual plans?"
TWO_ORDERS = "Where are my orders AB-1234 and CD-5678?"


class Verdict(BaseModel):
    """A structured answer the tests ask for."""

    answer: str
    confidence: int


def joined(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    """Stream chunks summed as LangChain sums them."""
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return total

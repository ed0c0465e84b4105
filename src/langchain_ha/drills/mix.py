"""The drills' request mix against the demo support bot, and the oracle that judges answers.

Four kinds, deterministic by index: RAG questions whose right source is known, order-status
questions answered through the tool, multi-turn conversations (so chat-history writes happen)
and streamed answers.  Every answer is judged, degraded ones included, because the demo's
fallbacks are deterministic: the secondary provider and the simulator give the same answer to
the same conversation (:func:`langchain_ha.providers.expected_answer`), the local extractive
model follows the same rule, and chat memory does not change the answer.

- RAG, chat and stream answers must cite the question's document (in ``sources`` or as a
  ``[doc:ID]`` marker), whatever was degraded;
- an order answer must be the simulator's exact sentence for that order's status
  (:func:`langchain_ha.providers.order_status`), or, when the tool was degraded
  (``tool:order_status``), must say that the order system could not answer instead of
  giving a status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from langchain_ha.demo.corpus import load_questions
from langchain_ha.providers import expected_answer, order_status

EXACT_FALLBACKS = ("primary_llm", "tool:", "history:")
"""Degradations after which an answer must still be exactly right (a fallback provider or the
local model answers the same; a failed tool is said so; memory does not change the answer).
The others (``retrieval``, ``embeddings``: keyword search) may cite another document."""
KINDS = ("rag", "rag", "rag", "chat", "chat", "tool", "rag", "stream", "chat", "tool")
SESSIONS = 40
TOOL = "order_status"


@dataclass(frozen=True)
class Request:
    """One request of the mix: what to send and what a right answer holds."""

    kind: str
    path: str
    body: dict[str, Any]
    session: str | None = None
    doc_id: str | None = None
    """RAG kinds: the document the answer must cite."""
    order: str | None = None
    """Tool kind: the order asked about."""

    def correct(self, output: Any, degraded: list[str]) -> bool:
        """Whether ``output`` (the answer's ``output``) is right, given what was degraded."""
        if not isinstance(output, dict):
            return False
        answer = str(output.get("answer", ""))
        if self.order is not None:
            if f"tool:{TOOL}" in degraded:
                return answer.startswith(f"Order {self.order}: the order system said: Tool "
                                         f"{TOOL} is unavailable")
            return answer == order_answer(self.order)
        sources = output.get("sources") or []
        return self.doc_id in sources or f"[doc:{self.doc_id}]" in answer


def exact_fallback(component: str) -> bool:
    """Whether answers degraded by ``component`` must still be exactly right."""
    return component.startswith(EXACT_FALLBACKS)


def order_answer(order: str) -> str:
    """The answer the simulated model gives once the order tool said ``order``'s status."""
    question = f"Where is my order {order}?"
    return expected_answer([("user", question), ("tool", json.dumps(order_status(order)))])


def request_for(i: int, run_id: str) -> Request:
    """The ``i``-th request of the mix (deterministic); sessions are ``run_id``'s own."""
    questions = load_questions()
    kind = KINDS[i % len(KINDS)]
    question, doc_id = questions[(i * 7) % len(questions)]
    if kind == "tool":
        order = f"AB-{1000 + (i * 37) % 9000}"
        return Request(kind, "/v1/invoke", {"input": {"question": f"Where is my order {order}?"}},
                       order=order)
    if kind == "chat":
        session = f"{run_id}-s{i % SESSIONS}"
        return Request(kind, "/v1/invoke", {"input": {"question": question,
                                                      "session_id": session}},
                       session=session, doc_id=doc_id)
    if kind == "stream":
        return Request(kind, "/v1/stream", {"input": {"question": question}}, doc_id=doc_id)
    return Request(kind, "/v1/invoke", {"input": {"question": question}}, doc_id=doc_id)

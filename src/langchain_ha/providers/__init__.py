"""The LLM provider simulator (OpenAI, Anthropic and Gemini APIs with fault injection).

Run it with ``lcha sim`` or ``python -m langchain_ha.providers.simulator``; its admin API
(``/_faults``, ``/_stats``) wants ``Authorization: Bearer`` the token given to the process in
:data:`ADMIN_TOKEN_ENV`.  :func:`expected_answer` is the simulator's deterministic answer, the
oracle drills and benchmarks judge answers by; :func:`answer_for` is its "model" (also the demo's
local extractive model), with the text helpers it is built on.
"""

from __future__ import annotations

from langchain_ha.providers._answers import (
    ORDER_ID,
    answer_for,
    expected_answer,
    keywords,
    order_status,
    reword,
    tool_calls_for,
    words,
)
from langchain_ha.providers._faults import Faults

__all__ = ["ADMIN_TOKEN_ENV", "ORDER_ID", "Faults", "admin_headers", "answer_for",
           "expected_answer", "keywords", "order_status", "reword", "tool_calls_for",
           "words"]

ADMIN_TOKEN_ENV = "LCHA_SIM_ADMIN_TOKEN"  # noqa: S105 (the variable's name, not a token)


def admin_headers(token: str) -> dict[str, str]:
    """The headers a call to a simulator's admin API carries."""
    return {"Authorization": f"Bearer {token}"}

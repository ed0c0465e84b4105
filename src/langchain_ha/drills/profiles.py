"""App profiles: how ``lcha up`` warms an app and how ``lcha drill`` loads it and judges it.

A profile says three things about the app a deployment serves:

- its **warm-up request** (``lcha up`` waits for one good answer through the balancer);
- its **load mix**: the ``i``-th request of a drill, deterministic by index;
- **how to judge an answer** (:meth:`Probe.correct`) and where an acknowledged turn must be
  found afterwards (``memory``: ``history`` rows, LangGraph ``checkpoints``, or nothing).

Three ship: ``support-bot`` (the demo, :mod:`langchain_ha.drills.mix`), ``order-desk``
(``examples/agent``: a :class:`~langchain_ha.agents.DurableAgent` with an order-status tool, an
idempotent refund tool and retrieval) and ``generic`` (any Runnable: the topology's
``profile.input`` sent to ``/v1/invoke``; an answer is a 200 with a non-empty output).  The
topology's ``profile.name: auto`` picks ``support-bot`` for the demo app, else ``generic``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_ha.cluster.topology import DEFAULT_APP, Topology
from langchain_ha.drills import mix
from langchain_ha.providers import expected_answer, order_status

__all__ = ["AppProfile", "GenericProfile", "OrderDeskProfile", "Probe", "SupportBotProfile",
           "load_profile", "profile_for"]

Memory = Literal["history", "checkpoints", "none"]


@dataclass(frozen=True)
class Probe:
    """One request of a profile's mix: what to send and how to judge the answer."""

    kind: str
    path: str
    body: dict[str, Any]
    session: str | None = None
    """The conversation this turn is saved in (a chat session, an agent thread), if any."""
    expect: tuple[str, ...] = ()
    """Texts a right answer holds (all of them)."""
    exact: str | None = None
    """The whole right answer, when it is known exactly."""
    judge: Any = field(default=None, compare=False)
    """The support bot's own judge (a :class:`~langchain_ha.drills.mix.Request`)."""

    def correct(self, output: Any, degraded: list[str]) -> bool:
        """Whether ``output`` (the answer's ``output``) is right, given what was degraded."""
        if self.judge is not None:
            return bool(self.judge.correct(output, degraded))
        if output is None or output in ("", {}):
            return False
        answer = str(output.get("answer", "")) if isinstance(output, dict) else str(output)
        if any(c.startswith("tool:") for c in degraded) and "the order system said" in answer:
            return True  # the tool failed and the answer says so instead of making one up
        if self.exact is not None:
            return answer == self.exact
        return all(e in answer for e in self.expect)


class AppProfile:
    """What ``lcha up`` and ``lcha drill`` need to know about an app (see the module doc)."""

    name = "base"
    memory: Memory = "none"
    streams = False
    """Whether the mix streams model answers (``/v1/stream`` over a streaming model call),
    so a drill that cuts provider streams can show anything."""

    def warmup(self) -> Probe:
        """The request ``lcha up`` sends until it gets a 200 through the balancer."""
        return self.request_for(0, "lcha-warmup")

    def request_for(self, i: int, run_id: str) -> Probe:
        """The ``i``-th request of a drill's mix (its conversations are ``run_id``'s own)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What a drill report says about the profile."""
        return {"name": self.name, "memory": self.memory}


class SupportBotProfile(AppProfile):
    """The demo support bot: RAG, order status, multi-turn chat and streams
    (:mod:`langchain_ha.drills.mix`); acknowledged turns are chat-history rows."""

    name = "support-bot"
    memory: Memory = "history"
    streams = True

    def warmup(self) -> Probe:
        return Probe("rag", "/v1/invoke", {"input": {"question": "How do I reset my password?",
                                                     "session_id": "lcha-warmup"}})

    def request_for(self, i: int, run_id: str) -> Probe:
        req = mix.request_for(i, run_id)
        return Probe(req.kind, req.path, req.body, session=req.session, judge=req)


ORDER_DESK_KINDS = ("status", "policy", "status", "refund", "policy", "status", "policy",
                    "refund", "status", "policy")
REFUND_POLICY = "[doc:refunds]"
"""What a refund-policy answer cites (the help article ``examples/agent`` ships)."""


class OrderDeskProfile(AppProfile):
    """``examples/agent``: order-status turns (one tool call), refund turns (two refunds, one
    step each: four model calls and two side effects) and policy questions answered from
    retrieval.  Every turn is in a thread of its own (a chat UI sends one turn of a thread at
    a time; :class:`~langchain_ha.agents.DurableAgent` does not serialise concurrent turns of
    one thread), so every answered turn is an acknowledged write: its thread's checkpoint
    must hold it afterwards."""

    name = "order-desk"
    memory: Memory = "checkpoints"

    def warmup(self) -> Probe:
        return self.request_for(1, "lcha-warmup")

    def request_for(self, i: int, run_id: str) -> Probe:
        kind = ORDER_DESK_KINDS[i % len(ORDER_DESK_KINDS)]
        thread = f"{run_id}-t{i}"
        if kind == "status":
            order = f"AB-{1000 + (i * 37) % 9000}"
            question = f"Where is my order {order}?"
            exact = expected_answer([("user", question),
                                     ("tool", json.dumps(order_status(order)))])
            return Probe(kind, "/v1/invoke", _turn(question, thread), session=thread,
                         exact=exact)
        if kind == "refund":
            a, b = f"CD-{1000 + (i * 53) % 9000}", f"EF-{1000 + (i * 71) % 9000}"
            question = f"Please refund orders {a} and {b}."
            return Probe(kind, "/v1/invoke", _turn(question, thread), session=thread,
                         expect=(f"Order {a}: refund RF-", f"Order {b}: refund RF-"))
        return Probe(kind, "/v1/invoke", _turn("How long do refunds take to arrive?", thread),
                     session=thread, expect=(REFUND_POLICY,))


def _turn(message: str, thread: str) -> dict[str, Any]:
    return {"input": {"message": message, "thread_id": thread}}


class GenericProfile(AppProfile):
    """Any Runnable: ``input`` sent to ``/v1/invoke`` (the same for every request); a right
    answer is a 200 with a non-empty output.  Nothing is known to be saved."""

    name = "generic"

    def __init__(self, input: Any = "Hello") -> None:
        self.input = input

    def request_for(self, i: int, run_id: str) -> Probe:
        return Probe("invoke", "/v1/invoke", {"input": self.input})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "input": self.input}


def profile_for(topology: Topology) -> AppProfile:
    """The profile the topology names (``profile.name``; ``auto``: the demo's for the demo
    app, else ``generic``)."""
    name = topology.profile.name
    if name == "auto":
        name = "support-bot" if topology.app == DEFAULT_APP else "generic"
    return load_profile(name, input=topology.profile.input)


def load_profile(name: str, *, input: Any = None) -> AppProfile:
    """The profile called ``name`` (a ValueError names the choices for any other)."""
    if name == "support-bot":
        return SupportBotProfile()
    if name == "order-desk":
        return OrderDeskProfile()
    if name == "generic":
        return GenericProfile("Hello" if input is None else input)
    raise ValueError(f"unknown app profile {name!r}: support-bot, order-desk or generic")

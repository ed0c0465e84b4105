"""Slow actions off the supervisor's loop (Patroni's ``AsyncExecutor``, for an asyncio loop).

Restarting a simulator waits up to 30 s for it to answer, a load balancer up to 20 s, a
database member's clean stop up to 20 s, and asking Patroni for its members waits on a cut
zone's connect timeout.  Run inline, any of these freezes every other decision: during a
partition the supervisor would stop replacing dead replicas while it waited on the zone it
cannot reach.  So each slow action runs in a worker thread, one at a time per key; the loop
goes on deciding, says "…, in progress" while the action runs, and applies its result (on the
loop's thread, so the supervisor's state is only ever touched there) when it is done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Done = Callable[[Any], "str | None"]

PROGRESS_EVERY_S = 5.0
"""How often a running action is reported ("…, in progress (12 s)")."""


@dataclass
class _Running:
    task: asyncio.Task[Any]
    what: str
    done: Done | None
    started: float
    said: float


class SlowActions:
    """Named background actions: :meth:`start` one, :meth:`collect` what finished."""

    def __init__(self) -> None:
        self._running: dict[str, _Running] = {}

    def running(self, key: str) -> bool:
        """Whether the action ``key`` is still under way."""
        return key in self._running

    def start(self, key: str, what: str, action: Callable[[], Any],
              done: Done | None = None) -> str:
        """Run ``action`` in a worker thread under ``key`` (which must not be running);
        ``done(result)`` runs on the loop when it returns and may give a sentence to say.
        ``what`` names it in progress reports ("restarting simulator openai")."""
        if key in self._running:
            raise RuntimeError(f"{key} is already running")
        now = time.monotonic()
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(action))
        self._running[key] = _Running(task, what, done, now, now)
        return f"{what}: started in the background"

    def collect(self) -> list[str]:
        """Sentences for actions that finished since the last call (their ``done`` applied,
        or their error), and progress for those still running (every few seconds)."""
        out: list[str] = []
        now = time.monotonic()
        for key, run in list(self._running.items()):
            if not run.task.done():
                if now - run.said >= PROGRESS_EVERY_S:
                    run.said = now
                    out.append(f"{run.what}, in progress ({now - run.started:.0f} s)")
                continue
            del self._running[key]
            exc = run.task.exception()
            took = now - run.started
            if exc is not None:
                out.append(f"{run.what} failed after {took:.1f} s ({type(exc).__name__}: "
                           f"{exc}); it is tried again")
                continue
            sentence = run.done(run.task.result()) if run.done else None
            if sentence:
                out.append(f"{sentence} (took {took:.1f} s)")
        return out

    async def wait_all(self, timeout: float) -> None:
        """Let running actions finish (at shutdown), at most ``timeout`` seconds."""
        tasks = [r.task for r in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._running.clear()

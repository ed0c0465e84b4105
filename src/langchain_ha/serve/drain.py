"""In-flight accounting and draining: the state /readyz and the shutdown sequence read."""

from __future__ import annotations

import asyncio
import time


class DrainState:
    """Counts API requests in flight; knows whether the replica is draining."""

    def __init__(self) -> None:
        self.started = False
        self.draining = False
        self.inflight = 0
        self.drain_began: float | None = None
        self._idle: asyncio.Event | None = None

    def enter(self) -> None:
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()

    def begin_drain(self) -> None:
        """Stop being ready (the balancer takes us out); keep serving."""
        if not self.draining:
            self.draining = True
            self.drain_began = time.monotonic()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight; False if ``timeout`` passed first."""
        if self.inflight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._idle = None

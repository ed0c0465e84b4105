"""Idempotency-Key support: a retried request gets the stored answer; effects happen once.

:class:`IdempotencyStore` is the protocol (the PostgreSQL store shares answers across
replicas, so a retry that the balancer sends to another replica is answered the same).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from langchain_ha.store.idempotency import StoredResponse

__all__ = ["IdempotencyStore", "InMemoryIdempotencyStore", "StoredResponse", "wait_for_answer"]


class IdempotencyStore(Protocol):
    """Where answers to keyed requests are kept."""

    async def get(self, key: str) -> StoredResponse | None: ...

    async def put(self, key: str, status: int, body: bytes, headers: dict[str, str],
                  ttl_s: float) -> None: ...

    async def claim(self, key: str, ttl_s: float) -> bool: ...


class InMemoryIdempotencyStore:
    """Per-replica store with expiry (bounded: oldest entries go first beyond ``max_entries``)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._answers: dict[str, tuple[float, StoredResponse]] = {}
        self._claims: dict[str, float] = {}
        self._max = max_entries

    async def get(self, key: str) -> StoredResponse | None:
        item = self._answers.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    async def put(self, key: str, status: int, body: bytes, headers: dict[str, str],
                  ttl_s: float) -> None:
        if len(self._answers) >= self._max:
            self._answers.pop(next(iter(self._answers)))
        self._answers[key] = (time.monotonic() + ttl_s, StoredResponse(status, body, headers))
        self._claims.pop(key, None)

    async def claim(self, key: str, ttl_s: float) -> bool:
        now = time.monotonic()
        expiry = self._claims.get(key)
        if expiry is not None and expiry > now:
            return False
        self._claims[key] = now + ttl_s
        return True

    async def release(self, key: str) -> None:
        """Forget a claim whose request failed, so a retry runs again."""
        self._claims.pop(key, None)


async def wait_for_answer(
    store: IdempotencyStore, key: str, timeout: float
) -> StoredResponse | None:
    """Poll for the answer of a request another worker is running under ``key``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        stored = await store.get(key)
        if stored is not None:
            return stored
        await asyncio.sleep(0.02)
    return None

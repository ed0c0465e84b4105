"""Idempotency-Key support: a retried request gets the stored answer; effects happen once.

Keys are scoped to the caller: what is stored is :func:`scoped_key`, a digest of the caller
(derived from the API key), the method, the route path and the client's key, so client B
sending client A's ``Idempotency-Key`` neither receives A's answer nor suppresses its own
effects.  Beside each answer sits the :func:`fingerprint` of the request body: the same key
with another body is refused (422), as Stripe and the IETF ``Idempotency-Key`` draft do.

:class:`IdempotencyStore` is the protocol (the PostgreSQL store shares answers across
replicas, so a retry that the balancer sends to another replica is answered the same).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Protocol

from langchain_ha.store.idempotency import StoredResponse

__all__ = ["IdempotencyStore", "InMemoryIdempotencyStore", "StoredResponse", "fingerprint",
           "scoped_key", "wait_for_answer"]


def scoped_key(caller: str | None, method: str, path: str, key: str) -> str:
    """The stored form of a client's key: unique per (caller, method, route path, key).

    ``caller`` is the caller id the gate derived from the API key (``None`` when the server
    has no keys: every client is then the same caller).
    """
    parts = (caller or "-", method.upper(), path, key)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def fingerprint(body: bytes) -> str:
    """What identifies a request's payload: the SHA-256 of its body, byte for byte."""
    return hashlib.sha256(body).hexdigest()


class IdempotencyStore(Protocol):
    """Where answers to keyed requests are kept (under :func:`scoped_key` keys)."""

    async def get(self, key: str) -> StoredResponse | None: ...

    async def put(self, key: str, status: int, body: bytes, headers: dict[str, str],
                  ttl_s: float, fingerprint: str | None = None) -> None: ...

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
                  ttl_s: float, fingerprint: str | None = None) -> None:
        if len(self._answers) >= self._max:
            self._answers.pop(next(iter(self._answers)))
        self._answers[key] = (time.monotonic() + ttl_s,
                              StoredResponse(status, body, headers, fingerprint))
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

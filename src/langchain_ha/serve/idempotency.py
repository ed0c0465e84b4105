"""Idempotency-Key support: a retried request gets the stored answer; effects happen once.

Keys are scoped to the caller: what is stored is :func:`scoped_key`, a digest of the caller
(derived from the API key), the method, the route path and the client's key, so client B
sending client A's ``Idempotency-Key`` neither receives A's answer nor suppresses its own
effects.  Beside each answer sits the :func:`fingerprint` of the request body: the same key
with another body is refused (422), as Stripe and the IETF ``Idempotency-Key`` draft do.

:class:`IdempotencyStore` is the protocol.  :class:`SharedIdempotencyStore` keeps answers in
the deployment's PostgreSQL, so a retry that the balancer sends to another replica is answered
the same (``lcha serve`` uses it whenever the deployment has a database); while the primary
cannot be reached it stands in with the replica's own memory.

A running request's claim is a lease: renewed while the request runs, it lapses within
``lease_s`` of its replica dying, and a retry waiting elsewhere then takes the key over
(:func:`wait_or_take_over`) instead of answering 409 until the request timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import psycopg

from langchain_ha.store.connect import UNAVAILABLE, Database
from langchain_ha.store.idempotency import PgIdempotencyStore, StoredResponse

__all__ = ["IdempotencyStore", "InMemoryIdempotencyStore", "SharedIdempotencyStore",
           "StoredResponse", "fingerprint", "renew_while", "scoped_key", "wait_or_take_over"]

log = logging.getLogger("langchain_ha.serve")
# The primary is away (a failover: refused, timed out, shut down, or demoted under us).
_OUT_OF_REACH: tuple[type[BaseException], ...] = (
    *UNAVAILABLE, TimeoutError, psycopg.errors.ReadOnlySqlTransaction)
T = TypeVar("T")


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

    @property
    def shared_now(self) -> bool:
        """Whether a key kept now is seen by every replica (the metric's ``store`` label)."""
        ...

    async def get(self, key: str) -> StoredResponse | None: ...

    async def put(self, key: str, status: int, body: bytes, headers: dict[str, str],
                  ttl_s: float, fingerprint: str | None = None) -> None: ...

    async def claim(self, key: str, ttl_s: float) -> bool: ...

    async def renew(self, key: str, ttl_s: float) -> None: ...

    async def release(self, key: str) -> None: ...


class InMemoryIdempotencyStore:
    """Per-replica store with expiry (bounded: oldest entries go first beyond ``max_entries``)."""

    shared_now = False  # this replica's alone

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

    async def renew(self, key: str, ttl_s: float) -> None:
        """Extend an unfinished claim (its request is still running)."""
        if key in self._claims:
            self._claims[key] = time.monotonic() + ttl_s

    async def release(self, key: str) -> None:
        """Forget a claim whose request failed, so a retry runs again."""
        self._claims.pop(key, None)


class SharedIdempotencyStore:
    """Answers and claims in the deployment's PostgreSQL (``lcha_idempotency``), so every
    replica answers a key the same; the replica's memory while the primary is out of reach.

    A call that finds the primary unreachable (a failover: the pool times out after
    ``pool_timeout_s``, or a frozen primary holds the call past ``call_timeout_s``) is served
    from memory, and so is every call for the next
    ``local_for_s``, so a failover costs one pool timeout per period rather than one per
    request.  Answers stored in memory then are this replica's only: a retry on another
    replica during those seconds runs again (counted by ``lcha_idempotency_requests{store=
    "local"}``).
    """

    def __init__(self, writer: str, *, connect_timeout_s: float = 1.0,
                 pool_timeout_s: float = 1.0, call_timeout_s: float = 2.0,
                 local_for_s: float = 2.0) -> None:
        # A few short statements per request: a small pool (every replica opens one).
        self.db = Database.from_conninfo(writer, connect_timeout_s=connect_timeout_s,
                                         pool_timeout_s=pool_timeout_s, max_size=4)
        self._call_timeout_s = call_timeout_s
        self._shared = PgIdempotencyStore(self.db)
        self._local = InMemoryIdempotencyStore()
        self._local_for_s = local_for_s
        self._local_until = 0.0

    @property
    def shared_now(self) -> bool:
        """False while calls go to memory (the primary was unreachable a moment ago)."""
        return time.monotonic() >= self._local_until

    async def open(self) -> None:
        """Open the pool (without waiting: the primary may be down at start)."""
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def _either(self, shared: Callable[[], Awaitable[T]],
                      local: Callable[[], Awaitable[T]]) -> T:
        if self.shared_now:
            try:
                async with asyncio.timeout(self._call_timeout_s):  # a frozen primary
                    return await shared()
            except _OUT_OF_REACH as exc:
                if self.shared_now:
                    log.warning("idempotency: the database is unreachable (%s); keeping keys "
                                "in this replica's memory for %ss", type(exc).__name__,
                                self._local_for_s)
                self._local_until = time.monotonic() + self._local_for_s
        return await local()

    async def get(self, key: str) -> StoredResponse | None:
        found = await self._local.get(key)  # answered here during an outage
        if found is not None:
            return found
        return await self._either(lambda: self._shared.get(key), lambda: self._local.get(key))

    async def claim(self, key: str, ttl_s: float) -> bool:
        return await self._either(lambda: self._shared.claim(key, ttl_s),
                                  lambda: self._local.claim(key, ttl_s))

    async def put(self, key: str, status: int, body: bytes, headers: dict[str, str],
                  ttl_s: float, fingerprint: str | None = None) -> None:
        await self._either(
            lambda: self._shared.put(key, status, body, headers, ttl_s, fingerprint),
            lambda: self._local.put(key, status, body, headers, ttl_s, fingerprint))

    async def renew(self, key: str, ttl_s: float) -> None:
        await self._local.renew(key, ttl_s)
        await self._either(lambda: self._shared.renew(key, ttl_s), _nothing)

    async def release(self, key: str) -> None:
        await self._local.release(key)
        await self._either(lambda: self._shared.release(key), _nothing)


async def _nothing() -> None:
    return None


async def renew_while(store: IdempotencyStore, key: str, lease_s: float) -> None:
    """Renew ``key``'s claim every third of ``lease_s`` until cancelled (run beside the
    request that holds it).  A failed renewal is logged and tried again next time: the claim
    lapses only if renewals keep failing for a whole lease."""
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            await store.renew(key, lease_s)
        except Exception as exc:  # the next renewal may get through
            log.warning("idempotency: renewing a claim failed (%s: %s)", type(exc).__name__,
                        exc)


async def wait_or_take_over(store: IdempotencyStore, key: str, *, lease_s: float,
                            timeout_s: float, poll_s: float = 0.05,
                            ) -> tuple[StoredResponse | None, bool]:
    """Wait for the answer of a request running elsewhere under ``key``.

    Returns ``(answer, False)`` once it is stored, or ``(None, True)`` when its claim lapsed
    (its replica died) and this caller claimed the key instead (it must then answer), or
    ``(None, False)`` after ``timeout_s``.  The claim is tried again every half lease.
    """
    end = time.monotonic() + timeout_s
    next_claim = time.monotonic() + lease_s / 2
    while time.monotonic() < end:
        stored = await store.get(key)
        if stored is not None:
            return stored, False
        if time.monotonic() >= next_claim:
            if await store.claim(key, lease_s):
                return None, True
            next_claim = time.monotonic() + lease_s / 2
        await asyncio.sleep(poll_s)
    return None, False

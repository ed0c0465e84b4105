"""The simulated refund API: a tool with a side effect, idempotent the way payment APIs are.

``POST /tools/refunds`` with ``{"order_id": ...}`` issues a refund.  Like Stripe's API, an
``Idempotency-Key`` header makes a retry safe: the first request with a key executes, later
ones with the same key and body get the first answer again (``Idempotent-Replayed: true``);
the same key with another body is refused with 422, and a request whose twin is still being
executed gets 409.  Without a key every request executes (and a retry refunds twice), which is
what the ledger lets a test see: ``executed`` and the requests per key, in ``GET /_stats``.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["KeyConflict", "RefundLedger"]

MAX_KEY_CHARS = 255
"""Stripe's limit on an idempotency key."""


class KeyConflict(Exception):
    """A request this key cannot serve: ``status`` 409 (its twin is in flight) or 422 (the key
    was used with another body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class RefundLedger:
    """Refunds issued, and what each idempotency key was answered."""

    executed: int = 0
    requests_by_key: Counter[str] = field(default_factory=Counter)
    _answers: dict[str, tuple[str, dict[str, object] | None]] = field(default_factory=dict)

    def begin(self, key: str | None, order_id: str) -> dict[str, object] | None:
        """Claim ``key`` for this request; the stored answer when it is a replay, else None
        (the caller then executes and calls :meth:`finish`)."""
        if key is None:
            return None
        if len(key) > MAX_KEY_CHARS:
            raise KeyConflict(400, f"Idempotency-Key must be at most {MAX_KEY_CHARS} characters")
        self.requests_by_key[key] += 1
        fingerprint = hashlib.sha256(order_id.encode()).hexdigest()
        seen = self._answers.get(key)
        if seen is None:
            self._answers[key] = (fingerprint, None)
            return None
        if seen[0] != fingerprint:
            raise KeyConflict(422, "Keys for idempotent requests can only be used with the "
                                   "same parameters they were first used with")
        if seen[1] is None:
            raise KeyConflict(409, "A request with this Idempotency-Key is still in progress")
        return seen[1]

    def finish(self, key: str | None, order_id: str) -> dict[str, object]:
        """Execute the refund for ``order_id`` (once per key) and remember the answer."""
        self.executed += 1
        h = zlib.crc32(order_id.encode())
        answer: dict[str, object] = {
            "order_id": order_id, "refund_id": f"RF-{self.executed:06d}",
            "amount": round(5 + (h % 9500) / 100, 2), "currency": "EUR", "status": "succeeded"}
        if key is not None:
            self._answers[key] = (self._answers[key][0], answer)
        return answer

    def abandon(self, key: str | None) -> None:
        """Release ``key`` after a request that did not execute (it may be retried)."""
        if key is not None and self._answers.get(key, ("", None))[1] is None:
            self._answers.pop(key, None)

    def clear(self) -> None:
        self.executed = 0
        self.requests_by_key.clear()
        self._answers.clear()

    def as_dict(self) -> dict[str, object]:
        return {"executed": self.executed, "requests_by_key": dict(self.requests_by_key)}


def order_id_of(body: object) -> str | None:
    """The body's ``order_id`` when it is a JSON object with a string one."""
    if isinstance(body, dict) and isinstance(body.get("order_id"), str):
        return str(body["order_id"])
    return None

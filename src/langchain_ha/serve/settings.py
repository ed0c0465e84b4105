"""Replica server settings: one pydantic model fed by arguments and ``LCHA_*`` variables."""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def hash_key(key: str) -> str:
    """The stored form of an API key (keys themselves are never kept or logged)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ServeSettings(BaseSettings):
    """Everything a replica needs to know; every limit has a safe default."""

    model_config = SettingsConfigDict(env_prefix="LCHA_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    zone: str = "local"
    replica_id: str = "r0"
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    api_key_hashes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_token: str | None = Field(default=None, repr=False)
    max_inflight: int = Field(default=64, ge=1)
    adaptive_admission: bool = True
    """Lower the in-flight limit while the event loop lags (see ``serve.admission``)."""
    min_inflight: int = Field(default=8, ge=1)
    target_loop_lag_ms: float = Field(default=10.0, gt=0)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_messages: int = Field(default=100, ge=1)
    max_prompt_chars: int = Field(default=32_000, ge=1)
    max_batch: int = Field(default=32, ge=1)
    request_timeout_s: float = Field(default=60.0, gt=0)
    drain_grace_s: float = Field(default=5.0, ge=0)
    drain_timeout_s: float = Field(default=30.0, gt=0)
    idempotency_ttl_s: float = Field(default=600.0, gt=0)
    gc_freeze: bool = True
    """After warm-up, move every object alive (modules, clients, the app) out of the cyclic
    GC's reach: a full collection then no longer walks ~180k start-up objects (~100 ms with
    LangChain loaded, a pause every request in flight would feel)."""

    @field_validator("api_keys", "api_key_hashes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    def key_hashes(self) -> frozenset[str]:
        """Hashes of every accepted API key."""
        return frozenset(self.api_key_hashes) | {hash_key(k) for k in self.api_keys}

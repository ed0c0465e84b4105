"""Replica server settings: one pydantic model fed by arguments and ``LCHA_*`` variables."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def hash_key(key: str) -> str:
    """The stored form of an API key (keys themselves are never kept or logged)."""
    return hashlib.sha256(key.encode()).hexdigest()


def caller_id(key_hash: str) -> str:
    """Who is calling, as the application sees it: derived from the API key's hash.

    Not the hash itself (that is what the server checks keys against, and it may sit in a
    configuration file); a second, domain-separated digest that is safe to write into rows
    and logs.  The same key always gives the same id.
    """
    return hashlib.sha256(b"lcha-caller\0" + key_hash.encode()).hexdigest()[:32]


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
    root_path: str = Field(default="", pattern=r"^(/[^/\s]+)*$")
    """The prefix a proxy strips before the request reaches the replica (uvicorn's
    ``root_path``, for the links the app builds); the gate checks the path below it."""
    max_inflight: int = Field(default=256, ge=1)
    """Requests running and queued, for memory alone: the CPU is guarded by the adaptive
    limit.  Requests waiting on I/O hold their slots — a database failover stalls writes for
    ~20 s — and with 64 a zone outage at half the demo's capacity filled the two surviving
    replicas (21 of 3,300 got a 503 at the moment of the fault)."""
    adaptive_admission: bool = True
    """Lower the in-flight limit while the event loop lags, and queue what is over it when
    it is predicted to start within ``admission_slo_s`` (see ``serve.admission``); false:
    only ``max_inflight``."""
    min_inflight: int = Field(default=8, ge=1)
    """The adaptive limit never goes below this."""
    admission_slo_s: float = Field(default=5.0, gt=0)
    """The longest predicted wait for a slot a request is queued with (else 503 at once)."""
    target_loop_lag_ms: float = Field(default=10.0, gt=0)
    """A smoothed event-loop lag above this means the CPU is saturated."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    body_timeout_s: float = Field(default=30.0, gt=0)
    """The whole body must arrive within this (else 408); a request takes an in-flight slot
    only once its body is in."""
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    """Request line plus headers (else 431 and the connection is closed)."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """From a connection's (or a request's) first byte to the end of its headers."""
    max_connections: int = Field(default=512, ge=1)
    """Open connections (uvicorn's ``limit_concurrency``; past it, 503).  Bodies are read
    before admission, so at worst ``max_connections x max_body_bytes`` is buffered."""
    max_depth: int = Field(default=64, ge=1, le=200)
    """Nesting of arrays and objects in a JSON body (at most 200: the answer's encoding and
    the app recurse once per level, within Python's recursion limit)."""
    max_nodes: int = Field(default=20_000, ge=1)
    """Values (arrays, objects, strings, numbers...) in a JSON body."""
    max_messages: int = Field(default=100, ge=1)
    max_prompt_chars: int = Field(default=32_000, ge=1)
    """Characters of an input's strings, dictionary keys included."""
    max_batch: int = Field(default=32, ge=1)
    model_alias: str = Field(default="langchain-ha", pattern=r"^[A-Za-z0-9._:/-]{1,64}$")
    """The ``model`` id of the served Runnable on the OpenAI-compatible routes (a router's
    providers are listed beside it by name)."""
    max_n: int = Field(default=8, ge=1, le=128)
    """Most answers one chat completion may ask for (``n``)."""
    max_embedding_inputs: int = Field(default=256, ge=1, le=2048)
    """Most inputs one ``/v1/embeddings`` request may hold."""
    embeddings: str | None = Field(default=None, pattern=r"^[\w.]+:[\w.]+$")
    """``module:attr`` of the LangChain ``Embeddings`` that ``/v1/embeddings`` serves (e.g. a
    :class:`~langchain_ha.resilience.embeddings.ResilientEmbeddings`); by default the served
    object's ``embeddings`` attribute, if it has one."""
    request_timeout_s: float = Field(default=60.0, gt=0)
    drain_grace_s: float = Field(default=5.0, ge=0)
    drain_timeout_s: float = Field(default=30.0, gt=0)
    idempotency_ttl_s: float = Field(default=600.0, gt=0)
    idempotency_store: Literal["auto", "memory", "postgres"] = "auto"
    """Where keyed answers are kept: ``postgres`` in the deployment's database
    (``LCHA_DB_WRITER``), so a balancer's retry on another replica replays the answer instead
    of running again; ``memory`` on this replica only; ``auto`` (default): ``postgres`` when
    the deployment has a database."""
    idempotency_lease_s: float = Field(default=5.0, gt=0, le=60)
    """How long a running keyed request's claim lasts unless renewed (it is renewed every
    third of this while the request runs): a replica killed mid-request holds its keys at
    most this long before a retry elsewhere takes them over."""
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

"""Running a replica: uvicorn with draining on SIGTERM, in fixed steps with a deadline.

1. SIGTERM → ``/readyz`` answers 503 at once (the balancer stops sending new work);
2. for ``drain_grace_s`` new requests are still served (the balancer needs a few check
   intervals to notice);
3. then in-flight requests and streams finish, up to ``drain_timeout_s``;
4. then uvicorn closes the listener and the process exits 0.
A second SIGTERM/SIGINT skips the wait.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import ipaddress
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from types import FrameType
from typing import Any

import uvicorn
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import Runnable

from langchain_ha._redact import redact
from langchain_ha._usage import UsageError
from langchain_ha.deployment import AppEnvironment
from langchain_ha.serve.app import ReplicaApp, create_app
from langchain_ha.serve.idempotency import (
    IdempotencyStore,
    InMemoryIdempotencyStore,
    SharedIdempotencyStore,
)
from langchain_ha.serve.protocol import BoundedHttpTools
from langchain_ha.serve.settings import ServeSettings

WARM_TIMEOUT_S = 30.0
log = logging.getLogger("langchain_ha.serve")


class _JsonFormatter(logging.Formatter):
    def __init__(self, settings: ServeSettings) -> None:
        super().__init__()
        self.ident = {"replica": settings.replica_id, "zone": settings.zone}

    def format(self, record: logging.LogRecord) -> str:
        msg = redact(record.getMessage())  # an exception's repr may quote a conninfo
        if msg.startswith("{"):
            return msg
        return json.dumps({"level": record.levelname.lower(), "logger": record.name,
                           "message": msg, **self.ident})


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first exit signal drains before shutting down."""

    def __init__(self, config: uvicorn.Config, app: ReplicaApp, settings: ServeSettings):
        super().__init__(config)
        self.replica = app
        self.settings = settings
        self._drain_task: asyncio.Task[None] | None = None
        self._warm_task: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        warm = self.replica.warm
        if warm is not None:
            # Open pools and fill caches before the balancer sends traffic: a cold replica
            # answering its first requests under load would time out and trip its breakers.
            self.replica.drain.started = False
            self._warm_task = asyncio.ensure_future(self._warm(warm))
        else:
            self._freeze_heap()
        await super().serve(sockets)

    def _freeze_heap(self) -> None:
        if self.settings.gc_freeze:
            gc.collect()
            gc.freeze()
            self.replica.metrics.gc_frozen.set(gc.get_freeze_count())

    async def _warm(self, warm: Callable[[], Awaitable[Any]]) -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(warm(), WARM_TIMEOUT_S)
            log.info("warmed up in %.1fs", time.monotonic() - started)
        except Exception as exc:  # warm-up is best effort; serving is not
            log.warning("warm-up failed (%s: %s); serving anyway", type(exc).__name__, exc)
        self._freeze_heap()  # after warm-up: its clients and pools are start-up objects too
        self.replica.drain.started = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None:
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self.replica.drain.begin_drain()
        log.info("draining: readyz is 503; serving for %ss, then finishing in-flight work",
                 self.settings.drain_grace_s)
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        await asyncio.sleep(self.settings.drain_grace_s)
        idle = await self.replica.drain.wait_idle(self.settings.drain_timeout_s)
        log.info("drained (%s); shutting down", "idle" if idle else "timeout reached")
        self.should_exit = True


def load_runnable(target: str) -> Runnable[Any, Any]:
    """``module:attr`` → the Runnable (an attribute, or a factory called with no arguments)."""
    value = _load(target)
    if not isinstance(value, Runnable):
        raise UsageError(f"{target} is not a LangChain Runnable (got {type(value).__name__})")
    return value


def load_embeddings(target: str) -> Embeddings:
    """``module:attr`` → LangChain ``Embeddings`` (an attribute, or a factory)."""
    value = _load(target, Embeddings)
    if not isinstance(value, Embeddings):
        raise UsageError(f"{target} is not LangChain Embeddings (got {type(value).__name__})")
    return value


def _load(target: str, kind: type = Runnable) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UsageError(f"APP must look like module:attr, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    value = getattr(module, attr, None)
    if value is None:
        raise UsageError(f"{module_name!r} has no attribute {attr!r}")
    if not isinstance(value, kind) and callable(value):
        value = value()
    return value


def idempotency_store(settings: ServeSettings,
                      env: Mapping[str, str] | None = None) -> IdempotencyStore:
    """The store ``settings.idempotency_store`` names: the deployment's database
    (``LCHA_DB_WRITER``) for ``postgres`` and for ``auto`` when there is one, else memory."""
    writer = AppEnvironment.from_env(env).db_writer
    if settings.idempotency_store == "memory" or (
            settings.idempotency_store == "auto" and not writer):
        return InMemoryIdempotencyStore()
    if not writer:
        raise UsageError("LCHA_IDEMPOTENCY_STORE=postgres: set LCHA_DB_WRITER to the "
                         "deployment's database conninfo (or use memory)")
    return SharedIdempotencyStore(writer)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(target: str, settings: ServeSettings) -> int:
    """Run ``target`` (``module:attr``) as a replica until drained; return the exit code."""
    if not settings.key_hashes() and not _is_loopback(settings.host):
        raise UsageError(f"--host {settings.host}: no API key is configured; set "
                         "LCHA_API_KEYS (or bind 127.0.0.1)")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(settings))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for chatty in ("httpx", "httpx2", "httpcore", "openai", "anthropic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)  # a line per provider call
    if not settings.key_hashes():
        log.warning("no API key configured: serving without authentication on loopback only")
    embeddings = load_embeddings(settings.embeddings) if settings.embeddings else None
    app = create_app(load_runnable(target), settings, embeddings=embeddings,
                     idempotency=idempotency_store(settings))
    protocol = BoundedHttpTools.with_limits(settings.max_header_bytes, settings.header_timeout_s)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            access_log=False, http=protocol, loop="uvloop",
                            root_path=settings.root_path,
                            limit_concurrency=settings.max_connections,
                            timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)))
    server = DrainingServer(config, app, settings)
    server.run()
    return 0

"""What ``lcha ingest`` and ``lcha worker`` run: open the database, enqueue or work, close.

The worker serves the built-in ``ingest_file`` kind (needs an embeddings endpoint) plus any
handlers named with ``module:attribute`` (a dict ``{kind: async fn(payload, ctx)}``).
SIGTERM/SIGINT stop claiming, let the running tasks finish, and exit 0.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_ha.store.ingest import INGEST_KIND, enqueue_path, iter_files, make_ingest_handler
from langchain_ha.store.tasks import Handler, Worker
from langchain_ha.store.vectors import PgVectorStore

log = logging.getLogger(__name__)

API_KEY_ENV = "LCHA_EMBEDDINGS_API_KEY"


@dataclass(frozen=True)
class EmbeddingSettings:
    """An OpenAI-compatible embeddings endpoint (the key comes from the environment)."""

    url: str | None = None
    model: str = "text-embedding-3-small"
    dimensions: int = 256


@dataclass(frozen=True)
class WorkerSettings:
    """Everything ``lcha worker`` needs."""

    db: str
    reader: str | None = None
    concurrency: int = 2
    lease_s: float = 10.0
    heartbeat_s: float = 2.0
    poll_s: float = 0.2
    backoff_base_s: float = 1.0
    embeddings: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    handler_specs: tuple[str, ...] = ()


def load_handlers(spec: str) -> Mapping[str, Handler]:
    """Import ``module:attribute`` and check it is a ``{kind: handler}`` dict."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--handlers {spec!r}: expected module:attribute")
    try:
        obj: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--handlers {spec!r}: {exc}") from None
    if not isinstance(obj, Mapping) or not all(callable(v) for v in obj.values()):
        raise ValueError(f"--handlers {spec!r}: not a dict of kind -> async handler")
    return obj


def _embeddings(settings: EmbeddingSettings) -> Any:
    from langchain_openai import OpenAIEmbeddings

    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise ValueError(f"the embeddings API key is read from ${API_KEY_ENV}, which is not set")
    return OpenAIEmbeddings(
        base_url=settings.url,
        api_key=key,  # type: ignore[arg-type]
        model=settings.model,
        dimensions=settings.dimensions,
        check_embedding_ctx_length=False,
    )


def build_handlers(db: Any, settings: WorkerSettings) -> dict[str, Handler]:
    """The worker's handlers: ``ingest_file`` when embeddings are configured, plus extras."""
    handlers: dict[str, Handler] = {}
    if settings.embeddings.url:
        emb = _embeddings(settings.embeddings)
        stores: dict[str, PgVectorStore] = {}

        def store_for(collection: str) -> PgVectorStore:
            if collection not in stores:
                stores[collection] = PgVectorStore(
                    db, emb, dimensions=settings.embeddings.dimensions, collection=collection
                )
            return stores[collection]

        handlers[INGEST_KIND] = make_ingest_handler(store_for)
    for spec in settings.handler_specs:
        handlers.update(load_handlers(spec))
    if not handlers:
        raise ValueError("no task kinds to run: give --embeddings-url and/or --handlers")
    return handlers


async def run_worker(settings: WorkerSettings) -> int:
    """Run a worker until SIGTERM/SIGINT; finish current tasks; return 0."""
    from langchain_ha.store.connect import Database

    db = Database.from_conninfo(settings.db, settings.reader)
    handlers = build_handlers(db, settings)  # configuration errors before any connection
    async with db:
        worker = Worker(
            db,
            handlers,
            concurrency=settings.concurrency,
            lease_s=settings.lease_s,
            heartbeat_s=settings.heartbeat_s,
            poll_s=settings.poll_s,
            backoff_base_s=settings.backoff_base_s,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        log.info("worker %s serving %s", worker.name, sorted(worker.handlers))
        await worker.run()
        log.info(
            "worker %s stopped: %d done, %d failed", worker.name, worker.completed, worker.failed
        )
    return 0


async def run_ingest(
    db_conninfo: str, path: Path, *, collection: str, chunk_size: int, overlap: int,
    skipped: list[Path] | None = None,
) -> list[int]:
    """Enqueue the files under ``path``; return the task ids (symlinks left out are appended
    to ``skipped``)."""
    from langchain_ha.store.connect import Database

    if not list(iter_files(path)):  # bad paths are reported before connecting
        raise ValueError(f"{path}: no .txt, .md, .markdown or .jsonl files found")
    db = Database.from_conninfo(db_conninfo)
    async with db:
        return await enqueue_path(
            db, path, collection=collection, chunk_size=chunk_size, overlap=overlap,
            skipped=skipped,
        )

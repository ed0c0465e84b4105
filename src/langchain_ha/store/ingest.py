"""Document ingestion as durable tasks: files → chunks → embeddings → vector store upserts.

``lcha ingest PATH`` calls :func:`enqueue_path`: one ``ingest_file`` task per text, markdown or
jsonl file, carrying the file's content (so any worker can run it) and keyed by collection,
path and content hash (ingesting an unchanged file again enqueues nothing new).  Workers run
:func:`make_ingest_handler`'s handler: chunk ids are derived from the source and the chunk
number, so a re-delivered task upserts the same rows (at-least-once is harmless).

jsonl lines are objects with ``text`` (or ``page_content``/``content``), optional ``id`` and
``metadata``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from langchain_ha.store._db import ConnectionSource, valid_name
from langchain_ha.store.tasks import Handler, TaskContext, TaskQueue
from langchain_ha.store.vectors import PgVectorStore

INGEST_KIND = "ingest_file"
SUFFIXES = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".jsonl": "jsonl"}
MAX_FILE_BYTES = 20 * 1024 * 1024
_SEPARATORS = ("\n\n", "\n", ". ", " ")


def split_text(text: str, chunk_size: int = 1000, overlap: int = 150) -> list[str]:
    """Split ``text`` into chunks of at most ``chunk_size`` characters.

    Cuts prefer paragraph, then line, sentence and word boundaries; consecutive chunks share
    up to ``overlap`` characters so a sentence cut in two is still found whole in one of them.
    """
    if chunk_size < 1 or not 0 <= overlap < chunk_size:
        raise ValueError("need chunk_size >= 1 and 0 <= overlap < chunk_size")
    text = text.strip()
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + chunk_size)
        if end < len(text):
            window = text[start:end]
            for sep in _SEPARATORS:
                cut = window.rfind(sep)
                if cut > chunk_size // 3:
                    end = start + cut + len(sep)
                    break
        chunk = text[start:end].strip()
        if chunk:
            chunks.append(chunk)
        if end >= len(text):
            break
        nxt = max(end - overlap, start + 1)
        # Start the overlap at a word boundary.
        space = text.find(" ", nxt, end)
        start = space + 1 if overlap and 0 <= space < end else nxt
    return chunks


def iter_files(path: Path, skipped: list[Path] | None = None) -> Iterator[Path]:
    """The ingestible files at ``path`` (a file, or a directory searched recursively).

    Symlinks under a directory are never followed (one could point at any file the caller
    may read): each is left out, and appended to ``skipped`` when given.
    """
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{path}: unsupported file type (use {', '.join(SUFFIXES)})")
        yield path
        return
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            if skipped is not None:
                skipped.append(p)
            continue
        if p.is_file() and p.suffix.lower() in SUFFIXES:
            yield p


async def enqueue_path(
    db: ConnectionSource,
    path: Path,
    *,
    collection: str = "default",
    chunk_size: int = 1000,
    overlap: int = 150,
    skipped: list[Path] | None = None,
) -> list[int]:
    """Enqueue one ingestion task per file under ``path``; return the task ids (symlinks
    left out are appended to ``skipped``)."""
    valid_name(collection)
    queue = TaskQueue(db)
    ids: list[int] = []
    for file in iter_files(path, skipped):
        data = file.read_bytes()
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"{file}: larger than {MAX_FILE_BYTES} bytes")
        digest = hashlib.sha256(data).hexdigest()
        source = str(file.resolve())
        payload = {
            "source": source,
            "format": SUFFIXES[file.suffix.lower()],
            "content": data.decode("utf-8", errors="replace"),
            "collection": collection,
            "chunk_size": chunk_size,
            "overlap": overlap,
        }
        key = f"ingest:{collection}:{source}:{digest}"
        ids.append(await queue.enqueue(INGEST_KIND, payload, idempotency_key=key))
    return ids


def _records(payload: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(base id, text, metadata) of each record in the payload's file."""
    source = payload["source"]
    if payload["format"] != "jsonl":
        yield source, payload["content"], {"source": source}
        return
    for n, line in enumerate(payload["content"].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{n}: invalid JSON ({exc.msg})") from None
        text = (
            obj.get("text") or obj.get("page_content") or obj.get("content")
            if isinstance(obj, dict)
            else None
        )
        if not isinstance(obj, dict) or not isinstance(text, str):
            raise ValueError(f"{source}:{n}: expected an object with a 'text' string")
        meta = dict(obj.get("metadata") or {})
        meta.setdefault("source", source)
        yield str(obj.get("id") or f"{source}:{n}"), text, meta


def chunk_documents(payload: dict[str, Any]) -> list[Document]:
    """The chunks of one ingestion payload, with stable ids."""
    docs: list[Document] = []
    for base, text, meta in _records(payload):
        for i, chunk in enumerate(split_text(text, payload["chunk_size"], payload["overlap"])):
            cid = hashlib.sha256(f"{base}#{i}".encode()).hexdigest()[:32]
            docs.append(Document(id=cid, page_content=chunk, metadata={**meta, "chunk": i}))
    return docs


def make_ingest_handler(store_for: Callable[[str], PgVectorStore], batch: int = 64) -> Handler:
    """A task handler that chunks, embeds and upserts into ``store_for(collection)``."""

    async def ingest(payload: dict[str, Any], ctx: TaskContext) -> None:
        store = store_for(valid_name(payload["collection"]))
        await store.ainit()
        docs = chunk_documents(payload)
        for i in range(0, len(docs), batch):
            part = docs[i : i + batch]
            await store.aadd_documents(part, ids=[d.id for d in part])
        if payload["format"] != "jsonl":
            # Drop chunks that a previous, longer version of this file left behind.
            keep = [d.id for d in docs if d.id]
            await store.adelete_by_filter({"source": payload["source"]}, keep_ids=keep)

    return ingest

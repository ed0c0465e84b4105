"""Ingestion: files → durable tasks → chunks → embeddings → vector store upserts."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from langchain_ha.cli import main as lcha_main
from langchain_ha.store.ingest import INGEST_KIND, enqueue_path, make_ingest_handler
from langchain_ha.store.tasks import TaskQueue, Worker
from langchain_ha.store.vectors import PgVectorStore
from tests.integration.store_embeddings import DIMS, WordEmbeddings


def _store(db: Any, collection: str) -> PgVectorStore:
    return PgVectorStore(db, WordEmbeddings(), dimensions=DIMS, collection=collection)


async def test_ingest_files_through_the_task_queue(store_db: Any, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "reset.md").write_text(
        "# Passwords\n\nTo reset your password open the login page and click the reset link.\n\n"
        + "Unrelated filler sentence about weather. " * 40
    )
    (docs / "sub" / "billing.txt").write_text("Refunds are paid within five business days.")
    (docs / "faq.jsonl").write_text(
        '{"id": "q1", "text": "Invoices are downloadable as PDF.",'
        ' "metadata": {"topic": "billing"}}\n'
    )
    (docs / "ignored.bin").write_bytes(b"\x00\x01")
    collection = f"t{uuid.uuid4().hex[:10]}"
    store = _store(store_db, collection)
    stores = {collection: store}

    ids = await enqueue_path(store_db, docs, collection=collection, chunk_size=300, overlap=30)
    assert len(ids) == 3
    # Unchanged files enqueue nothing new.
    assert await enqueue_path(store_db, docs, collection=collection, chunk_size=300) == ids

    worker = Worker(
        store_db,
        {INGEST_KIND: make_ingest_handler(lambda c: stores.setdefault(c, _store(store_db, c)))},
        concurrency=2,
        lease_s=5,
        heartbeat_s=1,
        poll_s=0.05,
    )
    await asyncio.wait_for(worker.run_until_idle(), 30)
    queue = TaskQueue(store_db)
    infos = [await queue.get(i) for i in ids]
    assert [i.status if i else None for i in infos] == ["done"] * 3

    top = await store.asimilarity_search("reset password login", k=1)
    assert "reset your password" in top[0].page_content
    assert top[0].metadata["source"].endswith("reset.md")
    pdf = await store.asimilarity_search("invoice pdf", k=1, filter={"topic": "billing"})
    assert pdf[0].page_content.startswith("Invoices")
    all_docs = await store.asimilarity_search("anything", k=100)
    md_chunks = [d for d in all_docs if d.metadata["source"].endswith("reset.md")]
    assert len(md_chunks) > 2

    # A shorter new version replaces the old chunks (no leftovers).
    (docs / "reset.md").write_text("Password resets now happen in the mobile app.")
    await enqueue_path(store_db, docs, collection=collection, chunk_size=300, overlap=30)
    await asyncio.wait_for(worker.run_until_idle(), 30)
    all_docs = await store.asimilarity_search("anything", k=100)
    md_chunks = [d for d in all_docs if d.metadata["source"].endswith("reset.md")]
    assert [d.page_content for d in md_chunks] == ["Password resets now happen in the mobile app."]


def test_cli_ingest_reports_bad_paths(tmp_path: Path, capsys: Any) -> None:
    assert lcha_main(["ingest", str(tmp_path / "missing"), "--db", "host=127.0.0.1"]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    assert lcha_main(["ingest", str(tmp_path / "x.pdf"), "--db", "host=127.0.0.1"]) == 2
    assert "unsupported file type" in capsys.readouterr().err


def test_cli_ingest_enqueues_once(store_conninfo: str, tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "a.md").write_text("# A\n\nSome text.")
    collection = f"t{uuid.uuid4().hex[:10]}"
    argv = ["ingest", str(tmp_path), "--db", store_conninfo, "--collection", collection]
    assert lcha_main(argv) == 0
    first = capsys.readouterr().out
    assert "enqueued 1 ingestion task(s)" in first
    assert lcha_main(argv) == 0
    assert capsys.readouterr().out == first  # same file, same task
    bad = ["ingest", str(tmp_path), "--db", store_conninfo, "--collection", "Bad-Name"]
    assert lcha_main(bad) == 2
    assert "invalid collection name" in capsys.readouterr().err

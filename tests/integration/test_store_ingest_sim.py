"""`lcha ingest` + `lcha worker` end to end, embeddings from the provider simulator."""

from __future__ import annotations

import ast
import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_openai import OpenAIEmbeddings

from langchain_ha._proc import Child, python_argv
from langchain_ha.cli import main as lcha_main
from langchain_ha.resilience.degrade import degradation_scope
from langchain_ha.store.tasks import TaskQueue
from langchain_ha.store.vectors import PgVectorStore


async def test_cli_ingest_worker_and_embedding_outage(
    store_db: Any,
    store_conninfo: str,
    sim_factory: Callable[..., Any],
    tmp_path: Path,
    capsys: Any,
) -> None:
    sim = sim_factory("embed")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "account.md").write_text(
        "# Account\n\nTo reset your password, open Settings and choose Security."
    )
    (docs / "refunds.txt").write_text("Refunds reach your card within five business days.")
    collection = f"t{uuid.uuid4().hex[:10]}"
    argv = ["ingest", str(docs), "--db", store_conninfo, "--collection", collection]
    assert await asyncio.to_thread(lcha_main, argv) == 0
    ids = ast.literal_eval(capsys.readouterr().out.split(": ", 1)[1].strip())
    assert len(ids) == 2

    worker = Child(
        python_argv(
            "-m",
            "langchain_ha.cli",
            "worker",
            "--db",
            store_conninfo,
            "--embeddings-url",
            sim.url + "/v1",
            "--embeddings-model",
            "sim-embed",
            "--dimensions",
            "256",
            "--poll-s",
            "0.1",
        ),
        name="lcha-worker",
        env={"LCHA_EMBEDDINGS_API_KEY": "k"},
        log_path=tmp_path / "worker.log",
    )
    try:
        queue = TaskQueue(store_db)
        deadline = time.monotonic() + 30
        while True:
            infos = [await queue.get(i) for i in ids]
            if all(i is not None and i.status == "done" for i in infos):
                break
            assert worker.alive(), worker._tail()
            assert time.monotonic() < deadline, f"ingestion not done: {infos}"
            await asyncio.sleep(0.1)
        assert worker.stop(timeout=10) == 0
    finally:
        worker.stop()

    emb = OpenAIEmbeddings(
        base_url=sim.url + "/v1",
        api_key="k",
        model="sim-embed",  # type: ignore[arg-type]
        dimensions=256,
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    store = PgVectorStore(store_db, emb, dimensions=256, collection=collection)
    top = await store.asimilarity_search("how do I reset my password", k=1)
    assert "reset your password" in top[0].page_content

    sim.set_faults(status=503, routes=["embeddings"])
    try:
        with degradation_scope() as degraded:
            found = await store.asimilarity_search("refunds to my card", k=1)
        assert degraded == {"embeddings"}
        assert found[0].page_content.startswith("Refunds")
    finally:
        sim.clear_faults()

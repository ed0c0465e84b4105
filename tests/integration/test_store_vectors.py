"""PgVectorStore against a real PostgreSQL + pgvector."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.documents import Document
from psycopg import sql

from langchain_ha.resilience.degrade import degradation_scope
from langchain_ha.store.schema import collection_table
from langchain_ha.store.vectors import PgVectorStore
from tests.integration.store_embeddings import DIMS, WordEmbeddings

DOCS = [
    Document(
        id="d1",
        page_content="How to reset your password from the login page",
        metadata={"topic": "account", "year": 2021, "lang": "en"},
    ),
    Document(
        id="d2",
        page_content="Cats sleep most of the day and purr when happy",
        metadata={"topic": "pets", "year": 2019, "lang": "en"},
    ),
    Document(
        id="d3",
        page_content="Refunds are paid within five business days",
        metadata={"topic": "billing", "year": 2023, "lang": "en", "note": 'it\'s "quoted"'},
    ),
    Document(
        id="d4",
        page_content="Die Katze schläft auf dem Sofa",
        metadata={"topic": "pets", "year": 2022, "lang": "de"},
    ),
    Document(
        id="d5",
        page_content="Invoices can be downloaded as PDF from billing settings",
        metadata={"topic": "billing", "year": 2020, "lang": "en", "tags": ["pdf"]},
    ),
]


async def _count(db: Any, store: PgVectorStore) -> int:
    async with db.writer() as conn:
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(collection_table(store.collection))
            )
        )
        row = await cur.fetchone()
        return int(row[0])


@pytest.fixture
async def store(store_db: Any) -> PgVectorStore:
    vs = PgVectorStore(
        store_db, WordEmbeddings(), dimensions=DIMS, collection=f"t{uuid.uuid4().hex[:10]}"
    )
    await vs.aadd_documents(DOCS)
    return vs


async def test_add_search_readd_delete(store: PgVectorStore, store_db: Any) -> None:
    found = await store.asimilarity_search("reset password", k=2)
    assert found[0].id == "d1"
    pairs = await store.asimilarity_search_with_score("cats purr", k=1)
    assert pairs[0][0].id == "d2" and 0.0 <= pairs[0][1] < 0.9

    # Re-adding the same ids updates in place: no duplicates.
    changed = Document(id="d2", page_content="Dogs bark at the postman", metadata={"topic": "pets"})
    await store.aadd_documents([*DOCS[:1], changed])
    assert await _count(store_db, store) == 5
    (d2,) = await store.aget_by_ids(["d2"])
    assert d2.page_content.startswith("Dogs")
    assert (await store.asimilarity_search("dogs bark postman", k=1))[0].id == "d2"

    assert await store.adelete(["d2", "d3"])
    assert await _count(store_db, store) == 3
    assert {d.id for d in await store.asimilarity_search("anything", k=10)} == {"d1", "d4", "d5"}

    by_vec = await store.asimilarity_search_by_vector(
        await store.embeddings.aembed_query("invoices pdf"), k=1
    )
    assert by_vec[0].id == "d5"


async def test_metadata_filters(store: PgVectorStore) -> None:
    async def ids(flt: dict[str, Any]) -> set[str | None]:
        return {d.id for d in await store.asimilarity_search("cats refunds", k=10, filter=flt)}

    assert await ids({"topic": "pets"}) == {"d2", "d4"}
    assert await ids({"topic": "pets", "lang": {"$ne": "de"}}) == {"d2"}
    assert await ids({"year": {"$gte": 2021, "$lt": 2023}}) == {"d1", "d4"}
    assert await ids({"year": {"$gt": 2022}}) == {"d3"}
    assert await ids({"lang": {"$in": ["de", "fr"]}}) == {"d4"}
    assert await ids({"topic": {"$nin": ["pets", "billing"]}}) == {"d1"}
    assert await ids({"note": 'it\'s "quoted"'}) == {"d3"}
    assert await ids({"tags": {"$exists": True}}) == {"d5"}
    assert await ids({"$or": [{"topic": "account"}, {"year": {"$lte": 2019}}]}) == {"d1", "d2"}
    # A string bound against numbers never matches (no cross-type comparison, no cast error).
    assert await ids({"year": {"$gt": "2000"}}) == set()


INJECTIONS = [
    {"a'); DROP TABLE x; --": "v"},
    {"topic": "pets'; DROP TABLE lcha_tasks; --"},
    {"topic') OR 1=1 --": {"$in": ["x"]}},
    {"year": {"$gt": "0 OR 1=1"}},
    {"%s": "%s"},
]


@pytest.mark.parametrize("flt", INJECTIONS)
async def test_filter_injection_is_inert(
    store: PgVectorStore, store_db: Any, flt: dict[str, Any]
) -> None:
    assert await store.asimilarity_search("cats", k=10, filter=flt) == []
    assert await _count(store_db, store) == 5


@pytest.mark.parametrize(
    ("flt", "needle"),
    [
        ({"year": {"$regex": ".*"}}, "$regex"),
        ({"$where": "1=1"}, "$where"),
        ({"year": {"$gt": [1, 2]}}, "$gt"),
        ({"year": {"$in": "2020"}}, "$in"),
        ({"year": {}}, "year"),
        ({"$and": "x"}, "$and"),
    ],
)
async def test_invalid_filters_raise_clear_errors(
    store: PgVectorStore, store_db: Any, flt: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValueError, match=needle.replace("$", r"\$")):
        await store.asimilarity_search("cats", k=3, filter=flt)
    assert await _count(store_db, store) == 5


async def test_full_text_fallback_when_embeddings_fail(store: PgVectorStore, store_db: Any) -> None:
    broken = PgVectorStore(
        store_db, WordEmbeddings(fail_queries=True), dimensions=DIMS, collection=store.collection
    )
    with degradation_scope() as degraded:
        found = await broken.asimilarity_search("How can I reset my password?", k=3)
    assert degraded == {"embeddings"}
    assert found and found[0].id == "d1"

    with degradation_scope() as degraded:
        billing = await broken.asimilarity_search(
            "refunds invoices", k=5, filter={"topic": "billing", "year": {"$gte": 2021}}
        )
    assert [d.id for d in billing] == ["d3"]
    assert "embeddings" in degraded

    # The retriever interface takes the same path.
    with degradation_scope() as degraded:
        docs = await broken.as_retriever(search_kwargs={"k": 1}).ainvoke("invoices as PDF")
    assert [d.id for d in docs] == ["d5"] and degraded == {"embeddings"}

    # A healthy store records nothing.
    with degradation_scope() as degraded:
        await store.asimilarity_search("password", k=1)
    assert degraded == set()


async def test_retriever_and_bad_arguments(store: PgVectorStore, store_db: Any) -> None:
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"lang": "de"}})
    assert [d.id for d in await retriever.ainvoke("Katze Sofa")] == ["d4"]
    with pytest.raises(ValueError, match="collection"):
        PgVectorStore(store_db, WordEmbeddings(), dimensions=DIMS, collection="x; DROP")
    with pytest.raises(ValueError, match="k must be"):
        await store.asimilarity_search("x", k=0)
    missing = PgVectorStore(store_db, WordEmbeddings(), dimensions=DIMS, collection="never_created")
    assert await missing.asimilarity_search("x") == []


def test_sync_entry_points_wrap_the_async_core(store_conninfo: str) -> None:
    """Sync LangChain calls run the async core on the shared background loop."""
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import Generation

    from langchain_ha._sync import run_sync
    from langchain_ha.store.cache import PgCache
    from langchain_ha.store.connect import Database
    from langchain_ha.store.history import PgChatMessageHistory

    db = Database.from_conninfo(store_conninfo, min_size=1, max_size=2)
    run_sync(db.open())  # the pools live on the loop the sync wrappers use
    try:
        vs = PgVectorStore(
            db, WordEmbeddings(), dimensions=DIMS, collection=f"t{uuid.uuid4().hex[:10]}"
        )
        assert vs.add_documents(DOCS) == [d.id for d in DOCS]
        assert vs.similarity_search("cats purr", k=1)[0].id == "d2"
        assert vs.delete(["d2"])
        assert [d.id for d in vs.get_by_ids(["d1", "d2"])] == ["d1"]

        history = PgChatMessageHistory(db, f"s-{uuid.uuid4()}")
        history.add_messages([HumanMessage("q"), AIMessage("a")])
        assert [m.content for m in history.messages] == ["q", "a"]

        cache = PgCache(db)
        cache.update("p", "llm", [Generation(text="g")])
        hit = cache.lookup("p", "llm")
        assert hit is not None and hit[0].text == "g"
    finally:
        run_sync(db.close())


async def test_reads_fall_back_to_the_writer_when_no_reader_answers(store_conninfo: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from langchain_ha._proc import free_port
    from langchain_ha.store.connect import Database

    dead_reader = make_conninfo(
        **{**conninfo_to_dict(store_conninfo), "host": "127.0.0.1", "port": str(free_port())}
    )
    db = Database.from_conninfo(store_conninfo, dead_reader, pool_timeout_s=0.5, max_size=2)
    async with db:
        vs = PgVectorStore(
            db, WordEmbeddings(), dimensions=DIMS, collection=f"t{uuid.uuid4().hex[:10]}"
        )
        await vs.aadd_documents(DOCS)
        assert (await vs.asimilarity_search("cats purr", k=1))[0].id == "d2"
        assert [d.id for d in await vs.aget_by_ids(["d5"])] == ["d5"]

"""An app's stores from the deployment's environment, on a real PostgreSQL with pgvector."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import Generation

from langchain_ha import AppEnvironment, DeploymentConfigError
from langchain_ha.store.stores import stores_from_env

pytestmark = pytest.mark.asyncio


async def test_every_store_works_from_the_environment(store_conninfo):
    env = AppEnvironment(db_writer=store_conninfo, db_reader=store_conninfo).to_env()
    async with stores_from_env(env, namespace="app-test:") as stores:
        vectors = stores.vector_store(DeterministicFakeEmbedding(size=16), dimensions=16,
                                      collection="stores_env_test")
        await vectors.aadd_documents([Document(page_content="reset your password", id="d1"),
                                      Document(page_content="family plan members", id="d2")])
        found = await vectors.asimilarity_search("reset your password", k=1)
        assert [d.id for d in found] == ["d1"]

        history = stores.history("stores-env-session")
        await history.aclear()
        await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
        async with stores_from_env(env) as another_replica:
            again = another_replica.history("stores-env-session")
            assert [m.content for m in await again.aget_messages()] == ["hi", "hello"]

        await stores.cache.aupdate("prompt", "llm", [Generation(text="cached")])
        hit = await stores.cache.alookup("prompt", "llm")
        assert hit is not None and hit[0].text == "cached"
        assert await stores.cache.alookup("other prompt", "llm") is None


async def test_no_database_is_a_clear_error():
    with pytest.raises(DeploymentConfigError, match="set LCHA_DB_WRITER"):
        stores_from_env({})

"""Fixtures for the store tests: a database handle on the session's PostgreSQL.

``LCHA_TEST_PG_CONNINFO`` points the store tests at an existing server instead of the
``local_pg`` fixture (which starts one).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(scope="session")
def store_conninfo(request: pytest.FixtureRequest) -> str:
    """Conninfo of a PostgreSQL with pgvector available to the store tests."""
    external = os.environ.get("LCHA_TEST_PG_CONNINFO")
    if external:
        return external
    return str(request.getfixturevalue("local_pg").conninfo)


@pytest.fixture
async def store_db(store_conninfo: str) -> AsyncIterator[object]:
    """An open ``Database`` (writer + reader pools) on the test server."""
    from langchain_ha.store.connect import Database

    db = Database.from_conninfo(store_conninfo, min_size=1, max_size=4)
    await db.open()
    try:
        yield db
    finally:
        await db.close()

"""PostgreSQL for tests: one plain server per session (``local_pg``), stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from langchain_ha._proc import free_port
from langchain_ha.cluster.pgbin import LocalPostgres, prepare_dir


@pytest.fixture(scope="session")
def local_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A started PostgreSQL 18 with pgvector on a free 127.0.0.1 port."""
    base = prepare_dir(tmp_path_factory.mktemp("pg"))
    pg = LocalPostgres(base / "data", free_port(), password="test-pw-not-secret")
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()

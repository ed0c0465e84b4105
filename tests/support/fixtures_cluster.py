"""A real 3-member Patroni cluster for the session (started once, stopped by PID)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from langchain_ha.cluster.patroni_config import ClusterSpec
from langchain_ha.cluster.pgbin import prepare_dir
from langchain_ha.cluster.postgres import PostgresCluster

PARENT_ONLY_KEY = "sk-canary-parent-only-5f2a"
"""A provider key set in this process while the members start: it must reach none of them."""

STARTED_WITH_CANARY: dict[str, int] = {}
"""zone → PID of the guardian started while ``OPENAI_API_KEY`` held the canary."""


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """Three members (az1..az3), synchronous replication, raft DCS on loopback."""
    base = prepare_dir(tmp_path_factory.mktemp("cluster"))
    cluster = PostgresCluster(ClusterSpec(base_dir=base))
    env = pytest.MonkeyPatch()
    try:
        env.setenv("OPENAI_API_KEY", PARENT_ONLY_KEY)
        try:
            cluster.start()
        finally:
            env.undo()
        STARTED_WITH_CANARY.update({z: c.pid for z, c in cluster.guardians.items()})
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def healthy_cluster(pg_cluster: PostgresCluster) -> PostgresCluster:
    """The session cluster, waited on until a leader, a sync standby and 3 members run."""
    pg_cluster.wait_healthy(timeout=120)
    return pg_cluster

"""The etcd DCS option: three Patroni members coordinated by a real etcd (Debian's etcd-server,
when it is on PATH), instead of the raft inside Patroni."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import psycopg
import pytest

from langchain_ha._proc import Child, free_port
from langchain_ha.cluster.patroni_config import ClusterSpec
from langchain_ha.cluster.pgbin import prepare_dir
from langchain_ha.cluster.postgres import PostgresCluster

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="no etcd binary on PATH")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One etcd member on loopback; its client endpoint."""
    data = tmp_path_factory.mktemp("etcd")
    client, peer = free_port(), free_port()
    child = Child(["etcd", "--name", "e1", "--data-dir", str(data / "data"),
                   "--listen-client-urls", f"http://127.0.0.1:{client}",
                   "--advertise-client-urls", f"http://127.0.0.1:{client}",
                   "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                   "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                   "--initial-cluster", f"e1=http://127.0.0.1:{peer}",
                   "--enable-v2=false"], name="etcd", log_path=data / "etcd.log")
    try:
        child.wait_http(f"http://127.0.0.1:{client}/health", timeout=30)
        yield f"127.0.0.1:{client}"
    finally:
        child.stop()


def test_cluster_on_etcd_elects_and_switches_over(etcd: str, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    base = prepare_dir(tmp_path_factory.mktemp("etcd-cluster"))
    cluster = PostgresCluster(ClusterSpec(base_dir=base, name="lcha-etcd", etcd_hosts=(etcd,)))
    try:
        cluster.start(timeout=120)
        members = cluster.members()
        assert sorted(m["role"] for m in members) == ["leader", "replica", "sync_standby"]
        with psycopg.connect(cluster.app_writer_conninfo, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (v int)")
            conn.execute("INSERT INTO t VALUES (1)")
        old = cluster.leader()
        assert old is not None
        cluster.switchover()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = cluster.leader()
            if new is not None and new["name"] != old["name"]:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no new leader after the switchover")
        assert len(cluster.writable_members()) == 1
        with psycopg.connect(cluster.app_writer_conninfo, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    finally:
        cluster.stop()

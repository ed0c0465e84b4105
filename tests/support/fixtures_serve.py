"""Replica server processes for tests: real uvicorn via ``lcha serve``, stopped by PID."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from langchain_ha._proc import Child, free_port, python_argv

ROOT = Path(__file__).resolve().parents[2]


class Replica:
    """A running ``lcha serve`` process."""

    def __init__(self, target: str, logdir: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls_file = logdir / f"calls-{self.port}.txt"
        self.child = Child(
            python_argv("-m", "langchain_ha.cli", "serve", target, "--port", str(self.port),
                        "--zone", "az-test", "--replica-id", f"r{self.port}", *args),
            name=f"serve-{target}", cwd=ROOT, log_path=logdir / f"serve-{self.port}.log",
            # Short drain by default so teardown is quick; the drain test sets its own.
            env={"LCHA_TEST_CALLS": str(self.calls_file), "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
                 "LCHA_DRAIN_GRACE_S": "0.1", **env},
        )
        self.child.wait_http(self.url + "/readyz", timeout=60)

    def calls(self) -> list[str]:
        return self.calls_file.read_text().splitlines() if self.calls_file.exists() else []

    def log(self) -> str:
        return self.child.log_path.read_text() if self.child.log_path else ""


@pytest.fixture(scope="module")
def serve_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Replica]]:
    """Start replicas on demand; every one is stopped by PID at the end of the module."""
    logdir = tmp_path_factory.mktemp("serve")
    started: list[Replica] = []

    def start(target: str, *args: str, env: dict[str, str] | None = None) -> Replica:
        replica = Replica(target, logdir, env or {}, *args)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.child.stop()


def gauge(metrics: str, name: str) -> float:
    """The value of an unlabelled sample ``name`` in a Prometheus text page."""
    line = next(li for li in metrics.splitlines() if li.startswith(name + " "))
    return float(line.split()[1])

"""A whole ``lcha up --demo`` deployment for the module, started and stopped through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from langchain_ha.cluster.state import StateDir

PARENT_ONLY_KEY = "sk-canary-up-parent-only-91c3"
"""A provider key no topology names, in ``lcha up``'s environment: it must reach no child."""
REPLICA_SETTING = ("LCHA_TEST_CANARY_SETTING", "for-replicas-only")
"""An ``LCHA_*`` setting: it reaches the replicas, and nothing else of ours."""


@dataclass
class Deployment:
    """A running deployment: its state directory, URL and API key."""

    state_dir: Path
    env: dict[str, str] = field(default_factory=lambda: {
        "OPENAI_API_KEY": PARENT_ONLY_KEY, REPLICA_SETTING[0]: REPLICA_SETTING[1]})

    @property
    def sd(self) -> StateDir:
        return StateDir(self.state_dir)

    @property
    def url(self) -> str:
        return str(self.sd.state().balancer.url)

    @property
    def api_key(self) -> str:
        return self.sd.secrets()["api_key"]

    def lcha(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``lcha ARGS --state-dir DIR`` and return the finished process."""
        return subprocess.run([sys.executable, "-m", "langchain_ha.cli", *args,
                               "--state-dir", str(self.state_dir)],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, **self.env})

    def status(self) -> dict[str, Any]:
        done = self.lcha("status", "--json", timeout=60)
        return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``lcha up --demo`` on free ports; ``lcha down`` afterwards (and every PID checked)."""
    dep = Deployment(tmp_path_factory.mktemp("up") / "state")
    up = dep.lcha("up", "--demo", "--port", "0")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield dep
    finally:
        dep.lcha("down", timeout=180)


@pytest.fixture(scope="module")
def lab_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``lcha up --demo --lab``: each zone in its own network namespace; ``lcha down``
    afterwards, which must leave no namespace, link or rule of the lab behind."""
    from langchain_ha.cluster.lab import lab_unsupported, leftovers

    reason = lab_unsupported()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root on Linux and must run the lab: {reason}")
        pytest.skip(f"no lab here: {reason}")
    dep = Deployment(tmp_path_factory.mktemp("lab") / "state")
    up = dep.lcha("up", "--demo", "--lab", "--port", "0")
    lab_id = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        lab = dep.sd.state().lab
        assert lab, "the state names its lab"
        lab_id = lab["lab_id"]
        yield dep
    finally:
        down = dep.lcha("down", timeout=180)
        assert down.returncode == 0, down.stdout + down.stderr
        if lab_id:
            assert [x for x in leftovers() if lab_id in x] == []

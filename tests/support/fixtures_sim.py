"""Provider simulator processes for tests: started for real, stopped by PID."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from langchain_ha._proc import Child, free_port, python_argv


class SimProcess:
    """A running simulator and its admin API (authenticated with a token made for it)."""

    def __init__(self, name: str, logdir: Path, latency_ms: float = 0.0,
                 jitter_ms: float = 0.0) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_urlsafe(24)
        self.child = Child(
            python_argv("-m", "langchain_ha.providers.simulator", "--port", str(self.port),
                        "--name", name, "--latency-ms", str(latency_ms),
                        "--jitter-ms", str(jitter_ms)),
            name=f"sim-{name}", log_path=logdir / f"sim-{name}-{self.port}.log",
            env={"LCHA_SIM_ADMIN_TOKEN": self.admin_token},
        )
        self.child.wait_http(self.url + "/v1/models", timeout=30)
        self._admin = httpx.Client(base_url=self.url, timeout=5, headers=self.admin_headers)

    @property
    def admin_headers(self) -> dict[str, str]:
        """The header the admin API (``/_faults``, ``/_stats``) wants."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def faults(self) -> dict[str, Any]:
        """``GET /_faults``: the faults set, and whether they are active now."""
        data: dict[str, Any] = self._admin.get("/_faults").raise_for_status().json()
        return data

    def set_faults(self, **faults: Any) -> None:
        resp = self._admin.post("/_faults", json=faults)
        resp.raise_for_status()

    def clear_faults(self) -> None:
        self._admin.delete("/_faults").raise_for_status()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self._admin.get("/_stats").json()
        return data

    def calls(self, route: str = "chat") -> int:
        return int(self.stats()["received"].get(route, 0))

    def reset_stats(self) -> None:
        self._admin.delete("/_stats").raise_for_status()

    def stop(self) -> None:
        self._admin.close()
        self.child.stop()


@pytest.fixture(scope="session")
def sim_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SimProcess]]:
    """Start simulators on demand; all are stopped at the end of the session."""
    logdir = tmp_path_factory.mktemp("sims")
    started: list[SimProcess] = []

    def start(name: str, latency_ms: float = 0.0, jitter_ms: float = 0.0) -> SimProcess:
        sim = SimProcess(name, logdir, latency_ms, jitter_ms)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture(scope="session")
def _sim_pair_session(sim_factory: Callable[..., SimProcess]) -> tuple[SimProcess, SimProcess]:
    return sim_factory("primary"), sim_factory("secondary")


@pytest.fixture
def sim_pair(_sim_pair_session: tuple[SimProcess, SimProcess]) -> tuple[SimProcess, SimProcess]:
    """A primary and a secondary simulator with no faults and fresh stats."""
    for sim in _sim_pair_session:
        sim.clear_faults()
        sim.reset_stats()
    return _sim_pair_session


@pytest.fixture(scope="session")
def _sim_trio_session(sim_factory: Callable[..., SimProcess]
                      ) -> tuple[SimProcess, SimProcess, SimProcess]:
    return sim_factory("trio-1"), sim_factory("trio-2"), sim_factory("trio-3")


@pytest.fixture
def sim_trio(_sim_trio_session: tuple[SimProcess, SimProcess, SimProcess]
             ) -> tuple[SimProcess, SimProcess, SimProcess]:
    """Three simulators (for a router over three providers, e.g. of three API kinds) with no
    faults and fresh stats."""
    for sim in _sim_trio_session:
        sim.clear_faults()
        sim.reset_stats()
    return _sim_trio_session

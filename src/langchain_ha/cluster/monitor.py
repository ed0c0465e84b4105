"""An optional local Prometheus for ``lcha up``: started when a ``prometheus`` binary is on
PATH (never required), with the rendered alert rules and the live replicas as targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from langchain_ha._proc import Adopted, Child, free_port
from langchain_ha.cluster.state import PrometheusRecord
from langchain_ha.cluster.topology import Topology


class LocalPrometheus:
    """Prometheus on 127.0.0.1 scraping the replicas (targets rewritten when they change)."""

    def __init__(self, topology: Topology, state_dir: Path) -> None:
        self.topo = topology
        self.dir = state_dir / "prometheus"
        self.proc: Child | Adopted | None = None
        self.port = 0
        self._targets: list[dict[str, Any]] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("prometheus") is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, prior: PrometheusRecord) -> None:
        """Adopt the Prometheus an earlier supervisor started, or start one."""
        from langchain_ha.deploy.render import render_prometheus

        render_prometheus(self.topo, self.dir)
        marker = str(self.dir / "prometheus.yml")
        if prior.pid and prior.port:
            old = Adopted(prior.pid, name="prometheus", marker=marker)
            if old.alive():
                self.proc, self.port = old, prior.port
                return
        self.port = free_port()
        self.proc = Child(["prometheus", f"--config.file={marker}",
                           f"--storage.tsdb.path={self.dir / 'data'}",
                           f"--web.listen-address=127.0.0.1:{self.port}"],
                          name="prometheus", cwd=self.dir, log_path=self.dir / "prometheus.log")
        self.proc.wait_http(f"{self.url}/-/ready", timeout=60)

    def set_targets(self, replicas: list[tuple[str, str]]) -> None:
        """The replicas to scrape as ``(zone, host:port)``; the file is rewritten only on
        change."""
        groups = [{"targets": [a for z, a in replicas if z == zone],
                   "labels": {"zone": zone}} for zone in self.topo.zones]
        if groups != self._targets:
            tmp = self.dir / "targets.json.tmp"
            tmp.write_text(json.dumps(groups, indent=2))
            tmp.replace(self.dir / "targets.json")
            self._targets = groups

    def record(self) -> PrometheusRecord:
        """Its entry in the state file (empty while it does not run)."""
        if self.proc is None:
            return PrometheusRecord()
        return PrometheusRecord(pid=self.proc.pid, port=self.port, url=self.url,
                                marker=str(self.dir / "prometheus.yml"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=10)
            self.proc = None

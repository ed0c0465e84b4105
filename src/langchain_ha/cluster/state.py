"""The state directory of a deployment: what runs where, its secrets and operator requests.

``lcha up`` and the supervisor share one directory (default ``.lcha``):

- ``topology.json``: the validated topology the supervisor runs;
- ``state.json``: written by the supervisor every cycle (PIDs, ports, roles, phase, decisions),
  a :class:`DeploymentState`: typed, validated when written and when read;
- ``secrets.json`` (0600): the API key clients use, the replicas' admin token and the
  simulators' admin token (``sim_admin_token``, for ``/_faults`` and ``/_stats``);
- ``control.json``: operator requests (scale, rollout) that the supervisor applies in order;
- ``db/``: the PostgreSQL cluster; ``logs/``: every process's log.

The directory and its subdirectories are 0700, every file 0600 from its creation (another local
user reads nothing here), replaced atomically so a reader never sees half of one.  No file but
the ``secrets.json`` files and the database's passfile holds a password: conninfo strings name
the passfile instead.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langchain_ha._files import private_dir, write_private
from langchain_ha._proc import pid_matches

SUPERVISOR_MARKER = "langchain_ha.cluster.supervisor"


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically with ``data`` as JSON (0600 from its creation)."""
    write_private(path, json.dumps(data, indent=2, default=str))


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or {} when it does not exist (yet)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


class Record(BaseModel):
    """An entry of the state file: its known fields typed; others kept as they are (a file
    written by another version of us still reads, and says what it said)."""

    model_config = ConfigDict(extra="allow")


class SupervisorRecord(Record):
    pid: int | None = None


ReplicaState = Literal["starting", "ready", "draining"]


class ReplicaRecord(Record):
    """A replica as the supervisor last saw it."""

    id: str
    zone: str
    port: int
    host: str = "127.0.0.1"
    pid: int | None = None
    generation: int = 1
    state: ReplicaState = "starting"
    ready: bool = False
    inflight: int = 0
    room: int = 0
    misses: int = 0
    weight: int = 1
    started_at: float | None = None
    ready_at: float | None = None
    app: str = ""
    role: str = "replica"


class SimulatorRecord(Record):
    name: str
    port: int
    host: str = "127.0.0.1"
    pid: int | None = None
    url: str
    role: str = "simulator"


class BalancerRecord(Record):
    """The balancer (Caddy or HAProxy); empty until it has started."""

    role: str = "balancer"
    pid: int | None = None
    kind: str | None = None
    marker: str | None = None
    port: int | None = None
    admin_socket: str | None = None
    url: str | None = None
    upstreams: list[dict[str, Any]] = Field(default_factory=list)


class MemberRecord(Record):
    """A database member, from Patroni's view, with the PIDs of its processes."""

    name: str | None = None
    role: str | None = None
    state: str | None = None
    zone: str | None = None
    lag: Any = None
    timeline: int | None = None
    host: str | None = None
    port: int | None = None
    guardian_pid: int | None = None
    patroni_pid: int | None = None
    postgres_pid: int | None = None


class DatabaseRecord(Record):
    enabled: bool = False
    dir: str | None = None
    writer: str | None = None
    reader: str | None = None
    members: list[MemberRecord] = Field(default_factory=list)


class PrometheusRecord(Record):
    pid: int | None = None
    port: int | None = None
    url: str | None = None
    marker: str | None = None
    role: str = "prometheus"


class RolloutRecord(Record):
    """The last rollout (:class:`~langchain_ha.cluster.rollout.Rollout`'s fields)."""

    id: int
    status: str
    message: str = ""


class DeploymentState(BaseModel):
    """What ``state.json`` holds: the supervisor's view of its deployment, written every
    cycle (atomically, 0600) and read by ``lcha status``, ``down``, ``scale``, the drills
    and a supervisor adopting what an earlier one started."""

    model_config = ConfigDict(extra="ignore")

    supervisor: SupervisorRecord = Field(default_factory=SupervisorRecord)
    phase: str = "not started"
    progress: list[str] = Field(default_factory=list)
    decisions: list[str] = Field(default_factory=list)
    generation: int = 1
    apps: dict[int, str] = Field(default_factory=dict)
    per_zone: int = 1
    base_per_zone: int = 1
    applied_seq: int = 0
    next_index: int = 0
    slots: dict[str, list[int]] = Field(default_factory=dict)
    rollout: RolloutRecord | None = None
    balancer: BalancerRecord = Field(default_factory=BalancerRecord)
    simulators: dict[str, SimulatorRecord] = Field(default_factory=dict)
    replicas: list[ReplicaRecord] = Field(default_factory=list)
    database: DatabaseRecord = Field(default_factory=DatabaseRecord)
    prometheus: PrometheusRecord = Field(default_factory=PrometheusRecord)
    lab: dict[str, Any] | None = None
    """The lab network (``lcha up --lab``): :meth:`langchain_ha.cluster.lab.Lab.record`."""
    updated_at: float | None = None
    """None: nothing was ever written here."""


class StateFileError(ValueError):
    """``state.json`` does not hold a deployment state (the message names the field)."""


class StateDir:
    """Paths and helpers of one deployment's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def create(self) -> Path:
        """Make the directory (0700; an older, more open one is closed)."""
        return private_dir(self.root)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def topology_file(self) -> Path:
        return self.root / "topology.json"

    @property
    def control_file(self) -> Path:
        return self.root / "control.json"

    @property
    def logs(self) -> Path:
        """The log directory (0700)."""
        self.create()
        return private_dir(self.root / "logs")

    @property
    def db_dir(self) -> Path:
        return self.root / "db"

    def state(self) -> DeploymentState:
        """The deployment's state (empty, ``updated_at`` None, when nothing was written)."""
        try:
            return DeploymentState.model_validate(read_json(self.state_file))
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                              for e in exc.errors())
            raise StateFileError(f"{self.state_file}: {where}") from None

    def write_state(self, state: DeploymentState) -> None:
        """Replace ``state.json`` atomically (0600) with ``state``."""
        write_json(self.state_file, state.model_dump(mode="json"))

    def secrets(self) -> dict[str, str]:
        """The API key and admin tokens, created (0600) on first use."""
        path = self.root / "secrets.json"
        stored = read_json(path)
        if not stored:
            self.create()
            stored = {"api_key": "lcha-" + secrets.token_urlsafe(24),
                      "admin_token": secrets.token_urlsafe(24)}
        if "sim_admin_token" not in stored:  # also added to a deployment made before it existed
            stored["sim_admin_token"] = secrets.token_urlsafe(24)
            write_json(path, stored)
        return {k: str(v) for k, v in stored.items()}

    def supervisor_pid(self) -> int | None:
        """PID of the running supervisor of this directory, if one runs."""
        pid = self.state().supervisor.pid
        if pid is not None and pid_matches(pid, SUPERVISOR_MARKER):
            return pid
        return None

    def request(self, kind: str, **fields: Any) -> int:
        """Queue an operator request (``scale``, ``rollout``); returns its sequence number."""
        control = read_json(self.control_file)
        seq = int(control.get("seq", 0)) + 1
        queued = [r for r in control.get("requests", []) if isinstance(r, dict)][-19:]
        queued.append({"seq": seq, "kind": kind, "at": time.time(), **fields})
        write_json(self.control_file, {"seq": seq, "requests": queued})
        return seq

    def requests_after(self, seq: int) -> list[dict[str, Any]]:
        """Queued requests newer than ``seq``, oldest first."""
        queued = read_json(self.control_file).get("requests", [])
        return sorted((r for r in queued if isinstance(r, dict) and int(r.get("seq", 0)) > seq),
                      key=lambda r: int(r["seq"]))

"""The state directory of a deployment: what runs where, its secrets and operator requests.

``lcha up`` and the supervisor share one directory (default ``.lcha``):

- ``topology.json``: the validated topology the supervisor runs;
- ``state.json``: written by the supervisor every cycle (PIDs, ports, roles, phase, decisions);
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
from typing import Any

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

    def state(self) -> dict[str, Any]:
        return read_json(self.state_file)

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
        pid = self.state().get("supervisor", {}).get("pid")
        if isinstance(pid, int) and pid_matches(pid, SUPERVISOR_MARKER):
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

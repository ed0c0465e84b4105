"""``lcha fault``: network faults on a running lab deployment (``lcha up --lab``), by hand.

Each fault lives in the kernel (nft rules and netem qdiscs in the zone's namespace), not in
this process: ``lcha fault partition az1`` returns at once and the zone stays cut until
``lcha fault heal az1`` (or ``lcha down``).  A flap needs someone to toggle it, so it runs in
the foreground for ``--for`` seconds and heals on its way out, Ctrl-C included.  ``ZONE``
may be ``primary``: the zone that holds the database primary now.
"""

from __future__ import annotations

import time
from pathlib import Path

from langchain_ha._usage import UsageError
from langchain_ha.cluster.lab import Lab, LabError
from langchain_ha.cluster.state import StateDir


def _lab(state_dir: Path) -> tuple[Lab, StateDir]:
    sd = StateDir(state_dir)
    if sd.supervisor_pid() is None:
        raise UsageError(f"--state-dir {sd.root}: no deployment running (lcha up --lab first)")
    record = sd.state().lab
    if not record:
        raise UsageError(f"--state-dir {sd.root}: the deployment is not a lab; network faults "
                         "need its zones in namespaces (lcha down, then lcha up --lab)")
    return Lab.from_record(record), sd


def _zone(lab: Lab, sd: StateDir, zone: str) -> str:
    if zone == "primary":
        leader = next((m for m in sd.state().database.members if m.role == "leader"), None)
        if leader is None or not leader.zone:
            raise UsageError("ZONE: primary names the database primary's zone, and there is "
                             "no primary now")
        return leader.zone
    if zone not in lab.zones:
        raise UsageError(f"ZONE: {zone!r} is not a zone of this lab ({', '.join(lab.zones)}, "
                         "or primary)")
    return zone


def fault(state_dir: Path, action: str, zone: str | None, *, direction: str = "both",
          peers: list[str] | None = None, ms: float = 0.0, jitter_ms: float = 0.0,
          percent: float = 0.0, period_s: float = 8.0, down_s: float = 2.0,
          for_s: float = 60.0) -> int:
    """Apply ``action`` (partition, latency, loss, flap, heal, list) to ``zone``."""
    lab, sd = _lab(state_dir)
    if action == "list":
        for z, faults in lab.faults().items():
            print(f"{z} ({lab.address(z)}): {', '.join(faults) or 'healthy'}")
        return 0
    where = _zone(lab, sd, zone) if zone else None
    try:
        if action == "heal":
            lab.heal(where)
            print(f"healed: {where or 'every zone'}")
            return 0
        if where is None:
            raise UsageError(f"ZONE: lcha fault {action} needs a zone ({', '.join(lab.zones)}, "
                             "or primary)")
        if action == "partition":
            cut = [_zone(lab, sd, p) for p in peers] if peers else None
            lab.partition(where, direction=direction, peers=cut)  # type: ignore[arg-type]
            print(f"{where}: cut off ({direction}) from {', '.join(cut) if cut else 'everything'};"
                  f" lcha fault heal {where} ends it")
        elif action == "latency":
            lab.delay(where, ms, jitter_ms)
            print(f"{where}: +{ms:g} ms ±{jitter_ms:g} ms on what it sends")
        elif action == "loss":
            lab.loss(where, percent)
            print(f"{where}: {percent:g} % of packets dropped, both ways")
        elif action == "flap":
            if for_s <= 0:
                raise UsageError("--for: seconds to flap, more than 0")
            flapper = lab.flap(where, period_s=period_s, down_s=down_s)
            print(f"{where}: cut {down_s:g} s of every {period_s:g} s for {for_s:g} s …",
                  flush=True)
            try:
                time.sleep(for_s)
            finally:
                flapper.stop()
                lab.heal(where)
            print(f"{where}: flapping over, healed")
        else:
            raise UsageError(f"ACTION: {action!r} is not one of partition, latency, loss, "
                             "flap, heal, list")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except LabError as exc:
        raise UsageError(f"the lab refused: {exc}") from None
    return 0

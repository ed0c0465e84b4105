"""Where a deployment's processes listen: all on loopback, or in a lab's zones.

Without a lab every process binds 127.0.0.1.  In a lab (``lcha up --lab``) each zone's
replicas and database member run in that zone's network namespace on its own address, and
the processes every zone shares (the load balancer's backends, the provider simulators, the
supervisor and the drills) reach them from the hub, the lab bridge's address in the root
namespace.  A :class:`Placement` answers "which address, which namespace" for a zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_ha.cluster.lab import Lab

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Placement:
    """Each zone's address and namespace entry command; the hub's address."""

    hosts: Mapping[str, str] = field(default_factory=dict)
    hub: str = LOOPBACK
    enter: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    lab: Lab | None = None

    @classmethod
    def of(cls, lab: Lab | None) -> Placement:
        """The placement of ``lab``'s zones (None: everything on loopback)."""
        if lab is None:
            return cls()
        return cls(hosts={z: lab.address(z) for z in lab.zones}, hub=lab.hub_address,
                   enter={z: tuple(lab.exec_prefix(z)) for z in lab.zones}, lab=lab)

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Placement:
        """The placement a state file's ``lab`` record describes."""
        return cls.of(Lab.from_record(record) if record else None)

    def host(self, zone: str | None) -> str:
        """The address ``zone``'s processes listen on."""
        return self.hosts.get(zone or "", LOOPBACK)

    def enter_zone(self, zone: str) -> tuple[str, ...]:
        """The command that starts a program in ``zone``'s namespace (empty: this one)."""
        return self.enter.get(zone, ())

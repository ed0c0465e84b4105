"""Rolling replacement of the replicas, one zone at a time, with an optional canary.

A rollout starts a new generation (the same app re-imported from disk, or another ``--app``).
Zone by zone, in topology order: start the new replicas beside the old ones, wait until they
are ready and registered, then drain the old ones (out of the balancer first, then SIGTERM:
they finish what they hold).  Capacity never drops below the target, so no request fails.

With a canary, one new replica first takes ``PERCENT`` of the traffic (weighted upstreams)
for ``hold_s``; if its error ratio is no worse than the old replicas' (+2 points) the rollout
continues, otherwise the canary is drained and the old generation stays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from langchain_ha.cluster.replicas import NoFreeSlot
from langchain_ha.cluster.state import RolloutRecord

if TYPE_CHECKING:
    from langchain_ha.cluster.replicas import Replica
    from langchain_ha.cluster.supervisor import Supervisor

TOLERANCE = 0.02


@dataclass
class Rollout:
    """One rollout's progress (kept in the state file, so ``lcha rollout`` can follow it)."""

    id: int
    from_gen: int
    to_gen: int
    canary_pct: float | None = None
    hold_s: float = 30.0
    status: str = "rolling"
    canary_id: str | None = None
    canary_ready_at: float | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    message: str = ""

    @classmethod
    def begin(cls, sup: Supervisor, request: dict[str, Any]) -> Rollout:
        """Start a rollout to a new generation, as ``request`` (seq, app, canary, hold_s) says."""
        from_gen = sup.generation
        sup.generation += 1
        sup.apps[sup.generation] = str(request.get("app") or sup.apps.get(from_gen, sup.topo.app))
        canary = request.get("canary")
        rollout = cls(id=int(request["seq"]), from_gen=from_gen, to_gen=sup.generation,
                      canary_pct=float(canary) if canary else None,
                      hold_s=float(request.get("hold_s", 30.0)),
                      status="canary" if canary else "rolling")
        how = f"canary at {canary}% for {rollout.hold_s:.0f}s, then " if canary else ""
        sup._say(f"rollout {rollout.id}: generation {from_gen} → {sup.generation} "
                 f"({how}zone by zone: {', '.join(sup.topo.zones)})")
        return rollout

    @property
    def finished(self) -> bool:
        return self.status in ("done", "aborted")

    def serving_generation(self, sup: Supervisor) -> int:
        """The generation that replacements (for crashes, scaling) are started in."""
        return self.from_gen if self.status == "canary" else sup.generation

    def is_canary(self, replica: Replica) -> bool:
        return self.status == "canary" and replica.id == self.canary_id

    def step(self, sup: Supervisor) -> str | None:
        """At most one action of the rollout; a sentence when it acted."""
        if self.status == "canary":
            return self._canary_step(sup)
        return self._rolling_step(sup)

    # -- canary ------------------------------------------------------------------------------

    def _canary_step(self, sup: Supervisor) -> str | None:
        canary = next((r for r in sup.replicas if r.id == self.canary_id), None)
        if self.canary_id is None:
            try:
                started = sup.start_replica(sup.topo.zones[0], self.to_gen)
            except NoFreeSlot:
                return None
            self.canary_id = started.id
            return f"rollout {self.id}: canary {started.id} started in {started.zone}"
        if canary is None or canary.state == "draining":
            return self._abort(sup, None, "the canary died")
        if not sup.serving(canary):
            return None
        if self.canary_ready_at is None:
            self.canary_ready_at = time.time()
            others = [r for r in sup.replicas if r.state == "ready" and r is not canary]
            pct = float(self.canary_pct or 0)
            for r in others:
                r.weight = max(1, round(100 - pct))
            canary.weight = max(1, round(pct * max(1, len(others))))
            return (f"rollout {self.id}: canary {canary.id} takes {pct:.0f}% of the traffic "
                    f"for {self.hold_s:.0f}s")
        if time.time() - self.canary_ready_at < self.hold_s:
            return None
        ok, why = _judge(sup, canary)
        for r in sup.replicas:
            r.weight = 1
        if not ok:
            return self._abort(sup, canary, why)
        self.status = "rolling"
        return f"rollout {self.id}: canary healthy ({why}); rolling out zone by zone"

    def _abort(self, sup: Supervisor, canary: Replica | None, why: str) -> str:
        if canary is not None:
            sup.drain(canary)
        sup.generation = self.from_gen
        self.status = "aborted"
        self.finished_at = time.time()
        self.message = why
        return f"rollout {self.id} aborted: {why}; generation {self.from_gen} stays"

    # -- rolling -----------------------------------------------------------------------------

    def _rolling_step(self, sup: Supervisor) -> str | None:
        for zone in sup.topo.zones:
            here = [r for r in sup.replicas if r.zone == zone and r.state != "draining"]
            old = [r for r in here if r.generation != self.to_gen]
            if not old:
                continue
            new = [r for r in here if r.generation == self.to_gen]
            if any(not sup.serving(r) for r in new):
                return None  # one zone at a time: wait until the balancer sends to the new ones
            if len(new) + len(old) > sup._target(zone) or len(new) >= sup._target(zone):
                # One for one: each new replica in service lets one old one go, so a single
                # surge slot is enough whatever the zone's size.
                victim = old[0]
                sup.drain(victim)
                return (f"rollout {self.id}: zone {zone}: {len(new)} new serving, "
                        f"draining {victim.id}")
            try:
                started = sup.start_replica(zone, self.to_gen)
            except NoFreeSlot:
                return None  # a draining replica still holds the slot: next cycle
            return (f"rollout {self.id}: zone {zone}: started {started.id} "
                    f"(generation {self.to_gen}) beside {len(old)} old")
        if any(r.generation != self.to_gen for r in sup.replicas):
            return None  # old replicas still draining
        self.status = "done"
        self.finished_at = time.time()
        took = self.finished_at - self.started_at
        self.message = f"all replicas on generation {self.to_gen} in {took:.1f}s"
        return f"rollout {self.id} done: {self.message}"

    def record(self) -> RolloutRecord:
        """Its entry in the state file (every field)."""
        return RolloutRecord.model_validate(vars(self))


def _judge(sup: Supervisor, canary: Replica) -> tuple[bool, str]:
    """Compare the canary's 5xx ratio with the old replicas' (from their /metrics)."""
    if not canary.proc.alive() or not canary.ready:
        return False, "the canary is not ready"
    c_total, c_err = _errors(canary.url)
    base_total = base_err = 0
    for r in sup.replicas:
        if r is not canary and r.state == "ready":
            t, e = _errors(r.url)
            base_total, base_err = base_total + t, base_err + e
    c_ratio = c_err / c_total if c_total else 0.0
    b_ratio = base_err / base_total if base_total else 0.0
    verdict = f"canary {c_err}/{c_total} errors vs {base_err}/{base_total} elsewhere"
    return c_ratio <= b_ratio + TOLERANCE, verdict


def _errors(url: str) -> tuple[int, int]:
    """(API requests, 5xx responses) counted by a replica since it started."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0, 0
    total = errors = 0
    for family in text_string_to_metric_families(text):
        if family.name != "lcha_http_requests":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total") or not sample.labels.get("route", "").startswith(
                    "/v1"):
                continue
            total += int(sample.value)
            if sample.labels.get("status", "").startswith("5"):
                errors += int(sample.value)
    return total, errors

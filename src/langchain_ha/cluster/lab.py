"""The lab network of ``lcha up --lab``: one Linux network namespace per zone, faults per zone.

Why: on one machine every process normally shares the loopback interface, so "zone az2 is
partitioned" or "az3 is 200 ms away" cannot be shown.  A lab gives each zone its own network
namespace with its own address; every namespace is joined by a veth pair to one bridge in the
root namespace, the *hub*, where the load balancer, the provider simulators and the load
generator run.  A zone can then be cut off, slowed down or made lossy on its own, with the
kernel doing the work on real packets.

Design:

* Isolated by construction: the bridge has no uplink, the namespaces have no default route,
  and addresses come from the benchmarking range 198.18.0.0/15 (RFC 2544), never routed on
  the Internet.  Each lab takes one /24 of that range (chosen from a hash of its id, moved on
  when an interface on this machine already has an address in it): the hub (the bridge) is
  ``.1``, zone *i* in topology order is ``.(10 + i)``.
* Names are derived from a short lab id (:func:`lab_id_for`), because Linux limits interface
  names to 15 characters: bridge ``lcha{id}b``, namespace ``lcha-{id}-{zone}``, veth host
  side ``lc{id}h{i}``, namespace side ``lab0``.  Everything a lab makes can therefore be
  found by name (:func:`leftovers`) and removed (:func:`destroy_all`) even when the state file
  that recorded it is lost.
* All plumbing goes through the ``ip``, ``tc`` and ``nft`` programs, run without a shell; a
  failing command raises :class:`LabError` naming the command and its stderr.
* Fault state lives in the kernel only, never in this process: a partition is an nft table
  ``netdev lcha_fault`` in the zone's namespace, hooked to ingress and egress of its veth
  (IP packets are silently dropped, not rejected, so both ends see a timeout like a real cut,
  never a refusal or a local send error; ARP still works), loss is a second table
  ``netdev lcha_loss`` whose rules drop a random share of IP packets both ways (``numgen
  random``: no qdisc needed), and delay is a netem qdisc on the zone's end of its veth.
  So one process can set a fault that another heals, and :meth:`Lab.faults`
  reports what is really in effect.  The one exception is a flapping zone
  (:meth:`Lab.flap`), which needs a thread of the process that started it.

Needs Linux >= 5.16 (the netdev egress hook); delay also needs the ``sch_netem`` qdisc
(some kernels, e.g. Firecracker guests, are built without it: :meth:`Lab.delay` then says so).
Limitation: bridged traffic between zones passes the root namespace's ``FORWARD`` hooks when
``net.bridge.bridge-nf-call-iptables`` is 1; a host firewall that drops forwarded traffic
(Docker's does) then cuts zone-to-zone traffic.  Hub-to-zone traffic is not affected.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Flapper",
    "Lab",
    "LabError",
    "destroy_all",
    "lab_id_for",
    "lab_unsupported",
    "leftovers",
]

Direction = Literal["both", "in", "out"]

_PACKAGES = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables"}
_SBIN_DIRS = ("/usr/sbin", "/sbin")
_COMMAND_TIMEOUT_S = 30.0

_LAB_ID = re.compile(r"[a-z0-9]{1,8}")
_ZONE = re.compile(r"[a-z0-9-]{1,20}")
# Zone i gets .(10 + i) and a veth lc{id}h{i}: 2 + 8 + 1 + 3 digits, within Linux's 15 chars.
_MAX_ZONES = 200
_LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
_SUBNETS = 512

_NS_DEV = "lab0"
# netdev hooks on the zone's veth, not inet input/output: a packet dropped in the output hook
# fails the sender's send() with EPERM (a refusal), one dropped at egress is silently lost.
_NFT_FAMILY, _NFT_NAME = "netdev", "lcha_fault"
_NFT_TABLE = f"table {_NFT_FAMILY} {_NFT_NAME}"
_LOSS_NAME = "lcha_loss"
_LOSS_TABLE = f"table {_NFT_FAMILY} {_LOSS_NAME}"
_MAX_DELAY_MS = 60_000.0

_NETNS_NAME = re.compile(r"lcha-[a-z0-9]{1,8}-[a-z0-9-]{1,20}")
_BRIDGE_NAME = re.compile(r"lcha[a-z0-9]{1,8}b")
_VETH_NAME = re.compile(r"lc[a-z0-9]{1,8}[hn][0-9]{1,3}")


class LabError(RuntimeError):
    """A lab command failed (or a lab cannot run here); carries the command and its stderr."""

    def __init__(self, message: str, *, cmd: Sequence[str] = (), stderr: str = "") -> None:
        super().__init__(message)
        self.cmd = list(cmd)
        self.stderr = stderr


# --- programs --------------------------------------------------------------------------------


def _find(program: str) -> str | None:
    found = shutil.which(program)
    if found:
        return found
    # root's PATH in CI images often lacks the sbin directories these programs live in.
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _program(program: str) -> str:
    path = _find(program)
    if path is None:
        raise LabError(f"`{program}` not found: install the Debian package {_PACKAGES[program]}")
    return path


def lab_unsupported() -> str | None:
    """Why a lab cannot run here (not Linux, not root, `ip`/`tc`/`nft` missing — naming the
    Debian package to install), or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"a network lab needs Linux network namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a network lab needs root (it creates network namespaces, a bridge and veths)"
    missing = [f"`{prog}` (Debian package {pkg})" for prog, pkg in _PACKAGES.items()
               if _find(prog) is None]
    if missing:
        return "a network lab needs " + ", ".join(missing)
    return None


def _run(argv: Sequence[str], *, stdin: str | None = None) -> str:
    """Run one command (argv[0] a program name from ``_PACKAGES``); its stdout, or LabError."""
    cmd = [_program(argv[0]), *argv[1:]]
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True,
                              timeout=_COMMAND_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        stderr = (exc.stderr or "").strip()
        raise LabError(f"`{shlex.join(cmd)}` failed (exit {exc.returncode}): {stderr}",
                       cmd=cmd, stderr=stderr)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{shlex.join(cmd)}` did not finish in {exc.timeout:g} s", cmd=cmd)
    except OSError as exc:
        raise LabError(f"`{shlex.join(cmd)}` could not start: {exc}", cmd=cmd)
    return done.stdout


def _ip(*args: str, ns: str | None = None) -> str:
    return _run(["ip", *(("-n", ns) if ns else ()), *args])


def _tc(*args: str, ns: str | None = None) -> str:
    return _run(["tc", *(("-n", ns) if ns else ()), *args])


def _nft(ns: str, *args: str, stdin: str | None = None) -> str:
    return _run(["ip", "netns", "exec", ns, _program("nft"), *args], stdin=stdin)


def _json_list(text: str) -> list[Any]:
    # Some iproute2 versions print nothing at all (not "[]") for an empty JSON list.
    data = json.loads(text) if text.strip() else []
    return data if isinstance(data, list) else []


# --- names and what exists -------------------------------------------------------------------


def lab_id_for(path: Path) -> str:
    """The lab id of the deployment at ``path``: 6 hex chars of a sha256 of the resolved path."""
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:6]


def _bridge_name(lab_id: str) -> str:
    return f"lcha{lab_id}b"


def _host_veth(lab_id: str, index: int) -> str:
    return f"lc{lab_id}h{index}"


def _ns_veth(lab_id: str, index: int) -> str:
    return f"lc{lab_id}n{index}"


def _netns_name(lab_id: str, zone: str) -> str:
    return f"lcha-{lab_id}-{zone}"


def _netns_names() -> list[str]:
    return [str(entry["name"]) for entry in _json_list(_ip("-j", "netns", "list"))
            if isinstance(entry, dict) and "name" in entry]


def _link_names() -> list[str]:
    return [str(link["ifname"]) for link in _json_list(_ip("-j", "link", "show"))
            if isinstance(link, dict) and "ifname" in link]


def _found(lab_id: str | None) -> list[tuple[str, str]]:
    """(kind, name) of everything named like lab ``lab_id`` (any lab when None), in removal
    order: veths first (deleting one end deletes its peer inside the namespace, synchronously),
    then namespaces, then bridges."""
    if lab_id is None:
        veth, netns, bridge = _VETH_NAME, _NETNS_NAME, _BRIDGE_NAME
    else:
        escaped = re.escape(lab_id)
        veth = re.compile(rf"lc{escaped}[hn][0-9]{{1,3}}")
        netns = re.compile(rf"lcha-{escaped}-[a-z0-9-]{{1,20}}")
        bridge = re.compile(rf"lcha{escaped}b")
    links = _link_names()
    return ([("link", name) for name in links if veth.fullmatch(name)]
            + [("netns", name) for name in _netns_names() if netns.fullmatch(name)]
            + [("link", name) for name in links if bridge.fullmatch(name)])


def _remove(kind: str, name: str) -> bool:
    """Delete one link or namespace; False when it was already gone."""
    try:
        if kind == "netns":
            _ip("netns", "delete", name)
        else:
            _ip("link", "delete", name)
    except LabError:
        still_there = name in (_netns_names() if kind == "netns" else _link_names())
        if still_there:
            raise
        return False
    return True


def _destroy_id(lab_id: str | None) -> list[str]:
    _stop_flappers(lab_id, None)
    removed = [f"{kind} {name}" for kind, name in _found(lab_id) if _remove(kind, name)]
    remaining = _found(lab_id)
    if remaining:
        raise LabError("could not remove " + ", ".join(f"{k} {n}" for k, n in remaining))
    return removed


def leftovers() -> list[str]:
    """Every network namespace and link named like a lab's (``lcha…``, ``lc{id}h{i}``) still
    present on this machine, as ``"netns NAME"`` / ``"link NAME"``: what tests assert is empty
    after they finish.  Fault state (nft tables, netem qdiscs) lives on those namespaces and
    veths, so it is gone exactly when they are."""
    return [f"{kind} {name}" for kind, name in _found(None)]


def destroy_all() -> list[str]:
    """Remove every lab leftover on this machine (for ``lcha down`` when the state file is lost,
    and test fixtures) and stop this process's flappers; returns what was removed."""
    return _destroy_id(None)


# --- subnets ---------------------------------------------------------------------------------


def _subnet(k: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"198.{18 + k // 256}.{k % 256}.0/24")


def _taken_networks() -> list[ipaddress.IPv4Network]:
    taken = []
    for link in _json_list(_ip("-j", "addr", "show")):
        for info in link.get("addr_info", []) if isinstance(link, dict) else []:
            if info.get("family") == "inet":
                iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
                taken.append(iface.network)
    return taken


def _pick_subnet(lab_id: str) -> str:
    start = int.from_bytes(hashlib.sha256(lab_id.encode()).digest()[:4], "big") % _SUBNETS
    taken = _taken_networks()
    for step in range(_SUBNETS):
        candidate = _subnet((start + step) % _SUBNETS)
        if not any(candidate.overlaps(net) for net in taken):
            return str(candidate)
    raise LabError(f"no free /24 left in {_LAB_RANGE} on this machine")


# --- netem -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Netem:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0


def _read_netem(dev: str, ns: str | None) -> _Netem | None:
    for qdisc in _json_list(_tc("-j", "qdisc", "show", "dev", dev, ns=ns)):
        if isinstance(qdisc, dict) and qdisc.get("kind") == "netem" and qdisc.get("root"):
            options = qdisc.get("options") or {}
            delay = options.get("delay") or {}
            # tc -j reports delay and jitter in seconds.
            return _Netem(delay_ms=round(float(delay.get("delay", 0.0)) * 1000, 3),
                          jitter_ms=round(float(delay.get("jitter", 0.0)) * 1000, 3))
    return None


def _write_netem(dev: str, ns: str | None, want: _Netem) -> None:
    if want == _Netem():
        if _read_netem(dev, ns) is not None:
            _tc("qdisc", "delete", "dev", dev, "root", ns=ns)
        return
    args = ["qdisc", "replace", "dev", dev, "root", "netem"]
    if want.delay_ms:
        args += ["delay", f"{round(want.delay_ms * 1000)}us"]
        if want.jitter_ms:
            args += [f"{round(want.jitter_ms * 1000)}us", "distribution", "normal"]
    try:
        _tc(*args, ns=ns)
    except LabError as exc:
        if "qdisc kind is unknown" in exc.stderr:
            raise LabError(f"{exc} (this kernel has no netem qdisc: delay needs the "
                           "sch_netem module, CONFIG_NET_SCH_NETEM)",
                           cmd=exc.cmd, stderr=exc.stderr)
        raise


def _fmt(number: float) -> str:
    return f"{round(number, 3):g}"


# --- the lab ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """One lab: which zones it has and the /24 they are numbered from.

    The object is only a description; the lab itself lives in the kernel, so
    ``Lab.from_record(lab.record())`` in another process controls the same lab.
    """

    lab_id: str
    zones: tuple[str, ...]
    subnet: str

    def __post_init__(self) -> None:
        _check_lab_id(self.lab_id)
        _check_zones(self.zones)
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as exc:
            raise ValueError(f"subnet must be a /24 inside {_LAB_RANGE}: {exc}")
        if net.prefixlen != 24 or not net.subnet_of(_LAB_RANGE):
            raise ValueError(f"subnet must be a /24 inside {_LAB_RANGE}, not {self.subnet}")

    @classmethod
    def create(cls, lab_id: str, zones: Sequence[str]) -> Lab:
        """Build the lab: bridge, one namespace and veth pair per zone, addresses, routes.

        A lab with this id that already exists is destroyed first.  If a step fails half-way,
        everything made so far is removed and :class:`LabError` is raised.
        """
        _check_lab_id(lab_id)
        zones = tuple(zones)
        _check_zones(zones)
        reason = lab_unsupported()
        if reason is not None:
            raise LabError(reason)
        _destroy_id(lab_id)
        lab = cls(lab_id=lab_id, zones=zones, subnet=_pick_subnet(lab_id))
        try:
            lab._build()
        except BaseException as exc:
            try:
                _destroy_id(lab_id)
            except LabError as cleanup:
                exc.add_note(f"cleaning up the half-built lab also failed: {cleanup}")
            raise
        return lab

    def _build(self) -> None:
        bridge = _bridge_name(self.lab_id)
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{self.hub_address}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for index, zone in enumerate(self.zones):
            ns, host, peer = self.netns(zone), _host_veth(self.lab_id, index), \
                _ns_veth(self.lab_id, index)
            _ip("netns", "add", ns)
            _ip("link", "set", "lo", "up", ns=ns)
            _ip("link", "add", host, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", ns)
            _ip("link", "set", peer, "name", _NS_DEV, ns=ns)
            _ip("addr", "add", f"{self.address(zone)}/24", "dev", _NS_DEV, ns=ns)
            _ip("link", "set", _NS_DEV, "up", ns=ns)
            _ip("link", "set", host, "master", bridge)
            _ip("link", "set", host, "up")

    def record(self) -> dict[str, Any]:
        """A JSON-able description, for a state file; :meth:`from_record` reads it back."""
        return {"lab_id": self.lab_id, "zones": list(self.zones), "subnet": self.subnet}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Lab:
        """The lab described by :meth:`record` (ValueError when the record is malformed)."""
        lab_id, zones, subnet = rec.get("lab_id"), rec.get("zones"), rec.get("subnet")
        if not isinstance(lab_id, str) or not isinstance(subnet, str) \
                or not isinstance(zones, list | tuple) \
                or not all(isinstance(z, str) for z in zones):
            raise ValueError("a lab record needs lab_id (str), zones (list of str), subnet (str)")
        return cls(lab_id=lab_id, zones=tuple(zones), subnet=subnet)

    # --- addresses and names ---

    @property
    def hub_address(self) -> str:
        """The hub's address (on the bridge, in the root namespace), e.g. ``198.18.7.1``."""
        return str(ipaddress.IPv4Network(self.subnet).network_address + 1)

    def address(self, zone: str) -> str:
        """The zone's address, ``.(10 + i)`` for zone *i* in topology order."""
        index = self._index(zone)
        return str(ipaddress.IPv4Network(self.subnet).network_address + 10 + index)

    def netns(self, zone: str) -> str:
        """The name of the zone's network namespace."""
        self._index(zone)
        return _netns_name(self.lab_id, zone)

    def netns_path(self, zone: str) -> str:
        """The zone's namespace as a file (for ``setns``/``nsenter --net=``)."""
        return f"/run/netns/{self.netns(zone)}"

    def exec_prefix(self, zone: str) -> list[str]:
        """The argv prefix that runs a command inside the zone (``ip netns exec NAME``); the
        ``ip`` program is given by absolute path, so the prefix works without sbin on PATH."""
        return [_program("ip"), "netns", "exec", self.netns(zone)]

    def _index(self, zone: str) -> int:
        try:
            return self.zones.index(zone)
        except ValueError:
            raise ValueError(f"zone must be one of {', '.join(self.zones)}, not {zone!r}")

    def _host_dev(self, zone: str) -> str:
        return _host_veth(self.lab_id, self._index(zone))

    # --- life cycle ---

    def exists(self) -> bool:
        """Whether this lab is present on the machine: its bridge with the hub address and every
        zone's namespace (for adopting a lab that an earlier process built)."""
        bridge = _bridge_name(self.lab_id)
        if bridge not in _link_names():
            return False
        hub = [info.get("local") for link in _json_list(_ip("-j", "addr", "show", "dev", bridge))
               for info in link.get("addr_info", [])]
        return (self.hub_address in hub
                and {self.netns(zone) for zone in self.zones} <= set(_netns_names()))

    def destroy(self) -> None:
        """Remove the lab: stop this process's flappers, delete every veth, namespace and the
        bridge (faults go with them).  Idempotent; never fails for what is already gone."""
        _destroy_id(self.lab_id)

    # --- faults ---

    def partition(self, zone: str, *, direction: Direction = "both",
                  peers: Sequence[str] | None = None) -> None:
        """Silently drop the zone's traffic (nft rules in the zone's namespace, table
        ``netdev lcha_fault`` on its veth; packets dropped, not rejected: a cut, not a refusal).

        direction ``"in"``: packets arriving at the zone are dropped; ``"out"``: packets leaving
        it; ``"both"``.  peers: zone names to cut it from (their addresses); None: from
        everything on the bridge (other zones and the hub).  Loopback inside the zone is never
        touched.  Replaces the zone's previous partition (and stops its flapper).
        """
        ns = self.netns(zone)
        if direction not in ("both", "in", "out"):
            raise ValueError(f"direction must be 'both', 'in' or 'out', not {direction!r}")
        if peers is not None:
            peers = list(dict.fromkeys(peers))
            if not peers:
                raise ValueError("peers must name at least one zone (None: cut from everything)")
            for peer in peers:
                self._index(peer)
                if peer == zone:
                    raise ValueError(f"peers must not include the zone itself ({zone!r})")
        _stop_flappers(self.lab_id, zone)
        self._cut(ns, direction, peers)

    def _cut(self, ns: str, direction: Direction = "both",
             peers: Sequence[str] | None = None) -> None:
        label = f"partition {direction}" + (f" from {','.join(peers)}" if peers else "")
        chains = []
        for chain, hook, addr in (("in", "ingress", "saddr"), ("out", "egress", "daddr")):
            if direction not in ("both", chain):
                continue
            # IP only: ARP keeps working, so peers see a timeout, not "no route to host".
            match = (f"ip {addr} {{ {', '.join(self.address(p) for p in peers)} }}" if peers
                     else "meta protocol { ip, ip6 }")
            chains.append(f"  chain {chain} {{\n"
                          f'    type filter hook {hook} device "{_NS_DEV}" priority 0;'
                          " policy accept;\n"
                          f'    {match} drop comment "{label}"\n'
                          "  }\n")
        # Declaring then deleting the table in the same transaction replaces it atomically.
        script = (f"{_NFT_TABLE}\ndelete {_NFT_TABLE}\n"
                  f"{_NFT_TABLE} {{\n{''.join(chains)}}}\n")
        _nft(ns, "-f", "-", stdin=script)

    def _uncut(self, ns: str) -> None:
        _nft(ns, "-f", "-", stdin=f"{_NFT_TABLE}\ndelete {_NFT_TABLE}\n")

    def delay(self, zone: str, ms: float, jitter_ms: float = 0.0) -> None:
        """tc netem delay on the zone's egress (the namespace side of its veth): every round
        trip with the zone grows by ``ms`` (± ``jitter_ms``, normal distribution).  ``ms=0``
        removes the delay; loss set by :meth:`loss` is kept."""
        ns = self.netns(zone)
        if not 0 <= ms <= _MAX_DELAY_MS:
            raise ValueError(f"ms must be between 0 and {_MAX_DELAY_MS:g}, not {ms}")
        if not 0 <= jitter_ms <= ms:
            raise ValueError(f"jitter_ms must be between 0 and ms ({ms}), not {jitter_ms}")
        _write_netem(_NS_DEV, ns, _Netem(ms, jitter_ms if ms else 0.0))

    def can_delay(self) -> str | None:
        """Why :meth:`delay` cannot work on this kernel (no netem qdisc), or None; tried on
        the first zone's loopback, which nothing else shapes."""
        ns = self.netns(self.zones[0])
        try:
            _tc("qdisc", "replace", "dev", "lo", "root", "netem", "delay", "1us", ns=ns)
        except LabError as exc:
            return (f"this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): {exc.stderr.strip()}"
                    if "unknown" in exc.stderr else str(exc))
        _tc("qdisc", "delete", "dev", "lo", "root", ns=ns)
        return None

    def loss(self, zone: str, percent: float) -> None:
        """Drop each IP packet to or from the zone with probability ``percent`` (nft rules on
        ingress and egress of its veth, table ``netdev lcha_loss``; a partition or a delay is
        kept).  Replaces the zone's previous loss."""
        ns = self.netns(zone)
        if not 0 < percent <= 100:
            raise ValueError(f"percent must be in (0, 100], not {percent}")
        label = f"loss {_fmt(percent)}%"
        share = round(percent * 100)  # in 1/10000ths, so 0.5 % is exact
        chains = "".join(
            f"  chain {chain} {{\n"
            f'    type filter hook {hook} device "{_NS_DEV}" priority 10; policy accept;\n'
            f"    meta protocol {{ ip, ip6 }} numgen random mod 10000 < {share} drop"
            f' comment "{label}"\n'
            "  }\n" for chain, hook in (("in", "ingress"), ("out", "egress")))
        _nft(ns, "-f", "-", stdin=f"{_LOSS_TABLE}\ndelete {_LOSS_TABLE}\n"
                                  f"{_LOSS_TABLE} {{\n{chains}}}\n")

    def flap(self, zone: str, *, period_s: float, down_s: float) -> Flapper:
        """Start a daemon thread that cuts the zone (partition both ways, from everything) for
        ``down_s`` at the start of every ``period_s`` and heals it for the rest.
        :meth:`Flapper.stop` stops it and leaves the zone healed.  Replaces the zone's previous
        flapper of this process."""
        ns = self.netns(zone)
        if not 0 < period_s <= 3600:
            raise ValueError(f"period_s must be in (0, 3600], not {period_s}")
        if not 0 < down_s < period_s:
            raise ValueError(f"down_s must be in (0, period_s={period_s}), not {down_s}")
        _stop_flappers(self.lab_id, zone)
        flapper = Flapper(self, zone, ns, period_s=period_s, down_s=down_s)
        with _flappers_lock:
            _flappers.setdefault((self.lab_id, zone), []).append(flapper)
        flapper._start()
        return flapper

    def heal(self, zone: str | None = None) -> None:
        """Remove every fault from the zone (every zone when None): this process's flappers,
        the nft table, the netem qdiscs on both ends; and set both ends of its link up."""
        for name in self.zones if zone is None else (zone,):
            ns, host = self.netns(name), self._host_dev(name)
            _stop_flappers(self.lab_id, name)
            self._uncut(ns)
            _nft(ns, "-f", "-", stdin=f"{_LOSS_TABLE}\ndelete {_LOSS_TABLE}\n")
            _write_netem(_NS_DEV, ns, _Netem())
            _write_netem(host, None, _Netem())
            _ip("link", "set", _NS_DEV, "up", ns=ns)
            _ip("link", "set", host, "up")

    def faults(self) -> dict[str, list[str]]:
        """What is in effect now per zone, read from the kernel, e.g. ``["partition both",
        "delay 200ms ±20ms", "loss 10%"]``; empty lists when the zone is healthy."""
        return {zone: self._zone_faults(zone) for zone in self.zones}

    def _zone_faults(self, zone: str) -> list[str]:
        ns, host = self.netns(zone), self._host_dev(zone)
        found: list[str] = []
        ruleset = json.loads(_nft(ns, "-j", "list", "ruleset") or "{}")
        losses: list[str] = []
        for item in ruleset.get("nftables", []):
            rule = item.get("rule") if isinstance(item, dict) else None
            if rule and rule.get("family") == _NFT_FAMILY and rule.get("table") in (
                    _NFT_NAME, _LOSS_NAME):
                label = str(rule.get("comment", "partition (unlabelled rule)"))
                into = losses if rule["table"] == _LOSS_NAME else found
                if label not in into:
                    into.append(label)
        inner = _read_netem(_NS_DEV, ns) or _Netem()
        if inner.delay_ms:
            jitter = f" ±{_fmt(inner.jitter_ms)}ms" if inner.jitter_ms else ""
            found.append(f"delay {_fmt(inner.delay_ms)}ms{jitter}")
        found += losses
        for dev, where in ((_NS_DEV, ns), (host, None)):
            links = _json_list(_ip("-j", "link", "show", "dev", dev, ns=where))
            if links and "UP" not in links[0].get("flags", []):
                found.append(f"link down ({'zone' if where else 'hub'} side)")
        return found


def _check_lab_id(lab_id: str) -> None:
    if not isinstance(lab_id, str) or not _LAB_ID.fullmatch(lab_id):
        raise ValueError(f"lab_id must be 1 to 8 of [a-z0-9] (see lab_id_for), not {lab_id!r}")


def _check_zones(zones: tuple[str, ...]) -> None:
    if not 1 <= len(zones) <= _MAX_ZONES:
        raise ValueError(f"zones must name 1 to {_MAX_ZONES} zones, not {len(zones)}")
    for zone in zones:
        if not isinstance(zone, str) or not _ZONE.fullmatch(zone):
            raise ValueError(f"zone names must be 1 to 20 of [a-z0-9-], not {zone!r}")
    if len(set(zones)) != len(zones):
        raise ValueError(f"zones must be distinct: {', '.join(zones)}")


# --- flapping --------------------------------------------------------------------------------

_flappers: dict[tuple[str, str], list[Flapper]] = {}
_flappers_lock = threading.Lock()


def _stop_flappers(lab_id: str | None, zone: str | None) -> None:
    with _flappers_lock:
        keys = [key for key in _flappers
                if lab_id in (None, key[0]) and zone in (None, key[1])]
        stopping = [flapper for key in keys for flapper in _flappers.pop(key)]
    for flapper in stopping:
        flapper.stop()


class Flapper:
    """A zone that is cut off for ``down_s`` at the start of every ``period_s`` (see
    :meth:`Lab.flap`), run by a daemon thread of this process."""

    def __init__(self, lab: Lab, zone: str, ns: str, *, period_s: float, down_s: float) -> None:
        self.lab = lab
        self.zone = zone
        self.period_s = period_s
        self.down_s = down_s
        #: The error that ended the thread early (e.g. the lab was destroyed by another process).
        self.error: LabError | None = None
        self._ns = ns
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"lcha-flap-{lab.lab_id}-{zone}")

    def _start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the thread is still flapping the zone."""
        return self._thread.is_alive()

    def _loop(self) -> None:
        start = time.monotonic()
        cycle = 0
        try:
            while not self._stopping.is_set():
                # Cycles are scheduled from the start, so slow nft calls do not make them drift.
                cycle_start = start + cycle * self.period_s
                self.lab._cut(self._ns)
                if self._stopping.wait(max(0.0, cycle_start + self.down_s - time.monotonic())):
                    break
                self.lab._uncut(self._ns)
                cycle += 1
                self._stopping.wait(max(0.0, start + cycle * self.period_s - time.monotonic()))
        except LabError as exc:
            self.error = exc

    def stop(self) -> None:
        """Stop flapping and leave the zone healed (no partition).  Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._thread.join()
        with _flappers_lock:
            mine = _flappers.get((self.lab.lab_id, self.zone), [])
            if self in mine:
                mine.remove(self)
        try:
            self.lab._uncut(self._ns)
        except LabError:
            if self._ns in _netns_names():
                raise
            # The lab was destroyed meanwhile: nothing is left to heal.

"""The lab network (``langchain_ha.cluster.lab``) on real namespaces, veths, nft and netem.

One 3-zone lab serves the module; every test leaves it healed.  Each zone runs a tiny TCP and
UDP echo server; the test process itself is the hub.  "Cut" always means *times out*: a
partition drops packets silently, so nothing is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from langchain_ha.cluster.lab import (
    Lab,
    LabError,
    lab_id_for,
    lab_unsupported,
    leftovers,
)

pytestmark = pytest.mark.skipif(lab_unsupported() is not None,
                                reason=str(lab_unsupported()))

ZONES = ("az1", "az2", "az3")
PORT = 7000
CUT_TIMEOUT_S = 0.4

ECHO_SERVER = r"""
import socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((host, port))
def echo_udp():
    while True:
        data, peer = udp.recvfrom(2048)
        udp.sendto(data, peer)
def echo_tcp(conn):
    with conn:
        while data := conn.recv(2048):
            conn.sendall(data)
threading.Thread(target=echo_udp, daemon=True).start()
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((host, port))
tcp.listen(128)
print("ready", flush=True)
while True:
    conn, _ = tcp.accept()
    threading.Thread(target=echo_tcp, args=(conn,), daemon=True).start()
"""

# Run inside a zone: "tcp HOST PORT TIMEOUT" prints the connect outcome; "udp HOST PORT TEXT"
# sends one datagram.
PROBE = r"""
import socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "tcp":
    try:
        socket.create_connection((host, port), timeout=float(sys.argv[4])).close()
        print("ok")
    except TimeoutError:
        print("timeout")
    except ConnectionRefusedError:
        print("refused")
    except OSError as exc:
        print(f"error {exc}")
else:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[4].encode(), (host, port))
    print("sent")
"""


def _program(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError(f"{name} not found")


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout


def _connect(host: str, port: int = PORT, timeout: float = CUT_TIMEOUT_S) -> str:
    """A TCP connect from the hub: "ok", "timeout", "refused" or "error ..."."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"error {exc}"
    return "ok"


def _connect_time(host: str) -> float:
    start = time.perf_counter()
    socket.create_connection((host, PORT), timeout=5).close()
    return time.perf_counter() - start


def _probe(lab: Lab, zone: str, *args: str) -> str:
    done = subprocess.run([*lab.exec_prefix(zone), sys.executable, "-c", PROBE, *args],
                          capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _zone_connect(lab: Lab, zone: str, host: str, port: int = PORT) -> str:
    """A TCP connect from inside ``zone``."""
    return _probe(lab, zone, "tcp", host, str(port), str(CUT_TIMEOUT_S))


def _udp_echoes(host: str, count: int, *, wait_s: float = 0.5) -> int:
    """Send ``count`` datagrams to the echo at ``host``; how many distinct ones come back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for seq in range(count):
            sock.sendto(str(seq).encode(), (host, PORT))
        sock.settimeout(wait_s)
        seen: set[bytes] = set()
        try:
            while len(seen) < count:
                seen.add(sock.recv(64))
        except TimeoutError:
            pass
    return len(seen)


def _of(lab_id: str) -> list[str]:
    """The leftovers that belong to lab ``lab_id``."""
    mine = (f"lcha{lab_id}b", f"lcha-{lab_id}-", f"lc{lab_id}h", f"lc{lab_id}n")
    return [item for item in leftovers() if item.split()[1].startswith(mine)]


class Hub:
    """TCP and UDP listeners on the hub address, in the test process (the root namespace)."""

    def __init__(self, address: str) -> None:
        self.tcp = socket.socket()
        self.tcp.bind((address, 0))
        self.tcp.listen(64)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((address, 0))
        self.tcp_port = self.tcp.getsockname()[1]
        self.udp_port = self.udp.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            conn.close()

    def received(self, text: str, timeout: float = 0.5) -> bool:
        """Whether the datagram ``text`` arrives within ``timeout`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.udp.settimeout(left)
            try:
                if self.udp.recv(256).decode() == text:
                    return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab_id = lab_id_for(tmp_path_factory.mktemp("lab"))
    the_lab = Lab.create(lab_id, ZONES)
    servers: list[subprocess.Popen[str]] = []
    try:
        for zone in ZONES:
            proc = subprocess.Popen(
                [*the_lab.exec_prefix(zone), sys.executable, "-c", ECHO_SERVER,
                 the_lab.address(zone), str(PORT)],
                stdout=subprocess.PIPE, text=True)
            servers.append(proc)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        yield the_lab
    finally:
        for proc in servers:
            os.kill(proc.pid, 15)
            proc.wait(timeout=5)
        the_lab.destroy()
        assert _of(lab_id) == []


@pytest.fixture(scope="module")
def hub(lab: Lab) -> Iterator[Hub]:
    the_hub = Hub(lab.hub_address)
    yield the_hub
    the_hub.close()


@pytest.fixture(autouse=True)
def _healed(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "lab" in request.fixturenames:
        the_lab: Lab = request.getfixturevalue("lab")
        the_lab.heal()
        assert the_lab.faults() == {zone: [] for zone in ZONES}


@pytest.fixture
def netem(lab: Lab) -> None:
    """Skips when the kernel has no netem qdisc (delay needs it; loss is nft's)."""
    try:
        lab.delay(ZONES[0], 1)
    except LabError as exc:
        if "netem" in str(exc):
            pytest.skip(str(exc))
        raise
    finally:
        lab.heal(ZONES[0])


# --- the network ---


def test_hub_and_zones_reach_each_other(lab: Lab, hub: Hub) -> None:
    for zone in ZONES:
        assert _connect(lab.address(zone)) == "ok"
        assert _zone_connect(lab, zone, lab.hub_address, hub.tcp_port) == "ok"
    assert _zone_connect(lab, "az1", lab.address("az2")) == "ok"
    assert _zone_connect(lab, "az2", lab.address("az1")) == "ok"
    assert _udp_echoes(lab.address("az3"), 5) == 5


def test_lab_is_isolated(lab: Lab) -> None:
    ip = _program("ip")
    assert lab.subnet.startswith("198.1") and lab.subnet.endswith(".0/24")
    assert lab.hub_address == lab.subnet.replace(".0/24", ".1")
    assert [lab.address(z).rsplit(".", 1)[1] for z in ZONES] == ["10", "11", "12"]
    for zone in ZONES:
        assert Path(lab.netns_path(zone)).exists()
        assert _run(ip, "-n", lab.netns(zone), "route", "show", "default") == ""
        assert _run(ip, "-n", lab.netns(zone), "-6", "route", "show", "default") == ""
        links = {link["ifname"]: link for link in
                 json.loads(_run(ip, "-n", lab.netns(zone), "-j", "addr", "show"))}
        assert set(links) == {"lo", "lab0"}
        assert "UP" in links["lo"]["flags"]
        v4 = [a["local"] for a in links["lab0"]["addr_info"] if a["family"] == "inet"]
        assert v4 == [lab.address(zone)]
    bridge = f"lcha{lab.lab_id}b"
    ports = {link["ifname"] for link in json.loads(_run(ip, "-j", "link", "show", "master",
                                                        bridge))}
    assert ports == {f"lc{lab.lab_id}h{i}" for i in range(len(ZONES))}


def test_loopback_inside_a_zone_is_never_cut(lab: Lab) -> None:
    lab.partition("az1")
    assert _zone_connect(lab, "az1", lab.address("az1")) == "ok"


# --- partitions ---


def test_partition_cuts_the_zone_both_ways_until_healed(lab: Lab, hub: Hub) -> None:
    a, b = lab.address("az1"), lab.address("az2")
    lab.partition("az1")
    lab.partition("az1")  # idempotent
    assert lab.faults() == {"az1": ["partition both"], "az2": [], "az3": []}
    assert _connect(a) == "timeout"
    assert _zone_connect(lab, "az2", a) == "timeout"
    assert _zone_connect(lab, "az1", lab.hub_address, hub.tcp_port) == "timeout"
    assert _zone_connect(lab, "az1", b) == "timeout"
    assert _connect(b) == "ok"  # the others are untouched

    lab.heal("az1")
    assert lab.faults()["az1"] == []
    assert _connect(a) == "ok"
    assert _zone_connect(lab, "az2", a) == "ok"
    assert _zone_connect(lab, "az1", lab.hub_address, hub.tcp_port) == "ok"


def test_partition_in_drops_only_arriving_traffic(lab: Lab, hub: Hub) -> None:
    lab.partition("az1", direction="in")
    assert lab.faults()["az1"] == ["partition in"]
    _probe(lab, "az1", "udp", lab.hub_address, str(hub.udp_port), "in-1")
    assert hub.received("in-1")
    assert _udp_echoes(lab.address("az1"), 3) == 0


def test_partition_out_drops_only_leaving_traffic(lab: Lab, hub: Hub) -> None:
    lab.partition("az1", direction="out")
    assert lab.faults()["az1"] == ["partition out"]
    # The datagram is sent without a local error (a silent cut), and never arrives.
    assert _probe(lab, "az1", "udp", lab.hub_address, str(hub.udp_port), "out-1") == "sent"
    assert not hub.received("out-1")
    # Hub-to-zone SYNs arrive but the SYN-ACKs do not leave: connects time out.
    assert _connect(lab.address("az1")) == "timeout"


def test_partition_from_peers_only(lab: Lab, hub: Hub) -> None:
    lab.partition("az1", peers=["az2"])
    assert lab.faults()["az1"] == ["partition both from az2"]
    assert _zone_connect(lab, "az1", lab.hub_address, hub.tcp_port) == "ok"
    assert _zone_connect(lab, "az1", lab.address("az3")) == "ok"
    assert _zone_connect(lab, "az1", lab.address("az2")) == "timeout"
    assert _zone_connect(lab, "az2", lab.address("az1")) == "timeout"
    assert _connect(lab.address("az1")) == "ok"


def test_faults_live_in_the_kernel_so_another_process_heals_them(lab: Lab) -> None:
    lab.partition("az2")
    code = ("import json, sys; from langchain_ha.cluster.lab import Lab; "
            "lab = Lab.from_record(json.loads(sys.argv[1])); "
            "print(json.dumps(lab.faults())); lab.heal('az2')")
    out = _run(sys.executable, "-c", code, json.dumps(lab.record()))
    assert json.loads(out)["az2"] == ["partition both"]
    assert lab.faults()["az2"] == []
    assert _connect(lab.address("az2")) == "ok"


def test_record_round_trip(lab: Lab) -> None:
    again = Lab.from_record(json.loads(json.dumps(lab.record())))
    assert again == lab and again.exists()
    assert again.address("az3") == lab.address("az3")
    other = "198.18.0.0/24" if lab.subnet != "198.18.0.0/24" else "198.18.1.0/24"
    assert not Lab(lab.lab_id, lab.zones, other).exists()
    assert not Lab(lab.lab_id, (*lab.zones, "az4"), lab.subnet).exists()


# --- delay (netem) and loss (nft) ---


def test_delay_grows_every_round_trip(lab: Lab, netem: None) -> None:
    a = lab.address("az1")
    before = statistics.median(_connect_time(a) for _ in range(5))
    lab.delay("az1", 200)
    assert lab.faults()["az1"] == ["delay 200ms"]
    after = statistics.median(_connect_time(a) for _ in range(5))
    assert after - before >= 0.18
    lab.delay("az1", 200, jitter_ms=20)
    assert lab.faults()["az1"] == ["delay 200ms ±20ms"]


def test_loss_drops_a_share_of_packets(lab: Lab) -> None:
    lab.loss("az1", 50)
    assert lab.faults()["az1"] == ["loss 50%"]
    back = _udp_echoes(lab.address("az1"), 200)
    # 50% each way: about a quarter comes back; loose bounds, so never flaky.
    assert 20 <= back <= 180
    lab.loss("az1", 0.5)  # replaces the 50 %
    assert lab.faults()["az1"] == ["loss 0.5%"]
    assert _udp_echoes(lab.address("az1"), 100) >= 90


def test_loss_and_a_partition_combine_and_heal_removes_both(lab: Lab) -> None:
    lab.loss("az2", 10)
    lab.partition("az2", direction="in")
    assert lab.faults()["az2"] == ["partition in", "loss 10%"]
    lab.heal("az2")
    assert lab.faults()["az2"] == []
    assert _udp_echoes(lab.address("az2"), 50) >= 48


def test_delay_and_loss_combine_and_heal_removes_both(lab: Lab, netem: None) -> None:
    lab.delay("az2", 50)
    lab.loss("az2", 10)
    assert lab.faults()["az2"] == ["delay 50ms", "loss 10%"]
    lab.delay("az2", 80, 5)
    assert lab.faults()["az2"] == ["delay 80ms ±5ms", "loss 10%"]
    lab.loss("az2", 20)
    assert lab.faults()["az2"] == ["delay 80ms ±5ms", "loss 20%"]
    lab.heal("az2")
    assert lab.faults()["az2"] == []
    assert _connect_time(lab.address("az2")) < 0.05


# --- flapping ---


def test_flap_cuts_the_zone_part_of_every_period(lab: Lab) -> None:
    flapper = lab.flap("az3", period_s=1.0, down_s=0.5)
    outcomes = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        outcomes.append(_connect(lab.address("az3"), timeout=0.3))
        time.sleep(0.05)
    flapper.stop()
    flapper.stop()  # idempotent
    assert "ok" in outcomes and "timeout" in outcomes, outcomes
    assert set(outcomes) <= {"ok", "timeout"}
    assert not flapper.running and flapper.error is None
    assert lab.faults()["az3"] == []
    assert _connect(lab.address("az3")) == "ok"


def test_heal_stops_a_flapper(lab: Lab) -> None:
    flapper = lab.flap("az2", period_s=0.4, down_s=0.2)
    time.sleep(0.1)
    lab.heal()
    assert not flapper.running
    assert lab.faults()["az2"] == []


# --- arguments ---


# A bad call, and words its ValueError must contain: the argument's name and its limit.
BAD_CALLS: dict[str, tuple[Callable[[Lab], object], list[str]]] = {
    "delay-negative": (lambda lab: lab.delay("az1", -1), ["ms", "between 0 and"]),
    "jitter-above-delay": (lambda lab: lab.delay("az1", 10, jitter_ms=20),
                           ["jitter_ms", "between 0 and ms"]),
    "loss-zero": (lambda lab: lab.loss("az1", 0), ["percent", "(0, 100]"]),
    "loss-above-100": (lambda lab: lab.loss("az1", 100.5), ["percent", "(0, 100]"]),
    "unknown-zone": (lambda lab: lab.partition("az9"), ["zone", "az1, az2, az3"]),
    "bad-direction": (lambda lab: lab.partition("az1", direction="sideways"),  # type: ignore[arg-type]
                      ["direction", "'in'"]),
    "empty-peers": (lambda lab: lab.partition("az1", peers=[]), ["peers", "at least one"]),
    "peer-is-self": (lambda lab: lab.partition("az1", peers=["az1"]), ["peers", "itself"]),
    "unknown-peer": (lambda lab: lab.partition("az1", peers=["nope"]), ["zone", "az1, az2"]),
    "flap-down-equals-period": (lambda lab: lab.flap("az1", period_s=1, down_s=1),
                                ["down_s", "(0, period_s=1)"]),
    "flap-down-zero": (lambda lab: lab.flap("az1", period_s=1, down_s=0),
                       ["down_s", "(0, period_s=1)"]),
    "flap-period-zero": (lambda lab: lab.flap("az1", period_s=0, down_s=0.5),
                         ["period_s", "(0, 3600]"]),
    "address-unknown-zone": (lambda lab: lab.address("az0"), ["zone", "az1, az2, az3"]),
    "bad-lab-id": (lambda lab: Lab.create("Not-An-Id", ["az1"]), ["lab_id", "[a-z0-9]"]),
    "bad-zone-name": (lambda lab: Lab.create("abc123", ["AZ_1"]), ["zone names", "[a-z0-9-]"]),
    "duplicate-zones": (lambda lab: Lab.create("abc123", ["az1", "az1"]), ["zones", "distinct"]),
    "no-zones": (lambda lab: Lab.create("abc123", []), ["zones", "1 to 200"]),
    "record-zones-not-list": (lambda lab: Lab.from_record({"lab_id": "abc123", "zones": "az1"}),
                              ["zones"]),
    "subnet-outside-range": (lambda lab: Lab("abc123", ("az1",), "10.0.0.0/24"),
                             ["subnet", "198.18.0.0/15"]),
}


@pytest.mark.parametrize(("call", "words"), list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_arguments_are_value_errors(lab: Lab, call: Callable[[Lab], object],
                                        words: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        call(lab)
    for word in words:
        assert word in str(caught.value)


# --- life cycle ---


def test_lab_id_for_is_short_and_stable(tmp_path: Path) -> None:
    lab_id = lab_id_for(tmp_path)
    assert len(lab_id) == 6 and all(c in "0123456789abcdef" for c in lab_id)
    assert lab_id_for(tmp_path / "x" / "..") == lab_id
    assert lab_id_for(tmp_path / "other") != lab_id


def test_create_twice_replaces_and_destroy_is_idempotent(tmp_path: Path) -> None:
    lab_id = lab_id_for(tmp_path)
    first = Lab.create(lab_id, ["x1"])
    try:
        second = Lab.create(lab_id, ["x1", "x2"])
        assert sorted(_of(lab_id)) == sorted([
            f"link lcha{lab_id}b", f"link lc{lab_id}h0", f"link lc{lab_id}h1",
            f"netns lcha-{lab_id}-x1", f"netns lcha-{lab_id}-x2"])
        assert _connect(second.address("x2")) == "refused"  # reachable, nobody listening
        assert second.exists()
        second.destroy()
        assert _of(lab_id) == []
        assert not second.exists()
        second.destroy()
        first.destroy()
    finally:
        first.destroy()
    assert _of(lab_id) == []


def test_subnet_moves_on_when_taken(tmp_path: Path, lab: Lab) -> None:
    lab_id = lab_id_for(tmp_path)
    probe = Lab.create(lab_id, ["y1"])
    probe.destroy()
    # Occupy that /24 (on the module lab's bridge, so destroying it cleans up too).
    ip = _program("ip")
    taken = probe.subnet.replace(".0/24", ".200/24")
    _run(ip, "addr", "add", taken, "dev", f"lcha{lab.lab_id}b")
    try:
        moved = Lab.create(lab_id, ["y1"])
        try:
            assert moved.subnet != probe.subnet
            assert _connect(moved.address("y1")) == "refused"
        finally:
            moved.destroy()
    finally:
        _run(ip, "addr", "del", taken, "dev", f"lcha{lab.lab_id}b")
    assert _of(lab_id) == []


def test_destroy_with_a_process_still_inside(tmp_path: Path) -> None:
    lab_id = lab_id_for(tmp_path)
    busy = Lab.create(lab_id, ["z1"])
    proc = subprocess.Popen([*busy.exec_prefix("z1"), sys.executable, "-c",
                             "import time; time.sleep(30)"])
    try:
        busy.destroy()
        assert _of(lab_id) == []
    finally:
        os.kill(proc.pid, 15)
        proc.wait(timeout=5)
        busy.destroy()

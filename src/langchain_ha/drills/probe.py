"""Database evidence for a drill: the write gap, and acknowledged writes that went missing.

A probe writer inserts a row every ``interval_s`` through the writer conninfo (libpq
multi-host, ``target_session_attrs=read-write``: it follows the primary).  The write gap is
the longest time without an acknowledged insert, from the start of the probe to its stop (a
database that never took a write again after the fault shows as a gap to the end, not as no
gap).  At the end every acknowledged probe row and every chat-history turn the server
acknowledged is looked up on the (new) primary; :func:`tally` counts them (``checked``,
overall and in the fault window) and the ones missing (``lost``).

A fenced probe (:class:`FenceProbe`) writes to every member *directly*, side by side, each on
its own connection: it sees what polling members in turn cannot, a moment when two members
acknowledge writes at once (a split brain), and an isolated old primary still acknowledging
after it lost its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Hashable, Iterable
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from langchain_ha.agents import turn_message_id


class WriteProbe:
    """Insert a numbered row every ``interval_s``; remember which ones were acknowledged."""

    def __init__(self, writer: str, run_id: str, interval_s: float = 0.05) -> None:
        self.writer = writer + " connect_timeout=1"
        self.run_id = run_id
        self.interval_s = interval_s
        self.acked: list[tuple[int, float]] = []
        self.errors = 0
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Write until :meth:`stop`; reconnect after any error."""
        self.started_at = time.monotonic()
        async with await psycopg.AsyncConnection.connect(self.writer, autocommit=True) as first:
            await first.execute("CREATE TABLE IF NOT EXISTS lcha_drill_probe (run text, n int, "
                                "at timestamptz DEFAULT now(), PRIMARY KEY (run, n))")
        n = 0
        conn: psycopg.AsyncConnection[Any] | None = None
        while not self._stop.is_set():
            n += 1
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(self.writer, autocommit=True)
                async with asyncio.timeout(2):
                    await conn.execute("INSERT INTO lcha_drill_probe (run, n) VALUES (%s, %s)",
                                       (self.run_id, n))
                self.acked.append((n, time.monotonic()))
            except (psycopg.Error, TimeoutError, OSError):
                self.errors += 1
                if conn is not None:
                    await conn.close()
                conn = None
                await asyncio.sleep(0.1)
            await asyncio.sleep(self.interval_s)
        if conn is not None:
            await conn.close()
        self.stopped_at = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def write_gap_s(self) -> float:
        """The longest time without an acknowledged insert between the probe's start and stop
        (both ends count: the time before the first ack and after the last one)."""
        return write_gap_s(self.started_at, [t for _, t in self.acked], self.stopped_at)

    async def missing(self) -> set[int]:
        """Acknowledged probe rows (their numbers) missing from the primary now."""
        if not self.acked:
            return set()
        async with await psycopg.AsyncConnection.connect(self.writer, autocommit=True) as conn:
            cur = await conn.execute("SELECT n FROM lcha_drill_probe WHERE run = %s",
                                     (self.run_id,))
            present = {row[0] for row in await cur.fetchall()}
        return {n for n, _ in self.acked if n not in present}


class FenceProbe:
    """Insert a numbered row every ``interval_s`` into each member directly (no
    ``target_session_attrs``: a standby refuses, a primary acknowledges).

    ``members`` maps a member's name to its ``(host, port)``; ``writer`` gives the user,
    database and credentials.  Each acknowledged write is kept with the moment it was sent
    and the moment it was acknowledged: while that write was in flight, its member was a
    primary that acknowledged a write.
    """

    def __init__(self, writer: str, members: dict[str, tuple[str, int]], run_id: str,
                 interval_s: float = 0.1) -> None:
        base = {k: v for k, v in conninfo_to_dict(writer).items()
                if k not in ("host", "port", "target_session_attrs", "load_balance_hosts",
                             "connect_timeout")}
        self.conninfo = {name: make_conninfo("", **base, host=host, port=port,
                                             connect_timeout=1)
                         for name, (host, port) in members.items()}
        self.writer = writer
        self.run_id = run_id
        self.interval_s = interval_s
        self.acked: list[tuple[str, int, float, float]] = []
        """(member, n, sent, acknowledged), monotonic times."""
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Write to every member until :meth:`stop`."""
        async with await psycopg.AsyncConnection.connect(
                self.writer + " connect_timeout=3", autocommit=True) as first:
            await first.execute("CREATE TABLE IF NOT EXISTS lcha_drill_fence (run text, "
                                "member text, n int, PRIMARY KEY (run, member, n))")
        await asyncio.gather(*(self._member(name) for name in self.conninfo))

    async def _member(self, name: str) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        n = 0
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    async with asyncio.timeout(2):
                        conn = await psycopg.AsyncConnection.connect(self.conninfo[name],
                                                                     autocommit=True)
                n += 1
                sent = time.monotonic()
                async with asyncio.timeout(2):
                    await conn.execute("INSERT INTO lcha_drill_fence (run, member, n) "
                                       "VALUES (%s, %s, %s)", (self.run_id, name, n))
                self.acked.append((name, n, sent, time.monotonic()))
            except (psycopg.Error, TimeoutError, OSError):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                conn = None
                await asyncio.sleep(0.2)
            await asyncio.sleep(self.interval_s)
        if conn is not None:
            await conn.close()

    def stop(self) -> None:
        self._stop.set()

    def primaries_at_once(self) -> int:
        """The most members whose acknowledged writes were in flight at one moment."""
        return most_at_once([(m, sent, acked) for m, _, sent, acked in self.acked])

    async def report(self, t0: float) -> dict[str, Any]:
        """Per member: writes acknowledged, first and last ack (s from ``t0``), and acked rows
        missing from the primary now; and the most primaries acknowledging at once."""
        async with await psycopg.AsyncConnection.connect(
                self.writer + " connect_timeout=3", autocommit=True) as conn:
            cur = await conn.execute("SELECT member, n FROM lcha_drill_fence WHERE run = %s",
                                     (self.run_id,))
            present = {(m, n) for m, n in await cur.fetchall()}
        members: dict[str, dict[str, Any]] = {}
        for m, n, _, acked in self.acked:
            row = members.setdefault(m, {"acked": 0, "lost": 0, "first_s": None, "last_s": None})
            row["acked"] += 1
            row["lost"] += (m, n) not in present
            at = round(acked - t0, 2)
            row["first_s"] = at if row["first_s"] is None else row["first_s"]
            row["last_s"] = at
        return {"members": dict(sorted(members.items())),
                "acked": sum(r["acked"] for r in members.values()),
                "lost": sum(r["lost"] for r in members.values()),
                "primaries_at_once": self.primaries_at_once()}


def most_at_once(spans: Iterable[tuple[str, float, float]]) -> int:
    """The most distinct names whose ``(name, start, end)`` spans cover one instant."""
    events = sorted([(start, 0, name) for name, start, _ in spans]
                    + [(end, 1, name) for name, _, end in spans])
    open_: dict[str, int] = {}
    most = 0
    for _, kind, name in events:
        if kind == 0:
            open_[name] = open_.get(name, 0) + 1
            most = max(most, len(open_))
        else:
            open_[name] -= 1
            if not open_[name]:
                del open_[name]
    return most


def write_gap_s(start: float | None, acked: list[float], stop: float | None) -> float:
    """The longest stretch without an acknowledged write from ``start`` to ``stop``."""
    times = sorted([*([start] if start is not None else []), *acked,
                    *([stop] if stop is not None else [])])
    return round(max((b - a for a, b in itertools.pairwise(times)), default=0.0), 2)


def tally(acked: Iterable[tuple[Hashable, float]], missing: set[Any],
          window: tuple[float, float] | None) -> dict[str, int]:
    """Acknowledged writes (id, ack time) checked and lost, overall and in ``window``."""
    out = {"checked": 0, "lost": 0, "checked_in_window": 0, "lost_in_window": 0}
    for ident, at in acked:
        inside = window is not None and window[0] <= at <= window[1]
        lost = ident in missing
        out["checked"] += 1
        out["lost"] += lost
        out["checked_in_window"] += inside
        out["lost_in_window"] += inside and lost
    return out


async def missing_history(writer: str, acked: Iterable[tuple[str, str]]
                          ) -> set[tuple[str, str]]:
    """Chat-history turns the server acknowledged (session, request key) that are missing."""
    wanted = set(acked)
    if not wanted:
        return set()
    async with await psycopg.AsyncConnection.connect(writer + " connect_timeout=3",
                                                     autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT DISTINCT session_id, request_key FROM lcha_chat_history "
            "WHERE request_key = ANY(%s)", ([k for _, k in wanted],))
        present = {(s, k) for s, k in await cur.fetchall()}
    return wanted - present


async def missing_checkpoint_turns(writer: str, acked: Iterable[tuple[str, str]]
                                   ) -> set[tuple[str, str]]:
    """Agent turns the server acknowledged (thread id, request key) that the thread's latest
    LangGraph checkpoint does not hold (:class:`~langchain_ha.agents.DurableAgent` opens each
    turn with a message whose id the request key gives)."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    wanted = set(acked)
    missing: set[tuple[str, str]] = set()
    if not wanted:
        return missing
    threads: dict[str, set[str]] = {}
    for thread, key in wanted:
        threads.setdefault(thread, set()).add(key)
    async with AsyncPostgresSaver.from_conn_string(writer + " connect_timeout=3") as saver:
        for thread, keys in threads.items():
            found = await saver.aget_tuple({"configurable": {"thread_id": thread}})
            messages = (found.checkpoint["channel_values"].get("messages", [])
                        if found is not None else [])
            ids = {getattr(m, "id", None) for m in messages}
            missing |= {(thread, k) for k in keys if turn_message_id(k) not in ids}
    return missing


async def wait_writable(writer: str, timeout: float = 120.0) -> None:
    """Wait until the database takes writes again (after a drill that broke it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(writer + " connect_timeout=1",
                                                             autocommit=True) as conn:
                await conn.execute("SELECT 1")
                return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)

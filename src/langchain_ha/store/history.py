"""Chat history in PostgreSQL, with appends that happen once per request.

Each ``aadd_messages`` call stores its messages under the current request key
(:func:`langchain_ha._context.current_request_key`, set by the server from the client's
idempotency key or the request id) with ``seq`` 0..n-1; the unique ``(session_id,
request_key, seq)`` makes a retried request's append a no-op.  So: ONE append per request key
and session (what ``RunnableWithMessageHistory`` does: input and output messages together).
A second, different append under the same key is also ignored; code that appends several
times per request should run each append in its own ``request_key_scope``.  Without a
request key every call appends.

Writes go to the primary and return once committed.  Reads go to the primary (read your own
writes) and fall back to a standby when the primary is unavailable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from psycopg.errors import UndefinedTable
from psycopg.types.json import Jsonb

from langchain_ha._context import current_request_key
from langchain_ha._sync import run_sync
from langchain_ha.store._db import AsyncConn, ConnectionSource, on_writer, on_writer_then_reader
from langchain_ha.store.schema import ensure_schema

MAX_SESSION_ID = 256


class PgChatMessageHistory(BaseChatMessageHistory):
    """Messages of one chat session, stored in ``lcha_chat_history``."""

    def __init__(self, db: ConnectionSource, session_id: str) -> None:
        if not isinstance(session_id, str) or not 0 < len(session_id) <= MAX_SESSION_ID:
            raise ValueError(f"session_id must be a string of 1..{MAX_SESSION_ID} characters")
        self.db = db
        self.session_id = session_id

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` (committed on return); a no-op if this request key already did."""
        if not messages:
            return
        await ensure_schema(self.db)
        key = current_request_key() or f"auto:{uuid.uuid4()}"
        rows = [
            (self.session_id, key, seq, Jsonb(message_to_dict(m))) for seq, m in enumerate(messages)
        ]

        async def write(conn: AsyncConn) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO lcha_chat_history (session_id, request_key, seq, message)"
                    " VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (session_id, request_key, seq) DO NOTHING",
                    rows,
                )

        await on_writer(self.db, write)

    async def aget_messages(self) -> list[BaseMessage]:
        """The session's messages, oldest first (reads never create tables)."""

        async def read(conn: AsyncConn) -> list[BaseMessage]:
            cur = await conn.execute(
                "SELECT message FROM lcha_chat_history WHERE session_id = %s ORDER BY id",
                (self.session_id,),
            )
            return messages_from_dict([r[0] for r in await cur.fetchall()])

        try:
            return await on_writer_then_reader(self.db, read)
        except UndefinedTable:
            return []

    async def aget_last(self, n: int) -> list[BaseMessage]:
        """The session's last ``n`` messages, oldest first: what a prompt with a bounded
        memory needs, read and decoded without the rest of a long session."""
        if n < 1:
            return []

        async def read(conn: AsyncConn) -> list[BaseMessage]:
            cur = await conn.execute(
                "SELECT message FROM (SELECT id, message FROM lcha_chat_history"
                " WHERE session_id = %s ORDER BY id DESC LIMIT %s) AS last ORDER BY id",
                (self.session_id, n),
            )
            return messages_from_dict([r[0] for r in await cur.fetchall()])

        try:
            return await on_writer_then_reader(self.db, read)
        except UndefinedTable:
            return []

    async def aclear(self) -> None:
        """Delete every message of the session."""
        await ensure_schema(self.db)

        async def delete(conn: AsyncConn) -> None:
            await conn.execute(
                "DELETE FROM lcha_chat_history WHERE session_id = %s", (self.session_id,)
            )

        await on_writer(self.db, delete)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return run_sync(self.aget_messages())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        run_sync(self.aadd_messages(messages))

    def clear(self) -> None:
        run_sync(self.aclear())

"""The portal's sessions: a row per signed-in browser."""

from __future__ import annotations

import dataclasses

from sqlalchemy import delete, insert, or_, select

from tidings.storage.records import PortalSession
from tidings.storage.schema import api_keys, portal_sessions
from tidings.storage.sql.database import SQLPart


class SQLSessions(SQLPart):
    async def open_session(self, session: PortalSession) -> None:
        # A session's fields are the table's columns.
        statement = insert(portal_sessions).values(dataclasses.asdict(session))
        await self._db.write(lambda conn: conn.execute(statement))

    async def find_session(self, session_id: str, now_ms: int) -> PortalSession | None:
        # Revoking a key deletes its sessions in the same transaction; the join also
        # refuses a session opened by a sign-in that raced the revocation.
        s = portal_sessions.c
        query = (
            select(portal_sessions)
            .outerjoin(api_keys, api_keys.c.id == s.key_id)
            .where(
                s.id == session_id,
                s.expires_ms > now_ms,
                or_(s.key_id.is_(None), api_keys.c.revoked_ms.is_(None)),
            )
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        return PortalSession(
            row.id, row.tenant_id, row.key_id, bool(row.can_manage), row.created_ms, row.expires_ms
        )

    async def end_session(self, session_id: str) -> bool:
        statement = delete(portal_sessions).where(portal_sessions.c.id == session_id)
        return await self._db.write(lambda conn: conn.execute(statement).rowcount > 0)

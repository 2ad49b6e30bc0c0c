"""Tenants and API keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from tidings.domain.clock import now_ms
from tidings.domain.ids import new_id
from tidings.storage.records import ApiKey, ApiKeyInfo, Revocation, Revoked, Tenant
from tidings.storage.schema import api_keys, portal_sessions, tenants
from tidings.storage.sql.database import SQLPart

ADMIN = "admin"


def _info(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        row.id,
        row.tenant_id,
        row.prefix,
        frozenset(row.scopes.split()),
        row.created_ms,
        row.revoked_ms,
    )


class SQLKeys(SQLPart):
    async def ensure_tenant(self, name: str) -> Tenant:
        def tx(conn: Connection) -> Tenant:
            row = conn.execute(select(tenants).where(tenants.c.name == name)).first()
            if row is not None:
                return Tenant(row.id, row.name)
            tenant = Tenant(new_id("ten"), name)
            conn.execute(insert(tenants).values(id=tenant.id, name=name, created_ms=now_ms()))
            return tenant

        return await self._db.write(tx)

    async def insert_api_key(
        self, tenant_id: str, key_hash: str, prefix: str, scopes: Sequence[str]
    ) -> ApiKey:
        key = ApiKey(new_id("key"), tenant_id, frozenset(scopes))
        statement = insert(api_keys).values(
            id=key.id,
            tenant_id=tenant_id,
            key_hash=key_hash,
            prefix=prefix,
            scopes=" ".join(sorted(scopes)),
            created_ms=now_ms(),
        )
        await self._db.write(lambda conn: conn.execute(statement))
        return key

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        query = select(tenants).where(tenants.c.id == tenant_id)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return Tenant(row.id, row.name) if row is not None else None

    async def find_tenant(self, name: str) -> Tenant | None:
        query = select(tenants).where(tenants.c.name == name)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return Tenant(row.id, row.name) if row is not None else None

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        query = select(api_keys).where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_ms.is_(None)
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        return ApiKey(row.id, row.tenant_id, frozenset(row.scopes.split()))

    async def count_api_keys(self, tenant_id: str) -> int:
        query = select(func.count()).select_from(api_keys).where(api_keys.c.tenant_id == tenant_id)
        return int(await self._db.read(lambda conn: conn.execute(query).scalar_one()))

    async def list_api_keys(self, tenant_id: str) -> list[ApiKeyInfo]:
        query = (
            select(api_keys)
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.created_ms, api_keys.c.id)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [_info(row) for row in rows]

    async def get_api_key(self, tenant_id: str, key_id: str) -> ApiKeyInfo | None:
        query = select(api_keys).where(api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return _info(row) if row is not None else None

    async def revoke_api_key(
        self, key_id: str, tenant_id: str | None, now_ms: int, keep_last_admin: bool
    ) -> Revoked:
        def tx(conn: Connection) -> Revoked:
            found = select(api_keys).where(api_keys.c.id == key_id)
            if tenant_id is not None:
                found = found.where(api_keys.c.tenant_id == tenant_id)
            row = conn.execute(found).first()
            if row is None:
                return Revoked(Revocation.NOT_FOUND, None)
            # Serialises revocations per tenant on PostgreSQL (SQLite has one writer).
            lock = select(tenants.c.id).where(tenants.c.id == row.tenant_id).with_for_update()
            conn.execute(lock)
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()
            if row.revoked_ms is not None:
                return Revoked(Revocation.ALREADY_REVOKED, _info(row))
            last_admin = ADMIN in row.scopes.split() and _admin_keys(conn, row.tenant_id) <= 1
            if keep_last_admin and last_admin:
                return Revoked(Revocation.LAST_ADMIN, _info(row))
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_ms=now_ms))
            ended = conn.execute(delete(portal_sessions).where(portal_sessions.c.key_id == key_id))
            revoked = dataclasses.replace(_info(row), revoked_ms=now_ms)
            return Revoked(Revocation.REVOKED, revoked, int(ended.rowcount))

        return await self._db.write(tx)


def _admin_keys(conn: Connection, tenant_id: str) -> int:
    """The tenant's unrevoked admin keys (scopes are a short space-separated list)."""
    query = select(api_keys.c.scopes).where(
        api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_ms.is_(None)
    )
    return sum(1 for scopes in conn.execute(query).scalars() if ADMIN in scopes.split())

"""Tenants and API keys."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, insert, select

from tidings.domain.clock import now_ms
from tidings.domain.ids import new_id
from tidings.storage.records import ApiKey, Tenant
from tidings.storage.schema import api_keys, tenants
from tidings.storage.sql.database import Database


class SQLKeys:
    def __init__(self, db: Database) -> None:
        self._db = db

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

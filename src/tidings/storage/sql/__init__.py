"""The stores over SQLAlchemy Core, shared by the SQLite and PostgreSQL connectors."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.storage.interfaces import DeliveryQueue
from tidings.storage.sql.database import Database
from tidings.storage.sql.events import SQLEvents
from tidings.storage.sql.keys import SQLKeys
from tidings.storage.sql.reports import SQLReports
from tidings.storage.sql.retention import SQLRetention
from tidings.storage.sql.sessions import SQLSessions
from tidings.storage.sql.subscriptions import SQLSubscriptions


@dataclass
class SQLStore:
    """One SQL database seen through each storage interface (see ``interfaces.Store``)."""

    db: Database
    events: SQLEvents
    queue: DeliveryQueue
    keys: SQLKeys
    subscriptions: SQLSubscriptions
    reports: SQLReports
    retention: SQLRetention
    sessions: SQLSessions

    @classmethod
    def build(
        cls,
        db: Database,
        events: SQLEvents,
        queue: DeliveryQueue,
        retention: SQLRetention | None = None,
    ) -> SQLStore:
        """The shared stores on ``db``, with the connector's own hot-path pieces (and its
        own retention, if it has one)."""
        return cls(
            db,
            events,
            queue,
            SQLKeys(db),
            SQLSubscriptions(db),
            SQLReports(db),
            retention or SQLRetention(db),
            SQLSessions(db),
        )

    @property
    def apps(self) -> SQLEvents:
        return self.events

    async def migrate(self) -> None:
        await self.db.migrate()

    async def ping(self) -> None:
        await self.db.ping()

    async def close(self) -> None:
        await self.db.close()


__all__ = ["Database", "SQLStore"]

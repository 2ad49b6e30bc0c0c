"""Tables, as SQLAlchemy Core metadata shared by both databases.

Times are epoch milliseconds (BIGINT) so SQLite and PostgreSQL compare them the
same way; JSON documents are stored as text, exactly as delivered.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY.
Serial = BigInteger().with_variant(Integer(), "sqlite")

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(20), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger),
)

events = Table(
    "events",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("type", String(128), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64)),
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_events_idempotency"),
    Index("ix_events_tenant_seq", "tenant_id", "seq"),
    Index("ix_events_tenant_type_seq", "tenant_id", "type", "seq"),
    Index("ix_events_created", "created_ms"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", Text, nullable=False),
    Column("description", Text),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(20)),
    Column("secret_enc", Text, nullable=False),
    Column("previous_secret_enc", Text),
    Column("previous_secret_expires_ms", BigInteger),
    Column("public_key", Text),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("max_concurrency", Integer),
    Column("rate_limit", Float),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_subscriptions_tenant_seq", "tenant_id", "seq"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("tenant_id", String(40), nullable=False),
    Column("event_seq", BigInteger, ForeignKey("events.seq", ondelete="CASCADE"), nullable=False),
    Column("subscription_id", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("due_ms", BigInteger, nullable=False),
    Column("claim_token", String(40)),
    Column("last_status_code", Integer),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_deliveries_status_due", "status", "due_ms"),
    Index("ix_deliveries_subscription_status_event", "subscription_id", "status", "event_seq"),
    Index("ix_deliveries_tenant_status_event", "tenant_id", "status", "event_seq"),
    Index("ix_deliveries_event", "event_seq"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("delivery_id", BigInteger, nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("subscription_id", String(40), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("status_code", Integer),
    Column("elapsed_ms", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("error", Text),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_attempts_event", "event_id", "id"),
    Index("ix_attempts_subscription", "subscription_id", "id"),
    Index("ix_attempts_created", "created_ms"),
    Index("ix_attempts_tenant_created", "tenant_id", "created_ms", "outcome"),
)

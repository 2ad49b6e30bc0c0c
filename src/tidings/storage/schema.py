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
    false,
    text,
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
    # Changes with every change to which subscriptions of the tenant are filtered and
    # how: the fan-out's compiled filters are checked against it (see sql/filtering.py).
    Column("filters_version", BigInteger, nullable=False, server_default=text("0")),
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
    Index("ix_api_keys_tenant", "tenant_id"),
)

portal_sessions = Table(
    "portal_sessions",
    metadata,
    # The SHA-256 of the random token in the signed cookie: the table alone opens nothing.
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    # The admin key an operator signed in with; NULL for a consumer link's session.
    Column("key_id", String(40), ForeignKey("api_keys.id")),
    Column("can_manage", Boolean, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Index("ix_portal_sessions_key", "key_id"),
    Index("ix_portal_sessions_expires", "expires_ms"),
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
    Column("ordering_key", String(256)),
    Column("trace_context", String(64)),
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
    Column("ordering", String(10)),
    Column("signature_scheme", String(20), nullable=False, server_default="hmac"),
    Column("retry_policy", Text),
    Column("headers_enc", Text),
    Column("header_names", Text),
    Column("previous_public_key", Text),
    Column("propagate_trace", Boolean, nullable=False, server_default=false()),
    # The subscription's filter as compact JSON; NULL: every event of its types.
    Column("filter", Text),
    # Its JavaScript transformation; NULL: none.
    Column("transformation", Text),
    Column("disabled_ms", BigInteger),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_subscriptions_tenant_seq", "tenant_id", "seq"),
    # The fan-out's SQL part: a tenant's unfiltered subscriptions, however many filtered
    # ones it has (those are decided in Python, see sql/filtering.py).
    Index(
        "ix_subscriptions_unfiltered",
        "tenant_id",
        sqlite_where=text("filter IS NULL"),
        postgresql_where=text("filter IS NULL"),
    ),
)

CLAIMABLE = "status = 'pending' AND NOT blocked"
"""Deliveries a claim may take: pending and not queued behind an earlier one of their key.
Queries say it in exactly these words, so SQLite uses the partial index that does."""
UNFINISHED = "status IN ('pending', 'paused')"
PENDING = "status = 'pending'"
LEASED = "claim_token IS NOT NULL"


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
    # Set for subscriptions with ``ordering: fifo`` ('' for events without a key).
    Column("ordering_key", String(256)),
    # FIFO order within a key: the event's seq, or past the key's last for a re-queue.
    Column("position", BigInteger),
    # Waits behind an unfinished delivery of the same key (FIFO).
    Column("blocked", Boolean, nullable=False, server_default=false()),
    # Time spent paused, which does not count against the retry window.
    Column("paused_ms", BigInteger, nullable=False, server_default=text("0")),
    Index(
        "ix_deliveries_lane",
        "subscription_id",
        "due_ms",
        sqlite_where=text(CLAIMABLE),
        postgresql_where=text(CLAIMABLE),
    ),
    Index(
        "ix_deliveries_key",
        "subscription_id",
        "ordering_key",
        "position",
        "id",
        sqlite_where=text(f"ordering_key IS NOT NULL AND {UNFINISHED}"),
        postgresql_where=text(f"ordering_key IS NOT NULL AND {UNFINISHED}"),
    ),
    Index(
        "ix_deliveries_leased",
        "subscription_id",
        "due_ms",
        sqlite_where=text(LEASED),
        postgresql_where=text(LEASED),
    ),
    Index("ix_deliveries_subscription_status_event", "subscription_id", "status", "event_seq"),
    Index("ix_deliveries_tenant_status_event", "tenant_id", "status", "event_seq"),
    Index("ix_deliveries_event", "event_seq"),
    # Retention's question: which events still have pending deliveries (few rows).
    Index(
        "ix_deliveries_pending",
        "event_seq",
        sqlite_where=text(PENDING),
        postgresql_where=text(PENDING),
    ),
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

lanes = Table(
    "lanes",
    metadata,
    Column(
        "subscription_id",
        String(40),
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tenant_id", String(40), nullable=False),
    # When the subscription may next have a delivery to claim; NULL: nothing pending.
    Column("next_due_ms", BigInteger),
    # When a claim last took from it: the least recently served lanes are looked at first.
    Column("served_ms", BigInteger, nullable=False, server_default=text("0")),
    # The rate limit's token bucket, shared by every worker.
    Column("tokens", Float),
    Column("tokens_ms", BigInteger),
    Index("ix_lanes_due", "next_due_ms"),
)

lane_stats = Table(
    "lane_stats",
    metadata,
    Column("worker_id", String(40), primary_key=True),
    Column("subscription_id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("in_flight", Integer, nullable=False),
    Column("slot_limit", Integer, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_lane_stats_subscription", "subscription_id"),
)

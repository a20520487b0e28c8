"""The database schema: SQLAlchemy 2 typed ORM models. Migrations live in tracker/migrations (Alembic).

Observations are stored run-length encoded: a row is a *span* of consecutive checks of one target that saw
exactly the same thing (same status, reason and values, compared by `fingerprint`). An unchanged check
only moves `last_seen_at`/`last_slot` and bumps `seen_count`, so a year of four checks a day of 50,000
products, 5% changing daily, is about a million rows instead of 73 million, and the history stays
faithful: every check is accounted for in `seen_count`. Idempotency of "check target T for slot S" is a
compare-and-set on `targets.last_slot`, done in the same transaction as the observation and its changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend; naive datetimes are refused, not guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Rivalwatch stores only timezone-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """Exact decimals that keep their scale (129.90 stays 129.90): unconstrained NUMERIC on PostgreSQL,
    text on SQLite (whose NUMERIC affinity would go through a float)."""

    impl = Numeric(asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)


# PostgreSQL's fillfactor of the tables every check updates (see Target; migration 0005 sets it on older
# databases). Set by `_set_fillfactor` once create_all made the table rather than by a `postgresql_with`
# table argument: a dialect argument makes SQLAlchemy import its PostgreSQL dialect with the models (~50 ms
# of every `tracker` start, on SQLite too).
FILLFACTOR = {"targets": 50, "observations": 90}


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), Decimal: Money(), dict[str, Any]: JSON, list[Any]: JSON}


class Rival(Base):
    __tablename__ = "rivals"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    domain: Mapped[str | None] = mapped_column(String(253))
    own: Mapped[bool] = mapped_column(Boolean, default=False)

    targets: Mapped[list[Target]] = relationship(back_populates="rival")


class Target(Base):
    """Something checked on a schedule: a product page, a listing page, a keyword on an engine, an SEO page."""

    __tablename__ = "targets"
    # Every check updates its target's row (last_slot, page_digest). On PostgreSQL, pages kept half empty let
    # that new row version stay in its page without touching any index (a HOT update): bench/data_scale.py's
    # diff pass on PostgreSQL ~1.5x faster, its WAL a fifth. The table is small (one row per target).
    __table_args__ = (UniqueConstraint("kind", "key", name="uq_targets_kind_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rival_id: Mapped[int | None] = mapped_column(ForeignKey("rivals.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))          # product | listing | serp | seo
    key: Mapped[str] = mapped_column(String(1000))         # the URL, or "engine|locale|device|term"
    url: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(String(500))
    match_key: Mapped[str | None] = mapped_column(String(200), index=True)
    group: Mapped[str | None] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # everything a worker needs to check it
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_slot: Mapped[datetime | None]                     # compare-and-set: the newest slot recorded
    next_due_at: Mapped[datetime | None]
    fail_streak: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None]
    # Digest of the page (and extractor) behind the latest observation, when that page was read over HTTP
    # and gave an `ok` observation: the same page fetched again extends the observation unparsed.
    page_digest: Mapped[str | None] = mapped_column(String(32))

    rival: Mapped[Rival | None] = relationship(back_populates="targets")


class Run(Base):
    """One pass over targets (a `tracker check`, a scheduled slot, a demo day)."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    slot: Mapped[datetime]
    trigger: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Observation(Base):
    """A span of consecutive identical checks of one target (see the module docstring)."""

    __tablename__ = "observations"
    # The latest span of each target is extended by most checks: room for it in its page (see Target).
    __table_args__ = (Index("ix_observations_target_id_id", "target_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))        # ok | failed | blocked | unextractable
    reason: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(32))
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    first_slot: Mapped[datetime]
    last_slot: Mapped[datetime]
    seen_count: Mapped[int] = mapped_column(Integer, default=1)

    price: Mapped[Decimal | None]
    regular_price: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    availability: Mapped[str | None] = mapped_column(String(32))
    promotions: Mapped[list[Any] | None] = mapped_column(JSON)
    title: Mapped[str | None] = mapped_column(Text)
    sku: Mapped[str | None] = mapped_column(String(200))
    gtin: Mapped[str | None] = mapped_column(String(20))
    rank: Mapped[int | None] = mapped_column(Integer)      # serp: the own domain's best position
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # kind-specific: listing items, serp, seo, extras


class Change(Base):
    """One thing that changed, found by the diff engine; reported once (report_id set when it is)."""

    __tablename__ = "changes"
    __table_args__ = (Index("ix_changes_unreported", "report_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"), index=True)
    observation_id: Mapped[int | None] = mapped_column(ForeignKey("observations.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(32))
    detected_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))


class OutboxMessage(Base):
    """A report or alert, stored before sending; sent exactly once (marked sent after the server accepted)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))          # digest | alert
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    recipients: Mapped[list[Any]] = mapped_column(JSON, default=list)
    mime: Mapped[bytes] = mapped_column(LargeBinary)       # the whole message, identical on every retry
    html: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sending | sent | written
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]


class Lease(Base):
    """A named lease: only the holder of `scheduler` runs the scheduler; others wait as standbys."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


# Scale-out mode (tracker.queue): the slot each target is due for and when it was sent (migration 0003).
dispatches = Table(
    "dispatches", Base.metadata,
    Column("target_id", Integer, ForeignKey("targets.id", ondelete="CASCADE"), primary_key=True),
    Column("slot", UTCDateTime(timezone=True), nullable=False),
    Column("queue", String(16), nullable=False),
    Column("due_at", UTCDateTime(timezone=True), nullable=False, index=True),
    Column("sent_at", UTCDateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("message_id", String(64)),
)


def _set_fillfactor(table: Any, connection: Any, **_kw: Any) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"ALTER TABLE {table.name} SET (fillfactor = {int(FILLFACTOR[table.name])})")


for _name in FILLFACTOR:
    event.listen(Base.metadata.tables[_name], "after_create", _set_fillfactor)

"""A lease in the database: one active scheduler per database, others wait as standbys.

Works the same on SQLite and PostgreSQL: a row per lease name with a holder and an expiry; the holder
renews it well before it expires, and a standby takes it over once it has expired (the holder died).
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from tracker.db import Database
from tracker.models import Lease


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DbLease:
    def __init__(self, db: Database, name: str = "scheduler", *, ttl_s: float = 30, holder: str | None = None):
        self.db = db
        self.name = name
        self.ttl = timedelta(seconds=ttl_s)
        self.holder = holder or holder_id()

    def try_acquire(self, now: datetime | None = None) -> bool:
        """Take or renew the lease; True when this holder has it until now + ttl."""
        now = now or datetime.now(UTC)
        expires = now + self.ttl
        with self.db.session() as session:
            taken = session.execute(
                update(Lease).where(Lease.name == self.name,
                                    or_(Lease.holder == self.holder, Lease.expires_at < now))
                .values(holder=self.holder, expires_at=expires)).rowcount
            if taken:
                return True
            if session.scalar(select(Lease.name).where(Lease.name == self.name)) is not None:
                return False
        try:
            with self.db.session() as session:
                session.add(Lease(name=self.name, holder=self.holder, expires_at=expires))
            return True
        except IntegrityError:
            return False  # another process inserted it first

    def release(self) -> None:
        with self.db.session() as session:
            session.execute(update(Lease).where(Lease.name == self.name, Lease.holder == self.holder)
                            .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC)))

    def current_holder(self) -> str | None:
        with self.db.session() as session:
            row = session.get(Lease, self.name)
            if row is None or row.expires_at < datetime.now(UTC):
                return None
            return row.holder

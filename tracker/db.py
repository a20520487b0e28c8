"""Engines, sessions and migrations. SQLite (WAL) by default, PostgreSQL through psycopg 3."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from tracker.errors import DatabaseError

if TYPE_CHECKING:  # alembic is imported only when a migration is due (~0.1 s of every start otherwise)
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration's revision. A database stamped with it needs no migration, so a start-up reads one
# row instead of loading alembic. tests/test_db.py checks that it names alembic's head.
HEAD_REVISION = "0005_pg_fillfactor"


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here; SQLite paths stay as given."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def default_retries() -> int:
    """Connection attempts after the first: $TRACKER_DB_CONNECT_RETRIES, else 5."""
    return max(0, int(_env_number("TRACKER_DB_CONNECT_RETRIES", 5)))


def default_retry_delay() -> float:
    """First pause between connection attempts (doubling, capped at 16x): $TRACKER_DB_RETRY_DELAY_S, else 1 s."""
    return max(0.0, _env_number("TRACKER_DB_RETRY_DELAY_S", 1.0))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def make_engine(url: str, *, connect_retries: int | None = None, retry_delay_s: float | None = None) -> Engine:
    """An Engine with the pragmas we rely on, after checking the database answers (with retries)."""
    connect_retries = default_retries() if connect_retries is None else connect_retries
    retry_delay_s = default_retry_delay() if retry_delay_s is None else retry_delay_s
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"database URL is not valid: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create the folder of the SQLite database {database}: "
                                    f"{exc.strerror or exc}") from None
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                               connect_args={"connect_timeout": 10})
    last: Exception | None = None
    for attempt in range(connect_retries + 1):
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return engine
        except (OperationalError, InterfaceError) as exc:
            last = exc
            if attempt < connect_retries:
                time.sleep(retry_delay_s * (2 ** min(attempt, 4)))
    engine.dispose()
    raise DatabaseError(f"cannot reach the database at {parsed.render_as_string(hide_password=True)}: "
                        f"{_first_line(last) if last else 'no answer'}; is it running?")


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def schema_is_current(engine: Engine) -> bool:
    """True when the database is stamped with HEAD_REVISION (one query; no alembic import)."""
    try:
        with engine.connect() as conn:
            versions = {v for (v,) in conn.execute(text("SELECT version_num FROM alembic_version"))}
    except (OperationalError, ProgrammingError):  # no alembic_version table yet: a new database
        return False
    return versions == {HEAD_REVISION}


def upgrade(engine: Engine) -> None:
    """Apply all migrations (idempotent; run at every start). Two processes starting at once on the same
    database migrate one after the other: a transaction-level advisory lock on PostgreSQL, a lock file
    beside the database file on SQLite. A database already at HEAD_REVISION costs one query."""
    if schema_is_current(engine):
        return
    database = engine.url.database or ""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock file (start one process first there)
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None and engine.dialect.name == "sqlite" and database and database != ":memory:":
        with open(f"{database}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                _upgrade(engine)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    _upgrade(engine)


def _upgrade(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two processes starting at once must not both run the migrations.
            conn.execute(text("SELECT pg_advisory_xact_lock(7411001)"))
        if _create_new(conn):
            return
        from alembic import command

        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _create_new(conn: Connection) -> bool:
    """A database without any table gets the models' schema and alembic's stamp of HEAD_REVISION, as
    alembic's cookbook advises, instead of replaying every migration (loading alembic, mako and pygments
    cost more than the rest of a short first run). tests/test_db.py checks that both ways give one schema.
    """
    if inspect(conn).get_table_names():
        return False
    import tracker.models_catalog  # noqa: F401 - registers its tables
    from tracker.models import Base

    Base.metadata.create_all(conn)
    conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                      "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": HEAD_REVISION})
    return True


class Database:
    """An engine plus a session factory; `Database.open(url)` connects and migrates."""

    def __init__(self, engine: Engine, *, retries: int | None = None, retry_delay_s: float | None = None):
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.retries = default_retries() if retries is None else retries
        self.retry_delay_s = default_retry_delay() if retry_delay_s is None else retry_delay_s

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, connect_retries: int | None = None) -> "Database":
        engine = make_engine(url, connect_retries=connect_retries)
        if migrate:
            try:
                upgrade(engine)
            except (OperationalError, InterfaceError) as exc:
                engine.dispose()
                raise DatabaseError(f"cannot migrate the database at {_where(engine)}: {_first_line(exc)}"
                                    ) from None
        return cls(engine, retries=connect_retries)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error.

        The connection is checked out first, with retries and backoff while the database is unreachable
        (nothing has run yet, so retrying is safe); losing it later raises DatabaseError, a clear message
        instead of a driver traceback, and the transaction is rolled back as a whole."""
        session = self._begin()
        try:
            with session:
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
        except (OperationalError, InterfaceError) as exc:
            raise DatabaseError(f"lost the database at {_where(self.engine)}: {_first_line(exc)}") from None

    def _begin(self) -> Session:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            session = self.sessions()
            try:
                session.begin()
                session.connection()
                return session
            except (OperationalError, InterfaceError) as exc:
                last = exc
                session.close()
                if attempt < self.retries:
                    time.sleep(self.retry_delay_s * (2 ** min(attempt, 4)))
        raise DatabaseError(f"cannot reach the database at {_where(self.engine)}: "
                            f"{_first_line(last) if last else 'no answer'}; is it running?")

    def close(self) -> None:
        self.engine.dispose()

"""The idempotent write, on SQLite and PostgreSQL: spans, slots, changes, health, money and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import func, select

from tracker.db import Database
from tracker.diff import Rules
from tracker.models import Change, Observation, Rival, Target
from tracker.store import Observed, record_check

T0 = datetime(2026, 3, 28, 7, 0, tzinfo=UTC)


@pytest.fixture
def db(db_url):
    database = Database.open(db_url)
    yield database
    database.close()


@pytest.fixture
def target_id(db):
    with db.session() as s:
        rival = Rival(name="Rival One")
        s.add(rival)
        s.flush()
        target = Target(rival_id=rival.id, kind="product", key="https://r1.example/p/1",
                        url="https://r1.example/p/1", spec={}, fail_streak=0)
        s.add(target)
        s.flush()
        return target.id


def record(db, target_id, hours, observed, rules=Rules()):
    with db.session() as s:
        return record_check(s, target_id, T0 + timedelta(hours=hours), observed,
                            now=T0 + timedelta(hours=hours), rules=rules)


def ok(price, **kw):
    return Observed("ok", price=D(price), currency="EUR", **kw)


def test_same_slot_twice_writes_once(db, target_id):
    first = record(db, target_id, 0, ok("10.00"))
    second = record(db, target_id, 0, ok("9.00"))
    assert not first.duplicate and second.duplicate
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Observation)) == 1
        assert s.scalar(select(func.count()).select_from(Change)) == 0


def test_an_older_slot_arriving_late_is_ignored(db, target_id):
    record(db, target_id, 10, ok("10.00"))
    assert record(db, target_id, 5, ok("1.00")).duplicate


def test_unchanged_checks_extend_one_span(db, target_id):
    for hour in range(5):
        record(db, target_id, hour, ok("10.00"))
    with db.session() as s:
        (span,) = s.scalars(select(Observation)).all()
        assert span.seen_count == 5
        assert span.first_slot == T0 and span.last_slot == T0 + timedelta(hours=4)


def test_price_move_writes_a_new_span_and_one_change(db, target_id):
    record(db, target_id, 0, ok("129.90"))
    result = record(db, target_id, 1, ok("114.90"))
    assert [c.kind for c in result.changes] == ["price_down"]
    with db.session() as s:
        change = s.scalars(select(Change)).one()
        assert change.data["old"] == "129.90" and change.data["pct"] == "-11.5"


def test_money_is_decimal_and_times_are_aware_utc(db, target_id):
    record(db, target_id, 0, ok("1299.99", regular_price=D("1499.00")))
    with db.session() as s:
        obs = s.scalars(select(Observation)).one()
    assert obs.price == D("1299.99") and isinstance(obs.price, D)
    assert obs.regular_price == D("1499")
    assert obs.first_seen_at.tzinfo is not None and obs.first_seen_at.utcoffset() == timedelta(0)


def test_failed_fetch_is_recorded_as_failed_and_never_as_a_price_change(db, target_id):
    record(db, target_id, 0, ok("50.00"))
    failed = record(db, target_id, 1, Observed("failed", "HTTP 500"))
    assert failed.changes == ()
    back = record(db, target_id, 2, ok("50.00"))
    assert back.changes == ()
    with db.session() as s:
        statuses = [o.status for o in s.scalars(select(Observation).order_by(Observation.id))]
        assert statuses == ["ok", "failed", "ok"]
        assert s.scalar(select(func.count()).select_from(Change)) == 0


def test_price_after_an_outage_is_compared_with_the_last_good_one(db, target_id):
    record(db, target_id, 0, ok("50.00"))
    record(db, target_id, 1, Observed("blocked", "captcha: test"))
    result = record(db, target_id, 2, ok("45.00"))
    assert [(c.kind, c.data["old"]) for c in result.changes] == [("price_down", "50.00")]


def test_failing_n_runs_in_a_row_is_one_health_change(db, target_id):
    rules = Rules(health_after=3)
    record(db, target_id, 0, ok("50.00"), rules)
    for hour in range(1, 8):
        record(db, target_id, hour, Observed("failed", "connection refused"), rules)
    record(db, target_id, 8, ok("50.00"), rules)
    with db.session() as s:
        kinds = [c.kind for c in s.scalars(select(Change).order_by(Change.id))]
        failed_span = s.scalars(select(Observation).where(Observation.status == "failed")).one()
    assert kinds == ["health_failed", "health_recovered"]
    assert failed_span.seen_count == 7


def test_naive_datetimes_are_refused(db, target_id):
    with pytest.raises(Exception, match="naive datetime"):
        with db.session() as s:
            record_check(s, target_id, datetime(2026, 1, 1), ok("1"), now=datetime.now(UTC))


def test_rating_and_review_changes_come_from_the_stored_extras(db, target_id):
    record(db, target_id, 0, ok("10.00", data={"rating": "4.7", "review_count": 120}))
    result = record(db, target_id, 1, ok("10.00", data={"rating": "4.4", "review_count": 180}))
    assert sorted(c.kind for c in result.changes) == ["rating_dropped", "review_surge"]


def test_driver_errors_of_the_direct_statements_surface_as_sqlalchemy_errors(db, target_id):
    """The unchanged-check statements run on the DBAPI cursor; their errors must still be SQLAlchemy's
    (the pipeline retries on sqlalchemy.exc.OperationalError, Database.session wraps them)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from tracker.errors import DatabaseError

    # SQLite: sqlite3.OperationalError -> sqlalchemy OperationalError -> Database.session's DatabaseError;
    # PostgreSQL: psycopg's UndefinedTable -> sqlalchemy ProgrammingError. A raw driver error is neither.
    with pytest.raises((DBAPIError, DatabaseError), match="observations"):
        with db.session() as s:  # rolled back: the table is back afterwards
            s.execute(text("ALTER TABLE observations RENAME TO observations_gone"))
            record_check(s, target_id, T0, ok("10.00"), now=T0)  # the claim works, the extension fails


def test_the_direct_statements_bind_times_per_dialect(db, target_id):
    """The same datetime objects recorded on two databases of different dialects in one process."""
    for hours in range(3):
        record(db, target_id, hours, ok("10.00"))
    with db.session() as s:
        (obs,) = s.scalars(select(Observation)).all()
    assert (obs.seen_count, obs.first_slot, obs.last_slot) == (3, T0, T0 + timedelta(hours=2))
    assert obs.last_slot.tzinfo is not None


def test_two_deliveries_racing_for_one_slot_write_once(db, target_id):
    """Two transactions record the same (target, slot) at once: the second waits for the first's claim
    and then finds the slot taken (on PostgreSQL claim and extension are one statement)."""
    import threading

    record(db, target_id, 0, ok("10.00"))
    first = db.session()
    s1 = first.__enter__()
    assert not record_check(s1, target_id, T0 + timedelta(hours=1), ok("10.00"), now=T0).duplicate
    outcome = {}

    def second() -> None:
        outcome["second"] = record(db, target_id, 1, ok("10.00"))

    t = threading.Thread(target=second)
    t.start()
    t.join(1.0)
    assert t.is_alive()  # waiting for the first transaction
    first.__exit__(None, None, None)  # commit
    t.join(30)
    assert outcome["second"].duplicate
    with db.session() as s:
        (obs,) = s.scalars(select(Observation)).all()
    assert obs.seen_count == 2

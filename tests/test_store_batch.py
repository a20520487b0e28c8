"""record_checks, the batched idempotent write, on SQLite and PostgreSQL: for any batch it leaves the database
exactly as record_check for each item in order would (observations, changes, targets, row ids included) and
returns the same Recorded values; a batch delivered twice, or by two workers at once, is recorded once."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import TypeVar

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tracker.db import Database
from tracker.diff import Rules
from tracker.models import Change, Observation, Rival, Target
from tracker.store import CheckItem, Observed, PageChanged, Recorded, record_check, record_checks

T0 = datetime(2026, 4, 6, 7, 0, tzinfo=UTC)
RULES = Rules(health_after=2)
MISSING = 999_999   # a target id that does not exist
T = TypeVar("T")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_dbs(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """Two empty databases of the same dialect: one written in batches, one check at a time."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path / 'batched.db'}", f"sqlite:///{tmp_path / 'one_by_one.db'}"]
    else:
        urls = [request.getfixturevalue("pg_url"), request.getfixturevalue("pg_url2")]
    dbs = [Database.open(url) for url in urls]
    yield dbs
    for db in dbs:
        db.close()


@pytest.fixture
def db(two_dbs):  # type: ignore[no-untyped-def]
    return two_dbs[0]


def add_targets(db: Database, first_id: int, count: int) -> list[int]:
    """`count` product targets with ids from `first_id` (the same ids in every database)."""
    with db.session() as s:
        if s.get(Rival, 1) is None:
            s.add(Rival(id=1, name="Rival One"))
            s.flush()
        for tid in range(first_id, first_id + count):
            url = f"https://r1.example/p/{tid}"
            s.add(Target(id=tid, rival_id=1, kind="product", key=url, url=url, spec={}, fail_streak=0))
    return list(range(first_id, first_id + count))


def dump(db: Database) -> dict[str, list[tuple]]:
    """Every row record_check writes, every column."""
    with db.session() as s:
        conn = s.connection()
        return {name: [tuple(row) for row in conn.execute(select(table).order_by(table.c.id))]
                for name, table in (("observations", Observation.__table__), ("changes", Change.__table__))} | {
            "targets": [tuple(row) for row in conn.execute(
                select(Target.id, Target.last_slot, Target.fail_streak, Target.failing_since, Target.page_digest)
                .order_by(Target.id))]}


def restart_ids(db: Database) -> None:
    """After a rollback, PostgreSQL's sequences keep the ids the transaction drew (SQLite's rowids do not):
    restart them after the highest id, so that the ids two databases give next depend only on their rows."""
    if db.dialect == "postgresql":
        with db.session() as s:
            for table in ("observations", "changes"):
                s.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"coalesce(max(id), 0) + 1, false) FROM {table}"))


def written(db: Database, write: Callable[[Session], list[Recorded]]) -> tuple[str, object]:
    """What a batch's write gives: its Recorded values, or the PageChanged it raised (and rolled back)."""
    try:
        with db.session() as s:
            return "recorded", write(s)
    except PageChanged as exc:
        return "page changed", str(exc)


def batched(db: Database, items: list[CheckItem], now: datetime) -> tuple[str, object]:
    return written(db, lambda s: record_checks(s, items, now=now, rules=RULES))


def one_by_one(db: Database, items: list[CheckItem], now: datetime) -> tuple[str, object]:
    return written(db, lambda s: [record_check(s, t, slot, observed, now=at or now, rules=RULES)
                                  for t, slot, observed, at in items])


def ok(price: str, digest: str | None = None, **kw) -> Observed:  # type: ignore[no-untyped-def]
    return Observed("ok", price=D(price), currency="EUR", title="Kettle", page_digest=digest, **kw)


def digests(db: Database) -> dict[int, str | None]:
    with db.session() as s:
        return dict(s.execute(select(Target.id, Target.page_digest)).all())


def random_batch(rng: random.Random, round_: int, targets: list[int], digest_of: dict[int, str | None],
                 ) -> list[CheckItem]:
    """A batch of round `round_`'s slot: unchanged and changed prices, failures of every kind, pages seen
    before (with the target's digest, now and then a stale one), late and repeated slots, repeated targets,
    a target that does not exist; some items with their own time, the others the batch's."""
    slot = T0 + timedelta(hours=round_)
    items = []
    for _ in range(rng.randint(1, 14)):
        tid = MISSING if rng.random() < 0.03 else rng.choice(targets)
        when = rng.choices([slot, slot - timedelta(hours=1), slot + timedelta(minutes=30)], [8, 1, 1])[0]
        kind = rng.choices(["ok", "same page", "failed", "blocked", "unextractable"], [10, 3, 3, 1, 1])[0]
        if kind == "ok":
            observed = ok(rng.choice(["10.00", "10.00", "10.00", "12.50"]),
                          rng.choice([None, "a" * 32, "b" * 32]),
                          data=rng.choice([{}, {"rating": "4.5", "review_count": 10}]))
        elif kind == "same page":
            digest = digest_of.get(tid)
            if digest is None or rng.random() < 0.1:
                digest = "f" * 32      # not the target's page: PageChanged unless the slot is taken
            observed = Observed.unchanged_page(digest)
        else:
            observed = Observed(kind, rng.choice(["HTTP 500", "timeout"]))
        at = rng.choice([None, when + timedelta(seconds=rng.randint(1, 300))])
        items.append(CheckItem(tid, when, observed, at))
    return items


def test_a_batch_records_exactly_what_one_check_at_a_time_records(two_dbs):
    """Random batches over a few targets, 120 rounds: each round's results and the whole database after it
    are the same whether the batch went through record_checks or record_check item by item."""
    batch_db, single_db = two_dbs
    rng = random.Random(20260406)
    targets: list[int] = []
    seen: Counter[str] = Counter()
    for round_ in range(120):
        if round_ % 30 == 0:      # brand-new targets join now and then
            for db in two_dbs:
                new = add_targets(db, 1 + len(targets), 4)
            targets += new
        items = random_batch(rng, round_, targets, digests(single_db))
        now = T0 + timedelta(hours=round_, minutes=1)
        expected = one_by_one(single_db, items, now)
        assert batched(batch_db, items, now) == expected, f"round {round_}: {items}"
        assert dump(batch_db) == dump(single_db), f"round {round_}: {items}"

        # What the rounds covered (checked at the end, so that this test is known to exercise each case).
        if expected[0] == "page changed":
            seen["page changed"] += 1
            for db in two_dbs:   # each path stopped elsewhere before the rollback: the same ids from here on
                restart_ids(db)
            continue
        if len({item.target_id for item in items}) < len(items):
            seen["repeated target"] += 1
        for item, recorded in zip(items, expected[1], strict=True):
            assert isinstance(recorded, Recorded)
            if recorded.duplicate:
                seen["duplicate"] += 1
                continue
            seen["new span" if recorded.new_span else "same page" if item.observed.same_page else "extended"] += 1
            for change in recorded.changes:
                seen["extended with " + change.kind if not recorded.new_span else change.kind] += 1
    for case in ("duplicate", "extended", "same page", "new span", "repeated target", "page changed",
                 "price_up", "price_down", "health_recovered", "extended with health_failed"):
        assert seen[case] > 0, (case, seen)


def test_a_mixed_batch_of_every_case(two_dbs):
    """One batch with each case named: unchanged, same page, price moved, failure after ok, the failure that
    reaches `health_after` (an extended span that still writes a change), recovery, a slot taken before,
    a slot taken earlier in the batch, a target seen twice, a brand-new target, a missing one."""
    batch_db, single_db = two_dbs
    digest = "d" * 32
    history = {1: [ok("10.00")], 2: [ok("20.00", digest)], 3: [ok("30.00")], 4: [ok("40.00")],
               5: [ok("50.00"), Observed("failed", "HTTP 500"), Observed("failed", "HTTP 500")],
               6: [ok("60.00"), Observed("failed", "timeout")], 7: [ok("70.00")]}
    for db in two_dbs:
        add_targets(db, 1, 8)
        for tid, observations in history.items():
            with db.session() as s:
                for hour, observed in enumerate(observations):
                    record_check(s, tid, T0 + timedelta(hours=hour), observed, now=T0 + timedelta(hours=hour),
                                 rules=RULES)
        with db.session() as s:  # target 7 already has the pass's slot
            record_check(s, 7, T0 + timedelta(hours=5), ok("70.00"), now=T0, rules=RULES)
    slot, now = T0 + timedelta(hours=5), T0 + timedelta(hours=5, seconds=40)
    items = [CheckItem(1, slot, ok("10.00")),                              # unchanged
             CheckItem(2, slot, Observed.unchanged_page(digest)),          # the same page
             CheckItem(3, slot, ok("27.00")),                              # price down
             CheckItem(4, slot, Observed("failed", "HTTP 503")),           # failure after ok
             CheckItem(5, slot, ok("55.00")),                              # recovery, and a price up
             CheckItem(6, slot, Observed("failed", "timeout")),            # reaches health_after
             CheckItem(7, slot, ok("71.00")),                              # slot taken before
             CheckItem(1, slot, ok("11.00")),                              # slot taken earlier in the batch
             CheckItem(8, slot, ok("80.00")),                              # brand-new target
             CheckItem(MISSING, slot, ok("1.00")),                         # no such target
             CheckItem(3, slot + timedelta(minutes=30), ok("27.00"), now + timedelta(minutes=30))]
    expected = one_by_one(single_db, items, now)
    assert batched(batch_db, items, now) == expected
    assert dump(batch_db) == dump(single_db)
    recorded = expected[1]
    assert [(r.duplicate, r.new_span, [c.kind for c in r.changes]) for r in recorded] == [
        (False, False, []), (False, False, []), (False, True, ["price_down"]), (False, True, []),
        (False, True, ["price_up", "health_recovered"]), (False, False, ["health_failed"]), (True, False, []),
        (True, False, []), (False, True, []), (True, False, []), (False, False, [])]
    with batch_db.session() as s:
        streaks = dict(s.execute(select(Target.id, Target.fail_streak)).all())
        last = s.scalars(select(Observation).where(Observation.target_id == 3)
                         .order_by(Observation.id.desc())).first()
    assert streaks == {1: 0, 2: 0, 3: 0, 4: 1, 5: 0, 6: 2, 7: 0, 8: 0}
    assert (last.price, last.seen_count, last.last_slot) == (D("27.00"), 2, slot + timedelta(minutes=30))


def test_a_batch_delivered_twice_is_recorded_once(db):
    ids = add_targets(db, 1, 6)
    slot = T0 + timedelta(hours=1)
    with db.session() as s:
        record_checks(s, [CheckItem(t, T0, ok("10.00")) for t in ids], now=T0, rules=RULES)
    items = [CheckItem(t, slot, ok("10.00" if t % 2 else "9.00")) for t in ids]
    with db.session() as s:
        first = record_checks(s, items, now=slot, rules=RULES)
    before = dump(db)
    with db.session() as s:
        again = record_checks(s, items, now=slot + timedelta(minutes=5), rules=RULES)
    assert [r.duplicate for r in first] == [False] * 6
    assert again == [Recorded(duplicate=True)] * 6
    assert dump(db) == before


def concurrently(db: Database, first: Callable[[Session], object], second: Callable[[Session], T]) -> tuple[object, T]:
    """Two workers: `first` writes in a transaction kept open while `second` starts in another thread; `second`
    must wait for it, and goes on once `first` commits. What each returned."""
    transaction = db.session()
    first_done = first(transaction.__enter__())
    outcome: dict[str, T] = {}

    def run() -> None:
        with db.session() as session:
            outcome["second"] = second(session)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(1.0)
    assert worker.is_alive()  # waiting for the first transaction's rows
    transaction.__exit__(None, None, None)  # commit
    worker.join(30)
    return first_done, outcome["second"]


def test_two_workers_recording_the_same_batch_at_once_record_it_once(db):
    """Worker 1's batch claims the slots and holds them (not committed yet); worker 2's batch, the same
    checks in another order plus one of its own, waits for those rows, then finds them taken and records
    only its own check. Each check's span is extended once."""
    ids = add_targets(db, 1, 5)
    with db.session() as s:
        record_checks(s, [CheckItem(t, T0, ok("10.00")) for t in ids], now=T0, rules=RULES)
    slot = T0 + timedelta(hours=1)
    mine, theirs = concurrently(
        db, lambda s: record_checks(s, [CheckItem(t, slot, ok("10.00")) for t in ids[:4]], now=slot, rules=RULES),
        lambda s: record_checks(s, [CheckItem(t, slot, ok("10.00")) for t in reversed(ids)], now=slot, rules=RULES))
    assert [r.duplicate for r in mine] == [False] * 4
    assert [r.duplicate for r in theirs] == [False, True, True, True, True]  # only target 5 is its own
    with db.session() as s:
        counts = dict(s.execute(select(Observation.target_id, Observation.seen_count)).all())
    assert counts == {t: 2 for t in ids}


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "one check"])
def test_a_check_that_waited_for_a_newer_span_does_not_extend_an_older_one(db, batch):
    """Worker 1 records slot 1 (the price moved: a new span) and holds it; worker 2, a batch or a lone check
    for slot 2, sees the old price again and waits for the target. Once worker 1 commits, worker 2 must
    compare with the span worker 1 wrote (a new span and a price change), not extend the span it would have
    seen before waiting."""
    add_targets(db, 1, 2)
    with db.session() as s:
        record_checks(s, [CheckItem(t, T0, ok("10.00")) for t in (1, 2)], now=T0, rules=RULES)
    slot = T0 + timedelta(hours=2)

    def second(s: Session) -> list[Recorded]:
        if batch:
            return record_checks(s, [CheckItem(t, slot, ok("10.00")) for t in (1, 2)], now=slot, rules=RULES)
        return [record_check(s, 1, slot, ok("10.00"), now=slot, rules=RULES)]

    moved, recorded = concurrently(
        db, lambda s: record_check(s, 1, T0 + timedelta(hours=1), ok("12.00"), now=T0, rules=RULES), second)
    assert moved.new_span
    target_1 = recorded[0]
    assert target_1.new_span and [(c.kind, c.data["old"]) for c in target_1.changes] == [("price_down", "12.00")]
    if batch:
        assert not recorded[1].new_span and recorded[1].changes == ()
    with db.session() as s:
        spans = s.execute(select(Observation.price, Observation.first_slot, Observation.last_slot)
                          .where(Observation.target_id == 1).order_by(Observation.id)).all()
    assert spans == [(D("10.00"), T0, T0), (D("12.00"), T0 + timedelta(hours=1), T0 + timedelta(hours=1)),
                     (D("10.00"), slot, slot)]


def test_group_commit_records_runs_of_check_writes_together_and_other_writes_in_their_turn(two_dbs, monkeypatch):
    """run_writes (the pipeline's group commit): consecutive CheckWrites go to record_checks together, any
    other unit of work runs in its turn, and each caller gets what its write alone would have given."""
    import tracker.store as store

    batch_db, single_db = two_dbs
    for db in two_dbs:
        add_targets(db, 1, 3)
    slot = T0 + timedelta(hours=1)
    calls: list[list[int]] = []
    real = store.record_checks

    def spy(session, items, **kw):  # type: ignore[no-untyped-def]
        calls.append([item.target_id for item in items])
        return real(session, items, **kw)

    def rename(session: Session) -> str:   # not a check: runs between the two runs of checks
        session.execute(Target.__table__.update().where(Target.id == 2).values(name="renamed"))
        return "renamed"

    def outcome(recorded: Recorded) -> tuple[bool, bool]:
        return recorded.duplicate, recorded.new_span

    writes = [store.CheckWrite(CheckItem(1, slot, ok("10.00"), slot), outcome, RULES),
              store.CheckWrite(CheckItem(2, slot, ok("20.00"), slot), outcome, RULES), rename,
              store.CheckWrite(CheckItem(3, slot, ok("30.00"), slot), outcome, RULES),
              store.CheckWrite(CheckItem(1, slot, ok("10.00"), slot), outcome, RULES)]
    monkeypatch.setattr(store, "record_checks", spy)
    with batch_db.session() as s:
        values = store.run_writes(s, writes)
    with single_db.session() as s:
        alone = [write(s) for write in writes]
    assert calls == [[1, 2], [3, 1]]
    assert values == alone == [(False, True), (False, True), "renamed", (False, True), (True, False)]
    assert dump(batch_db) == dump(single_db)

"""The scheduler under faults: two `tracker run` on one database (one active, the other a standby that
takes over when the first is SIGKILLed), downtime over several runs (one catch-up run, not a burst, not
none), and DST changes in the configured time zone (no run skipped, none doubled)."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tracker.config import parse_config
from tracker.db import Database
from tracker.models import Lease, Run
from tracker.scheduler import CronSchedule, _RUNTIME, build_scheduler, cron_trigger, last_fire_time

ROOT = Path(__file__).resolve().parents[2]
MADRID = ZoneInfo("Europe/Madrid")
TTL = 2.0

# `tracker run` itself (run_forever), with a short lease so a takeover happens within seconds.
RUN = """
import sys
from tracker.config import load_config
from tracker.scheduler import run_forever
run_forever(load_config(sys.argv[1]), lease_ttl_s=float(sys.argv[2]))
"""


class Proc:
    """A subprocess whose stdout/stderr lines are collected by threads (never blocks the test)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None):
        self.p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self.out: list[str] = []
        self.err: list[str] = []
        self.lines: queue.Queue[str] = queue.Queue()
        for stream, sink in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream, sink) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            sink.append(line)
            if sink is self.out:
                self.lines.put(line)

    @property
    def pid(self) -> int:
        return self.p.pid

    def active_count(self) -> int:
        return sum("tracker run: active" in line for line in self.out)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)


def wait_until(pred, timeout: float, step: float = 0.05) -> float | None:  # type: ignore[no-untyped-def]
    """Seconds until pred() held, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(step)
    return None


def lease_holder(url: str) -> tuple[str, datetime] | None:
    db = Database.open(url, migrate=False)
    try:
        with db.session() as s:
            row = s.get(Lease, "scheduler")
            return (row.holder, row.expires_at) if row else None
    finally:
        db.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_tracker_runs_one_active_the_standby_takes_over_after_sigkill(backend, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    (tmp_path / "tracker.yaml").write_text(
        f"database: {url}\ntimezone: Europe/Madrid\nschedules: {{prices: '0 7 * * *', report: '30 7 * * *'}}\n")
    # Both start at the same moment on a fresh database (they also race to create the schema).
    procs = [Proc([sys.executable, "-c", RUN, "tracker.yaml", str(TTL)], tmp_path) for _ in range(2)]
    try:
        assert wait_until(lambda: any(p.active_count() for p in procs), 30) is not None, \
            [p.err for p in procs]
        time.sleep(TTL * 1.5)  # more than a lease period: the other is still a standby
        active = [p for p in procs if p.active_count()]
        assert len(active) == 1, [p.out for p in procs]
        first, standby = active[0], next(p for p in procs if p is not active[0])
        holder, expires = lease_holder(url)
        assert f":{first.pid}:" in holder and expires > datetime.now(UTC)
        assert standby.p.poll() is None and any("standby" in line for line in standby.err)

        first.kill()  # SIGKILL: no clean release, the lease has to expire
        took = wait_until(lambda: standby.active_count() == 1, TTL + TTL / 3 + 3)
        assert took is not None, standby.err[-5:]
        assert took <= TTL + TTL / 3 + 1.5, took  # within one lease period (plus one poll)
        holder, _ = lease_holder(url)
        assert f":{standby.pid}:" in holder

        standby.p.send_signal(signal.SIGTERM)
        assert standby.p.wait(15) == 0
        assert wait_until(lambda: any("stopped" in line for line in standby.out), 5) is not None
        _, expires = lease_holder(url)
        assert expires < datetime.now(UTC)  # released on a clean stop: a next start is active at once
        for p in procs:
            assert not any("Traceback" in line for line in p.err), "".join(p.err)
    finally:
        for p in procs:
            p.kill()


def test_lease_is_exclusive_and_taken_over_only_after_it_expires(db_url):
    from tracker.lease import DbLease

    db = Database.open(db_url)
    a, b = DbLease(db, ttl_s=30, holder="a"), DbLease(db, ttl_s=30, holder="b")
    t0 = datetime.now(UTC)
    assert a.try_acquire(t0) and not b.try_acquire(t0)
    assert a.try_acquire(t0 + timedelta(seconds=20))            # renewed
    assert not b.try_acquire(t0 + timedelta(seconds=40))        # the renewal counts, not the first take
    assert b.try_acquire(t0 + timedelta(seconds=51))            # a stopped renewing: b takes over
    assert not a.try_acquire(t0 + timedelta(seconds=52))        # and a, back from a pause, is a standby
    db.close()


# -- downtime: one catch-up run ---------------------------------------------------------------------------


def test_downtime_over_several_runs_gives_exactly_one_catch_up_run(shop, tmp_path):
    """The job store says the hourly check was due 5 hours ago (nothing ran since). A restarted scheduler
    runs it ONCE, for the newest missed slot, then waits for the next hour. (Before the fix, re-adding
    the job with replace_existing reset next_run_time to the future: zero catch-up runs.)"""
    shop.products = {"kettle": {"name": "Kettle", "price": "30.00"}}
    now = datetime.now(MADRID)
    minute = (now.minute - 10) % 60  # fired 10 minutes ago, within the misfire grace time
    cron = f"{minute} * * * *"
    config = parse_config(
        f"database: sqlite:///{tmp_path / 'catchup.db'}\ntimezone: Europe/Madrid\n"
        f"schedules: {{prices: '{cron}', report: null}}\nhttp: {{per_domain_delay_s: 0, retries: 0}}\n"
        f"rivals:\n  - name: Shop\n    fetch: http\n    products:\n      - url: {shop.url}/p/kettle\n",
        env={})
    db = Database.open(config.database)
    _RUNTIME.update(config=config, db=db, dispatcher=None)

    async def first_life() -> None:  # a scheduler ran, stored its jobs, then the host went down
        scheduler = build_scheduler(config, db)
        scheduler.start(paused=True)
        scheduler.get_job("check:prices").modify(next_run_time=datetime.now(MADRID) - timedelta(hours=5))
        scheduler.shutdown()

    async def restart() -> datetime:
        scheduler = build_scheduler(config, db)
        scheduler.start()
        job = scheduler.get_job("check:prices")
        assert isinstance(job.trigger, CronSchedule)
        for _ in range(100):
            await asyncio.sleep(0.1)
            with db.session() as s:
                if s.scalar(select(Run.finished_at)):
                    break
        await asyncio.sleep(1.5)  # would a burst follow?
        next_run = scheduler.get_job("check:prices").next_run_time
        scheduler.shutdown()
        return next_run

    asyncio.run(first_life())
    db = Database.open(config.database)  # shutdown() of the job store disposed the engine's pool
    _RUNTIME.update(db=db)
    next_run = asyncio.run(restart())
    with db.session() as s:
        runs = s.execute(select(Run.slot, Run.trigger)).all()
    assert runs == [(last_fire_time(cron, MADRID, datetime.now(UTC)), "schedule:prices")]
    assert next_run > datetime.now(MADRID)
    assert shop.hits == ["kettle"]  # one pass, one fetch
    db.close()


def test_coalesce_and_misfire_grace_are_configured_on_every_job(tmp_path):
    config = parse_config(f"database: sqlite:///{tmp_path / 'j.db'}\nschedules: {{rankings: '0 6 * * 1'}}\n",
                          env={})
    db = Database.open(config.database)
    scheduler = build_scheduler(config, db)
    assert scheduler._job_defaults == {"coalesce": True, "max_instances": 1,
                                       "misfire_grace_time": config.schedules.misfire_grace_s}
    db.close()


# -- DST ---------------------------------------------------------------------------------------------------


def fires(cron: str, start: datetime, end: datetime) -> list[datetime]:
    """The fire times a running scheduler sees: after each run it asks for the next one at 'now'."""
    trigger = cron_trigger(cron, MADRID)
    out, prev, now = [], None, start
    while True:
        fire = trigger.get_next_fire_time(prev, now)
        if fire is None or fire.astimezone(UTC) > end.astimezone(UTC):
            return out
        out.append(fire)
        prev, now = fire, datetime.fromtimestamp(fire.timestamp() + 0.5, MADRID)


@pytest.mark.parametrize("day", [datetime(2026, 3, 29, tzinfo=MADRID), datetime(2026, 10, 25, tzinfo=MADRID)],
                         ids=["spring-forward", "fall-back"])
@pytest.mark.parametrize("cron", ["30 2 * * *", "0 7 * * *"])
def test_dst_change_neither_skips_nor_doubles_a_daily_run(cron, day):
    got = fires(cron, day - timedelta(days=3), day + timedelta(days=3))
    per_day = [f.date() for f in got]
    assert sorted(set(per_day)) == per_day and len(per_day) == 6, [f.isoformat() for f in got]
    (on_the_day,) = [f for f in got if f.date() == day.date()]
    hour, minute = (2, 30) if cron.startswith("30 2") else (7, 0)
    if (hour, day.month) == (2, 3):
        # 02:30 does not exist that night: the run happens once, at the instant it maps to (03:30 CEST)
        assert on_the_day.astimezone(UTC).astimezone(MADRID).strftime("%H:%M %Z") == "03:30 CEST"
    else:
        assert (on_the_day.hour, on_the_day.minute) == (hour, minute)
    # runs are a day apart in real time, except across the change (23 h or 25 h)
    gaps = {round((b - a).total_seconds() / 3600) for a, b in zip(got, got[1:])}
    assert gaps <= {23, 24, 25}


def test_fall_back_an_hourly_job_still_runs_every_real_hour():
    day = datetime(2026, 10, 25, tzinfo=MADRID)
    got = fires("0 * * * *", day, datetime(2026, 10, 25, 23, 59, tzinfo=MADRID))  # a 25-hour day
    assert len(got) == 25
    assert all((b - a) == timedelta(hours=1) for a, b in zip(
        [g.astimezone(UTC) for g in got], [g.astimezone(UTC) for g in got[1:]]))


def test_last_fire_time_gives_one_slot_through_the_repeated_hour():
    cron = "30 2 * * *"
    first_pass = datetime(2026, 10, 25, 0, 45, tzinfo=UTC)   # 02:45 CEST
    second_pass = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)  # 02:45 CET, an hour later
    assert last_fire_time(cron, MADRID, first_pass) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert last_fire_time(cron, MADRID, second_pass) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    spring = datetime(2026, 3, 29, 2, 0, tzinfo=UTC)        # 04:00 CEST
    assert last_fire_time(cron, MADRID, spring) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert last_fire_time("0 7 * * *", MADRID, datetime(2026, 3, 29, 5, 30, tzinfo=UTC)) == \
        datetime(2026, 3, 29, 5, 0, tzinfo=UTC)  # 07:00 CEST


def test_scheduled_jobs_use_the_dst_safe_trigger(tmp_path):
    config = parse_config(f"database: sqlite:///{tmp_path / 'j.db'}\ntimezone: Europe/Madrid\n", env={})
    db = Database.open(config.database)

    async def go() -> list:  # type: ignore[type-arg]
        scheduler = build_scheduler(config, db)
        scheduler.start(paused=True)
        jobs = [(j.id, type(j.trigger).__name__) for j in scheduler.get_jobs()]
        scheduler.shutdown()
        return jobs

    jobs = dict(asyncio.run(go()))
    assert jobs["check:prices"] == jobs["report"] == "CronSchedule"


def test_job_store_unreachable_at_wakeup_is_one_warning_and_a_retry_not_a_traceback(caplog):
    from sqlalchemy import create_engine

    from tracker.scheduler import JOBSTORE_RETRY_S, ResilientJobStore

    store = ResilientJobStore(engine=create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none",
                                                   connect_args={"connect_timeout": 2}))
    before = datetime.now(UTC)
    with caplog.at_level("WARNING", logger="tracker.scheduler"):
        retry_at = store.get_next_run_time()
    assert before + timedelta(seconds=JOBSTORE_RETRY_S - 1) <= retry_at <= datetime.now(UTC) + timedelta(
        seconds=JOBSTORE_RETRY_S)
    (record,) = [r for r in caplog.records if "job store unreachable" in r.getMessage()]
    assert record.exc_info is None

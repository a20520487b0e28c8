"""`tracker run`: APScheduler 3 in the foreground, one active instance per database.

Jobs come from the config's `schedules` (cron in the configured timezone) and live in the same database
(SQLAlchemyJobStore), with coalesce (one catch-up run after downtime, not a burst), one instance per job,
and a misfire grace time. A lease (tracker.lease) makes sure only one scheduler is active; a second
`tracker run` waits as a standby and takes over when the first dies. SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from tracker.config import Config
from tracker.db import Database
from tracker.errors import TrackerError
from tracker.lease import DbLease
from tracker.loop import run as run_loop

log = logging.getLogger("tracker.scheduler")

# The running process's config and database: scheduled jobs are stored by reference (module:function)
# in the job store, so they find their context here rather than in pickled arguments.
_RUNTIME: dict[str, Any] = {}

KIND_SCHEDULES = {"prices": ("product", "listing", "seo"), "rankings": ("serp",)}


class CronSchedule(CronTrigger):
    """A cron trigger that behaves like cron across DST changes in its time zone.

    APScheduler's CronTrigger fires a fixed-time job twice on the night clocks go back (02:30 CEST and
    again 02:30 CET, an hour later). Like cron, a job with a fixed hour runs at the first pass through the
    repeated hour only; jobs whose hour is `*` keep running every real hour. When clocks go forward the
    nonexistent 02:30 fires once, at the instant it maps to (03:30 summer time): no skip either.
    """

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        fire = super().get_next_fire_time(previous_fire_time, now)
        while fire is not None and self._second_pass(fire):
            after = (fire.astimezone(UTC) + timedelta(seconds=1)).astimezone(fire.tzinfo)
            fire = super().get_next_fire_time(None, after)
        return fire

    def _second_pass(self, fire: datetime) -> bool:
        if not fire.fold or fire.replace(fold=0).utcoffset() == fire.utcoffset():
            return False  # not the repeated hour
        hour = next(f for f in self.fields if f.name == "hour")
        return str(hour) != "*"


def cron_trigger(cron: str, tz: Any, jitter: int | None = None) -> CronSchedule:
    trigger = CronSchedule.from_crontab(cron, timezone=tz)
    trigger.jitter = jitter  # add_job(jitter=...) is ignored when given a trigger instance
    return trigger


def last_fire_time(cron: str, tz: Any, now: datetime) -> datetime:
    """The newest time `cron` fired at or before `now`: the slot a (possibly late) run belongs to.

    Instants are compared in UTC: two aware datetimes in the same zone compare by wall clock, which is
    wrong in the hour that repeats when clocks go back."""
    trigger = cron_trigger(cron, tz)
    now_utc = now.astimezone(UTC)
    fire = trigger.get_next_fire_time(None, (now_utc - timedelta(days=32)).astimezone(trigger.timezone))
    last = None
    while fire is not None and fire.astimezone(UTC) <= now_utc:
        last = fire
        fire = trigger.get_next_fire_time(
            fire, (fire.astimezone(UTC) + timedelta(seconds=1)).astimezone(trigger.timezone))
    return (last or now).astimezone(UTC)


def _one_line_errors(fn):  # type: ignore[no-untyped-def]
    """A scheduled job that fails for a known reason (database unreachable, ...) logs one clear line,
    not APScheduler's traceback; the next run tries again."""
    import functools

    @functools.wraps(fn)
    async def job(*args: Any) -> None:
        try:
            await fn(*args)
        except TrackerError as exc:
            log.error("%s failed: %s; the next run tries again", fn.__name__, exc)

    return job


@_one_line_errors
async def scheduled_check(schedule: str) -> None:
    from tracker.app import check_once

    config: Config = _RUNTIME["config"]
    db: Database = _RUNTIME["db"]
    cron = getattr(config.schedules, schedule)
    slot = last_fire_time(cron, config.tz, datetime.now(config.tz))
    if _RUNTIME.get("dispatcher") is not None:
        await _RUNTIME["dispatcher"].dispatch_pass(slot, kinds=KIND_SCHEDULES[schedule])
        return
    summary = await check_once(config, db, slot=slot, trigger=f"schedule:{schedule}",
                               kinds=KIND_SCHEDULES[schedule])
    log.info("pass %s for slot %s: %s", schedule, slot.isoformat(), summary.as_json())


@_one_line_errors
async def scheduled_report() -> None:
    from tracker.app import queue_report, send_reports

    config: Config = _RUNTIME["config"]
    db: Database = _RUNTIME["db"]
    queued = await asyncio.to_thread(queue_report, config, db)
    if queued is not None:
        log.info("report %s queued with %d changes", queued.message_id, queued.changes)
    await asyncio.to_thread(send_reports, config, db)


@_one_line_errors
async def scheduled_discovery() -> None:
    """Products newly found in the sitemaps and listings of rivals with `discovery.auto_track` are tracked."""
    from tracker.catalog import discover_products

    config: Config = _RUNTIME["config"]
    for rival in config.rivals:
        d = rival.discovery
        if not d.auto_track:
            continue
        try:
            report = await discover_products(config, _RUNTIME["db"], rival.name, include=d.include,
                                             exclude=d.exclude, max_new=d.max_new, track=True)
        except TrackerError as exc:
            log.warning("discovery for %s failed: %s", rival.name, exc)
            continue
        log.info("discovery for %s: %d new products tracked", rival.name, len(report.tracked))


async def deliver_outbox() -> None:
    """Every minute: alerts for changes that workers found (with a broker, passes do not end here), then
    whatever is due in the outbox (retries included)."""
    from tracker.app import send_alerts, send_reports

    config: Config = _RUNTIME["config"]
    if config.alerts.rules:
        await asyncio.to_thread(send_alerts, config, _RUNTIME["db"])
    await asyncio.to_thread(send_reports, config, _RUNTIME["db"])


class ResilientJobStore(SQLAlchemyJobStore):
    """APScheduler 3 calls `get_next_run_time` from its event-loop wakeup without guarding it, so a
    database blip there surfaces as a traceback and stops the wakeups. Say it in one line and look again
    shortly instead (due jobs are already retried by APScheduler itself)."""

    def get_next_run_time(self):  # type: ignore[no-untyped-def]
        try:
            return super().get_next_run_time()
        except SQLAlchemyError as exc:
            log.warning("job store unreachable (%s); looking again in %d s",
                        str(exc).strip().splitlines()[0][:200], JOBSTORE_RETRY_S)
            return datetime.now(UTC) + timedelta(seconds=JOBSTORE_RETRY_S)


JOBSTORE_RETRY_S = 10


def build_scheduler(config: Config, db: Database) -> AsyncIOScheduler:
    s = config.schedules
    scheduler = AsyncIOScheduler(
        jobstores={"default": ResilientJobStore(engine=db.engine, tablename="apscheduler_jobs")},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": s.misfire_grace_s},
        timezone=config.tz)
    jitter = s.jitter_s or None
    wanted = set()
    stored = _stored_next_run_times(db)

    def add(func: Any, trigger: Any, job_id: str, name: str, **kw: Any) -> None:
        # `replace_existing` alone would reset a stored job's next_run_time to the next *future* fire
        # time, so runs missed while no scheduler was up would never be caught up. Keep the stored
        # next_run_time when the job is unchanged: on start it is due, and coalesce makes it ONE run.
        keep = stored.get(job_id)
        if keep is not None and keep[0] == repr(trigger):
            kw["next_run_time"] = keep[1]
        scheduler.add_job(func, trigger, id=job_id, name=name, replace_existing=True, **kw)
        wanted.add(job_id)

    for name in ("prices", "rankings"):
        cron = getattr(s, name)
        if cron:
            add(scheduled_check, cron_trigger(cron, config.tz, jitter), f"check:{name}", f"check {name}",
                args=[name])
    if s.discovery and any(r.discovery.auto_track for r in config.rivals):
        add(scheduled_discovery, cron_trigger(s.discovery, config.tz), "discovery", "discovery")
    if s.report:
        add(scheduled_report, cron_trigger(s.report, config.tz), "report", "report")
    add(deliver_outbox, IntervalTrigger(minutes=1), "outbox", "outbox retries")
    scheduler.wanted_jobs = wanted  # type: ignore[attr-defined]
    return scheduler


def _stored_next_run_times(db: Database) -> dict[str, tuple[str, datetime]]:
    """Job id -> (repr of its trigger, next_run_time) as stored by the previous scheduler."""
    store = SQLAlchemyJobStore(engine=db.engine, tablename="apscheduler_jobs")
    out: dict[str, tuple[str, datetime]] = {}
    try:
        jobs = store.get_all_jobs()  # unreadable rows (code moved) are dropped by the store itself
    except Exception:  # noqa: BLE001 - no table yet (first start) or unreadable: nothing to keep
        return out
    for job in jobs:
        if job.next_run_time is not None:
            out[job.id] = (repr(job.trigger), job.next_run_time)
    return out


async def _serve(config: Config, stop: asyncio.Event, *, dispatch_only: bool, lease_ttl_s: float) -> None:
    from tracker.app import open_database

    db = open_database(config)
    _RUNTIME.update(config=config, db=db, dispatcher=None)
    if dispatch_only:
        from tracker.queue import Dispatcher

        _RUNTIME["dispatcher"] = Dispatcher(config, db)
    lease = DbLease(db, "scheduler", ttl_s=lease_ttl_s)

    async def holds_lease() -> bool:
        try:
            return await asyncio.to_thread(lease.try_acquire)
        except TrackerError as exc:  # database unreachable: not active until it answers again
            log.warning("cannot renew the scheduler lease: %s; retrying", exc)
            return False

    try:
        while not stop.is_set():
            if not await holds_lease():
                try:
                    other = await asyncio.to_thread(lease.current_holder)
                except TrackerError:
                    other = "unknown: database unreachable"
                log.info("standby: another scheduler (%s) is active", other)
                await _wait(stop, lease_ttl_s / 3)
                continue
            log.info("active scheduler %s", lease.holder)
            scheduler = build_scheduler(config, db)
            scheduler.start()
            # Jobs from an older config that are no longer wanted are removed from the shared store.
            for job in scheduler.get_jobs():
                if job.id not in scheduler.wanted_jobs:  # type: ignore[attr-defined]
                    job.remove()
            print(f"tracker run: active, {len(scheduler.get_jobs())} jobs; Ctrl-C to stop", flush=True)
            for job in scheduler.get_jobs():
                print(f"  {job.name}: next at {job.next_run_time}", flush=True)
            lost = False
            while not stop.is_set():
                await _wait(stop, lease_ttl_s / 3)
                if not stop.is_set() and not await holds_lease():
                    log.warning("lease lost: going back to standby")
                    lost = True
                    break
            scheduler.shutdown(wait=True)
            if not lost:
                break
    finally:
        dispatcher = _RUNTIME.get("dispatcher")
        if dispatcher is not None:
            try:
                await dispatcher.close()  # hands its lease over at once, not after the lease time
            except Exception as exc:  # noqa: BLE001 - shutting down: say it and go on
                log.warning("dispatcher did not close cleanly: %s", exc)
        try:
            await asyncio.to_thread(lease.release)
        except TrackerError as exc:
            log.warning("could not release the scheduler lease (it expires by itself): %s", exc)
        db.close()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


def run_forever(config: Config, *, dispatch_only: bool = False, lease_ttl_s: float = 30) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _serve(config, stop, dispatch_only=dispatch_only, lease_ttl_s=lease_ttl_s)

    run_loop(main())
    print("tracker run: stopped", flush=True)

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

from tracker.config import Config
from tracker.db import Database
from tracker.lease import DbLease

log = logging.getLogger("tracker.scheduler")

# The running process's config and database: scheduled jobs are stored by reference (module:function)
# in the job store, so they find their context here rather than in pickled arguments.
_RUNTIME: dict[str, Any] = {}

KIND_SCHEDULES = {"prices": ("product", "listing", "seo"), "rankings": ("serp",)}


def last_fire_time(cron: str, tz: Any, now: datetime) -> datetime:
    """The newest time `cron` fired at or before `now`: the slot a (possibly late) run belongs to."""
    trigger = CronTrigger.from_crontab(cron, timezone=tz)
    start = now - timedelta(days=32)
    fire = trigger.get_next_fire_time(None, start)
    last = fire
    while fire is not None and fire <= now:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return (last or now).astimezone(UTC)


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


async def scheduled_report() -> None:
    from tracker.app import queue_report, send_reports

    config: Config = _RUNTIME["config"]
    db: Database = _RUNTIME["db"]
    queued = await asyncio.to_thread(queue_report, config, db)
    if queued is not None:
        log.info("report %s queued with %d changes", queued.message_id, queued.changes)
    await asyncio.to_thread(send_reports, config, db)


async def deliver_outbox() -> None:
    from tracker.app import send_reports

    await asyncio.to_thread(send_reports, _RUNTIME["config"], _RUNTIME["db"])


def build_scheduler(config: Config, db: Database) -> AsyncIOScheduler:
    s = config.schedules
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=db.engine, tablename="apscheduler_jobs")},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": s.misfire_grace_s},
        timezone=config.tz)
    jitter = s.jitter_s or None
    wanted = set()
    for name in ("prices", "rankings"):
        cron = getattr(s, name)
        if cron:
            scheduler.add_job(scheduled_check, CronTrigger.from_crontab(cron, timezone=config.tz),
                              args=[name], id=f"check:{name}", name=f"check {name}", jitter=jitter,
                              replace_existing=True)
            wanted.add(f"check:{name}")
    if s.report:
        scheduler.add_job(scheduled_report, CronTrigger.from_crontab(s.report, timezone=config.tz),
                          id="report", name="report", replace_existing=True)
        wanted.add("report")
    scheduler.add_job(deliver_outbox, IntervalTrigger(minutes=1), id="outbox", name="outbox retries",
                      replace_existing=True)
    wanted.add("outbox")
    scheduler.wanted_jobs = wanted  # type: ignore[attr-defined]
    return scheduler


async def _serve(config: Config, stop: asyncio.Event, *, dispatch_only: bool, lease_ttl_s: float) -> None:
    from tracker.app import open_database

    db = open_database(config)
    _RUNTIME.update(config=config, db=db, dispatcher=None)
    if dispatch_only:
        from tracker.queue import Dispatcher

        _RUNTIME["dispatcher"] = Dispatcher(config, db)
    lease = DbLease(db, "scheduler", ttl_s=lease_ttl_s)
    try:
        while not stop.is_set():
            if not await asyncio.to_thread(lease.try_acquire):
                log.info("standby: another scheduler (%s) is active", await asyncio.to_thread(lease.current_holder))
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
                if not stop.is_set() and not await asyncio.to_thread(lease.try_acquire):
                    log.warning("lease lost: going back to standby")
                    lost = True
                    break
            scheduler.shutdown(wait=True)
            if not lost:
                break
    finally:
        await asyncio.to_thread(lease.release)
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

    asyncio.run(main())
    print("tracker run: stopped", flush=True)

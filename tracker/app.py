"""Library entry points the CLI, the scheduler and the workers share: open, check, report, deliver.

The CLI stays thin (parse arguments, call these, print); everything here is reusable and testable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tracker.config import Config
from tracker.db import Database
from tracker.pipeline import CheckResult, Checker, PassSummary, finish_run, start_run, utc_slot
from tracker.targets import TargetRef, sync_targets
from tracker.loop import run as run_loop

if TYPE_CHECKING:  # imported where used: `tracker check` needs neither the report nor the mail modules
    from tracker.report import Rendered


def open_database(config: Config, *, migrate: bool = True) -> Database:
    url = config.database
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and config.source is not None:
        # A relative SQLite path is relative to the config file, not to wherever the command runs.
        relative = url[len("sqlite:///"):]
        if relative and relative != ":memory:":
            url = "sqlite:///" + str(config.resolve(Path(relative)))
    return Database.open(url, migrate=migrate)


async def check_once(config: Config, db: Database, *, rival: str | None = None, slot: datetime | None = None,
                     trigger: str = "check", kinds: tuple[str, ...] | None = None,
                     on_start: Callable[[int], None] | None = None,
                     on_result: Callable[[CheckResult], None] | None = None,
                     alerts: bool = True, targets: list[TargetRef] | None = None) -> PassSummary:
    """One pass over all active targets (or one rival's, or `targets` when the caller planned the pass)
    now, in this process; then the alerts it caused."""
    if targets is None:
        targets = plan_pass(config, db, rival=rival, kinds=kinds)
    if on_start is not None:
        on_start(len(targets))
    async with Checker(config, db) as checker:
        summary = await checker.run_pass(targets, utc_slot(slot), trigger=trigger, on_result=on_result)
    if summary.changes and alerts:
        await asyncio.to_thread(send_alerts, config, db)
    return summary


def plan_pass(config: Config, db: Database, *, rival: str | None = None,
              kinds: tuple[str, ...] | None = None) -> list[TargetRef]:
    """Bring the targets in line with the config and list the active ones (or one rival's)."""
    with db.session() as session:
        # sync_targets lists the active targets (active_targets' query and order): filter that list.
        targets = [t for t in sync_targets(session, config)
                   if (rival is None or t.rival == rival) and (not kinds or t.kind in kinds)]
    if rival is not None and not targets:
        names = ", ".join(r.name for r in config.rivals) or "none configured"
        from tracker.errors import TrackerError
        raise TrackerError(f"no rival named {rival!r} with targets (rivals: {names})")
    return targets


# A pass split over processes: each process checks whole rivals (so per-domain politeness stays in one
# process) and shares the Run. Below this many targets per process, starting one costs more than it saves.
TARGETS_PER_PROCESS = 250


def auto_processes(targets: list[TargetRef]) -> int:
    """How many processes `tracker check` uses by default: one per core, while each gets at least
    TARGETS_PER_PROCESS targets and a rival of its own."""
    import multiprocessing
    import os

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1  # Windows: no fork; one process
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, len(targets) // TARGETS_PER_PROCESS, len({_group(t) for t in targets})))


def _group(target: TargetRef) -> str:
    # Keyword targets share the search engines' politeness: they stay together.
    return target.rival if target.rival is not None else "(keywords)"


def shard_targets(targets: list[TargetRef], processes: int, *, pinned: set[str] = frozenset()
                  ) -> list[list[TargetRef]]:
    """Whole rivals per shard, balanced by target count (largest first into the emptiest shard). Rivals
    in `pinned` (checked through a browser) all go to the first shard, so one Chromium serves them."""
    groups: dict[str, list[TargetRef]] = {}
    for target in targets:
        groups.setdefault(_group(target), []).append(target)
    shards: list[list[TargetRef]] = [[] for _ in range(max(1, min(processes, len(groups))))]
    for name in [g for g in groups if g in pinned]:
        shards[0] += groups.pop(name)
    for name in sorted(groups, key=lambda g: -len(groups[g])):
        min(shards, key=len).extend(groups[name])
    return [sorted(shard, key=lambda t: t.id) for shard in shards if shard]


def check_in_processes(config: Config, db: Database, *, processes: int | None = None,
                       rival: str | None = None, slot: datetime | None = None, trigger: str = "check",
                       on_start: Callable[[int], None] | None = None,
                       on_advance: Callable[[int], None] | None = None) -> PassSummary:
    """`check_once` split over `processes` forked processes (None: auto_processes), for big passes on
    machines with several cores. Each process runs the same pipeline on whole rivals and writes its own
    checks (the unit of work is idempotent); the parent records the Run and sends the alerts. Call it
    outside an event loop."""
    targets = plan_pass(config, db, rival=rival)
    processes = auto_processes(targets) if processes is None else processes
    browser_rivals = {r.name for r in config.rivals
                      if r.fetch == "browser" or any(p.fetch == "browser" for p in r.products)}
    shards = shard_targets(targets, processes, pinned=browser_rivals)
    if len(shards) <= 1:
        return run_loop(check_once(config, db, slot=slot, trigger=trigger, on_start=on_start, targets=targets,
                                   on_result=(lambda _r: on_advance(1)) if on_advance else None))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if on_start is not None:
        on_start(len(targets))
    slot = utc_slot(slot)
    run_id = start_run(db, slot, trigger)
    summary = PassSummary(run_id=run_id)
    _SHARDS.update(config=config, db=db, shards=shards, slot=slot, run_id=run_id)
    try:
        with ProcessPoolExecutor(len(shards), mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(_check_shard, i): len(shard) for i, shard in enumerate(shards)}
            for future in as_completed(futures):
                summary.merge(future.result())
                if on_advance is not None:
                    on_advance(futures[future])
    finally:
        _SHARDS.clear()
    finish_run(db, run_id, summary)
    if summary.changes:
        send_alerts(config, db)
    return summary


_SHARDS: dict = {}  # what a forked shard process reads (set by check_in_processes just before the fork)


def _check_shard(index: int) -> dict:
    config, db, slot, run_id = _SHARDS["config"], _SHARDS["db"], _SHARDS["slot"], _SHARDS["run_id"]
    db.engine.dispose(close=False)  # never use the parent's connections: fresh ones for this process

    async def run() -> PassSummary:
        async with Checker(config, db) as checker:
            return await checker.run_pass(_SHARDS["shards"][index], slot, run_id=run_id)
    return run_loop(run()).as_json()


def send_alerts(config: Config, db: Database) -> int:
    """Changes that match an alert rule go out at once (e-mail and chat); the rest wait for the digest."""
    from tracker.alerts import queue_alerts

    queued = queue_alerts(config, db)
    if queued:
        send_reports(config, db)
    return len(queued)


def preview_report(config: Config, db: Database) -> Rendered:
    """The report of unreported changes, without marking anything reported (its `html` embeds the charts,
    so it opens as a file)."""
    from tracker.report import collect, render

    with db.session() as session:
        return render(collect(session, config), config)


@dataclass(frozen=True)
class QueuedReport:
    outbox_id: int
    message_id: str
    changes: int
    rendered: Rendered


def queue_report(config: Config, db: Database, *, kind: str = "digest") -> QueuedReport | None:
    """Store the report of unreported changes in the outbox and mark those changes reported, atomically.

    Returns None when there is nothing to report (no e-mail is queued for an empty report).
    """
    from sqlalchemy import update

    from tracker.mail import enqueue
    from tracker.models import Change
    from tracker.report import collect, render

    with db.session() as session:
        data = collect(session, config)
        if data.empty:
            return None
        rendered = render(data, config)
        # The mailed HTML references its charts by Content-ID; the stored copy (outbox folder, `tracker
        # outbox`) embeds them, so it opens as a file.
        message = rendered.message(config)
        row = enqueue(session, kind=kind, message=message, html=rendered.html)
        session.flush()
        session.execute(update(Change).where(Change.id.in_(data.change_ids)).values(report_id=row.id))
        return QueuedReport(row.id, row.message_id, len(data.change_ids), rendered)


def send_reports(config: Config, db: Database):  # type: ignore[no-untyped-def]
    """Deliver everything due in the outbox (SMTP, or the outbox folder when no SMTP is configured)."""
    from tracker.mail import deliver_pending

    email = config.email
    if email.smtp_url is None and not email.outbox_dir.is_absolute():
        email = email.model_copy(update={"outbox_dir": config.resolve(email.outbox_dir)})
    if config.alerts.chat:
        from tracker.alerts import deliver_chat

        deliver_chat(config, db)
    return deliver_pending(db, email, now=datetime.now(UTC))



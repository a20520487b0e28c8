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
from tracker.pipeline import CheckResult, Checker, PassSummary, utc_slot
from tracker.targets import active_targets, sync_targets

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
                     alerts: bool = True) -> PassSummary:
    """One pass over all active targets (or one rival's) now, in this process; then the alerts it caused."""
    with db.session() as session:
        sync_targets(session, config)
        targets = active_targets(session, rival=rival, kinds=kinds)
    if rival is not None and not targets:
        names = ", ".join(r.name for r in config.rivals) or "none configured"
        from tracker.errors import TrackerError
        raise TrackerError(f"no rival named {rival!r} with targets (rivals: {names})")
    if on_start is not None:
        on_start(len(targets))
    async with Checker(config, db) as checker:
        summary = await checker.run_pass(targets, utc_slot(slot), trigger=trigger, on_result=on_result)
    if summary.changes and alerts:
        await asyncio.to_thread(send_alerts, config, db)
    return summary


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


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)

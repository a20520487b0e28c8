"""`tracker demo`: the whole product in under a minute, against bundled shops on 127.0.0.1."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tracker.demo.shops import EXPECTED_CHANGES, DemoShops
from tracker.loop import run as run_loop


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    config: Path
    database: Path
    report_html: Path
    report_eml: Path | None
    changes: list[tuple[str, str, str]]


def run_demo(out_dir: Path, *, echo: Callable[[str], None] = print) -> DemoResult:
    return run_loop(_demo(Path(out_dir), echo))


async def _demo(out_dir: Path, echo: Callable[[str], None]) -> DemoResult:
    from sqlalchemy import select

    from tracker.app import check_once, open_database, queue_report, send_reports
    from tracker.config import load_config
    from tracker.models import Change, Rival, Target

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    shops = await DemoShops().start()
    try:
        config_path = out_dir / "tracker.yaml"
        config_path.write_text(shops.config_yaml("sqlite:///demo.db"), encoding="utf-8")
        config = load_config(config_path)
        echo(f"demo shops: Northwind Sports at {shops.northwind_url}, Alpenrad at {shops.alpenrad_url}")
        db = open_database(config)
        now = datetime.now(UTC).replace(microsecond=0)
        for day, slot in ((1, now - timedelta(days=1)), (2, now)):
            shops.day = day
            summary = await check_once(config, db, slot=slot, trigger=f"demo-day-{day}")
            counts = ", ".join(f"{r}: " + " ".join(f"{n} {s}" for s, n in sorted(c.items()))
                               for r, c in sorted(summary.counts.items()))
            echo(f"day {day}: {counts}; {summary.changes} changes")
        with db.session() as session:
            changes = sorted((r.name, t.name, c.kind) for c, t, r in session.execute(
                select(Change, Target, Rival).join(Target, Target.id == Change.target_id)
                .join(Rival, Rival.id == Target.rival_id)))
        queued = queue_report(config, db)
        send_reports(config, db)
        report_html = out_dir / "report.html"
        if queued is not None:
            report_html.write_text(queued.rendered.html, encoding="utf-8")
            report_html.with_suffix(".txt").write_text(queued.rendered.text, encoding="utf-8")
        emls = sorted((out_dir / "outbox").glob("*.eml"))
        db.close()
        if changes != EXPECTED_CHANGES:
            echo(f"warning: the demo expected {EXPECTED_CHANGES} but found {changes}")
        return DemoResult(out_dir, config_path, out_dir / "demo.db", report_html,
                          emls[-1] if emls else None, changes)
    finally:
        await shops.stop()

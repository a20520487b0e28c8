"""A year of data at scale: is the span store cheap enough? Generates it, then times a diff pass and a report.

    .venv/bin/python bench/data_scale.py [--scale 1.0] [--db PATH | --pg postgresql+psycopg://...] [--keep] [--own]
    .venv/bin/python bench/data_scale.py --pg postgresql+psycopg://.../scale --keep     # also keeps scale_pre
    .venv/bin/python bench/data_scale.py --pg postgresql+psycopg://.../scale --reuse    # the timed part again

The year: 50,000 products x `--scale`, checked 4 times a day for 365 days (73 M checks at full scale), 5% of
the products changing price on any given day (at one of that day's 4 checks). It is written directly with
the real schema (tracker.db.Database.open runs the migrations; tracker.models tables; Core executemany
batches) the way tracker.store stores it: one observation span per run of identical checks (seen_count
counts them; fingerprints are the real Observed.fingerprint), one `changes` row per price move, the past
changes already reported (one digest per day, each day's changes marked with its outbox row, as `tracker
report` leaves them), targets' last_slot at the newest slot. The last day's 4th check is left out: it is what
the benchmark runs. With `--own`, the first of the 50 shops is the own shop and every product is sold by all
50 (the same SKU in each), so the report's price position covers every product: its most expensive case.

Then, timed:
1. the diff pass of that last slot over every target (95%+ unchanged: the span is extended; ~1.25% changed:
   new span + change), in transactions of 256 checks, each batch through `tracker.store.record_checks` as the
   pipeline's group commit records it (tracker.pipeline.Checker._run_batch), with as many transactions in
   flight as the pipeline runs (`tracker.pipeline.db_writers`: 1 on SQLite, 4 on PostgreSQL; `--writers`);
2. the report of the day's unreported changes (~2,500 at full scale), as of the end of that pass (its 30-day
   price charts end there): `tracker.report.collect` + `render`;
and the database's size on disk.

`--keep` keeps a copy of the generated database as it was before the timed part (PostgreSQL: a database
named after the URL's with `_pre` appended; SQLite: `--db PATH` copied to PATH.pre). `--reuse` (same
arguments otherwise) skips the generation: the database is made again from that copy (PostgreSQL: DROP
DATABASE + CREATE DATABASE ... TEMPLATE; SQLite: a file copy) and only the timed part runs, from the same
state (the products' latest prices are read back from it; which products change in the pass is drawn again
from the same seed).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, text  # noqa: E402

from common import machine  # noqa: E402
from tracker.config import Config  # noqa: E402
from tracker.db import Database  # noqa: E402
from tracker.diff import Rules  # noqa: E402
from tracker.models import Change, Observation, OutboxMessage, Rival, Run, Target  # noqa: E402
from tracker.report import collect, render  # noqa: E402
from tracker.pipeline import db_writers  # noqa: E402
from tracker.store import CheckItem, Observed, record_checks  # noqa: E402

START = datetime(2025, 4, 1, tzinfo=UTC)
HOURS = (7, 11, 15, 19)
BATCH = 50_000


def slot_at(k: int) -> datetime:
    return START + timedelta(days=k // 4, hours=HOURS[k % 4])


RIVALS = 50
SHARED = False  # --own: target t is product (t - 1) // RIVALS + 1, sold by every shop under the same SKU


def observed(tid: int, price: Decimal) -> Observed:
    """What a check of product `tid` sees at `price` (the fields extract_product fills on a typical page)."""
    number = (tid - 1) // RIVALS + 1 if SHARED else tid
    return Observed("ok", price=price, currency="EUR", availability="InStock", title=f"Product {number} Deluxe",
                    sku=f"SKU-{number:06d}", data={"brand": f"Brand {number % 97}"})


def move(price: Decimal, rng: random.Random) -> Decimal:
    factor = Decimal(rng.choice((-1, 1)) * rng.randint(1, 20)) / 100
    new = (price * (1 + factor)).quantize(Decimal("0.01"))
    return new if new != price and new > 0 else price + Decimal("1.00")


def price_change(old: Decimal, new: Decimal) -> dict:
    delta = new - old
    pct = (delta / old * 100).quantize(Decimal("0.1"))
    return {"old": format(old, "f"), "new": format(new, "f"), "delta": format(delta, "f"), "pct": format(pct, "f"),
            "currency": "EUR"}


def plan_changes(rng: random.Random, products: int, days: int, change_rate: float
                 ) -> tuple[dict[int, list[int]], list[int]]:
    """Which products change on which check: per day, change_rate of them, each at one of the day's 4 checks.
    Returns target -> slot indexes of its changes before the benchmark's slot, and the targets changing at it."""
    slots = days * 4
    per_day = max(1, round(products * change_rate))
    changes_at: dict[int, list[int]] = {}      # target -> sorted slot indexes where its price changes
    pass_changes: list[int] = []               # targets that change at the benchmark's slot
    for day in range(days):
        for t in rng.sample(range(1, products + 1), per_day):
            k = day * 4 + rng.randrange(4)
            if k == slots - 1:
                pass_changes.append(t)
            elif k > 0:
                changes_at.setdefault(t, []).append(k)
    return changes_at, pass_changes


def reused_state(db: Database, products: int, days: int, change_rate: float, seed: int = 7) -> dict:
    """The state `generate` returned for a database it wrote (with the same arguments), read back from it."""
    _, pass_changes = plan_changes(random.Random(seed), products, days, change_rate)
    with db.engine.connect() as conn:
        latest = select(func.max(Observation.id)).group_by(Observation.target_id).scalar_subquery()
        prices = conn.execute(select(Observation.target_id, Observation.price)
                              .where(Observation.id.in_(latest))).all()
        n_obs = conn.execute(select(func.count()).select_from(Observation)).scalar_one()
        n_changes = conn.execute(select(func.count()).select_from(Change)).scalar_one()
    return {"slots": days * 4, "pass_slot": slot_at(days * 4 - 1),
            "latest_price": {t: price for t, price in sorted(prices)}, "pass_changes": set(pass_changes),
            "observations": n_obs, "changes": n_changes, "checks": products * (days * 4 - 1)}


def generate(db: Database, products: int, days: int, change_rate: float, seed: int = 7) -> dict:
    """Write the year; returns counts and the state the diff pass starts from."""
    rng = random.Random(seed)
    slots = days * 4
    last_slot_k = slots - 2                    # the final slot (slots - 1) is the benchmark's pass
    rivals = RIVALS
    with db.engine.begin() as conn:
        conn.execute(insert(Rival), [{"id": r + 1, "name": "Own Shop" if SHARED and r == 0 else f"Rival {r + 1}",
                                      "domain": f"rival{r + 1}.example", "own": SHARED and r == 0}
                                     for r in range(rivals)])
        # The daily digests that reported the past days' changes (day d's changes: report_id d + 1).
        conn.execute(insert(OutboxMessage), [{
            "id": day + 1, "kind": "digest", "message_id": f"<digest-{day}@bench>", "subject": "digest",
            "recipients": [], "mime": b"", "html": "", "created_at": slot_at(day * 4 + 3) + timedelta(hours=1),
            "status": "sent", "attempts": 1} for day in range(days - 1)])
        rows = []
        for t in range(1, products + 1):
            url = f"https://rival{(t - 1) % rivals + 1}.example/p/{t}"
            rows.append({"id": t, "rival_id": (t - 1) % rivals + 1, "kind": "product", "key": url, "url": url,
                         "name": None, "spec": {"fetch": "auto", "selectors": {}, "respect_robots": None,
                                                "rival": f"Rival {(t - 1) % rivals + 1}"},
                         "active": True, "created_at": START, "last_slot": slot_at(last_slot_k),
                         "fail_streak": 0})
            if len(rows) >= BATCH:
                conn.execute(insert(Target), rows)
                rows = []
        if rows:
            conn.execute(insert(Target), rows)
        conn.execute(insert(Run), [{"slot": slot_at(k), "trigger": "schedule", "started_at": slot_at(k),
                                    "finished_at": slot_at(k) + timedelta(minutes=3), "counts": {}}
                                   for k in range(last_slot_k + 1)])

    changes_at, pass_changes = plan_changes(rng, products, days, change_rate)

    obs_id = change_id = 0
    obs_rows: list[dict] = []
    change_rows: list[dict] = []
    latest_price: dict[int, Decimal] = {}
    unreported_from = (days - 1) * 4           # the last day's changes are not reported yet
    n_obs = n_changes = 0

    def flush(force: bool = False) -> None:
        nonlocal obs_rows, change_rows, n_obs, n_changes
        if obs_rows and (force or len(obs_rows) >= BATCH):
            with db.engine.begin() as conn:
                conn.execute(insert(Observation), obs_rows)
                if change_rows:
                    conn.execute(insert(Change), change_rows)
            n_obs += len(obs_rows)
            n_changes += len(change_rows)
            obs_rows, change_rows = [], []

    for t in range(1, products + 1):
        price = Decimal(rng.randint(500, 90_000)) / 100
        bounds = [0] + sorted(set(changes_at.get(t, ()))) + [last_slot_k + 1]
        for i in range(len(bounds) - 1):
            first_k, end_k = bounds[i], bounds[i + 1] - 1
            if i > 0:
                old, price = price, move(price, rng)
            obs = observed(t, price)
            obs_id += 1
            first, last = slot_at(first_k), slot_at(end_k)
            obs_rows.append({
                "id": obs_id, "target_id": t, "status": "ok", "reason": None, "fingerprint": obs.fingerprint(),
                "first_seen_at": first + timedelta(seconds=40), "last_seen_at": last + timedelta(seconds=40),
                "first_slot": first, "last_slot": last, "seen_count": end_k - first_k + 1, "price": price,
                "regular_price": None, "currency": "EUR", "availability": "InStock", "promotions": None,
                "title": obs.title, "sku": obs.sku, "gtin": None, "rank": None, "data": obs.data})
            if i > 0:
                change_id += 1
                kind = "price_down" if price < old else "price_up"
                change_rows.append({
                    "id": change_id, "target_id": t, "observation_id": obs_id, "kind": kind,
                    "detected_at": first + timedelta(seconds=40), "data": price_change(old, price),
                    "report_id": None if first_k >= unreported_from else first_k // 4 + 1})
        latest_price[t] = price
        flush()
    flush(force=True)
    return {"slots": slots, "pass_slot": slot_at(slots - 1), "latest_price": latest_price,
            "pass_changes": set(pass_changes), "observations": n_obs, "changes": n_changes,
            "checks": products * (last_slot_k + 1)}


def db_size(db: Database, path: Path | None) -> int:
    if path is not None:
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()


def _pg_admin(url: str) -> tuple[Any, str]:
    """An autocommit engine on the server's `postgres` database, and the name of `url`'s database."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT"), parsed.database


def save_pg(url: str) -> None:
    """Copy the generated database to `<name>_pre` (CREATE DATABASE ... TEMPLATE: a file-level copy)."""
    engine, name = _pg_admin(url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}_pre"'))
        conn.execute(text(f'CREATE DATABASE "{name}_pre" TEMPLATE "{name}"'))
    engine.dispose()
    print(f"kept a copy as of before the timed part: database {name}_pre (--reuse starts from it)")


def restore_pg(url: str) -> None:
    """The URL's database made again from its `_pre` copy (its statistics, from ANALYZE, come along)."""
    engine, name = _pg_admin(url)
    with engine.connect() as conn:
        if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": f"{name}_pre"}).first() is None:
            raise SystemExit(f"--reuse: no database {name}_pre (run once with --keep)")
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{name}_pre"'))
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="share of 50,000 products (default 1.0)")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--change-rate", type=float, default=0.05, help="share of products changing per day")
    ap.add_argument("--db", type=Path, help="SQLite file to create (default: a temporary one)")
    ap.add_argument("--pg", help="an EMPTY PostgreSQL database URL instead of SQLite")
    ap.add_argument("--batch", type=int, default=256, help="checks per transaction in the diff pass")
    ap.add_argument("--writers", type=int, default=0,
                    help="transactions in flight in the diff pass (default: the pipeline's, 1 on SQLite, 4 on "
                         "PostgreSQL: tracker.pipeline.db_writers)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the database, and a copy of it before the timed part (for --reuse)")
    ap.add_argument("--reuse", action="store_true",
                    help="no generation: the database again from the copy --keep made, then the timed part")
    ap.add_argument("--own", action="store_true",
                    help="shop 1 is the own shop and all 50 shops sell every product (the whole price position)")
    ap.add_argument("--profile", action="store_true", help="cProfile the report's collect + render")
    args = ap.parse_args()
    global SHARED
    SHARED = args.own
    products = int(50_000 * args.scale)
    tmp = None
    if args.reuse and not (args.pg or args.db):
        ap.error("--reuse needs the --pg URL or --db PATH of a database generated with --keep")
    if args.pg:
        path, url = None, args.pg
        if args.reuse:
            restore_pg(url)
    else:
        if args.db is None:
            tmp = Path(tempfile.mkdtemp(prefix="rw-scale-"))
        path = args.db or tmp / "year.db"
        for p in path.parent.glob(path.name + "*"):
            if not p.name.endswith(".pre"):
                p.unlink()
        if args.reuse:
            shutil.copyfile(path.with_name(path.name + ".pre"), path)
        url = f"sqlite:///{path}"
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}")
    print(f"data: {products:,} products x 4 checks/day x {args.days} days = {products * 4 * args.days:,} checks, "
          f"{args.change_rate:.0%} of products changing per day; database {'PostgreSQL' if args.pg else 'SQLite'}"
          + (f"; own shop: 1 of {RIVALS} shops, every product sold by all {RIVALS}" if SHARED else ""))
    try:
        db = Database.open(url)
        if args.reuse:
            t0 = time.perf_counter()
            state = reused_state(db, products, args.days, args.change_rate)
            if len(state["latest_price"]) != products:
                raise SystemExit(f"--reuse: the database holds {len(state['latest_price']):,} products, not "
                                 f"{products:,} (generated with another --scale?)")
            print(f"reused (copy of the generated database, state read back in {time.perf_counter() - t0:.1f} s): "
                  f"{state['observations']:,} observation spans, {state['changes']:,} changes; database "
                  f"{db_size(db, path) / 2**20:,.0f} MB")
        else:
            t0 = time.perf_counter()
            state = generate(db, products, args.days, args.change_rate)
            gen_s = time.perf_counter() - t0
            if db.dialect == "postgresql":
                with db.engine.begin() as conn:
                    for table in ("rivals", "targets", "runs", "observations", "changes", "outbox"):
                        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                          f"(SELECT max(id) FROM {table}))"))
                    conn.execute(text("ANALYZE"))
            else:
                with db.engine.begin() as conn:
                    conn.execute(text("ANALYZE"))
            size_before = db_size(db, path)
            print(f"generated in {gen_s:.1f} s: {state['observations']:,} observation spans (for "
                  f"{state['checks']:,} checks: {state['checks'] / state['observations']:.0f} checks per row), "
                  f"{state['changes']:,} changes; database {size_before / 2**20:,.0f} MB")
            if args.keep:
                db.close()
                if args.pg:
                    save_pg(url)
                else:
                    shutil.copyfile(path, path.with_name(path.name + ".pre"))
                db = Database.open(url)

        # 1. the diff pass of the final slot over every target
        slot = state["pass_slot"]
        now = slot + timedelta(seconds=40)
        rng = random.Random(11)
        seen = [observed(t, move(p, rng) if t in state["pass_changes"] else p)
                for t, p in state["latest_price"].items()]
        rules = Rules()
        writers = args.writers or db_writers(db.dialect)
        t0 = time.perf_counter()
        new_spans = changes = 0
        ids = list(state["latest_price"])

        def write(start: int) -> list:
            batch = [CheckItem(t, slot, obs) for t, obs in zip(ids[start:start + args.batch],
                                                                seen[start:start + args.batch])]
            with db.session() as session:
                return record_checks(session, batch, now=now, rules=rules)

        # As the pipeline's group commit writes: `writers` batches in flight, each in its own transaction.
        with ThreadPoolExecutor(writers) as pool:
            for recorded in pool.map(write, range(0, len(ids), args.batch)):
                for rec in recorded:
                    new_spans += rec.new_span
                    changes += len(rec.changes)
        diff_s = time.perf_counter() - t0
        print(f"\n1. diff pass, {len(ids):,} targets (record_checks, {args.batch} per transaction, {writers} "
              f"at once): {diff_s:.2f} s "
              f"({1e6 * diff_s / len(ids):.0f} us per target); {new_spans:,} new spans, {changes:,} changes, "
              f"{len(ids) - new_spans:,} spans extended")

        # 2. the report of the day's unreported changes
        config = Config(database=url, locale="en_US", timezone="Europe/Madrid")
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0 = time.perf_counter()
        with db.session() as session:
            data = collect(session, config, now=now)  # the day's report, right after its last pass
        collect_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        rendered = render(data, config)
        render_s = time.perf_counter() - t1
        if profiler is not None:
            import pstats

            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        print(f"2. report of the day's changes: {len(data.change_ids):,} changes; collect {collect_s:.2f} s, "
              f"render {render_s:.2f} s (HTML {len(rendered.html) / 2**20:.1f} MB, text "
              f"{len(rendered.text) / 2**20:.1f} MB; {len(data.images)} price charts, price position: "
              f"{data.position['total'] if data.position else 0:,} products)")
        with db.engine.connect() as conn:
            total_obs = conn.execute(select(func.count()).select_from(Observation)).scalar_one()
        size = db_size(db, path)
        total = diff_s + collect_s + render_s
        print(f"\ndiff + report: {total:.2f} s (target < 5 s: {'OK' if total < 5 else 'OVER TARGET'})")
        print(f"database: {size / 2**20:,.0f} MB, {total_obs:,} observation rows "
              f"(target < 2 GB: {'OK' if size < 2 * 2**30 else 'OVER TARGET'})")
        print(f"load average at end {os.getloadavg()[0]:.1f}")
        db.close()
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"kept: {path}")


if __name__ == "__main__":
    main()

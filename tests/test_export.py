"""`tracker export`: price and rank history for a date range, as CSV and XLSX, rival text made harmless."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from openpyxl import load_workbook
from sqlalchemy import select

from tracker.config import parse_config
from tracker.db import Database
from tracker.export import date_range, export, price_history, rank_history, to_csv
from tracker.models import Target
from tracker.store import Observed, record_check
from tracker.targets import sync_targets

MADRID = ZoneInfo("Europe/Madrid")
CONFIG = """\
database: sqlite:///{path}
timezone: Europe/Madrid
rivals:
  - name: Rival One
    products:
      - {{name: Kettle, url: "https://one.test/p/kettle", match: K1, group: kitchen}}
keywords:
  - {{term: electric kettle, engine: google, locale: es-ES, tags: [brand]}}
"""


def seeded(tmp_path):  # type: ignore[no-untyped-def]
    config = parse_config(CONFIG.format(path=tmp_path / "t.db"))
    db = Database.open(config.database)
    with db.session() as session:
        sync_targets(session, config)
    days = [datetime(2026, 11, d, 7, tzinfo=UTC) for d in (1, 2, 3, 10)]
    prices = ["30.00", "30.00", "27.50", "27.50"]
    promos = [(), (), ("=HYPERLINK(\"http://evil\")",), ("-20% today",)]
    with db.session() as session:
        product = session.scalars(select(Target).where(Target.kind == "product")).one()
        serp = session.scalars(select(Target).where(Target.kind == "serp")).one()
        for slot, price, promo in zip(days, prices, promos):
            record_check(session, product.id, slot, Observed("ok", price=Decimal(price), currency="EUR",
                                                             promotions=promo, title="Kettle"), now=slot)
            rank = 3 if slot.day < 3 else 7
            record_check(session, serp.id, slot, Observed("ok", rank=rank, data={
                "own_domain": "my.test", "labels": {"my.test": "My Shop", "one.test": "Rival One"},
                "positions": {"my.test": [rank, "https://my.test/kettles"], "one.test": [1, "https://one.test/k"]}}),
                now=slot)
    return config, db


def test_price_history_is_one_row_per_span_overlapping_the_range(tmp_path):
    _, db = seeded(tmp_path)
    start, end = date_range(date(2026, 11, 2), date(2026, 11, 5), MADRID)
    with db.session() as session:
        table = price_history(session, start, end, MADRID)
    assert [(r["price"], r["checks"], r["first_seen"].day, r["last_seen"].day) for r in table.rows] == [
        (Decimal("30.00"), 2, 1, 2), (Decimal("27.50"), 1, 3, 3)]  # the 10th's span starts after the range
    assert table.rows[0]["first_seen"].utcoffset() == timedelta(hours=1)  # local time of the config
    assert (table.rows[0]["rival"], table.rows[0]["match"], table.rows[0]["group"]) == ("Rival One", "K1", "kitchen")


def test_csv_is_excel_friendly_and_rival_text_never_becomes_a_formula(tmp_path):
    _, db = seeded(tmp_path)
    start, end = date_range(date(2026, 11, 1), date(2026, 11, 30), MADRID)
    with db.session() as session:
        data = to_csv(price_history(session, start, end, MADRID))
    assert data.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads UTF-8
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [r["promotions"] for r in rows] == ["", "'=HYPERLINK(\"http://evil\")", "'-20% today"]
    assert rows[0]["price"] == "30.00" and rows[0]["first_seen"] == "2026-11-01T08:00:00+01:00"


def test_rank_history_has_a_row_per_span_and_domain(tmp_path):
    _, db = seeded(tmp_path)
    start, end = date_range(date(2026, 11, 1), date(2026, 11, 30), MADRID)
    with db.session() as session:
        table = rank_history(session, start, end, MADRID)
    assert [(r["who"], r["own"], r["position"]) for r in table.rows] == [
        ("My Shop", True, 3), ("Rival One", False, 1), ("My Shop", True, 7), ("Rival One", False, 1)]
    assert table.rows[0]["keyword"] == "electric kettle" and table.rows[0]["locale"] == "es-ES"


def test_xlsx_has_a_sheet_per_history_with_real_numbers_and_dates(tmp_path):
    _, db = seeded(tmp_path)
    start, end = date_range(date(2026, 11, 1), date(2026, 11, 30), MADRID)
    with db.session() as session:
        (path,) = export(session, tmp_path / "h.xlsx", start=start, end=end, fmt="xlsx", tz=MADRID)
    book = load_workbook(path)
    assert book.sheetnames == ["Prices", "Rankings"]
    prices = list(book["Prices"].values)
    header = prices[0]
    assert header[header.index("first_seen (Europe/Madrid)")] and len(prices) == 4
    row = dict(zip(header, prices[1]))
    assert row["price"] == 30 and row["first_seen (Europe/Madrid)"] == datetime(2026, 11, 1, 8, 0)
    assert dict(zip(header, prices[2]))["promotions"].startswith("'=")


def test_date_range_defaults_to_the_last_30_days_and_refuses_a_backwards_range():
    start, end = date_range(None, None, MADRID, today=date(2026, 11, 23))
    assert start == datetime(2026, 10, 24, 22, tzinfo=UTC) and end == datetime(2026, 11, 23, 23, tzinfo=UTC)
    try:
        date_range(date(2026, 11, 5), date(2026, 11, 1), MADRID)
    except ValueError as exc:
        assert "after it ends" in str(exc)
    else:
        raise AssertionError("a backwards range was accepted")


def test_tracker_export_command_writes_csv_per_table_and_xlsx(tmp_path):
    seeded(tmp_path)
    (tmp_path / "tracker.yaml").write_text(CONFIG.format(path="t.db"))

    def run(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        proc = subprocess.run([sys.executable, "-m", "tracker.cli", "export", "-c", "tracker.yaml", *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    proc = run("--from", "2026-11-01", "--to", "2026-11-30", "--out", "out/h.csv")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out/h-prices.csv").is_file() and (tmp_path / "out/h-rankings.csv").is_file()
    proc = run("--from", "2026-11-01", "--to", "2026-11-30", "--format", "xlsx", "--what", "prices", "--out", "h.xlsx")
    assert proc.returncode == 0 and load_workbook(tmp_path / "h.xlsx").sheetnames == ["Prices"]
    proc = run("--from", "2026-11-30", "--to", "2026-11-01")
    assert proc.returncode == 1 and "after it ends" in proc.stderr
    proc = run("--format", "pdf")
    assert proc.returncode == 1 and "csv or xlsx" in proc.stderr

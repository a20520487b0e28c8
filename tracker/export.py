"""Price and rank history out of the database, as CSV or XLSX, for a date range (`tracker export`).

One row per observation span (consecutive identical checks, see tracker.models) that overlaps the range:
the span's first and last check, how many checks it stands for, and what they saw. Rankings give one row
per span and tracked domain. Also the report's attachments: every change of a report, and the full
price-position table, as CSV.

Cells that a spreadsheet would run as a formula (text starting with = + - @) are prefixed with an
apostrophe: names and promotion texts come from rivals' pages.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from tracker.models import Observation, Rival, Target

PRICE_COLUMNS = ("rival", "product", "url", "match", "group", "status", "reason", "first_seen", "last_seen",
                 "checks", "price", "regular_price", "currency", "availability", "promotions", "sku", "gtin")
RANK_COLUMNS = ("keyword", "engine", "locale", "device", "domain", "who", "own", "position", "url", "status",
                "reason", "first_seen", "last_seen", "checks")
CHANGE_COLUMNS = ("detected_at", "rival", "target", "url", "target_kind", "kind", "label", "old", "new", "delta",
                  "pct", "currency", "detail")
POSITION_COLUMNS = ("product", "url", "own_price", "cheapest_rival", "cheapest_price", "gap", "rivals")

What = Literal["prices", "ranks", "all"]
Format = Literal["csv", "xlsx"]


@dataclass(frozen=True)
class Table:
    name: str
    columns: Sequence[str]
    rows: list[dict[str, Any]]


def _local(value: datetime, tz: ZoneInfo) -> datetime:
    return value.astimezone(tz)


def _overlapping(session: Session, kind: str, start: datetime, end: datetime) -> list[tuple[Observation, Target,
                                                                                              Rival | None]]:
    return [tuple(r) for r in session.execute(  # type: ignore[misc]
        select(Observation, Target, Rival)
        .join(Target, Target.id == Observation.target_id)
        .outerjoin(Rival, Rival.id == Target.rival_id)
        .where(Target.kind == kind, Observation.last_seen_at >= start, Observation.first_seen_at < end)
        .order_by(Target.id, Observation.id)).all()]


def price_history(session: Session, start: datetime, end: datetime, tz: ZoneInfo = ZoneInfo("UTC")) -> Table:
    """Product price spans overlapping [start, end)."""
    rows = []
    for obs, target, rival in _overlapping(session, "product", start, end):
        rows.append({
            "rival": rival.name if rival else "", "product": target.name or obs.title or target.url,
            "url": target.url, "match": target.match_key, "group": target.group, "status": obs.status,
            "reason": obs.reason, "first_seen": _local(obs.first_seen_at, tz),
            "last_seen": _local(obs.last_seen_at, tz), "checks": obs.seen_count, "price": obs.price,
            "regular_price": obs.regular_price, "currency": obs.currency, "availability": obs.availability,
            "promotions": ", ".join(obs.promotions or []), "sku": obs.sku, "gtin": obs.gtin})
    return Table("Prices", PRICE_COLUMNS, rows)


def rank_history(session: Session, start: datetime, end: datetime, tz: ZoneInfo = ZoneInfo("UTC")) -> Table:
    """Keyword ranking spans overlapping [start, end), one row per tracked domain."""
    rows = []
    for obs, target, _ in _overlapping(session, "serp", start, end):
        spec = target.spec or {}
        data = obs.data or {}
        base = {"keyword": target.name or spec.get("term"), "engine": spec.get("engine"),
                "locale": spec.get("locale"), "device": spec.get("device"), "status": obs.status,
                "reason": obs.reason, "first_seen": _local(obs.first_seen_at, tz),
                "last_seen": _local(obs.last_seen_at, tz), "checks": obs.seen_count}
        positions = data.get("positions") or {}
        labels = data.get("labels") or {}
        own = data.get("own_domain") or spec.get("own_domain")
        if not positions:
            rows.append({**base, "domain": own, "who": labels.get(own, own), "own": bool(own),
                         "position": obs.rank, "url": None})
        for domain, found in sorted(positions.items()):
            rows.append({**base, "domain": domain, "who": labels.get(domain, domain), "own": domain == own,
                         "position": int(found[0]) if found else None, "url": found[1] if found else None})
    return Table("Rankings", RANK_COLUMNS, rows)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    return _cell(value)


def to_csv(table: Table) -> bytes:
    """UTF-8 with a byte-order mark, so spreadsheet programs read accents right."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_csv_value(row.get(c)) for c in table.columns])
    return buf.getvalue().encode("utf-8-sig")


def to_xlsx(tables: Iterable[Table], *, tz_name: str = "UTC") -> bytes:
    """One sheet per table; times are local to `tz_name` (Excel has no time zones: named in the header)."""
    from openpyxl import Workbook
    from openpyxl.utils import get_column_letter

    book = Workbook()
    book.remove(book.active)  # type: ignore[arg-type]
    for table in tables:
        sheet = book.create_sheet(table.name)
        header = [f"{c} ({tz_name})" if c in ("first_seen", "last_seen", "detected_at") else c
                  for c in table.columns]
        sheet.append(header)
        for row in table.rows:
            values = []
            for c in table.columns:
                v = row.get(c)
                if isinstance(v, datetime):
                    v = v.replace(tzinfo=None)
                elif isinstance(v, str):
                    v = _cell(v)
                values.append(v)
            sheet.append(values)
        sheet.freeze_panes = "A2"
        for i, c in enumerate(table.columns, start=1):
            sheet.column_dimensions[get_column_letter(i)].width = min(48, max(10, len(header[i - 1]) + 2))
            if c in ("first_seen", "last_seen", "detected_at"):
                for (cell,) in sheet.iter_rows(min_row=2, min_col=i, max_col=i):
                    cell.number_format = "yyyy-mm-dd hh:mm"
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def date_range(start: date | None, end: date | None, tz: ZoneInfo, *, today: date | None = None
               ) -> tuple[datetime, datetime]:
    """[start 00:00, end+1 00:00) in `tz`, as UTC; the last 30 days when not given."""
    today = today or datetime.now(tz).date()
    end = end or today
    start = start or end - timedelta(days=29)
    if start > end:
        raise ValueError(f"the range starts ({start}) after it ends ({end})")
    return (datetime.combine(start, time(), tz).astimezone(UTC),
            datetime.combine(end + timedelta(days=1), time(), tz).astimezone(UTC))


def export(session: Session, out: Path, *, start: datetime, end: datetime, what: What = "all",
           fmt: Format = "csv", tz: ZoneInfo = ZoneInfo("UTC")) -> list[Path]:
    """Write the history of [start, end) to `out` (XLSX: one file, a sheet per table; CSV: one file per
    table, `out` itself when there is one, else `<stem>-prices.csv` and `<stem>-rankings.csv`)."""
    tables = []
    if what in ("prices", "all"):
        tables.append(price_history(session, start, end, tz))
    if what in ("ranks", "all"):
        tables.append(rank_history(session, start, end, tz))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "xlsx":
        out.write_bytes(to_xlsx(tables, tz_name=str(tz)))
        return [out]
    if len(tables) == 1:
        out.write_bytes(to_csv(tables[0]))
        return [out]
    written = []
    for table in tables:
        path = out.with_name(f"{out.stem}-{table.name.lower()}.csv")
        path.write_bytes(to_csv(table))
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------------------
# The report's attachments


def changes_csv(rows: list[dict[str, Any]]) -> bytes:
    """Every change of a report (ReportData.rows), raw values."""
    return to_csv(Table("Changes", CHANGE_COLUMNS, rows))


def position_csv(rows: list[dict[str, Any]]) -> bytes:
    """The whole price-position table of a report (formatted as in the report)."""
    flat = [{"product": r["name"], "url": r["url"], "own_price": r["own"], "cheapest_rival": r["cheapest"],
             "cheapest_price": r["cheapest_price"], "gap": r["gap"],
             "rivals": "; ".join(f"{o['rival']} {o['price']}" + (" (out of stock)" if o["out"] else "")
                                 for o in r["rivals"])} for r in rows]
    return to_csv(Table("Position", POSITION_COLUMNS, flat))

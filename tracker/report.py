"""The change report: unreported changes -> plain data -> templates/*.j2 -> HTML (CSS inlined) + text.

Templates receive plain dicts and strings, never ORM objects or sessions. Rival-supplied text is data:
it is autoescaped in HTML and never rendered as a template, so `{{ 7*7 }}` in a product name stays text.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import css_inline
from babel.core import Locale, UnknownLocaleError
from babel.dates import format_datetime
from babel.numbers import format_currency, format_decimal
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from tracker.config import Config
from tracker.models import Change, Observation, Rival, Target

PRICE_KINDS = ("price_down", "price_up", "currency_changed", "regular_price_changed")
PROMO_KINDS = ("promotion_started", "promotion_ended", "promotion_changed")
STOCK_KINDS = ("out_of_stock", "back_in_stock")
HEALTH_KINDS = ("health_failed", "health_blocked", "health_unextractable", "health_recovered")

LABELS = {
    "price_down": "Price down", "price_up": "Price up", "currency_changed": "Currency changed",
    "regular_price_changed": "Regular price changed", "promotion_started": "Promotion started",
    "promotion_ended": "Promotion ended", "promotion_changed": "Promotion changed",
    "out_of_stock": "Out of stock", "back_in_stock": "Back in stock",
    "health_failed": "Failing", "health_blocked": "Blocked", "health_unextractable": "Unextractable",
    "health_recovered": "Recovered",
}


def templates_dir() -> Path:
    """The repository's templates/ folder, or the copy shipped inside the installed package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "_templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError("report templates not found (templates/report.html.j2)")


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(templates_dir()),
                      autoescape=select_autoescape(enabled_extensions=("html", "html.j2"),
                                                   default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env


class Formatter:
    """Numbers, money and dates in the report's locale (Babel)."""

    def __init__(self, locale: str, timezone: Any):
        try:
            self.locale = Locale.parse(locale)
        except (UnknownLocaleError, ValueError):
            self.locale = Locale.parse("en_US")
        self.tz = timezone

    def money(self, amount: str | Decimal | None, currency: str | None) -> str:
        if amount is None:
            return "–"
        value = Decimal(amount)
        if currency:
            return format_currency(value, currency, locale=self.locale)
        return format_decimal(value, format="#,##0.00", locale=self.locale)

    def signed_money(self, amount: str | None, currency: str | None) -> str:
        if amount is None:
            return ""
        value = Decimal(amount)
        sign = "+" if value > 0 else "−" if value < 0 else ""
        return sign + self.money(abs(value), currency)

    def pct(self, pct: str | None) -> str:
        if pct is None:
            return ""
        value = Decimal(pct)
        sign = "+" if value > 0 else "−" if value < 0 else ""
        return f"{sign}{format_decimal(abs(value), format='0.0', locale=self.locale)} %"

    def when(self, value: datetime | str | None) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return format_datetime(value.astimezone(self.tz), "yyyy-MM-dd HH:mm", locale=self.locale)


@dataclass
class ReportData:
    """Everything the templates see: plain data only."""

    title: str
    generated_at: str
    change_ids: list[int]
    summary: dict[str, int]
    summary_lines: list[str]
    rivals: list[dict[str, Any]]
    health: list[dict[str, Any]] = field(default_factory=list)
    # Sections of other target kinds: {"title", "html_template", "text_template", "data", "summary_lines"}
    sections: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.change_ids


def _describe(kind: str, data: dict[str, Any], fmt: Formatter) -> dict[str, Any]:
    cur = data.get("currency")
    row: dict[str, Any] = {"kind": kind, "label": LABELS.get(kind, kind.replace("_", " ")), "old": "", "new": "",
                           "delta": "", "pct": "", "detail": ""}
    if kind in ("price_down", "price_up"):
        row.update(old=fmt.money(data["old"], cur), new=fmt.money(data["new"], cur),
                   delta=fmt.signed_money(data.get("delta"), cur), pct=fmt.pct(data.get("pct")))
    elif kind == "currency_changed":
        row.update(old=fmt.money(data["old"], data.get("old_currency")),
                   new=fmt.money(data["new"], data.get("new_currency")))
    elif kind == "regular_price_changed":
        row.update(old=fmt.money(data.get("old"), cur), new=fmt.money(data.get("new"), cur))
    elif kind in ("promotion_started", "promotion_ended"):
        row["detail"] = ", ".join(data.get("promotions", []))
    elif kind == "promotion_changed":
        row.update(old=", ".join(data.get("old", [])), new=", ".join(data.get("new", [])))
    elif kind in STOCK_KINDS:
        row.update(old=data.get("old") or "InStock", new=data.get("new") or "InStock")
    elif kind.startswith("health_"):
        row["detail"] = data.get("reason") or ""
    return row


ChangeRow = tuple[Change, Target, "Rival | None"]
SectionBuilder = Callable[[Session, Config, Formatter, list[ChangeRow]], "dict[str, Any] | None"]
# Target kind -> builder of its report section, from its unreported (non-health) changes. Registered by
# the kind's module (tracker.kinds.*); product changes are the built-in per-rival section.
SECTION_BUILDERS: dict[str, SectionBuilder] = {}


def collect(session: Session, config: Config, *, now: datetime | None = None) -> ReportData:
    """Gather the changes not yet reported, grouped by rival and product, as plain data."""
    now = now or datetime.now(UTC)
    fmt = Formatter(config.locale, config.tz)
    rows = session.execute(
        select(Change, Target, Rival)
        .join(Target, Target.id == Change.target_id)
        .outerjoin(Rival, Rival.id == Target.rival_id)
        .where(Change.report_id.is_(None))
        .order_by(Rival.name, Target.id, Change.id)
    ).all()
    summary: Counter[str] = Counter()
    rivals: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    health: list[dict[str, Any]] = []
    change_ids: list[int] = []
    moves: list[tuple[Decimal, str]] = []
    latest_ids = {t.id for _, t, _ in rows if t.kind == "product"}
    latest = _latest_ok(session, latest_ids)
    other_kinds: dict[str, list[ChangeRow]] = defaultdict(list)
    for change, target, rival in rows:
        change_ids.append(change.id)
        summary[change.kind] += 1
        rival_name = rival.name if rival else "(keywords)"
        label = target.name or (latest.get(target.id, {}).get("title")) or target.url or target.key
        if target.kind != "product" and change.kind not in HEALTH_KINDS:
            other_kinds[target.kind].append((change, target, rival))
            continue
        if change.kind in HEALTH_KINDS:
            health.append({"rival": rival_name, "target": label, "url": target.url,
                           "status": LABELS[change.kind], "reason": change.data.get("reason") or "",
                           "runs": change.data.get("runs"), "since": fmt.when(change.data.get("since")),
                           "recovered": change.kind == "health_recovered"})
            continue
        product = rivals[rival_name].get(target.id)
        if product is None:
            current = latest.get(target.id, {})
            product = rivals[rival_name][target.id] = {
                "name": label, "url": target.url, "changes": [],
                "price": fmt.money(current.get("price"), current.get("currency")),
                "regular_price": fmt.money(current.get("regular_price"), current.get("currency"))
                if current.get("regular_price") is not None else "",
                "promotions": ", ".join(current.get("promotions") or []),
                "availability": current.get("availability") or "",
            }
        product["changes"].append(_describe(change.kind, change.data, fmt))
        if change.kind in ("price_down", "price_up") and change.data.get("pct") is not None:
            moves.append((abs(Decimal(change.data["pct"])), f"{label} ({rival_name}) "
                          f"{fmt.pct(change.data['pct'])}"))
    summary_lines = _summary_lines(summary, moves)
    sections = []
    for kind, kind_rows in sorted(other_kinds.items()):
        builder = SECTION_BUILDERS.get(kind)
        section = builder(session, config, fmt, kind_rows) if builder else None
        if section:
            sections.append(section)
            extra = section.get("summary_lines", [])
            if extra and summary_lines == ["No changes."]:
                summary_lines = []
            summary_lines += extra
    return ReportData(
        title=f"Rivalwatch report, {fmt.when(now)}",
        generated_at=fmt.when(now),
        change_ids=change_ids,
        summary=dict(summary),
        summary_lines=summary_lines,
        rivals=[{"name": name, "products": list(products.values())}
                for name, products in sorted(rivals.items())],
        health=health,
        sections=sections,
    )


def _latest_ok(session: Session, target_ids: set[int]) -> dict[int, dict[str, Any]]:
    """The newest ok observation of each target, as plain values."""
    if not target_ids:
        return {}
    out: dict[int, dict[str, Any]] = {}
    rows = session.scalars(
        select(Observation).where(Observation.target_id.in_(target_ids), Observation.status == "ok")
        .order_by(Observation.target_id, Observation.id))
    for obs in rows:
        out[obs.target_id] = {"price": obs.price, "regular_price": obs.regular_price, "currency": obs.currency,
                              "promotions": obs.promotions, "availability": obs.availability,
                              "title": obs.title}
    return out


def _summary_lines(summary: Counter[str], moves: list[tuple[Decimal, str]]) -> list[str]:
    lines = []
    down, up = summary.get("price_down", 0), summary.get("price_up", 0)
    if down or up:
        lines.append(f"{down + up} price{'s' if down + up != 1 else ''} moved: {down} down, {up} up")
    if moves:
        top = [text for _, text in sorted(moves, reverse=True)[:3]]
        lines.append("Biggest moves: " + "; ".join(top))
    for kind, text in (("promotion_started", "promotion{s} started"), ("promotion_ended", "promotion{s} ended"),
                       ("out_of_stock", "product{s} went out of stock"),
                       ("back_in_stock", "product{s} back in stock")):
        n = summary.get(kind, 0)
        if n:
            lines.append(f"{n} " + text.format(s="s" if n != 1 else ""))
    failing = sum(summary.get(k, 0) for k in HEALTH_KINDS if k != "health_recovered")
    if failing:
        lines.append(f"{failing} target{'s' if failing != 1 else ''} need attention (see Health)")
    return lines or ["No changes."]


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def render(data: ReportData, config: Config) -> Rendered:
    """HTML with inlined CSS (e-mail clients drop <style>) and its plain-text twin."""
    env = environment()
    context = {"report": data}
    html = env.get_template("report.html.j2").render(context)
    html = css_inline.inline(html)
    text = env.get_template("report.txt.j2").render(context)
    subject = config.email.subject.replace("{changes}", str(len(data.change_ids)))
    return Rendered(subject=subject, html=html, text=text)

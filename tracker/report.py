"""The change report: unreported changes -> plain data -> templates/*.j2 -> HTML (CSS inlined) + text.

Templates receive plain dicts and strings, never ORM objects or sessions. Rival-supplied text is data:
it is autoescaped in HTML and never rendered as a template, so `{{ 7*7 }}` in a product name stays text.

What the reader gets, top to bottom: the summary (price moves, biggest moves, where the own shop stands,
promotions, stock, keyword winners and losers, the health line), the price position against the own shop,
each rival's changed products (old -> new, delta, regular price, promotion, stock, link, a 30-day price
chart as an inline PNG), the sections of other target kinds (SECTION_BUILDERS), and health.

Words, numbers, money and dates follow `config.locale` (tracker.report_i18n + Babel). The HTML part of
the mail stays under MAIL_HTML_BUDGET bytes (Gmail clips messages past ~102 KB): a report too large for it
shows its most important products and attaches the full report as HTML and CSV.
"""

from __future__ import annotations

import base64
import re
from collections import Counter, defaultdict, namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from html import unescape
from pathlib import Path
from typing import Any

import css_inline
from babel.core import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, get_currency_precision, get_decimal_quantum
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from tracker.config import Config
from tracker.models import Change, Rival, Target
from tracker.position import Position, latest_ok, pct_gap, position_of
from tracker.report_i18n import catalogue, pick

PRICE_KINDS = ("price_down", "price_up", "currency_changed", "regular_price_changed")
PROMO_KINDS = ("promotion_started", "promotion_ended", "promotion_changed")
STOCK_KINDS = ("out_of_stock", "back_in_stock")
HEALTH_KINDS = ("health_failed", "health_blocked", "health_unextractable", "health_recovered")
RANK_UP_KINDS = ("rank_up", "entered_top")
RANK_DOWN_KINDS = ("rank_down", "left_top")

CHART_DAYS = 30
MAX_CHARTS = 30            # charts per report: the products with the biggest moves get them
POSITION_ROWS = 20         # position rows in the mail; all of them go to an attached CSV beyond that
MAIL_HTML_BUDGET = 95_000  # bytes of the HTML part; Gmail clips at ~102 KB
DEFAULT_SUBJECT = "Rivalwatch: {changes} changes"


_NUMBER_PERCENT = re.compile(r"(\d) %")


def templates_dir() -> Path:
    """The repository's templates/ folder, or the copy shipped inside the installed package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "_templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError("report templates not found (templates/report.html.j2)")


def environment() -> Environment:
    """The report templates' Jinja environment: made once per templates folder (compiling the templates costs
    ~0.1 s); Jinja still reloads a template whose file changed."""
    folder = templates_dir()
    env = _ENVIRONMENTS.get(folder)
    if env is None:
        env = _ENVIRONMENTS[folder] = _environment()
    return env


_ENVIRONMENTS: dict[Path, Environment] = {}


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(templates_dir()),
                      autoescape=select_autoescape(enabled_extensions=("html", "html.j2"),
                                                   default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    # "15.0 %" must not break before its "%" on a phone: a no-break space (the text stays the same to read).
    env.filters["nowrap_units"] = lambda text: _NUMBER_PERCENT.sub("\\1\u00a0%", str(text))
    return env


class Formatter:
    """Words, numbers, money and dates in the report's locale (message catalogue + Babel)."""

    def __init__(self, locale: str, timezone: Any):
        try:
            self.locale = Locale.parse(locale)
        except (UnknownLocaleError, ValueError):
            self.locale = Locale.parse("en_US")
        self.tz = timezone
        self.language = self.locale.language
        self.messages = catalogue(self.language)
        self._english = catalogue("en")
        self._money: dict[tuple[Decimal, str | None], str] = {}
        self._shapes: dict[str, Any] = {}                            # currency -> _currency_shape
        self._heads: dict[tuple[str, str, bool], str | bool] = {}   # what precedes an amount's digits
        self._pcts: dict[tuple[Decimal, bool], str] = {}

    def t(self, key: str, n: int | None = None, **values: Any) -> str:
        """The message `key` in the report's language; `n` picks the plural form and fills `{n}`."""
        message = self.messages.get(key, self._english.get(key, key))
        if n is not None:
            message = pick(message, self.locale.plural_form(abs(n)))
            values["n"] = self.number(n)
        elif isinstance(message, dict):
            message = message["other"]
        return message.format(**values) if values else message

    def label(self, kind: str) -> str:
        """The name of a change kind (`price_down` -> "Price down")."""
        if kind in self.messages or kind in self._english:
            return self.t(kind)
        return kind.replace("_", " ").capitalize()

    def availability(self, value: str | None) -> str:
        return self.t(value) if value and (value in self._english) else (value or "")

    def number(self, value: int | Decimal) -> str:
        return format_decimal(value, locale=self.locale)

    def money(self, amount: str | Decimal | None, currency: str | None) -> str:
        if amount is None:
            return "–"
        value = Decimal(amount)
        key = (value, currency)
        text = self._money.get(key)
        if text is None:
            # Babel's formatting is ~30 us a value and a report shows most prices several times.
            text = self._money[key] = (self._currency(value, currency) if currency
                                       else format_decimal(value, format="#,##0.00", locale=self.locale))
        return text

    def _currency(self, value: Decimal, currency: str) -> str:
        """format_currency(value, currency, locale), from Babel's text of the value's whole units: Babel
        rounds the amount to the currency's digits and writes prefix + units + decimal mark + digits + suffix,
        so amounts of the same whole units and sign differ only in their digits (~2,500 prices in a report:
        ~1,000 distinct whole units)."""
        shape = self._shapes.get(currency)
        if shape is None:
            shape = self._shapes[currency] = self._currency_shape(currency)
        if shape is False:
            return format_currency(value, currency, locale=self.locale)
        digits, quantum, tails = shape
        negative = value.is_signed()
        units, _, cents = f"{abs(value).normalize().quantize(quantum):f}".partition(".")
        key = (currency, units, negative)
        head = self._heads.get(key)
        if head is None:
            whole = format_currency(Decimal(("-" if negative else "") + units), currency, locale=self.locale)
            tail = tails[negative]
            head = self._heads[key] = whole[:len(whole) - digits - len(tail)] \
                if whole.endswith("0" * digits + tail) else False
        if head is False:
            return format_currency(value, currency, locale=self.locale)
        return head + cents + tails[negative]

    def _currency_shape(self, currency: str) -> tuple[int, Decimal, tuple[str, str]] | bool:
        """The currency's digits, Babel's rounding quantum for them, and what follows the digits (positive,
        negative): found by writing 1.00 and 1.11 (or 1.0 / 1.1, ...); False where Babel's text may depend on
        the amount otherwise (a currency without decimals, a pattern naming the currency in words)."""
        digits = get_currency_precision(currency)
        if not 1 <= digits <= 4 or "¤¤¤" in self.locale.currency_formats["standard"].pattern:
            return False
        tails = []
        for sign in ("", "-"):
            zeros = format_currency(Decimal(f"{sign}1.{'0' * digits}"), currency, locale=self.locale)
            ones = format_currency(Decimal(f"{sign}1.{'1' * digits}"), currency, locale=self.locale)
            at = next((i for i, (a, b) in enumerate(zip(zeros, ones)) if a != b), None)
            if at is None or len(zeros) != len(ones) or zeros[at + digits:] != ones[at + digits:] \
                    or ones[at:at + digits] != "1" * digits:
                return False
            tails.append(zeros[at + digits:])
        return digits, get_decimal_quantum(digits), (tails[0], tails[1])

    def signed_money(self, amount: str | Decimal | None, currency: str | None) -> str:
        if amount is None:
            return ""
        value = Decimal(amount)
        sign = "+" if value > 0 else "−" if value < 0 else ""
        return sign + self.money(abs(value), currency)

    def pct(self, pct: str | Decimal | None, *, signed: bool = True) -> str:
        if pct is None:
            return ""
        value = Decimal(pct)
        text = self._pcts.get((value, signed))
        if text is None:
            sign = ("+" if value > 0 else "−" if value < 0 else "") if signed else ""
            text = self._pcts[(value, signed)] = \
                f"{sign}{format_decimal(abs(value), format='0.0', locale=self.locale)} %"
        return text

    def when(self, value: datetime | str | None) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return format_datetime(value.astimezone(self.tz), "yyyy-MM-dd HH:mm", locale=self.locale)

    def day(self, value: datetime) -> str:
        """A short day for chart axes: "23 Nov", "23 nov"."""
        return format_date(value.astimezone(self.tz), "d MMM", locale=self.locale)


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
    lang: str = "en"
    labels: dict[str, str] = field(default_factory=dict)      # the templates' fixed words, translated
    position: dict[str, Any] | None = None                     # price position against the own shop
    images: dict[str, bytes] = field(default_factory=dict)     # Content-ID -> PNG (price charts)
    rows: list[dict[str, Any]] = field(default_factory=list)   # every change, flat and raw (CSV)
    notice: str = ""                                           # shown on top when the mail is shortened
    more_rivals: str = ""                                      # "...and 3 more rivals" when shortened
    subject: str = ""
    locale: str = "en_US"
    tz: Any = UTC

    @property
    def empty(self) -> bool:
        return not self.change_ids


TEMPLATE_WORDS = ("summary", "position", "you", "cheapest_rival", "gap", "gap_short", "gap_hint", "product", "now",
                  "regular", "change", "before", "after", "delta", "open_page", "alerted", "own_shop", "health",
                  "target", "status", "since", "why", "other_changes")


def _describe(kind: str, data: dict[str, Any], fmt: Formatter) -> dict[str, Any]:
    cur = data.get("currency")
    row: dict[str, Any] = {"kind": kind, "label": fmt.label(kind), "old": "", "new": "", "delta": "", "pct": "",
                           "detail": "", "alerted": bool(data.get("alerted"))}
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
        row.update(old=fmt.availability(data.get("old") or "InStock"),
                   new=fmt.availability(data.get("new") or "InStock"))
    elif kind == "rating_dropped":
        row.update(old=fmt.number(Decimal(data["old"])), new=fmt.number(Decimal(data["new"])),
                   delta="−" + fmt.number(abs(Decimal(data["delta"]))))
    elif kind == "review_surge":
        row.update(old=fmt.number(int(data["old"])), new=fmt.number(int(data["new"])),
                   delta="+" + fmt.number(int(data["delta"])), pct=fmt.pct(data.get("pct")))
    elif kind.startswith("health_"):
        row["detail"] = data.get("reason") or ""
    return row


def _importance(changes: list[tuple[str, dict[str, Any]]], undercut: bool) -> Decimal:
    """How much a product's changes matter to the reader, to order what a shortened mail keeps."""
    score = Decimal(1000) if undercut else Decimal(0)
    for kind, data in changes:
        if kind in ("price_down", "price_up") and data.get("pct") is not None:
            score = max(score, abs(Decimal(data["pct"])) + 10)
        elif kind in STOCK_KINDS:
            score = max(score, Decimal(8))
        elif kind in PROMO_KINDS or kind in ("currency_changed", "regular_price_changed"):
            score = max(score, Decimal(5))
        else:
            score = max(score, Decimal(1))
    return score


ChangeRow = tuple[Change, Target, "Rival | None"]
SectionBuilder = Callable[[Session, Config, Formatter, list[ChangeRow]], "dict[str, Any] | None"]
# Target kind -> builder of its report section, from its unreported (non-health) changes. Registered by
# the kind's module (tracker.kinds.*); product changes are the built-in per-rival section.
SECTION_BUILDERS: dict[str, SectionBuilder] = {}


def _row_type(table: Any) -> Any:
    """A read-only record of a table's row: its columns as attributes, as the ORM object has them."""
    return namedtuple(f"{table.name.capitalize()}Row", [column.key for column in table.c])  # type: ignore[misc]


_CHANGE_ROW, _TARGET_ROW, _RIVAL_ROW = (_row_type(Change.__table__), _row_type(Target.__table__),
                                        _row_type(Rival.__table__))


def _unreported(session: Session) -> list[ChangeRow]:
    """The unreported changes with their target and rival (None for keywords), as plain records of all their
    columns rather than ORM objects (loading 2,500 x 3 ORM objects took ~0.15 s of a report): the report and
    the kinds' section builders only read them."""
    tables = (Change.__table__, Target.__table__, Rival.__table__)
    result = session.execute(
        select(*(column for table in tables for column in table.c))
        .select_from(Change.__table__)
        .join(Target.__table__, Target.id == Change.target_id)
        .outerjoin(Rival.__table__, Rival.id == Target.rival_id)
        .where(Change.report_id.is_(None))
        .order_by(Rival.name, Target.id, Change.id))
    n_change, n_target = len(tables[0].c), len(tables[1].c)
    make_change, make_target, make_rival = _CHANGE_ROW._make, _TARGET_ROW._make, _RIVAL_ROW._make
    return [(make_change(row[:n_change]), make_target(row[n_change:n_change + n_target]),
             make_rival(row[n_change + n_target:]) if row[n_change + n_target] is not None else None)
            for row in result]


def collect(session: Session, config: Config, *, now: datetime | None = None, charts: bool = True) -> ReportData:
    """Gather the changes not yet reported, grouped by rival and product, as plain data."""
    from tracker import kinds

    now = now or datetime.now(UTC)
    fmt = Formatter(config.locale, config.tz)
    rows = _unreported(session)
    for kind in {t.kind for _, t, _ in rows}:
        kinds.load(kind)  # the kinds with changes to report register their sections on import
    summary: Counter[str] = Counter()
    rivals: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    own_rivals: set[str] = set()
    health: list[dict[str, Any]] = []
    change_ids: list[int] = []
    moves: list[tuple[Decimal, str]] = []
    flat: list[dict[str, Any]] = []
    latest = latest_ok(session, {t.id for _, t, _ in rows if t.kind == "product"})
    position = position_of(session, [(c.target_id, c.kind, c.data or {}) for c, t, _ in rows if t.kind == "product"])
    undercut_ids = {u.target_id for u in position.undercuts}
    other_kinds: dict[str, list[ChangeRow]] = defaultdict(list)
    for change, target, rival in rows:
        data = change.data or {}
        change_ids.append(change.id)
        summary[change.kind] += 1
        rival_name = rival.name if rival else "(keywords)"
        obs = latest.get(target.id)
        label = target.name or (obs.title if obs else None) or target.url or target.key
        flat.append({"detected_at": change.detected_at, "rival": rival_name, "target": label, "url": target.url,
                     "target_kind": target.kind, "kind": change.kind, "label": fmt.label(change.kind), **{
                         k: data.get(k) for k in ("old", "new", "delta", "pct", "currency")},
                     "detail": data.get("reason") or ", ".join(data.get("promotions", []) or [])})
        if target.kind != "product" and change.kind not in HEALTH_KINDS:
            other_kinds[target.kind].append((change, target, rival))
            continue
        if change.kind in HEALTH_KINDS:
            runs = data.get("runs")
            health.append({"rival": rival_name, "target": label, "url": target.url,
                           "status": fmt.label(change.kind), "reason": data.get("reason") or "",
                           "runs": fmt.t("runs", runs) if runs else "", "since": fmt.when(data.get("since")),
                           "recovered": change.kind == "health_recovered"})
            continue
        if rival is not None and rival.own:
            own_rivals.add(rival_name)
        product = rivals[rival_name].get(target.id)
        if product is None:
            product = rivals[rival_name][target.id] = _product_entry(target, obs, label, fmt, position)
        product["changes"].append(_describe(change.kind, data, fmt))
        product["_raw"].append((change.kind, data))
        if change.kind in ("price_down", "price_up") and data.get("pct") is not None:
            moves.append((abs(Decimal(data["pct"])), f"{label} ({rival_name}) {fmt.pct(data['pct'])}"))
    for products in rivals.values():
        for target_id, product in products.items():
            product["score"] = _importance(product.pop("_raw"), target_id in undercut_ids)
            product["alerted"] = any(c["alerted"] for c in product["changes"])
    images = _charts(session, fmt, rivals, position, now) if charts else {}

    sections = []
    section_lines: list[str] = []
    for kind, kind_rows in sorted(other_kinds.items()):
        builder = SECTION_BUILDERS.get(kind)
        section = builder(session, config, fmt, kind_rows) if builder else _generic_section(fmt, kind_rows)
        if section:
            sections.append(section)
            section_lines += section.get("summary_lines", [])
    summary_lines = _summary_lines(fmt, summary, moves, position, health, other_kinds.get("serp", []))
    summary_lines += section_lines
    if not summary_lines:
        summary_lines = [fmt.t("no_changes")]
    labels = {k: fmt.t(k) for k in TEMPLATE_WORDS}
    rival_list = [{"name": name, "own": name in own_rivals, "products": list(products.values()), "more": ""}
                  for name, products in sorted(rivals.items(), key=lambda kv: (kv[0] in own_rivals, kv[0]))]
    subject = config.email.subject
    if subject == DEFAULT_SUBJECT:
        subject = fmt.t("subject", len(change_ids))
    else:
        subject = subject.replace("{changes}", str(len(change_ids)))
    return ReportData(
        title=fmt.t("title", when=fmt.when(now)),
        generated_at=fmt.t("generated", when=fmt.when(now)),
        change_ids=change_ids,
        summary=dict(summary),
        summary_lines=summary_lines,
        rivals=rival_list,
        health=health,
        sections=sections,
        lang=fmt.language,
        labels=labels,
        position=_position_data(fmt, position) if position.rows else None,
        images=images,
        rows=flat,
        subject=subject,
        locale=config.locale,
        tz=config.tz,
    )


def _product_entry(target: Target, obs: Any, label: str, fmt: Formatter, position: Position) -> dict[str, Any]:
    currency = obs.currency if obs else None
    entry: dict[str, Any] = {
        "target_id": target.id, "name": label, "url": target.url, "changes": [], "_raw": [], "chart": None,
        "currency": currency, "more": "",
        "price": fmt.money(obs.price if obs else None, currency),
        "regular_price": fmt.money(obs.regular_price, currency) if obs and obs.regular_price is not None else "",
        "promotions": ", ".join(obs.promotions or []) if obs else "",
        "availability": fmt.availability(obs.availability) if obs else "",
        "own_price": "", "own_gap": "", "own_dearer": False,
    }
    own = position.own_of.get(target.id)
    if own is not None and own.price is not None and obs is not None and obs.price is not None \
            and (own.currency == currency or not own.currency or not currency):
        gap = pct_gap(own.price, obs.price)
        entry["own_price"] = fmt.money(own.price, own.currency)
        if gap is not None and gap != 0:
            entry["own_gap"] = fmt.t("you_dearer" if gap > 0 else "you_cheaper", pct=fmt.pct(gap, signed=False))
            entry["own_dearer"] = gap > 0
    return entry


def _charts(session: Session, fmt: Formatter, rivals: dict[str, dict[int, dict[str, Any]]], position: Position,
            now: datetime) -> dict[str, bytes]:
    """Price charts for the changed products that matter most (MAX_CHARTS), as {Content-ID: PNG}."""
    from tracker.charts import price_chart, price_series, window

    candidates = sorted((p for products in rivals.values() for p in products.values()),
                        key=lambda p: p["score"], reverse=True)[:MAX_CHARTS]
    if not candidates:
        return {}
    since, until = window(now, CHART_DAYS)
    own_ids = {p["target_id"]: position.own_of[p["target_id"]].target_id
               for p in candidates if p["target_id"] in position.own_of}
    series = price_series(session, [p["target_id"] for p in candidates] + list(own_ids.values()),
                          since=since, until=until)
    images: dict[str, bytes] = {}
    for product in candidates:
        s = series.get(product["target_id"])
        if s is None or s.empty:
            continue
        currency = product["currency"]
        own = series.get(own_ids[product["target_id"]]) if product["target_id"] in own_ids else None
        png = price_chart(s, since=since, until=until, own=own, day=fmt.day,
                          money=lambda d, c=currency: fmt.money(d, c))  # type: ignore[misc]
        cid = f"chart-{product['target_id']}@rivalwatch"
        images[cid] = png
        product["chart"] = {"cid": cid, "alt": fmt.t("chart_alt", days=CHART_DAYS), "own": own is not None}
    return images


def _position_data(fmt: Formatter, position: Position) -> dict[str, Any]:
    changed = {u.target_id for u in position.undercuts}
    rows = []
    for r in position.rows:
        rival_ids = {o.target_id for o in r.rivals}
        rows.append({
            "name": r.name, "url": r.own.url, "own": fmt.money(r.own.price, r.own.currency),
            "cheapest": r.cheapest_rival.rival if r.cheapest_rival else "",
            "cheapest_price": fmt.money(r.cheapest_rival.price, r.cheapest_rival.currency) if r.cheapest_rival else "",
            "cheapest_url": r.cheapest_rival.url if r.cheapest_rival else None,
            "gap": fmt.pct(r.gap_pct) if r.gap_pct is not None else "",
            "dearer": bool(r.gap_pct is not None and r.gap_pct > 0),
            "own_cheapest": r.own_cheapest, "undercut": bool(rival_ids & changed),
            "rivals": [{"rival": o.rival, "price": fmt.money(o.price, o.currency), "url": o.url,
                        "out": not o.buyable} for o in r.rivals],
            "_order": (not bool(rival_ids & changed), not (r.gap_pct is not None and r.gap_pct > 0),
                       -(r.gap_pct or 0), r.name.casefold()),
        })
    rows.sort(key=lambda x: x.pop("_order"))
    by_rival = Counter(u.rival for u in position.undercuts)
    more = max(0, len(rows) - POSITION_ROWS)
    return {"line": _position_line(fmt, position), "rows": rows[:POSITION_ROWS], "all_rows": rows,
            "more": more, "more_text": fmt.t("position_more", more) if more else "", "undercuts": dict(by_rival),
            "cheapest": position.cheapest, "total": position.total}


def _position_line(fmt: Formatter, position: Position) -> str:
    parts = [fmt.t("cheapest_on", position.total, cheapest=fmt.number(position.cheapest))]
    by_rival = Counter(u.rival for u in position.undercuts)
    for rival, n in sorted(by_rival.items(), key=lambda kv: (-kv[1], kv[0])):
        parts.append(fmt.t("undercut_today", n, rival=rival))
    return "; ".join(parts)


def _generic_section(fmt: Formatter, rows: list[ChangeRow]) -> dict[str, Any] | None:
    """Changes of a target kind that has no section builder: listed plainly rather than dropped."""
    items = []
    for change, target, rival in rows:
        d = change.data or {}
        items.append({"who": rival.name if rival else "", "target": target.name or target.url or target.key,
                      "url": target.url, "label": fmt.label(change.kind),
                      "old": "" if d.get("old") is None else str(d.get("old")),
                      "new": "" if d.get("new") is None else str(d.get("new"))})
    if not items:
        return None
    return {"title": fmt.t("other_changes"), "html_template": "_other_changes.html.j2",
            "text_template": "_other_changes.txt.j2", "data": {"items": items}, "summary_lines": []}


def _summary_lines(fmt: Formatter, summary: Counter[str], moves: list[tuple[Decimal, str]], position: Position,
                   health: list[dict[str, Any]], serp_rows: list[ChangeRow]) -> list[str]:
    lines = []
    down, up = summary.get("price_down", 0), summary.get("price_up", 0)
    if down or up:
        lines.append(fmt.t("prices_moved", down + up, down=fmt.number(down), up=fmt.number(up)))
    if moves:
        top = [text for _, text in sorted(moves, key=lambda m: m[0], reverse=True)[:3]]
        lines.append(fmt.t("biggest_moves", moves="; ".join(top)))
    if position.rows:
        lines.append(_position_line(fmt, position))
    for kind, key in (("promotion_started", "promotions_started"), ("promotion_ended", "promotions_ended"),
                      ("out_of_stock", "out_of_stock_n"), ("back_in_stock", "back_in_stock_n")):
        n = summary.get(kind, 0)
        if n:
            lines.append(fmt.t(key, n))
    lines += _keyword_lines(fmt, serp_rows)
    failing = [h for h in health if not h["recovered"]]
    if failing:
        items = [fmt.t("health_item" if h["since"] else "health_item_short", target=f"{h['rival']}: {h['target']}",
                       status=h["status"], since=h["since"], reason=h["reason"] or "?") for h in failing[:3]]
        lines.append(fmt.t("health_line", len(failing), items="; ".join(items) + ("; …" if len(failing) > 3 else "")))
    recovered = len(health) - len(failing)
    if recovered:
        lines.append(fmt.t("recovered_n", recovered))
    return lines


def _keyword_lines(fmt: Formatter, rows: list[ChangeRow]) -> list[str]:
    """Keyword winners and losers of the own site (rank changes of the own domain)."""
    ups, downs = [], []
    for change, target, _ in rows:
        d = change.data or {}
        if not d.get("own") or change.kind not in RANK_UP_KINDS + RANK_DOWN_KINDS:
            continue
        term = target.name or (target.spec or {}).get("term") or target.key
        old, new = d.get("old"), d.get("new")
        depth = d.get("depth") or 100
        gain = (old if old is not None else depth + 1) - (new if new is not None else depth + 1)
        text = f"“{term}” ({'#' + str(old) if old else '–'} → {'#' + str(new) if new else '–'})"
        (ups if change.kind in RANK_UP_KINDS else downs).append((abs(gain), text))
    if not ups and not downs:
        return []
    line = fmt.t("keywords_moved", up=fmt.number(len(ups)), down=fmt.number(len(downs)))
    parts = [line]
    if ups:
        parts.append(fmt.t("keyword_winners", items=", ".join(t for _, t in sorted(ups, reverse=True)[:3])))
    if downs:
        parts.append(fmt.t("keyword_losers", items=", ".join(t for _, t in sorted(downs, reverse=True)[:3])))
    return [" · ".join(parts)]


# ----------------------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str                     # the mail's HTML with its images as data: URIs (to open as a file)
    text: str
    mail_html: str = ""           # the HTML part as mailed: images referenced as cid:
    images: dict[str, bytes] = field(default_factory=dict)          # Content-ID -> PNG, inline
    attachments: tuple[tuple[str, str, bytes], ...] = ()            # (filename, MIME type, bytes)
    truncated: bool = False

    def message(self, config: Config, *, recipients: list[str] | None = None) -> EmailMessage:
        """The whole e-mail (text + HTML + inline charts + attachments), ready for the outbox."""
        from tracker.mail import build_message

        return build_message(subject=self.subject, sender=config.email.from_,
                             recipients=list(config.email.to if recipients is None else recipients),
                             html=self.mail_html or self.html, text=self.text, inline_images=self.images or None,
                             attachments=self.attachments)


_BETWEEN_TAGS = re.compile(r">[ \t]*\n\s*<")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# @media rules (dark mode, phones) stay in a <style>; the rest is inlined, minified (the 100 KB budget).
_INLINER = css_inline.CSSInliner(keep_at_rules=True, minify_css=True, load_remote_stylesheets=False)


def render_html(env: Environment, data: ReportData, *, inline: bool, template: str = "report.html.j2",
                inline_css: bool = True) -> str:
    """The report's HTML; `inline` references images by Content-ID (mail), else embeds them (file).
    Without `inline_css` the CSS stays in its <style> (for a browser, a third of the size)."""
    def image(cid: str) -> str:
        return f"cid:{cid}" if inline else _data_uri(data.images[cid])

    html = env.get_template(template).render({"report": data, "image": image})
    if not inline_css:
        return _BETWEEN_TAGS.sub(">\n<", html)
    # Indentation between tags weighs a lot at 2,000 rows; a newline renders the same as the run it replaces.
    return _BETWEEN_TAGS.sub(">\n<", _INLINER.inline(html))


def render(data: ReportData, config: Config, *, budget: int = MAIL_HTML_BUDGET) -> Rendered:
    """HTML with inlined CSS (e-mail clients drop <style>) and its plain-text twin; shortened with the full
    report attached when the HTML part would pass `budget` bytes."""
    from tracker.export import changes_csv, position_csv

    env = environment()
    subject = data.subject or config.email.subject.replace("{changes}", str(len(data.change_ids)))
    attachments: list[tuple[str, str, bytes]] = []
    shown = data
    full = render_html(env, data, inline=False, inline_css=False)  # the attachment if shortened (for a browser)
    if _least_size(full) > budget:
        # Its text alone is over budget: so is the whole mail's HTML, without inlining its CSS (~0.3 s at 2,500
        # products) to know by how much.
        truncated, full_size = True, None
    else:
        mail_html = render_html(env, data, inline=True)
        full_size = len(mail_html.encode("utf-8"))
        truncated = full_size > budget
    if truncated:
        attachments += [("rivalwatch-report.html", "text/html", full.encode("utf-8")),
                        ("rivalwatch-changes.csv", "text/csv", changes_csv(data.rows))]
        shown, mail_html = _fit(env, data, budget, full_size)
    if data.position and (data.position["more"] or (shown.position and shown.position["more"])):
        attachments.append(("rivalwatch-position.csv", "text/csv", position_csv(data.position["all_rows"])))
    text = env.get_template("report.txt.j2").render({"report": shown})
    images = {cid: png for cid, png in shown.images.items() if f"cid:{cid}" in mail_html}
    html = render_html(env, replace(shown, images=images), inline=False)
    return Rendered(subject=subject, html=html, text=text, mail_html=mail_html, images=images,
                    attachments=tuple(attachments), truncated=truncated)


# What a report's HTML keeps whatever its CSS inlining does: its text. Tags, comments, <style> and <script>
# contents and whitespace (collapsed between tags) left out.
_NOT_TEXT = re.compile(r"<style\b.*?</style\s*>|<script\b.*?</script\s*>|<!--.*?-->|<[^>]*>|\s+",
                       re.DOTALL | re.IGNORECASE)


def _least_size(html: str) -> int:
    """A lower bound of the size in bytes of any mail HTML made from `html` (the same report with its images
    referenced otherwise or its CSS inlined): the UTF-8 size of its text, entities unescaped, spaces left out."""
    return len(unescape(_NOT_TEXT.sub("", html)).encode("utf-8"))


def _fit(env: Environment, data: ReportData, budget: int, full_size: int | None = None
         ) -> tuple[ReportData, str]:
    """The largest shortened report (most important products first) whose HTML fits in `budget`.
    `full_size`, the size of the whole report's HTML, helps guess how many products fit."""
    products = sorted(((p["score"], i, j) for i, r in enumerate(data.rivals) for j, p in enumerate(r["products"])),
                      key=lambda x: (-x[0], x[1], x[2]))
    for compact in (False, True):
        def attempt(n: int, compact: bool = compact) -> tuple[int, tuple[ReportData, str]]:
            candidate = _shortened(data, {(i, j) for _, i, j in products[:n]}, compact)
            html = render_html(env, candidate, inline=True)
            return len(html.encode("utf-8")), (candidate, html)

        best = _largest_fitting(attempt, len(products), budget, full_size)
        if best is not None:
            return best
    # Nothing fits even with sections and products left out: the summary alone.
    candidate = _shortened(data, set(), True, summary_only=True)
    return candidate, render_html(env, candidate, inline=True)


FIT_PROBE = 16  # products of the first guess when nothing tells the size of a product yet


def _largest_fitting(attempt: Callable[[int], tuple[int, Any]], n: int, budget: int, full_size: int | None = None
                     ) -> Any | None:
    """What `attempt(k)` gives (with its size) for the largest k in 0..n whose size is <= `budget`, None if
    even k = 0 is too large; sizes grow with k. The result of a bisection of 0..n, in fewer attempts: a
    report's size grows about linearly with its products, so each guess extrapolates from the sizes known
    (`full_size`: that of all n, if known), one over its guess, until a size over budget is known, then
    interpolates between the nearest sizes on either side, bisecting whenever a guess did not halve the
    interval."""
    size0, value0 = attempt(0)
    if size0 > budget:
        return None
    lo, lo_size, best = 0, size0, value0                     # the largest k known to fit
    hi, hi_size = n + 1, None                                  # the smallest k known not to fit
    bisect, over = False, 1.0
    while hi - lo > 1:
        interpolated = False
        if bisect:
            k = (lo + hi) // 2
        elif hi_size is not None:
            k, interpolated = lo + int((budget - lo_size) * (hi - lo) / (hi_size - lo_size)), True
        else:
            if lo > 0 and lo_size > size0:
                per: float | None = (lo_size - size0) / lo
            elif full_size is not None and full_size > size0 and n > 0:
                per = (full_size - size0) / n
            else:
                per = None
            k = (lo + 1) * 2 if per is None and lo else FIT_PROBE if per is None \
                else lo + int((budget - lo_size) / per * over) + 1
        k = min(max(k, lo + 1), hi - 1)
        width = hi - lo
        size, value = attempt(k)
        if size <= budget:
            lo, lo_size, best = k, size, value
            if hi_size is None:
                over *= 1.5  # the guess fell short: aim further next time
        else:
            hi, hi_size = k, size
        bisect = interpolated and (hi - lo) * 2 > width
    return best


def _shortened(data: ReportData, keep: set[tuple[int, int]], compact: bool, *, summary_only: bool = False
               ) -> ReportData:
    """`data` with only the products in `keep` ((rival index, product index)); `compact` also leaves out
    the other kinds' sections and long health and position tables."""
    fmt = Formatter(data.locale, data.tz)
    rivals, left_out = [], 0
    for i, rival in enumerate(data.rivals):
        products = [] if summary_only else sorted(
            (p for j, p in enumerate(rival["products"]) if (i, j) in keep), key=lambda p: -p["score"])
        left_out += sum(len(p["changes"]) for j, p in enumerate(rival["products"]) if (i, j) not in keep)
        if not products:
            continue
        more = len(rival["products"]) - len(products)
        rivals.append({**rival, "products": products, "more": fmt.t("more_products", more) if more else ""})
    sections, health, position = data.sections, data.health, data.position
    if compact:
        left_out += sum(1 for r in data.rows if r["target_kind"] != "product" and r["kind"] not in HEALTH_KINDS)
        left_out += max(0, len(health) - 10)
        sections, health = [], health[:10]
        if position:
            more = position["more"] + max(0, len(position["rows"]) - 5)
            position = {**position, "rows": position["rows"][:5], "more": more,
                        "more_text": fmt.t("position_more", more) if more else ""}
    if summary_only:
        position = None
    total = len(data.change_ids)
    rivals_out = len(data.rivals) - len(rivals)
    return replace(data, rivals=rivals, sections=sections, health=health, position=position,
                   notice=fmt.t("truncated", shown=fmt.number(total - left_out), total=fmt.number(total)),
                   more_rivals=fmt.t("more_rivals", rivals_out) if rivals_out else "")

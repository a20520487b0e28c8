"""The change report as data and as mail: summary, price position against the own shop, locales, escaping
of rival-supplied text, inline charts, and the 100 KB budget of the HTML part with 2,000 changes."""

from __future__ import annotations

import csv
import io
import re
import string
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select

from tracker.app import preview_report, queue_report
from tracker.config import parse_config
from tracker.db import Database
from tracker.models import Change, OutboxMessage, Rival, Target
from tracker.position import Offer, compute
from tracker.report import MAIL_HTML_BUDGET, collect, render
from tracker.report_i18n import CATALOGUES, missing_keys
from tracker.store import Observed, record_check
from tracker.targets import sync_targets

NOW = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
DAY1, DAY2 = NOW - timedelta(days=1), NOW - timedelta(hours=1)

CONFIG = """\
database: {database}
timezone: Europe/Madrid
locale: {locale}
email: {{from: reports@shop.test, to: [manager@shop.test]}}
rivals:
  - name: My Shop
    own: true
    products:
      - {{name: Trail Runner 2, url: "https://my.test/p/tr2", match: TR2}}
      - {{name: Road Racer, url: "https://my.test/p/rr1", match: RR1}}
  - name: Rival One
    products:
      - {{name: Trail Runner 2, url: "https://one.test/p/tr2", match: TR2, group: running}}
      - {{name: Road Racer, url: "https://one.test/p/rr1", match: RR1, group: running}}
      - {{name: E-Bike City 500, url: "https://one.test/p/eb", group: bikes}}
  - name: Rival Two
    products:
      - {{name: Trail Runner 2, url: "https://two.test/p/tr2", match: TR2}}
"""

# url -> (day 1, day 2): (price, regular price, promotions, availability)
PRICES = {
    "https://my.test/p/tr2": (("119.00", None, (), "InStock"), ("119.00", None, (), "InStock")),
    "https://my.test/p/rr1": (("95.00", None, (), "InStock"), ("95.00", None, (), "InStock")),
    "https://one.test/p/tr2": (("129.90", None, (), "InStock"), ("114.90", None, (), "InStock")),
    "https://one.test/p/rr1": (("99.00", None, (), "InStock"), ("104.00", None, (), "InStock")),
    "https://one.test/p/eb": (("1299.00", None, (), "InStock"), ("1104.15", "1299.00", ("-15%",), "InStock")),
    "https://two.test/p/tr2": (("125.00", None, (), "InStock"), ("125.00", None, (), "OutOfStock")),
}


def seed(db: Database, config, prices=PRICES) -> None:  # type: ignore[no-untyped-def]
    """Two checks of every product (day 1, day 2) through the real store: real spans and real changes."""
    with db.session() as session:
        sync_targets(session, config)
    for slot, index in ((DAY1, 0), (DAY2, 1)):
        with db.session() as session:
            for target in session.scalars(select(Target).where(Target.kind == "product")):
                price, regular, promos, availability = prices[target.url][index]
                record_check(session, target.id, slot, Observed(
                    "ok", price=Decimal(price), regular_price=Decimal(regular) if regular else None,
                    currency="EUR", availability=availability, promotions=tuple(promos), title=target.name),
                    now=slot)


@pytest.fixture
def world(tmp_path):  # type: ignore[no-untyped-def]
    def make(locale: str = "en_US", config_text: str = CONFIG, prices=PRICES):  # type: ignore[no-untyped-def]
        config = parse_config(config_text.format(database=f"sqlite:///{tmp_path}/t-{locale}.db", locale=locale))
        db = Database.open(config.database)
        seed(db, config, prices)
        return config, db
    return make


def report(config, db, **kw):  # type: ignore[no-untyped-def]
    with db.session() as session:
        return collect(session, config, now=NOW, **kw)


def test_summary_answers_what_rivals_did_and_where_the_own_shop_stands(world):
    config, db = world()
    data = report(config, db)
    lines = data.summary_lines
    assert lines[0] == "3 prices moved: 2 down, 1 up"
    assert lines[1].startswith("Biggest moves: E-Bike City 500 (Rival One) −15.0 %; Trail Runner 2 (Rival One) −11.5 %")
    # TR2: own 119.00; Rival One went 129.90 -> 114.90 (undercut), Rival Two 125.00 but out of stock.
    # RR1: own 95.00; Rival One 104.00: own cheapest.
    assert "You are cheapest on 1 of 2 products; Rival One undercut you on 1 product today" in lines
    assert "1 promotion started" in lines and "1 product went out of stock" in lines

    position = data.position
    assert position is not None and (position["cheapest"], position["total"]) == (1, 2)
    first = position["rows"][0]  # the undercut product comes first
    assert (first["name"], first["own"], first["cheapest"], first["cheapest_price"], first["gap"], first["dearer"]) == (
        "Trail Runner 2", "€119.00", "Rival One", "€114.90", "+3.6 %", True)
    assert first["undercut"] is True
    assert {o["rival"]: o["out"] for o in first["rivals"]} == {"Rival One": False, "Rival Two": True}

    rival_one = next(r for r in data.rivals if r["name"] == "Rival One")
    tr2 = next(p for p in rival_one["products"] if p["name"] == "Trail Runner 2")
    assert tr2["own_price"] == "€119.00" and tr2["own_gap"] == "you are 3.6 % dearer" and tr2["own_dearer"]
    assert tr2["changes"][0]["old"] == "€129.90" and tr2["changes"][0]["delta"] == "−€15.00"
    eb = next(p for p in rival_one["products"] if p["name"] == "E-Bike City 500")
    assert eb["promotions"] == "-15%" and eb["regular_price"] == "€1,299.00" and eb["own_price"] == ""


def test_products_match_across_shops_by_match_key_gtin_or_sku_transitively():
    def offer(i, rival, price, keys, own=False, availability="InStock"):  # type: ignore[no-untyped-def]
        return Offer(target_id=i, rival=rival, own=own, name=f"p{i}", url=None, price=Decimal(price),
                     currency="EUR", availability=availability, keys=keys)

    offers = [
        offer(1, "Me", "10.00", ("match:a", "gtin:04006381333931"), own=True),
        offer(2, "R1", "9.50", ("gtin:04006381333931",)),          # same GTIN as the own product
        offer(3, "R2", "9.00", ("sku:ab-123", "gtin:04006381333931")),
        offer(4, "R3", "8.00", ("sku:ab-123",), availability="OutOfStock"),  # via R2's SKU; not buyable
        offer(5, "Me", "20.00", ("match:b",), own=True),
        offer(6, "R1", "25.00", ("match:b",)),
        offer(7, "R1", "5.00", ("match:c",)),                      # no own product: not in the position
    ]
    position = compute(offers, [(2, "price_down", {"old": "10.50", "new": "9.50", "currency": "EUR"}),
                                (6, "price_down", {"old": "30.00", "new": "25.00", "currency": "EUR"})])
    assert position.total == 2 and position.cheapest == 1
    rows = {r.own.target_id: r for r in position.rows}
    assert rows[1].cheapest_rival.rival == "R2" and rows[1].gap_pct == Decimal("11.1")
    assert {o.rival for o in rows[1].rivals} == {"R1", "R2", "R3"}
    assert rows[5].own_cheapest and rows[5].gap_pct == Decimal("-20.0")
    assert [(u.rival, u.old, u.new) for u in position.undercuts] == [("R1", Decimal("10.50"), Decimal("9.50"))]


@pytest.mark.parametrize("locale, expect", [
    ("en_US", ["Rivalwatch report", "Price down", "€1,104.15", "−15.0 %", "Price position", "You are cheapest"]),
    ("es_ES", ["Informe Rivalwatch", "Bajada de precio", "1.104,15\xa0€", "−15,0 %", "Posición de precio",
               "Eres el más barato en 1 de 2 productos", "Rival One te ha rebajado el precio en 1 producto hoy"]),
    ("pt_PT", ["Relatório Rivalwatch", "Preço desceu", "1\xa0104,15\xa0€", "−15,0 %", "Posição de preço",
               "É o mais barato em 1 de 2 produtos"]),
    ("pt_BR", ["Relatório Rivalwatch", "Preço desceu", "€\xa01.104,15"]),
    ("it_IT", ["Report Rivalwatch", "Prezzo in calo", "1.104,15\xa0€", "−15,0 %", "Posizionamento di prezzo",
               "Sei il più economico su 1 di 2 prodotti"]),
])
def test_language_and_number_formats_follow_the_configured_locale(world, locale, expect):
    config, db = world(locale)
    rendered = render(report(config, db), config)
    for text in expect:
        assert text in rendered.text, (locale, text)
    assert f'<html lang="{locale[:2]}"' in rendered.html
    if locale != "en_US":
        assert "Price down" not in rendered.text and "Now " not in rendered.text


def test_every_language_has_every_message_and_each_one_formats():
    assert missing_keys() == {}
    values = {"n": "2", "cheapest": "3", "total": "4", "down": "1", "up": "1", "moves": "x", "when": "y", "items": "z",
              "target": "t", "status": "s", "since": "d", "reason": "r", "rival": "R", "pct": "1 %", "days": "30",
              "shown": "1", "min": "5", "own": "€1", "map": "€2", "term": "k", "old": "#1", "new": "#5"}
    for lang, messages in CATALOGUES.items():
        for key, message in messages.items():
            for form in (message.values() if isinstance(message, dict) else [message]):
                fields = {f for _, f, _, _ in string.Formatter().parse(form) if f}
                assert fields <= set(values), (lang, key, fields - set(values))
                form.format(**values)


HOSTILE_NAME = '<img src=x onerror="alert(1)"> {{ 7*7 }} {% for x in y %}'
HOSTILE_PROMO = "<script>alert('x')</script>-50% {{ config }}"


def test_rival_supplied_text_is_shown_escaped_never_run_as_html_or_template(world):
    prices = {**PRICES, "https://one.test/p/eb": (("1299.00", None, (), "InStock"),
                                                  ("1104.15", None, (HOSTILE_PROMO,), "InStock"))}
    config, db = world(prices=prices)
    with db.session() as session:
        target = session.scalars(select(Target).where(Target.url == "https://one.test/p/eb")).one()
        target.name = HOSTILE_NAME
    rendered = render(report(config, db), config)
    for html in (rendered.html, rendered.mail_html):
        assert "<script" not in html and "<img src=x" not in html
        assert "&lt;img src=x onerror=" in html and "{{ 7*7 }}" in html and "{% for x in y %}" in html
        assert "&lt;script&gt;alert(" in html and "{{ config }}" in html
        assert "&gt; {{ 7*7 }} {% for x in y %}" in html  # not evaluated: no 49, no loop
    assert HOSTILE_NAME in rendered.text and HOSTILE_PROMO in rendered.text  # plain text: as it is


def test_plain_text_alternative_carries_what_the_html_shows(world):
    config, db = world()
    data = report(config, db)
    rendered = render(data, config)
    for rival in data.rivals:
        assert rival["name"] in rendered.text
        for product in rival["products"]:
            assert product["name"] in rendered.text and product["url"] in rendered.text
            for change in product["changes"]:
                for value in (change["label"], change["old"], change["new"], change["delta"], change["pct"]):
                    assert value in rendered.text and value.replace(" %", "") in rendered.mail_html
    for line in data.summary_lines:
        assert line in rendered.text
    assert data.position["line"] in rendered.text


def test_queued_report_carries_each_chart_inline_by_content_id(world):
    config, db = world()
    queued = queue_report(config, db)
    assert queued is not None
    with db.session() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert session.scalars(select(Change).where(Change.report_id.is_(None))).all() == []
    message = message_from_bytes(row.mime, policy=policy.default)
    html = next(p for p in message.walk() if p.get_content_type() == "text/html").get_content()
    pngs = {p["Content-ID"].strip("<>"): p.get_payload(decode=True) for p in message.walk()
            if p.get_content_type() == "image/png"}
    referenced = set(re.findall(r'src="cid:([^"]+)"', html))
    assert referenced and referenced == set(pngs)  # every chart referenced is attached, and only those
    for png in pngs.values():
        assert png.startswith(b"\x89PNG") and 500 < len(png) < 12_000
    assert "data:image/png;base64," in row.html  # the stored copy opens as a file, charts and all
    assert "<script" not in html and "<style>" in html and "prefers-color-scheme: dark" in html


def test_preview_marks_nothing_reported(world):
    config, db = world()
    rendered = preview_report(config, db)
    assert "Trail Runner 2" in rendered.html
    with db.session() as session:
        assert all(c.report_id is None for c in session.scalars(select(Change)))


def test_changes_of_a_kind_without_a_section_builder_are_listed_not_dropped(world):
    config, db = world()
    with db.session() as session:
        rival = session.scalars(select(Rival).where(Rival.name == "Rival One")).one()
        target = Target(kind="widget", key="w1", url="https://one.test/w", name="Widget feed", rival_id=rival.id,
                        spec={}, fail_streak=0)
        session.add(target)
        session.flush()
        session.add(Change(target_id=target.id, kind="widget_grew", data={"old": 1, "new": 2}))
    rendered = render(report(config, db), config)
    assert "Other changes" in rendered.text and "Widget feed: Widget grew: 1 -> 2" in rendered.text


def test_health_line_says_what_fails_since_when_and_why(world):
    config, db = world()
    with db.session() as session:
        target = session.scalars(select(Target).where(Target.url == "https://two.test/p/tr2")).one()
        session.add(Change(target_id=target.id, kind="health_blocked",
                           data={"runs": 3, "reason": "captcha: cf-challenge", "since": "2026-11-21T06:00:00+00:00"}))
    data = report(config, db)
    assert ("1 target needs attention: Rival Two: Trail Runner 2 (Blocked since 2026-11-21 07:00: "
            "captcha: cf-challenge)") in data.summary_lines
    assert data.health[0]["runs"] == "3 runs"


# ----------------------------------------------------------------------------------------------------------
# Size: 2,000 changes


def big_config(n: int) -> tuple[str, dict]:
    own = "\n".join(f'      - {{name: "Own {i}", url: "https://my.test/p/{i}", match: "K{i}"}}' for i in range(n))
    rival = "\n".join(f'      - {{name: "Product number {i} with a fairly long descriptive name", '
                      f'url: "https://rival.test/catalogue/p/{i}", match: "K{i}"}}' for i in range(n))
    text = ("database: {database}\nlocale: {locale}\nemail: {{from: r@shop.test, to: [m@shop.test]}}\n"
            "rivals:\n  - name: My Shop\n    own: true\n    products:\n" + own.replace("{", "{{").replace("}", "}}")
            + "\n  - name: Big Rival\n    products:\n" + rival.replace("{", "{{").replace("}", "}}") + "\n")
    prices = {}
    for i in range(n):
        prices[f"https://my.test/p/{i}"] = (("50.00", None, (), "InStock"),) * 2
        old, new = Decimal(40 + i % 20), Decimal(40 + i % 20) + (Decimal(i % 7) - 3 or 1)
        prices[f"https://rival.test/catalogue/p/{i}"] = ((str(old), None, (), "InStock"),
                                                         (str(new), None, (f"Deal {i}",), "InStock"))
    return text, prices


def test_two_thousand_changes_keep_the_html_part_under_100_kb_and_attach_the_full_report(world):
    text, prices = big_config(1000)  # a price move and a promotion each: 2,000 changes
    config, db = world(config_text=text, prices=prices)
    started = time.monotonic()
    data = report(config, db)
    assert len(data.change_ids) == 2000
    rendered = render(data, config)
    elapsed = time.monotonic() - started
    size = len(rendered.mail_html.encode("utf-8"))
    print(f"2,000 changes: HTML part {size} bytes, full report "
          f"{len(rendered.attachments[0][2])} bytes, {len(rendered.images)} charts, {elapsed:.1f} s")
    assert rendered.truncated and size <= MAIL_HTML_BUDGET < 100_000
    names = [a[0] for a in rendered.attachments]
    assert names[:2] == ["rivalwatch-report.html", "rivalwatch-changes.csv"]
    assert "rivalwatch-position.csv" in names
    full = rendered.attachments[0][2].decode()
    assert "Product number 999 with" in full and full.count('<tr valign="top">') >= 2000
    rows = list(csv.DictReader(io.StringIO(rendered.attachments[1][2].decode("utf-8-sig"))))
    assert len(rows) == 2000 and {r["kind"] for r in rows} == {"price_down", "price_up", "promotion_started"}
    shown = re.search(r"shows ([\d,]+) of 2,000 changes", rendered.text)
    assert shown and 50 < int(shown.group(1).replace(",", "")) < 2000
    assert "more products of this rival in the attached report" in rendered.text
    # What the mail keeps is what matters most: undercuts of the own price, then the biggest moves.
    products = [p for r in data.rivals for p in r["products"]]
    kept = [p["score"] for p in products if f">{p['name']}<" in rendered.mail_html]
    left = [p["score"] for p in products if f">{p['name']}<" not in rendered.mail_html]
    assert len(kept) > 25 and min(kept) >= max(left)
    message = rendered.message(config)
    html_part = next(p for p in message.walk() if p.get_content_type() == "text/html").get_content()
    assert len(html_part.encode("utf-8")) < 100_000
    assert elapsed < 60


def _fit_by_bisection(env, data, budget):  # type: ignore[no-untyped-def]
    """The shortened report as report._fit found it before it guessed its sizes: a plain bisection."""
    from tracker.report import _shortened, render_html

    products = sorted(((p["score"], i, j) for i, r in enumerate(data.rivals) for j, p in enumerate(r["products"])),
                      key=lambda x: (-x[0], x[1], x[2]))
    best = None
    for compact in (False, True):
        lo, hi = 0, len(products)
        while lo <= hi:
            mid = (lo + hi) // 2
            candidate = _shortened(data, {(i, j) for _, i, j in products[:mid]}, compact)
            html = render_html(env, candidate, inline=True)
            if len(html.encode("utf-8")) <= budget:
                best, lo = (candidate, html), mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best
    candidate = _shortened(data, set(), True, summary_only=True)
    return candidate, render_html(env, candidate, inline=True)


def test_shortened_report_is_the_one_a_bisection_finds(world):
    from tracker import report as report_module

    text, prices = big_config(300)
    config, db = world(config_text=text, prices=prices)
    data = report(config, db)
    env = report_module.environment()
    full = len(report_module.render_html(env, data, inline=True).encode("utf-8"))
    for budget in (MAIL_HTML_BUDGET, MAIL_HTML_BUDGET + 1, 40_000, 16_001, 9_000, 2_000):
        attempts = []
        real = report_module.render_html

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            attempts.append(1)
            return real(*args, **kwargs)

        report_module.render_html = counting
        try:
            shown, html = report_module._fit(env, data, budget, full if budget % 2 else None)
        finally:
            report_module.render_html = real
        expected_shown, expected_html = _fit_by_bisection(env, data, budget)
        assert html == expected_html, budget
        assert shown.notice == expected_shown.notice
        print(f"budget {budget}: {len(attempts)} renders")


def test_largest_fitting_agrees_with_a_bisection():
    import random

    from tracker.report import _largest_fitting

    rng = random.Random(5)
    for case in range(300):
        n = rng.choice((0, 1, 2, 5, 40, 2500))
        base = rng.randint(0, 5000)
        steps = [rng.choice((0, 10, 30, 31, 500)) for _ in range(n)]
        sizes = [base]
        for step in steps:
            sizes.append(sizes[-1] + step)
        budget = rng.randint(0, sizes[-1] + 100)
        calls = []

        def attempt(k: int) -> tuple[int, int]:
            calls.append(k)
            return sizes[k], k

        expected = max((k for k in range(n + 1) if sizes[k] <= budget), default=None)
        full = sizes[-1] if rng.random() < 0.8 else None
        assert _largest_fitting(attempt, n, budget, full) == expected, (case, n, budget)
        assert len(calls) <= 2 * max(1, n).bit_length() + 2
    # Sizes growing linearly: found in a few attempts.
    sizes = [3000 + 37 * k for k in range(2501)]
    calls = []
    assert _largest_fitting(lambda k: (calls.append(k), (sizes[k], k))[1], 2500, 95_000, sizes[-1]) == 2486
    assert len(calls) <= 4


def test_a_report_whose_text_is_over_budget_is_shortened_without_inlining_its_whole_css(world, monkeypatch):
    """render skips the CSS inlining of a whole report whose text alone is over budget: the same mail."""
    from tracker import report as report_module

    text, prices = big_config(300)
    config, db = world(config_text=text, prices=prices)
    data = report(config, db)
    for budget in (MAIL_HTML_BUDGET, 20_000):
        full = report_module.render_html(report_module.environment(), data, inline=True)
        assert report_module._least_size(full) <= len(full.encode("utf-8"))
        quick = render(data, config, budget=budget)
        with monkeypatch.context() as m:
            m.setattr(report_module, "_least_size", lambda html: 0)
            exact = render(data, config, budget=budget)
        assert quick == exact and quick.truncated


@pytest.mark.parametrize("locale", ["en_US", "es_ES", "pt_BR", "it_IT", "de_CH", "fr_FR", "hi_IN", "ja_JP", "ar_EG"])
def test_money_is_babels_format_currency(locale):
    """Formatter.money writes amounts from Babel's text of their whole units: the same text as Babel's."""
    import random
    from zoneinfo import ZoneInfo

    from babel.numbers import format_currency

    from tracker.report import Formatter

    rng = random.Random(3)
    values = [Decimal(rng.randint(-10**9, 10**9)) / Decimal(10) ** rng.randint(0, 5) for _ in range(400)]
    values += [Decimal(v) for v in ("0", "-0", "-0.001", "0.005", "0.015", "999.995", "-999.995", "1E+3", "12.5000")]
    for currency in ("EUR", "USD", "JPY", "CHF", "BHD", "INR"):
        fmt = Formatter(locale, ZoneInfo("UTC"))
        for value in values:
            # (money's memo of formatted amounts holds 0 and -0 as one: equal Decimals)
            assert fmt._currency(value, currency) == format_currency(value, currency, locale=fmt.locale), \
                (currency, value)

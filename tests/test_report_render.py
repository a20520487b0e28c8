"""The report as a reader sees it, in a real Chromium: no horizontal scroll at 375 px (phone) nor 800 px
(desktop mail client), light and dark, charts that load, nothing of the rivals' text that runs.
Screenshots and the HTML are kept under test-artifacts/ for a person to look at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from tracker.alerts import AlertsConfig, PriceMoveRule, queue_alerts
from tracker.config import parse_config
from tracker.db import Database
from tracker.models import Change, Target
from tracker.report import collect, render
from tracker.store import Observed, record_check
from tracker.targets import sync_targets

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
NOW = datetime.now(UTC).replace(microsecond=0)
LONG = "UltraLightCarbonTrailRunningShoeWithoutAnySpacesAtAll-EU-42.5-black/anthracite-2026-edition"
HOSTILE = '<img src=x onerror="window.__pwned=1"> {{ 7*7 }} Helm'

CONFIG = """\
database: sqlite:///{path}
timezone: Europe/Madrid
locale: {locale}
email: {{from: r@shop.test, to: [m@shop.test]}}
rivals:
  - name: My Shop
    own: true
    products:
      - {{name: Trail Runner 2, url: "https://my.test/p/tr2", match: TR2}}
      - {{name: "{long}", url: "https://my.test/p/long", match: LONG}}
      - {{name: Helmet, url: "https://my.test/p/helm", match: HELM}}
  - name: Northwind Sports International Outlet Store
    products:
      - {{name: Trail Runner 2, url: "https://nw.test/p/tr2", match: TR2}}
      - {{name: "{long}", url: "https://nw.test/p/{long}", match: LONG}}
      - {{name: Helmet, url: "https://nw.test/p/helm", match: HELM}}
  - name: Alpenrad
    products:
      - {{name: E-Bike City 500, url: "https://ar.test/p/eb"}}
      - {{name: Trail Runner 2, url: "https://ar.test/p/tr2", match: TR2}}
"""

# url -> prices over the last 30 days (one check every 3 days), then (regular, promotions, availability) today
HISTORY = {
    "https://my.test/p/tr2": ["119.00"] * 10,
    "https://my.test/p/long": ["249.00"] * 10,
    "https://my.test/p/helm": ["89.90"] * 10,
    "https://nw.test/p/tr2": ["129.90", "129.90", "124.90", "124.90", "127.00", "129.90", "129.90", "129.90",
                              "129.90", "114.90"],
    f"https://nw.test/p/{LONG}": ["259.00"] * 9 + ["239.00"],
    "https://nw.test/p/helm": ["92.00"] * 9 + ["95.00"],
    "https://ar.test/p/eb": ["1299.00"] * 6 + ["1249.00"] * 3 + ["1104.15"],
    "https://ar.test/p/tr2": ["121.00"] * 9 + ["118.00"],
}
TODAY = {"https://ar.test/p/eb": ("1299.00", ("-15% Black Week, only until Sunday midnight",), "InStock"),
         "https://nw.test/p/helm": (None, (), "OutOfStock")}


def build(tmp_path: Path, locale: str = "en_US") -> tuple:  # type: ignore[type-arg]
    config = parse_config(CONFIG.format(path=tmp_path / f"{locale}.db", locale=locale, long=LONG))
    db = Database.open(config.database)
    with db.session() as session:
        sync_targets(session, config)
    for step in range(10):
        slot = NOW - timedelta(days=27 - 3 * step) if step < 9 else NOW - timedelta(minutes=5)
        with db.session() as session:
            for target in session.scalars(select(Target).where(Target.kind == "product")):
                regular, promos, availability = TODAY.get(target.url, (None, (), "InStock")) if step == 9 else (
                    None, (), "InStock")
                record_check(session, target.id, slot, Observed(
                    "ok", price=Decimal(HISTORY[target.url][step]), currency="EUR", title=target.name,
                    regular_price=Decimal(regular) if regular else None, promotions=tuple(promos),
                    availability=availability), now=slot)
        if step == 8:
            with db.session() as session:  # earlier moves were reported on their day: only today's remain
                session.execute(delete(Change))
    with db.session() as session:
        helm = session.scalars(select(Target).where(Target.url == "https://nw.test/p/helm")).one()
        helm.name = HOSTILE
        eb = session.scalars(select(Target).where(Target.url == "https://ar.test/p/eb")).one()
        session.add(Change(target_id=eb.id, kind="health_blocked", data={
            "runs": 3, "reason": "bot wall: cf-challenge (HTTP 403) on https://ar.test/p/eb?utm_source=x&ref=y",
            "since": (NOW - timedelta(days=1)).isoformat()}))
    return config, db


def look(html: str, name: str) -> None:
    """Open `html` at 375 and 800 px, light and dark; assert it fits; keep screenshots."""
    from playwright.sync_api import sync_playwright

    from scrapers.browser import find_chromium, launch_args

    ARTIFACTS.mkdir(exist_ok=True)
    page_file = ARTIFACTS / f"{name}.html"
    page_file.write_text(html, encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=launch_args())
        try:
            for scheme in ("light", "dark"):
                for width in (375, 800):
                    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
                    page.goto(page_file.as_uri())
                    page.wait_for_load_state("load")
                    page.screenshot(path=str(ARTIFACTS / f"{name}-{width}-{scheme}.png"), full_page=True)
                    scroll = page.evaluate("document.documentElement.scrollWidth")
                    assert scroll <= width, f"{name}: horizontal scroll at {width}px ({scroll}px wide)"
                    wide = page.evaluate("""(w) => [...document.querySelectorAll('body *')]
                        .filter(e => e.getBoundingClientRect().right > w + 0.5).map(e => e.outerHTML.slice(0, 80))""",
                                         width)
                    assert wide == [], wide
                    broken = page.evaluate("[...document.images].filter(i => !i.complete || !i.naturalWidth)"
                                           ".map(i => i.alt)")
                    assert broken == [], f"images that did not load: {broken}"
                    assert page.evaluate("window.__pwned") is None
                    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
                    assert (background == "rgb(17, 20, 24)") == (scheme == "dark"), background
                    if width == 800:
                        main = page.evaluate("document.querySelector('table.main, table.card')"
                                             ".getBoundingClientRect().width")
                        assert main <= 760
                    page.close()
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.parametrize("locale", ["en_US", "es_ES"])
def test_report_fits_a_phone_and_a_desktop_in_light_and_dark(tmp_path, locale):
    config, db = build(tmp_path, locale)
    with db.session() as session:
        data = collect(session, config)
    rendered = render(data, config)
    assert not rendered.truncated and len(rendered.images) == 5
    assert "<script" not in rendered.mail_html
    look(rendered.html, f"report-{locale}")


@pytest.mark.slow
def test_shortened_report_fits_too(tmp_path):
    config, db = build(tmp_path)
    with db.session() as session:
        data = collect(session, config)
    rendered = render(data, config, budget=16_000)
    assert rendered.truncated and len(rendered.mail_html.encode()) <= 16_000
    look(rendered.html, "report-shortened")
    look(rendered.attachments[0][2].decode(), "report-attached-full")


@pytest.mark.slow
def test_alert_fits_a_phone(tmp_path):
    config, db = build(tmp_path)

    class WithAlerts:
        alerts = AlertsConfig(rules=[PriceMoveRule(when="price_move", min_pct=5)])

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(config, name)

    (queued,) = queue_alerts(WithAlerts(), db)  # type: ignore[arg-type]
    look(queued.rendered.html, "alert")

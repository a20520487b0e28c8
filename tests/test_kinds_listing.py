"""Listing pages through the real pipeline: a paginated category of a fixture shop on 127.0.0.1, stored
on SQLite and PostgreSQL; removals confirmed only by complete passes; the report's Listings section."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from sqlalchemy import select

from tests.conftest import ThreadServer
from tracker.config import parse_config
from tracker.db import Database
from tracker.models import Change, Observation
from tracker.pipeline import Checker
from tracker.report import collect, render
from tracker.store import Observed
from tracker.targets import sync_targets

T0 = datetime(2026, 4, 1, 6, 0, tzinfo=UTC)
PER_PAGE = 3


class Category:
    """/c/shoes?page=N: PER_PAGE product cards a page, a rel=next link while more follow.
    `broken` pages answer 500, `captcha` pages a bot wall; /c/scroll is an infinite-scroll version."""

    def __init__(self) -> None:
        self.items: list[dict] = [{"slug": s, "name": s.title(), "price": p}
                                  for s, p in [("alpha", "10.00"), ("beta", "20.00"), ("gamma", "30.00"),
                                               ("delta", "40.00"), ("epsilon", "50.00")]]
        self.broken: set[int] = set()
        self.captcha: set[int] = set()
        app = web.Application()
        app.router.add_get("/c/shoes", self.page)
        app.router.add_get("/c/scroll", self.scroll)
        app.router.add_get("/c/scroll/more", self.more)
        self.server = ThreadServer(app).start()

    @staticmethod
    def card(item: dict) -> str:
        was = f'<del class="was-price">{item["was"]} €</del>' if item.get("was") else ""
        badge = f'<span class="badge">{item["badge"]}</span>' if item.get("badge") else ""
        return (f'<li class="product-card"><a href="/p/{item["slug"]}"><h2 class="name">{item["name"]}</h2></a>'
                f'{badge}<span class="price">{item["price"]} €</span>{was}</li>')

    async def page(self, request: web.Request) -> web.Response:
        n = int(request.query.get("page", "1"))
        if n in self.broken:
            return web.Response(status=500, text="Internal Server Error")
        if n in self.captcha:
            return web.Response(status=403, content_type="text/html", text=(
                "<html><head><title>Attention Required! | Cloudflare</title></head><body>"
                "<h1>Please complete the security check to access this site</h1>"
                '<div class="g-recaptcha" data-sitekey="x"></div><p>Cloudflare Ray ID: 1234</p></body></html>'))
        chunk = self.items[(n - 1) * PER_PAGE: n * PER_PAGE]
        more = len(self.items) > n * PER_PAGE
        nxt = f'<nav><a rel="next" href="/c/shoes?page={n + 1}">Next</a></nav>' if more else ""
        return web.Response(content_type="text/html", text=(
            f'<!DOCTYPE html><html><head><title>Shoes</title></head><body><header><a href="/">Home</a></header>'
            f'<h1>Shoes</h1><ul class="grid">{"".join(self.card(i) for i in chunk)}</ul>{nxt}</body></html>'))

    async def scroll(self, request: web.Request) -> web.Response:
        first = "".join(self.card(i) for i in self.items[:PER_PAGE])
        return web.Response(content_type="text/html", text=(
            '<!DOCTYPE html><html><head><title>Shoes</title><style>li{height:400px}</style></head><body>'
            f'<ul class="grid" id="grid">{first}</ul><script>'
            'let loading=false, done=false;'
            'window.addEventListener("scroll", async () => {'
            ' if (loading || done) return; loading = true;'
            ' const r = await fetch("/c/scroll/more"); const html = await r.text();'
            ' document.getElementById("grid").insertAdjacentHTML("beforeend", html); done = true; });'
            '</script></body></html>'))

    async def more(self, request: web.Request) -> web.Response:
        return web.Response(text="".join(self.card(i) for i in self.items[PER_PAGE:]), content_type="text/html")


@pytest.fixture
def category():
    c = Category()
    yield c
    c.server.stop()


class Runner:
    def __init__(self, config, db: Database):
        self.config, self.db, self.slot = config, db, T0

    def check(self) -> Observed:
        self.slot += timedelta(hours=6)

        async def go():
            with self.db.session() as s:
                (ref,) = sync_targets(s, self.config)
            async with Checker(self.config, self.db) as checker:
                await checker.check(ref.id, self.slot)
            return ref.id

        tid = asyncio.run(go())
        with self.db.session() as s:
            return Observed.from_row(s.scalars(select(Observation).where(Observation.target_id == tid)
                                               .order_by(Observation.id.desc()).limit(1)).one())

    def changes(self) -> list[tuple[str, dict]]:
        with self.db.session() as s:
            return [(c.kind, c.data) for c in s.scalars(select(Change).order_by(Change.id))]


def make(db_url: str, category: Category, *, path: str = "/c/shoes", fetch: str = "http", max_pages: int = 5) -> Runner:
    cfg = parse_config(f"""
database: {db_url}
http: {{per_domain_delay_s: 0, retries: 0, timeout_s: 5}}
thresholds: {{health_after: 5}}
rivals:
  - name: Rival A
    fetch: {fetch}
    listings:
      - {{name: Running shoes, url: "{category.server.url}{path}", max_pages: {max_pages}}}
""")
    return Runner(cfg, Database.open(db_url))


def slugs(obs: Observed) -> list[str]:
    return [i["url"].rsplit("/", 1)[1] for i in obs.data["items"]]


def test_listing_records_every_card_across_pages_and_their_count(category, db_url):
    run = make(db_url, category)
    obs = run.check()
    assert obs.status == "ok" and obs.data["complete"] is True and obs.data["pages"] == 2
    assert slugs(obs) == ["alpha", "beta", "gamma", "delta", "epsilon"] and obs.data["count"] == 5
    assert obs.data["items"][0] == {"url": f"{category.server.url}/p/alpha", "name": "Alpha", "price": "10.00",
                                    "regular_price": None, "currency": "EUR", "badge": None}
    assert run.check().status == "ok" and run.changes() == []
    run.db.close()


def test_product_missing_because_page_2_failed_is_not_removed(category, db_url):
    run = make(db_url, category)
    run.check()
    category.broken = {2}
    partial = run.check()
    assert partial.status == "ok" and partial.data["complete"] is False
    assert "page 2" in partial.data["problem"] and "HTTP 500" in partial.data["problem"]
    assert slugs(partial) == ["alpha", "beta", "gamma"]
    assert partial.data["absent"][f"{category.server.url}/p/delta"]["passes"] == 0
    partial_again = run.check()   # an incomplete pass never counts toward a removal
    assert partial_again.data["absent"][f"{category.server.url}/p/delta"]["passes"] == 0
    category.broken = set()
    assert run.check().data["complete"] is True
    assert run.changes() == []
    run.db.close()


def test_removal_is_confirmed_only_after_two_complete_passes_and_a_blip_is_nothing(category, tmp_path):
    category.items.append({"slug": "zeta", "name": "Zeta", "price": "60.00"})
    run = make(f"sqlite:///{tmp_path / 't.db'}", category)
    run.check()
    gone = category.items.pop(3)  # delta
    first_miss = run.check()
    assert first_miss.data["absent"][f"{category.server.url}/p/delta"]["passes"] == 1
    assert run.changes() == []
    category.items.insert(3, gone)   # back before confirmation: never reported
    run.check()
    assert run.changes() == []
    category.items.pop(3)
    run.check()
    run.check()
    assert [(k, d["name"]) for k, d in run.changes()] == [("listing_item_removed", "Delta")]
    run.check()
    assert len(run.changes()) == 1  # reported once
    run.db.close()


def test_added_repriced_and_promoted_products_and_the_share_on_promotion(category, tmp_path):
    run = make(f"sqlite:///{tmp_path / 't.db'}", category)
    run.check()
    category.items.append({"slug": "zeta", "name": "Zeta", "price": "60.00"})
    category.items[0].update(price="8.00", was="10.00", badge="-20%")
    category.items[1].update(badge="Sale")
    obs = run.check()
    assert obs.data["promo_share"] == pytest.approx(2 / 6, abs=1e-3)
    kinds = {(k, d.get("name")): d for k, d in run.changes()}
    assert ("listing_item_added", "Zeta") in kinds
    price = kinds[("listing_price_changed", "Alpha")]
    assert (price["old"], price["new"], price["direction"], price["pct"]) == ("10.00", "8.00", "down", "-20.0")
    assert kinds[("listing_badge_appeared", "Alpha")]["new"] == "-20%"
    assert kinds[("listing_badge_appeared", "Beta")]["new"] == "Sale"
    share = kinds[("listing_promo_share_changed", None)]
    assert share["old"] == 0.0 and share["new"] == pytest.approx(0.3333, abs=1e-3)
    category.items[1].pop("badge")
    run.check()
    assert ("listing_badge_gone", {"url": f"{category.server.url}/p/beta", "name": "Beta", "currency": "EUR",
                                   "old": "Sale"}) in run.changes()
    with run.db.session() as s:
        report = render(collect(s, run.config), run.config)
    assert "Listings" in report.text and "Zeta" in report.text and "Badge appeared" in report.html
    assert "6 products" in report.text
    run.db.close()


def test_first_page_failing_is_failed_a_bot_wall_is_blocked_and_a_later_one_incomplete(category, tmp_path):
    run = make(f"sqlite:///{tmp_path / 't.db'}", category)
    category.broken = {1}
    assert run.check().status == "failed"
    category.broken, category.captcha = set(), {1}
    assert run.check().status == "blocked"
    category.captcha = {2}
    partial = run.check()
    assert partial.status == "ok" and not partial.data["complete"] and "page 2" in partial.data["problem"]
    run.db.close()


def test_max_pages_is_a_complete_but_truncated_pass(category, tmp_path):
    run = make(f"sqlite:///{tmp_path / 't.db'}", category, max_pages=1)
    obs = run.check()
    assert obs.data["complete"] is True and obs.data["truncated"] is True and obs.data["count"] == PER_PAGE
    run.db.close()


def test_a_next_page_without_readable_cards_is_an_incomplete_pass_not_removals(category, tmp_path):
    run = make(f"sqlite:///{tmp_path / 't.db'}", category)
    run.check()
    category.items.pop(3)   # page 2 now holds one card, which the automatic reader cannot tell from chrome
    for _ in range(3):
        obs = run.check()
        assert obs.data["complete"] is False and "page 2" in obs.data["problem"]
    assert run.changes() == []
    run.db.close()


@pytest.mark.slow
def test_infinite_scroll_listing_through_chromium_reads_every_card(category, tmp_path):
    run = make(f"sqlite:///{tmp_path / 't.db'}", category, path="/c/scroll", fetch="browser")
    obs = run.check()
    assert obs.status == "ok", obs.reason
    assert slugs(obs) == ["alpha", "beta", "gamma", "delta", "epsilon"]
    run.db.close()

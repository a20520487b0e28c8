"""The catalogue: `tracker discover` against a rival shop on 127.0.0.1 (addressed as `localhost`: discovery
refuses IP literals) with robots.txt, a sitemap and a listing; `tracker match [--review]` on SQLite and
PostgreSQL, with decisions stored and never guessed again."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiohttp import web
from sqlalchemy import select
from typer.testing import CliRunner

from tests.conftest import ThreadServer
from tracker.cli import app
from tracker.config import load_config
from tracker.db import Database
from tracker.models import Target
from tracker.store import Observed, record_check
from tracker.targets import sync_targets

runner = CliRunner()


class RivalShop:
    def __init__(self) -> None:
        app_ = web.Application()
        app_.router.add_get("/robots.txt", self.robots)
        app_.router.add_get("/sitemap.xml", self.sitemap)
        app_.router.add_get("/c/shoes", self.listing)
        self.server = ThreadServer(app_).start()
        self.base = f"http://localhost:{self.server.port}"

    async def robots(self, request: web.Request) -> web.Response:
        return web.Response(text=f"User-agent: *\nDisallow: /private/\nSitemap: {self.base}/sitemap.xml\n")

    async def sitemap(self, request: web.Request) -> web.Response:
        urls = ["/p/alpha", "/p/beta", "/p/gamma", "/blog/how-to-run", "/p/old-model",
                "http://evil.example/p/x", "http://127.0.0.1/p/ip-literal"]
        locs = "".join(f"<url><loc>{u if u.startswith('http') else self.base + u}</loc></url>" for u in urls)
        return web.Response(text=f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/'
                                 f'schemas/sitemap/0.9">{locs}</urlset>', content_type="application/xml")

    async def listing(self, request: web.Request) -> web.Response:
        cards = "".join(f'<li class="card"><a href="/p/{s}"><h2>{s}</h2></a><span class="price">{p} €</span></li>'
                        for s, p in (("beta", "20.00"), ("delta", "40.00"), ("epsilon", "50.00")))
        return web.Response(text=f"<html><body><ul>{cards}</ul></body></html>", content_type="text/html")


@pytest.fixture
def rival_shop():
    s = RivalShop()
    yield s
    s.server.stop()


def invoke(*args: str, input: str | None = None):  # noqa: A002
    result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
    return result


def test_discover_proposes_untracked_product_urls_from_sitemaps_and_listings_then_tracks_them(rival_shop, tmp_path):
    b = rival_shop.base
    (tmp_path / "tracker.yaml").write_text(f"""
database: sqlite:///{tmp_path / 't.db'}
http: {{per_domain_delay_s: 0, retries: 0}}
rivals:
  - name: Rival A
    fetch: http
    products:
      - {{url: "{b}/p/alpha"}}
    listings:
      - {{url: "{b}/c/shoes"}}
""")
    cfg = str(tmp_path / "tracker.yaml")
    res = invoke("discover", "Rival A", "--include", "*/p/*", "--exclude", "*old-model*", "--json", "-c", cfg)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["proposed"] == [f"{b}/p/beta", f"{b}/p/gamma", f"{b}/p/delta", f"{b}/p/epsilon"]
    assert report["already_tracked"] == 1 and report["tracked"] == []
    assert {u for u, _ in report["dropped"]} >= {"http://evil.example/p/x", "http://127.0.0.1/p/ip-literal"}

    res = invoke("discover", "Rival A", "--include", "*/p/*", "--exclude", "*old-model*", "--max", "2", "--track",
                 "-c", cfg)
    assert res.exit_code == 0, res.output
    assert res.stdout.split() == [f"{b}/p/beta", f"{b}/p/gamma"]
    db = Database.open(f"sqlite:///{tmp_path / 't.db'}")
    with db.session() as s:
        added = {t.url: t for t in s.scalars(select(Target).where(Target.kind == "product"))}
    assert added[f"{b}/p/beta"].spec == {"fetch": "http", "selectors": {}, "respect_robots": None,
                                         "rival": "Rival A", "discovered": True}
    assert added[f"{b}/p/beta"].active and added[f"{b}/p/beta"].key == f"{b}/p/beta"
    again = json.loads(invoke("discover", "Rival A", "--include", "*/p/*", "--exclude", "*old-model*", "--json",
                              "-c", cfg).stdout)
    assert again["proposed"] == [f"{b}/p/delta", f"{b}/p/epsilon"]   # never proposed twice
    db.close()


def test_discover_an_unknown_rival_names_the_known_ones(tmp_path):
    (tmp_path / "tracker.yaml").write_text(f"database: sqlite:///{tmp_path / 't.db'}\nrivals:\n"
                                           "  - {name: Rival A, domain: rival.example}\n")
    res = runner.invoke(app, ["discover", "Nope", "-c", str(tmp_path / "tracker.yaml")])
    assert res.exit_code != 0 and "Rival A" in str(res.exception or "") + res.output


MATCH_CONFIG = """
database: {db}
rivals:
  - name: My Shop
    own: true
    products:
      - {{url: "https://my.example/kettle"}}
      - {{url: "https://my.example/ghost"}}
      - {{url: "https://my.example/pegasus"}}
      - {{url: "https://my.example/blender", match: BL-900}}
  - name: Rival A
    products:
      - {{url: "https://a.example/kettle"}}
      - {{url: "https://a.example/ghost"}}
      - {{url: "https://a.example/pegasus"}}
      - {{url: "https://a.example/mixer", match: BL-900}}
"""

TITLES = {
    "https://my.example/kettle": ("Acme Kettle 1.7 l steel", "4006381333931"),
    "https://my.example/ghost": ("Brooks Ghost 16", None),
    "https://my.example/pegasus": ("Nike Pegasus 41 Men's Running Shoe", None),
    "https://my.example/blender": ("Acme Blender 900W", None),
    "https://a.example/kettle": ("Stainless kettle by Acme, 1.7L", "4006381333931"),
    "https://a.example/ghost": ("Brooks Ghost 16 Running Shoes Grey", None),
    "https://a.example/pegasus": ("Nike Air Zoom Pegasus 41 Road Running Shoes", None),
    "https://a.example/mixer": ("Kitchen mixer X", None),
}


def test_match_proposes_reviews_and_never_guesses_a_decided_pair_again(db_url, tmp_path):
    path = tmp_path / "tracker.yaml"
    path.write_text(MATCH_CONFIG.format(db=db_url))
    cfg = load_config(path)
    db = Database.open(db_url)
    now = datetime(2026, 4, 1, 7, tzinfo=UTC)
    with db.session() as s:
        for ref in sync_targets(s, cfg):
            title, gtin = TITLES[ref.url]
            record_check(s, ref.id, now, Observed("ok", price=Decimal("10.00"), currency="EUR", title=title,
                                                  gtin=gtin), now=now)
    db.close()

    def proposals() -> dict[str, dict]:
        res = invoke("match", "--json", "-c", str(path))
        assert res.exit_code == 0, res.output
        return {p["url"].rsplit("/", 1)[1]: p for p in json.loads(res.stdout)}

    first = proposals()
    assert (first["kettle"]["status"], first["kettle"]["method"], first["kettle"]["own_url"]) == (
        "auto", "gtin", "https://my.example/kettle")
    assert (first["mixer"]["status"], first["mixer"]["own_url"]) == ("config", "https://my.example/blender")
    assert first["ghost"]["status"] == "uncertain" and first["ghost"]["own_url"] == "https://my.example/ghost"
    assert first["pegasus"]["status"] == "uncertain" and 0.5 <= first["pegasus"]["confidence"] < 0.75

    review = invoke("match", "--review", "-c", str(path), input="y\nn\n")
    assert review.exit_code == 0, review.output
    assert review.output.count("Same product?") == 2 and "1 confirmed, 1 rejected" in review.output

    second = proposals()
    assert second["ghost"]["status"] == "confirmed"
    assert "pegasus" not in second or second["pegasus"]["own_url"] != "https://my.example/pegasus"
    again = invoke("match", "--review", "-c", str(path), input="")
    assert "Same product?" not in again.output and "0 confirmed, 0 rejected" in again.output


def test_match_without_an_own_shop_says_how_to_mark_it(tmp_path):
    path = tmp_path / "tracker.yaml"
    path.write_text(f"database: sqlite:///{tmp_path / 't.db'}\nrivals:\n  - name: Rival A\n"
                    "    products: [{url: 'https://a.example/p/1'}]\n")
    db = Database.open(f"sqlite:///{tmp_path / 't.db'}")
    with db.session() as s:
        sync_targets(s, load_config(path))
    db.close()
    res = runner.invoke(app, ["match", "-c", str(path)])
    assert res.exit_code != 0 and "own: true" in str(res.exception or "") + res.output


def test_auto_track_discovery_on_its_schedule_tracks_new_products_with_no_further_action(rival_shop, tmp_path):
    import asyncio

    from tracker import scheduler
    from tracker.config import load_config

    b = rival_shop.base
    (tmp_path / "tracker.yaml").write_text(f"""
database: sqlite:///{tmp_path / 't.db'}
http: {{per_domain_delay_s: 0, retries: 0}}
rivals:
  - name: Rival A
    fetch: http
    products:
      - {{url: "{b}/p/alpha"}}
    discovery: {{include: ["*/p/*"], exclude: ["*old-model*"], max_new: 3, auto_track: true}}
""")
    config = load_config(tmp_path / "tracker.yaml")
    db = Database.open(config.database)
    assert "discovery" in scheduler.build_scheduler(config, db).wanted_jobs
    scheduler._RUNTIME.update(config=config, db=db)
    try:
        asyncio.run(scheduler.scheduled_discovery())
    finally:
        scheduler._RUNTIME.clear()
    with db.session() as s:
        sync_targets(s, config)  # the next pass: discovered products stay tracked although not in the config
    with db.session() as s:
        active = {t.url for t in s.scalars(select(Target).where(Target.kind == "product", Target.active))}
    db.close()
    assert active == {f"{b}/p/alpha", f"{b}/p/beta", f"{b}/p/gamma"}  # from the sitemap, filtered

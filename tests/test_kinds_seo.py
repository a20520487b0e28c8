"""On-page SEO through the real pipeline: pages served on 127.0.0.1, stored on SQLite and PostgreSQL,
diffed field by field, shown in the report as a readable text diff."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from sqlalchemy import select

from tests.conftest import ThreadServer
from tracker.config import parse_config
from tracker.db import Database
from tracker.kinds.seo import diff_seo, text_diff
from tracker.models import Change, Observation
from tracker.pipeline import Checker
from tracker.report import collect, render
from tracker.store import Observed
from tracker.targets import sync_targets

T0 = datetime(2026, 4, 1, 6, 0, tzinfo=UTC)


class Site:
    def __init__(self) -> None:
        self.title = "Trail Runner 3 | Shop"
        self.description = "Light trail shoe with a grippy sole."
        self.h1 = ["Trail Runner 3"]
        self.status = 200
        self.down = False
        app = web.Application()
        app.router.add_get("/p/runner", self.page)
        app.router.add_get("/old", self.old)
        self.server = ThreadServer(app).start()

    async def page(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            request.transport.close()  # a network failure, not an answer
            return web.Response(text="")
        h1 = "".join(f"<h1>{h}</h1>" for h in self.h1)
        body = (f'<!DOCTYPE html><html lang="en"><head><title>{self.title}</title>'
                f'<meta name="description" content="{self.description}">'
                f'<link rel="canonical" href="{self.server.url}/p/runner"></head>'
                f'<body>{h1}<p>{"words " * 200}</p></body></html>')
        return web.Response(status=self.status, text=body, content_type="text/html")

    async def old(self, request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/p/runner")


@pytest.fixture
def site():
    s = Site()
    yield s
    s.server.stop()


def run_check(config, db, slot):
    async def go():
        with db.session() as s:
            refs = sync_targets(s, config)
        async with Checker(config, db) as checker:
            for ref in refs:
                await checker.check(ref.id, slot)
        with db.session() as s:
            return {ref.url: Observed.from_row(s.scalars(select(Observation).where(Observation.target_id == ref.id)
                                                          .order_by(Observation.id.desc()).limit(1)).one())
                    for ref in refs}
    return asyncio.run(go())


def make_config(db_url: str, site: Site, pages: str = '["{u}/p/runner"]') -> object:
    return parse_config(f"""
database: {db_url}
http: {{per_domain_delay_s: 0, retries: 0, timeout_s: 5}}
rivals:
  - name: Rival A
    domain: 127.0.0.1
    seo_pages: {pages.format(u=site.server.url)}
""")


def test_title_description_and_h1_changes_are_reported_with_a_text_diff(site, db_url):
    db = Database.open(db_url)
    cfg = make_config(db_url, site)
    url = f"{site.server.url}/p/runner"
    first = run_check(cfg, db, T0)[url]
    assert first.status == "ok"
    assert first.data["title"] == "Trail Runner 3 | Shop" and first.data["status_code"] == 200
    assert first.data["h1"] == ["Trail Runner 3"] and first.data["canonical"] == url
    assert run_check(cfg, db, T0 + timedelta(hours=1))[url].status == "ok"   # same page: same span
    site.title = "Trail Runner 3 – 20% off | Shop"
    site.h1 = ["Trail Runner 3", "Now on sale"]
    run_check(cfg, db, T0 + timedelta(hours=2))
    with db.session() as s:
        changes = list(s.scalars(select(Change).order_by(Change.id)))
        assert s.scalar(select(Observation.seen_count).order_by(Observation.id).limit(1)) == 2
    by_field = {c.data["field"]: c.data for c in changes}
    assert set(by_field) == {"title", "h1"} and all(c.kind == "seo_changed" for c in changes)
    assert by_field["title"]["old"] == "Trail Runner 3 | Shop"
    assert by_field["title"]["diff"].splitlines()[-2:] == ["-Trail Runner 3 | Shop", "+Trail Runner 3 – 20% off | Shop"]
    assert "+Now on sale" in by_field["h1"]["diff"]
    with db.session() as s:
        report = render(collect(s, cfg), cfg)
    assert "On-page SEO" in report.text and "+Trail Runner 3 – 20% off | Shop" in report.text
    assert "-Trail Runner 3 | Shop" in report.html and "SEO field change" in report.text
    db.close()


def test_a_404_is_an_seo_fact_but_a_network_failure_is_failed(site, tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 't.db'}")
    cfg = make_config(f"sqlite:///{tmp_path / 't.db'}", site)
    url = f"{site.server.url}/p/runner"
    run_check(cfg, db, T0)
    site.status = 404
    gone = run_check(cfg, db, T0 + timedelta(hours=1))[url]
    assert gone.status == "ok" and gone.data["status_code"] == 404
    site.down = True
    broken = run_check(cfg, db, T0 + timedelta(hours=2))[url]
    assert broken.status == "failed"
    with db.session() as s:
        kinds = [(c.kind, c.data.get("field"), c.data.get("old"), c.data.get("new")) for c in s.scalars(select(Change))]
    assert kinds == [("seo_changed", "status_code", 200, 404)]
    db.close()


def test_a_redirect_is_recorded_as_the_final_url(site, tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 't.db'}")
    cfg = make_config(f"sqlite:///{tmp_path / 't.db'}", site, pages='["{u}/old"]')
    obs = run_check(cfg, db, T0)[f"{site.server.url}/old"]
    assert obs.status == "ok" and obs.data["final_url"] == f"{site.server.url}/p/runner"
    db.close()


def test_small_word_count_drift_is_not_a_change_but_a_big_one_is():
    base = {"title": "t", "word_count": 1000}
    assert diff_seo(Observed("ok", data=base), Observed("ok", data={**base, "word_count": 1050})) == []
    (change,) = diff_seo(Observed("ok", data=base), Observed("ok", data={**base, "word_count": 400}))
    assert change.data == {"field": "word_count", "old": 1000, "new": 400}


def test_text_diff_of_a_missing_description():
    assert text_diff("meta_description", None, "New text") == "@@ -0,0 +1 @@\n+New text"

"""Rankings through the real pipeline: keyword targets from the config, search engines served on 127.0.0.1
(the real saved Google / Bing / DuckDuckGo pages from tests/data/serp-pages, generated pages in Google's
layout for movements, a marketplace search, a fake SerpApi), the database (SQLite and PostgreSQL), the
differ and the report."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from aiohttp import web
from sqlalchemy import select

from tests.conftest import ThreadServer
from tracker.config import parse_config
from tracker.db import Database
from tracker.kinds.serp import diff_serp
from tracker.models import Change, Observation, Target
from tracker.pipeline import Checker
from tracker.report import collect, render
from tracker.store import Observed
from tracker.targets import sync_targets

SERP = Path(__file__).resolve().parent / "data" / "serp-pages"
T0 = datetime(2026, 4, 1, 6, 0, tzinfo=UTC)


def google_page(urls: list[str], q: str = "running shoes", next_start: int | None = None, ads: bool = True) -> str:
    """A result page in Google's layout: #rso > .g > a > h3, a text ad in #tads, a #pnnext link."""
    results = "".join(
        f'<div class="g"><div><a href="{escape(u)}"><br><h3>{escape(u.split("/")[2])} result</h3>'
        f'<div><cite>{escape(u)}</cite></div></a></div><div><span>Snippet {i}: a fairly long description '
        f'of the page, long enough to look like the snippet of a real result.</span></div></div>'
        for i, u in enumerate(urls, 1))
    ad = ('<div id="tads"><div data-text-ad="1"><a href="https://www.googleadservices.com/pagead/aclk?adurl='
          'https://ads.example/"><div role="heading" aria-level="3">Sponsored: running shoes</div></a></div></div>'
          if ads else "")
    nxt = (f'<table><tr><td><a id="pnnext" href="/search?q={quote_plus(q)}&amp;start={next_start}">Next</a>'
           f'</td></tr></table>' if next_start else "")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(q)} - Google Search'
            f'</title></head><body><div id="main"><div id="center_col">{ad}<div id="search"><div id="rso">'
            f'{results}</div></div>{nxt}</div></div></body></html>')


NO_RESULTS = ('<!DOCTYPE html><html><head><title>zzqx - Google Search</title></head><body><div id="main">'
              '<div id="topstuff"><div class="card-section"><p>Your search - <b>zzqx</b> - did not match any '
              'documents.</p><p>Suggestions: make sure that all words are spelled correctly.</p></div></div>'
              '<div id="search"><div id="rso"></div></div></div></body></html>')
UNKNOWN_LAYOUT = ('<!DOCTYPE html><html><head><title>running shoes - Google Search</title></head><body><main>'
                  + "<p>Some redesigned page whose results this parser cannot see. " * 20 + "</p></main></body></html>")


class Engines:
    """One local server playing Google (/search), DuckDuckGo (/html/), a marketplace (/market/search)
    and SerpApi (/search.json). `google[(q, start)]` is what Google answers: a saved page's file name,
    generated HTML, or an HTTP status."""

    def __init__(self) -> None:
        self.google: dict[tuple[str, int], str | int] = {}
        self.hits: list[tuple[float, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.serpapi_key = "sk-test-123"
        app = web.Application()
        app.router.add_get("/search", self.search)
        app.router.add_get("/html/", self.ddg)
        app.router.add_get("/market/search", self.market)
        app.router.add_get("/search.json", self.serpapi)
        self.server = ThreadServer(app).start()

    @property
    def url(self) -> str:
        return self.server.url

    def _page(self, spec: str | int) -> web.Response:
        if isinstance(spec, int):
            return web.Response(status=spec, text="error")
        if spec.endswith(".html"):
            return web.Response(body=(SERP / spec).read_bytes(), content_type="text/html")
        return web.Response(text=spec, content_type="text/html")

    async def search(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.hits.append((time.monotonic(), request.path_qs))
        try:
            await asyncio.sleep(0.02)
            q = request.query.get("q", "")
            start = int(request.query.get("start") or request.query.get("first") or 0)
            if request.query.get("first"):   # Bing counts from 1
                start -= 1
            spec = self.google.get((q, start))
            return self._page(spec) if spec is not None else web.Response(status=404, text="no such page")
        finally:
            self.in_flight -= 1

    async def ddg(self, request: web.Request) -> web.Response:
        self.hits.append((time.monotonic(), request.path_qs))
        if request.query.get("s"):
            return self._page(google_page([], q="foo"))
        return self._page("ddg-html-2025-foo.html")

    async def market(self, request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        q = request.query.get("q", "")
        items = {1: ["acme-runner", "fast-shoe", "our-shoe"], 2: ["rival-shoe", "other-shoe"]}.get(page, [])
        cards = "".join(f'<li class="hit"><a class="hit-link" href="/p/{s}"><span class="t">{s} for {escape(q)}'
                        f'</span></a></li>' for s in items)
        more = f'<a class="more" href="/market/search?q={quote_plus(q)}&page={page + 1}">more</a>' if page < 2 else ""
        return web.Response(text=f"<html><body><h1>Search</h1><ul>{cards}</ul>{more}</body></html>",
                            content_type="text/html")

    async def serpapi(self, request: web.Request) -> web.Response:
        if request.query.get("api_key") != self.serpapi_key:
            return web.json_response({"error": "Invalid API key. Your API key should be here: "
                                               f"{request.query.get('api_key')}"}, status=401)
        start = int(request.query.get("start", "0"))
        organic = [{"position": i + 1, "link": f"https://site{start + i}.example/p", "title": f"Site {start + i}",
                    "snippet": "..."} for i in range(10)]
        if start == 0:
            organic[2]["link"] = "https://www.shop.example/running"
        data = {"search_metadata": {"status": "Success"}, "organic_results": organic,
                "ads": [{"link": "https://ads.example"}], "related_questions": [{"question": "?"}],
                "serpapi_pagination": {"next": f"https://serpapi.com/search.json?start={start + 10}"}}
        return web.json_response(data)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def engines(monkeypatch):
    e = Engines()
    monkeypatch.setenv("TRACKER_ENGINE_BASE_GOOGLE", e.url)
    monkeypatch.setenv("TRACKER_ENGINE_BASE_BING", e.url)
    monkeypatch.setenv("TRACKER_ENGINE_BASE_DUCKDUCKGO", e.url)
    monkeypatch.setenv("TRACKER_SERP_FETCH", "http")
    monkeypatch.setenv("SERPAPI_API_KEY", e.serpapi_key)
    yield e
    e.stop()


def config_for(db_url: str, engines: Engines, keywords: str, *, delay: str = "[0, 0]", extra: str = ""):
    text = f"""
database: {db_url}
own_domain: shop.example
http: {{per_domain_delay_s: 0, retries: 0}}
serp: {{delay_s: {delay}, serpapi_url: "{engines.url}", api_key: "${{SERPAPI_API_KEY}}"}}
rivals:
  - {{name: Shop, own: true, domain: shop.example}}
  - {{name: Rival A, domain: rival-a.example}}
  - {{name: Best Buy, domain: bestbuy.com}}
  - {{name: Amazon, domain: amazon.com}}
{extra}
keywords:
{keywords}
"""
    return parse_config(text)


class Pipeline:
    """Sync the config's targets and run checks through the real Checker, slot after slot."""

    def __init__(self, config, db: Database):
        self.config, self.db, self.slot = config, db, T0
        with db.session() as s:
            self.targets = {(t.name or t.key): t.id for t in (s.get(Target, r.id) for r in sync_targets(s, config))}

    def check(self, *terms: str) -> dict[str, Observed]:
        self.slot += timedelta(hours=6)

        async def run():
            async with Checker(self.config, self.db) as checker:
                return await asyncio.gather(*(checker.check(self.targets[t], self.slot) for t in terms))

        asyncio.run(run())
        out = {}
        with self.db.session() as s:
            for t in terms:
                row = s.scalars(select(Observation).where(Observation.target_id == self.targets[t])
                                .order_by(Observation.id.desc()).limit(1)).one()
                out[t] = Observed.from_row(row)
        return out

    def changes(self, term: str | None = None) -> list[Change]:
        with self.db.session() as s:
            q = select(Change).order_by(Change.id)
            if term:
                q = q.where(Change.target_id == self.targets[term])
            return list(s.scalars(q))


@pytest.fixture
def sqlite_db(tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 't.db'}")
    yield db
    db.close()


def _urls(*hosts: str) -> list[str]:
    return [f"https://www.{h}/running-shoes" if "." in h else f"https://{h}.example/p" for h in hosts]


# ------------------------------------------------------------------------------------------------ tests

def test_real_google_page_two_pages_deep_excludes_ads_and_finds_each_domains_best_position(engines, sqlite_db):
    q = "dell xps 13 buy"
    engines.google[(q, 0)] = "google-en-us-2023-desktop-dell-xps-13-buy.html"
    engines.google[(q, 10)] = "google-fr-fr-2018-desktop-foo-bar-page2.html"
    cfg = config_for(sqlite_db.engine.url.render_as_string(), engines, f"  - {{term: {q}, depth: 20}}")
    obs = Pipeline(cfg, sqlite_db).check(q)[q]
    assert obs.status == "ok", obs.reason
    results = obs.data["results"]
    assert [r[0] for r in results] == list(range(1, 21))
    assert results[0][1].startswith("https://www.dell.com/")
    assert all("googleadservices" not in r[1] and "aclk" not in r[1] for r in results)
    assert {"ads", "shopping", "people_also_ask"} <= set(obs.data["features"])
    assert obs.data["positions"]["bestbuy.com"][0] == 4
    assert obs.data["positions"]["amazon.com"][0] == 8
    assert obs.data["positions"]["shop.example"] is None and obs.rank is None
    assert obs.data["visibility"]["bestbuy.com"] == pytest.approx(0.136 / 0.317, abs=1e-3)
    assert [p for _, p in engines.hits if "start=10" in p], "page 2 was not requested"


def test_captcha_page_is_blocked_not_dropped_out_of_top_100(engines, sqlite_db):
    q = "running shoes"
    engines.google[(q, 0)] = google_page(_urls("a", "shop.example", "rival-a.example"), q)
    cfg = config_for(sqlite_db.engine.url.render_as_string(), engines, f"  - {{term: {q}, depth: 10}}")
    pipe = Pipeline(cfg, sqlite_db)
    assert pipe.check(q)[q].rank == 2
    for blocked_page in ("blocked-google-sorry-2020.html", "blocked-cloudflare-recaptcha-2019.html"):
        engines.google[(q, 0)] = blocked_page
        obs = pipe.check(q)[q]
        assert obs.status == "blocked" and obs.rank is None
        assert obs.reason and ("captcha" in obs.reason.lower() or "challenge" in obs.reason.lower())
    engines.google[(q, 0)] = google_page(_urls("a", "shop.example", "rival-a.example"), q)
    assert pipe.check(q)[q].rank == 2
    assert [c.kind for c in pipe.changes()] == []  # no left_top / rank_down around the block


def test_unusual_traffic_on_page_two_blocks_the_whole_check(engines, sqlite_db):
    q = "running shoes"
    engines.google[(q, 0)] = google_page(_urls(*"abcdefghij"), q, next_start=10)
    engines.google[(q, 10)] = "blocked-google-sorry-fr-2018.html"
    cfg = config_for(sqlite_db.engine.url.render_as_string(), engines, f"  - {{term: {q}, depth: 30}}")
    obs = Pipeline(cfg, sqlite_db).check(q)[q]
    assert obs.status == "blocked"


def test_no_results_page_is_ok_and_unknown_layout_is_unextractable(engines, sqlite_db):
    engines.google[("zzqx", 0)] = NO_RESULTS
    engines.google[("running shoes", 0)] = UNKNOWN_LAYOUT
    engines.google[("gone", 0)] = 500
    cfg = config_for(sqlite_db.engine.url.render_as_string(), engines,
                     "  - {term: zzqx}\n  - {term: running shoes}\n  - {term: gone}")
    got = Pipeline(cfg, sqlite_db).check("zzqx", "running shoes", "gone")
    assert got["zzqx"].status == "ok" and got["zzqx"].data["results"] == [] and got["zzqx"].rank is None
    assert got["running shoes"].status == "unextractable"
    assert got["gone"].status == "failed"


def test_rank_movements_entering_leaving_top_and_new_number_one_are_changes(engines, db_url):
    db = Database.open(db_url)
    q = "running shoes"
    page1 = _urls("a", "b", "rival-a.example", "c", "d", "e", "f", "g", "h", "shop.example")
    engines.google[(q, 0)] = google_page(page1, q, next_start=10)
    engines.google[(q, 10)] = google_page(_urls("i", "j", "k", "l", "m", "n", "o", "p", "q", "r"), q)
    cfg = config_for(db_url, engines, f"  - {{term: {q}, depth: 20}}")
    pipe = Pipeline(cfg, db)
    assert pipe.check(q)[q].rank == 10
    # own site up to #1 (new #1), Rival A out of the first page to #15
    engines.google[(q, 0)] = google_page(_urls("shop.example", "a", "b", "c", "d", "e", "f", "g", "h", "i"), q,
                                         next_start=10)
    engines.google[(q, 10)] = google_page(_urls("j", "k", "l", "m", "rival-a.example", "n", "o", "p", "q", "r"), q)
    obs = pipe.check(q)[q]
    assert obs.rank == 1
    kinds = {(c.kind, c.data.get("domain")): c.data for c in pipe.changes(q)}
    assert kinds[("rank_up", "shop.example")]["old"] == 10 and kinds[("rank_up", "shop.example")]["new"] == 1
    assert kinds[("left_top", "rival-a.example")]["new"] == 15
    assert kinds[("new_top_result", "shop.example")]["new_url"] == "https://www.shop.example/running-shoes"
    # Rival A gone from the first 20, own site unchanged: one change only
    engines.google[(q, 10)] = google_page(_urls("j", "k", "l", "m", "s", "n", "o", "p", "q", "r"), q)
    n_before = len(pipe.changes(q))
    pipe.check(q)
    new = pipe.changes(q)[n_before:]
    assert [(c.kind, c.data["domain"], c.data["old"], c.data["new"]) for c in new] == [
        ("rank_down", "rival-a.example", 15, None)]
    # and back onto page one
    engines.google[(q, 0)] = google_page(_urls("shop.example", "rival-a.example", *"abcdefgh"), q, next_start=10)
    pipe.check(q)
    assert [c.kind for c in pipe.changes(q)[n_before + 1:]] == ["entered_top"]
    with db.session() as s:
        report = render(collect(s, cfg), cfg)
    assert "Rankings" in report.text and "Entered top 10" in report.text and "New #1" in report.html
    assert "Own site vs rivals" in report.html and "Visibility" in report.text
    assert "Rival rankings: " in report.text  # summary line
    db.close()


def test_rank_change_threshold_from_the_spec():
    def obs(pos: int) -> Observed:
        return Observed("ok", rank=pos, data={"positions": {"shop.example": [pos, "u"]}, "own_domain": "shop.example",
                                              "rank_change": 3, "results": [[1, "https://x.example/", "x"]]})
    assert diff_serp(obs(15), obs(13)) == []
    assert [c.kind for c in diff_serp(obs(15), obs(12))] == ["rank_up"]


def test_bing_and_duckduckgo_real_pages_with_pagination_kept_on_the_queried_host(engines, sqlite_db):
    engines.google[("coffee", 0)] = "bing-en-es-2021-nojs-coffee.html"       # 4 results, next: first=5
    engines.google[("coffee", 4)] = "bing-en-es-2021-nojs-bing-50-results.html"
    cfg = config_for(sqlite_db.engine.url.render_as_string(), engines,
                     "  - {term: coffee, engine: bing}\n  - {term: foo, engine: duckduckgo, depth: 20}")
    got = Pipeline(cfg, sqlite_db).check("coffee", "foo")
    bing = got["coffee"]
    assert bing.status == "ok", bing.reason
    assert len(bing.data["results"]) == 10 and "ads" in bing.data["features"]
    assert any("first=5" in p for _, p in engines.hits), engines.hits  # page 2 asked here, not at www.bing.com
    ddg = got["foo"]
    assert ddg.status == "ok", ddg.reason
    assert len(ddg.data["results"]) == 10
    assert any("s=10" in p for _, p in engines.hits if p.startswith("/html/"))


def test_marketplace_search_is_a_custom_engine_with_pages(engines, sqlite_db):
    extra = f"""engines:
  market:
    url_template: "{engines.url}/market/search?q={{term}}&page={{page}}"
    result: li.hit
    title: .t
    next: a.more"""
    cfg = config_for(sqlite_db.engine.url.render_as_string(), engines, "  - {term: shoe, engine: market, depth: 10}",
                     extra=extra)
    obs = Pipeline(cfg, sqlite_db).check("shoe")["shoe"]
    assert obs.status == "ok", obs.reason
    assert [r[1].rsplit("/", 1)[1] for r in obs.data["results"]] == [
        "acme-runner", "fast-shoe", "our-shoe", "rival-shoe", "other-shoe"]
    assert obs.data["results"][0][2] == "acme-runner for shoe"


def test_serpapi_results_come_from_the_api_and_its_key_never_leaks(engines, sqlite_db, monkeypatch):
    cfg = config_for(sqlite_db.engine.url.render_as_string(), engines,
                     "  - {term: running shoes, engine: serpapi, depth: 20}")
    pipe = Pipeline(cfg, sqlite_db)
    obs = pipe.check("running shoes")["running shoes"]
    assert obs.status == "ok", obs.reason
    assert obs.rank == 3 and len(obs.data["results"]) == 20
    assert {"ads", "people_also_ask"} <= set(obs.data["features"])
    engines.serpapi_key = "another-key"
    bad = pipe.check("running shoes")["running shoes"]
    assert bad.status == "failed" and "Invalid API key" in bad.reason
    assert "sk-test-123" not in bad.reason


def test_one_query_at_a_time_per_engine_with_a_pause_between_requests(engines, sqlite_db):
    for q in ("a shoes", "b shoes", "c shoes"):
        engines.google[(q, 0)] = google_page(_urls("x", "y", "z"), q)
    cfg = config_for(sqlite_db.engine.url.render_as_string(), engines,
                     "  - {term: a shoes}\n  - {term: b shoes}\n  - {term: c shoes}", delay="[0.3, 0.3]")
    Pipeline(cfg, sqlite_db).check("a shoes", "b shoes", "c shoes")
    starts = sorted(t for t, p in engines.hits if p.startswith("/search?"))
    assert len(starts) == 3 and engines.max_in_flight == 1
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.28


def _tracker(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    proc = subprocess.run([sys.executable, "-m", "tracker.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env={**os.environ, **env})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_serp_command_parses_a_saved_page_and_says_blocked_for_a_captcha(tmp_path):
    ok = _tracker("serp", str(SERP / "google-en-us-2023-desktop-dell-xps-13-buy.html"), "--json", cwd=tmp_path, env={})
    data = json.loads(ok.stdout)
    assert ok.returncode == 0 and len(data["results"]) == 10 and "shopping" in data["features"]
    assert data["results"][3]["snippet"]
    blocked = _tracker("serp", str(SERP / "blocked-google-sorry-2020.html"), cwd=tmp_path, env={})
    assert blocked.returncode == 2 and "blocked" in blocked.stderr


def test_rankings_end_to_end_check_twice_then_report(engines, tmp_path):
    q = "running shoes"
    engines.google[(q, 0)] = google_page(_urls("a", "rival-a.example", "b", "c", "shop.example"), q)
    cfg = config_for("sqlite:///tracker.db", engines, f"  - {{term: {q}, tags: [core]}}")
    (tmp_path / "tracker.yaml").write_text(
        f"database: sqlite:///tracker.db\nown_domain: shop.example\nhttp: {{per_domain_delay_s: 0, retries: 0}}\n"
        f"serp: {{delay_s: [0, 0]}}\nemail: {{outbox_dir: outbox}}\n"
        f"rivals:\n  - {{name: Rival A, domain: rival-a.example}}\nkeywords:\n  - {{term: {q}}}\n")
    assert cfg.keywords
    env = {"TRACKER_ENGINE_BASE_GOOGLE": engines.url, "TRACKER_SERP_FETCH": "http"}
    first = _tracker("check", "-c", "tracker.yaml", "--json", cwd=tmp_path, env=env)
    assert first.returncode == 0 and '"ok": 1' in first.stdout, first.stdout + first.stderr
    engines.google[(q, 0)] = google_page(_urls("shop.example", "a", "b", "c", "d", "e", "f", "g", "h",
                                               "rival-a.example"), q)
    assert _tracker("check", "-c", "tracker.yaml", cwd=tmp_path, env=env).returncode == 0
    report = _tracker("report", "-c", "tracker.yaml", "--out", "r.html", cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "r.txt").read_text()
    html = (tmp_path / "r.html").read_text()
    assert '"running shoes" (google): own site: Up: #5 -> #1' in text
    assert "Rival A: Down: #2 -> #10" in text
    assert "Own site is the new #1 for" in text
    assert "<script" not in html and "Visibility" in html


@pytest.mark.slow
def test_google_through_chromium_against_the_local_engine(engines, sqlite_db, monkeypatch):
    monkeypatch.setenv("TRACKER_SERP_FETCH", "browser")
    q = "running shoes"
    engines.google[(q, 0)] = google_page(_urls("a", "shop.example"), q)
    cfg = config_for(sqlite_db.engine.url.render_as_string(), engines, f"  - {{term: {q}}}")
    obs = Pipeline(cfg, sqlite_db).check(q)[q]
    assert obs.status == "ok", obs.reason
    assert obs.rank == 2

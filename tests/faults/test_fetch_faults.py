"""A rival site misbehaving, driven through the real unit of work (`Checker.check`, and `tracker check`):
every fault is recorded with its status and reason, none becomes a price or stock change, a target that
keeps failing appears once in the report's health section, and retries back off (Retry-After obeyed)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from tracker.config import Config, parse_config
from tracker.db import Database
from tracker.models import Change, Observation, Target
from tracker.pipeline import Checker
from tracker.report import collect, render
from tracker.store import Observed, record_check
from tracker.targets import sync_targets

ROOT = Path(__file__).resolve().parents[2]
SLOT0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
HEALTH_AFTER = 3


def make_config(tmp_path: Path, urls: dict[str, str], *, retries: int = 0, timeout_s: float = 1,
                extra_http: str = "") -> Config:
    products = "\n".join(f'      - {{name: "Product {n}", url: "{u}"}}' for n, u in urls.items())
    text = f"""\
database: sqlite:///{tmp_path / 'faults.db'}
timezone: Europe/Madrid
thresholds: {{health_after: {HEALTH_AFTER}}}
http: {{timeout_s: {timeout_s}, retries: {retries}, per_domain_delay_s: 0, per_domain_concurrency: 16{extra_http}}}
rivals:
  - name: Rival
    fetch: http
    products:
{products}
"""
    return parse_config(text, source=tmp_path / "tracker.yaml", env={})


def setup_db(config: Config) -> tuple[Database, dict[str, int]]:
    db = Database.open(config.database)
    with db.session() as s:
        sync_targets(s, config)
        ids = {t.name.removeprefix("Product "): t.id for t in s.scalars(select(Target))}
    return db, ids


def record_baseline(db: Database, target_id: int, price: str = "19.99") -> None:
    """The target was fine before the fault: an ok observation at `price` EUR."""
    with db.session() as s:
        record_check(s, target_id, SLOT0, Observed("ok", price=Decimal(price), currency="EUR", title="x",
                                                   availability="InStock"), now=SLOT0)


def check(config: Config, db: Database, target_id: int, run: int):  # type: ignore[no-untyped-def]
    """One scheduled run of one target, in a fresh Checker as a pass creates one."""
    async def go():  # type: ignore[no-untyped-def]
        async with Checker(config, db) as checker:
            return await checker.check(target_id, SLOT0 + timedelta(hours=run))
    return asyncio.run(go())


def observations(db: Database, target_id: int) -> list[Observation]:
    with db.session() as s:
        return list(s.scalars(select(Observation).where(Observation.target_id == target_id)
                              .order_by(Observation.id)))


def change_kinds(db: Database, target_id: int) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(Change.kind).where(Change.target_id == target_id).order_by(Change.id)))


# name -> (status, reason fragment). Names of FaultShop pages are the fault they stage.
SHOP_FAULTS = {
    "500": ("failed", "HTTP 500 server error"),
    "503": ("failed", "HTTP 503 from 127.0.0.1"),
    "429": ("failed", "HTTP 429 from 127.0.0.1 (Retry-After 2s)"),
    "404": ("failed", "HTTP 404"),
    "timeout": ("failed", "timed out after 1s"),
    "trickle": ("failed", "timed out after 1s"),
    "redirect_loop": ("failed", "too many redirects"),
    "huge": ("failed", "page is 20,971,546 bytes, over the 5,000,000-byte cap"),
    "huge_chunked": ("failed", "over the 5,000,000-byte cap"),
    "pdf": ("failed", "not a web page: Content-Type application/pdf"),
    "truncated": ("failed", "broken response body"),
    "captcha": ("blocked", "captcha: CAPTCHA"),
    "consent": ("blocked", "consent: Consent / cookie wall"),
    "layout": ("unextractable", "no price found on the page"),
    "empty": ("unextractable", "no price found on the page"),
}
NET_FAULTS = {
    "refused": ("failed", "cannot connect to 127.0.0.1:"),
    "dns": ("failed", "DNS lookup failed for shop.no-such-rival.invalid"),
    "reset": ("failed", "HTTP error: "),
    "garbage": ("failed", "HTTP error: "),
}


def health_lines(text: str) -> list[str]:
    if "\nHealth\n------\n" not in text:
        return []
    section = text.split("\nHealth\n------\n", 1)[1]
    return [line for line in section.splitlines() if line.strip().startswith("- ")]


def assert_fault_recorded_once_in_health(config: Config, db: Database, tid: int, name: str, status: str,
                                         reason: str, runs: int) -> None:
    obs = observations(db, tid)
    baseline, faults = obs[0], obs[1:]
    assert baseline.status == "ok" and baseline.price == Decimal("19.99")
    assert [(o.status, o.seen_count) for o in faults] == [(status, runs)], [(o.status, o.reason) for o in faults]
    assert reason in faults[0].reason, faults[0].reason
    assert faults[0].price is None and faults[0].currency is None  # never "price 0"
    # No price, promotion or stock change: only the one health change, reported once.
    assert change_kinds(db, tid) == [f"health_{status}"]
    with db.session() as s:
        target = s.get(Target, tid)
        assert target.fail_streak == runs and target.last_slot == SLOT0 + timedelta(hours=runs)
        data = collect(s, config)
    rendered = render(data, config)
    mine = [h for h in data.health if h["target"] == f"Product {name}"]
    assert len(mine) == 1 and reason in mine[0]["reason"] and str(HEALTH_AFTER) in str(mine[0]["runs"])
    assert [line for line in health_lines(rendered.text) if f"Product {name}:" in line] != []
    assert len([line for line in health_lines(rendered.text) if f"Product {name}:" in line]) == 1
    assert data.rivals == []  # nothing in the price/stock sections


@pytest.mark.parametrize("name", list(SHOP_FAULTS))
def test_shop_fault_is_recorded_with_reason_never_a_price_change_and_once_in_health(name, fault_shop, tmp_path):
    config = make_config(tmp_path, {name: fault_shop.page_url(name)})
    db, ids = setup_db(config)
    tid = ids[name]
    record_baseline(db, tid)
    status, reason = SHOP_FAULTS[name]
    runs = HEALTH_AFTER + 1  # one run past the threshold: still one health line
    for run in range(1, runs + 1):
        result = check(config, db, tid, run)
        assert (result.status, result.changes) == (status, 1 if run == HEALTH_AFTER else 0), result
    assert_fault_recorded_once_in_health(config, db, tid, name, status, reason, runs)

    # The site comes back at the old price: recovered, and still no price change.
    fault_shop.modes[name] = "ok"
    assert check(config, db, tid, runs + 1).status == "ok"
    assert change_kinds(db, tid) == [f"health_{status}", "health_recovered"]
    # Then a real move is measured against the last good price, not against the outage.
    fault_shop.prices[name] = "17.99"
    check(config, db, tid, runs + 2)
    with db.session() as s:
        last = s.scalars(select(Change).where(Change.target_id == tid).order_by(Change.id.desc())).first()
    assert last.kind == "price_down" and (last.data["old"], last.data["new"]) == ("19.99", "17.99")
    db.close()


@pytest.mark.parametrize("name", list(NET_FAULTS))
def test_network_fault_is_recorded_with_reason_never_a_price_change_and_once_in_health(
        name, refused_url, dns_fail_url, raw_server, tmp_path):
    url = {"refused": lambda: refused_url, "dns": lambda: dns_fail_url,
           "reset": lambda: raw_server("reset").url, "garbage": lambda: raw_server("garbage").url}[name]()
    config = make_config(tmp_path, {name: url})
    db, ids = setup_db(config)
    record_baseline(db, ids[name])
    status, reason = NET_FAULTS[name]
    for run in range(1, HEALTH_AFTER + 2):
        assert check(config, db, ids[name], run).status == status
    assert_fault_recorded_once_in_health(config, db, ids[name], name, status, reason, HEALTH_AFTER + 1)
    db.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_big_page_is_read_whole_not_cut_at_the_first_chunk(chunked, serve_app):
    """A 400 KB page whose price sits at its end. (One `StreamReader.read(n)` returns whatever is
    buffered, ~64-128 KB: the price was cut off, and a chunked 20 MB page slipped under the size cap.)"""
    from aiohttp import web

    from scrapers.fetch import HttpFetcher, Politeness

    body = ("<html><head><title>Big</title></head><body>" + "<p>filler text</p>" * 22_000
            + '<h1>Big</h1><span class="price">1.234,56 €</span></body></html>').encode()

    async def page(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=body, content_type="text/html")
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        for i in range(0, len(body), 32_768):
            await resp.write(body[i:i + 32_768])
            await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/big", page)
    server = serve_app(app)

    async def go() -> str:
        async with HttpFetcher(user_agent="t", respect_robots=False, politeness=Politeness(2, 0)) as f:
            return (await f.fetch(server.url + "/big")).text

    text = asyncio.run(go())
    assert len(text.encode()) == len(body) and text.endswith("1.234,56 €</span></body></html>")


# -- retries and backoff ---------------------------------------------------------------------------------


def test_server_errors_are_retried_with_exponential_backoff(fault_shop, tmp_path):
    config = make_config(tmp_path, {"500": fault_shop.page_url("500")}, retries=2)
    db, ids = setup_db(config)
    result = check(config, db, ids["500"], 1)
    assert (result.status, result.reason) == ("failed", "HTTP 500 server error")
    assert len(fault_shop.hits["500"]) == 3  # retries + 1
    first, second = fault_shop.gaps("500")
    # tenacity wait_exponential_jitter(initial=1): 1 s then 2 s, each plus up to 1 s of jitter
    assert 0.95 <= first <= 2.5, first
    assert 1.95 <= second <= 3.5, second
    assert [o.seen_count for o in observations(db, ids["500"])] == [1]  # three tries, one observation
    db.close()


def test_429_retry_after_delays_the_retry_and_then_the_price_is_read(fault_shop, tmp_path):
    fault_shop.fail_times["429-once"] = 1  # 429 with Retry-After: 2, then the page
    config = make_config(tmp_path, {"429-once": fault_shop.page_url("429-once")}, retries=1)
    db, ids = setup_db(config)
    result = check(config, db, ids["429-once"], 1)
    assert result.status == "ok"
    (gap,) = fault_shop.gaps("429-once")
    assert 1.95 <= gap <= 4.0, gap  # waited for Retry-After (2 s), not the 1 s backoff
    (obs,) = observations(db, ids["429-once"])
    assert obs.price == Decimal("19.99")
    db.close()


def test_retry_after_as_http_date_is_understood():
    from email.utils import format_datetime

    from scrapers.fetch import retry_after_seconds

    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 28 <= retry_after_seconds(format_datetime(later, usegmt=True)) <= 31
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_timeouts_are_retried_after_a_backoff(fault_shop, tmp_path):
    config = make_config(tmp_path, {"timeout": fault_shop.page_url("timeout")}, retries=1)
    db, ids = setup_db(config)
    assert check(config, db, ids["timeout"], 1).reason == "timed out after 1s"
    (gap,) = fault_shop.gaps("timeout")
    assert 1.9 <= gap <= 3.5, gap  # 1 s timeout + 1-2 s backoff
    db.close()


@pytest.mark.parametrize("name", ["404", "pdf", "captcha", "layout", "huge"])
def test_permanent_faults_are_not_retried(name, fault_shop, tmp_path):
    config = make_config(tmp_path, {name: fault_shop.page_url(name)}, retries=2)
    db, ids = setup_db(config)
    check(config, db, ids[name], 1)
    assert len(fault_shop.hits[name]) == 1
    db.close()


# -- the whole command -----------------------------------------------------------------------------------


def test_tracker_check_over_a_broken_shop_exits_0_with_every_fault_counted_and_no_traceback(
        fault_shop, refused_url, tmp_path):
    names = ["500", "429", "404", "timeout", "redirect_loop", "pdf", "captcha", "consent", "layout"]
    urls = {n: fault_shop.page_url(n) for n in names} | {"refused": refused_url}
    fault_shop.modes["ok"] = "ok"
    urls["ok"] = fault_shop.page_url("ok")
    config_text = (f"database: sqlite:///{tmp_path / 'cli.db'}\n"
                   "http: {timeout_s: 1, retries: 0, per_domain_delay_s: 0, per_domain_concurrency: 16}\n"
                   "rivals:\n  - name: Rival\n    fetch: http\n    products:\n"
                   + "".join(f'      - {{name: "Product {n}", url: "{u}"}}\n' for n, u in urls.items()))
    (tmp_path / "tracker.yaml").write_text(config_text)
    proc = subprocess.run([sys.executable, "-m", "tracker.cli", "check", "-c", "tracker.yaml", "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    counts = json.loads(proc.stdout)["rivals"]["Rival"]
    assert counts == {"ok": 1, "failed": 7, "blocked": 2, "unextractable": 1}
    assert json.loads(proc.stdout)["changes"] == 0

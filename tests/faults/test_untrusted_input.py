"""Rival pages and config files are untrusted input.

* Rival text with <script>, {{ 7*7 }} or {% ... %} appears escaped / literal in reports: no server-side
  template injection (changedetection.io's CVE-2024-32651 rendered page text as a Jinja2 template).
* Only http(s) URLs are accepted in the config.
* TLS is verified by default: a self-signed HTTPS shop is refused with verify_tls true, read with false.
* Downloads are refused in the browser (slow: real Chromium).
* Secrets come only from the environment or secret files and are masked in errors and `tracker validate`.
  (SMTP passwords in delivery errors and logs: tests/test_mail.py::test_password_never_appears_in_last_error_or_logs
  and ::test_password_echoed_back_by_the_server_is_scrubbed_from_errors; database passwords in connection
  errors: tests/faults/test_database_faults.py. Malformed YAML never gives a traceback: the hypothesis fuzz
  in tests/faults/test_config_fuzz.py.)
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from scrapers.errors import FetchError
from scrapers.fetch import HttpFetcher, Politeness
from tracker.config import parse_config, redacted
from tracker.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EVIL = "<script>alert(1)</script> {{ 7*7777 }} {% for x in range(3) %}ZQZ{% endfor %} {{ config }}"


def evil_page(price: str) -> str:
    ld = json.dumps({"@type": "Product", "name": EVIL, "sku": "EV-1",
                     "offers": {"price": price, "priceCurrency": "EUR"}}).replace("<", "\\u003c")
    return (f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(EVIL)}</title>'
            f'<script type="application/ld+json">{ld}</script></head><body><h1>{html.escape(EVIL)}</h1>'
            f'<span class="price">{price} €</span><button>Add to cart</button></body></html>')


def test_rival_text_is_escaped_in_reports_and_never_evaluated_as_a_template(serve_app, tmp_path):
    from tracker.app import check_once, queue_report
    from tracker.db import Database
    from tracker.models import OutboxMessage

    state = {"price": "30.00"}
    app = web.Application()

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=evil_page(state["price"]), content_type="text/html")

    app.router.add_get("/p/evil", page)
    server = serve_app(app)
    config = parse_config(
        f"database: sqlite:///{tmp_path / 'evil.db'}\nhttp: {{per_domain_delay_s: 0, retries: 0}}\n"
        f"email: {{to: [ana@test.localhost]}}\n"
        f"rivals:\n  - name: Rival\n    fetch: http\n    products:\n      - url: '{server.url}/p/evil'\n",
        source=tmp_path / "tracker.yaml", env={})
    db = Database.open(config.database)
    t0 = datetime(2026, 2, 1, 7, tzinfo=UTC)
    asyncio.run(check_once(config, db, slot=t0))
    state["price"] = "25.00"
    asyncio.run(check_once(config, db, slot=t0 + timedelta(hours=6)))
    queued = queue_report(config, db)
    assert queued is not None and queued.changes == 1
    out_html, out_text = queued.rendered.html, queued.rendered.text

    assert "<script>alert" not in out_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out_html
    for rendered in (out_html, out_text):
        assert "{{ 7*7777 }}" in rendered and "54439" not in rendered       # not evaluated
        assert "{% for x in range(3) %}ZQZ{% endfor %}" in rendered and "ZQZZQZ" not in rendered
        assert "{{ config }}" in rendered and "<Config" not in rendered and "sqlite:" not in rendered
    with db.session() as s:
        stored = s.get(OutboxMessage, queued.outbox_id)
        from email import message_from_bytes, policy

        mail = message_from_bytes(stored.mime, policy=policy.default)
        html_part = next(p for p in mail.walk() if p.get_content_type() == "text/html").get_content()
        assert "<script>alert" not in html_part and "&lt;script&gt;alert(1)" in html_part
    db.close()


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "javascript:alert(1)", "ftp://rival.example/p/1", "data:text/html,<h1>x</h1>",
    "gopher://rival.example/", "http:///no-host", "//rival.example/p/1", "rival.example/p/1",
    "chrome://settings", "view-source:https://rival.example/",
])
@pytest.mark.parametrize("where", ["product", "listing", "seo_page"])
def test_only_http_and_https_urls_are_accepted_in_config(url, where):
    item = {"product": f"    products:\n      - url: '{url}'\n",
            "listing": f"    listings:\n      - url: '{url}'\n",
            "seo_page": f"    seo_pages: ['{url}']\n"}[where]
    with pytest.raises(ConfigError) as info:
        parse_config(f"rivals:\n  - name: R\n{item}", source="tracker.yaml", env={})
    assert any("is not an http(s) URL" in p for p in info.value.problems), info.value.problems


def test_a_custom_engine_template_must_be_http_too():
    with pytest.raises(ConfigError) as info:
        parse_config("engines:\n  m:\n    url_template: 'file:///tmp/{term}'\n    result: '.r'\n",
                     source="tracker.yaml", env={})
    assert any("is not an http(s) URL" in p for p in info.value.problems)


# -- TLS ---------------------------------------------------------------------------------------------------


def fetch(url: str, *, verify_tls: bool):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with HttpFetcher(user_agent="t", verify_tls=verify_tls, retries=2,
                               politeness=Politeness(2, 0)) as f:
            return await f.fetch(url)
    return asyncio.run(go())


def test_tls_is_verified_by_default_and_a_self_signed_shop_is_refused(tls_shop):
    assert parse_config("", env={}).http.verify_tls is True
    with pytest.raises(FetchError) as info:
        fetch(tls_shop.url + "/t/kettle", verify_tls=True)
    assert info.value.reason.startswith("TLS certificate of 127.0.0.1 not trusted: self-signed certificate")
    assert not info.value.retryable  # trying again cannot fix a certificate


def test_self_signed_shop_is_read_with_verify_tls_false(tls_shop):
    page = fetch(tls_shop.url + "/t/kettle", verify_tls=False)
    assert page.status == 200 and "24.50" in page.text


def test_untrusted_certificate_is_recorded_as_a_failed_check_not_a_price(tls_shop, tmp_path):
    from sqlalchemy import select

    from tracker.app import check_once
    from tracker.db import Database
    from tracker.models import Change, Observation

    config = parse_config(
        f"database: sqlite:///{tmp_path / 'tls.db'}\nhttp: {{per_domain_delay_s: 0, retries: 1}}\n"
        f"rivals:\n  - name: R\n    fetch: http\n    products:\n      - url: '{tls_shop.url}/t/kettle'\n",
        env={})
    db = Database.open(config.database)
    summary = asyncio.run(check_once(config, db))
    assert summary.counts["R"]["failed"] == 1
    with db.session() as s:
        (obs,) = s.scalars(select(Observation)).all()
        assert obs.status == "failed" and "not trusted" in obs.reason and obs.price is None
        assert s.scalars(select(Change)).all() == []
    db.close()


# -- the browser -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_browser_refuses_downloads_and_self_signed_certificates(serve_app, tls_shop):
    from scrapers.browser import BrowserFetcher

    app = web.Application()

    async def download(_request: web.Request) -> web.Response:
        return web.Response(body=b"MZ\x90\x00" + b"\x00" * 4096, content_type="application/octet-stream",
                            headers={"Content-Disposition": 'attachment; filename="invoice.exe"'})

    app.router.add_get("/invoice.exe", download)
    server = serve_app(app)

    async def go() -> tuple[str, str]:
        async with BrowserFetcher(executable="/usr/bin/chromium", timeout_s=15) as b:
            with pytest.raises(FetchError) as dl:
                await b.fetch(server.url + "/invoice.exe")
            with pytest.raises(FetchError) as tls:
                await b.fetch(tls_shop.url + "/t/kettle")
            return dl.value.reason, tls.value.reason

    dl_reason, tls_reason = asyncio.run(go())
    assert dl_reason == "the URL is a file download, not a page"
    assert "ERR_CERT" in tls_reason, tls_reason


# -- secrets -----------------------------------------------------------------------------------------------

SECRET = "Xy9-hunter2-Sup3rS3cret"


def validate(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    (tmp_path / "tracker.yaml").write_text(text)
    return subprocess.run([sys.executable, "-m", "tracker.cli", "validate", "-c", "tracker.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_secret_from_the_environment_is_never_printed_by_validate(tmp_path):
    proc = validate(tmp_path, "email:\n  smtp_url: smtp://ana@mail.example:587\n"
                              "  password: ${TRACKER_SMTP_PASSWORD}\n"
                              "database: postgresql://rw:${DB_PASSWORD}@db.example/rw\n",
                    env={"TRACKER_SMTP_PASSWORD": SECRET, "DB_PASSWORD": SECRET})
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_secret_in_plain_text_is_refused_without_echoing_it(tmp_path):
    proc = validate(tmp_path, f"email:\n  smtp_url: smtp://ana@mail.example:587\n  password: {SECRET}\n")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "a secret must come from the environment" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_secret_in_a_url_is_refused_without_echoing_it(tmp_path):
    proc = validate(tmp_path, f"email:\n  smtp_url: 'smtp://ana:{SECRET}@mail.example:587'\n")
    assert proc.returncode == 2 and SECRET not in proc.stdout + proc.stderr
    proc = validate(tmp_path, f"database: 'mysql://rw:{SECRET}@db.example/rw'\n")
    assert proc.returncode == 2 and SECRET not in proc.stdout + proc.stderr, proc.stderr
    assert "rw:***@" in proc.stderr


def test_secret_file_is_read_and_masked(tmp_path):
    (tmp_path / "smtp.secret").write_text(SECRET + "\n")
    proc = validate(tmp_path, "email:\n  smtp_url: smtp://ana@mail.example:587\n  password_file: smtp.secret\n")
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    config = parse_config("email:\n  smtp_url: smtp://ana@mail.example:587\n  password_file: smtp.secret\n",
                          source=tmp_path / "tracker.yaml", env={})
    assert config.email.password.get_secret_value() == SECRET
    assert SECRET not in repr(config) and SECRET not in str(redacted(config))
    assert redacted(config)["email"]["password"] == "***"


def test_a_missing_secret_file_is_a_clear_error(tmp_path):
    proc = validate(tmp_path, "email:\n  smtp_url: smtp://ana@mail.example:587\n  password_file: nope.secret\n")
    assert proc.returncode == 2 and "cannot read secret file" in proc.stderr and "Traceback" not in proc.stderr

"""End to end, as a user runs it: a config in the documented format pointed at a local shop, checked
twice around a price change, e-mails exactly the changed products to an SMTP server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys

import pytest


def tracker(*args: str, cwd) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    proc = subprocess.run([sys.executable, "-m", "tracker.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


CONFIG = """\
database: {database}
timezone: Europe/Madrid
email:
  smtp_url: {smtp}
  from: tracker@test.localhost
  to: [manager@test.localhost]
http: {{per_domain_delay_s: 0, retries: 0}}
rivals:
  - name: Local Shop
    fetch: http
    products:
      - {{name: Kettle, url: "{shop}/p/kettle"}}
      - {{name: Toaster, url: "{shop}/p/toaster"}}
      - {{name: Blender, url: "{shop}/p/blender"}}
"""


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_passes_around_a_change_mail_exactly_the_changes_and_a_quiet_pass_mails_nothing(
        backend, request, shop, smtp_server, tmp_path):
    database = "sqlite:///tracker.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    shop.products = {"kettle": {"name": "Kettle", "price": "30.00"},
                     "toaster": {"name": "Toaster", "price": "45.00"},
                     "blender": {"name": "Blender", "price": "80.00"}}
    (tmp_path / "tracker.yaml").write_text(CONFIG.format(database=database, smtp=smtp_server.url, shop=shop.url))

    first = tracker("check", "-c", "tracker.yaml", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert '"ok": 3' in first.stdout
    assert tracker("report", "-c", "tracker.yaml", "--send", cwd=tmp_path).returncode == 0
    assert smtp_server.messages == []  # a first pass has nothing to compare with: no mail

    shop.products["kettle"]["price"] = "25.00"
    shop.products["blender"].update(in_stock=False)
    assert tracker("check", "-c", "tracker.yaml", cwd=tmp_path).returncode == 0
    sent = tracker("report", "-c", "tracker.yaml", "--send", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    (mail,) = smtp_server.messages
    assert mail["To"] == "manager@test.localhost"
    text = next(p for p in mail.walk() if p.get_content_type() == "text/plain").get_content()
    html = next(p for p in mail.walk() if p.get_content_type() == "text/html").get_content()
    assert "Kettle" in text and "Price down" in text and "−16.7 %" in text
    assert "Blender" in text and "Out of stock" in text
    assert "Toaster" not in text and "Toaster" not in html

    assert tracker("check", "-c", "tracker.yaml", cwd=tmp_path).returncode == 0
    assert tracker("report", "-c", "tracker.yaml", "--send", cwd=tmp_path).returncode == 0
    assert len(smtp_server.messages) == 1


def test_history_prints_the_price_spans(shop, tmp_path):
    shop.products = {"kettle": {"name": "Kettle", "price": "30.00"}}
    (tmp_path / "tracker.yaml").write_text(CONFIG.format(database="sqlite:///t.db", smtp="smtp://127.0.0.1:1",
                                                         shop=shop.url).split("  - {name: Toaster")[0])
    tracker("check", "-c", "tracker.yaml", cwd=tmp_path)
    shop.products["kettle"]["price"] = "27.50"
    tracker("check", "-c", "tracker.yaml", cwd=tmp_path)
    proc = tracker("history", "kettle", "-c", "tracker.yaml", cwd=tmp_path)
    assert proc.returncode == 0
    assert "30.00 EUR" in proc.stdout and "27.50 EUR" in proc.stdout


def test_extract_prints_the_documented_json(tmp_path):
    page = tmp_path / "p.html"
    page.write_text('<html lang="de"><head><script type="application/ld+json">{"@type":"Product","name":"Rad",'
                    '"sku":"R-1","offers":{"price":"1299.00","priceCurrency":"EUR",'
                    '"availability":"https://schema.org/InStock"}}</script></head><body><h1>Rad</h1>'
                    '<span class="price">1.299,00 €</span></body></html>')
    proc = tracker("extract", str(page), "--url", "https://shop.example/p/rad", "--json", cwd=tmp_path)
    import json

    data = json.loads(proc.stdout)
    assert {k: data[k] for k in ("name", "price", "currency", "availability", "sku")} == {
        "name": "Rad", "price": "1299.00", "currency": "EUR", "availability": "InStock", "sku": "R-1"}
    assert data["regular_price"] is None and data["promotions"] == []


def test_a_change_matching_an_alert_rule_is_mailed_at_once_by_the_check(shop, smtp_server, tmp_path):
    shop.products = {"kettle": {"name": "Kettle", "price": "30.00"},
                     "toaster": {"name": "Toaster", "price": "45.00"}}
    config = CONFIG.format(database="sqlite:///t.db", smtp=smtp_server.url, shop=shop.url)
    config += "alerts:\n  rules:\n    - {when: price_move, min_pct: 10, direction: down}\n"
    (tmp_path / "tracker.yaml").write_text(config)
    shop.products["blender"] = {"name": "Blender", "price": "80.00"}
    assert tracker("check", "-c", "tracker.yaml", cwd=tmp_path).returncode == 0
    shop.products["kettle"]["price"] = "24.00"   # -20 %: matches the rule
    shop.products["toaster"]["price"] = "44.00"  # -2 %: waits for the digest
    second = tracker("check", "-c", "tracker.yaml", "--json", cwd=tmp_path)
    assert second.returncode == 0
    outbox = tracker("outbox", "--all", "-c", "tracker.yaml", cwd=tmp_path).stdout
    assert len(smtp_server.messages) == 1, (second.stdout, second.stderr, outbox)
    (alert,) = smtp_server.messages
    text = next(p for p in alert.walk() if p.get_content_type() == "text/plain").get_content()
    assert "Kettle" in text and "Toaster" not in text


def test_rating_drop_and_review_surge_are_reported(shop, smtp_server, tmp_path):
    shop.products = {"kettle": {"name": "Kettle", "price": "30.00", "rating": "4.6", "reviews": 200}}
    (tmp_path / "tracker.yaml").write_text(CONFIG.format(database="sqlite:///t.db", smtp=smtp_server.url,
                                                         shop=shop.url).split("      - {name: Toaster")[0])
    assert tracker("check", "-c", "tracker.yaml", cwd=tmp_path).returncode == 0
    shop.products["kettle"].update(rating="4.3", reviews=320)
    assert tracker("check", "-c", "tracker.yaml", cwd=tmp_path).returncode == 0
    assert tracker("report", "-c", "tracker.yaml", "--send", cwd=tmp_path).returncode == 0
    (mail,) = smtp_server.messages
    text = next(p for p in mail.walk() if p.get_content_type() == "text/plain").get_content()
    assert "Rating dropped" in text and "Review count jumped" in text and "Price" not in text.split("Kettle", 1)[1]

"""An HTTP page identical to the one behind a target's latest observation is not parsed again: the check
extends that observation (issue #6: "not doing needless work"). Anything that could change what the page
gives (the body, the status, the final URL, the selectors, the extractor) makes it parsed again, and a
digest that went stale under a concurrent writer falls back to parsing."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

import tracker.pipeline as pipeline
from tracker.app import check_once, open_database
from tracker.config import load_config
from tracker.models import Change, Observation, Target
from tracker.store import Observed, PageChanged, record_check

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)

CONFIG = """\
database: {database}
http: {{per_domain_delay_s: 0, retries: 0, respect_robots: false}}
rivals:
  - name: Shop
    fetch: {fetch}
    products:
      - {{name: Kettle, url: "{shop}/p/kettle"{selectors}}}
"""


@pytest.fixture
def parses(monkeypatch):
    """Counts the pages the pipeline parses (the real extractor still runs)."""
    calls: list[str] = []
    real = pipeline.extract_product

    def counting(html, url, selectors=None):  # type: ignore[no-untyped-def]
        calls.append(url)
        return real(html, url, selectors)

    monkeypatch.setattr(pipeline, "extract_product", counting)
    return calls


def setup(db_url, shop, write_config, *, fetch="http", selectors=""):  # type: ignore[no-untyped-def]
    shop.products = {"kettle": {"name": "Kettle", "price": "30.00"}}
    path = write_config(CONFIG.format(database=db_url, shop=shop.url, fetch=fetch, selectors=selectors))
    config = load_config(path)
    return config, open_database(config)


def run(config, db, hours):  # type: ignore[no-untyped-def]
    return asyncio.run(check_once(config, db, slot=T0 + timedelta(hours=hours), alerts=False))


def spans(db):  # type: ignore[no-untyped-def]
    with db.session() as s:
        return [(o.status, o.price, o.seen_count) for o in s.scalars(select(Observation).order_by(Observation.id))]


@pytest.mark.parametrize("fetch", ["http", "auto"])
def test_the_same_page_again_extends_the_observation_without_parsing(db_url, shop, write_config, parses, fetch):
    config, db = setup(db_url, shop, write_config, fetch=fetch)
    for hour in range(3):
        assert run(config, db, hour).counts["Shop"] == {"ok": 1}
    assert len(parses) == 1
    assert spans(db) == [("ok", Decimal("30.00"), 3)]

    shop.products["kettle"]["price"] = "25.00"  # a new page: parsed, diffed, a change
    assert run(config, db, 3).changes == 1
    assert len(parses) == 2
    assert spans(db) == [("ok", Decimal("30.00"), 3), ("ok", Decimal("25.00"), 1)]
    run(config, db, 4)
    assert len(parses) == 2
    assert spans(db)[-1] == ("ok", Decimal("25.00"), 2)
    db.close()


def test_a_failure_in_between_makes_the_same_page_parsed_again(db_url, shop, write_config, parses):
    config, db = setup(db_url, shop, write_config)
    run(config, db, 0)
    shop.products.pop("kettle")  # 404: recorded as failed, not as a price
    assert run(config, db, 1).counts["Shop"] == {"failed": 1}
    shop.products["kettle"] = {"name": "Kettle", "price": "30.00"}  # the very same page as at hour 0
    assert run(config, db, 2).counts["Shop"] == {"ok": 1}
    assert len(parses) == 2
    assert [s[0] for s in spans(db)] == ["ok", "failed", "ok"]
    db.close()


def test_new_selectors_make_the_same_page_parsed_again(db_url, shop, write_config, parses, tmp_path):
    config, db = setup(db_url, shop, write_config)
    run(config, db, 0)
    config2, db2 = setup(db_url, shop, write_config, selectors=', selectors: {price: ".price"}')
    run(config2, db2, 1)
    assert len(parses) == 2
    db.close()
    db2.close()


def test_a_changed_extractor_makes_the_same_page_parsed_again(db_url, shop, write_config, parses, monkeypatch):
    config, db = setup(db_url, shop, write_config)
    run(config, db, 0)
    monkeypatch.setattr(pipeline, "_EXTRACTOR_DIGEST", b"another version of scrapers/")
    run(config, db, 1)
    assert len(parses) == 2
    assert spans(db) == [("ok", Decimal("30.00"), 2)]
    db.close()


def test_a_digest_gone_stale_under_another_writer_falls_back_to_parsing(db_url, shop, write_config, parses):
    config, db = setup(db_url, shop, write_config)
    run(config, db, 0)
    with db.session() as s:
        target = s.scalars(select(Target)).one()
        loaded = pipeline.TargetSpec(target.id, target.kind, target.url, target.name, "Shop", dict(target.spec),
                                     target.page_digest)
        # Another process records a different page of this target after `loaded` was read.
        s.execute(update(Target).values(page_digest="0" * 32))

    async def check() -> pipeline.CheckResult:
        async with pipeline.Checker(config, db) as checker:
            return await checker.check(loaded.id, T0 + timedelta(hours=1), target=loaded)

    result = asyncio.run(check())
    assert (result.status, result.duplicate) == ("ok", False)
    assert len(parses) == 2
    assert spans(db) == [("ok", Decimal("30.00"), 2)]
    with db.session() as s:
        assert s.scalars(select(Target.page_digest)).one() == loaded.page_digest  # the page's digest again
    db.close()


def test_record_check_refuses_a_same_page_observation_for_another_digest_and_writes_nothing(
        db_url, shop, write_config):
    config, db = setup(db_url, shop, write_config)
    run(config, db, 0)
    with pytest.raises(PageChanged):
        with db.session() as s:
            tid = s.scalars(select(Target.id)).one()
            record_check(s, tid, T0 + timedelta(hours=1), Observed.unchanged_page("f" * 32),
                         now=T0 + timedelta(hours=1))
    with db.session() as s:
        assert s.scalars(select(Target.last_slot)).one() == T0
    assert spans(db) == [("ok", Decimal("30.00"), 1)]
    # The same slot again, with the right digest, is a duplicate: nothing is written twice.
    with db.session() as s:
        digest = s.scalars(select(Target.page_digest)).one()
        recorded = record_check(s, tid, T0, Observed.unchanged_page(digest), now=T0)
    assert recorded.duplicate
    assert spans(db) == [("ok", Decimal("30.00"), 1)]
    with db.session() as s:
        assert s.scalars(select(Change)).all() == []
    db.close()


def test_the_digest_is_not_part_of_the_observation_fingerprint():
    seen = Observed("ok", price=Decimal("30.00"), currency="EUR")
    assert replace(seen, page_digest="a" * 32).fingerprint() == seen.fingerprint()

"""Alert rules: a change that matches goes out at once as a short alert (once), to e-mail and to chat
(Apprise, tested against a local JSON endpoint); everything still reaches the digest, tagged."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy

import pytest
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import select

from tracker.alerts import (
    AlertsConfig,
    BelowMapRule,
    PriceMoveRule,
    RankDropRule,
    UndercutRule,
    evaluate,
    queue_alerts,
)
from tracker.app import queue_report
from tracker.config import parse_config
from tracker.db import Database
from tracker.models import Change, OutboxMessage, Rival, Target
from tracker.position import Offer
from tracker.report import Formatter
from tracker.store import Observed, record_check
from tracker.targets import sync_targets

CONFIG = """\
database: sqlite:///{path}
locale: {locale}
email: {{from: alerts@shop.test, to: [manager@shop.test]}}
rivals:
  - name: My Shop
    own: true
    products:
      - {{name: Trail Runner 2, url: "https://my.test/p/tr2", match: TR2}}
  - name: Rival One
    products:
      - {{name: Trail Runner 2, url: "https://one.test/p/tr2", match: TR2, group: running}}
      - {{name: Camp Stove, url: "https://one.test/p/stove", match: CS1, group: camping}}
      - {{name: Sock, url: "https://one.test/p/sock", group: running}}
"""
# url -> (day 1 price, day 2 price)
PRICES = {"https://my.test/p/tr2": ("119.00", "119.00"), "https://one.test/p/tr2": ("129.90", "114.90"),
          "https://one.test/p/stove": ("80.00", "59.00"), "https://one.test/p/sock": ("10.00", "10.20")}


def with_alerts(config, alerts):  # type: ignore[no-untyped-def]
    """The config with these `alerts:` settings."""
    return config.model_copy(update={"alerts": alerts})


@pytest.fixture
def world(tmp_path):  # type: ignore[no-untyped-def]
    config = parse_config(CONFIG.format(path=tmp_path / "t.db", locale="en_US"))
    db = Database.open(config.database)
    with db.session() as session:
        sync_targets(session, config)
    now = datetime(2026, 11, 23, 7, tzinfo=UTC)
    for index, slot in ((0, now - timedelta(days=1)), (1, now)):
        with db.session() as session:
            for target in session.scalars(select(Target)):
                record_check(session, target.id, slot, Observed("ok", price=Decimal(PRICES[target.url][index]),
                                                                currency="EUR", title=target.name), now=slot)
    return config, db


def rows(db):  # type: ignore[no-untyped-def]
    with db.session() as session:
        return [tuple(r) for r in session.execute(
            select(Change, Target, Rival).join(Target, Target.id == Change.target_id)
            .join(Rival, Rival.id == Target.rival_id).order_by(Change.id))]


FMT = Formatter("en_US", datetime.now(UTC).tzinfo)


def matched(rule, db, own=None):  # type: ignore[no-untyped-def]
    return {t.name: why for c, t, r in rows(db) if (why := evaluate(rule, c, t, r, FMT, own))}


def test_price_move_rule_by_threshold_group_and_direction(world):
    _, db = world
    assert matched(PriceMoveRule(when="price_move", min_pct=10), db) == {
        "Trail Runner 2": "price moved −11.5 % (rule: 10 % or more)",
        "Camp Stove": "price moved −26.3 % (rule: 10 % or more)"}
    assert set(matched(PriceMoveRule(when="price_move", min_pct=1, groups=["running"]), db)) == {
        "Trail Runner 2", "Sock"}
    assert set(matched(PriceMoveRule(when="price_move", min_pct=1, direction="up"), db)) == {"Sock"}
    assert matched(PriceMoveRule(when="price_move", min_pct=30), db) == {}


def test_undercut_rule_needs_the_rival_to_cross_below_the_own_price(world):
    _, db = world
    own = Offer(target_id=1, rival="My Shop", own=True, name="Trail Runner 2", url=None, price=Decimal("119.00"),
                currency="EUR")
    assert matched(UndercutRule(when="undercut"), db, own) == {"Trail Runner 2": "now below your price €119.00"}
    cheaper_own = Offer(**{**own.__dict__, "price": Decimal("110.00")})
    assert matched(UndercutRule(when="undercut"), db, cheaper_own) == {}


def test_below_minimum_advertised_price_rule_by_match_key(world):
    _, db = world
    rule = BelowMapRule(when="below_map", prices={"CS1": Decimal("69.00"), "TR2": Decimal("99.00")})
    assert matched(rule, db) == {"Camp Stove": "below the minimum advertised price €69.00"}


def test_rank_drop_rule_on_tagged_keywords_of_the_own_site(tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 'r.db'}")
    with db.session() as session:
        brand = Target(kind="serp", key="google|en-US|desktop|10|rivalwatch", name="rivalwatch", spec={"tags": ["brand"]},
                       fail_streak=0)
        generic = Target(kind="serp", key="google|en-US|desktop|10|shoes", name="shoes", spec={"tags": []},
                         fail_streak=0)
        session.add_all([brand, generic])
        session.flush()
        session.add_all([
            Change(target_id=brand.id, kind="rank_down", data={"own": True, "old": 2, "new": 6, "depth": 10}),
            Change(target_id=brand.id, kind="left_top", data={"own": True, "old": 9, "new": None, "depth": 10}),
            Change(target_id=brand.id, kind="rank_down", data={"own": False, "old": 1, "new": 9, "label": "Rival One"}),
            Change(target_id=generic.id, kind="rank_down", data={"own": True, "old": 1, "new": 8, "depth": 10}),
            Change(target_id=brand.id, kind="rank_up", data={"own": True, "old": 8, "new": 1, "depth": 10}),
        ])
    with db.session() as session:
        found = session.execute(select(Change, Target).join(Target, Target.id == Change.target_id)
                                .order_by(Change.id)).all()
    rule = RankDropRule(when="rank_drop", min_places=3, tags=["brand"])
    hits = [evaluate(rule, c, t, None, FMT) for c, t in found]
    assert hits == ["dropped 4 places on “rivalwatch” (#2 → #6)", None, None, None, None]
    rule = RankDropRule(when="rank_drop", min_places=2, own_only=False)
    hits = [evaluate(rule, c, t, None, FMT) for c, t in found]
    assert hits[1] == "dropped 2 places on “rivalwatch” (#9 → –)"
    assert hits[2] == "Rival One: dropped 8 places on “rivalwatch” (#1 → #9)" and hits[3] and hits[4] is None


def test_alert_rules_are_validated_like_the_rest_of_the_config():
    settings = AlertsConfig.model_validate({"chat": ["json://127.0.0.1:9/"], "rules": [
        {"when": "price_move", "min_pct": 10, "groups": ["running"]}, {"when": "undercut"},
        {"when": "below_map", "prices": {"TR2": "99.00"}}, {"when": "rank_drop", "min_places": 3, "tags": ["brand"]}]})
    assert [type(r).__name__ for r in settings.rules] == ["PriceMoveRule", "UndercutRule", "BelowMapRule",
                                                          "RankDropRule"]
    with pytest.raises(ValidationError, match="union_tag_invalid|does not match any of the expected tags"):
        AlertsConfig.model_validate({"rules": [{"when": "price_jump", "min_pct": 3}]})
    with pytest.raises(ValidationError, match="min_pct"):
        AlertsConfig.model_validate({"rules": [{"when": "price_move"}]})
    with pytest.raises(ValidationError, match="Extra inputs"):
        AlertsConfig.model_validate({"rules": [{"when": "undercut", "treshold": 3}]})


@pytest.fixture
def chat_endpoint():  # type: ignore[no-untyped-def]
    """A local HTTP endpoint that keeps what Apprise's json:// notifier POSTs."""
    received: list[dict] = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.text()))
        return web.json_response({"ok": True})

    def serve() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/{tail:.*}", hook)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield f"json://127.0.0.1:{state['port']}/hook", received
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_matching_changes_are_queued_once_as_a_short_alert_and_sent_to_chat(world, chat_endpoint):
    config, db = world
    url, received = chat_endpoint
    config = with_alerts(config, AlertsConfig(chat=[url], rules=[
        PriceMoveRule(when="price_move", min_pct=20), UndercutRule(when="undercut")]))
    queued = queue_alerts(config, db)
    assert len(queued) == 1 and queued[0].changes == 2
    with db.session() as session:
        (row,) = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "alert")).all()
        (chat,) = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "chat")).all()
        alerted = {c.id: (c.data or {}).get("alerted") for c in session.scalars(select(Change))}
    assert chat.status == "sent"
    assert row.kind == "alert" and row.subject == "Rivalwatch alert: 2 changes"
    assert sorted(v for v in alerted.values() if v) == [row.id, row.id]  # the two matches, marked in the same transaction
    message = message_from_bytes(row.mime, policy=policy.default)
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_content()
    assert "Rival One · Trail Runner 2" in text and "now below your price €119.00" in text
    assert "Rival One · Camp Stove" in text and "price moved −26.3 % (rule: 20 % or more)" in text
    assert "Sock" not in text

    assert len(received) == 1
    assert received[0]["title"] == "Rivalwatch alert: 2 changes"
    assert "now below your price €119.00" in received[0]["message"]

    assert queue_alerts(config, db) == [] and len(received) == 1  # alerted once, not on every pass

    digest = queue_report(config, db)  # the digest still has everything, alerted ones tagged
    assert digest is not None and digest.changes == len(alerted)
    assert digest.rendered.text.count("| alerted") == 2 and "Sock" in digest.rendered.text


def test_a_chat_alert_is_kept_while_the_chat_service_is_down_and_sent_once_when_it_is_back(world, chat_endpoint):
    from datetime import UTC, datetime, timedelta

    from tracker.alerts import deliver_chat

    config, db = world
    rules = [PriceMoveRule(when="price_move", min_pct=20)]
    down = with_alerts(config, AlertsConfig(email=False, chat=["json://127.0.0.1:9/down"], rules=rules))
    assert queue_alerts(down, db) == []  # no e-mail queued, and the pass goes on
    with db.session() as session:
        (row,) = session.scalars(select(OutboxMessage)).all()
        marks = [(c.data or {}).get("alerted") for c in session.scalars(select(Change))]
    assert row.kind == "chat" and row.status == "pending" and row.attempts == 1 and row.last_error
    assert marks.count(row.id) == 1  # the change is alerted once: the outbox row carries the retries
    assert queue_alerts(down, db) == []  # a later pass does not queue it again

    url, received = chat_endpoint
    back = with_alerts(config, AlertsConfig(email=False, chat=[url], rules=rules))
    assert deliver_chat(back, db) == 0  # still inside its backoff
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert deliver_chat(back, db, now=later) == 1 and len(received) == 1
    assert deliver_chat(back, db, now=later + timedelta(hours=1)) == 0 and len(received) == 1


def test_no_rules_means_no_alerts(world):
    config, db = world
    assert queue_alerts(config, db) == []  # plain Config (no `alerts` yet): nothing happens


def test_alert_speaks_the_configured_language(tmp_path):
    config = parse_config(CONFIG.format(path=tmp_path / "es.db", locale="es_ES"))
    db = Database.open(config.database)
    with db.session() as session:
        sync_targets(session, config)
    now = datetime(2026, 11, 23, 7, tzinfo=UTC)
    for index, slot in ((0, now - timedelta(days=1)), (1, now)):
        with db.session() as session:
            for target in session.scalars(select(Target)):
                record_check(session, target.id, slot, Observed("ok", price=Decimal(PRICES[target.url][index]),
                                                                currency="EUR"), now=slot)
    config = with_alerts(config, AlertsConfig(rules=[PriceMoveRule(when="price_move", min_pct=20)]))
    (queued,) = queue_alerts(config, db)
    assert queued.rendered.subject == "Alerta Rivalwatch: 1 cambio"
    assert "el precio cambió −26,3 % (regla: 20 % o más)" in queued.rendered.text
    assert "80,00\xa0€ -> 59,00\xa0€" in queued.rendered.text


def test_the_schedulers_minute_job_sends_alerts_for_changes_found_by_workers(world, tmp_path):
    from tracker import scheduler

    config, db = world
    config = with_alerts(config, AlertsConfig(rules=[PriceMoveRule(when="price_move", min_pct=20)]))
    config = config.model_copy(update={"email": config.email.model_copy(update={"outbox_dir": tmp_path / "out"})})
    scheduler._RUNTIME.update(config=config, db=db)
    try:
        asyncio.run(scheduler.deliver_outbox())
    finally:
        scheduler._RUNTIME.clear()
    with db.session() as session:
        (row,) = session.scalars(select(OutboxMessage)).all()
    assert row.kind == "alert" and row.status == "written"
    assert len(list((tmp_path / "out").glob("*.eml"))) == 1

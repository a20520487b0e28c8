"""The same (target, slot) sent twice, at once, to a worker pool: one observation span, one change, and
the report about it e-mailed exactly once even when the `notify` message is delivered twice too."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import func, select

from tests.distributed.conftest import wait_for, workers_ready, write_config
from tracker.app import open_database, queue_report
from tracker.config import load_config
from tracker.models import Change, Observation, Target
from tracker.queue import check_distributed, connect

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


def test_a_check_delivered_twice_writes_once_and_mails_once(hosts, procs, pg_url, redis_url, smtp_server,
                                                             tmp_path):
    host = hosts[0]
    host.prices["kettle"] = "40.00"
    extra = f"email:\n  smtp_url: {smtp_server.url}\n  from: t@test.localhost\n  to: [m@test.localhost]"
    config_path = write_config(tmp_path / "tracker.yaml", database=pg_url, broker=redis_url,
                               products=[("Shop", f"{host.url}/p/kettle", "http")], extra=extra)
    config = load_config(config_path)
    db = open_database(config)
    procs.worker(config_path, queues="http,notify", threads=8)
    wait_for(workers_ready(redis_url, 1), 60, "the worker")
    engine = connect(config)

    first = asyncio.run(check_distributed(config, db, slot=datetime(2026, 3, 1, 7, tzinfo=UTC), engine=engine))
    assert dict(first.counts) == {"Shop": {"ok": 1}}
    with db.session() as session:
        target_id = session.scalar(select(Target.id))

    host.prices["kettle"] = "36.00"
    slot = datetime(2026, 3, 1, 13, tzinfo=UTC)
    engine.send_check("http", target_id, slot)
    engine.send_check("http", target_id, slot)
    client = redis.Redis.from_url(redis_url)
    beats = lambda: [json.loads(v) for v in client.hgetall("rivalwatch:workers").values()]  # noqa: E731
    wait_for(lambda: sum(b["done"] for b in beats()) == 3, 30, "both deliveries to be processed")

    with db.session() as session:
        spans = session.scalars(select(Observation).order_by(Observation.id)).all()
        assert [(s.price, s.seen_count) for s in spans] == [(spans[0].price, 1), (spans[1].price, 1)]
        assert str(spans[1].price) == "36.00" and spans[1].first_slot == slot
        changes = session.scalars(select(Change)).all()
        assert [c.kind for c in changes] == ["price_down"] or len(changes) == 1, [c.kind for c in changes]
        assert session.scalar(select(Target.last_slot)) == slot
    assert sum(b["duplicates"] for b in beats()) == 1
    assert host.hits["kettle"] in (2, 3)  # the twin may have fetched before the first committed, never written

    queued = queue_report(config, db)
    assert queued is not None and queued.changes == 1
    engine.send_notify()
    engine.send_notify()
    wait_for(lambda: len(smtp_server.messages) >= 1, 30, "the report e-mail")
    wait_for(lambda: sum(b["notified"] for b in beats()) == 2, 30, "both notify messages")
    time.sleep(0.5)
    assert len(smtp_server.messages) == 1
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Change).where(Change.report_id.is_(None))) == 0
    engine.close()
    db.close()

"""SIGKILL a worker (and its Chromium) in the middle of a browser page: the broker delivers the message
again once the dead worker's heartbeat is stale, another worker checks it, exactly one observation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tests.distributed.conftest import wait_for, workers_ready, write_config
from tracker.app import open_database
from tracker.config import load_config
from tracker.models import Observation, Target
from tracker.queue import Dispatcher, connect

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


def test_sigkill_mid_browser_page_redelivers_and_writes_one_observation(hosts, procs, pg_url, redis_url,
                                                                       tmp_path):
    host = hosts[1]
    host.prices["lamp"] = "1299.00"
    host.hold["lamp"] = 60.0   # the first load stalls on the price API: the worker dies mid-page
    config_path = write_config(tmp_path / "tracker.yaml", database=pg_url, broker=redis_url,
                               products=[("JS Shop", f"{host.url}/js/lamp", "browser")])
    config = load_config(config_path)
    db = open_database(config)
    engine = connect(config)
    Dispatcher(config, db, engine=engine, start=False).plan(datetime(2026, 1, 1, tzinfo=UTC))  # sync targets
    with db.session() as session:
        target_id = session.scalar(select(Target.id))

    first = procs.worker(config_path, queues="browser", threads=2, name="doomed")
    wait_for(workers_ready(engine.redis_url, 1), 60, "the first worker")
    slot = datetime(2026, 3, 1, 7, tzinfo=UTC)
    engine.send_check("browser", target_id, slot)
    assert host.started["api:lamp"].wait(60), "the page never asked for its price"
    procs.kill(first)                               # worker and Chromium, mid-page

    procs.worker(config_path, queues="browser", threads=2, name="survivor")
    with db.session() as session:
        assert session.scalar(select(Target.last_slot)) is None   # nothing was written by the dead one

    def recorded() -> bool:
        with db.session() as session:
            return session.scalar(select(Target.last_slot)) == slot

    wait_for(recorded, 60, "the redelivered check")
    with db.session() as session:
        spans = session.scalars(select(Observation)).all()
    assert len(spans) == 1 and spans[0].status == "ok" and str(spans[0].price) == "1299.00"
    assert spans[0].seen_count == 1
    assert host.hits["js:lamp"] == 2 and host.hits["api:lamp"] == 2
    engine.close()
    db.close()

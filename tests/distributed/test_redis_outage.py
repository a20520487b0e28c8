"""Redis (our own redis-server, never the machine's shared one) dies mid-run, without persistence, and
comes back empty: the dispatcher sends the lost slots again, the workers reconnect, no observation is
lost and no check runs twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from tests.distributed.conftest import wait_for, workers_ready, write_config
from tracker.app import open_database
from tracker.config import load_config
from tracker.models import Observation, Target
from tracker.queue import Dispatcher, connect

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
PER_HOST = 20


def test_redis_restart_mid_run_loses_nothing_and_runs_nothing_twice(hosts, procs, pg_url, own_redis, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("TRACKER_QUEUE_RESEND_AFTER_S", "5")
    products = [(f"Shop {i}", f"{h.url}/p/item-{i}-{n}", "http") for i, h in enumerate(hosts)
                for n in range(PER_HOST)]
    config_path = write_config(tmp_path / "tracker.yaml", database=pg_url, broker=own_redis.url, delay_s=0.15,
                               products=products)
    config = load_config(config_path)
    db = open_database(config)
    procs.start("run", "--dispatch-only", "--config", str(config_path), name="dispatcher")
    procs.worker(config_path, queues="http", threads=8, name="worker1")
    procs.worker(config_path, queues="http", threads=8, name="worker2")
    wait_for(workers_ready(own_redis.url, 2), 60, "two workers")
    slot = datetime(2026, 3, 1, 7, tzinfo=UTC)
    engine = connect(config)
    assert Dispatcher(config, db, engine=engine, start=False).plan(slot) == 5 * PER_HOST
    engine.close()

    def checked() -> int:
        with db.session() as session:
            return session.scalar(select(func.count()).select_from(Target).where(Target.last_slot == slot))

    wait_for(lambda: checked() >= 15, 20, "the run to be under way")
    own_redis.kill()                                    # queued messages, acks, heartbeats, limits: all gone
    at_kill = checked()
    time.sleep(2.0)
    own_redis.start()                                   # back, empty
    wait_for(lambda: checked() == 5 * PER_HOST, 60, "every target to be checked after the outage")

    assert at_kill < 5 * PER_HOST
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Observation)) == 5 * PER_HOST
        assert session.scalar(select(func.max(Observation.seen_count))) == 1
    for host in hosts:
        assert len(host.hits) == PER_HOST and max(host.hits.values()) == 1, (host.ip, host.hits.most_common(3))
    db.close()
